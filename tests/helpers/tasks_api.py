"""Helpers of tests/test_tasks_api.py, used by other test files too."""

from __future__ import annotations

import sys
from pathlib import Path

OUTPUTS = Path(__file__).parent.parent / "fixtures" / "cli_outputs"

STAND_IN = """#!{python}
# A stand-in for the {cli} CLI: writes a file where it runs and prints what the real CLI printed.
import pathlib, sys
pathlib.Path("{cli}.txt").write_text("written by the {cli} stand-in\\n")
sys.stdout.write(pathlib.Path({fixture!r}).read_text())
"""


def stand_in(folder: Path, cli: str, fixture: str) -> str:
    path = folder / f"{cli}-stand-in"
    path.write_text(STAND_IN.format(python=sys.executable, cli=cli, fixture=str(OUTPUTS / fixture)))
    path.chmod(0o755)
    return str(path)
