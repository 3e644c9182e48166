"""Codex processes started at once, one CODEX_HOME: how many lose their sandbox helper and fail their
command (a diagnostic for the codex adapter's helper links, no target of its own).

    .venv/bin/python bench/probe_codex_helpers.py [--at-once 3] [--rounds 10] [--widen] [--links]

Each round starts ``--at-once`` real ``codex exec`` processes (``--sandbox workspace-write``, as an
unsandboxed worker's) 20 ms apart, sharing one fresh CODEX_HOME, against the loopback mock of
tests/mock_openai_server.py, whose one turn asks each for a shell command that writes a file; a
process fails when its file is not written. A codex that lost its helper folder to another's start
says "could not create PATH aliases" on stderr: the count of those is printed too.

``--widen``: each process is tests/helpers/codex_race.py's command (the real codex under strace, its
flock calls held 0.4 s, a real ``codex --version`` sweeping beside it every 0.1 s), so the moment the
race is lost in, microseconds otherwise, lasts. ``--links``: each process gets the codex adapter's
helper links last on its PATH (``helper_links`` in a TMPDIR of its own), as a worker does.
Needs the CLI in .cli (tests/install_cli.sh); temp folders are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.workers.adapters.codex import helper_links, native_binary  # noqa: E402
from tests.helpers.codex_race import racing_codex  # noqa: E402
from tests.mock_openai_server import ENV_KEY, MockOpenAIServer, ShellCall, Text, function_outputs  # noqa: E402

CODEX = ROOT / ".cli" / "node_modules" / ".bin" / "codex"
LOST = "could not create PATH aliases"


def script(body: dict) -> ShellCall | Text:
    if function_outputs(body):
        return Text("done")
    return ShellCall(["bash", "-c", "printf ok > f.txt"])


def one_round(mock: MockOpenAIServer, base: Path, command: Path, at_once: int, links: Path | None) -> tuple[int, int]:
    """(processes whose file is missing, processes that said they lost their helper folder)."""
    home = base / "codex-home"
    home.mkdir()
    started = []
    for i in range(at_once):
        cwd, tmp = base / f"w{i}", base / f"tmp{i}"
        cwd.mkdir()
        tmp.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
        env.update({"CODEX_HOME": str(home), ENV_KEY: "sk-mock", "TMPDIR": str(tmp)})
        if links is not None:
            env["PATH"] = os.pathsep.join((env.get("PATH", os.defpath), str(helper_links(tmp, links))))
        argv = [str(command), "exec", "--json", "-C", str(cwd), "--skip-git-repo-check", "--sandbox", "workspace-write"]
        argv += ["-c", "sandbox_workspace_write.exclude_slash_tmp=true", "-m", "gpt-5-codex", *mock.codex_args()]
        argv += ["--", f"task {i}"]
        pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
        started.append((cwd, subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, text=True, **pipes)))
        time.sleep(0.02)
    failed = lost = 0
    for cwd, proc in started:
        _, err = proc.communicate(timeout=180)
        failed += not (cwd / "f.txt").exists()
        lost += LOST in err
    return failed, lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--at-once", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--widen", action="store_true", help="the race lost every time (strace, a sweeping codex)")
    parser.add_argument("--links", action="store_true", help="the adapter's helper links on each PATH")
    args = parser.parse_args()
    native = native_binary(str(CODEX), os.environ.get("PATH", ""))
    if native is None:
        print(f"codex not found at {CODEX} (tests/install_cli.sh)")
        return 1
    folder = Path(tempfile.mkdtemp(prefix="probe-codex-helpers-", dir=Path.home()))  # codex refuses a CODEX_HOME in TMPDIR
    try:
        command = racing_codex(folder / "racing", native) if args.widen else native
        failed = lost = 0
        with MockOpenAIServer(script, lifetime=3600) as mock:
            for n in range(args.rounds):
                base = folder / f"round{n}"
                base.mkdir()
                f, lo = one_round(mock, base, command, args.at_once, command if args.links else None)
                failed, lost = failed + f, lost + lo
        total = args.at_once * args.rounds
        mode = f"{'widened' if args.widen else 'as is'}, {'with' if args.links else 'without'} the adapter's links"
        print(
            f"{args.at_once} at once x {args.rounds} rounds ({mode}): {failed} of {total} failed their command, {lost} lost their helper folder"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
