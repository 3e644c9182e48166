"""``select: judge`` (orchestrator/selection/judge.py): the answer parser, the knockout bracket
and its fallbacks with a fake runner that answers as the claude CLI would (no process), then
the real claude CLI against the loopback mock model server, whose JSON picks a candidate."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

from orchestrator.outcomes import GateResult
from orchestrator.process.runner import ProcessRunner
from orchestrator.selection import Candidate, Selection, choose
from orchestrator.selection.judge import judge_prompt, parse_verdict

from .conftest import find_cli, make_settings
from .mock_model_server import MockModelServer, Text, prompt_text

T0 = 1_800_000_000.0
CLAUDE = find_cli("claude")
JUDGE = {"kind": "claude", "model": "judge-model", "timeout": 60}


def cand(name: str, marker: str, added: int, *, eligible: bool = True, ended: float = T0) -> Candidate:
    """A candidate whose diff carries ``marker`` (how a scripted judge recognises it)."""
    gates = [
        GateResult.from_dict(
            {"name": "tests", "required": True, "status": "passed" if eligible else "failed", "passed": eligible}
        )
    ]
    return Candidate(
        name=name,
        kind="command",
        model=None,
        status="success" if eligible else "failed",
        eligible=eligible,
        gates=gates,
        cost_usd=None,
        duration=5.0,
        ended_at=ended,
        diff=f"--- a/x.py\n+++ b/x.py\n+# {marker}\n" + "+pass\n" * added,
        diff_truncated=False,
        diffstat=f" x.py | {added + 1} +",
        files_changed=1,
        lines_added=added + 1,
        lines_removed=0,
        output=f"Implemented it the {marker} way.",
        cwd=None,
    )


# -- the parser ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer, label, reasons",
    [
        ('{"winner": "A", "reasons": "smaller and correct"}', "A", "smaller and correct"),
        (
            'I compared both.\n```json\n{"winner": "B",\n "reasons": "handles the edge case"}\n```\nDone.',
            "B",
            "handles the edge case",
        ),
        (
            'Thinking... {"winner":"a","reasons":"x"} then, on reflection: {"Winner": " Candidate B ", "Reasons": " y  z "}',
            "B",
            "y z",
        ),
        ('{ "WINNER" : "candidate a" , "reason": ["tests pass", "less code"] }', "A", "tests pass; less code"),
        ("{'winner': 'B', 'reasons': 'single quotes',}", "B", "single quotes"),
        ('Example: {"winner": "A"}\n```json\n{"winner": "B", "reasons": "fenced wins"}\n```\n{"note": 1}', "B", "fenced wins"),
    ],
)
def test_the_parser_finds_the_verdict_in_prose_fences_any_case_and_spacing(answer, label, reasons):
    verdict = parse_verdict(answer)
    assert (verdict.label, verdict.reasons, verdict.problem) == (label, reasons, None)


@pytest.mark.parametrize(
    "answer, problem",
    [
        ("", "the answer is empty"),
        (
            "Both are fine, I would pick the first one.",
            "no JSON object with a \"winner\" in the answer: 'Both are fine, I would pick the first one.'",
        ),
        ('{"winner": "tie", "reasons": "equal"}', "the answer's winner is 'tie', not A or B"),
        ('{"verdict": "A"}', 'no JSON object with a "winner" in the answer: \'{"verdict": "A"}\''),
        ('{"winner": "C"}', "the answer's winner is 'C', not A or B"),
    ],
)
def test_the_parser_refuses_an_unusable_answer_and_says_why(answer, problem):
    verdict = parse_verdict(answer)
    assert verdict.label is None and verdict.problem == problem


def test_the_prompt_shows_the_task_both_runs_and_gates_under_blind_labels():
    first, second = cand("worker_7", "GOOD", 3), cand("worker_9", "BAD", 2)
    first.diff += "```\n"  # a fence inside a diff does not end the prompt's fence
    prompt = judge_prompt("Add a helper", first, second)
    assert "worker_7" not in prompt and "worker_9" not in prompt
    a, b = prompt.index("## Candidate A"), prompt.index("## Candidate B")
    assert a < prompt.index("# GOOD") < b < prompt.index("# BAD")
    assert "Implemented it the GOOD way." in prompt and "tests passed (required)" in prompt
    assert "## The task\n\nAdd a helper" in prompt and '{"winner": "A" or "B"' in prompt
    assert "````diff" in prompt


# -- the bracket, with a fake runner -----------------------------------------------------------------------
class FakeHandle:
    def __init__(self, tag: str) -> None:
        self.tag = tag


class AnsweringRunner:
    """Stands in for ProcessRunner: each spawn "runs" the claude CLI by writing the result event
    ``answer(prompt)`` gives to its log at once, at $0.01 a call. Records every call."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls: list[dict] = []

    def spawn(self, argv, *, cwd, env, log_path, tag, exit_file=None, sandbox=None, limits=None):
        prompt = argv[-1]
        self.calls.append({"argv": argv, "env": env, "prompt": prompt, "cwd": cwd, "sandbox": sandbox, "limits": limits})
        event = {"type": "result", "subtype": "success", "is_error": False, "result": self.answer(prompt), "total_cost_usd": 0.01}
        Path(log_path).write_text(json.dumps(event) + "\n")
        return FakeHandle(tag)

    def wait(self, handle, timeout, wake=None):
        return 0

    def terminate(self, handle, *, grace, first_signal=None):
        return "exited"

    def release(self, handle):
        pass


