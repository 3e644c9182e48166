"""Which sandbox a worker's processes run in: the server's decision (``workers.sandbox`` against what
the machine can, process/sandbox.py), a job's own ``config.sandbox`` (the admin key's; a child job inherits
its root's), and the paths one worker's sandbox opens.

A worker, the quality gates and scoring commands that judge its checkout, and its ``git.setup``
all run worker-written code, so all of them get the same sandbox: :meth:`Confinement.spec`. An AI
CLI the orchestrator starts on a worker's text (a child job's planner, a judge of candidates) gets
it too, in an empty scratch folder (:meth:`Confinement.helper`), with the workers' caps (:meth:`limits`);
a gate, ``git.setup`` and ``git.teardown`` on a worker's checkout run under them too, read as the
monitor reads a worker's (:meth:`watch`).

The workspace is shown empty to each of them (:meth:`Confinement.workspace_view`), its own paths bound
back in: other job trees' logs, prompts and diffs, the webhook outbox (a waiting job's signed approval
links), the job index and every worker's state are not a worker's to read (the API refuses them to
its credential; the sandbox must not hand them over).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from .. import defences, protocol
from ..audit import signing_key as audit_keys
from ..config import JobConfig, Settings
from ..errors import ConfigError
from ..git import worker_gitdir, worker_objects, worker_refs
from ..git.job_refs import ref_value
from ..git.repository import BASE_FILE, CHECKPOINT_FILE, common_dir_of, linked_git_dir
from ..models import WorkerRecord
from ..network.egress import EgressPlan, plan_for
from ..process.backends import probe
from ..process.cgroups import Limits
from ..process.monitor import HelperWatch
from ..process.sandbox import (
    Backend,
    Decision,
    Paths,
    ProjectView,
    SandboxMode,
    SandboxNetwork,
    SandboxSpec,
    decide,
    for_worker,
)
from ..workspace import checkout_place
from ..workspace.filesystem import atomic_write
from ..workspace.layout import Workspace
from . import package_roots
from .adapters import KINDS, get_adapter, program_of
from .adapters.base import Adapter
from .cli_configs import CliConfigs, check_reachable, live_endpoints

log = logging.getLogger("orchestrator.sandbox")

# The folder the orchestrator package is imported from (orchestrator-spawn imports it there, listing it).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
GIT_VIEW = ".git-view"  # in a tree's folder of the workspace: where a project view shows the repository's git dir


class Confinement:
    """The sandbox of every process that runs a worker's code. Cheap to build: the machine is
    probed once per process and backend (backends.probe)."""

    def __init__(
        self, settings: Settings, workspace: Workspace, *, announce: bool = False, configs: CliConfigs | None = None
    ) -> None:
        """A ConfigError when workers.sandbox is on and the machine cannot sandbox: a server never
        starts unconfined by surprise. ``announce``: the server's, which logs its decision once.
        ``configs``: the CLIs' config files as the server found them at its start (workers/cli_configs.py),
        whose model endpoints its workers may reach (none when not given: a copy read later could
        hold what a worker wrote)."""
        self.settings = settings
        self.workspace = workspace
        self.configs = configs if configs is not None else CliConfigs({})
        self._decided: tuple[tuple[str, str, str], Decision] | None = None
        self._real_outside: dict[str, str] = {}
        self._real: dict[tuple[frozenset[str], str | None], frozenset[str]] = {}
        decision = self.decision
        if announce:
            (log.info if decision.spec is not None else log.warning)("%s", decision.note)

    @property
    def decision(self) -> Decision:
        """The server's decision, for the workers settings as they are now: config.yaml is live
        (config/live.py), and a changed ``workers.sandbox_backend`` applies to the next worker
        without a restart. Decided again only when one of the keys it rests on changed."""
        w = self.settings.workers
        key = (w.sandbox, str(getattr(w.sandbox_backend, "value", w.sandbox_backend)), w.sandbox_network)
        decided = self._decided
        if decided is None or decided[0] != key:
            decided = (key, self.decide(w.sandbox))
            self._decided = decided
        return decided[1]

    def decide(self, mode: str) -> Decision:
        """``mode`` on this machine; ``on`` where it cannot sandbox is a ConfigError that says why."""
        w = self.settings.workers
        try:
            return decide(SandboxMode(mode), probe(backend=w.sandbox_backend), network=SandboxNetwork(w.sandbox_network))
        except ValueError as exc:
            raise ConfigError(f"{exc}. Set workers.sandbox: auto (or off) to run workers unconfined.") from None

    def for_job(self, config: JobConfig | None) -> Decision:
        """A job's decision: its own config.sandbox, else the server's."""
        mode = config.sandbox if config is not None else self.settings.workers.sandbox
        decision = self.decision
        return decision if mode == self.settings.workers.sandbox else self.decide(mode)

    def spec(
        self, record: WorkerRecord, directory: Path, config: JobConfig | None, env: Mapping[str, str] | None = None
    ) -> SandboxSpec | None:
        """The sandbox of ``record``'s processes working in ``directory`` (None: unconfined)."""
        paths = self.workspace.worker_paths(record.root_id, record.depth, record.name)
        return self.spec_at(
            record.root_id,
            record.kind,
            directory,
            paths.tmp,
            config,
            env,
            branch=record.name,
            readable=(paths.prompt,),
            network_record=paths.network,
        )

    def helper(
        self, root_id: str, kind: str | None, folder: Path, config: JobConfig | None, env: Mapping[str, str]
    ) -> SandboxSpec | None:
        """The sandbox of an AI CLI of ``kind`` the orchestrator starts on text a worker of tree ``root_id``
        wrote (a child job's request, candidates' diffs): the workers' sandbox, network and hidden paths,
        writing only ``folder`` (an empty scratch folder: its cwd, prompt and log) and its ``tmp``
        (the TMPDIR ``env`` should name: :meth:`helper_env`). None: this job's workers run unconfined."""
        return self.spec_at(root_id, kind, folder, folder / "tmp", config, env)

    @staticmethod
    def helper_env(env: Mapping[str, str], folder: Path) -> dict[str, str]:
        """``env`` for a helper CLI in ``folder``: no ORCHESTRATOR_* variable (it starts no job and
        holds no key), its TMPDIR ``folder/tmp`` (made)."""
        tmp = folder / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        clean = {k: v for k, v in env.items() if not k.startswith(protocol.PREFIX)}
        return {**clean, "TMPDIR": str(tmp), "TMP": str(tmp), "TEMP": str(tmp)}

    def limits(self) -> Limits:
        """A worker's caps (workers.max_memory_mb, max_processes, max_log_mb, max_disk_mb): what a helper
        CLI on a worker's text runs under too, held by the kernel where it can (process/cgroups.py)."""
        w = self.settings.workers
        return Limits.from_mb(w.max_memory_mb, w.max_processes, w.max_log_mb, w.max_disk_mb)

    def watch(self, *folders: Path) -> HelperWatch:
        """The workers' caps on a process the orchestrator runs on a worker's checkout (a gate, its
        ``git.setup`` and ``git.teardown``): :meth:`limits` for its spawn, the rest read every
        workers.monitor_interval (process/monitor.HelperWatch); ``folders``: what its disk cap counts
        (the checkout and its TMPDIR: what the worker's own cap counts there)."""
        return HelperWatch.of(self.limits(), self.settings.workers.monitor_interval, folders)

    def spec_at(
        self,
        root_id: str,
        kind: str | None,
        directory: Path,
        tmp: Path,
        config: JobConfig | None,
        env: Mapping[str, str] | None = None,
        *,
        branch: str = "",
        readable: Sequence[Path] = (),
        network_record: Path | None = None,
    ) -> SandboxSpec | None:
        """The sandbox of a process of tree ``root_id`` run by ``kind``'s CLI that writes only
        ``directory`` and ``tmp`` (and, in a worktree, its git data: its ``branch``'s reflog, a
        name under the tree's prefix; "" for a detached HEAD): a worker's (``spec``), or a
        resolver's in a merge's worktree (delivery/resolving.py). ``readable``: files of the
        workspace it reads (its prompt file). ``network_record``: a worker's network record, where
        what its proxy refuses it and its direct connections (Landlock) go, where it cannot write
        (with a network other than the host's). None: unconfined."""
        base = self.for_job(config).spec
        if base is None or defences.off("sandbox"):  # (the hostile suite's switch: orchestrator/defences.py)
            return None
        w = self.settings.workers
        # Its tree's package caches (workers/caches.py): its own tree's only, writable.
        caches = self.workspace.tree_caches(root_id)
        _made(caches)
        paths = Paths(writable=[directory, tmp, caches])
        mounts = base.backend is Backend.BUBBLEWRAP  # Landlock and Seatbelt show no path at another
        # Its git dirs read once, for its git data and its project view (the worker does not run meanwhile).
        found = self.git_dirs(directory)
        git_env = self._git_paths(
            root_id, branch, directory, paths, view=mounts, own=base.backend is Backend.LANDLOCK, found=found
        )
        adapter = get_adapter(kind) if kind else None
        if adapter is not None:
            for folder in adapter.state_dirs(self.settings, env or {}):
                # A CLI's first run makes its folders; in the read-only root it could not (opencode:
                # EROFS on ~/.local), and a folder that does not exist is not bound.
                _made(folder)
                paths.private.append(folder)
            paths.fixed.extend(adapter.state_files(self.settings, env or {}))  # written in place where they exist
            for number, folder in enumerate(adapter.tmp_dirs(env or {})):
                _tmp_at(folder, tmp / f".{adapter.name}-tmp-{number}", (directory, tmp), paths)
        hidden = [*_under(self.settings.base_dir, tuple(w.sandbox_hidden))]
        # Landlock: the user's working tree refused but what a process needs of it (:meth:`user_tree`).
        tree_folders, tree_files = self.user_tree(directory) if base.backend is Backend.LANDLOCK else ([], [])
        hidden.extend(tree_files)
        hidden.extend(self._own_hidden)
        writable = _under(self.settings.base_dir, tuple(w.sandbox_writable), expand=True)
        emptied, kept = self.workspace_view((directory, tmp, caches), readable, env or {})
        # The workspace's checkouts outside it (Landlock: workspace/checkout_place.py), as the workspace: emptied,
        # its own checkout granted back (no worker reads another's, nor another tree's).
        outside = self._outside_folder()
        if outside is not None:
            emptied.append(outside)
        emptied.extend(tree_folders)
        record = str(network_record) if network_record is not None and base.network is not SandboxNetwork.HOST else ""
        egress = self.egress_plan(adapter, env or {}) if base.network is SandboxNetwork.ALLOW else None
        if egress is not None and record:
            egress = replace(egress, record=record)
        return for_worker(
            base,
            paths,
            extra_writable=writable,
            hidden=hidden,
            emptied=emptied,
            kept=kept,
            real=self._real_emptied(base.real, outside),
            empty=self._empty(),
            unix_sockets=w.sandbox_unix_sockets,
            # No mount view under Landlock or Seatbelt: the checkout is where it is (process/landlock.py).
            project=self.project_view(directory, self.workspace.job_dir(root_id) / GIT_VIEW, found=found) if mounts else None,
            egress=egress,
            network_record=record,
            git_env=tuple(git_env.items()),
        )

    @functools.cached_property
    def _own_hidden(self) -> tuple[str, str]:
        """The workspace's paths hidden from every sandbox: the supervisor's folder (its socket starts
        processes unconfined) and the audit key's (with it a worker could sign a record). Fixed paths
        of the workspace, named once."""
        return str(self.workspace.supervisor_dir), str(audit_keys.key_dir(self.workspace.root))

    def _real_emptied(self, base: frozenset[str], outside: str | None) -> frozenset[str]:
        """``base`` (the decision's real folders) with the workspace root, resolved (Workspace), and
        ``outside`` (:meth:`_outside_folder`, a real path): the user's, and no worker writes them or a
        folder above them (SandboxSpec.real). Made once per decision."""
        found = self._real.get((base, outside))
        if found is None:
            found = self._real[(base, outside)] = base | {str(self.workspace.root), *([outside] if outside else [])}
        return found

    def _outside_folder(self) -> str | None:
        """The workspace's folder of checkouts outside it (workspace/checkout_place.py) by its real
        path, where it exists (looked at per attempt: the first Landlock worker makes it, a prune
        may remove it). Its real path is found once per path: it and the folders above it are the
        user's alone (make_private checks it: 0700, no folder on the way writable by another), and a
        worker writes only its own checkout below it, so none can make a link of it or above it."""
        outside = str(checkout_place.workspace_folder(self.settings, self.workspace.root))
        if not os.path.isdir(outside):
            return None
        real = self._real_outside.get(outside)
        if real is None:
            real = self._real_outside[outside] = os.path.realpath(outside)
        return real

    def egress_plan(self, adapter: Adapter | None, env: Mapping[str, str]) -> EgressPlan:
        """What a process run by ``adapter``'s CLI (None: a resolver's git, a command) with environment
        ``env`` may reach through the proxy: workers.sandbox_allow (read each time: config.yaml is
        live), its kind's hosts, its model endpoints and this server's API, allowed at any address."""
        urls: list[str] = []
        hosts: tuple[str, ...] = ()
        configured: list[tuple[str, str]] = []
        if adapter is not None:
            hosts = adapter.network_hosts
            urls = adapter.model_urls(self.settings, env)
            configured = [
                (e.url, f"the model API of its {e.source}, as the server found it at its start")
                for e in self.configs.endpoints(adapter, env)
            ]
        api = env.get(protocol.API_URL) or self.settings.api.local_url()  # (a gate's environment may lack it)
        return plan_for(self.settings.workers.sandbox_allow, hosts, urls, api_url=api, labelled=configured)

    def check_endpoints(self, config: JobConfig, kinds: Sequence[str], env: Mapping[str, str]) -> None:
        """A ConfigError when a job's workers of ``kinds`` (environment ``env``) would run with the
        proxy and their CLI's config file names, now, a model endpoint the proxy would refuse them:
        refused at submission rather than waited on until each worker's timeout (cli_configs.py)."""
        spec = self.for_job(config).spec
        if spec is None or spec.network is not SandboxNetwork.ALLOW:
            return
        for kind in dict.fromkeys(kinds):
            adapter = get_adapter(kind)
            found = live_endpoints(adapter, env)
            if found:
                check_reachable(kind, found, self.egress_plan(adapter, env).policy())

    @staticmethod
    def git_dirs(directory: Path) -> tuple[Path | None, Path | None]:
        """``directory``'s own git dir and its repository's common one, read from its files (None where
        it is a plain folder, or its ``commondir`` is unread)."""
        private = linked_git_dir(directory)
        return private, common_dir_of(private) if private is not None else None

    def project_view(
        self, directory: Path, shown: Path, *, found: tuple[Path | None, Path | None] | None = None
    ) -> ProjectView | None:
        """The checkout at ``directory`` shown at its repository's own path (process/sandbox.py
        ProjectView), or None where it cannot be: a plain folder, a repository whose git dir is not
        ``<top>/.git``, a checkout that is not below the workspace, an orchestrator (its folder, its
        Python, its workspace) that holds the repository rather than lies in it, or a path to bind
        back that is a file in the checkout. ``shown``: where the view shows the repository's git
        dir, in the tree's own folder of the workspace (emptied: the process sees only that name).
        ``found``: its :meth:`git_dirs`, where the caller read them."""
        private, common = found if found is not None else self.git_dirs(directory)
        if private is None or common is None or common.name != ".git":
            return None
        top = common.parent
        checkout = directory.resolve()
        root = str(self.workspace.root)
        if not _below(str(checkout), root) or _below(str(top), str(checkout)):
            return None
        needed = [*self._needed_paths, root]
        home = str(Path.home().resolve())
        if any(_below(str(top), path) for path in needed if path != home):
            return None  # the orchestrator runs on its own repository: unchanged
        # Each where the checkout has nothing of its own (a folder your repository tracks, such as this
        # one committed, stays the worker's: its needed parts inside, ignored, are bound back instead).
        kept = sorted({p for p in needed if _below(p, str(top)) and _vacant(checkout / Path(p).relative_to(top))})
        for program in self._programs():  # a CLI installed in the repository's tree (this folder's .cli)
            vacant = _first_vacant(checkout, top, program) if _below(program, str(top)) else None
            if vacant is not None:
                kept.append(vacant)
        if not self.settings.git.setup:  # a setup builds the project's environment in the checkout
            for name in self.settings.workers.sandbox_env_folders:
                folder = top / name
                if folder.is_dir() and not folder.is_symlink() and _vacant(checkout / name):
                    kept.append(str(folder))
        kept = [p for p in kept if not any(p != q and _below(p, q) for q in kept)]
        for path in kept:  # mount points (bubblewrap would make them; an empty folder is nothing to git)
            if not _mount_point(checkout, Path(path).relative_to(top).parts):
                return None
        _made(shown)  # a mount point, should its folder not be emptied
        text = f"gitdir: {shown / private.relative_to(common)}\n" if private.is_relative_to(common) else ""
        if not text:
            return None
        pointer = self.workspace.root / ".sandbox-git" / hashlib.sha256(text.encode()).hexdigest()[:24]
        if not pointer.is_file() or pointer.read_text(encoding="utf-8") != text:
            pointer.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(pointer, text.encode(), durable=False, mode=0o444)
        return ProjectView(str(directory), str(top), tuple(kept), (str(common), str(shown)), str(pointer))

    def user_tree(self, directory: Path) -> tuple[list[str], list[str]]:
        """(folders, files) of the user's working tree (the top of the repository whose worktree is
        ``directory``) refused to a process there where no project view shows the worker's checkout at
        the repository's path (Landlock): everything in it but what every process needs (this folder,
        the home folder, the orchestrator's Python and package), the CLIs installed in it, and its
        environment folders (``workers.sandbox_env_folders``: the venv a gate runs). Its git dir's
        pieces a process uses are granted by rules of their own (:meth:`_git_paths`).

        So nothing leads a gate to the user's code: an editable install of any backend (a ``.pth``, a
        finder), an npm/yarn link, an absolute Cargo path dependency into the repository reads
        "Permission denied" and the gate fails closed instead of testing the user's checkout
        (:func:`project_imports` puts the worker's own package roots first). Nothing refused for a
        plain folder, a checkout inside the repository (a merge's or the result gate's tree in a
        workspace there: what looks upwards from it must read the repository's files), or a
        repository that holds one of the needed paths whole (the orchestrator runs on its own
        repository)."""
        private = linked_git_dir(directory)
        common = common_dir_of(private) if private is not None else None
        if common is None or common.name != ".git":
            return [], []
        top = os.path.realpath(common.parent)
        if _below(os.path.realpath(directory), top):
            return [], []
        return self.tree_refusal(top) or ([], [])

    def tree_refusal(self, top: str) -> tuple[list[str], list[str]] | None:
        """(folders, files) :meth:`user_tree` refuses of the working tree at ``top`` (a real path), or
        None where nothing can be: the repository is the home folder, or lies in this folder, the
        orchestrator's Python or its package's folder (the orchestrator runs on its own repository)."""
        keep = [*self._needed_paths, _PACKAGE_ROOT, *(os.path.realpath(p) for p in self._programs())]
        keep += [os.path.join(top, name) for name in self.settings.workers.sandbox_env_folders]
        home = str(Path.home().resolve())  # (a repository in the home folder is the usual case: refused there)
        if top == home or any(_below(top, path) for path in keep if path != home):
            return None
        return _carved(top, [p for p in keep if _below(p, top)])

    def workspace_view(
        self, own: Sequence[Path], readable: Sequence[Path], env: Mapping[str, str]
    ) -> tuple[list[str], list[str]]:
        """(emptied, kept): the workspace shown empty, and the files of it a process reads bound back
        read-only: ``readable`` and the workspace paths its environment names (its job's shared
        context block, a CLI's private home). ``own`` (its checkout, TMPDIR and its tree's package
        caches) are bound writable.

        The workspace root is emptied whole unless it holds something every process needs (this
        folder, the home folder, the orchestrator's Python: a ``workspace_root`` set to a parent of
        them); then each folder in it that holds none of them is, which leaves a tree made after the
        process started visible (docs/sandbox.md)."""
        root = str(self.workspace.root)  # resolved (Workspace)
        needed = self._needed_paths
        if not self._root_holds_needed:
            emptied = [root]
        else:
            try:
                children = [c for c in self.workspace.root.iterdir() if c.is_dir() and not c.is_symlink()]
            except OSError:
                children = []
            emptied = [str(c) for c in children if not any(_below(path, str(c)) for path in needed)]
        mine = [str(p) for p in own]
        inside = (root.rstrip("/") + "/",)
        # ``_below`` as one ``startswith`` per path (a worker's environment names some twenty paths here).
        in_mine = tuple(m.rstrip("/") + "/" for m in mine)
        kept: list[str] = []
        # By name: a path that reaches the workspace through a link is left hidden (the safe side).
        named = [v for v in env.values() if v.startswith(root) and os.pathsep not in v]
        for path in [*(str(p) for p in readable), *named]:
            if (
                (path == root or path.startswith(inside))
                and path not in mine
                and not path.startswith(in_mine)
                and os.path.exists(path)
            ):
                kept.append(path)
        return emptied, kept

    def _programs(self) -> list[str]:
        """The configured workers' programs given as absolute paths (each kind's ``<kind>_command``,
        ``orchestrator.command``'s, a plugin kind's ``workers.kinds.<name>.command``), as written and
        resolved: read each time (config.yaml is live)."""
        given = [program_of(kind, self.settings) for kind in KINDS]
        found = []
        for program in given:
            if os.path.isabs(program):
                found += [os.path.normpath(program), str(Path(program).resolve())]
        return found

    @functools.cached_property
    def _needed_paths(self) -> tuple[str, ...]:
        """What every sandboxed process needs and an emptied folder must not hold (resolved once)."""
        found = [self.settings.base_dir, Path.home(), Path(sys.prefix), Path(sys.executable).parent]
        return tuple(str(path.resolve()) for path in found)

    @functools.cached_property
    def _root_holds_needed(self) -> bool:
        """Whether the workspace root holds a path every process needs (:meth:`workspace_view`): both
        are fixed for this object's life (the root resolved, the needed paths resolved once)."""
        root = str(self.workspace.root)
        return any(_below(path, root) for path in self._needed_paths)

    def _empty(self) -> str:
        """The workspace's empty file, shown in place of each hidden file (made once, read-only)."""
        path = self._empty_path
        try:
            found = os.stat(path)
            fine = stat.S_ISREG(found.st_mode) and not found.st_size  # (one stat: every attempt's start looks)
        except OSError:
            fine = False
        if not fine:
            # Renamed over, never unlinked first: another worker's bubblewrap may be binding it right
            # now, and a moment without it makes that bubblewrap fail to start.
            self.workspace.root.mkdir(parents=True, exist_ok=True)
            atomic_write(Path(path), b"", durable=False, mode=0o444)
        return path

    @functools.cached_property
    def _empty_path(self) -> str:
        return str(self.workspace.root / ".sandbox-empty")

    def _git_paths(
        self,
        root_id: str,
        branch: str,
        directory: Path,
        paths: Paths,
        *,
        view: bool = True,
        own: bool = False,
        found: tuple[Path | None, Path | None] | None = None,
    ) -> dict[str, str]:
        """What a worktree's own commits write: its private git dir, its tree's object store in place
        of the repository's (which it sees read-only: git/worker_objects.py), its view of its tree's
        branches in place of their folder (its own branch only: git/worker_refs.py), and its own
        branch's reflog. Nothing for a plain folder.

        The orchestrator later runs git outside the sandbox on this worktree (its commit of the
        worker's work), so what git there would follow is pinned read-only: the ``.git`` pointer
        and the private dir's HEAD, commondir and gitdir (else a worker points HEAD at the user's
        ``main``, or the pointer at a repository of its own whose ``core.fsmonitor`` runs
        unconfined), and the orchestrator's own markers. The reflogs git appends to are bound
        over themselves and their folder stays read-only: no reflog can become a link to a file of
        the user's, which the orchestrator's commit would append to.

        Without ``view`` (no mounts), the same pairs are rules, and its tree's object store is where the
        worker's git is told to write (process/landlock.py). With ``own`` (Landlock), the repository's
        git dir is not granted at all: the process's git is told a git dir of its own
        (git/worker_gitdir.py: a worker's branch from its view, or a detached worktree's HEAD at its
        commit (a resolver's, the result gate's), the user's refs, nothing of other trees), the
        environment returned. Else (Seatbelt) the tree's ref folder is writable whole and the worker's
        commits move its real branch, which the orchestrator checks afterwards as it checks a view's
        copy (git/worker_refs.py ``take``). ``found``: its :meth:`git_dirs`, where the caller read them."""
        private, common = found if found is not None else self.git_dirs(directory)
        if private is None:
            return {}
        if common is None:
            paths.writable.append(private)
            return {}
        tree = f"{self.settings.git.branch_prefix}{root_id}"
        refs = common / "refs" / "heads" / tree
        _made(refs)  # under the orchestrator's own prefix; git makes it the same way
        paths.writable.append(private)
        # The tree's branches as the worker sees them: its own only, in its view (git/worker_refs.py).
        ref = f"refs/heads/{tree}/{branch}"
        # Read from the repository (refs are its, not the worktree's): its layout is asked of git once
        # per repository (repository.plain_layout), where by the worktree it was a git process per worker.
        repository = common.parent if common.name == ".git" else directory
        tip = (ref_value(repository, ref) or "") if branch else ""
        if view:
            worker_refs.show(private, branch, tip)
            # Other trees' branches, reflogs and worktrees shown empty, and packed-refs without them.
            prefix, folder = self.settings.git.branch_prefix, self.workspace.job_dir(root_id)
            emptied, kept = worker_refs.other_trees(common, prefix, root_id, folder, private)
            paths.emptied.extend(emptied)
            paths.kept.extend(kept)
            copy = self.workspace.tree_packed_refs(root_id)
            if worker_refs.packed_without_trees(common, prefix, root_id, copy) is not None:
                paths.shown.append((copy, common / "packed-refs"))
        elif not own:
            worker_refs.show_in_place(private, tip)
        if view or not own:
            paths.moved.append((private / worker_refs.VIEW, refs))
        # Its tree's object store in place of the repository's, which it reads (git/worker_objects.py).
        stores = worker_objects.tree_stores(self.workspace.tree_objects(root_id), common)
        worker_objects.prepare(stores)
        paths.moved.append((stores.workers, stores.host))
        paths.shown.append((stores.host, stores.shown_at))
        git_env: dict[str, str] = {}
        if own and not view:
            git_env = self._own_git_dir(root_id, branch, directory, paths, (private, common), tip, stores)
        paths.readonly.append(stores.workers.parent / worker_objects.SHOWN_AT)  # where its alternates lead without mounts
        paths.fixed.append(private / "logs" / "HEAD")
        if branch and not git_env:  # (its own git dir holds its own reflogs)
            paths.fixed.append(common / "logs" / "refs" / "heads" / tree / branch)
        pinned = ("HEAD", "commondir", "gitdir", "config.worktree", BASE_FILE, CHECKPOINT_FILE, worker_refs.SHOWN)
        paths.readonly.extend([directory / ".git", *(private / name for name in pinned)])
        # (Its siblings' branches bound read-only one by one instead of a view: a sibling's commit (git
        # renames a new file over its ref) between that list and bubblewrap's start made the start
        # fail, "Unable to find ... in mount table", 2 of 3 times with 16 workers at once.)
        return git_env

    def _own_git_dir(
        self,
        root_id: str,
        branch: str,
        directory: Path,
        paths: Paths,
        dirs_of: tuple[Path, Path],
        tip: str,
        stores: worker_objects.Stores,
    ) -> dict[str, str]:
        """Landlock's (``own`` without ``view``): the worker's git told a git dir of its own
        (git/worker_gitdir.py), the repository's not granted; the environment that tells it."""
        private, common = dirs_of
        worker_refs.show(private, branch, tip)  # (a detached worktree's: empty)
        dirs = self.workspace.tree_git_dirs(root_id)
        ours, others = worker_refs.worktrees_in(common / "worktrees", self.workspace.job_dir(root_id))
        prefix = self.settings.git.branch_prefix
        git_env = worker_gitdir.prepare(
            dirs / private.name, private, common, directory, prefix, root_id, branch, stores.workers, ours
        )
        paths.writable.append(dirs / private.name)
        # Its tree's worktrees, read-only: their tips and indexes, which its git's gc keeps. As under bubblewrap,
        # the folder of every worktree's git dir whole where all are its tree's (or the user's): a sibling's
        # made after its start is read there too; else each of its siblings' there now.
        paths.readonly.append(dirs / worker_gitdir.WORKTREES)
        paths.readonly.extend([common / "worktrees"] if not others else [p for p in ours if p != private])
        paths.emptied.append(common)  # not granted: only what its git is told (an unset variable fails)
        paths.readonly.append(stores.host)  # the repository's objects, its git's alternate
        return git_env


