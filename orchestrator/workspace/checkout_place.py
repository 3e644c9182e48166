"""Where a worker's worktree lives when no project view shows it at the repository's own path.

Under bubblewrap a worker's checkout lies in the workspace (``job_<root>/depth_<n>/worker_<k>``) and
its sandbox shows it at the repository's path, so tools that look upwards for their configuration
(pytest's rootdir and ``conftest.py``, Cargo and npm workspaces) find the project's. Landlock and
Seatbelt have no mount namespace: a checkout nested in the orchestrator's folder would be found
under the orchestrator's own ``pyproject.toml`` and ``conftest.py``. There the checkout lives
**outside** it, under ``git.checkouts_root``:

    <checkouts_root>/<hash of the workspace>/job_<root>/depth_<n>/worker_<k>

and the workspace's ``depth_<n>/worker_<k>`` is a link to it (what reads the workspace finds it
there). The folder is the user's alone: each existing folder on the way is owned by the user or
root and writable by no one else (a root-owned sticky folder such as ``/tmp`` excepted: no one else
can rename or remove what the user made in it), and the folders made here are 0700. Otherwise a
worker's checkout is refused with the folder and the fix. Where the link points is never read
from the link: it is computed from the settings (``worker_checkout``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from pathlib import Path

from ..config import Settings
from ..errors import WorkspaceError
from .layout import Workspace

SETTING = "git.checkouts_root"


def checkouts_root(settings: Settings, environ: dict[str, str] | None = None) -> Path:
    """``git.checkouts_root`` (``~`` expanded; relative to the orchestrator's folder), else the
    user's state folder: ``$XDG_STATE_HOME/orchestrator/checkouts``, else
    ``~/.local/state/orchestrator/checkouts``."""
    env = os.environ if environ is None else environ
    return _checkouts_root(settings.git.checkouts_root, settings.base_dir, env.get("XDG_STATE_HOME", ""), os.environ.get("HOME"))


@functools.lru_cache(maxsize=16)
def _checkouts_root(given: str, base_dir: Path, state: str, home: str | None) -> Path:
    """:func:`checkouts_root` of its inputs, made once per distinct set (``home``: ``$HOME``, which
    ``Path.home()`` reads; config.yaml is live, so the setting is part of the key): every sandboxed
    attempt's start asks for it (workers/confinement.py)."""
    if given:
        path = Path(given).expanduser()
        return path if path.is_absolute() else base_dir / path
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "orchestrator" / "checkouts"


def workspace_folder(settings: Settings, workspace_root: Path) -> Path:
    """This workspace's folder of checkouts: one per workspace, so two orchestrator folders on one
    machine never share one (a job's folder is found, and deleted, by its workspace's)."""
    return _workspace_folder(checkouts_root(settings), str(workspace_root))


@functools.lru_cache(maxsize=16)
def _workspace_folder(root: Path, workspace_root: str) -> Path:
    """:func:`workspace_folder` made once per checkouts root and workspace (every sandboxed attempt's
    start asks): the workspace's resolved path's hash. No worker can change what that path resolves
    to: the workspace's folder and every folder above it are the user's (a sandbox shows the
    workspace emptied and read-only, Landlock refuses it), and a server's workspace root is resolved
    already (Workspace)."""
    return root / hashlib.sha256(str(Path(workspace_root).resolve()).encode()).hexdigest()[:16]


def job_folder(settings: Settings, workspace_root: Path, root_id: str) -> Path:
    return workspace_folder(settings, workspace_root) / f"job_{root_id}"


def worker_checkout(settings: Settings, workspace_root: Path, root_id: str, depth: int, name: str) -> Path:
    """Where the checkout of worker ``name`` at ``depth`` of tree ``root_id`` lives outside the workspace."""
    return job_folder(settings, workspace_root, root_id) / f"depth_{int(depth)}" / name


def tree_folder(settings: Settings, workspace: Workspace, root_id: str) -> Path:
    """Where tree ``root_id``'s worktrees live outside the workspace: as its first one was placed (the
    tree's own record, which no sandbox writes: a changed setting moves no tree), else as the
    settings say now."""
    try:
        text = workspace.tree_checkouts_file(root_id).read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return Path(text) if text and os.path.isabs(text) else job_folder(settings, workspace.root, root_id)


def make_private(settings: Settings, workspace_root: Path, around: tuple[Path, ...], *, create: bool = True) -> Path:
    """This workspace's folder of checkouts, made (0700) and checked: owned by the user, no folder
    on the way writable by another, and nothing of ``around`` (the orchestrator's folder, the
    repository) above it. A WorkspaceError naming the folder and the fix otherwise. Without
    ``create`` (doctor), only what exists is checked."""
    folder = workspace_folder(settings, workspace_root)
    root = checkouts_root(settings)
    if not root.is_absolute():
        raise WorkspaceError(
            f"{SETTING} {root} is not an absolute path: set it to a folder of your own, such as ~/.local/state/orchestrator/checkouts"
        )
    resolved = Path(os.path.realpath(folder.parent))
    for outer in around:
        outer = Path(os.path.realpath(outer))
        if resolved == outer or outer in resolved.parents:
            raise WorkspaceError(
                f"{SETTING} {root} is inside {outer}: a worker's checkout there would find that folder's "
                "configuration (pyproject.toml, conftest.py, package.json) above its own. Set git.checkouts_root "
                "to a folder outside it (empty: your state folder, ~/.local/state/orchestrator/checkouts)"
            )
    uid = os.geteuid()
    made = Path("/")
    for part in folder.parts[1:]:
        made = made / part
        try:
            info = os.stat(made)
        except FileNotFoundError:
            if not create:
                return folder  # the rest is made, 0700, by the first worker placed there
            try:
                os.mkdir(made, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise WorkspaceError(
                    f"cannot make {made} for the workers' checkouts ({exc.strerror or exc}). Fix its permissions or set "
                    f"{SETTING} to a folder of your own"
                ) from None
            info = os.stat(made)
        problem = _unsafe(info, uid, last=made == folder)
        if problem:
            raise WorkspaceError(
                f"the workers' checkouts would live in {folder}, but {made} {problem}: another user could put "
                f"files where the orchestrator runs your project's gates. Fix it (chown/chmod go-w {made}) or set "
                f"{SETTING} to a folder of your own"
            )
    return folder


def _unsafe(info: os.stat_result, uid: int, *, last: bool) -> str:
    """Why a folder on the way to the checkouts is not the user's alone ("" when it is)."""
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if info.st_uid not in (uid, 0):
        return f"is owned by another user (uid {info.st_uid})"
    if last and info.st_uid != uid:
        return f"is not owned by you (uid {info.st_uid})"
    if info.st_mode & 0o022:
        if info.st_mode & stat.S_ISVTX and info.st_uid == 0 and not last:
            return ""  # /tmp: others may add names, never rename or remove the user's
        return f"is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    return ""
