"""README_FOR_AI.md and examples/ run as documented: real processes against a live server.

The guide marks each snippet the tests run with ``<!-- test: run -->`` (run as is, after the
placeholders ``http://localhost:8000`` and ``your-api-key`` become the live server's URL and key; a
bash block reads ``API`` and ``KEY`` as the guide's install block sets them)
or ``<!-- test: worker -->`` (run inside a worker). The guide is this repository's own file, so
running its text is running our code; no outside text ever reaches a shell here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator import protocol
from orchestrator.api.openapi import openapi_document
from orchestrator.config import SCHEMA, load_settings

from .conftest import ROOT, fake_command

pytestmark = pytest.mark.slow

GUIDE = ROOT / "README_FOR_AI.md"
EXAMPLES = ROOT / "examples"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
DOC_URL = "http://localhost:8000"
DOC_KEY = "your-api-key"
# Fixed strings the guide must contain verbatim; the tests run these, never text read from a file.
ONE_LINER = 'orchestrator-spawn --wait "subtask A" "subtask B"'
KEY_LINE = "KEY=$(./orchestrator.sh config get api.api_key)"
TAIL_LINE = "tail -f workspace/job_<id>/logs/depth_0_worker_1.log"
CONFIGS = ["config.command-worker.yaml", "config.claude.yaml", "config.ci.yaml"]

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
needs_venv = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="no .venv beside the orchestrator (./install.sh)")


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def snippets(marker: str, lang: str) -> list[str]:
    """The fenced ``lang`` blocks that directly follow ``<!-- test: marker -->``."""
    pattern = rf"<!-- test: {marker} -->\n```{lang}\n(.*?)\n```"
    return re.findall(pattern, guide(), flags=re.S)


def for_live(text: str, live) -> str:
    return text.replace(DOC_URL, live.url).replace(DOC_KEY, live.key)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any ORCHESTRATOR* variable (as a user's shell), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    return {**env, **extra}


def run(argv, *, env=None, timeout=90, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def config_for(live, tmp_path: Path) -> Path:
    """A config.yaml pointing at the live server, for the commands that read config.yaml."""
    host, port = live.url.rsplit("//", 1)[1].rsplit(":", 1)
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "orchestrator": {"workspace_root": str(tmp_path / "workspace")},
                "api": {"host": host, "port": int(port), "api_key": live.key},
            }
        )
    )
    return path


def command_live(make_live, argv: list[str], **sections):
    """A live server whose workers run ``argv`` (the ``command`` kind), without retries."""
    sections.setdefault("workers", {}).setdefault("max_retries", 0)
    return make_live(orchestrator={"worker": "command", "command": argv}, **sections)


def shape_matches(example, real) -> bool:
    """Every key of ``example`` is in ``real``, recursively; a list item matches some real item."""
    if isinstance(example, dict):
        return isinstance(real, dict) and all(k in real and shape_matches(v, real[k]) for k, v in example.items())
    if isinstance(example, list):
        return isinstance(real, list) and all(any(shape_matches(e, r) for r in real) for e in example)
    return True


def until(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# -- examples/ ---------------------------------------------------------------------------------


def test_examples_readme_has_one_line_per_file():
    listed = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert sorted(p.name for p in EXAMPLES.glob("config.*.yaml")) == sorted(CONFIGS)
    for path in EXAMPLES.iterdir():
        if path.name != "README.md" and not path.name.startswith("."):
            assert f"`{path.name}`" in listed, path.name


@pytest.mark.parametrize("name", CONFIGS)
def test_every_example_config_loads(name, tmp_path):
    settings = load_settings(EXAMPLES / name, base_dir=tmp_path, environ={})
    assert settings.workspace_root == tmp_path / "workspace"  # relative to the orchestrator folder


def test_claude_config_names_the_claude_cli(tmp_path):
    settings = load_settings(EXAMPLES / "config.claude.yaml", base_dir=tmp_path, environ={})
    assert settings.orchestrator.worker == "claude" and settings.orchestrator.claude_command == "claude"


def test_ci_config_runs_a_job_end_to_end_with_its_tight_limits(tmp_path):
    # Given the command the CI config's header shows, run from the orchestrator folder
    out = run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "--config",
            "examples/config.ci.yaml",
            "run",
            "Build a REST API with auth, users and orders",
        ],
        env=clean_env(ORCHESTRATOR_HOME=str(tmp_path)),
    )
    assert out.returncode == 0, out.stderr
    assert "completed" in out.stdout and "worker kind simulated" in out.stdout
    report = re.search(r"report: (\S+FINAL_RESULT\.md)", out.stdout).group(1)
    assert Path(report).is_file() and Path(report).is_relative_to(tmp_path)


def test_client_usage_example_submits_follows_and_prints_the_table(make_live):
    live = make_live()
    env = clean_env(ORCHESTRATOR_API_URL=live.url, ORCHESTRATOR_API_KEY=live.key)
    out = run([sys.executable, EXAMPLES / "client_usage.py", "Build a REST API with auth, users and orders"], env=env)
    assert out.returncode == 0, out.stderr
    job_id = re.search(r"Job ID: ([0-9a-f]{12})", out.stdout).group(1)
    assert "Status: completed" in out.stdout and "depth_0_worker_1" in out.stdout  # live events
    assert re.search(r"^worker_3\s+success", out.stdout, flags=re.M)  # the per-worker table
    report = re.search(r"FINAL_RESULT\.md: (\S+)", out.stdout).group(1)
    assert Path(report).is_file() and f"job_{job_id}" in report


def test_client_usage_example_takes_flags_and_exits_3_on_a_partial_job(make_live):
    live = make_live(simulated={"fail_matching": "^broken"}, workers={"max_retries": 0})
    out = run(
        [
            sys.executable,
            EXAMPLES / "client_usage.py",
            "--url",
            live.url,
            "--key",
            live.key,
            "--quiet",
            "--task",
            "fine",
            "--task",
            "broken",
            "two parts",
        ]
    )
    assert out.returncode == 3, out.stderr
    assert "Status: partial" in out.stdout and re.search(r"^worker_2\s+failed", out.stdout, flags=re.M)
    refused = run([sys.executable, EXAMPLES / "client_usage.py", "--url", live.url, "--key", "wrong-key-0123456789"])
    assert refused.returncode == 2 and "refused (401)" in refused.stderr


def test_client_usage_example_falls_back_to_config_yaml(make_live, tmp_path):
    live = make_live()
    env = clean_env(ORCHESTRATOR_CONFIG=str(config_for(live, tmp_path)))
    out = run([sys.executable, EXAMPLES / "client_usage.py", "--quiet", "--task", "one", "single"], env=env)
    assert out.returncode == 0, out.stderr
    assert "Status: completed" in out.stdout and re.search(r"^worker_1\s+success", out.stdout, flags=re.M)


def test_recursive_worker_example_with_its_config_builds_a_two_level_tree(make_live):
    # Given config.command-worker.yaml with the script's real absolute path
    raw = yaml.safe_load((EXAMPLES / "config.command-worker.yaml").read_text())
    command = [part.replace("/path/to/orchestrator", str(ROOT)) for part in raw["orchestrator"]["command"]]
    assert command == ["bash", str(EXAMPLES / "recursive_worker.sh"), "{task}"]
    live = make_live(orchestrator={**raw["orchestrator"], "command": command}, workers=raw["workers"], recursion=raw["recursion"])
    # When one subtask lists parts and one does not
    job_id = live.submit(request="Build the backend", tasks=["auth; orders", "docs"]).json()["job_id"]
    doc = live.wait(job_id)
    # Then the first recursed into a child job whose leaves did the work, and the second did its own
    assert doc["status"] == "completed" and doc["tree"]["max_depth"] == 1
    first, second = doc["results"]["tasks"]
    assert first["status"] == "recursive_success" and first["child_job_id"] == f"{job_id}-c1"
    assert first["files_created"] == ["CHILD_RESULTS.md"] and f"## Child job {job_id}-c1: completed" in first["output"]
    assert [(c["task"], c["status"], c["files_created"]) for c in first["child_results"]] == [
        ("auth", "success", ["result.md"]),
        ("orders", "success", ["result.md"]),
    ]
    assert second["status"] == "success" and second["files_created"] == ["result.md"]
    leaf = live.engine.workspace.job_dir(job_id) / first["child_results"][1]["dir"] / "result.md"
    assert leaf.read_text().startswith("# orders\n") and "worker_1_2" in leaf.read_text()
    # and the guide's status example has the shape of this real status document
    example = json.loads(re.search(r"```json\n(.*?)\n```", guide(), flags=re.S).group(1))
    assert shape_matches(example, doc)


def test_recursive_worker_refuses_a_missing_subtask(tmp_path):
    out = run(["bash", EXAMPLES / "recursive_worker.sh"], cwd=tmp_path)
    assert out.returncode == 2 and "usage" in out.stderr


# -- README_FOR_AI.md --------------------------------------------------------------------------


def test_guide_is_short_enough_to_paste_and_marks_its_runnable_snippets():
    assert len(guide().splitlines()) <= 200
    assert len(snippets("run", "bash")) == 1 and len(snippets("run", "python")) == 1
    assert len(snippets("install", "bash")) == 1 and len(snippets("project", "bash")) == 1  # tests/test_guide_path.py
    assert len(snippets("worker", "python")) == 1
    assert len(snippets("mcp", "bash")) == 1  # tests/test_readme_blocks.py
    assert snippets("spawn", "bash") == [ONE_LINER]
    for fixed in (ONE_LINER, KEY_LINE, TAIL_LINE, "./install.sh", "./check-status.sh", "api.api_key"):
        assert fixed in guide(), fixed


def test_the_guides_list_of_config_keys_names_every_key_a_request_may_carry():
    from orchestrator.config.job import ACCEPTED_ONLY, JOB_KEYS

    listed = guide().split("The body takes", 1)[1].split("The 202 answer", 1)[0]
    missing = [key for key in (*JOB_KEYS, *ACCEPTED_ONLY) if f"`{key}`" not in listed]
    assert not missing, f"README_FOR_AI.md's list of config keys misses {missing}"


@needs_curl
@needs_venv
def test_guide_curl_block_runs_and_prints_what_it_says(make_live, tmp_path):
    live = make_live()
    # API and KEY as the guide's install block sets them; config.yaml for ./check-status.sh
    env = clean_env(ORCHESTRATOR_CONFIG=str(config_for(live, tmp_path)), API=live.url, KEY=live.key)
    (block,) = snippets("run", "bash")
    out = run(["bash", "-eo", "pipefail", "-c", block], env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    job_id = re.search(r"^job ([0-9a-f]{12})$", out.stdout, flags=re.M).group(1)
    assert "event: end" in out.stdout  # the SSE stream ran to its end
    assert re.search(rf"^completed \S+/job_{job_id}/FINAL_RESULT\.md$", out.stdout, flags=re.M)  # wait
    assert "===== attempt 1 exited with code 0" in out.stdout  # the log tail
    assert "# Final result" in out.stdout and f"job {job_id}  COMPLETED" in out.stdout  # report, check-status
    # the tail -f path the guide shows is where the log is
    assert (tmp_path / "workspace" / f"job_{job_id}" / "logs" / "depth_0_worker_1.log").is_file()


@needs_venv
def test_guide_key_line_reads_the_key_from_config_yaml(make_live, tmp_path):
    live = make_live()
    env = clean_env(ORCHESTRATOR_CONFIG=str(config_for(live, tmp_path)))
    out = run(["bash", "-c", KEY_LINE + '; echo "$KEY"'], env=env)  # in this folder, as the guide's blocks run
    assert out.returncode == 0 and out.stdout.strip() == live.key


def test_guide_python_block_runs_and_prints_what_it_says(make_live):
    live = make_live()
    (block,) = snippets("run", "python")
    out = run([sys.executable, "-c", for_live(block, live)])
    assert out.returncode == 0, out.stderr
    assert re.search(r"^Job ID: [0-9a-f]{12}$", out.stdout, flags=re.M)
    assert "Status: completed" in out.stdout and re.search(r"^worker \S+ running$", out.stdout, flags=re.M)
    assert re.search(r"^end None completed$", out.stdout, flags=re.M)
    assert re.search(r"^worker_1 success \[.+\] None$", out.stdout, flags=re.M)
    assert re.search(r"^Report: \S+FINAL_RESULT\.md$", out.stdout, flags=re.M)


def test_guide_spawn_one_liner_run_by_a_worker_starts_and_waits_for_a_child_job(make_live):
    # The worker script is this test's own fixed text; the one-liner is checked to be the guide's block.
    assert snippets("spawn", "bash") == [ONE_LINER]
    script = f'if [ "$ORCHESTRATOR_DEPTH" = 0 ]; then {ONE_LINER}; else echo "done: $1" > leaf.txt; fi'
    live = command_live(make_live, ["bash", "-c", script, "worker", "{task}"])
    job_id = live.submit(request="big", tasks=["big"], config={"max_recursion_depth": 1}).json()["job_id"]
    doc = live.wait(job_id)
    assert doc["status"] == "completed"
    (worker,) = doc["results"]["tasks"]
    assert worker["status"] == "recursive_success"
    assert worker["output"].startswith(f"## Child job {job_id}-c1: completed")
    assert "### worker_1_1: success\nTask: subtask A\nFiles (depth_1/worker_1_1): leaf.txt" in worker["output"]
    assert [(c["worker_id"], c["files_created"]) for c in worker["child_results"]] == [
        ("worker_1_1", ["leaf.txt"]),
        ("worker_1_2", ["leaf.txt"]),
    ]


SPAWN_SCRIPT = r"""
spawn() { orchestrator-spawn --wait "$@" 2>&1; echo "exit=$?"; }
case "$1" in
  ok) echo fine > leaf.txt ;;
  fail) echo broken >&2; exit 1 ;;
  hang) exec sleep 60 ;;
  codes) spawn ok ok; spawn ok fail; spawn fail fail; spawn ok ;;
  json) orchestrator-spawn --wait --json ok > child.json; echo "exit=$?" ;;
  deep|cancel) spawn "$2" ;;
