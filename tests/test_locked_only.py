"""The engine's lock rule, enforced (engine/locked_only.py): a method its callers must run inside
``tables.locked()`` raises AssertionError when the calling thread does not hold the lock, and
runs as before when it does."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

import orchestrator.engine as engine_package
from orchestrator.engine.locked_only import assert_held, locked_only
from orchestrator.engine.queries import Queries
from orchestrator.engine.tables import Tables
from orchestrator.workspace.layout import Workspace


class _Part:
    """A part of the engine, as the guard sees one: its ``tables``."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    @locked_only
    def change(self, value: int) -> int:
        return value + 1


@pytest.fixture
def tables(tmp_path: Path) -> Tables:
    return Tables(Workspace(tmp_path / "ws"))


def test_a_guarded_method_refuses_to_run_without_the_lock(tables: Tables) -> None:
    part = _Part(tables)
    with pytest.raises(AssertionError, match=r"_Part\.change runs only inside tables\.locked\(\)"):
        part.change(1)
    with tables.locked():
        assert part.change(1) == 2
    with pytest.raises(AssertionError):  # released again
        part.change(1)


def test_the_lock_held_by_another_thread_is_not_held_here(tables: Tables) -> None:
    part = _Part(tables)
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:
        with tables.locked():
            taken.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert taken.wait(10)
        assert not tables.held()
        with pytest.raises(AssertionError):
            part.change(1)
    finally:
        release.set()
        thread.join(10)


def test_held_follows_reentry_and_a_wait(tables: Tables) -> None:
    assert not tables.held()
    with tables.locked():
        with tables.locked():  # reentrant: a part holding it calls another that takes it
            assert tables.held()
        assert tables.held()
        tables.wait(0.01)  # released while waiting, held again after
        assert tables.held()
    assert not tables.held()


def test_the_tables_own_methods_are_guarded(tables: Tables) -> None:
    with pytest.raises(AssertionError, match=r"Tables\.counts"):
        tables.counts()
    with pytest.raises(AssertionError, match=r"Tables\.notify_all"):
        tables.notify_all()
    with tables.locked():
        assert tables.counts() == {"jobs_running": 0, "workers_running": 0, "slots_used": 0}
        tables.notify_all()


def test_a_deferred_change_checks_the_section_it_runs_in(tables: Tables) -> None:
    with pytest.raises(AssertionError, match="an attempt's end runs only inside"):
        assert_held(tables, "an attempt's end")
    with tables.locked():
        assert_held(tables, "an attempt's end")


def test_the_engine_hooks_are_guarded(engine) -> None:
    with pytest.raises(AssertionError, match=r"Engine\.dispatch"):
        engine.dispatch()
    with pytest.raises(AssertionError, match=r"Engine\.check_open"):
        engine.check_open()
    with engine.tables.locked():
        engine.dispatch()
        engine.check_open()


def test_the_disk_only_queries_have_a_lock_that_says_who_holds_it(tmp_path: Path) -> None:
    queries = Queries(Workspace(tmp_path / "ws"))
    assert not queries.tables.held()
    with queries.tables.locked():
        assert queries.tables.held()


def test_no_method_of_the_engine_states_the_rule_in_prose_only() -> None:
    """A method documented as run inside the lock carries the guard instead: its docstring no
    longer opens with the rule (the guard says it, and fails when it is broken)."""
    prose = re.compile(r'"""(Inside|Under) ``(tables\.)?locked\(\)``')
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(Path(engine_package.__file__).parent.glob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if prose.search(line)
    ]
    assert offenders == []
