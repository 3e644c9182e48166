"""GET /metrics: the Prometheus text format, parsed back, checked against what really happened."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.errors import RecursionLimit, ValidationError
from orchestrator.reports.metrics import refusal_reason

from .conftest import fake_command, run_job, wait_until

pytestmark = pytest.mark.slow


def parse(text):
    """Every sample as {(name, frozenset(labels)): value}."""
    return {
        (s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(text) for s in family.samples
    }


def scrape(live):
    response = live.call("GET", "/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def credential(live, job_id, worker):
    wait_until(lambda: live.engine.worker_running(job_id, worker), what=f"{worker} running")
    return live.engine.credentials.issue(job_id.split("-")[0], job_id, worker)


def test_metrics_count_the_jobs_and_workers_that_ran(make_live):
    # Given a server whose simulated workers fail on "beta"
    live = make_live(simulated={"duration": 0.05, "fail_matching": "beta"})
    # When a three-worker job completes and a two-worker job ends partial
    done = live.wait(live.submit(request="x", tasks=["a", "b", "c"]).json()["job_id"])
    part = live.wait(live.submit(request="y", tasks=["alpha", "beta"], config={"max_retries": 0}).json()["job_id"])
    assert (done["status"], part["status"]) == ("completed", "partial")
    samples = scrape(live)
    # Then jobs by status, running workers and both histograms say exactly that
    assert value(samples, "orchestrator_jobs", status="completed") == 1
    assert value(samples, "orchestrator_jobs", status="partial") == 1
    assert value(samples, "orchestrator_jobs", status="running") == 0
    assert ("orchestrator_jobs", frozenset({("status", "failed")})) in samples  # zeros are exported too
    assert value(samples, "orchestrator_workers_running") == 0
    assert value(samples, "orchestrator_worker_duration_seconds_count", status="success") == 4
    assert value(samples, "orchestrator_worker_duration_seconds_count", status="failed") == 1
    assert value(samples, "orchestrator_worker_duration_seconds_bucket", status="success", le="+Inf") == 4
    assert value(samples, "orchestrator_worker_duration_seconds_sum", status="success") >= 4 * 0.05
    assert value(samples, "orchestrator_spawn_latency_seconds_count") == 5  # one spawn per worker
    assert 0 < value(samples, "orchestrator_spawn_latency_seconds_sum") < 5 * 2.0
    assert value(samples, "orchestrator_cost_usd_total") == 0  # the simulated worker reports no cost
    assert value(samples, "process_resident_memory_bytes") > 0


def test_refusals_are_counted_by_the_check_that_refused(make_live):
    # Given a tree whose worker may start 2 children and which holds 2 workers at most
    live = make_live(
        orchestrator={"worker": "command", "command": fake_command()},
        api={"max_body_bytes": 1024},
        recursion={"max_children_per_worker": 2, "max_workers_per_root": 2},
    )
    root = live.submit(request="x", tasks=["hang"], config={"max_recursion_depth": 1}).json()["job_id"]
    cred = credential(live, root, "worker_1")
    # When one request of each kind is refused
    assert live.submit(key=cred, request="y", tasks=["hang", "hang"]).status_code == 422  # room for 1 more worker
    child = live.submit(key=cred, request="y", tasks=["hang"]).json()
    assert live.submit(key=cred, request="y", tasks=["hang"]).status_code == 422  # tree full, 2nd child refused
    grand = credential(live, child["job_id"], "worker_1_1")
    depth = live.submit(key=grand, request="z")
    assert depth.status_code == 422 and "Max recursion depth reached" in depth.json()["message"]
    assert live.call("GET", "/api/v1/jobs", key="wrong-key-0123456789").status_code == 401
    assert live.submit(request="").status_code == 400
    assert (
        live.call("POST", "/api/v1/orchestrate", data="x" * 4096, headers={"Content-Type": "application/json"}).status_code == 413
    )
    assert live.call("GET", "/metrics", key=cred).status_code == 403  # a worker credential is not enough
    samples = scrape(live)
    # Then each refusal is counted once under its reason, and the running tree shows
    counted = {dict(labels)["reason"]: v for (name, labels), v in samples.items() if name == "orchestrator_refusals_total"}
    assert counted == {"tree_workers": 2, "depth": 1, "auth": 1, "validation": 1, "body_too_large": 1, "forbidden": 1}
    assert value(samples, "orchestrator_workers_running") == 2
    assert value(samples, "orchestrator_jobs", status="running") == 2
    live.call("POST", f"/api/v1/jobs/{root}/cancel")


def test_max_children_refusal_has_its_own_reason(make_live):
    live = make_live(orchestrator={"worker": "command", "command": fake_command()}, recursion={"max_children_per_worker": 1})
    root = live.submit(request="x", tasks=["hang"], config={"max_recursion_depth": 2}).json()["job_id"]
    cred = credential(live, root, "worker_1")
    assert live.submit(key=cred, request="y", tasks=["hang"]).status_code == 202
    assert live.submit(key=cred, request="y", tasks=["hang"]).status_code == 422
    assert value(scrape(live), "orchestrator_refusals_total", reason="max_children") == 1
    live.call("POST", f"/api/v1/jobs/{root}/cancel")


def test_a_tree_past_its_deadline_counts_as_a_deadline_refusal(make_live):
    live = make_live(
        orchestrator={"worker": "command", "command": fake_command()},
        recursion={"tree_deadline": 0.3},
        workers={"monitor_interval": 0.05},
    )
    job_id = live.submit(request="x", tasks=["hang"]).json()["job_id"]
    assert live.wait(job_id)["status"] == "cancelled"
    samples = scrape(live)
    assert value(samples, "orchestrator_refusals_total", reason="deadline") == 1
    assert value(samples, "orchestrator_worker_duration_seconds_count", status="cancelled") == 1
    assert value(samples, "orchestrator_jobs", status="cancelled") == 1


def test_metrics_need_the_admin_key_as_x_api_key_or_bearer(live):
    assert live.call("GET", "/metrics", key="").status_code == 401
    assert live.call("GET", "/metrics", key="wrong-key-0123456789").status_code == 401
    bearer = live.call("GET", "/metrics", key="", headers={"Authorization": f"Bearer {live.key}"})
    assert bearer.status_code == 200 and "orchestrator_jobs" in bearer.text
    assert live.call("GET", "/metrics", key="", headers={"Authorization": "Bearer nope-0123456789abcdef"}).status_code == 401


def test_each_engine_has_a_registry_of_its_own(make_engine):
    # Two engines in one process: a job in one never shows in the other's metrics
    busy, idle = make_engine(), make_engine()
    run_job(busy, tasks=["a", "b"])
    busy_samples, idle_samples = parse(busy.metrics.render().decode()), parse(idle.metrics.render().decode())
    assert value(busy_samples, "orchestrator_worker_duration_seconds_count", status="success") == 2
    assert value(idle_samples, "orchestrator_worker_duration_seconds_count", status="success") == 0
    assert value(idle_samples, "orchestrator_jobs", status="completed") == 0


def test_a_new_server_counts_the_trees_an_earlier_one_left_in_the_workspace(make_engine, make_live):
    # Given a workspace where an earlier server ran three jobs (two completed, one partial)
    earlier = make_engine(simulated={"fail_matching": "beta"})
    for tasks in (["a"], ["b", "c"], ["alpha", "beta"]):
        run_job(earlier, tasks=tasks, config={"max_retries": 0})
    earlier.shutdown(timeout=10)
    # When a new server starts on it and is scraped
    samples = scrape(make_live())
    # Then the workspace's trees are counted by their root's status, though none is in its memory
    assert value(samples, "orchestrator_workspace_trees", status="completed") == 2
    assert value(samples, "orchestrator_workspace_trees", status="partial") == 1
    assert value(samples, "orchestrator_workspace_trees", status="running") == 0
    assert value(samples, "orchestrator_jobs", status="completed") == 0, "the memory gauge says what it counts"


def test_the_workspace_count_follows_new_and_deleted_trees(live):
    first = live.wait(live.submit(request="x", tasks=["a"]).json()["job_id"])["job_id"]
    live.wait(live.submit(request="y", tasks=["b"]).json()["job_id"])
    assert value(scrape(live), "orchestrator_workspace_trees", status="completed") == 2
    assert live.call("DELETE", f"/api/v1/jobs/{first}").status_code == 204
    assert value(scrape(live), "orchestrator_workspace_trees", status="completed") == 1


def test_cost_reported_by_workers_adds_up(make_engine):
    engine = make_engine()
    engine.metrics.add_cost(0.25)
    engine.metrics.add_cost(None)
    engine.metrics.add_cost(0.5)
    assert value(parse(engine.metrics.render().decode()), "orchestrator_cost_usd_total") == 0.75


@pytest.mark.parametrize(
    "error, reason",
    [
        (RecursionLimit("Max recursion depth reached: worker x ..."), "depth"),
        (RecursionLimit("Max children per worker reached: ..."), "max_children"),
        (RecursionLimit("recursion is disabled for job x (enable_recursion=false)"), "recursion_disabled"),
        (ValidationError("unexpected Host header 'evil.example'"), "host"),
        (ValidationError("request is empty"), "validation"),
    ],
)
def test_refusal_reasons_name_the_check(error, reason):
    assert refusal_reason(error) == reason


def test_request_durations_are_labelled_by_route_template_never_by_id(live):
    # Given a job, its status asked twice, an unknown id, an unknown route and a wrong key
    job_id = live.submit(request="x", tasks=["a"]).json()["job_id"]
    live.wait(job_id)
    for _ in range(2):
        assert live.call("GET", f"/api/v1/jobs/{job_id}").status_code == 200
    assert live.call("GET", "/api/v1/jobs/0123456789ab").status_code == 404
    assert live.call("GET", "/api/v1/no/such/route").status_code == 404
    assert live.call("GET", "/api/v1/jobs", key="wrong-key-0123456789").status_code == 401
    samples = scrape(live)
    count = "orchestrator_http_request_duration_seconds_count"
    # Then each answer is counted once under its route's template and its status
    assert value(samples, count, method="POST", route="/api/v1/orchestrate", status="202") == 1
    assert value(samples, count, method="GET", route="/api/v1/jobs/<job_id>", status="200") == 2
    assert value(samples, count, method="GET", route="/api/v1/jobs/<job_id>", status="404") == 1
    assert value(samples, count, method="GET", route="unmatched", status="404") == 1
    assert value(samples, count, method="GET", route="/api/v1/jobs", status="401") == 1
    # and no series carries a job id
    assert not any(job_id in str(labels) for (_, labels) in samples)
    # and the durations are real ones: above zero, far below the test's own run
    total = "orchestrator_http_request_duration_seconds_sum"
    assert 0 < value(samples, total, method="GET", route="/api/v1/jobs/<job_id>", status="200") < 5