esac
"""


def _exits(output: str) -> list[int]:
    return [int(code) for code in re.findall(r"^exit=(\d+)$", output, flags=re.M)]


def test_guide_spawn_exit_codes_and_refusals_are_as_documented(make_live):
    live = command_live(make_live, ["bash", "-c", SPAWN_SCRIPT, "worker", "{task}", "ok"], workers={"kill_grace": 0.5})
    # completed 0, partial 3, failed 1; a 4th child is refused (max_children_per_worker=3): 1
    codes = live.submit(request="codes", tasks=["codes"], config={"max_recursion_depth": 1}).json()["job_id"]
    (worker,) = live.wait(codes)["results"]["tasks"]
    assert _exits(worker["output"]) == [0, 3, 1, 1]
    assert "error: Max children per worker reached" in worker["output"]
    # at the depth limit the refusal names it
    deep = live.submit(request="deep", tasks=["deep"], config={"max_recursion_depth": 0}).json()["job_id"]
    (worker,) = live.wait(deep)["results"]["tasks"]
    assert _exits(worker["output"]) == [1] and "error: Max recursion depth reached" in worker["output"]
    # --json prints the child's status document
    js = live.submit(request="json", tasks=["json"], config={"max_recursion_depth": 1}).json()["job_id"]
    (worker,) = live.wait(js)["results"]["tasks"]
    child = json.loads((live.engine.workspace.job_dir(js) / worker["dir"] / "child.json").read_text())
    assert _exits(worker["output"]) == [0] and child["job_id"] == f"{js}-c1" and child["status"] == "completed"


def test_guide_spawn_exits_4_when_the_child_is_cancelled_and_2_outside_a_worker(make_live):
    live = command_live(make_live, ["bash", "-c", SPAWN_SCRIPT, "worker", "{task}", "hang"], workers={"kill_grace": 0.5})
    job_id = live.submit(request="cancel", tasks=["cancel"], config={"max_recursion_depth": 1}).json()["job_id"]
    until(lambda: any(w.depth == 1 and w.attempts for w in live.engine.queries.snapshot(job_id)[1]))
    assert live.call("POST", f"/api/v1/jobs/{job_id}-c1/cancel").status_code == 200
    (worker,) = live.wait(job_id)["results"]["tasks"]
    assert _exits(worker["output"]) == [4]
    outside = run([sys.executable, "-m", "orchestrator", "spawn", "--wait", "subtask A", "subtask B"])
    assert outside.returncode == 2 and "ORCHESTRATOR_API_URL" in outside.stderr


def test_guide_worker_python_block_starts_a_child_job_from_inside_a_worker(make_live, tmp_path):
    (block,) = snippets("worker", "python")
    (tmp_path / "block.py").write_text(block)
    wrapper = tmp_path / "worker.py"  # the test's own: depth 0 runs the guide's block, leaves write a file
    wrapper.write_text(
        "import os, runpy, sys\n"
        "if os.environ['ORCHESTRATOR_DEPTH'] == '0':\n"
        "    runpy.run_path(sys.argv[1], run_name='__main__')\n"
        "else:\n"
        "    open('leaf.txt', 'w').write(sys.argv[2])\n"
    )
    # run as the guide says: orchestrator-python (a worker's `python` is the user's, without the package)
    live = command_live(make_live, ["orchestrator-python", str(wrapper), str(tmp_path / "block.py"), "{task}"])
    job_id = live.submit(request="apis", tasks=["apis"], config={"max_recursion_depth": 1}).json()["job_id"]
    doc = live.wait(job_id)
    (worker,) = doc["results"]["tasks"]
    assert doc["status"] == "completed" and worker["status"] == "recursive_success"
    assert "completed [('worker_1_1', 'depth_1/worker_1_1', ['leaf.txt']), ('worker_1_2'" in worker["output"]


def test_every_route_the_guide_mentions_is_in_the_openapi_document():
    paths = openapi_document()["paths"]
    mentioned = re.findall(r"(?:\b(GET|POST|DELETE) )?(/api/v1/[A-Za-z0-9_{}$<>/-]*|/health\b|/openapi\.json)", guide())
    assert len(mentioned) >= 10
    for method, route in mentioned:
        parts = route.rstrip("/").split("/")
        matches = [
            p
            for p in paths
            if len(p.split("/")) == len(parts) and all(t.startswith("{") or t == d for t, d in zip(p.split("/"), parts))
        ]
        assert matches, f"{route} is not a route of the API"
        if method:
            assert any(method.lower() in paths[p] for p in matches), f"{method} {route}"


def test_every_variable_the_guide_mentions_is_given_to_workers(make_live):
    text = guide()
    mentioned = set(re.findall(r"\bORCHESTRATOR_[A-Z][A-Z_]*[A-Z]", text))
    assert {"ORCHESTRATOR_API_URL", "ORCHESTRATOR_API_KEY", "ORCHESTRATOR_DEPTH", "ORCHESTRATOR_MAX_DEPTH"} <= mentioned
    # named in the protocol module, where every ORCHESTRATOR_* name is defined (tests/test_protocol.py)
    assert mentioned <= {value for name, value in vars(protocol).items() if name.isupper()}
    # and in a real worker's environment (a folder worker's here: ORCHESTRATOR_PORT is a worktree
    # worker's only, proven in tests/test_bootstrap.py; ORCHESTRATOR_SHARED_CONTEXT a worker's whose command reads
    # its prompt, proven in tests/test_sharedcontext.py; ORCHESTRATOR_API_KEY_FILE a Landlock worker's, in
    # place of its key, proven in tests/test_sandbox_reach.py)
    live = command_live(make_live, fake_command("env"))
    job_id = live.submit(request="env", tasks=["env"]).json()["job_id"]
    (worker,) = live.wait(job_id)["results"]["tasks"]
    assert mentioned - {protocol.PORT, protocol.SHARED_CONTEXT, protocol.API_KEY_FILE} <= set(json.loads(worker["output"]))
    assert json.loads(worker["output"])["ORCHESTRATOR_API_KEY"].startswith(f"wk.{job_id}.worker_1.")
    # settings variables (ORCHESTRATOR__SECTION__KEY) name real settings
    for section, key in re.findall(r"\bORCHESTRATOR__([A-Z]+)__([A-Z_]+)", text):
        assert key.lower() in SCHEMA[section.lower()], f"{section}.{key}"


def test_n8n_workflow_orchestrates_with_a_callback_and_waits_for_it(make_live):
    """examples/n8n-workflow.json: its nodes in order, its HTTP Request the orchestrate route with
    the Wait node's resume URL as callback_url; the request it makes (here from Python, as n8n
    would send it) gets the callback its IF node checks."""
    from .conftest import wait_until
    from .helpers.webhooks import Receiver

    flow = json.loads((EXAMPLES / "n8n-workflow.json").read_text(encoding="utf-8"))
    nodes = {n["name"]: n for n in flow["nodes"]}
    order = ["Webhook trigger", "Orchestrate", "Wait for the callback", "Job completed?"]
    types = ["n8n-nodes-base.webhook", "n8n-nodes-base.httpRequest", "n8n-nodes-base.wait", "n8n-nodes-base.if"]
    assert [nodes[name]["type"] for name in order] == types
    for here, there in zip(order, order[1:]):
        assert flow["connections"][here]["main"][0][0]["node"] == there
    orchestrate = nodes["Orchestrate"]["parameters"]
    path = "/" + orchestrate["url"].split("/", 3)[3]
    assert orchestrate["method"] == "POST" and path == "/api/v1/orchestrate"
    assert "post" in openapi_document()["paths"][path]
    assert "callback_url: $execution.resumeUrl" in orchestrate["jsonBody"]
    assert nodes["Wait for the callback"]["parameters"]["resume"] == "webhook"
    wanted = nodes["Job completed?"]["parameters"]["conditions"]["conditions"][0]["rightValue"]
    wait_node = Receiver()
    try:
        live = make_live(
            webhooks={
                "allowed_callback_hosts": [f"127.0.0.1:{wait_node.server.server_port}"],
                "callback_secret": "n8n-callback-secret-0123",
            }
        )
        body = {"request": "from n8n", "config": {"callback_url": wait_node.url}}  # what jsonBody evaluates to
        answer = live.call("POST", path, json=body)
        assert answer.status_code == 202, answer.text
        wait_until(lambda: wait_node.requests, what="the callback")
        assert json.loads(wait_node.requests[0]["body"])["type"] == wanted
    finally:
        wait_node.close()
