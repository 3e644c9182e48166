"""config/edit.py: a few keys of config.yaml changed in place, every comment and other line kept."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.config import load_settings, render_template
from orchestrator.config.edit import merge_settings
from orchestrator.errors import ConfigError

HAND_WRITTEN = """\
# top comment
orchestrator:
  # about the worker
  worker: auto   # why auto
  claude_allowed_tools:
  - Read
  - "Bash(echo '#' x)"  # a quoted hash

  planner: heuristic
# between sections
workers:
  env:
    A: "1"
"""


def test_a_block_list_a_flow_value_and_missing_keys_and_sections_merge_keeping_comments():
    changes = {
        "orchestrator": {"worker": "claude", "claude_allowed_tools": ["Read", "Bash"]},
        "workers": {"env": {"A": "1", "B": "x # not a comment"}, "max_workers": 3},
        "tasks": {"gates": [{"name": "tests", "run": ["pytest", "-q"]}]},
    }
    merged = merge_settings(HAND_WRITTEN, changes)
    assert merged == (
        "# top comment\n"
        "orchestrator:\n"
        "  # about the worker\n"
        '  worker: "claude"  # why auto\n'
        '  claude_allowed_tools: ["Read", "Bash"]\n'
        "\n"
        "  planner: heuristic\n"
        "# between sections\n"
        "workers:\n"
        '  env: {"A": "1", "B": "x # not a comment"}\n'
        "  max_workers: 3\n"
        "\n"
        "tasks:\n"
        '  gates: [{"name": "tests", "run": ["pytest", "-q"]}]\n'
    )
    assert merge_settings(merged, changes) == merged  # idempotent
    assert yaml.safe_load(merged)["workers"]["env"]["B"] == "x # not a comment"


def test_the_shipped_template_merges_and_still_loads(tmp_path):
    template = render_template()
    merged = merge_settings(template, {"orchestrator": {"worker": "claude", "claude_command": "/opt/claude"}})
    assert len(merged.splitlines()) == len(template.splitlines())
    assert [a for a in template.splitlines() if "claude_command" not in a and "  worker:" not in a] == [
        b for b in merged.splitlines() if "claude_command" not in b and "  worker:" not in b
    ]
    (tmp_path / "config.yaml").write_text(merged)
    settings = load_settings(tmp_path / "config.yaml", base_dir=tmp_path, environ={})
    assert settings.orchestrator.claude_command == "/opt/claude" and settings.orchestrator.worker == "claude"


def test_a_section_written_on_one_line_is_refused_with_what_to_do():
    with pytest.raises(ConfigError, match="written on one line; give it one key per line"):
        merge_settings("workers: {max_workers: 3}\n", {"workers": {"env": {"A": "1"}}})


def test_a_merge_that_would_change_another_setting_is_refused():
    # An anchor's alias: the textual merge cannot see that a second key shares the value.
    text = "orchestrator:\n  model: &m opus\nworkers:\n  env: {}\n"
    assert merge_settings(text, {"orchestrator": {"model": "sonnet"}}).startswith('orchestrator:\n  model: "sonnet"')
    aliased = "orchestrator:\n  cli_args: &a [x]\n  command: *a\n"
    with pytest.raises(ConfigError, match="without changing other settings"):
        merge_settings(aliased, {"orchestrator": {"cli_args": ["y"]}})


def test_invalid_yaml_is_refused():
    with pytest.raises(ConfigError, match="not valid YAML"):
        merge_settings("orchestrator:\n  worker: [\n", {"orchestrator": {"worker": "claude"}})