def shown(prompt: str) -> tuple[str, str]:
    """The markers of Candidate A and Candidate B in a judge prompt."""
    markers = re.findall(r"^\+# (\w+)$", prompt, re.M)
    return markers[0], markers[1]


def prefers(*order: str):
    """A consistent judge: the candidate whose marker comes first in ``order`` wins."""

    def answer(prompt: str) -> str:
        a, b = shown(prompt)
        label = "A" if order.index(a) < order.index(b) else "B"
        return f'After reading both: {{"winner": "{label}", "reasons": "{[a, b][label == "B"]} is better"}}'

    return answer


def judged(tmp_path: Path, candidates: list[Candidate], runner, cancel=None, env=None) -> Selection:
    return choose(
        "Add a helper",
        candidates,
        "judge",
        settings=make_settings(tmp_path, orchestrator={"claude_command": "claude-for-tests"}),
        judge=JUDGE,
        runner=runner,
        env=env if env is not None else {"PATH": os.environ["PATH"]},
        work_dir=tmp_path / "selection",
        cancel=cancel,
    )


def test_a_confined_judge_runs_each_call_in_its_sandbox_under_the_caps_and_none_where_there_is_no_sandbox(tmp_path):
    """``confined`` (the engine's): each call gets the sandbox made for its own folder and the caps, no
    ORCHESTRATOR_* variable and a TMPDIR in that folder; no sandbox: no call, ``best`` decides, saying why."""
    from orchestrator.process.cgroups import Limits
    from orchestrator.process.sandbox import SandboxSpec
    from orchestrator.selection.judge import Confined

    candidates = [cand("worker_1", "s1", 1), cand("worker_2", "s2", 5)]
    asked: list[Path] = []

    def sandbox_at(folder, env):
        asked.append(folder)
        return SandboxSpec("/usr/bin/bwrap", writable=(str(folder),))

    caps = Limits.from_mb(100, 10, 1, 1)
    settings = make_settings(tmp_path, orchestrator={"claude_command": "claude-for-tests"})
    runner = AnsweringRunner(prefers("s2", "s1"))
    env = {"PATH": os.environ["PATH"], "ORCHESTRATOR_API_KEY": "k"}
    common = dict(settings=settings, judge=JUDGE, runner=runner, env=env, work_dir=tmp_path / "sel")
    chosen = choose("t", candidates, "judge", confined=Confined(sandbox_at, caps, ""), **common)
    assert chosen.winner == "worker_2" and len(runner.calls) == 2
    assert [c["cwd"] for c in runner.calls] == asked and all(c["limits"] is caps for c in runner.calls)
    assert [c["sandbox"].writable for c in runner.calls] == [(str(folder),) for folder in asked]
    assert all(c["env"]["TMPDIR"] == str(c["cwd"] / "tmp") and "ORCHESTRATOR_API_KEY" not in c["env"] for c in runner.calls)
    assert all("--tools" in c["argv"] and c["argv"][c["argv"].index("--tools") + 1] == "" for c in runner.calls)

    refused = choose("t", candidates, "judge", confined=Confined(lambda f, e: None, caps, "workers run unconfined"), **common)
    assert len(runner.calls) == 2  # no call made
    (match,) = refused.judge.matches
    assert refused.winner == "worker_1" and match.fallback is True, refused
    assert "the judge was not asked" in match.reason and match.reason.endswith(
        "no sandbox runs it here: workers run unconfined"
    ), match.reason


