"""What a hostile worker of tests/test_hostile.py runs (``python hostile_worker.py <targets.json> <group>``).

Each attempt it makes prints one line ``HOSTILE {"name", "done", "detail", "ms"}``: whether it
did what it tried (``done``), the error that refused it, and how long the refusal took. The
test reads these lines from the worker's log; the proof is the test's own look at the targets
and the host snapshot, not what the worker says. Standard library only: it runs in the sandbox.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

PLANTED = "PLANTED by a worker\n"
IDENTITY = {"GIT_AUTHOR_NAME": "H", "GIT_AUTHOR_EMAIL": "h@x", "GIT_COMMITTER_NAME": "H", "GIT_COMMITTER_EMAIL": "h@x"}


def report(name: str, done: bool, detail: str, started: float) -> None:
    line = {"name": name, "done": done, "detail": detail[:300], "ms": round((time.monotonic() - started) * 1000, 2)}
    print("HOSTILE " + json.dumps(line), flush=True)


def attempt(name: str, action: Callable[[], str]) -> None:
    started = time.monotonic()
    try:
        detail = action()
    except OSError as exc:
        report(name, False, f"{type(exc).__name__}: {exc.strerror or exc}", started)
    else:
        report(name, True, detail, started)


def append(path: str) -> Callable[[], str]:
    def run() -> str:
        with open(path, "a", encoding="utf-8") as out:
            out.write(PLANTED)
        return path

    return run


def git(host: str, *args: str) -> Callable[[], str]:
    def run() -> str:
        done = subprocess.run(["git", "-C", host, *args], capture_output=True, text=True, env={**os.environ, **IDENTITY})
        if done.returncode != 0:
            raise OSError(done.returncode, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1])
        return "exit 0"

    return run


def wait_for(pattern: str, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = glob.glob(pattern)
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def tree_wait(t: dict) -> float:
    """How long to wait for the workspace's files to appear: 20 s where a job's records folder shows
    (its siblings' records and worktrees are made as the job runs), none where the sandbox hides them
    (made at submission, before any worker or resolver starts: nothing of the tree is going to appear)."""
    return 20.0 if glob.glob(os.path.join(t["folder"], "workspace", "job_*", "state", "workers")) else 0.0


def writes(t: dict) -> None:
    """Outside its checkout: the host's tracked and new files, $HOME, the orchestrator's
    config.yaml and state records, and a sibling's worktree (waited for: it may start later)."""
    attempt("write host tracked file", append(os.path.join(t["host"], "app.py")))
    attempt("write host new file", append(os.path.join(t["host"], "planted.txt")))
    attempt("write $HOME", append(os.path.join(os.environ["HOME"], ".bashrc")))
    attempt("write config.yaml", append(os.path.join(t["folder"], "config.yaml")))
    wait = tree_wait(t)
    records = wait_for(os.path.join(t["folder"], "workspace", "job_*", "state", "workers", "*.json"), wait)
    attempt("write workspace state", append(records[0] if records else os.path.join(t["folder"], "workspace", "x")))
    sibling = wait_for(os.path.join(t["folder"], "workspace", "job_*", "depth_0", t["sibling"], "app.py"), wait)
    attempt("write sibling worktree", append(sibling[0] if sibling else "/nonexistent/sibling"))


def reads(t: dict) -> None:
    """The API key in config.yaml, and the processes it can see (the server's among them?)."""

    def config() -> str:
        with open(os.path.join(t["folder"], "config.yaml"), encoding="utf-8") as f:
            text = f.read()
        if t["secret"] in text:
            return "the API key is readable"
        raise OSError(0, f"config.yaml reads as {len(text)} bytes, no API key")

    attempt("read config.yaml", config)

    def processes() -> str:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        if str(t["server"]) in pids:
            return f"sees {len(pids)} processes, the server's among them"
        raise OSError(0, f"sees {len(pids)} processes ({' '.join(sorted(pids, key=int))}), not the server's")

    attempt("see the server's pid", processes)


def kills(t: dict) -> None:
    """SIGKILL to a process of the test's (a stand-in for the server) and to a sibling worker,
    by their pids on the host, which the test writes to a file once the sibling runs."""
    found = wait_for(t["pids_file"])
    pids = json.load(open(found[0])) if found else {}
    for name, pid in sorted(pids.items()):

        def kill(pid: int = pid) -> str:
            os.kill(pid, 9)
            return f"killed {pid}"

        attempt(f"kill {name}", kill)


def git_on_host(t: dict) -> None:
    """git on the user's own repository: move, make and delete refs, its stash, index, HEAD."""
    host = t["host"]
    attempt("git branch -f main HEAD~1", git(host, "branch", "-f", "main", "HEAD~1"))
    attempt("git update-ref refs/heads/x HEAD", git(host, "update-ref", "refs/heads/x", "HEAD"))
    attempt("git stash drop", git(host, "stash", "drop"))
    attempt("git checkout -b y", git(host, "checkout", "-b", "y"))
    attempt("git add -A (host index)", git(host, "add", "-A"))
    attempt("git commit (host)", git(host, "commit", "--allow-empty", "--no-verify", "-m", "hostile"))


def sockets(t: dict) -> None:
    """The host's Unix sockets the test listens on (a path one and an abstract one), the agent its
    environment names (SSH_AUTH_SOCK, the session bus), and a socketpair (child pipes: must work)."""

    def connect(address: str) -> Callable[[], str]:
        def run() -> str:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(address)
                sock.sendall(b"HOSTILE")
            return f"connected to {address!r}"

        return run

    attempt("connect a host path socket", connect(t["unix_path"]))
    attempt("connect a host abstract socket", connect("\0" + t["unix_abstract"]))

    def agent() -> str:
        named = {k: os.environ[k] for k in ("SSH_AUTH_SOCK", "DBUS_SESSION_BUS_ADDRESS") if k in os.environ}
        if not named:
            raise OSError(0, "no SSH_AUTH_SOCK nor DBUS_SESSION_BUS_ADDRESS in its environment")
        connect(os.environ.get("SSH_AUTH_SOCK") or t["unix_path"])()
        return f"named {sorted(named)} and signed in through them"

    attempt("use the inherited SSH_AUTH_SOCK", agent)

    def pair() -> str:
        a, b = socket.socketpair()
        with a, b:
            a.sendall(b"x")
            return f"socketpair works ({b.recv(1)!r})"

    attempt("socketpair (child-process pipes)", pair)

    def runtime() -> str:
        # (orchestrator-net: its own attempt's proxy sockets, with workers.sandbox_network: allow)
        own = {"orchestrator-net"}
        found = {d: sorted(set(os.listdir(d)) - own) for d in ("/run", "/var/run", "/tmp/.X11-unix") if os.path.isdir(d)}
        if any(found.values()):
            return f"sees {found}"
        raise OSError(0, f"empty: {sorted(found)}")

    attempt("list /run", runtime)


def snoops(t: dict) -> None:
    """Other trees of the workspace: another job's log and record, the webhook outbox's signed
    approval links, the job index, a sibling worker's state; and what the workspace shows it."""

    def read(path: str, needle: str) -> Callable[[], str]:
        def run() -> str:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if needle in text:
                return f"read {needle!r} from {path}"
            raise OSError(0, f"{path} reads {len(text)} bytes without {needle!r}")

        return run

    wait_for(t["go_file"])  # the test's word that its sibling's record is written
    attempt("read another tree's log", read(t["other_log"], t["other_secret"]))
    attempt("read another tree's record", read(t["other_record"], t["other_secret"]))
    outbox = sorted(glob.glob(os.path.join(t["workspace"], ".webhooks", "deliveries", "*.json")))
    attempt("read the outbox's signed links", read(outbox[0] if outbox else t["outbox_file"], "token="))
    attempt("read the job index", read(t["index"], ""))
    attempt("read a sibling worker's record", read(t["sibling_record"], "worker_"))

    def listing() -> str:
        found = sorted(os.listdir(t["workspace"]))
        others = [name for name in found if name != "job_" + os.environ["ORCHESTRATOR_ROOT_JOB_ID"]]
        if others:
            return f"sees {others}"
        raise OSError(0, f"the workspace shows {found}")

    attempt("list the workspace", listing)


def progress(what: str, amount: int) -> None:
    print(f"HOSTILE-PROGRESS {what}={amount}", file=sys.stderr, flush=True)


def hog(t: dict) -> None:
    """Hold ``t["hog_mb"]`` MB (touched, so resident) and wait to be stopped."""
    held = b"x" * (t["hog_mb"] << 20)
    progress("held_mb", len(held) >> 20)
    time.sleep(120)


def disk(t: dict) -> None:
    """Write a file in its checkout as fast as it can, up to ``t["disk_mb"]`` MB."""
    chunk = b"\0" * (1 << 20)
    written = 0
    try:
        with open("big.bin", "wb") as out:
            while written < t["disk_mb"]:
                out.write(chunk)
                written += 1
                if written % 8 == 0:
                    out.flush()
                    progress("disk_mb", written)
    except OSError as exc:
        progress(f"write refused ({exc.strerror}) at disk_mb", written)
    time.sleep(120)


def flood(t: dict) -> None:
    """Write its log (stdout) as fast as it can, up to ``t["log_mb"]`` MB."""
    line = b"h" * ((1 << 20) - 1) + b"\n"
    for written in range(1, t["log_mb"] + 1):
        try:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        except OSError as exc:
            progress(f"log write refused ({exc.strerror}) at log_mb", written)
            break
        if written % 8 == 0:
            progress("log_mb", written)
    time.sleep(120)


GROUPS = {
    "writes": writes,
    "reads": reads,
    "kills": kills,
    "git": git_on_host,
    "hog": hog,
    "disk": disk,
    "flood": flood,
    "sockets": sockets,
    "snoops": snoops,
}

if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        targets = json.load(f)
    for group in sys.argv[2:]:
        GROUPS[group](targets)
