"""Kage Bunshin's task API (/api/v1/tasks, api/tasks_routes.py) and GET /docs (api/docs.py), through a
real waitress server on 127.0.0.1 running real worker processes.

Runs that must be quick use kinds that need no service: ``command`` and ``simulated``, and for the
curl line of Kage Bunshin's README (claude_code and gemini) stand-ins for the two CLIs set in the server's
config (claude_command, gemini_command) that print what the real CLIs printed
(tests/fixtures/cli_outputs). The real claude and gemini CLIs against their loopback mocks run in
the ``real_cli`` test at the end.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time

import pytest
import requests

from orchestrator.cli.server import start_in_thread

from .conftest import API_KEY, wait_until
from .helpers.real_cli import claude_workers  # noqa: F401  (a fixture)
from .helpers.real_gemini import gemini_workers  # noqa: F401  (a fixture)
from .helpers.tasks_api import stand_in
from .helpers.worktree import PREFIX, git, snapshot

pytestmark = pytest.mark.slow

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TASK_KEYS = {"id", "description", "status", "created_at", "cli_results"}
CLI_RESULT_KEYS = {"cli_name", "status", "files_modified", "cost", "duration", "branch", "score", "selected"}
# Kage Bunshin's README's "First Task Submission", as printed there (only the host:port and key differ).
KAGE_BUNSHIN_CURL = """curl -X POST http://localhost:8000/api/v1/tasks \\
  -H "X-API-Key: your-secret-api-key-here" \\
  -H "Content-Type: application/json" \\
  -d '{
    "description": "Add error handling to the login function",
    "cli_assignments": [
      {"cli_name": "claude_code", "context": {}, "timeout": 600},
      {"cli_name": "gemini", "context": {}, "timeout": 600}
    ],
    "merge_strategy": "theirs"
  }'"""


def kage_bunshin_argv(url: str, key: str) -> list[str]:
    """Kage Bunshin's README's curl line split as a shell would, with our URL and key put in."""
    import shlex

    line = KAGE_BUNSHIN_CURL.replace("http://localhost:8000", url).replace("your-secret-api-key-here", key)
    return shlex.split(line.replace("\\\n", " "))


def submit(live, *assignments: dict, description: str = "Add error handling", **extra):
    return live.call("POST", "/api/v1/tasks", json={"description": description, "cli_assignments": list(assignments), **extra})


def wait_task(live, task_id: str, timeout: float = 60) -> dict:
    live.engine.queries.wait(task_id, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the job record says ended a moment before its reports exist
        doc = live.call("GET", f"/api/v1/tasks/{task_id}").json()
        if doc["status"] in ("completed", "failed", "cancelled"):
            return doc
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} still {doc['status']}")


def read_sse(response) -> list[dict]:
    """Every event of a stream until it closes: {"event", "data" (parsed), "id"?}."""
    events, current = [], {}
    for line in response.iter_lines(decode_unicode=True):
        if not line:
            if "event" in current:
                events.append({**current, "data": json.loads(current.get("data", "null"))})
            current = {}
        elif not line.startswith((":", "retry:")):
            field, _, value = line.partition(": ")
            current[field] = value
    return events