@functools.lru_cache(maxsize=32)
def _under(base_dir: Path, given: tuple[str, ...], *, expand: bool = False) -> tuple[str, ...]:
    """``given`` (workers.sandbox_hidden, sandbox_writable: live, so part of the key) as paths under
    the orchestrator's folder, ``~`` expanded first with ``expand``: made once per distinct setting."""
    return tuple(str(base_dir / (Path(p).expanduser() if expand else p)) for p in given)


def _carved(folder: str, keep: Sequence[str]) -> tuple[list[str], list[str]]:
    """(folders, files) in ``folder`` that neither are nor hold a path of ``keep``: what refusing
    ``folder`` but ``keep`` refuses (links left out: a link needs no rule, and leads where its target's own
    rules say)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return [folder], []
    folders: list[str] = []
    files: list[str] = []
    for entry in entries:
        held = [k for k in keep if _below(k, entry.path)]
        if entry.is_symlink() or entry.path in held:
            continue
        if not entry.is_dir(follow_symlinks=False):
            files.append(entry.path)
        elif not held:
            folders.append(entry.path)
        else:
            inner = _carved(entry.path, held)
            folders += inner[0]
            files += inner[1]
    return folders, files


def _tmp_at(folder: Path, stand_in: Path, own: tuple[Path, ...], paths: Paths) -> None:
    """A CLI's scratch folder outside what its worker may write (CLAUDE_CODE_TMPDIR=/var/tmp/x) is,
    in its sandbox, a folder of its TMPDIR bound at that path: the CLI writes where it was told, its
    files count as its TMPDIR's and go with it. Left alone where it is inside its own folders
    already, or holds one of them (binding over it would hide them), or cannot be made."""
    if any(folder.is_relative_to(p) or p.is_relative_to(folder) for p in own) or folder == Path(folder.anchor):
        return
    try:
        stand_in.mkdir(parents=True, exist_ok=True)
        folder.mkdir(parents=True, exist_ok=True)  # a bind needs its mount point; the CLI would make it outside
    except OSError:
        return
    paths.moved.append((stand_in, folder))


def _mount_point(checkout: Path, parts: Sequence[str]) -> bool:
    """Make the folder ``checkout/<parts>`` if missing, never following a link: the checkout is the
    worker's to write, and a link it planted must not make this process create a folder elsewhere.
    False when a part is not a folder (a file, a link)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(checkout, flags)
    except OSError:
        return False
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                inner = os.open(part, flags, dir_fd=fd)
            except OSError:
                return False  # a file or a link there
            os.close(fd)
            fd = inner
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _first_vacant(checkout: Path, top: Path, path: str) -> str | None:
    """The first folder on the way from ``top`` to ``path`` that the checkout does not have (an
    ignored folder of the user's tree, such as this folder's ``.cli``): bound back whole, it shows
    ``path`` as the user has it. None when the checkout has every folder on the way."""
    parts = Path(path).relative_to(top).parts
    for depth in range(1, len(parts)):
        if _vacant(checkout.joinpath(*parts[:depth])):
            return str(top.joinpath(*parts[:depth]))
    return None


