"""Refusals cannot be forged (issue 48 item 10): a worker writes its own log, so an ``[orchestrator] ...``
line it prints is its own, whatever it says. What the orchestrator refused it (an object, a branch
move) and what its proxy refused it are in records its sandbox cannot write; the log's lines that read
like them are not taken, and the recorded ones come first, so twenty forged lines neither show nor push
the real refusal out of status, check-status or FINAL_RESULT.md.

A real server, a sandboxed ``command`` worker (bubblewrap, Landlock) that prints twenty forged lines and
then asks its proxy for a host nobody allowed (the one real refusal); tests/test_network_allow.py's
server, loopback HTTP servers and backends.
"""

from __future__ import annotations

import json
import sys

import pytest

from orchestrator.models import WorkerStatus
from orchestrator.outcomes import RefusalKind
from orchestrator.reports.status_document import status_table

from .test_network_allow import DENIED_ADDRESS, backend, run, served, servers  # noqa: F401 - fixtures

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FORGED = (
    "[orchestrator] an object its sandbox wrote was not taken into the repository: ZQFAKE{i}: not an object",
    "[orchestrator] its branch in its sandbox is 'ZQFAKE{i}', not a commit: refs/heads/main was left where it was",
    "[orchestrator] its branch ref had been made a link (ZQFAKE{i}): set back to 0123456789ab",
    "[orchestrator] network: refused ZQFAKE{i}.example:443: not in workers.sandbox_allow (1 so far)",
)
# The one real refusal: a request through its proxy (HTTP_PROXY, as every worker gets it) to a host no setting allows.
ASK = """
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/", timeout=10)
except OSError as exc:
    print("asked:", type(exc).__name__)
"""


def test_twenty_forged_orchestrator_lines_neither_show_nor_push_out_the_real_refusal(served, servers, tmp_path):  # noqa: F811
    _, denied = servers
    port = denied.server_address[1]
    script = tmp_path / "ask.py"
    script.write_text(ASK)
    lines = "; ".join(f'echo "{FORGED[i % len(FORGED)].format(i=i)}"' for i in range(20))
    engine = served()
    worker = run(engine, f"{lines}; '{sys.executable}' '{script}' {DENIED_ADDRESS} {port}")
    log = engine.workspace.worker_log(worker.root_id, worker.depth, worker.name).read_text()
    assert log.count("ZQFAKE") >= 20, log  # it did print them
    real = f"{DENIED_ADDRESS}:{port}"

    assert worker.status is WorkerStatus.SUCCESS, log
    assert [(r.kind, r.path) for r in worker.refusals] == [(RefusalKind.NETWORK, real)], worker.refusals
    assert worker.refusals_total == 1 and worker.refusals[0].recorded  # from its proxy's record
    doc = engine.queries.status_document(worker.job_id)
    (task,) = doc["results"]["tasks"]
    assert task["refusals_total"] == 1 and task["refused"].startswith(f"1 refused: network {real}"), task
    assert "ZQFAKE" not in json.dumps(task["refusals"]) and "ZQFAKE" not in task["refused"]
    table = status_table(doc)  # check-status's table
    assert f"1 refused: network {real}" in table and "ZQFAKE" not in table, table
    final = (engine.workspace.job_dir(worker.root_id) / "FINAL_RESULT.md").read_text()
    refused = final.split("## Refused", 1)[1].split("\n## ", 1)[0]
    assert real in refused and "ZQFAKE" not in refused and ": success, 1 refused\n" in refused, refused


def test_what_its_log_says_it_was_refused_is_its_own_words_never_a_refusal(served, tmp_path):  # noqa: F811
    """A sandbox's read-only path and Landlock's file rules keep no record of a write they refused, so
    the lines a CLI prints of one ("Read-only file system", "Permission denied") are the worker's words:
    shown as such, never counted as refusals. Here one is printed for a write never tried, and one comes
    from a real refused write (``/etc`` is read-only in both sandboxes): neither is a refusal."""
    forged = "touch: cannot touch '/etc/ZQFORGED': Read-only file system"
    engine = served()
    worker = run(engine, f'echo "{forged}"; echo x > /etc/ZQREAL || true')
    log = engine.workspace.worker_log(worker.root_id, worker.depth, worker.name).read_text()
    assert forged in log and "/etc/ZQREAL" in log, log  # it printed one and its shell printed the other

    assert worker.status is WorkerStatus.SUCCESS, log
    assert worker.refusals == [] and worker.refusals_total == 0, worker.refusals
    assert [r.path for r in worker.said_refused] == ["/etc/ZQFORGED", "/etc/ZQREAL"], worker.said_refused
    assert worker.said_refused_total == 2 and not any(r.recorded for r in worker.said_refused)
    doc = engine.queries.status_document(worker.job_id)
    (task,) = doc["results"]["tasks"]
    assert task["refusals_total"] == 0 and task["refused"] is None, task
    assert task["said"].startswith("its log says (its own words): ") and "/etc/ZQFORGED" in task["said"], task
    table = status_table(doc)  # check-status's table
    assert "refused:" not in table and "its log says (its own words): " in table, table
    final = (engine.workspace.job_dir(worker.root_id) / "FINAL_RESULT.md").read_text()
    refused = final.split("## Refused", 1)[1].split("\n## ", 1)[0]
    assert ", 0 refused, its log says 2 more (its own words)" in refused and "its log says: read-only" in refused, refused
