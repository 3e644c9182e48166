"""Settings: the typed sections, loaded from defaults, ``config.yaml``, the environment and
overrides, each value checked against its ``Key`` (config/schema.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import protocol
from ..errors import ConfigError
from . import plugins
from .documents import MAX_DEPTH, deeper_than, text_fault
from .keys import check_value
from .schema import (
    SCHEMA,
    SECTIONS,
    AnthropicSettings,
    ApiSettings,
    CandidatesSettings,
    DatabaseSettings,
    DistributedSettings,
    GitSettings,
    Key,
    LoggingSettings,
    OrchestratorSettings,
    RecursionSettings,
    ScoringSettings,
    SimulatedSettings,
    TasksSettings,
    WebhooksSettings,
    WorkersSettings,
)

ENV_PREFIX = protocol.SETTINGS_PREFIX


@dataclass(frozen=True, repr=False)
class Settings:
    """Validated settings; sections read as ``settings.workers.max_workers``. Its repr masks
    secrets (see ``public_dict``), so a traceback or a debug line never shows them."""

    base_dir: Path
    orchestrator: OrchestratorSettings = field(default_factory=OrchestratorSettings)
    workers: WorkersSettings = field(default_factory=WorkersSettings)
    recursion: RecursionSettings = field(default_factory=RecursionSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    simulated: SimulatedSettings = field(default_factory=SimulatedSettings)
    git: GitSettings = field(default_factory=GitSettings)
    tasks: TasksSettings = field(default_factory=TasksSettings)
    candidates: CandidatesSettings = field(default_factory=CandidatesSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    anthropic: AnthropicSettings = field(default_factory=AnthropicSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    webhooks: WebhooksSettings = field(default_factory=WebhooksSettings)
    distributed: DistributedSettings = field(default_factory=DistributedSettings)
    source: str = "defaults"  # which files and variables were applied, for `config show`

    @property
    def workspace_root(self) -> Path:
        return _resolve(self.base_dir, self.orchestrator.workspace_root)

    @property
    def log_dir(self) -> Path:
        return _resolve(self.base_dir, self.logging.log_dir)

    @property
    def templates_dir(self) -> Path | None:
        value = self.orchestrator.templates_dir
        return None if not value else _resolve(self.base_dir, value)

    def get(self, section: str, key: str) -> Any:
        """A setting named at run time (``get("orchestrator", f"{kind}_command")``)."""
        return getattr(getattr(self, section), key)

    def replace(self, **changes: Mapping[str, Any]) -> Settings:
        """A copy with some keys changed (``replace(workers={"max_workers": 2})``), validated."""
        merged = self.to_dict()
        _merge(merged, {k: dict(v) for k, v in changes.items()}, "replace()")
        return _build(self.base_dir, merged, f"{self.source} + overrides")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: getattr(self, name).to_dict() for name in SECTIONS}

    def __repr__(self) -> str:
        return f"Settings(base_dir={str(self.base_dir)!r}, source={self.source!r}, sections={self.public_dict()!r})"

    def public_dict(self) -> dict[str, dict[str, Any]]:
        """``to_dict`` with secrets masked: what may be printed or sent."""
        data = self.to_dict()
        for section, keys in SCHEMA.items():
            for name, spec in keys.items():
                value = data[section][name]
                if spec.masked and isinstance(value, list):  # webhooks.endpoints: each item's secret
                    data[section][name] = [{k: "(set)" if k in spec.masked else v for k, v in item.items()} for item in value]
                elif spec.secret and isinstance(value, dict):
                    data[section][name] = {k: "(set)" for k in value}
                elif spec.secret and value:
                    data[section][name] = "(set)"
        return data


def default_base_dir() -> Path:
    """The orchestrator folder: the one holding the package, unless told otherwise."""
    env = os.environ.get(protocol.HOME)
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent.parent


def load_settings(
    config_path: Path | str | None = None,
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Defaults, then ``config.yaml`` (or ``config_path``), then the environment, then overrides."""
    base = Path(base_dir).resolve() if base_dir else default_base_dir()
    environ = os.environ if environ is None else environ
    merged: dict[str, dict[str, Any]] = {name: {} for name in SCHEMA}
    sources = ["defaults"]
    path = Path(config_path) if config_path else _default_config_path(base, environ)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}. Copy config.template.yaml to config.yaml, or drop --config.")
        _merge(merged, _read_yaml(path), str(path))
        sources.append(str(path))
    env_values = _from_environ(environ)
    if env_values:
        _merge(merged, env_values, "environment")
        sources.append("environment")
    if overrides:
        _merge(merged, {k: dict(v) for k, v in overrides.items()}, "overrides")
        sources.append("overrides")
    return _build(base, merged, " < ".join(sources))