def test_a_consistent_judge_picks_the_winner_through_a_bracket_with_a_bye_and_both_orders(tmp_path):
    # best ranks by diff size: s1 (smallest) > s2 > s3; the judge prefers s3, then s2.
    candidates = [cand("worker_1", "s1", 1), cand("worker_2", "s2", 5), cand("worker_3", "s3", 9)]
    runner = AnsweringRunner(prefers("s3", "s2", "s1"))
    chosen = judged(tmp_path, candidates, runner, env={"PATH": os.environ["PATH"], "ORCHESTRATOR_API_KEY": "k"})
    assert chosen.winner == "worker_3", chosen.reason
    bye, semi, final = chosen.judge.matches
    assert bye.to_dict() == {
        "round": 1,
        "a": "worker_1",
        "b": None,
        "orders": [],
        "winner": "worker_1",
        "reason": "a bye (odd one out)",
        "fallback": False,
    }
    assert (semi.a, semi.b, semi.winner, semi.fallback) == ("worker_2", "worker_3", "worker_3", False)
    assert [list(o.shown) for o in semi.orders] == [["worker_2", "worker_3"], ["worker_3", "worker_2"]]
    assert [o.parsed for o in semi.orders] == ["B", "A"]
    assert semi.orders[0].reasons == "s3 is better" and semi.orders[0].answer.startswith("After reading both")
    assert semi.reason == "the judge picked worker_3 in both orders: s3 is better"
    assert (final.round, final.a, final.b, final.winner) == (2, "worker_1", "worker_3", "worker_3")
    assert (chosen.judge.kind, chosen.judge.model) == ("claude", "judge-model")
    assert chosen.cost_usd == pytest.approx(0.04)  # four calls at $0.01
    assert [r.worker for r in chosen.ranking] == ["worker_3", "worker_1", "worker_2"]
    assert [r.rank for r in chosen.ranking] == [1, 2, 3]
    assert chosen.ranking[0].reason.startswith("won the judge's knockout; best score")
    assert chosen.ranking[1].reason.startswith("lost to worker_3 in round 2")
    assert all(r.score is not None for r in chosen.ranking)  # best's scores stay recorded
    assert chosen.reason.startswith("won the judge's knockout of 3 eligible in 2 round(s); final: the judge picked worker_3")
    # The CLI ran as the planner runs it: the adapter's argv, its model, no worker key.
    call = runner.calls[0]
    assert call["argv"][0] == "claude-for-tests" and call["argv"][call["argv"].index("--model") + 1] == "judge-model"
    assert "ORCHESTRATOR_API_KEY" not in call["env"]
    assert (tmp_path / "selection" / "judge" / "round1-worker_2-vs-worker_3" / "judge_prompt.md").is_file()
    assert json.loads(json.dumps(chosen.to_dict()))["judge"]["matches"][1]["orders"][1]["shown"] == ["worker_3", "worker_2"]


