"""The bootstrap of a worker's worktree: what a fresh checkout lacks before
a worker can build and test in it.

1. ``.worktreeinclude`` at the repository root (gitignore syntax, e.g. ``.env``): the host's
   *ignored* files that match it are copied (not linked) to the same path in the worktree, with
   their modes, listed once per job tree. A file is copied only when the worktree ignores it too
   (and does not track it), so the orchestrator's commits (``add -A``) never take it, nor after a
   worker changed its .gitignore (``copied``: the commit leaves them out). A symlink is copied as a link only when it is
   relative and stays inside the repository; nothing is written through a link in the worktree.
   No ``.worktreeinclude``: nothing is copied.
2. A port from ``git.port_range`` per worker: free = not held by another live worker of this
   server and bindable on 127.0.0.1 when reserved; released at cleanup. The worker, its setup
   and its teardown get it as ``ORCHESTRATOR_PORT`` (workers/environment.py), and its record as ``port``.
3. ``git.setup`` (an argv, never a shell string) runs once in a new worktree before the first
   attempt, with the worker's environment, its output appended to the worker log (capped), its
   process group killed at ``git.setup_timeout`` or when the job is cancelled, under the workers' caps
   (``setup failed: stopped at a worker's cap: process cap: ...``: Confinement.watch). Any failure raises
   ``SetupFailed`` ("setup failed: ..."): the worker fails before its first attempt. Files it
   leaves that git does not ignore are committed (``Orchestrator-Attempt: 0``) and become the
   checkpoint every attempt starts from. Processes it leaves running (a database for the tests, say)
   run until the worker's cleanup, which stops them after the teardown.
   A server restart that re-attaches the worktree does not run it again.
4. ``git.teardown`` runs at cleanup, whatever the outcome, by the same rules; a failure is only
   logged.

What the bootstrap made that git ignores (copied files, ``node_modules/``) is listed in the
worktree's git dir; a retry's ``clean -fdx`` keeps it (``keep_args``).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import signal
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .. import protocol
from ..config import JobConfig, Settings
from ..config.schema import parse_port_range
from ..git import invocation
from ..git.repository import GitError, git_dir_of, run_git
from ..git.sandboxed import CheckoutGit
from ..models import JobRecord, WorkerRecord
from ..process.monitor import CAPPED, HelperWatch
from ..process.ports import bind_error
from ..process.runner import CommandNotFound, ProcessHandle, ProcessRunner
from ..workers.confinement import Confinement, environment_program
from ..workers.environment import base_env
from ..workspace.layout import Workspace
from .checkout import CheckoutFailed

log = logging.getLogger("orchestrator.bootstrap")

INCLUDE_FILE = ".worktreeinclude"  # at the repository root
KEPT_FILE = "orchestrator-bootstrap"  # in the worktree's git dir: the ignored paths the bootstrap made (NUL-separated)
COPIED_FILE = "orchestrator-copied"  # beside it: the files .worktreeinclude copied, never committed
DONE_FILE = "orchestrator-setup-done"  # beside it: the bootstrap ran to its end (a restart does not run it again)
OUTPUT_HEAD, OUTPUT_TAIL = 16 * 1024, 48 * 1024  # bytes of a setup's output kept in the worker log
LOOPBACK = "127.0.0.1"
KEPT_LISTS = 64  # job trees whose .worktreeinclude list is kept; past that the cache starts afresh
MAX_KEPT = 1000  # paths kept by a reset one by one; past that, by their top-level folder

EnvFor = Callable[[WorkerRecord, JobConfig], dict[str, str]]


class SetupFailed(CheckoutFailed):
    """The worktree's bootstrap failed (its message is the worker's exit reason)."""


class PortPool:
    """The ports of ``git.port_range`` this server hands out, one per live worktree worker."""

    def __init__(self, port_range: str) -> None:
        self.low, self.high = parse_port_range(port_range)
        self._held: dict[str, int] = {}  # owner -> port
        self._next = self.low  # where the next search starts, so a released port rests a while
        self._lock = threading.Lock()

    def reserve(self, owner: str, prefer: int | None = None) -> int:
        """A port for ``owner`` (the same one if it holds one). ``prefer``: the port a
        re-attached worker had, taken back without the bind test (its process may hold it)."""
        with self._lock:
            if owner in self._held:
                return self._held[owner]
            taken = set(self._held.values())
            if prefer is not None and self.low <= prefer <= self.high and prefer not in taken:
                self._held[owner] = prefer
                return prefer
            size = self.high - self.low + 1
            for step in range(size):
                port = self.low + (self._next - self.low + step) % size
                if port not in taken and bindable(port):
                    self._held[owner] = port
                    self._next = port + 1 if port < self.high else self.low
                    return port
            raise SetupFailed(
                f"no free port in git.port_range {self.low}-{self.high}: {len(taken)} held by this server's live "
                f"workers, the other {size - len(taken)} in use on {LOOPBACK}; widen git.port_range"
            )

    def release(self, owner: str) -> None:
        with self._lock:
            self._held.pop(owner, None)

    def held(self) -> dict[str, int]:
        """The ports held now, by owner (``<root id>/<worker key>``)."""
        with self._lock:
            return dict(self._held)


def bindable(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now (as most servers do, with SO_REUSEADDR)."""
    return bind_error(LOOPBACK, port) is None


