"""Choosing a task's winner among its candidates (orchestrator/selection):
best's weighted score and its parts, cheapest, fastest, first_passing, the tie rule, and a
real scoring command (a script run as a subprocess in each candidate's folder) that prints
JSON, garbage, fails, hangs, or looks for the worker's key."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from orchestrator.config import load_settings
from orchestrator.config.score_weights import DEFAULT_WEIGHTS, parse_weights
from orchestrator.errors import ConfigError
from orchestrator.outcomes import GateResult
from orchestrator.process.runner import ProcessRunner
from orchestrator.selection import Candidate, Selection, choose

from .conftest import make_settings

T0 = 1_800_000_000.0  # an ended_at in the future of any clock these tests run on


def cand(
    name: str, *, eligible: bool = True, added: int = 10, removed: int = 0, cost=0.02, duration=5.0, ended=T0, **kw
) -> Candidate:
    gates = [
        GateResult.from_dict(g)
        for g in kw.pop("gates", [{"name": "tests", "required": True, "status": "passed", "passed": True, "exit_code": 0}])
    ]
    return Candidate(
        name=name,
        kind="command",
        model=None,
        status="success" if eligible else "failed",
        eligible=eligible,
        gates=gates,
        cost_usd=cost,
        duration=duration,
        ended_at=ended,
        diff="+line\n" * added,
        diff_truncated=False,
        diffstat=f" x.py | {added + removed} +",
        files_changed=1,
        lines_added=added,
        lines_removed=removed,
        output=f"{name} done",
        cwd=kw.pop("cwd", None),
        **kw,
    )


FAILED_TESTS = [{"name": "tests", "required": True, "status": "failed", "passed": False, "exit_code": 1, "reason": "exit code 1"}]


def three() -> list[Candidate]:
    """worker_1 failed its tests gate (and is the cheapest, fastest and first of all: it may
    still not win); worker_2 passed with a large diff, cheaper and earlier; worker_3 passed
    with a small diff, faster."""
    return [
        cand("worker_1", eligible=False, gates=FAILED_TESTS, added=1, cost=0.001, duration=1.0, ended=T0 - 50),
        cand("worker_2", added=180, removed=20, cost=0.02, duration=8.0, ended=T0 + 10),
        cand("worker_3", added=8, removed=2, cost=0.03, duration=5.0, ended=T0 + 20),
    ]


def pick(tmp_path: Path, candidates: list[Candidate], select: str, cancel=None, **sections) -> Selection:
    settings = make_settings(tmp_path, **sections)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    return choose(
        "Add a helper",
        candidates,
        select,
        settings=settings,
        judge={},
        runner=ProcessRunner(),
        env={**env, "ORCHESTRATOR_API_KEY": "secret-worker-key"},
        work_dir=tmp_path / "selection",
        cancel=cancel,
    )


def rows_by_name(selection: Selection) -> dict[str, dict]:
    return {row.worker: row for row in selection.ranking}


# -- the three candidates ---------------------------------------------------------------------------------
def test_best_picks_the_small_diff_and_records_every_score_and_its_parts(tmp_path):
    chosen = pick(tmp_path, three(), "best")
    assert chosen.winner == "worker_3", chosen.reason
    assert [r.worker for r in chosen.ranking] == ["worker_3", "worker_2", "worker_1"]
    rows = rows_by_name(chosen)
    # No scoring command: gates, diff size, cost and duration count (55 points of weight).
    small, large = rows["worker_3"], rows["worker_2"]
    assert small.parts == {"gates_passed": 20.0, "diff_lines": 15.0, "cost_usd": pytest.approx(6.67), "duration": 10.0}
    assert large.parts == {"gates_passed": 20.0, "diff_lines": 0.75, "cost_usd": 10.0, "duration": 6.25}
    assert small.score == round(100 * (20 + 15 + 10 * (0.02 / 0.03) + 10) / 55, 2) == 93.94
    assert large.score == round(100 * (20 + 0.75 + 10 + 6.25) / 55, 2) == 67.27
    assert small.measures == {"gates_passed": 1.0, "diff_lines": 10, "cost_usd": 0.03, "duration": 5.0}
    assert (small.rank, large.rank) == (1, 2)
    assert (
        chosen.reason == "best score 93.94 of 2 eligible: gates_passed 20/20, diff_lines 15/15, cost_usd 6.67/10, duration 10/10"
    )
    # The failed one: out, last, with why; never scored.
    out = rows["worker_1"]
    assert (out.eligible, out.score, out.rank, out.parts) == (False, None, None, {})
    assert out.reason == "not eligible: required gate tests did not pass (exit code 1)"
    assert chosen.judge is None and chosen.cost_usd is None
    assert json.loads(json.dumps(chosen.to_dict()))["winner"] == "worker_3"


def test_cheapest_fastest_and_first_passing_pick_among_the_eligible_only(tmp_path):
    cheapest = pick(tmp_path, three(), "cheapest")
    assert cheapest.winner == "worker_2" and cheapest.reason.startswith("cheapest of 2 eligible: cost $0.0200")
    fastest = pick(tmp_path, three(), "fastest")
    assert fastest.winner == "worker_3" and fastest.reason.startswith("fastest of 2 eligible: duration 5.0s")
    first = pick(tmp_path, three(), "first_passing")
    assert first.winner == "worker_2" and first.reason.startswith("first to pass of 2 eligible: ended at ")
    # Chosen as soon as one passed: the others still run (no end yet) and are out, saying so.
    running = Candidate("worker_4", "command", None, "running", False, [], None, None, None, "", False, None, 0, 0, 0, "", None)
    early = pick(tmp_path, [cand("worker_1", ended=T0), running], "first_passing")
    assert early.winner == "worker_1"
    assert early.ranking[1].reason == "not eligible: it had not passed when the choice was made (status running)"
    for chosen in (cheapest, fastest, first):
        assert chosen.ranking[-1].worker == "worker_1" and chosen.ranking[-1].rank is None
        assert all(row.score is None for row in chosen.ranking)  # only best scores
        assert rows_by_name(chosen)["worker_2"].measures["diff_lines"] == 200  # measures recorded anyway


def test_unknown_cost_ranks_after_a_known_one_and_unknown_duration_after_a_known_one(tmp_path):
    candidates = [cand("worker_1", cost=None, duration=None), cand("worker_2", cost=0.5, duration=100.0)]
    assert pick(tmp_path, candidates, "cheapest").winner == "worker_2"
    assert pick(tmp_path, candidates, "fastest").winner == "worker_2"
    # best: an unknown cost counts as the median of the known ones (here the one known), never as 0 points.
    rows = rows_by_name(pick(tmp_path, candidates, "best"))
    assert rows["worker_1"].parts["cost_usd"] == rows["worker_2"].parts["cost_usd"] == 10.0
    assert "cost unknown, counted as the median of the known costs" in rows["worker_1"].reason


def test_best_scores_an_unknown_cost_as_the_median_of_the_known_costs(tmp_path):
    # Given three priced candidates ($0.10, $0.20, $0.40) and one whose model has no known price
    priced = [cand("worker_1", cost=0.1), cand("worker_2", cost=0.2), cand("worker_3", cost=0.4)]
    unknown = cand("worker_4", cost=None)
    # When best ranks them
    rows = rows_by_name(pick(tmp_path, [*priced, unknown], "best"))
    # Then the unknown one scores on cost as the median ($0.20) does: half the cheapest's points, above the dearest
    parts = {name: row.parts["cost_usd"] for name, row in rows.items()}
    assert parts == {"worker_1": 10.0, "worker_2": 5.0, "worker_3": 2.5, "worker_4": 5.0}
    assert rows["worker_4"].measures["cost_usd"] is None  # the record keeps what was known
    assert "counted as the median" not in rows["worker_2"].reason


def test_no_eligible_candidate_means_no_winner_and_says_why(tmp_path):
    candidates = [
        cand("worker_1", eligible=False, gates=FAILED_TESTS),
        Candidate("worker_2", "claude", "sonnet", "timeout", False, [], None, 30.0, T0, "", False, None, 0, 0, 0, "", None),
    ]
    for select in ("best", "cheapest", "fastest", "first_passing"):
        chosen = pick(tmp_path, candidates, select)
        assert chosen.winner is None
        assert chosen.reason == (
            "no candidate is eligible (worker_1: required gate tests did not pass (exit code 1); worker_2: it ended timeout)"
        )
        assert [r.rank for r in chosen.ranking] == [None, None]


# -- ties ---------------------------------------------------------------------------------------------------
def test_a_tie_on_score_breaks_by_lower_cost_then_earlier_end_then_natural_name(tmp_path):
    no_cost = {"scoring": {"weights": {"cost_usd": 0, "duration": 0}}}
    # Same score; the cheaper one wins.
    chosen = pick(tmp_path, [cand("worker_1", cost=0.05), cand("worker_2", cost=0.01)], "best", **no_cost)
    assert chosen.winner == "worker_2"
    assert chosen.ranking[0].score == chosen.ranking[1].score == 100.0
    assert chosen.reason.endswith("(won a tie with worker_1 by lower cost)")
    assert chosen.ranking[1].reason.endswith("tied with worker_2, ranked after it by lower cost")
    # Same score and cost: the earlier end wins.
    chosen = pick(tmp_path, [cand("worker_1", ended=T0 + 1), cand("worker_2", ended=T0)], "best", **no_cost)
    assert chosen.winner == "worker_2" and chosen.reason.endswith("(won a tie with worker_1 by earlier end)")
    # Everything equal: the name, in natural order (worker_2 before worker_10), in any input order.
    for order in ([cand("worker_10"), cand("worker_2")], [cand("worker_2"), cand("worker_10")]):
        chosen = pick(tmp_path, order, "best", **no_cost)
        assert chosen.winner == "worker_2" and chosen.reason.endswith("(won a tie with worker_10 by name)")
    # cheapest: an equal cost breaks by the earlier end.
    chosen = pick(tmp_path, [cand("worker_1", ended=T0 + 5), cand("worker_2", ended=T0)], "cheapest")
    assert chosen.winner == "worker_2" and "won a tie with worker_1 by earlier end" in chosen.reason


def test_a_single_eligible_candidate_scores_100(tmp_path):
    chosen = pick(tmp_path, [cand("worker_1"), cand("worker_2", eligible=False, gates=FAILED_TESTS)], "best")
    assert chosen.winner == "worker_1" and chosen.ranking[0].score == 100.0


# -- a real scoring command ----------------------------------------------------------------------------------
SCORER = textwrap.dedent(
    """\
    import json, os, pathlib, sys, time
    here = pathlib.Path.cwd()
    pathlib.Path(here, "scorer.pid").write_text(str(os.getpid()))
    mode = pathlib.Path(here, "mode").read_text().strip()
    if mode == "json":
        found = json.loads(pathlib.Path(here, "found.json").read_text())
        found["has_worker_key"] = "ORCHESTRATOR_API_KEY" in os.environ
        print("running tests...")
        print(json.dumps(found))
    elif mode == "garbage":
        print("12 passed, 0 failed -- no JSON here at all")
    elif mode == "fail":
        print("collection error", file=sys.stderr)
        sys.exit(2)
    elif mode == "hang":
        time.sleep(60)
    """
)


def worktree(tmp_path: Path, name: str, mode: str, found: dict | None = None) -> Path:
    folder = tmp_path / "trees" / name
    folder.mkdir(parents=True)
    (folder / "score.py").write_text(SCORER)
    (folder / "mode").write_text(mode)
    if found is not None:
        (folder / "found.json").write_text(json.dumps(found))
    return folder


def test_a_scoring_commands_json_is_scored_and_its_other_keys_kept_at_weight_0(tmp_path):
    # worker_2's diff is the smaller, but worker_1 passes more tests, fails none and covers more.
    one = worktree(
        tmp_path,
        "worker_1",
        "json",
        {
            "tests_passed": 12,
            "tests_failed": 0,
            "coverage": 90.0,
            "lint_warnings": 2,
            "flaky": 1,
            "suite": "unit",
            "diff_lines": 1,
        },
    )
    two = worktree(tmp_path, "worker_2", "json", {"tests_passed": 9, "tests_failed": 3, "coverage": 60.0, "lint_warnings": 0})
    candidates = [cand("worker_1", added=40, cwd=one), cand("worker_2", added=20, cwd=two)]
    command = {"scoring": {"command": [sys.executable, "score.py"], "timeout": 30}}
    chosen = pick(tmp_path, candidates, "best", **command)
    assert chosen.winner == "worker_1", chosen.reason
    rows = rows_by_name(chosen)
    first = rows["worker_1"]
    assert first.measures == {
        "gates_passed": 1.0,
        "diff_lines": 40,  # the orchestrator's own measure: the command's diff_lines is not used
        "cost_usd": 0.02,
        "duration": 5.0,
        "tests_passed": 12,
        "tests_failed": 0,
        "coverage": 90.0,
        "lint_warnings": 2,
        "flaky": 1,
        "suite": "unit",
        "has_worker_key": False,  # the worker's key never reaches the scoring command
        "scoring_command": "ok",
    }
    assert first.parts["tests_passed"] == 15.0 and first.parts["tests_failed"] == 15.0
    assert rows["worker_2"].parts["tests_passed"] == 11.25 and rows["worker_2"].parts["tests_failed"] == 0.0
    assert first.parts["lint_warnings"] == 0.0 and rows["worker_2"].parts["lint_warnings"] == 5.0
    assert "flaky" not in first.parts  # unknown keys: weight 0 unless configured
    # Configured, an unknown key counts: flaky tests are bad, and worker_2 has none reported.
    weighted = {"scoring": {**command["scoring"], "weights": {"flaky": -200}}}
    rows = rows_by_name(pick(tmp_path, candidates, "best", **weighted))
    assert rows["worker_1"].parts["flaky"] == 200.0 and rows["worker_2"].parts["flaky"] == 0.0
    assert (tmp_path / "selection" / "scoring-worker_1.log").read_text().startswith("running tests...")


@pytest.mark.slow
def test_a_scoring_command_printing_garbage_failing_or_hanging_is_noted_not_crashed_on(tmp_path):
    good = worktree(tmp_path, "worker_1", "json", {"tests_passed": 3, "tests_failed": 0})
    garbage = worktree(tmp_path, "worker_2", "garbage")
    failing = worktree(tmp_path, "worker_3", "fail")
    hanging = worktree(tmp_path, "worker_4", "hang")
    candidates = [
        cand("worker_1", added=50, cwd=good),
        cand("worker_2", cwd=garbage),
        cand("worker_3", cwd=failing),
        cand("worker_4", cwd=hanging),
        cand("worker_5", cwd=None),
    ]
    started = time.monotonic()
    chosen = pick(tmp_path, candidates, "best", scoring={"command": [sys.executable, "score.py"], "timeout": 1})
    assert time.monotonic() - started < 20
    rows = rows_by_name(chosen)
    status = {name: row.measures["scoring_command"] for name, row in rows.items()}
    assert status == {
        "worker_1": "ok",
        "worker_2": "no JSON object in its output: 12 passed, 0 failed -- no JSON here at all",
        "worker_3": "failed: exit code 2: collection error",
        "worker_4": "timed out after 1s; its process group was killed",
        "worker_5": "not run: the candidate's worktree is gone",
    }
    for name in ("worker_2", "worker_3", "worker_4", "worker_5"):
        assert f"scoring command {status[name]}" in rows[name].reason
        assert "tests_passed" not in rows[name].measures and rows[name].parts["tests_passed"] == 0.0
    assert chosen.winner == "worker_1"  # the only one with tests to show
    pid = int((hanging / "scorer.pid").read_text())
    with contextlib.suppress(psutil.NoSuchProcess):  # gone, or (reaped later by whoever adopted it) a zombie
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_relative_scoring_command_is_the_candidates_own_and_a_missing_one_is_noted(tmp_path):
    folder = worktree(tmp_path, "worker_1", "json", {"coverage": 70})
    (folder / "score.sh").write_text(f'#!/bin/sh\nexec "{sys.executable}" score.py\n')
    (folder / "score.sh").chmod(0o755)
    chosen = pick(tmp_path, [cand("worker_1", cwd=folder)], "best", scoring={"command": ["./score.sh"]})
    assert chosen.ranking[0].measures["coverage"] == 70
    chosen = pick(tmp_path, [cand("worker_1", cwd=folder)], "best", scoring={"command": ["no-such-scorer-xyz"]})
    assert (
        chosen.ranking[0].measures["scoring_command"]
        == "not run: 'no-such-scorer-xyz' was not found on the PATH (scoring.command)"
    )


@pytest.mark.slow
def test_a_cancelled_selection_starts_no_scoring_command_and_stops_a_running_one(tmp_path):
    hanging = worktree(tmp_path, "worker_1", "hang")
    other = worktree(tmp_path, "worker_2", "json", {"coverage": 1})
    command = {"scoring": {"command": [sys.executable, "score.py"], "timeout": 60}}
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    started = time.monotonic()
    chosen = pick(tmp_path, [cand("worker_1", cwd=hanging), cand("worker_2", cwd=other)], "best", cancel=cancel, **command)
    assert time.monotonic() - started < 10
    rows = rows_by_name(chosen)
    assert rows["worker_1"].measures["scoring_command"] == "cancelled: the selection was cancelled"
    assert rows["worker_2"].measures["scoring_command"] == "not run: the selection was cancelled"
    assert not (other / "scorer.pid").exists()
    assert chosen.winner in ("worker_1", "worker_2")  # what is known still decides


def test_first_passing_cheapest_and_fastest_never_run_the_scoring_command(tmp_path):
    folder = worktree(tmp_path, "worker_1", "json", {"coverage": 1})
    for select in ("cheapest", "fastest", "first_passing"):
        chosen = pick(tmp_path, [cand("worker_1", cwd=folder)], select, scoring={"command": [sys.executable, "score.py"]})
        assert "scoring_command" not in chosen.ranking[0].measures
    assert not (folder / "scorer.pid").exists()


def test_choose_refuses_an_unknown_select_and_a_judge_select_without_a_judge(tmp_path):
    with pytest.raises(ConfigError, match="select='worst' is not allowed"):
        pick(tmp_path, three(), "worst")
    with pytest.raises(ConfigError, match="select: judge needs a judge"):
        pick(tmp_path, three(), "judge")


# -- the scoring settings ------------------------------------------------------------------------------------
def test_weights_merge_over_the_documented_defaults_and_bad_ones_are_refused(tmp_path):
    assert sum(abs(w) for w in DEFAULT_WEIGHTS.values()) == 100
    settings = load_settings(base_dir=tmp_path, environ={}, overrides={"scoring": {"weights": {"coverage": 30, "perf": 5}}})
    assert settings.scoring.weights == {**DEFAULT_WEIGHTS, "coverage": 30.0, "perf": 5.0}
    assert settings.scoring.command == [] and settings.scoring.timeout == 120.0
    with pytest.raises(ConfigError, match=r"scoring.weights.coverage must be a number from -1000 to 1000"):
        parse_weights({"coverage": "high"})
    with pytest.raises(ConfigError, match="scoring.weights.coverage must be a number"):
        parse_weights({"coverage": True})
    with pytest.raises(ConfigError, match="is not a measure name"):
        parse_weights({"9 lives": 1})
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(base_dir=tmp_path, environ={}, overrides={"scoring": {"weights": [1, 2]}})
    with pytest.raises(ConfigError, match="scoring.command"):
        load_settings(base_dir=tmp_path, environ={}, overrides={"scoring": {"command": "pytest -q"}})
