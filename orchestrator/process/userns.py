"""What on this machine stops bubblewrap's user namespace, and the one change that lets it start.

Ubuntu 23.10 and later let a program create an unprivileged user namespace only under an AppArmor
profile that allows ``userns`` (``kernel.apparmor_restrict_unprivileged_userns = 1``); a container
refuses them by its seccomp filter, its AppArmor profile, its masked ``/proc`` or
``user.max_user_namespaces = 0``. :func:`read` gathers those facts from a :class:`Host`'s paths (a
test gives a temporary root), :func:`causes` turns them into what to change, :func:`plan` gives the
AppArmor profile Ubuntu documents for such a program, and :func:`apply` installs and loads it
(``doctor --fix``, after the user confirms). Nothing here decides the backend: backends.probe does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

RESTRICT = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"  # Ubuntu 23.10+
USERNS_CLONE = "/proc/sys/kernel/unprivileged_userns_clone"  # Debian before 11
MAX_USER_NAMESPACES = "/proc/sys/user/max_user_namespaces"
PROFILE_DIR = "/etc/apparmor.d"
PROFILE_FILE = f"{PROFILE_DIR}/bwrap-orchestrator"
LOADED_PROFILES = "/sys/kernel/security/apparmor/profiles"  # root-only on most machines
PARSER = "apparmor_parser"
PARSER_TIMEOUT = 60.0
# Where apparmor_parser lives when an ordinary user's PATH lacks the sbin folders.
SBIN = ("/usr/sbin", "/sbin")
# /proc/1/cgroup words that name a container runtime.
CGROUP_HINTS = ("docker", "kubepods", "containerd", "libpod", "lxc")


@dataclass(frozen=True)
class Host:
    """Where this machine's facts are read and the fix written: ``/`` and this process's user at run
    time; a temporary root, a fake parser and a chosen user in tests."""

    root: Path = Path("/")
    apparmor_parser: str | None = None  # None: looked up on PATH and in /usr/sbin, /sbin
    euid: int = field(default_factory=os.geteuid)

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def parser(self) -> str | None:
        if self.apparmor_parser is not None:
            return self.apparmor_parser
        return shutil.which(PARSER, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


@dataclass(frozen=True)
class Facts:
    """What the kernel and the container around this process say about user namespaces."""

    restrict_userns: int | None = None  # kernel.apparmor_restrict_unprivileged_userns (None: no such setting)
    userns_clone: int | None = None  # kernel.unprivileged_userns_clone (None: no such setting)
    max_user_namespaces: int | None = None
    container: str = ""  # the runtime ("docker", "podman", container='s value), "" when none is seen
    markers: tuple[str, ...] = ()  # what said it is a container
    seccomp: bool = False  # a seccomp filter on this process (Seccomp: 2)
    apparmor: str = ""  # this process's AppArmor label, "" when unconfined or unknown


def read(host: Host) -> Facts:
    """The facts, each from the file the kernel or the runtime puts it in (unreadable: unknown)."""
    container, markers = _container(host)
    return Facts(
        restrict_userns=_number(host.path(RESTRICT)),
        userns_clone=_number(host.path(USERNS_CLONE)),
        max_user_namespaces=_number(host.path(MAX_USER_NAMESPACES)),
        container=container,
        markers=markers,
        seccomp=_seccomp(host),
        apparmor=_label(host),
    )


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _number(path: Path) -> int | None:
    text = _text(path)
    try:
        return None if text is None else int(text.strip())
    except ValueError:
        return None


def _container(host: Host) -> tuple[str, tuple[str, ...]]:
    kind, markers = "", []
    if host.path("/.dockerenv").exists():
        kind = "docker"
        markers.append("/.dockerenv")
    if host.path("/run/.containerenv").exists():
        kind = kind or "podman"
        markers.append("/run/.containerenv")
    environ = _text(host.path("/proc/1/environ"))  # root's to read, mostly
    for entry in (environ or "").split("\0"):
        if entry.startswith("container=") and entry != "container=":
            kind = kind or entry.removeprefix("container=")
            markers.append(f"{entry} in /proc/1/environ")
    cgroup = _text(host.path("/proc/1/cgroup")) or ""
    hint = next((word for word in CGROUP_HINTS if word in cgroup), None)
    if hint is not None:
        kind = kind or hint
        markers.append(f"{hint} in /proc/1/cgroup")
    return kind, tuple(markers)


def _seccomp(host: Host) -> bool:
    for line in (_text(host.path("/proc/self/status")) or "").splitlines():
        if line.startswith("Seccomp:"):
            return line.split(":", 1)[1].strip() == "2"
    return False


def _label(host: Host) -> str:
    for name in ("/proc/self/attr/apparmor/current", "/proc/self/attr/current"):
        text = (_text(host.path(name)) or "").strip().rstrip("\0")
        if text:
            return "" if text == "unconfined" else text
    return ""


def runtime_name(facts: Facts) -> str:
    return {"docker": "a Docker container", "podman": "a Podman container", "kubepods": "a Kubernetes pod"}.get(
        facts.container, f"a container ({facts.container})"
    )


def causes(facts: Facts) -> list[str]:
    """What in ``facts`` refuses an unprivileged user namespace, each with what lifts it (empty: nothing
    known; bubblewrap's own error then says the rest)."""
    found = []
    if facts.restrict_userns == 1:
        found.append(
            "kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 23.10+): only a program under an AppArmor "
            "profile allowing userns may create one; `doctor --fix` installs such a profile for bwrap (or "
            "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`, for every program)"
        )
    found.extend(settings_refusing(facts))
    if facts.container:
        found.append(f"{runtime_name(facts)} ({', '.join(facts.markers)}): {container_advice(facts)}")
    return found


def settings_refusing(facts: Facts) -> list[str]:
    """The kernel settings other than AppArmor's that refuse every unprivileged user namespace."""
    found = []
    if facts.userns_clone == 0:
        found.append(
            "kernel.unprivileged_userns_clone = 0 refuses unprivileged user namespaces: `sysctl kernel.unprivileged_userns_clone=1`"
        )
    if facts.max_user_namespaces == 0:
        found.append("user.max_user_namespaces = 0 refuses every user namespace: `sysctl user.max_user_namespaces=10000`")
    return found


def container_advice(facts: Facts) -> str:
    """How to start this container so that bubblewrap can create its namespaces and mount its /proc."""
    lifted = []
    if facts.seccomp:
        lifted.append("its seccomp filter refuses unshare()")
    if facts.apparmor:
        lifted.append(f"its AppArmor profile ({facts.apparmor}) refuses mount()")
    why = f"{'; '.join(lifted)}; " if lifted else ""
    if facts.container == "podman":
        how = "podman run --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt unmask=ALL"
    elif facts.container == "kubepods":
        how = "a pod with seccompProfile: Unconfined, appArmorProfile: Unconfined and procMount: Unmasked"
    else:
        how = (
            "docker run --security-opt seccomp=unconfined --security-opt apparmor=unconfined "
            "--security-opt systempaths=unconfined (the last lets bubblewrap mount its own /proc)"
        )
    return f"{why}to get bubblewrap, start it with {how}"


def profile(bwrap: str) -> str:
    """The profile Ubuntu documents for a program that needs user namespaces (the Ubuntu 23.10 release
    notes, the AppArmor userns restriction spec), for ``bwrap`` at its real path. It confines nothing:
    it lets bwrap, and only bwrap, create the namespaces its sandbox is made of."""
    return (
        "# Written by `orchestrator doctor --fix`: lets bubblewrap create the user namespaces its sandbox needs\n"
        "# where kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 23.10+), as Ubuntu documents for such\n"
        f"# programs. To undo: apparmor_parser -R {PROFILE_FILE} && rm {PROFILE_FILE}\n"
        "abi <abi/4.0>,\n"
        "include <tunables/global>\n"
        "\n"
        f"profile bwrap {bwrap} flags=(unconfined) {{\n"
        "  userns,\n"
        "\n"
        "  # Site-specific additions and overrides. See local/README for details.\n"
        "  include if exists <local/bwrap>\n"
        "}\n"
    )


class Verdict(str, Enum):
    FIX = "fix"  # the profile is missing or not loaded: apply() would change this machine
    NOTHING = "nothing"  # nothing to fix: AppArmor does not stop bubblewrap here
    CANNOT = "cannot"  # something to fix, but not by this profile (or not by doctor)


@dataclass(frozen=True)
class Fix:
    """What ``doctor --fix`` changes: the file (written only when ``write``) and the command it runs."""

    path: Path  # the host's path (under Host.root)
    shown: str  # the same path as a user sees it on the machine
    content: str
    write: bool
    command: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    verdict: Verdict
    reason: str
    fix: Fix | None = None


def find_bwrap(command: str = "bwrap") -> str | None:
    """bwrap's real path (AppArmor attaches a profile to the file, not to a link to it)."""
    found = shutil.which(command)
    return os.path.realpath(found) if found else None


def plan(host: Host, facts: Facts, bwrap: str | None, *, starts: bool) -> Plan:
    """What ``doctor --fix`` would do here. ``bwrap``: its real path (None: not installed);
    ``starts``: whether bubblewrap created a sandbox for this process just now."""
    if facts.restrict_userns != 1:
        setting = "absent" if facts.restrict_userns is None else f"{facts.restrict_userns}"
        if starts:
            return Plan(
                Verdict.NOTHING,
                f"nothing to fix: bubblewrap starts here (kernel.apparmor_restrict_unprivileged_userns: {setting})",
            )
        other = causes(facts)
        return Plan(
            Verdict.CANNOT,
            f"kernel.apparmor_restrict_unprivileged_userns is {setting}: AppArmor is not what stops bubblewrap here, "
            "and doctor --fix changes only that; "
            + ("; ".join(other) if other else "bubblewrap's own error (the sandbox line above) says what does"),
        )
    if bwrap is None:
        return Plan(Verdict.CANNOT, "bubblewrap is not installed: apt-get install bubblewrap, then doctor --fix")
    target = host.path(PROFILE_FILE)
    content = profile(bwrap)
    current = _text(target)
    loaded = _loaded(host)
    if current == content and (loaded or (starts and host.euid != 0)):
        return Plan(Verdict.NOTHING, f"nothing to fix: {PROFILE_FILE} is installed and loaded")
    if starts and host.euid != 0:
        return Plan(Verdict.NOTHING, "nothing to fix: bubblewrap starts here (a profile already lets it)")
    others = [path for path in _profiles_naming(host, bwrap) if path != target]
    if others:
        shown = ", ".join("/" + str(path.relative_to(host.root)) for path in others)
        return Plan(
            Verdict.CANNOT,
            f"{shown} already names {bwrap}: doctor --fix does not add a second profile for it; load that one "
            f"(sudo apparmor_parser -r FILE) or remove it, then run doctor again",
        )
    if not host.path(PROFILE_DIR).is_dir():
        return Plan(Verdict.CANNOT, f"{PROFILE_DIR} does not exist: install AppArmor's tools (apt-get install apparmor)")
    parser = host.parser()
    if parser is None:
        return Plan(Verdict.CANNOT, f"{PARSER} is not installed: apt-get install apparmor, then doctor --fix")
    fix = Fix(target, PROFILE_FILE, content, current != content, (parser, "-r", PROFILE_FILE))
    what = "install and load" if fix.write else "load (it is installed but not loaded)"
    return Plan(Verdict.FIX, f"{what} an AppArmor profile that lets {bwrap} create user namespaces", fix)


def _loaded(host: Host) -> bool:
    """Whether a profile named bwrap is loaded (False when the list cannot be read)."""
    lines = (_text(host.path(LOADED_PROFILES)) or "").splitlines()
    return any(line.split(" (", 1)[0] == "bwrap" for line in lines)


def _profiles_naming(host: Host, bwrap: str) -> list[Path]:
    """The profiles in /etc/apparmor.d that attach to ``bwrap``'s path (abstractions and the like aside)."""
    folder = host.path(PROFILE_DIR)
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [path for path in entries if path.is_file() and bwrap in (_text(path) or "")]


@dataclass(frozen=True)
class Applied:
    ok: bool
    lines: list[str]  # what happened, step by step, in words a user reads


def apply(host: Host, fix: Fix) -> Applied:
    """Write the profile (when it differs), then load it with ``apparmor_parser -r``. A profile the parser
    refuses is taken back out (the file as it was), so a boot's AppArmor load never meets a broken one."""
    lines: list[str] = []
    before = _text(fix.path)
    if fix.write:
        temporary = fix.path.with_name(f".{fix.path.name}.tmp")
        temporary.write_text(fix.content, encoding="utf-8")
        temporary.chmod(0o644)
        os.replace(temporary, fix.path)
        lines.append(f"wrote {fix.shown} ({len(fix.content.encode())} bytes, mode 0644)")
    command = [fix.command[0], *fix.command[1:-1], str(fix.path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PARSER_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Applied(False, [*lines, f"`{' '.join(fix.command)}` did not run: {exc}", *_undo(fix, before)])
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[-1]
        return Applied(False, [*lines, f"`{' '.join(fix.command)}` failed: {said}", *_undo(fix, before)])
    lines.append(f"ran `{' '.join(fix.command)}`: the profile is loaded")
    return Applied(True, lines)


def _undo(fix: Fix, before: str | None) -> list[str]:
    if not fix.write:
        return [f"{fix.shown} left as it was"]
    if before is None:
        fix.path.unlink(missing_ok=True)
        return [f"removed {fix.shown} again: nothing changed"]
    fix.path.write_text(before, encoding="utf-8")
    return [f"put {fix.shown} back as it was: nothing changed"]