def test_a_judge_biased_by_position_disagrees_with_itself_and_the_pair_falls_back_to_best(tmp_path):
    candidates = [cand("worker_1", "s1", 1), cand("worker_2", "s2", 9)]
    runner = AnsweringRunner(lambda prompt: '{"winner": "A", "reasons": "the first one"}')
    chosen = judged(tmp_path, candidates, runner)
    (match,) = chosen.judge.matches
    assert [o.parsed for o in match.orders] == ["A", "A"]
    assert match.fallback is True and match.winner == "worker_1" == chosen.winner  # best's pick: the smaller diff
    assert match.reason == (
        "fell back to best (worker_1 ranks higher): the two orders disagreed "
        "(worker_1 when worker_1 was A, worker_2 when worker_2 was A)"
    )
    assert chosen.cost_usd == pytest.approx(0.02)


def test_a_garbage_answer_falls_back_to_best_without_asking_the_second_order(tmp_path):
    candidates = [cand("worker_1", "s1", 9), cand("worker_2", "s2", 1)]
    runner = AnsweringRunner(lambda prompt: "I cannot decide; both look fine to me.")
    chosen = judged(tmp_path, candidates, runner)
    (match,) = chosen.judge.matches
    assert len(runner.calls) == 1 and len(match.orders) == 1
    assert match.orders[0].parsed is None and list(match.orders[0].shown) == ["worker_2", "worker_1"]
    assert match.fallback is True and chosen.winner == "worker_2"
    assert match.reason.startswith(
        "fell back to best (worker_2 ranks higher): the answer with worker_2 shown as A was unusable: "
    )
    assert chosen.cost_usd == pytest.approx(0.01)


def test_four_candidates_play_two_rounds_and_an_ineligible_one_never_plays(tmp_path):
    candidates = [cand(f"worker_{i}", f"s{i}", i) for i in range(1, 5)] + [cand("worker_5", "s5", 1, eligible=False)]
    runner = AnsweringRunner(prefers("s4", "s3", "s2", "s1"))
    chosen = judged(tmp_path, candidates, runner)
    pairs = [(m.round, m.a, m.b, m.winner) for m in chosen.judge.matches]
    assert pairs == [
        (1, "worker_1", "worker_4", "worker_4"),
        (1, "worker_2", "worker_3", "worker_3"),
        (2, "worker_3", "worker_4", "worker_4"),
    ]
    assert chosen.winner == "worker_4" and len(runner.calls) == 6
    assert chosen.ranking[-1].worker == "worker_5" and chosen.ranking[-1].rank is None
    assert all("s5" not in call["prompt"] for call in runner.calls)


def test_a_cancelled_judge_makes_no_call_and_best_decides_each_pair(tmp_path):
    cancel = threading.Event()
    cancel.set()
    runner = AnsweringRunner(prefers("s2", "s1"))
    chosen = judged(tmp_path, [cand("worker_1", "s1", 1), cand("worker_2", "s2", 9)], runner, cancel=cancel)
    assert runner.calls == [] and chosen.winner == "worker_1" and chosen.cost_usd is None
    (match,) = chosen.judge.matches
    assert match.fallback and match.reason.endswith("the selection was cancelled before the judge answered")


def test_one_eligible_candidate_needs_no_judge(tmp_path):
    runner = AnsweringRunner(prefers("s1", "s2"))
    chosen = judged(tmp_path, [cand("worker_1", "s1", 1), cand("worker_2", "s2", 1, eligible=False)], runner)
    assert chosen.winner == "worker_1" and runner.calls == [] and chosen.judge.matches == ()
    assert chosen.reason.startswith("only one eligible candidate, nothing to judge: best score 100")


def test_a_judge_cli_that_is_missing_falls_back_with_why(tmp_path):
    chosen = choose(
        "Add a helper",
        [cand("worker_1", "s1", 1), cand("worker_2", "s2", 9)],
        "judge",
        settings=make_settings(tmp_path, orchestrator={"claude_command": str(tmp_path / "no-such-claude")}),
        judge=JUDGE,
        runner=ProcessRunner(),
        env={"PATH": os.environ["PATH"]},
        work_dir=tmp_path / "selection",
    )
    (match,) = chosen.judge.matches
    assert chosen.winner == "worker_1" and match.fallback
    assert "no-such-claude" in match.orders[0].problem and "orchestrator.claude_command" in match.orders[0].problem