def environment_program(argv: list[str], checkout: Path, cwd: Path, settings: Settings, spec: SandboxSpec | None) -> list[str]:
    """``argv`` with a relative program in one of the repository's environment folders
    (``workers.sandbox_env_folders``: ``.venv/bin/python``, a venv git ignores) that the checkout
    lacks named by the repository's own path, where no project view shows that folder in the
    checkout (Landlock, the sandbox off, a repository without a view): as bubblewrap's view shows it,
    under the same conditions (the checkout has none of its own, ``git.setup`` is empty). Which code
    that environment then imports is the repository's (docs/sandbox.md). Else ``argv`` unchanged:
    the runner finds a relative program in ``cwd`` as the process sees it (process/runner.py)."""
    program = argv[0] if argv else ""
    if (spec is not None and spec.project is not None) or os.sep not in program or os.path.isabs(program):
        return argv
    if settings.git.setup:
        return argv
    private = linked_git_dir(checkout)
    common = common_dir_of(private) if private is not None else None
    if common is None or common.name != ".git":
        return argv
    wanted = Path(os.path.normpath(cwd / program))
    if not wanted.is_relative_to(checkout) or wanted.exists():
        return argv
    parts = wanted.relative_to(checkout).parts
    folder = common.parent / parts[0]
    if parts[0] not in settings.workers.sandbox_env_folders or not _vacant(checkout / parts[0]):
        return argv
    own = common.parent.joinpath(*parts)
    if not folder.is_dir() or folder.is_symlink() or not own.is_file():
        return argv
    return [str(own), *argv[1:]]


