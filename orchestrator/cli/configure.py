"""``config get KEY`` and ``config set KEY VALUE ...``: read and change ``config.yaml`` from a shell.

An agent (or a person) changes the orchestrator's settings without editing YAML by hand:
``config set`` merges the keys into the file in place, keeping every comment and other line
(config/edit.py, as ``doctor --write`` does), and writes nothing unless the whole file, changed,
loads (an unknown key, a value of the wrong type or out of range is refused, naming the key and
what it takes). It then says what this folder's running server does with the change: applies it
to its next job (config/live.py reads the file again at each submission), or reads it only at
start (then: restart). ``config get`` prints one effective value, plain for a string or number
(``KEY=$(./orchestrator.sh config get api.api_key)``), JSON for a list or mapping.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..config import SCHEMA, load_settings
from ..config.settings import config_file, default_base_dir
from ..errors import ConfigError

RESTART_COMMAND = "./orchestrator.sh restart-server"


def key_of(name: str) -> tuple[str, str]:
    """``section.key`` split and checked against the schema; ConfigError naming close names."""
    section, _, key = name.partition(".")
    if section in SCHEMA and key in SCHEMA[section]:
        return section, key
    known = [f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else " `./orchestrator.sh config --template` lists every key."
    raise ConfigError(f"unknown setting {name!r}: a setting is SECTION.KEY, such as orchestrator.worker.{hint}", key=name)


def parse_value(name: str, text: str) -> Any:
    """A value as config.yaml would read it (YAML: ``3``, ``true``, ``'["a", "b"]'``, a word).
    A string of the key's type stays as typed, so ``{task}``-like text is never read as a mapping."""
    section, key = key_of(name)
    if SCHEMA[section][key].type is str:
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: {text!r} is not a YAML or JSON value ({exc.__class__.__name__})", key=name) from None


def cmd_config_get(args: argparse.Namespace) -> int:
    if len(args.items) != 1:
        raise ConfigError("config get takes one SECTION.KEY, e.g. config get api.api_key", key="config get")
    section, key = key_of(args.items[0])
    value = load_settings(args.config).get(section, key)
    value = getattr(value, "value", value)  # a closed choice: its word
    print(value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else json.dumps(value))
    return 0


def cmd_config_set(args: argparse.Namespace) -> int:
    items = args.items
    if not items or len(items) % 2:
        raise ConfigError(
            "config set takes SECTION.KEY VALUE pairs, e.g. config set orchestrator.worker command "
            'orchestrator.command \'["my-agent", "--prompt-file", "{prompt_file}"]\'',
            key="config set",
        )
    changes: dict[str, dict[str, Any]] = {}
    for name, text in zip(items[::2], items[1::2]):
        section, key = key_of(name)
        changes.setdefault(section, {})[key] = parse_value(name, text)
    base = default_base_dir()
    path = config_file(args.config, base)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: run ./install.sh first (it creates config.yaml)", key="config")
    write_checked(path, changes, base)
    for section, keys in changes.items():
        for key, value in keys.items():
            shown = "(set)" if SCHEMA[section][key].secret else json.dumps(value)
            print(f"{section}.{key}: {shown}")
    print(f"written to {path}")
    print(_server_note(base, [(s, k) for s, keys in changes.items() for k in keys]))
    return 0


def write_checked(path: Path, changes: dict[str, dict[str, Any]], base: Path) -> None:
    """Merge ``changes`` into ``path`` only if the file, changed, loads as this server would load it."""
    from ..config.edit import merge_settings
    from ..workspace.filesystem import atomic_write

    old = path.read_text(encoding="utf-8")
    new = merge_settings(old, changes, str(path))
    fd, trial = tempfile.mkstemp(prefix=".config-check-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(new)
        try:
            load_settings(trial, base_dir=base)
        except ConfigError as exc:  # said of the real file: the trial's name means nothing to the reader
            raise ConfigError(f"{str(exc).replace(trial, str(path))}; {path} was not changed", **exc.details) from None
    finally:
        os.unlink(trial)
    if new != old:
        atomic_write(path, new.encode("utf-8"), mode=0o600)


def _server_note(base: Path, keys: list[tuple[str, str]]) -> str:
    from ..config.live import needs_restart
    from .scripts import running_server

    record = running_server(base)
    at_start = [f"{s}.{k}" for s, k in keys if needs_restart(s, k)]
    if record is None:
        return "no server of this folder runs: it reads the file when it starts"
    if at_start:
        return f"the server at {record.url} reads {', '.join(at_start)} only at start: restart to apply: {RESTART_COMMAND}"
    return f"the server at {record.url} applies it to its next job (no restart needed)"
