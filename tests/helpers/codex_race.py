"""Codex processes that lose the race for their sandbox helper folder, every time (tests/test_real_codex.py,
bench/probe_codex_helpers.py).

A codex (0.169.0) at its start sweeps ``$CODEX_HOME/tmp/arg0-linux``, removing every ``codex-arg0XXXX``
folder whose ``.lock`` it can flock, then makes its own folder, creates its ``.lock`` and locks it. A
codex starting while another is between creating and locking its ``.lock`` removes that one's folder;
the loser runs without its ``codex-linux-sandbox`` link and its ``workspace-write`` sandbox fails each
command (``bwrap: execvp codex-linux-sandbox: No such file or directory``). That moment lasts
microseconds, so workers started at once lose it rarely (CI saw it once in a while). :func:`racing_codex`
makes it last: the real codex under ``strace``, each of its main thread's flock calls held
``delay_us`` (a syscall delayed, nothing faked), while a real ``codex --version`` (whose start sweeps
the folder as every codex's does) runs every 0.1 s beside it.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

STRACE = shutil.which("strace")


def racing_codex(folder: Path, native: Path, *, delay_us: int = 400_000) -> Path:
    """A ``codex`` command in ``folder`` running ``native`` (codex's own binary) so that it loses its
    helper folder to another codex's sweep. Run by another name (a ``codex-linux-sandbox`` link to it,
    as the adapter's helper links are), it is ``native`` by that name, which chooses what codex runs."""
    assert STRACE, "strace is needed"
    folder.mkdir(parents=True, exist_ok=True)
    real, strace = shlex.quote(str(native)), shlex.quote(STRACE)
    script = folder / "codex"
    script.write_text(
        "#!/bin/bash\n"
        f'case "${{0##*/}}" in codex) ;; *) exec -a "$0" {real} "$@" ;; esac\n'
        # Not strace's child (strace would wait for it): it ends once this command has.
        f"( ( while kill -0 $$ 2>/dev/null; do {real} --version; sleep 0.1; done ) >/dev/null 2>&1 </dev/null & )\n"
        f'exec {strace} -o /dev/null -e trace=flock -e inject=flock:delay_enter={delay_us} {real} "$@"\n'
    )
    script.chmod(0o755)
    return script
