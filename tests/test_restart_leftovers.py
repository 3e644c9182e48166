"""What a killed server leaves behind is cleared by the next one to start, and nothing that still runs.

A server's network registrations file (network/egress.py: ``registrations-<pid>-<random>.jsonl``,
held by its flock, a line per attempt on its shared doors), its shared folder and its spare cgroups
(process/cgroups.py) outlive a SIGKILL: the next server to start (of this home or any other of the
user's) ends the registrations of attempts whose cgroups are removed or empty, removes the files and
folders of servers whose flock is gone, and the spares of servers no longer running (pid and start
time). A running attempt's registration is kept however many servers start, until one adopts it.

Real servers (api_server.py, tests/chaos/test_server_kill.py's ``Home``), real sandboxes and cgroups:
root here, a kernel that names a socket's peer by a pidfd (the shared doors) and bubblewrap."""

from __future__ import annotations

import glob
import os
import random
from pathlib import Path

import pytest

from orchestrator.network import egress, peer
from orchestrator.process.cgroups import SPARE, hierarchies

from .chaos.conftest import tagged_alive
from .chaos.test_server_kill import Home, kill_at_random
from .conftest import ROOT, wait_until
from .helpers.echo import echo_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not peer.supported(), reason="the kernel names no Unix socket peer by a pidfd: no shared doors"),
    pytest.mark.skipif(not hierarchies().bases, reason="no cgroup this user may make: no shared doors, no spares"),
]
REACHING = ROOT / "tests" / "fixtures" / "reaching_worker.py"


def files_of(pid: int) -> list[Path]:
    """The registrations files of the server ``pid``."""
    return sorted(egress.sockets_base().glob(f"registrations-{pid}-*.jsonl"))


def live_everywhere(key: str) -> list[Path]:
    """Every registrations file of this user's that holds ``key``'s registration live."""
    found = []
    for path in egress.sockets_base().glob("registrations-*.jsonl"):
        try:
            if key in egress._replay(path):
                found.append(path)
        except OSError:  # removed since it was listed (another server's sweep)
            continue
    return found


def spares_of(pids: list[int]) -> list[str]:
    """The spare cgroups named by any of the servers ``pids``, in every hierarchy."""
    names = {f"{SPARE}{pid}." for pid in pids} | {f"{SPARE}{pid}-" for pid in pids}
    return [
        entry.name
        for _, base in hierarchies().bases.values()
        for entry in os.scandir(base)
        if entry.is_dir() and any(entry.name.startswith(n) for n in names)
    ]


@pytest.mark.timeout(600)
def test_a_running_workers_registration_outlives_its_servers_death_and_goes_once_it_has_ended(tmp_path: Path) -> None:
    """A sandboxed worker (bubblewrap, sandbox_network: allow) reaches a loopback endpoint its config
    allows through its server's proxy. Its server is SIGKILLed: another server starts (of another home:
    it never adopts the worker) and keeps the worker's registration; the worker's own server starts
    again, adopts it, and the worker's connection works as before. That server is killed too, then the
    worker ends while none runs: the next server to start (the other home's) ends the line, and removes
    the dead servers' files and folders; one more restart of the worker's own server ends its job, and
    nothing of either killed server is left."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with echo_server() as port:
        home = Home(
            tmp_path / "a",
            worker=REACHING,
            workers=f'  sandbox: "on"\n  sandbox_network: "allow"\n  sandbox_allow: ["127.0.0.1:{port}"]\n',
        )
        other = Home(tmp_path / "b")
        servers: list[int] = []

        def start(which: Home) -> int:
            pid = which.start().pid
            wait_until(which.healthy, timeout=60)
            return pid

        def reach(n: int) -> bytes:
            (home.runs / f"go-{n}").write_text("")
            got = home.runs / f"got-{n}"
            wait_until(got.exists, timeout=30)  # (the worker renames it there once written)
            return got.read_bytes()

        try:
            servers.append(start(home))
            root = home.call("POST", "/api/v1/orchestrate", json={"request": "reach", "tasks": [f"port={port}"]}).json()["job_id"]
            wait_until(
                lambda: any(w["status"] == "running" and w["attempts"] for w in home.workers_on_disk(root).values()),
                timeout=60,
            )
            assert reach(0) == b"hi"
            (first_file,) = files_of(servers[0])
            (key,) = [k for k in egress._replay(first_file) if k.startswith(f"{root}.")]
            home.kill()

            start(other)  # another server's start: the worker's registration is not its to end
            other.stop()
            assert key in egress._replay(first_file)

            servers.append(start(home))  # the worker's own server again: it adopts the worker
            # (on a worker thread of its takeover's, which may end after the server answers: its
            # registration moved to the new server's file says it is done)
            wait_until(lambda: files_of(servers[1]) != [] and live_everywhere(key) == files_of(servers[1]), timeout=30)
            assert reach(1) == b"hi"
            assert not first_file.exists()  # (its last registration moved to the new server's file)
            home.kill()

            (home.runs / "stop").write_text("")  # the worker ends while no server runs
            wait_until(lambda: tagged_alive(f"{root}.") == [], timeout=30)
            (second_file,) = files_of(servers[1])
            assert key in egress._replay(second_file)

            start(other)  # the next server to start: the ended worker's line and the dead servers' files go
            other.stop()
            assert live_everywhere(key) == []
            assert files_of(servers[0]) == [] and files_of(servers[1]) == []
            folders = [egress.sockets_base() / f"shared-{pid}" for pid in servers]
            assert [f for f in folders if f.exists()] == []

            servers.append(start(home))  # one more restart: the job ends, nothing of its worker is kept
            wait_until(lambda: home.call("GET", f"/api/v1/jobs/{root}").json()["status"] == "completed", timeout=60)
            (worker,) = home.workers_on_disk(root).values()
            assert worker["status"] == "success" and len(worker["attempts"]) == 1
            assert live_everywhere(key) == []
        finally:
            home.stop()
            other.stop()


@pytest.mark.timeout(900)
def test_a_few_random_kills_leave_nothing_of_the_killed_servers(tmp_path: Path) -> None:
    """tests/chaos/test_server_kill.py's random kills, a few rounds of them (seeded: servers killed
    at a failpoint right after a spawn, whose attempts no record names, among them): once the last
    server has seen every job to its end, no registrations file, shared folder or spare cgroup of a
    killed server is left, nor a cgroup of the home's attempts, and the last server's own file holds
    no live registration."""
    home = Home(tmp_path, max_retries=1)
    try:
        run = kill_at_random(home, 10, random.Random(int(os.environ.get("CHAOS_SEED", 20261127))))
        killed, last = run.servers[:-1], run.servers[-1]
        assert run.violations == 0, run
        assert run.failpoint_deaths >= 1 and run.roots  # (the seed makes both)
        base = egress.sockets_base()
        left = {
            "registrations files": [p.name for pid in killed for p in files_of(pid)],
            "shared folders": [f"shared-{pid}" for pid in killed if (base / f"shared-{pid}").exists()],
            "spare cgroups": spares_of(killed),
            "attempt cgroups": [
                d
                for root in run.roots
                for _, place in hierarchies().bases.values()
                for d in glob.glob(f"{place}/orchestrator-{root}.*")
            ],
            "live in the last server's file": [k for p in files_of(last) for k in egress._replay(p)],
        }
        assert left == {k: [] for k in left}
    finally:
        home.stop()
