"""``orchestrator-lock PATH... [--lease S] [--wait S] -- CMD ARGS...``: run a command while holding
an advisory lock on paths of the job tree's shared folder (checkouts/locks.py), from inside a worker.

It takes the lock through the API (``ORCHESTRATOR_API_URL``, ``ORCHESTRATOR_API_KEY`` and
``ORCHESTRATOR_JOB_ID``, as ``orchestrator-spawn`` finds them), runs CMD as an argv (no shell),
renews the lease while CMD runs longer than a third of it, releases the lock when CMD ends
(also when it fails, or this helper is interrupted: SIGINT, SIGTERM and SIGHUP are passed on to
CMD first) and exits with CMD's exit code (128+N when a signal N ended it). A lock held by
another worker past ``--wait`` prints the holder and exits 75; bad usage exits 2. Standard
library only, like the spawn helper: it runs once per locked command.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EXIT_LOCKED = 75  # EX_TEMPFAIL: someone else holds the lock; try again later
EXIT_USAGE = 2
USAGE = "usage: orchestrator-lock PATH... [--lease SECONDS] [--wait SECONDS] -- CMD [ARGS...]"


class UsageError(Exception):
    pass


def parse(argv: list[str]) -> tuple[list[str], float | None, float | None, list[str]]:
    """(paths, lease, wait, command) from the command line."""
    if "--" not in argv:
        raise UsageError("no command: put it after --, e.g. orchestrator-lock src/app.py -- make build")
    split = argv.index("--")
    head, command = argv[:split], argv[split + 1 :]
    paths: list[str] = []
    values: dict[str, float] = {}
    index = 0
    while index < len(head):
        arg = head[index]
        name, eq, value = arg.partition("=")
        if name in ("--lease", "--wait"):
            if not eq:
                index += 1
                if index >= len(head):
                    raise UsageError(f"{name} needs a number of seconds")
                value = head[index]
            try:
                values[name[2:]] = float(value)
            except ValueError:
                raise UsageError(f"{name} {value!r} is not a number of seconds") from None
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg}")
        else:
            paths.append(arg)
        index += 1
    if not paths:
        raise UsageError("no PATH to lock: name at least one, relative to the shared folder")
    if not command:
        raise UsageError("no command after --")
    return paths, values.get("lease"), values.get("wait"), command


def main(argv: list[str]) -> int:
    from ..errors import Conflict, OrchestratorError, exit_code_of

    if argv and argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + (__doc__ or "").split("\n\n", 1)[1])
        return 0
    try:
        paths, lease, wait, command = parse(argv)
    except UsageError as exc:
        print(f"orchestrator-lock: {exc}\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_locked(paths, lease, wait, command)
    except Conflict as exc:
        print(f"orchestrator-lock: {exc.message}", file=sys.stderr)
        return EXIT_LOCKED
    except OrchestratorError as exc:
        print(f"orchestrator-lock: {exc.message}", file=sys.stderr)
        return exit_code_of(exc)


def run_locked(paths: list[str], lease: float | None, wait: float | None, command: list[str]) -> int:
    from .. import protocol
    from ..api.calls import KEY_ENV, URL_ENV, SpawnClient, worker_key
    from ..errors import ValidationError

    job_id = os.environ.get(protocol.JOB_ID)
    if not os.environ.get(URL_ENV) or not worker_key() or not job_id:
        raise ValidationError(
            f"orchestrator-lock runs inside a worker: {URL_ENV}, {KEY_ENV} and {protocol.JOB_ID} are set by the "
            "orchestrator for each worker when its server runs"
        )
    client = SpawnClient()
    lock = client.lock(job_id, paths, lease, wait)
    try:
        return _run(command, lambda: client.lock(job_id, paths, lease, 0), lock)
    finally:
        try:
            client.unlock(job_id, lock["lock_id"])
        except Exception as exc:  # its lease (or its worker's end) frees it anyway
            print(f"orchestrator-lock: could not release lock {lock['lock_id']}: {exc}", file=sys.stderr)


def _run(command: list[str], renew: Any, lock: dict[str, Any]) -> int:
    """CMD with the signals passed on and the lease renewed; its exit code."""
    import signal
    import subprocess
    import threading

    try:
        proc = subprocess.Popen(command)
    except OSError as exc:
        print(f"orchestrator-lock: cannot run {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126

    def forward(signum: int, frame: object) -> None:
        proc.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    done = threading.Event()
    every = max(0.5, (lock["expires_at"] - lock["acquired_at"]) / 3)

    def renewing() -> None:
        while not done.wait(every):
            try:
                lock.update(renew())  # the same lock, or a new one if its store lost it (a Redis restart)
            except Exception as exc:
                print(f"orchestrator-lock: could not renew lock {lock['lock_id']}: {exc}", file=sys.stderr)

    threading.Thread(target=renewing, daemon=True).start()
    try:
        code = proc.wait()
    finally:
        done.set()
    return code if code >= 0 else 128 - code