# -- the real claude CLI against the mock model server ---------------------------------------------------------
def cli_env(mock: MockModelServer, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_", "ORCHESTRATOR"))}
    return {**env, **mock.client_env("sk-ant-mock-judge"), "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude")}


def real_judge(tmp_path: Path, mock: MockModelServer, candidates: list[Candidate]) -> Selection:
    return choose(
        "Add a helper",
        candidates,
        "judge",
        settings=make_settings(tmp_path, orchestrator={"claude_command": CLAUDE}),
        judge=JUDGE,
        runner=ProcessRunner(),
        env=cli_env(mock, tmp_path / "home"),
        work_dir=tmp_path / "selection",
    )


@pytest.mark.slow
@pytest.mark.real_cli
@pytest.mark.skipif(CLAUDE is None, reason="claude CLI not found (run tests/install_cli.sh)")
def test_the_real_claude_cli_judges_and_its_json_picks_the_winner_in_both_orders(tmp_path):
    def script(body):
        a, b = shown(prompt_text(body))
        label = "A" if a == "GOOD" else "B"
        return Text(
            f'Having compared them:\n```json\n{{"winner": "{label}", "reasons": "the GOOD one handles empty input"}}\n```'
        )

    # best would pick worker_1 (the smaller diff); the judge prefers worker_2's.
    candidates = [cand("worker_1", "PLAIN", 1), cand("worker_2", "GOOD", 12)]
    with MockModelServer(script, lifetime=180) as mock:
        chosen = real_judge(tmp_path, mock, candidates)
        why = f"{chosen.to_dict()}\n--- mock\n{mock.summary()}"
        conversation = list(mock.conversation)
    assert chosen.winner == "worker_2", why
    (match,) = chosen.judge.matches
    assert match.fallback is False, why
    assert [list(o.shown) for o in match.orders] == [["worker_1", "worker_2"], ["worker_2", "worker_1"]]
    assert [o.parsed for o in match.orders] == ["B", "A"]
    assert match.reason == "the judge picked worker_2 in both orders: the GOOD one handles empty input"
    # Two calls, each priced by the CLI itself; the selection's cost is their sum.
    costs = [o.cost_usd for o in match.orders]
    assert all(c and c > 0 for c in costs) and chosen.cost_usd == pytest.approx(sum(costs)), why
    assert len(conversation) == 2 and all(r.body.get("model") == "judge-model" for r in conversation)
    assert all("worker_1" not in prompt_text(r.body) and "worker_2" not in prompt_text(r.body) for r in conversation)


@pytest.mark.slow
@pytest.mark.real_cli
@pytest.mark.skipif(CLAUDE is None, reason="claude CLI not found (run tests/install_cli.sh)")
def test_the_real_claude_cli_answering_garbage_falls_back_to_best_and_says_so(tmp_path):
    candidates = [cand("worker_1", "PLAIN", 1), cand("worker_2", "GOOD", 12)]
    with MockModelServer(lambda body: Text("Both candidates look reasonable to me."), lifetime=180) as mock:
        chosen = real_judge(tmp_path, mock, candidates)
        why = f"{chosen.to_dict()}\n--- mock\n{mock.summary()}"
    assert chosen.winner == "worker_1", why  # best's pick
    (match,) = chosen.judge.matches
    assert match.fallback is True and len(match.orders) == 1, why
    order = match.orders[0]
    assert order.answer == "Both candidates look reasonable to me." and order.parsed is None
    assert match.reason.startswith("fell back to best (worker_1 ranks higher): the answer with worker_1 shown as A was unusable")
    assert order.cost_usd and chosen.cost_usd == pytest.approx(order.cost_usd)