class Bootstrap:
    """The bootstrap of one host repository's worktrees (WorktreeCheckout holds one)."""

    def __init__(self, settings: Settings, workspace: Workspace, repo: Path, env: EnvFor | None = None) -> None:
        self.settings = settings
        self.workspace = workspace
        self.repo = repo
        self.ports = PortPool(settings.git.port_range)
        self.runner = ProcessRunner()
        self.confinement = Confinement(settings, workspace)  # git.setup runs the project's code: in the worker's sandbox
        self._env_for = env
        self._envs: dict[tuple[str, str], dict[str, str]] = {}  # a prepared worker's, for its teardown
        self._lists: dict[str, list[str]] = {}  # root id -> the files .worktreeinclude names (``_included``)
        self._lock = threading.Lock()
        self._listing = threading.Lock()  # guards _lists

    # -- the Checkout's calls --------------------------------------------------------------------
    def prepare(self, record: WorkerRecord, job: JobRecord, directory: Path, fresh: bool) -> bool:
        """Reserve the worker's port; in a new worktree (``fresh``, or one whose bootstrap a
        restart cut short before any attempt) copy the included files and run the setup.
        Returns True when the setup left files git would commit (the caller commits them as the
        checkpoint). Raises SetupFailed."""
        record.port = self.ports.reserve(_owner(record), prefer=None if fresh else record.port)
        if self.settings.git.teardown:
            self._env(record, job, directory)  # kept for the teardown, which has no job at hand
        git_dir = git_dir_of(directory)
        if not fresh and ((git_dir / DONE_FILE).exists() or record.attempts):
            return False  # re-attached after a restart: bootstrapped already
        copied = copy_included(self.repo, directory, self._included(record.root_id), lambda line: self._note(record, line))
        argv = self.settings.git.setup
        if argv:
            cancelled = job_cancelled(job)
            why = self._run(record, job, directory, "setup", argv, self.settings.git.setup_timeout, cancelled)
            if why is not None and cancelled():
                raise SetupFailed("cancelled during its setup", cancelled=True)
            if why is not None:
                raise SetupFailed(f"setup failed: {why}")
        if copied:
            _write_list(git_dir / COPIED_FILE, copied)
        git = None  # nothing copied and no setup: no git to run, so no sandbox worked out for it
        if copied or argv:
            # What the setup wrote or the copy brought: git on it in the worker's sandbox.
            git = CheckoutGit(directory, self.confinement.spec(record, directory, job.config))
            _write_list(git_dir / KEPT_FILE, ignored_made(git))
        (git_dir / DONE_FILE).write_text("done\n", encoding="utf-8")
        return git is not None and bool(argv) and bool(git.run("status", "--porcelain", "-z").stdout)

    def cleanup(self, record: WorkerRecord, directory: Path) -> None:
        """Run the teardown (its failure only logged) and release the worker's port."""
        try:
            argv = self.settings.git.teardown
            if argv and (directory / ".git").exists():
                why = self._run(record, None, directory, "teardown", argv, self.settings.git.setup_timeout, lambda: False)
                if why is not None:
                    self._note(record, f"teardown failed: {why} (the worker's outcome stands)")
                    log.warning("the teardown of worker %s of job %s failed: %s", record.key, record.job_id, why)
        finally:
            if self.settings.git.setup or self.settings.git.teardown:  # nothing they started outlives the worker
                left = self.runner.sweep_prefix(_tag_prefix(record))
                if left:
                    self._note(record, f"stopped {left} process(es) that the setup or teardown left running")
            self.ports.release(_owner(record))
            with self._lock:
                self._envs.pop(_owner_key(record), None)

    def copied(self, directory: Path) -> list[str]:
        """The files copied into the worktree, which a commit leaves out even if the worker's own
        .gitignore stopped ignoring them (a copied ``.env`` holds secrets)."""
        try:
            return _read_list(git_dir_of(directory) / COPIED_FILE)
        except (OSError, GitError, UnicodeDecodeError):
            return []

    def keep_args(self, directory: Path) -> list[str]:
        """``git clean`` options that keep what the bootstrap made (``-e /path`` each)."""
        try:
            kept = _read_list(git_dir_of(directory) / KEPT_FILE)
        except (OSError, GitError):
            return []
        return [arg for path in kept if "\n" not in path for arg in ("-e", "/" + _escape(path))]

    # -- helpers -----------------------------------------------------------------------------------
    def _included(self, root_id: str) -> list[str]:
        """The files to copy, listed once per job tree (a walk of the host's untracked files,
        ``node_modules`` and all, is not repeated for each of its workers)."""
        with self._listing:  # one walk per tree, however many of its workers start at once
            return self._list_once(root_id)

    def _list_once(self, root_id: str) -> list[str]:
        found = self._lists.get(root_id)
        if found is None:
            try:
                inside = self.settings.workspace_root.resolve().relative_to(self.repo.resolve())
                exclude = [f":(exclude,top,literal){inside.as_posix()}"] if inside.parts else []  # other jobs' worktrees
            except ValueError:
                exclude = []
            try:
                found = included_files(self.repo, exclude)
            except (GitError, UnicodeDecodeError) as exc:
                raise SetupFailed(f"setup failed: could not list the files {INCLUDE_FILE} names: {exc}") from None
            if len(self._lists) >= KEPT_LISTS:
                self._lists.clear()
            self._lists[root_id] = found
        return found

    def _env(self, record: WorkerRecord, job: JobRecord | None, directory: Path) -> dict[str, str]:
        key = _owner_key(record)
        with self._lock:
            found = self._envs.get(key)
        if found is None:
            if self._env_for is not None and job is not None:
                found = dict(self._env_for(record, job.config))
            else:
                found = base_env(self.settings)
            found[protocol.WORKER_DIR] = str(directory)
            if record.port is not None:
                found[protocol.PORT] = str(record.port)
            with self._lock:
                self._envs[key] = found
        return found

    def _run(
        self,
        record: WorkerRecord,
        job: JobRecord | None,
        directory: Path,
        what: str,
        argv: list[str],
        timeout: float,
        cancelled: Callable[[], bool],
    ) -> str | None:
        """Run ``argv`` in the worktree; None when it succeeded, else why not."""
        env = self._env(record, job, directory)
        log_path = self.workspace.worker_log(record.root_id, record.depth, record.name)
        capture = self.workspace.worker_tmp(record.root_id, record.depth, record.name) / f"orchestrator-{what}.out"
        capture.parent.mkdir(parents=True, exist_ok=True)
        capture.unlink(missing_ok=True)  # a crashed run's output is not this one's
        shown = " ".join(argv)
        self._note(record, f"{what}: {shown} (in the worktree, port {record.port}, at most {timeout:g}s)")
        tag = f"{_tag_prefix(record)}{what}-{secrets.token_hex(4)}"  # under the tree's: a restart's sweep finds it too
        started = time.monotonic()
        why: str | None
        try:
            sandbox = self.confinement.spec(record, directory, job.config if job else None, env)
            program = environment_program(list(argv), directory, directory, self.settings, sandbox)
            # It runs in the worker's checkout, on the worker's files (a setup may run its package
            # scripts): under the worker's caps, its disk cap counting the checkout and its TMPDIR.
            tmp = self.workspace.worker_tmp(record.root_id, record.depth, record.name)
            watch = self.confinement.watch(directory, tmp)
            handle = self.runner.spawn(
                program, cwd=directory, env=env, log_path=capture, tag=tag, sandbox=sandbox, limits=watch.limits
            )
        except CommandNotFound as exc:
            why = exc.reason(argv[0])
        except OSError as exc:
            why = f"{argv[0]!r} could not start: {exc.strerror or exc}"
        else:
            why = self._wait(handle, timeout, cancelled, started, watch)
        self._append_output(log_path, capture)
        self._note(record, f"{what} {'ended: ' + why if why else 'done'} ({time.monotonic() - started:.1f}s)")
        return why

    def _wait(
        self, handle: ProcessHandle, timeout: float, cancelled: Callable[[], bool], started: float, watch: HelperWatch
    ) -> str | None:
        grace = self.settings.workers.kill_grace
        try:
            while True:
                code, breach = watch.wait(self.runner, handle, min(0.2, watch.interval))
                if breach:  # over a worker's cap: ended at once, as a worker is
                    self.runner.terminate(handle, grace=0, first_signal=signal.SIGKILL)
                    return f"{CAPPED}: {breach}"
                if code is not None:
                    break
                if cancelled():
                    self.runner.terminate(handle, grace=grace)
                    return "the job was cancelled"
                if time.monotonic() - started >= timeout:
                    self.runner.terminate(handle, grace=grace)
                    return f"timed out after {timeout:g}s (git.setup_timeout); its process group was killed"
            breach = watch.ended(handle)
            if code == 0 and breach is None:
                return None  # what it left running (a database, say) runs on until the worker's cleanup
            self.runner.sweep(handle.tag, handle.started_at)  # a failed setup leaves nothing running
            why = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
            return f"{CAPPED}: {breach}" + (f"; {why}" if code else "") if breach else why
        finally:
            self.runner.release(handle)

    def _append_output(self, log_path: Path, capture: Path) -> None:
        try:
            with open(capture, "rb") as out:
                size = os.fstat(out.fileno()).st_size
                if size <= OUTPUT_HEAD + OUTPUT_TAIL:
                    data = out.read()
                else:
                    head = out.read(OUTPUT_HEAD)
                    out.seek(size - OUTPUT_TAIL)
                    left = size - OUTPUT_HEAD - OUTPUT_TAIL
                    data = head + f"\n[orchestrator] ... {left} bytes of output left out ...\n".encode() + out.read()
            capture.unlink()
        except OSError:
            return
        if data:
            self.workspace.append_log(log_path, data if data.endswith(b"\n") else data + b"\n")

    def _note(self, record: WorkerRecord, line: str) -> None:
        self.workspace.append_line(self.workspace.worker_log(record.root_id, record.depth, record.name), f"[orchestrator] {line}")


