"""Which backend confines a worker on this machine, and how a process starts under it.

bubblewrap where it starts (process/sandbox.py builds its argv from the spec); else Landlock
(process/landlock.py: the same spec as access rules, a Perl launcher); Seatbelt on macOS
(process/seatbelt.py: a profile, untested on this project's machines). :func:`probe` tries them once,
with a timeout; :func:`argv` and :func:`environment` start a process under the spec's backend.

Above the spec and the backends, so neither imports the other through it: they build on
process/sandbox.py, this module chooses among them.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace

from ..config.schema import SandboxBackendChoice
from . import landlock, seatbelt, userns
from .sandbox import PROBE_TIMEOUT, Backend, SandboxSpec, Support

HOW_TO_ENABLE = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) and allow unprivileged user namespaces"
# What lets bubblewrap start where the kernel refuses it an unprivileged user namespace, and what the
# Landlock fallback needs: the sentence ``workers.sandbox: on`` fails with when neither works.
HOW_TO_FIX = (
    "to let bubblewrap start: `sysctl kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor profile for "
    "bwrap (Ubuntu 24.04), `sysctl kernel.unprivileged_userns_clone=1` (Debian before 11), Docker's "
    "`--security-opt seccomp=unconfined` or running outside a nested container; or a kernel with Landlock "
    "(5.13+, lsm=landlock) and Perl, for the Landlock fallback"
)


def probe(command: str = "bwrap", *, backend: str = SandboxBackendChoice.AUTO, path: str | None = None) -> Support:
    """Try the sandbox once (per process and arguments): the kernel, not the package list, decides.
    ``backend`` (``workers.sandbox_backend``): auto takes bubblewrap where it starts, else Landlock;
    ``path``: the PATH ``command`` is looked up in (None: this process's)."""
    # One answer per arguments, however a caller spells them (a member hashes apart from its value).
    return _probe(command, str(getattr(backend, "value", backend)), path)


def forget_probes() -> None:
    """Probe again on the next call (a test that changes what the machine offers)."""
    _probe.cache_clear()


@functools.lru_cache(maxsize=8)
def _probe(command: str, backend: str, path: str | None) -> Support:
    if sys.platform == "darwin":
        return _seatbelt(backend)
    if not sys.platform.startswith("linux"):
        return Support(None, f"the sandbox needs Linux's bubblewrap or Landlock; {sys.platform} runs workers unconfined")
    if backend == Backend.SEATBELT.value:
        return Support(
            None, "workers.sandbox_backend: seatbelt is macOS's sandbox-exec; on Linux choose auto, bubblewrap or landlock"
        )
    abi = landlock.abi()
    wanted = Backend(backend) if backend != SandboxBackendChoice.AUTO else None
    if wanted is not Backend.LANDLOCK:
        found = _bubblewrap(command, path)
        if found.available or wanted is Backend.BUBBLEWRAP:
            return replace(found, landlock_abi=abi)
        why = f"bubblewrap cannot start here: {found.reason}"
    else:
        why = "workers.sandbox_backend: landlock"
    if abi < 1:
        return Support(None, f"{why}; and this kernel has no Landlock ({HOW_TO_FIX})", landlock_abi=abi)
    ok, failed = landlock.starts(abi)
    if not ok:
        return Support(None, f"{why}; and Landlock cannot confine here: {failed} ({HOW_TO_FIX})", landlock_abi=abi)
    return Support(None, backend=Backend.LANDLOCK, landlock_abi=abi, bwrap_reason=why)


def _seatbelt(backend: str) -> Support:
    """macOS: Seatbelt (``/usr/bin/sandbox-exec``) where it is, for ``auto`` and ``seatbelt``."""
    if backend not in (SandboxBackendChoice.AUTO, SandboxBackendChoice.SEATBELT):
        return Support(None, f"workers.sandbox_backend: {backend} is Linux's; on macOS choose auto or seatbelt")
    if not seatbelt.available():
        return Support(None, f"macOS without {seatbelt.SANDBOX_EXEC}: workers run unconfined")
    return Support(None, backend=Backend.SEATBELT, bwrap_reason="macOS: Seatbelt (sandbox-exec)")


def _bubblewrap(command: str, path: str | None) -> Support:
    """bubblewrap, tried with the protections every sandbox uses, and whether it has overlays."""
    found = shutil.which(command, path=path)
    if found is None:
        return Support(None, f"{command} is not installed ({HOW_TO_ENABLE})")
    base = [found, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--cap-drop", "ALL"]
    ok, why = _runs([*base, "--", "true"])
    if not ok:  # what this host says refuses its namespace, where it says (docs/sandbox.md: doctor --fix)
        known = userns.causes(userns.read(userns.Host()))
        return Support(None, f"{command} cannot create a sandbox here: {why} ({'; '.join(known) or HOW_TO_ENABLE})")
    overlay, _ = _runs([*base, "--overlay-src", "/tmp", "--tmp-overlay", "/tmp", "--", "true"])
    return Support(found, overlay=overlay)


def _runs(argv: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]


def argv(spec: SandboxSpec, command: Sequence[str]) -> list[str]:
    """The argv running ``command`` confined by ``spec`` (a list; no shell), by its backend."""
    if spec.backend is Backend.LANDLOCK:
        return landlock.argv(spec, command)
    if spec.backend is Backend.SEATBELT:
        # (No namespace: the process starts where its caller's cwd is, which is ``chdir``.)
        return seatbelt.argv(spec, command, proxy_ports=spec.egress_ports or ())
    return spec.bubblewrap_argv(command)


def environment(spec: SandboxSpec) -> dict[str, str]:
    """What the environment of a process started by :func:`argv` must also hold: where its git writes
    objects under a backend that cannot bind the workers' store over the repository's (Landlock,
    Seatbelt: ``GIT_OBJECT_DIRECTORY``); nothing under bubblewrap."""
    if spec.backend in (Backend.LANDLOCK, Backend.SEATBELT):
        return landlock.environment(spec)
    return {}
