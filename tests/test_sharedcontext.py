"""A job's shared context block, written once, first and byte-identical in every
one of its workers' prompts (siblings and candidates), named by ORCHESTRATOR_SHARED_CONTEXT, and
measured in the records, the status document and the reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from orchestrator import protocol
from orchestrator.config import job_config
from orchestrator.engine.core import Engine
from orchestrator.models import JobRecord, JobStatus, TaskNode, WorkerRecord
from orchestrator.reports.promptshare import prompt_share
from orchestrator.workers.sharedcontext import CONVENTION_CHARS, SharedContexts, block_path, tells_spawn, write_once
from tests.conftest import make_settings, observed, run_job
from tests.helpers.worktree import git, snapshot, user_env, workers

# The worker: copies the prompt file it was given and its ORCHESTRATOR_SHARED_CONTEXT ("-": unset)
# to <out>/<worker>.prompt and <out>/<worker>.env, outside its own folder (in workers.sandbox_writable).
SEE = (
    "import os, sys, pathlib; out = pathlib.Path(sys.argv[2]); name = os.environ['ORCHESTRATOR_WORKER_ID']; "
    "(out / (name + '.prompt')).write_bytes(pathlib.Path(sys.argv[1]).read_bytes()); "
    "(out / (name + '.env')).write_text(os.environ.get('ORCHESTRATOR_SHARED_CONTEXT', '-'))"
)
SEVEN = [
    {"id": "schema", "task": "Design the database schema"},
    {"id": "auth", "task": "Build the auth service"},
    {"id": "orders", "task": "Build the orders service", "depends_on": ["schema"]},
    {"id": "payments", "task": "Build the payments service", "depends_on": ["schema"]},
    {"id": "ui", "task": "Build the web UI"},
    {"id": "docs", "task": "Write the user guide"},
    {"id": "e2e", "task": "Write end-to-end tests", "depends_on": ["orders", "payments", "ui"]},
]


def seeing_engine(tmp_path: Path, **sections) -> tuple[Engine, Path]:
    out = observed(tmp_path)
    command = [sys.executable, "-c", SEE, "{prompt_file}", str(out)]
    orchestrator = {"worker": "command", "command": command, **sections.pop("orchestrator", {})}
    workers = {"sandbox_writable": [str(out)], **sections.pop("workers", {})}
    return Engine(make_settings(tmp_path, orchestrator=orchestrator, workers=workers, **sections)), out


def seen(out: Path, worker: str) -> tuple[bytes, str]:
    return (out / f"{worker}.prompt").read_bytes(), (out / f"{worker}.env").read_text()


@pytest.mark.slow
def test_a_jobs_siblings_read_one_block_written_once_first_and_byte_identical(tmp_path):
    engine, out = seeing_engine(tmp_path)
    try:
        job = run_job(engine, "Build a shop", tasks=SEVEN, config={"max_workers": 3})
        assert job.status is JobStatus.COMPLETED
        path = block_path(engine.workspace, job)
        assert path.is_absolute() and path == engine.workspace.depth_dir(job.id, 0) / f"shared_{job.id}.md"
        assert sorted(p.name for p in path.parent.glob("shared_*")) == [path.name], "one block, no temp file left"
        block = path.read_bytes()
        text = block.decode()
        # the request, every subtask with its id in plan order (with what it comes after), conventions of every worker
        assert text.startswith(f"# Job {job.id}: what every worker of it reads first")
        assert "## The request\n\nBuild a shop\n" in text
        listed = [
            line
            for line in text.splitlines()
            if line.startswith("- ") and ": " in line and line[2:].split(":")[0] in {t["id"] for t in SEVEN}
        ]
        assert listed == [
            f"- {t['id']}: {t['task']}" + (f" (after {', '.join(t['depends_on'])})" if t.get("depends_on") else "") for t in SEVEN
        ]
        assert "Do not change files outside it." in text and "short summary" in text
        assert "orchestrator-spawn" not in text, "no API, no child jobs: the how-to is left out"
        records = workers(engine, job)
        assert len(records) == 7
        for name, rec in records.items():
            prompt, env = seen(out, name)
            assert prompt.startswith(block), name
            assert env == str(path)
            own = prompt[len(block) :].decode()
            assert own.startswith("\n# Your subtask\n\n" + rec.task + "\n"), own
            assert f"your subtask is {rec.task_id} in the list above" in own
            assert str(engine.workspace.worker_dir(job.id, 0, name)) in own
            assert all(t["task"] not in own for t in SEVEN if t["task"] != rec.task), "the others are only in the block"
            assert rec.prompt_bytes == len(prompt) and rec.shared_prompt_bytes == len(block)
        e2e = next(r for r in records.values() if r.task_id == "e2e")
        assert "These subtasks were done before yours: orders, payments, ui. Build on them" in seen(out, e2e.name)[0].decode()
        # measured: in the status document and both reports
        total = sum(len(seen(out, n)[0]) for n in records)
        share = prompt_share(records.values())
        assert share is not None and (share.workers, share.bytes, share.shared_bytes) == (7, total, 7 * len(block))
        assert share.line == f"7 workers, {total / 1000:.0f} KB, {7 * len(block) / total:.0%} shared context"
        assert 0.5 < share.fraction < 1
        final = engine.workspace.final_report(job.id).read_text()
        assert f"| Prompts | {share.line} |" in final
        level = engine.workspace.level_report(job.id, 0).read_text()
        assert f"- Job `{job.id}` prompts: {share.line}\n" in level
    finally:
        engine.shutdown(timeout=10)


@pytest.mark.slow
def test_the_status_document_gives_the_prompts_share(tmp_path):
    from orchestrator.reports.status_document import job_status

    engine, out = seeing_engine(tmp_path)
    try:
        job = run_job(engine, "Two things", tasks=["One thing", "Another thing"])
        jobs, records = engine.queries.snapshot(job.id)
        doc = job_status(job.id, jobs, records, engine.workspace.job_dir(job.id))
        block = block_path(engine.workspace, job).read_bytes()
        sizes = [len(seen(out, w.name)[0]) for w in records]
        assert doc["prompts"] == {
            "workers": 2,
            "bytes": sum(sizes),
            "shared_bytes": 2 * len(block),
            "shared_fraction": round(2 * len(block) / sum(sizes), 4),
            "cache_read_tokens": None,
            "summary": prompt_share(records).line,
        }
        by_name = {t["worker_id"]: t for t in doc["results"]["tasks"]}
        for w in records:
            entry = by_name[w.name]
            assert (entry["prompt_bytes"], entry["shared_prompt_bytes"]) == (len(seen(out, w.name)[0]), len(block))
            assert entry["tokens_cache_read"] is None
    finally:
        engine.shutdown(timeout=10)


@pytest.mark.slow
def test_a_job_whose_workers_read_no_prompt_has_no_block_and_no_prompts_line(tmp_path):
    engine = Engine(make_settings(tmp_path))  # the simulated kind reads its subtask from argv
    try:
        job = run_job(engine, "x", tasks=["a", "b"])
        assert not block_path(engine.workspace, job).exists()
        assert all(w.prompt_bytes is None and w.shared_prompt_bytes is None for w in workers(engine, job).values())
        assert "| Prompts |" not in engine.workspace.final_report(job.id).read_text()
    finally:
        engine.shutdown(timeout=10)


def candidates_job(engine: Engine) -> tuple[JobRecord, list[WorkerRecord]]:
    """A job whose plan was expanded into candidates (candidates.py's shape: one node per candidate,
    the task's id, its number, its own context): task t1 as three candidates, t2 once."""
    config = job_config(engine.settings, None)[0]
    contexts = [{"approach": "recursive descent"}, {"approach": "parser combinators", "note": "{{ not jinja }}"}, None]
    nodes = [TaskNode("t1", candidate=n, context=c, kind="command") for n, c in enumerate(contexts, 1)] + [TaskNode("t2")]
    tasks = ["Write the parser"] * 3 + ["Write the docs"]
    job = JobRecord(
        id="c1c2c3c4c5c6", root_id="c1c2c3c4c5c6", request="A parser and its docs", tasks=tasks, config=config, nodes=nodes
    )
    job.worker_names = [f"worker_{i}" for i in range(1, 5)]
    records = [
        WorkerRecord(
            job_id=job.id, root_id=job.id, name=f"worker_{i}", index=i, depth=0, task=t, kind="command", **n.worker_fields()
        )
        for i, (t, n) in enumerate(zip(tasks, nodes), 1)
    ]
    return job, records


def test_a_tasks_candidates_share_the_block_listing_the_task_once_and_each_reads_only_its_own_context(tmp_path):
    engine, _ = seeing_engine(tmp_path)
    try:
        job, records = candidates_job(engine)
        prompts = [engine.prompts.render(rec, job) for rec in records]
        path = block_path(engine.workspace, job)
        block = path.read_text()
        assert {p.shared for p in prompts} == {path} and all(p.shared_bytes == len(block.encode()) for p in prompts)
        assert all(p.text.startswith(block) for p in prompts)
        assert block.count("Write the parser") == 1 and "- t1: Write the parser\n- t2: Write the docs\n" in block
        assert "recursive descent" not in block and "parser combinators" not in block
        one, two, three, docs = (p.text[len(block) :] for p in prompts)
        assert '"approach": "recursive descent"' in one and "parser combinators" not in one
        assert '"approach": "parser combinators"' in two and '"note": "{{ not jinja }}"' in two and "recursive descent" not in two
        assert "Your own context" not in three and "Your own context" not in docs
        assert all("your subtask is t1 in the list above" in p for p in (one, two, three))
        # The same file, read again by a fresh server (no re-render: a changed plan does not change it).
        job.request = "something else entirely"
        again = SharedContexts(engine.workspace, engine.settings).block(job, spawn=True)
        assert again.shared.text == block and again.shared.spawn is False
    finally:
        engine.shutdown(timeout=10)


@pytest.mark.slow
def test_a_worktree_jobs_block_summarises_the_repository_at_its_base_with_its_conventions(hosted, tmp_path):
    host, folder, make = hosted
    (host / "AGENTS.md").write_text("# Agents\n\nRun `make test` before you finish.\n")
    (host / "pyproject.toml").write_text("[project]\nname = 'shop'\n")
    (host / "src" / "shop").mkdir(parents=True)
    (host / "src" / "shop" / "__init__.py").write_text("")
    (host / "CONTRIBUTING.md").write_text("x" * (CONVENTION_CHARS + 500))
    git(host, "add", "-A")
    git(host, "commit", "-qm", "three", "--no-verify", env=user_env())
    (host / "uncommitted.txt").write_text("not at the base\n")
    before = snapshot(host, folder)
    out = observed(tmp_path)  # outside the host: the workers' copies never touch it
    script = f'cp "$1" "{out}/$ORCHESTRATOR_WORKER_ID.prompt"; printf %s "${{{protocol.SHARED_CONTEXT}:--}}" > "{out}/$ORCHESTRATOR_WORKER_ID.env"; echo $ORCHESTRATOR_WORKER_ID > "new_$ORCHESTRATOR_WORKER_ID.txt"'
    engine = make(orchestrator={"command": ["sh", "-c", script, "sh", "{prompt_file}"]}, workers={"sandbox_writable": [str(out)]})
    job = run_job(engine, "Edit the shop", tasks=["Part one", "Part two", "Part three"])
    assert job.status is JobStatus.COMPLETED and job.config.isolation == "worktree"
    path = block_path(engine.workspace, job)
    block = path.read_bytes()
    text = block.decode()
    base = (engine.workspace.tree_base_file(job.id)).read_text().strip()
    assert f"## The repository\n\nA git repository; the job's workers branch from commit {base[:12]}:" in text
    files = git(host, "ls-tree", "-r", "--name-only", base).split()
    assert f": {len(files)} files." in text
    assert "app.py" in text and "src/ (1 file)" in text and "tools/ (" in text
    assert "Key files: " in text and "pyproject.toml" in text and "AGENTS.md" in text
    assert "uncommitted.txt" not in text and "new_worker" not in text, "the base, not the host's edits or the workers'"
    assert "## The project's conventions: AGENTS.md\n\n# Agents\n\nRun `make test` before you finish.\n" in text
    assert "## The project's conventions: CONTRIBUTING.md" in text and "(... cut here: the rest is in CONTRIBUTING.md" in text
    assert "x" * (CONVENTION_CHARS + 1) not in text
    assert "You need not commit: the orchestrator commits what you leave." in text
    for name, rec in workers(engine, job).items():
        prompt = (out / f"{name}.prompt").read_bytes()
        assert prompt.startswith(block) and (out / f"{name}.env").read_text() == str(path)
        assert f"on branch `orchestrator/{job.id}/{name}`" in prompt[len(block) :].decode()
        assert rec.shared_prompt_bytes == len(block) and rec.prompt_bytes == len(prompt)
    assert snapshot(host, folder) == before, "the host repository is untouched"


@pytest.mark.slow
def test_a_folder_jobs_block_summarises_the_folder_the_orchestrator_runs_in(tmp_path):
    (tmp_path / "README.md").write_text("# Shop\n")
    (tmp_path / "AGENTS.md").write_text("Use tabs.\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("")
    (tmp_path / ".hidden").write_text("")
    engine, out = seeing_engine(tmp_path)
    try:
        job = run_job(engine, "Go", tasks=["One", "Two"])
        text = block_path(engine.workspace, job).read_text()
        assert f"## The repository\n\nThe folder the orchestrator runs in, {tmp_path}" in text
        assert "Top level: observed/, src/, AGENTS.md, README.md." in text
        assert "workspace" not in text.split("## The repository", 1)[1].split("##", 1)[0], "the workspace is left out"
        assert ".hidden" not in text
        assert "## The project's conventions: AGENTS.md\n\nUse tabs.\n" in text
    finally:
        engine.shutdown(timeout=10)


@pytest.mark.slow
def test_a_hostile_request_is_kept_verbatim_in_the_block_and_renders(tmp_path):
    hostile = "Do {{ 6*7*1000+1 }} and {% if true %}this{% endif %} {{ shared_context }} {# no #} `x` $HOME\n" + "long " * 3900
    engine, out = seeing_engine(tmp_path)
    try:
        job = run_job(engine, hostile, tasks=["{{ task }} one", "{% raw %} two"])
        assert job.status is JobStatus.COMPLETED, job.error
        block = block_path(engine.workspace, job).read_text()
        assert f"## The request\n\n{hostile.strip()}\n" in block
        assert "42001" not in block and "- t1: {{ task }} one\n- t2: {% raw %} two\n" in block
        for name in workers(engine, job):
            prompt, _ = seen(out, name)
            assert prompt.decode().startswith(block)
    finally:
        engine.shutdown(timeout=10)


@pytest.mark.slow
def test_a_user_template_without_the_block_renders_as_before_and_one_with_it_gets_it_first(tmp_path):
    old = tmp_path / "old.md.j2"
    old.write_text("OLD {{ task }} of {{ request }} ({{ others | length }} others)")
    engine, out = seeing_engine(tmp_path, orchestrator={"prompt_template": str(old)})
    try:
        job = run_job(engine, "Req", tasks=["A", "B"])
        for name, rec in workers(engine, job).items():
            prompt, env = seen(out, name)
            assert prompt.decode() == f"OLD {rec.task} of Req (1 others)"
            assert env == "-", "no block at its head: no ORCHESTRATOR_SHARED_CONTEXT"
            assert rec.prompt_bytes == len(prompt) and rec.shared_prompt_bytes == 0
    finally:
        engine.shutdown(timeout=10)
    new = tmp_path / "new.md.j2"
    new.write_text("{{ shared_context }}MINE {{ task_id }}: {{ task }}{% if context %} {{ context }}{% endif %}")
    engine, out = seeing_engine(tmp_path, orchestrator={"prompt_template": str(new)})
    try:
        job = run_job(engine, "Req", tasks=["A", "B"])
        block = block_path(engine.workspace, job).read_text()
        for name, rec in workers(engine, job).items():
            prompt, env = seen(out, name)
            assert prompt.decode() == f"{block}MINE {rec.task_id}: {rec.task}"
            assert env == str(block_path(engine.workspace, job)) and rec.shared_prompt_bytes == len(block.encode())
    finally:
        engine.shutdown(timeout=10)


def test_the_block_is_written_whole_and_once(tmp_path):
    path = tmp_path / "depth_0" / "shared_x.md"
    assert write_once(path, "first\n") is True
    assert write_once(path, "second\n") is False
    assert path.read_text() == "first\n" and sorted(p.name for p in path.parent.iterdir()) == ["shared_x.md"]


def test_the_prompts_line_counts_cache_reads_only_where_reported():
    def rec(name: str, size: int | None, shared: int | None, cache: int | None = None) -> WorkerRecord:
        w = WorkerRecord(job_id="j", root_id="j", name=name, index=1, depth=0, task="t", kind="anthropic")
        w.prompt_bytes, w.shared_prompt_bytes, w.tokens_cache_read = size, shared, cache
        return w

    assert prompt_share([rec("a", None, None)]) is None
    share = prompt_share([rec("a", 30_000, 20_000, 1_200), rec("b", 11_000, 20_000 - 20_000 + 5_000), rec("c", None, None, 99)])
    assert share is not None and share.line == "2 workers, 41 KB, 61% shared context; 1,200 cache-read tokens"
    assert json.loads(json.dumps(share.to_dict()))["cache_read_tokens"] == 1_200
    assert prompt_share([rec("a", 500, 0)]).line == "1 worker, 500 B, 0% shared context"


@pytest.mark.slow
def test_with_the_api_up_the_block_tells_how_to_start_child_jobs_and_each_worker_its_allowance(tmp_path):
    engine, out = seeing_engine(tmp_path, recursion={"max_children_per_worker": 2})
    engine.api_url = "http://127.0.0.1:9"  # recursion on (no worker here calls it)
    try:
        job = run_job(engine, "Two parts", tasks=["Part one", "Part two"], config={"default_timeout": 20})
        block = block_path(engine.workspace, job).read_bytes()
        text = block.decode()
        assert "\n## Child jobs\n" in text and "\n    orchestrator-spawn --wait " in text and tells_spawn(text)
        for name in workers(engine, job):
            own = seen(out, name)[0][len(block) :].decode()
            assert "You may start at most 2 child job(s)" in own and '`"timeout": 20000`' in own
            assert "orchestrator-spawn" not in own, "the how-to is in the block only"
    finally:
        engine.shutdown(timeout=10)


def test_a_request_that_quotes_the_how_to_does_not_make_a_block_claim_it(tmp_path):
    from orchestrator.workers.prompts import SPAWN_COMMAND, render_shared_context

    quoting = f"Explain this:\n\n## What every worker does\n\n    {SPAWN_COMMAND}\n"
    args = dict(job_id="j", request=quoting, goal=None, tasks=[{"id": "t1", "text": "x"}], depth=0, worktree=False, graph=False)
    assert tells_spawn(render_shared_context(spawn=True, **args))
    assert not tells_spawn(render_shared_context(spawn=False, **args))


@pytest.mark.slow
def test_each_job_of_a_tree_has_its_own_block_and_the_reports_say_so_per_job(make_live, tmp_path):
    out = observed(tmp_path)
    script = (
        'cp "$1" "$2/$ORCHESTRATOR_JOB_ID.$ORCHESTRATOR_WORKER_ID.prompt"; '
        'if [ "$ORCHESTRATOR_DEPTH" = 0 ]; then orchestrator-spawn --wait "child one" "child two" > /dev/null; fi'
    )
    live = make_live(
        orchestrator={"worker": "command", "command": ["sh", "-c", script, "sh", "{prompt_file}", str(out)]},
        workers={"sandbox_writable": [str(out)]},
    )
    job_id = live.submit(request="Parent work", tasks=["Parent task"]).json()["job_id"]
    doc = live.wait(job_id)
    assert doc["status"] == "completed", doc["results"]
    jobs, records = live.engine.queries.snapshot(job_id)
    assert len(jobs) == 2 and len(records) == 3
    ws = live.engine.workspace
    blocks = {job.id: block_path(ws, job).read_bytes() for job in jobs}
    child = next(j for j in jobs if not j.is_root)
    assert block_path(ws, child).parent == ws.depth_dir(job_id, 1) and blocks[child.id] != blocks[job_id]
    assert b"- t1: child one\n- t2: child two\n" in blocks[child.id]
    assert b"\n## Child jobs\n" in blocks[job_id] and b"\n## Child jobs\n" in blocks[child.id]  # max depth 3
    for rec in records:
        prompt = (out / f"{rec.job_id}.{rec.name}.prompt").read_bytes()
        assert prompt.startswith(blocks[rec.job_id]) and rec.shared_prompt_bytes == len(blocks[rec.job_id])
    tree, root_only = prompt_share(records), prompt_share([r for r in records if r.job_id == job_id])
    assert tree is not None and root_only is not None
    final = ws.final_report(job_id).read_text()
    assert f"| Prompts | {tree.line} over the tree; root job: {root_only.line}; each job's in its level report |" in final
    level = ws.level_report(job_id, 1).read_text()
    assert f"- Job `{child.id}` prompts: {prompt_share([r for r in records if r.job_id == child.id]).line}\n" in level
    assert doc["prompts"]["workers"] == 1


@pytest.mark.slow
def test_candidates_run_through_the_engine_share_their_jobs_block_and_read_only_their_own_context(tmp_path):
    engine, out = seeing_engine(tmp_path)
    try:
        task = {
            "id": "parse",
            "task": "Write the parser",
            "candidates": [
                {"kind": "command", "context": {"approach": "recursive descent"}},
                {"kind": "command", "context": {"approach": "parser combinators"}},
                {"kind": "command"},
            ],
        }
        job = run_job(
            engine,
            "A parser and its docs",
            tasks=[task, {"id": "docs", "task": "Write the docs"}],
        )
        records = workers(engine, job)
        assert sorted((r.task_id, r.candidate) for r in records.values()) == [
            ("docs", None),
            ("parse", 1),
            ("parse", 2),
            ("parse", 3),
        ]
        block = block_path(engine.workspace, job).read_bytes()
        assert block.count(b"Write the parser") == 1 and b"- parse: Write the parser\n- docs: Write the docs\n" in block
        own = {}
        for name, rec in records.items():
            prompt, env = seen(out, name)
            assert prompt.startswith(block) and env == str(block_path(engine.workspace, job)), name
            assert rec.shared_prompt_bytes == len(block) and rec.prompt_bytes == len(prompt)
            own[(rec.task_id, rec.candidate)] = prompt[len(block) :].decode()
        assert '"approach": "recursive descent"' in own["parse", 1] and "combinators" not in own["parse", 1]
        assert '"approach": "parser combinators"' in own["parse", 2] and "descent" not in own["parse", 2]
        assert "Your own context" not in own["parse", 3] and "Your own context" not in own["docs", None]
        assert b"recursive descent" not in block and b"combinators" not in block
    finally:
        engine.shutdown(timeout=10)


def test_a_jobs_block_tells_the_child_job_how_to_when_any_of_its_kinds_can_run_it(tmp_path):
    from orchestrator.workers.environment import job_spawns

    engine = Engine(make_settings(tmp_path))
    try:
        config = job_config(engine.settings, None)[0]
        job = JobRecord(id="d1d2d3d4d5d6", root_id="d1d2d3d4d5d6", request="r", tasks=["t", "t"], config=config)
        job.nodes = [TaskNode("t1", candidate=1, kind="aider"), TaskNode("t1", candidate=2, kind="claude")]
        assert not job_spawns(job, None), "no API: no child jobs"
        assert job_spawns(job, "http://127.0.0.1:9")
        job.nodes = [TaskNode("t1", candidate=1, kind="aider"), TaskNode("t1", candidate=2, kind="aider")]
        assert not job_spawns(job, "http://127.0.0.1:9"), "aider runs no shell command: nobody to tell"
        job.nodes = [TaskNode("t1", candidate=1, kind="aider"), TaskNode("t1", candidate=2, kind="claude")]
        engine.api_url = "http://127.0.0.1:9"
        aider, claude = (
            WorkerRecord(
                job_id=job.id, root_id=job.id, name=f"worker_{i}", index=i, depth=0, task="t", kind=kind, **n.worker_fields()
            )
            for i, (kind, n) in enumerate(zip(("aider", "claude"), job.nodes), 1)
        )
        block = engine.prompts.render(aider, job).text.split("\n---\n", 1)[0]
        assert "\n## Child jobs\n" in block
        assert "You cannot start child jobs: aider runs no shell commands" in engine.prompts.render(aider, job).text
        assert "You may start at most" in engine.prompts.render(claude, job).text
    finally:
        engine.shutdown(timeout=10)