def job_cancelled(job: JobRecord) -> Callable[[], bool]:
    """Whether the job was asked to stop (engine.cancel marks it so, under its lock)."""
    return lambda: job.cancel_requested


def included_files(repo: Path, exclude: list[str]) -> list[str]:
    """The host's ignored, untracked files that ``.worktreeinclude`` matches (paths from the root)."""
    spec = repo / INCLUDE_FILE
    if spec.is_symlink() or not spec.is_file():
        return []
    listed = run_git(repo, "ls-files", "-z", "--others", "--ignored", f"--exclude-from={spec}", "--", ".", *exclude).stdout
    candidates = [path for path in listed.split("\0") if path]
    if not candidates:
        return []
    # Only what the host ignores: a file the user merely has not added yet is not copied.
    ignored = run_git(repo, "check-ignore", "-z", "--stdin", check=False, input_text="\0".join(candidates)).stdout
    return sorted(path for path in ignored.split("\0") if path)


def copy_included(repo: Path, directory: Path, wanted: list[str], note: Callable[[str], None]) -> list[str]:
    """Copy ``wanted`` (``included_files``) into the worktree ``directory``; returns the paths copied."""
    if not wanted:
        return []
    # The worktree must ignore each one too (its .gitignore is the base commit's), else a commit would take it.
    ignored = set(
        run_git(directory, "check-ignore", "-z", "--stdin", check=False, input_text="\0".join(wanted)).stdout.split("\0")
    )
    copied = []
    for path in wanted:
        if path not in ignored:
            note(f".worktreeinclude: {path} not copied: the worktree's checkout does not ignore it, so it would be committed")
            continue
        why = _copy_one(repo, directory, path)
        if why:
            note(f".worktreeinclude: {path} not copied: {why}")
        else:
            copied.append(path)
    note(f".worktreeinclude: copied {len(copied)} ignored file(s) from the repository")
    return copied