def project_imports(
    env: Mapping[str, str], checkout: Path, spec: SandboxSpec | None, settings: Settings, program: str = ""
) -> dict[str, str]:
    """``env`` with the worker's checkout's Python package roots first on ``PYTHONPATH``, for a
    sandboxed process (a gate) where no project view shows the checkout at the repository's path
    (Landlock, Seatbelt): there an editable install of the repository (``pip install -e .``, its
    ``.pth`` or finder naming the user's checkout) would import the user's code, not the worker's,
    and a breaking worker would pass its gate. A ``PYTHONPATH`` entry comes before both. (Landlock
    also refuses the user's tree to it: :meth:`Confinement.user_tree`; what is not redirected fails.)

    Which roots (workers/package_roots.py): those the repository's own ``pyproject.toml`` (the user's,
    never the worker's copy) declares for setuptools, hatch, flit, pdm or poetry, and those an editable
    install in one of its environment folders (``workers.sandbox_env_folders``) or in the venv of the
    gate's ``program`` names inside it; else ``src`` where the checkout has that folder; else the
    checkout's top. Only for a Python project (``pyproject.toml``, ``setup.py`` or ``setup.cfg`` at its
    top, or an install naming it), and only roots that are folders inside the checkout. Under
    bubblewrap, or unconfined, ``env`` unchanged."""
    if spec is None or spec.project is not None:
        return dict(env)
    private = linked_git_dir(checkout)
    common = common_dir_of(private) if private is not None else None
    if common is None or common.name != ".git":
        return dict(env)
    top = common.parent
    venvs = [top / name for name in settings.workers.sandbox_env_folders]
    if os.path.isabs(program) and (Path(program).parent.parent / "pyvenv.cfg").is_file():
        venvs.append(Path(program).parent.parent)  # (by name: a venv's python is a link to the real one)
    named = [*package_roots.declared_roots(top / "pyproject.toml"), *package_roots.installed_roots(top, venvs)]
    if not named and not any((top / name).is_file() for name in ("pyproject.toml", "setup.py", "setup.cfg")):
        return dict(env)
    roots = [checkout / r for r in dict.fromkeys(named)] or [checkout / "src"]
    found = [str(r) for r in roots if r.is_relative_to(checkout) and r.is_dir() and not r.is_symlink()] or [str(checkout)]
    given = env.get("PYTHONPATH", "")
    return {**env, "PYTHONPATH": os.pathsep.join([*found, *([given] if given else [])])}


def _made(folder: Path) -> None:
    """``folder.mkdir(parents=True, exist_ok=True)``: where it is a folder already (every attempt but
    its tree's first), one ``stat`` instead of a refused ``mkdir``, its exception and a ``stat``."""
    if not os.path.isdir(folder):
        folder.mkdir(parents=True, exist_ok=True)


def _vacant(path: Path) -> bool:
    """Nothing at ``path`` but, at most, an empty folder (a project view's mount point)."""
    try:
        with os.scandir(path) as entries:
            return not path.is_symlink() and next(entries, None) is None
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _below(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or below it, by name."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")
