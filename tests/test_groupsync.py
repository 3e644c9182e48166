"""Group commit: callers share runs, each served by a run that began after its call."""

from __future__ import annotations

import threading
import time

import pytest

from orchestrator.workspace.groupsync import GroupCommit


class Recorder:
    """An operation that notes when each run began and what it served, and takes a while."""

    def __init__(self, takes: float = 0.005, fail_first: bool = False) -> None:
        self.runs: list[tuple[float, list[tuple[int, float]]]] = []
        self.takes = takes
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, batch: list[tuple[int, float]]) -> None:
        began = time.monotonic()
        with self.lock:
            self.runs.append((began, list(batch)))
            fail = self.fail_first and len(self.runs) == 1
        time.sleep(self.takes)
        if fail:
            raise OSError("the first run fails")


def call_together(commit: GroupCommit, callers: int, calls: int = 1) -> list[BaseException]:
    barrier = threading.Barrier(callers)
    errors: list[BaseException] = []

    def caller(n: int) -> None:
        barrier.wait()
        for k in range(calls):
            try:
                commit((n * 1000 + k, time.monotonic()))
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


@pytest.mark.parametrize("gather", [0.0, 0.02])
def test_every_request_is_served_once_by_a_run_that_began_after_it(gather):
    # Given 8 threads each asking 20 times, with and without a gathering wait
    op = Recorder()
    assert call_together(GroupCommit(op, gather=gather), callers=8, calls=20) == []
    # Then every request was in exactly one run, and that run began after it was asked for
    served = [request for _, batch in op.runs for request in batch]
    assert sorted(r[0] for r in served) == sorted(n * 1000 + k for n in range(8) for k in range(20))
    for began, batch in op.runs:
        assert all(asked <= began for _, asked in batch)
    # and runs never overlapped
    starts = [began for began, _ in op.runs]
    assert all(b - a >= op.takes * 0.9 for a, b in zip(starts, starts[1:]))


def test_a_gathering_wait_lets_callers_who_arrive_meanwhile_share_the_run():
    # Given a 0.5 s gathering wait and 6 callers arriving together after a quiet spell
    op = Recorder(takes=0.0)
    assert call_together(GroupCommit(op, gather=0.5), callers=6) == []
    # Then the first was served at once, alone (nothing came just before it), and the five that
    # came right after it shared the next run (a barrier releases them well within 0.5 s)
    assert [len(batch) for _, batch in op.runs] == [1, 5]


def test_a_lone_request_is_not_held_up_waiting_for_company():
    # Given a 0.4 s gathering wait, and requests a quiet spell apart (a chain: each waits on the one before)
    op = Recorder(takes=0.0)
    commit = GroupCommit(op, gather=0.4)
    for n in range(3):
        commit((n, time.monotonic()))
        time.sleep(0.9)  # longer than twice the gathering wait: no company is likely
    # Then each run began right after its request, without the gathering wait
    assert [len(batch) for _, batch in op.runs] == [1, 1, 1]
    assert all(began - batch[0][1] < 0.2 for began, batch in op.runs)


def test_a_failed_run_raises_in_every_caller_it_served_and_the_next_run_works():
    op = Recorder(takes=0.05, fail_first=True)
    commit = GroupCommit(op, gather=0.02)
    errors = call_together(commit, callers=4)
    first_run = len(op.runs[0][1])
    assert len(errors) == first_run and all(isinstance(e, OSError) for e in errors)
    commit((99, time.monotonic()))  # a later call gets a fresh run
    assert op.runs[-1][1][0][0] == 99