def _copy_one(repo: Path, directory: Path, path: str) -> str | None:
    """Copy one file (content and mode) or relative in-repository link; None, or why not."""
    source = repo / path
    target = directory / path
    root = directory.resolve()
    try:
        if not source.parent.resolve().is_relative_to(repo.resolve()):
            return "a link in the repository leads out of it"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(root):
            return "a link in the worktree leads out of it"
        info = os.lstat(source)
        if stat.S_ISLNK(info.st_mode):
            link = os.readlink(source)
            lexical = os.path.normpath(os.path.join(os.path.dirname(path), link))  # as the worktree will see it
            inside = (source.parent / link).resolve().is_relative_to(repo.resolve()) and not lexical.startswith("..")
            if os.path.isabs(link) or not inside:
                return f"it is a link that leads out of the repository ({link})"
            os.symlink(link, target)
            return None
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, stat.S_IMODE(info.st_mode))
            try:
                while chunk := os.read(src, 1 << 20):
                    os.write(dst, chunk)
                os.fchmod(dst, stat.S_IMODE(info.st_mode))  # the umask may have narrowed it
            finally:
                os.close(dst)
        finally:
            os.close(src)
    except FileExistsError:
        return "the worktree has a file there already"
    except OSError as exc:
        return "a link is in the way" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
    return None