# -- submitting: Kage Bunshin's README's curl line -------------------------------------------
def test_kage_bunshins_curl_line_runs_both_clis_and_answers_in_the_task_shape(make_live, tmp_path):
    # Given a server whose claude and gemini are stand-ins printing what the real CLIs print
    live = make_live(
        orchestrator={
            "claude_command": stand_in(tmp_path, "claude", "claude_success.json"),
            "gemini_command": stand_in(tmp_path, "gemini", "gemini_success.txt"),
        }
    )
    # When Kage Bunshin's README's curl line is run exactly as printed there
    out = subprocess.run(kage_bunshin_argv(live.url, live.key), capture_output=True, text=True, check=True, timeout=30)
    # Then the answer is the task in Kage Bunshin's TaskResponse shape, pending or running, no CLI ended yet
    task = json.loads(out.stdout)
    assert TASK_KEYS <= set(task) and task["description"] == "Add error handling to the login function"
    assert task["status"] in ("pending", "running") and task["cli_results"] is None
    assert ISO_UTC.match(task["created_at"])
    # And the task is one job whose one task ran as two candidates, claude then gemini
    job = live.engine.queries.get_job(task["id"])
    assert job.tasks == ["Add error handling to the login function", "Add error handling to the login function"]
    assert job.config.merge_strategy == "theirs"
    assert [(c["kind"], c["timeout"], c["context"]) for c in job.config.candidates] == [
        ("claude", 600, None),
        ("gemini", 600, None),
    ]
    done = wait_task(live, task["id"])
    results = done["cli_results"]
    assert [r["cli_name"] for r in results] == ["claude_code", "gemini"], results
    assert all(CLI_RESULT_KEYS <= set(r) for r in results)
    assert [r["status"] for r in results] == ["completed", "completed"], results
    assert [r["files_modified"] for r in results] == [["claude.txt"], ["gemini.txt"]]
    assert results[0]["cost"] == pytest.approx(0.000111)
    assert all(r["duration"] > 0 for r in results)
    assert sorted(r["selected"] for r in results) == [False, True]
    assert done["status"] == "completed" and ISO_UTC.match(done["completed_at"])


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"description": "x", "cli_assignments": [{"cli_name": "auto_claude"}]}, "cli_assignments[0].cli_name", "auto_claude"),
        ({"description": "x", "cli_assignments": []}, "cli_assignments", "non-empty list"),
        ({"description": "x", "cli_assignments": "claude"}, "cli_assignments", "non-empty list"),
        ({"description": "", "cli_assignments": [{"cli_name": "command"}]}, "description", "non-empty string"),
        ({"cli_assignments": [{"cli_name": "command"}]}, "description", "non-empty string"),
        ({"description": "x", "cli_assignments": [{"cli_name": "command"}], "priority": 1}, "priority", "unknown field"),
        (
            {"description": "x", "cli_assignments": [{"cli_name": "command", "model": "o3"}]},
            "cli_assignments[0]",
            "unknown field",
        ),
        (
            {"description": "x", "cli_assignments": [{"cli_name": "command", "timeout": "600"}]},
            "cli_assignments[0].timeout",
            "seconds",
        ),
        (
            {"description": "x", "cli_assignments": [{"cli_name": "command", "timeout": 3601}]},
            "cli_assignments[0].timeout",
            "3600",
        ),
        (
            {"description": "x", "cli_assignments": [{"cli_name": "command", "context": [1]}]},
            "cli_assignments[0].context",
            "object",
        ),
        (
            {"description": "x", "cli_assignments": [{"cli_name": "command"}], "merge_strategy": "ours"},
            "merge_strategy",
            "theirs",
        ),
    ],
)
def test_a_body_kage_bunshin_would_refuse_is_a_422_naming_the_field(live, body, field, words):
    response = live.call("POST", "/api/v1/tasks", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert words in error["message"] and field in error["message"]
    assert live.engine.workspace.root_ids() == []


def test_auto_claude_is_a_422_listing_the_names_this_server_runs(live):
    response = submit(live, {"cli_name": "claude_code"}, {"cli_name": "auto_claude"})
    assert response.status_code == 422
    error = response.json()
    assert error["details"]["field"] == "cli_assignments[1].cli_name"
    assert "auto_claude" in error["message"]
    available = error["details"]["available"]
    assert {"claude_code", "claude-code", "claude", "gemini", "codex", "aider", "ollama", "opencode", "command"} <= set(available)
    assert "auto_claude" not in available and all(name in error["message"] for name in available)
    # The OpenAPI document offers exactly those names
    doc = requests.get(live.url + "/openapi.json", timeout=5).json()
    schema = doc["components"]["schemas"]["TaskSubmit"]["properties"]["cli_assignments"]["items"]
    assert schema["properties"]["cli_name"]["enum"] == sorted(available)
    # Not JSON at all is a 400; no key a 401; a worker's credential may not submit one (403)
    assert live.call("POST", "/api/v1/tasks", data="{not json", headers={"Content-Type": "application/json"}).status_code == 400
    assert live.call("POST", "/api/v1/tasks", key="", json={}).status_code == 401


# -- reading: one, a page, the statistics; cancelling ----------------------------------------
def test_listing_pages_filters_by_task_status_and_leaves_child_jobs_out(make_live):
    live = make_live(orchestrator={"command": ["sh", "-c", "{task}"]}, simulated={"duration": 0.05})
    answers = [submit(live, {"cli_name": "command"}, {"cli_name": "simulated"}, description="true") for _ in range(3)]
    # 201 Created: the task exists, at its Location, before its CLIs run
    assert all(a.status_code == 201 and a.headers["Location"] == f"/api/v1/tasks/{a.json()['id']}" for a in answers)
    done = [a.json()["id"] for a in answers]
    for task_id in done:
        wait_task(live, task_id)
    hanging = submit(live, {"cli_name": "command"}, description="sleep 60").json()["id"]
    wait_until(lambda: live.engine.queries.get_job(hanging).status.value == "running")
    cancelled = live.call("DELETE", f"/api/v1/tasks/{hanging}")
    # A job through /orchestrate whose worker starts a child job: the root is a task, the child is not
    compound = "Build a backend with auth, orders and payments"
    tree = live.submit(request=compound, tasks=[compound], config={"worker": "simulated", "max_recursion_depth": 1}).json()[
        "job_id"
    ]
    live.wait(tree)
    assert live.engine.queries.get_job(f"{tree}-c1").parent_job_id == tree
    # The cancel answered the task, cancelled once its worker is gone; a second is a 409
    assert cancelled.status_code == 200 and cancelled.json()["id"] == hanging
    assert wait_task(live, hanging)["status"] == "cancelled"
    assert live.call("DELETE", f"/api/v1/tasks/{hanging}").status_code == 409
    # Pages of two, newest first, with the total
    first = live.call("GET", "/api/v1/tasks?limit=2").json()
    second = live.call("GET", "/api/v1/tasks?limit=2&offset=2").json()
    third = live.call("GET", "/api/v1/tasks?limit=2&offset=4").json()
    listed = [t["id"] for page in (first, second, third) for t in page["tasks"]]
    assert listed == [tree, hanging, *reversed(done)]
    assert (first["total"], first["limit"], first["offset"], len(third["tasks"])) == (5, 2, 0, 1)
    assert all(TASK_KEYS <= set(t) for t in first["tasks"])
    # Filtered by task status
    cancelled_page = live.call("GET", "/api/v1/tasks?status=cancelled").json()
    assert [t["id"] for t in cancelled_page["tasks"]] == [hanging] and cancelled_page["total"] == 1
    completed = live.call("GET", "/api/v1/tasks?status=completed&limit=1&offset=1").json()
    assert completed["total"] == 4 and [t["id"] for t in completed["tasks"]] == [done[2]]
    assert live.call("GET", "/api/v1/tasks?status=partial").status_code == 422
    assert live.call("GET", "/api/v1/tasks?limit=0").status_code == 400
    # A child job is not a task
    child = live.call("GET", f"/api/v1/tasks/{tree}-c1")
    assert child.status_code == 404 and tree in child.json()["message"]
    # The job through /orchestrate reads as a task too: its worker is its one cli result
    (result,) = live.call("GET", f"/api/v1/tasks/{tree}").json()["cli_results"]
    assert result["cli_name"] == "simulated" and result["status"] == "completed" and result["selected"] is None


def test_stats_count_tasks_by_status_and_runs_by_cli(make_live):
    live = make_live(orchestrator={"command": ["sh", "-c", "{task}"]}, simulated={"duration": 0.05})
    ok = submit(live, {"cli_name": "command"}, {"cli_name": "simulated"}, description="true").json()["id"]
    failing = submit(live, {"cli_name": "command"}, description="exit 3").json()["id"]
    assert wait_task(live, ok)["status"] == "completed"
    assert wait_task(live, failing)["status"] == "failed"
    stats = live.call("GET", "/api/v1/tasks/stats").json()
    assert stats["total"] == 2
    assert stats["by_status"] == {"pending": 0, "running": 0, "completed": 1, "failed": 1, "cancelled": 0}
    assert stats["clis"]["command"]["runs"] == 2 and stats["clis"]["command"]["completed"] == 1
    assert stats["clis"]["simulated"]["runs"] == 1
    assert sum(row["selected"] for row in stats["clis"].values()) == 1


def test_a_worker_credential_reads_only_its_own_task(make_live):
    live = make_live(orchestrator={"command": ["sh", "-c", "{task}"]})
    other = submit(live, {"cli_name": "command"}, description="true").json()["id"]
    mine = submit(live, {"cli_name": "command"}, description="sleep 30").json()["id"]
    wait_until(lambda: any(live.engine.worker_running(mine, w) for w in live.engine.queries.get_job(mine).worker_names))
    worker = next(w for w in live.engine.queries.get_job(mine).worker_names if live.engine.worker_running(mine, w))
    key = live.engine.credentials.issue(mine, mine, worker)
    assert live.call("GET", f"/api/v1/tasks/{mine}", key=key).status_code == 200
    assert live.call("GET", f"/api/v1/tasks/{other}", key=key).status_code == 403
    assert [t["id"] for t in live.call("GET", "/api/v1/tasks", key=key).json()["tasks"]] == [mine]
    for method, path in (
        ("DELETE", f"/api/v1/tasks/{mine}"),
        ("GET", "/api/v1/tasks/stats"),
        ("POST", f"/api/v1/tasks/{mine}/merge"),
    ):
        assert live.call(method, path, key=key).status_code == 403, path
    body = {"description": "x", "cli_assignments": [{"cli_name": "command"}]}
    assert live.call("POST", "/api/v1/tasks", key=key, json=body).status_code == 403
    live.call("DELETE", f"/api/v1/tasks/{mine}")
    assert wait_task(live, mine)["status"] == "cancelled"


# -- the progress stream ---------------------------------------------------------------------
def test_progress_streams_kage_bunshins_events_in_order_and_resumes(make_live):
    live = make_live(orchestrator={"command": ["sh", "-c", "{task}"]}, simulated={"duration": 0.05})
    task_id = submit(
        live, {"cli_name": "command"}, {"cli_name": "simulated"}, description="sleep 1.6; echo done > out.txt"
    ).json()["id"]
    response = live.call("GET", f"/api/v1/tasks/{task_id}/progress", stream=True)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    events = read_sse(response)
    kinds = [e["event"] for e in events]
    # connected first, task_complete last, heartbeats while the command sleeps, progress between
    assert kinds[0] == "connected" and kinds[-1] == "task_complete", kinds
    assert set(kinds) == {"connected", "progress", "heartbeat", "task_complete"}, kinds
    assert kinds.count("heartbeat") >= 1
    progress = [e for e in events if e["event"] == "progress"]
    ids = [int(e["id"]) for e in progress]
    assert ids == sorted(ids) and len(ids) >= 4
    # every worker event names its CLI; the simulated candidate's child job (its task is compound) counts as it
    assert {e["data"]["cli_name"] for e in progress if e["data"]["worker"]} == {"command", "simulated"}
    assert {e["data"]["job_id"] for e in progress} == {task_id, f"{task_id}-c1"}
    assert all(ISO_UTC.match(e["data"]["timestamp"]) for e in progress)
    final = events[-1]["data"]
    assert final["id"] == task_id and final["status"] == "completed" and len(final["cli_results"]) == 2
    # Resumed after the third progress event: connected, then only what came after it
    again = read_sse(live.call("GET", f"/api/v1/tasks/{task_id}/progress", headers={"Last-Event-ID": str(ids[2])}, stream=True))
    assert again[0]["event"] == "connected" and again[-1]["event"] == "task_complete"
    assert [int(e["id"]) for e in again if e["event"] == "progress"] == ids[3:]
    assert live.call("GET", f"/api/v1/tasks/{task_id}/progress", headers={"Last-Event-ID": "x"}).status_code == 400
    assert live.call("GET", "/api/v1/tasks/0123456789ab/progress").status_code == 404


def test_a_stream_past_long_poll_max_ends_with_an_error_event(make_live):
    live = make_live(orchestrator={"command": ["sh", "-c", "{task}"]}, api={"long_poll_max": 1.5})
    task_id = submit(live, {"cli_name": "command"}, description="sleep 30").json()["id"]
    events = read_sse(live.call("GET", f"/api/v1/tasks/{task_id}/progress", stream=True))
    assert events[0]["event"] == "connected" and events[-1]["event"] == "error"
    assert "long_poll_max" in events[-1]["data"]["message"]
    live.call("DELETE", f"/api/v1/tasks/{task_id}")
    assert wait_task(live, task_id)["status"] == "cancelled"


# -- conflicts and merge on a worktree job -------------------------------------------------------
def test_conflicts_and_merge_of_a_worktree_task_leave_the_users_repository_as_it_was(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(api={"api_key": API_KEY, "host": "127.0.0.1", "port": 0})
    server = start_in_thread(engine.settings, engine, port=0)
    try:
        from .conftest import Live

        live = Live(server.url, API_KEY, engine)
        # Two candidates that each write shared.txt differently (their worker's name: their cwd is the
        # repository's own path in the sandbox, the same for both)
        task = submit(
            live,
            {"cli_name": "command"},
            {"cli_name": "command"},
            description='echo "$ORCHESTRATOR_WORKER_ID" > shared.txt',
            merge_strategy="manual",
        )
        assert task.status_code == 201, task.text
        task_id = task.json()["id"]
        done = wait_task(live, task_id)
        results = done["cli_results"]
        assert [r["status"] for r in results] == ["completed", "completed"], results
        assert all(r["branch"].startswith(f"orchestrator/{task_id}/") for r in results), results
        assert all(r["files_modified"] == ["shared.txt"] for r in results)
        (winner,) = [r for r in results if r["selected"]]
        # manual: nothing merged, the selected candidate's branch waits; the task is completed
        assert done["status"] == "completed" and done["merge_strategy"] == "manual"
        # The two branches conflict on shared.txt
        conflicts = live.call("GET", f"/api/v1/tasks/{task_id}/conflicts").json()
        assert conflicts["has_conflicts"] is True and conflicts["task_id"] == task_id
        assert [(c["path"], c["kind"]) for c in conflicts["conflicts"]] == [("shared.txt", "add/add")]
        # Merged with theirs: the result branch holds the selected candidate's file
        merged = live.call("POST", f"/api/v1/tasks/{task_id}/merge", json={"merge_strategy": "theirs"})
        assert merged.status_code == 200, merged.text
        body = merged.json()
        assert body["success"] is True and body["strategy"] == "theirs" and body["task"]["status"] == "completed"
        assert body["merge"]["merged"] == [winner["worker"]]
        result = git(host, "show", f"{PREFIX}{task_id}/result:shared.txt").strip()
        assert result == winner["worker"]
        bad = live.call("POST", f"/api/v1/tasks/{task_id}/merge", json={"merge_strategy": "ours"})
        assert bad.status_code == 422 and "merge_strategy" in bad.json()["message"]
        assert live.call("POST", f"/api/v1/tasks/{task_id}/merge", json={"strategy": "auto"}).status_code == 422
    finally:
        engine.shutdown(timeout=10)
        server.close()
    assert snapshot(host, folder) == before


# -- GET /docs ---------------------------------------------------------------------------------
def test_docs_is_a_public_page_under_the_dashboards_csp_with_its_files_served_here(live):
    from orchestrator.dashboard import CSP

    page = requests.get(live.url + "/docs", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == CSP and "'unsafe-inline'" not in CSP
    assert "<script>" not in page.text and "http" not in page.text.lower()  # no inline script, nothing from elsewhere
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(sources) == sorted(
        f"/docs/static/{n}" for n in ("swagger-ui.css", "favicon-32x32.png", "swagger-ui-bundle.js", "swagger-init.js")
    )
    for source in sources:
        asset = requests.get(live.url + source, timeout=5)
        assert asset.status_code == 200 and len(asset.content) > 100, source
    init = requests.get(live.url + "/docs/static/swagger-init.js", timeout=5).text
    assert '"/openapi.json"' in init and "validatorUrl: null" in init
    assert requests.get(live.url + "/docs/static/oauth2-redirect.html", timeout=5).status_code == 404
    assert requests.get(live.url + "/docs/static/..%2f__init__.py", timeout=5).status_code == 404
    # The document tells Swagger UI's Authorize where the key goes: a header, never the URL
    doc = requests.get(live.url + "/openapi.json", timeout=5).json()
    assert doc["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert not any(
        p.get("in") == "query" and "key" in p["name"].lower()
        for ops in doc["paths"].values()
        for op in ops.values()
        for p in op.get("parameters", [])
    )


@pytest.fixture
def logging_browser(tmp_path):
    """A headless Chromium (as test_dashboard's) that also records every request it sends and its console."""
    from .helpers.dashboard import start_chromium

    driver = start_chromium(tmp_path / "profile", capabilities={"goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"}})
    yield driver
    driver.quit()


def test_swagger_ui_runs_under_the_csp_and_sends_the_key_as_a_header_only(live, logging_browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = logging_browser
    # Given /docs open in a browser: Swagger UI renders every operation of the document
    driver.get(live.url + "/docs")
    WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 10)
    doc = requests.get(live.url + "/openapi.json", timeout=5).json()
    operations = sum(len(ops) for ops in doc["paths"].values())
    assert len(driver.find_elements(By.CSS_SELECTOR, ".opblock")) == operations
    # grouped under the declared tags, in their order (none left under "default"), each with its description
    shown = [tag.get_attribute("data-tag") for tag in driver.find_elements(By.CSS_SELECTOR, ".opblock-tag")]
    assert shown == [tag["name"] for tag in doc["tags"]]
    assert doc["tags"][0]["description"] in driver.find_element(By.CSS_SELECTOR, ".opblock-tag").text
    # When the key is entered through Authorize and GET /api/v1/tasks/stats is tried out
    driver.find_element(By.CSS_SELECTOR, "button.authorize").click()
    modal = WebDriverWait(driver, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, ".modal-ux"))
    assert "X-API-Key" in modal.text and "header" in modal.text
    modal.find_elements(By.CSS_SELECTOR, "input")[0].send_keys(live.key)
    modal.find_elements(By.CSS_SELECTOR, "button.authorize")[0].click()
    modal.find_element(By.CSS_SELECTOR, "button.btn-done, button.close-modal").click()
    operation = driver.find_element(By.ID, "operations-tasks-get_api_v1_tasks_stats")
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    WebDriverWait(driver, 10).until(lambda d: operation.find_elements(By.CSS_SELECTOR, "button.try-out__btn"))
    operation.find_element(By.CSS_SELECTOR, "button.try-out__btn").click()
    operation.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = WebDriverWait(driver, 20).until(
        lambda d: operation.find_elements(By.CSS_SELECTOR, ".live-responses-table .response .response-col_status")
    )
    # Then the server answered it (a request without the key would be a 401)
    assert status[0].text.strip().startswith("200"), status[0].text
    # And every request the page made went to this server, the key in a header and never in a URL
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request = message["params"]["request"]
            if request["url"].startswith(("http:", "https:")):
                sent.append((request["url"], request["headers"].get("X-API-Key")))
    assert sent and all(url.startswith(live.url + "/") for url, _ in sent), sent
    assert not any(live.key in url for url, _ in sent)
    assert [url for url, key in sent if key == live.key] == [live.url + "/api/v1/tasks/stats"]
    assert {url.removeprefix(live.url) for url, _ in sent} >= {
        "/docs",
        "/docs/static/swagger-ui-bundle.js",
        "/docs/static/swagger-init.js",
        "/openapi.json",
    }
    # The CSP held: nothing but two decorative data: icons of swagger-ui.css was refused (no script, style or connection)
    refused = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert all("Loading the image 'data:image/svg+xml" in m and "img-src" in m for m in refused), refused


# -- the real CLIs ------------------------------------------------------------------------------
@pytest.mark.real_cli
@pytest.mark.timeout(400)
def test_kage_bunshins_curl_line_with_the_real_claude_and_gemini_clis_against_loopback_mocks(
    make_live,
    claude_workers,  # noqa: F811  (the imported fixture)
    gemini_workers,  # noqa: F811
):
    from .conftest import find_cli
    from .helpers.real_cli import write_then_report
    from .mock_gemini_server import Call, function_responses
    from .mock_gemini_server import Text as GeminiText

    claude, gemini = find_cli("claude"), find_cli("gemini")
    if claude is None or gemini is None:
        pytest.skip("the claude and gemini CLIs are not installed (tests/install_cli.sh)")

    def gemini_script(body):
        if function_responses(body):
            return GeminiText("Wrote gemini.md")
        return Call("write_file", {"file_path": "gemini.md", "content": "# from gemini\n"})

    # Given a server whose claude and gemini are the real CLIs, each pointed at its loopback mock
    claude_mock = claude_workers(write_then_report("claude.md", "# from claude\n", "Created claude.md"))
    gemini_mock = gemini_workers(gemini_script)
    live = make_live(
        orchestrator={"claude_command": claude, "gemini_command": gemini, "model": "gemini-2.5-flash", "planner": "heuristic"},
        workers={"default_timeout": 180},
    )
    # When Kage Bunshin's README's curl line is run as printed
    out = subprocess.run(kage_bunshin_argv(live.url, live.key), capture_output=True, text=True, check=True, timeout=30)
    task = json.loads(out.stdout)
    assert task["cli_results"] is None and task["status"] in ("pending", "running")
    done = wait_task(live, task["id"], timeout=300)
    # Then both CLIs ran the task, wrote their file, reported their cost, and one was selected
    job = live.engine.queries.get_job(task["id"])
    why = f"{done}\n--- claude mock\n{claude_mock.summary()}\n--- gemini mock\n{gemini_mock.summary()}"
    results = done["cli_results"]
    assert [(r["cli_name"], r["kind"], r["status"]) for r in results] == [
        ("claude_code", "claude", "completed"),
        ("gemini", "gemini", "completed"),
    ], why
    assert [r["files_modified"] for r in results] == [["claude.md"], ["gemini.md"]], why
    assert results[0]["cost"] and results[0]["cost"] > 0, why
    assert sorted(r["selected"] for r in results) == [False, True], why
    assert done["status"] == "completed", why
    assert job.config.merge_strategy == "theirs"


# -- the mapping, as pure functions -----------------------------------------------------------------
def test_kage_bunshins_cli_names_map_to_our_kinds_and_claude_api_only_once_anthropic_exists(monkeypatch):
    from orchestrator.api.tasks_openapi import cli_kinds
    from orchestrator.workers import adapters

    kinds = cli_kinds()
    assert kinds["claude_code"] == kinds["claude-code"] == kinds["claude"] == "claude"
    assert {kinds[n] for n in ("gemini", "codex", "aider", "ollama", "opencode", "command", "simulated")} == {
        "gemini",
        "codex",
        "aider",
        "ollama",
        "opencode",
        "command",
        "simulated",
    }
    assert "auto_claude" not in kinds and "auto" not in kinds
    if "anthropic" not in adapters.ADAPTERS:
        assert "claude_api" not in kinds and "claude-api" not in kinds
        monkeypatch.setitem(
            adapters.KINDS, "anthropic", dataclasses.replace(adapters.KINDS["anthropic"], adapter=adapters.ADAPTERS["command"])
        )
    assert cli_kinds()["claude_api"] == cli_kinds()["claude-api"] == "anthropic"


@pytest.mark.parametrize(
    "job_status, merge, candidates, expected",
    [
        ("running", None, [("success", True)], "running"),
        ("pending", None, [], "pending"),
        ("cancelled", None, [("success", None)], "cancelled"),
        # worktree: completed only when the selected candidate was merged
        ("completed", {"strategy": "theirs", "merged": ["worker_2"]}, [("success", False), ("success", True)], "completed"),
        ("partial", {"strategy": "auto", "merged": ["worker_1"]}, [("success", True), ("failed", False)], "completed"),
        (
            "partial",
            {"strategy": "auto", "merged": [], "unchanged": ["worker_1"]},
            [("success", True), ("failed", False)],
            "completed",
        ),
        ("completed", {"strategy": "auto", "merged": []}, [("success", True), ("success", False)], "failed"),
        ("failed", {"strategy": "auto", "merged": []}, [("failed", False), ("failed", False)], "failed"),
        # manual merges nothing by design; without git there is nothing to merge: selected is enough
        ("completed", {"strategy": "manual", "merged": []}, [("success", True), ("success", False)], "completed"),
        ("partial", None, [("success", True), ("timeout", False)], "completed"),
        ("failed", None, [("failed", None), ("failed", None)], "failed"),
    ],
)
def test_the_task_status_of_a_job(job_status, merge, candidates, expected):
    from orchestrator.api.tasks_routes import task_status
    from orchestrator.models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
    from orchestrator.outcomes import MergeRecord

    record = None if merge is None else MergeRecord.from_dict({"base": "", "result_ref": "x", **merge})
    job = JobRecord(id="0123456789ab", root_id="0123456789ab", request="x", status=JobStatus(job_status), merge=record)
    workers = [
        WorkerRecord(
            "0123456789ab",
            "0123456789ab",
            f"worker_{i}",
            i,
            0,
            "x",
            "command",
            WorkerStatus(status),
            candidate=i,
            selected=selected,
        )
        for i, (status, selected) in enumerate(candidates, 1)
    ]
    assert task_status(job, workers) == expected
    # A job without candidates (one through /orchestrate): a worker that succeeded stands for the selection
    plain = [WorkerRecord("0123456789ab", "0123456789ab", "worker_1", 1, 0, "x", "command", WorkerStatus.SUCCESS)]
    job.merge = None
    assert task_status(job, plain) == (
        "completed" if job.status.terminal and job.status is not JobStatus.CANCELLED else job_status
    )


def test_listing_and_stats_answer_from_the_job_index_with_the_task_status(make_live):
    """GET /api/v1/tasks and /tasks/stats read the job index (its ``outcome`` column is the task
    status of each root job), never a workspace scan."""
    live = make_live(orchestrator={"command": ["sh", "-c", "{task}"]})
    ok = submit(live, {"cli_name": "command"}, {"cli_name": "command"}, description="true").json()["id"]
    bad = submit(live, {"cli_name": "command"}, description="exit 3").json()["id"]
    assert wait_task(live, ok)["status"] == "completed" and wait_task(live, bad)["status"] == "failed"

    def no_scan():
        raise AssertionError("the task listing scanned the workspace")

    live.engine.queries.list_jobs = no_scan
    failed = live.call("GET", "/api/v1/tasks?status=failed").json()
    assert failed["total"] == 1 and [t["id"] for t in failed["tasks"]] == [bad]
    assert failed["tasks"][0]["cli_results"][0]["status"] == "failed"
    everything = live.call("GET", "/api/v1/tasks?limit=1").json()
    assert everything["total"] == 2 and [t["id"] for t in everything["tasks"]] == [bad]
    stats = live.call("GET", "/api/v1/tasks/stats").json()
    assert stats["by_status"]["completed"] == 1 and stats["by_status"]["failed"] == 1
    assert stats["clis"]["command"]["runs"] == 3 and stats["clis"]["command"]["selected"] == 1
    rows, _ = live.engine.index.page(None, 10, 0)
    assert {r["job_id"]: r["outcome"] for r in rows} == {ok: "completed", bad: "failed"}