def config_file(config_path: Path | str | None, base_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The file ``load_settings`` reads (or would, once it exists) for these arguments."""
    environ = os.environ if environ is None else environ
    if config_path:
        return Path(config_path)
    return Path(environ[protocol.CONFIG]) if environ.get(protocol.CONFIG) else Path(base_dir) / "config.yaml"


def _default_config_path(base: Path, environ: Mapping[str, str]) -> Path | None:
    if environ.get(protocol.CONFIG):
        return Path(environ[protocol.CONFIG])
    candidate = base / "config.yaml"
    return candidate if candidate.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} is not UTF-8; "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    try:
        data = yaml.safe_load(text)
        too_deep = deeper_than(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    except RecursionError:  # the YAML parser recurses once per level
        too_deep = True
    if too_deep:
        raise ConfigError(
            f"{path} nests lists and mappings more than {MAX_DEPTH} levels deep; settings need a few at most "
            "(section, key, list, item): check its indentation and brackets"
        )
    found = text_fault(data)
    if found is not None:  # a YAML "\\ud800" escape reads as a lone surrogate, as JSON's does
        field, fault, char = found
        raise ConfigError(f"{path} holds a string no setting can: {field} contains {fault.value.format(char=char)}", key=field)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping of sections (orchestrator:, workers:, ...), not {type(data).__name__}")
    return data


def _from_environ(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``ORCHESTRATOR__WORKERS__MAX_WORKERS=4`` -> {"workers": {"max_workers": 4}}."""
    found: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2:
            raise ConfigError(
                f"environment variable {name}: expected {ENV_PREFIX}SECTION__KEY, e.g. {ENV_PREFIX}WORKERS__MAX_WORKERS=4"
            )
        section, key = parts
        spec = _env_spec(name, section, key)
        value = _parse_env(raw, spec)
        try:
            check_value(section, key, value, spec)
        except ConfigError as exc:  # name the variable the user typed, not only the key it maps to
            raise ConfigError(f"environment variable {name}: {exc.message}", **exc.details, variable=name) from None
        found.setdefault(section, {})[key] = value
    return found


def _env_spec(name: str, section: str, key: str) -> Key:
    """The setting an ``ORCHESTRATOR__SECTION__KEY`` variable names; a typo is reported by the variable's name."""
    if section not in SCHEMA:
        raise ConfigError(
            f"environment variable {name}: unknown section '{section}'. Known sections: {', '.join(SCHEMA)} "
            f"(e.g. {ENV_PREFIX}WORKERS__MAX_WORKERS)",
            key=section,
            variable=name,
        )
    if key not in SCHEMA[section]:
        known = ", ".join(f"{ENV_PREFIX}{section.upper()}__{k.upper()}" for k in SCHEMA[section])
        raise ConfigError(
            f"environment variable {name}: unknown key '{section}.{key}'. Known variables for {section}: {known}",
            key=f"{section}.{key}",
            variable=name,
        )
    return SCHEMA[section][key]


def _parse_env(raw: str, spec: Key | None) -> Any:
    """Text stays text for string settings; numbers, booleans and lists are parsed."""
    if spec is None or spec.type is str:
        return None if spec is not None and spec.nullable and raw.strip().lower() in ("", "null", "~") else raw
    if spec.type is float:
        try:
            return float(raw)
        except ValueError:
            return raw
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except (yaml.YAMLError, RecursionError):  # left as text: the type check names the variable
        return raw


def _merge(merged: dict[str, dict[str, Any]], data: Mapping[str, Any], origin: str) -> None:
    for section, values in data.items():
        if section not in SCHEMA:
            raise ConfigError(f"{origin}: unknown section '{section}'. Known sections: {', '.join(SCHEMA)}", key=section)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: section '{section}' must be a mapping of keys, not {type(values).__name__}")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise ConfigError(
                    f"{origin}: unknown key '{section}.{key}'. Known keys in {section}: {', '.join(SCHEMA[section])}",
                    key=f"{section}.{key}",
                )
            merged[section][key] = value


def _build(base: Path, merged: Mapping[str, Mapping[str, Any]], source: str) -> Settings:
    values: dict[str, dict[str, Any]] = {}
    declared = merged.get("workers", {}).get("kinds")  # its plugin kinds: names orchestrator.worker may hold
    kinds = check_value("workers", "kinds", declared, SCHEMA["workers"]["kinds"]) if declared is not None else {}
    with plugins.declaring(kinds):
        for name, keys in SCHEMA.items():
            given = merged.get(name, {})
            values[name] = {key: check_value(name, key, given[key], spec) for key, spec in keys.items() if key in given}
    # A default raised above its limit raises the limit with it.
    for section, default, limit in (
        ("workers", "max_workers", "max_workers_limit"),
        ("recursion", "max_depth", "max_depth_limit"),
        ("workers", "default_timeout", "max_timeout"),
    ):
        keys = SCHEMA[section]
        wanted = values[section].get(default, keys[default].default)
        if wanted > values[section].get(limit, keys[limit].default):
            values[section][limit] = wanted
    _check_threads(values["api"])
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    return Settings(base_dir=base, source=source, **sections)  # type: ignore[arg-type]


def _check_threads(api: Mapping[str, Any]) -> None:
    """Streams and long-polls need at least one thread besides those kept for short requests."""
    keys = SCHEMA["api"]
    threads = api.get("threads", keys["threads"].default)
    reserved = api.get("reserved_threads", keys["reserved_threads"].default)
    if reserved >= threads:
        raise ConfigError(
            f"api.reserved_threads={reserved} leaves none of api.threads={threads} for streams and long-polls: "
            f"raise api.threads above {reserved} or lower api.reserved_threads below {threads}",
            key="api.reserved_threads",
        )


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()