def ignored_made(git: CheckoutGit) -> list[str]:
    """The ignored paths in a worktree right after its bootstrap (whole ignored folders once)."""
    listed = git.text("ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory")
    candidates = [path for path in listed.split("\0") if path]
    if not candidates:
        return []
    # --directory also lists untracked folders that merely hold an ignored file: keep the ignored entries.
    stdin = "\0".join(candidates).encode("utf-8", "backslashreplace")
    ignored = invocation.text(git.run("check-ignore", "-z", "--stdin", stdin=stdin, check=False).stdout)
    made = sorted(path for path in ignored.split("\0") if path)
    if len(made) > MAX_KEPT:  # too many for git clean's argv: keep whole top-level folders instead
        made = sorted({path.split("/", 1)[0] + ("/" if "/" in path else "") for path in made})
    return made


def _escape(path: str) -> str:
    """``path`` as a gitignore pattern that matches only itself."""
    out = "".join("\\" + c if c in "\\*?[" else c for c in path)
    return out[:-1] + "\\ " if out.endswith(" ") else out


def _write_list(path: Path, items: list[str]) -> None:
    path.write_text("\0".join(items), encoding="utf-8")


def _read_list(path: Path) -> list[str]:
    return [item for item in path.read_text(encoding="utf-8").split("\0") if item]


def _tag_prefix(record: WorkerRecord) -> str:
    """The start of the tags the worker's setup and teardown processes carry (process/runner.py)."""
    return f"{record.root_id}.{record.key}.bootstrap-"


def _owner(record: WorkerRecord) -> str:
    return f"{record.root_id}/{record.key}"


def _owner_key(record: WorkerRecord) -> tuple[str, str]:
    return record.root_id, record.key
