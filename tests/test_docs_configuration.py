"""docs/configuration.md's settings reference is generated from the settings' definitions
(orchestrator/config/reference.py): the committed page holds exactly the generated text, and the
command the page gives to regenerate it does so."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.config import SCHEMA
from orchestrator.config.reference import BEGIN, END, render_reference, splice

from .conftest import ROOT
from .helpers.readme import snippet

PAGE = ROOT / "docs" / "configuration.md"


def test_the_committed_reference_is_the_generated_one():
    page = PAGE.read_text(encoding="utf-8")
    committed = BEGIN + page.split(BEGIN, 1)[1].split(END, 1)[0] + END + "\n"
    assert committed == render_reference(), (
        "regenerate it: .venv/bin/python -m orchestrator config --reference docs/configuration.md"
    )


def test_the_reference_lists_every_setting_with_its_default():
    reference = render_reference()
    for section, keys in SCHEMA.items():
        for name, spec in keys.items():
            assert f"| `{section}.{name}` | `{spec.shown_default().replace('|', chr(92) + '|')}` |" in reference, name


def test_the_pages_regenerate_command_rewrites_a_stale_reference_and_keeps_the_prose(tmp_path):
    page = tmp_path / "configuration.md"
    committed = PAGE.read_text(encoding="utf-8")
    stale = committed.replace("| `workers.max_workers` |", "| `workers.max_workers_was_renamed` |")
    assert stale != committed
    page.write_text(stale, encoding="utf-8")
    (command,) = snippet("config-reference").strip().splitlines()
    argv = command.replace(".venv/bin/python", sys.executable).replace("docs/configuration.md", str(page)).split()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert page.read_text(encoding="utf-8") == committed


def test_a_page_without_markers_is_refused_with_what_to_add():
    with pytest.raises(ValueError, match="no reference markers"):
        splice("# Configuration\n")
