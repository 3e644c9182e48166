"""The generated hostile suite (tests/hostile/, issue 48): attacks of every primitive in every context
it applies to (a worker, a gate, a child job, the AI planner, the judge, a resolve merge, a landing, a
restart), composed from a fixed seed into job trees run by a real server on a host repository made
here, under each sandbox backend (and, through tests/run_as_user.sh, as an ordinary user). Every attack
must be seen to run and none to get out; the host is as it was. With each defence switched off
(orchestrator/defences.py) every primitive it stops must get out: the suite can fail.
``python -m tests.hostile --attacks 1000 --seed 7`` runs a thousand (docs/sandbox.md)."""

from __future__ import annotations

import os

import pytest

from orchestrator.process.backends import probe

from .hostile import generator, primitives, runner, table

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
ATTACKS = 50  # per set-up, in about five trees: about 200 over the four set-ups
SEED = 7
USERS = ("root", "user")


def stretch() -> int:
    """Where this set-up's attacks start in its backend's seeded stream: root's first, an ordinary
    user's next, so a backend's two set-ups together use every (primitive, context) pair
    (test_hostile_suite_shape.py)."""
    return USERS.index("root" if os.geteuid() == 0 else "user") * ATTACKS


RUNS: list[runner.Run] = []
OFF_RUNS: list[runner.Run] = []


@pytest.fixture(scope="module", autouse=True)
def printed(request):
    """The table, once the module's runs are done (what docs/sandbox.md quotes)."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if (RUNS or OFF_RUNS) and reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for line in table.render(RUNS, OFF_RUNS).splitlines():
                reporter.write_line(line)
    if os.environ.get("HOSTILE_TABLE"):
        with open(os.environ["HOSTILE_TABLE"], "a", encoding="utf-8") as out:
            out.write(table.render(RUNS, OFF_RUNS) + "\n\n" + table.markdown(RUNS, OFF_RUNS) + "\n")


def available(backend: str) -> None:
    found = probe(backend=backend)
    if not found.available:
        pytest.skip(f"no {backend} here: {found.reason}")


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_generated_attacks_in_every_context_all_run_and_none_gets_out(tmp_path, backend):
    available(backend)
    trees = generator.trees(ATTACKS, SEED, primitives.runnable(backend), skip=stretch())
    done = runner.run(trees, tmp_path, backend)
    RUNS.append(done)
    unseen = [(r.attack.id, r.attack.primitive.name, r.attack.context.value) for r in done.results if not r.ran]
    assert not unseen, f"attacks that left no trace (did not run): {unseen}\n{table.render([done])}"
    escapes = [(r.attack.primitive.name, r.attack.context.value, r.escape) for r in done.results if r.escape]
    assert not escapes, table.render([done])
    broken = {check: what for check, what in done.checks.items() if what}
    assert not broken, broken
    assert len(done.results) == ATTACKS


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_with_each_defence_off_every_primitive_it_stops_gets_out(tmp_path, backend):
    available(backend)
    done = runner.defences_off_runs(tmp_path, backend, SEED)
    OFF_RUNS.extend(done)
    for run in done:
        kept = [(r.attack.primitive.name, r.attack.context.value) for r in run.results if not r.escape]
        assert not kept, f"{run.setup}: nothing got out of {kept}: this suite could not see that escape\n{table.render([], done)}"
        assert run.checks["a worker and a gate inherit no ORCHESTRATOR_DEFENCES_OFF"] == "", run.checks
    escaped = {(r.attack.primitive.name) for run in done for r in run.results if r.escape}
    assert escaped == {p.name for p in primitives.runnable(backend)}
