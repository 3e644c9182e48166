"""A setting's description (``Key``), the ``setting(...)`` field maker the section dataclasses
of config/schema.py use, and ``check_value``, which checks one value against its ``Key``."""

from __future__ import annotations

import builtins
import dataclasses
import json
import re
import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from .. import protocol
from ..errors import ConfigError

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:
    from enum import Enum

    class StrEnum(str, Enum):
        """enum.StrEnum of Python 3.11: a member is its value, as a string (str(), f-strings, JSON)."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Variables the orchestrator always sets itself (with ORCHESTRATOR_*): workers.env may not name them.
RESERVED_ENV = ("TMPDIR", "TMP", "TEMP")


@dataclass(frozen=True)
class Key:
    """One setting: its type, default, allowed range or choices, and its comment."""

    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: Collection[str] | None = None  # a tuple, or config/plugins.py's live kind names
    nullable: bool = False
    refusal: str = ""  # said after "Choose one of" when a value is not a choice: what works instead
    secret: bool = False  # its values never appear in errors, `config` output or anything else
    check: Any = None  # a function that raises ValueError (saying what is wrong) for a value of the right type but bad form
    parse: Any = None  # for structured values (gates, roles): (value, where) -> the checked value, or ConfigError
    masked: tuple[str, ...] = ()  # fields of a structured value's items that are secret (webhooks.endpoints' "secret")
    enum: builtins.type[StrEnum] | None = None  # a closed choice's StrEnum: a checked value is its member (choices: its values)

    def shown_default(self) -> str:
        """The default as config.yaml spells it (the template and the configuration page show it)."""
        value = self.default
        if value is None or isinstance(value, bool):
            return {None: "null", True: "true", False: "false"}[value]
        return json.dumps(value) if isinstance(value, (str, list, dict)) else repr(value)

    def allowed(self) -> str:
        """Its choices (``a | b``) or range (``[0..10]``), or "" when any value of its type goes."""
        if self.choices:  # the kinds: the package's own (a plugin's is not the template's)
            return " | ".join(getattr(self.choices, "documented", self.choices))
        if self.min is not None:
            return f"[{self.min:g}..{self.max:g}]"
        return ""


def _copy(value: Any) -> Any:
    if isinstance(value, StrEnum):  # a closed choice, as config.yaml and JSON spell it
        return value.value
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


def setting(default: Any, help: str, **spec: Any) -> Any:
    """A section field: its default, its one-line comment, and the rest of its ``Key`` (min, max,
    choices, refusal, secret). Its type (and whether null is allowed) is the field's annotation."""
    meta = {"help": help, **spec}
    choices = spec.get("choices")
    if isinstance(choices, type) and issubclass(choices, StrEnum):  # a closed choice: its values, in order
        meta["choices"], meta["enum"] = tuple(member.value for member in choices), choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: _copy(default), metadata=meta)
    return field(default=default, metadata=meta)


class Section:
    """Base of the section dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def check_value(section: str, key: str, value: Any, spec: Key) -> Any:
    """Coerce what is safe to coerce (int -> float) and refuse the rest, naming the key."""
    where = f"{section}.{key}"
    if value is None and spec.nullable:
        return None
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.parse is not None:
        if value is None:
            raise ConfigError(f"{where} is null: give {_type_name(spec)}, or leave it out", key=where)
        return spec.parse(value, where)
    if spec.type is dict:
        return _check_env(where, value)
    if spec.type is list and isinstance(value, list):
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            raise ConfigError(f"{where}: expected a list of strings; item {bad[0]!r} is not a string (quote it)", key=where)
        return list(value)
    if not isinstance(value, spec.type) or (spec.type is not bool and isinstance(value, bool)):
        if spec.secret:  # never echo a secret, even a mistyped one
            raise ConfigError(f"{where} has the wrong type: expected {_type_name(spec)}", key=where, expected=_type_name(spec))
        raise ConfigError(
            f"{where}={value!r} has the wrong type: expected {_type_name(spec)}",
            key=where,
            value=_jsonable(value),
            expected=_type_name(spec),
        )
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(
            f"{where}={value!r} is not allowed. Choose one of: {', '.join(spec.choices)}"
            + (f". {spec.refusal}" if spec.refusal else ""),
            key=where,
            value=value,
        )
    if spec.enum is not None:
        return spec.enum(value)
    # a key with bounds is an int or float one, checked just above
    if isinstance(value, (int, float)) and (
        spec.min is not None and value < spec.min or spec.max is not None and value > spec.max
    ):
        raise ConfigError(f"{where}={value!r} is out of range: allowed {spec.min:g} to {spec.max:g}", key=where, value=value)
    if isinstance(value, float) and value != value:  # NaN
        raise ConfigError(f"{where} is NaN: give a number", key=where)
    if spec.check is not None:
        try:
            spec.check(value)
        except ValueError as exc:
            if spec.secret:  # never echo a secret (a database URL may hold a password)
                raise ConfigError(f"{where} is not valid: {exc}", key=where) from None
            raise ConfigError(f"{where}={value!r} is not valid: {exc}", key=where, value=_jsonable(value)) from None
    return value


def _check_env(where: str, value: Any) -> dict[str, str]:
    """A mapping of environment variables. Errors name the variable, never its value."""
    if not isinstance(value, dict):
        raise ConfigError(f'{where} must be a mapping of variable names to values, e.g. {{MY_VAR: "value"}}', key=where)
    for name, text in value.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ConfigError(
                f"{where}: {str(name)[:60]!r} is not a variable name (letters, digits and _; not starting with a digit)",
                key=where,
            )
        if name.upper().startswith(protocol.PREFIX) or name in RESERVED_ENV:
            raise ConfigError(
                f"{where}.{name}: the orchestrator sets this variable itself for every worker; choose another name",
                key=f"{where}.{name}",
            )
        if not isinstance(text, str):
            raise ConfigError(f"{where}.{name}: the value must be a string (quote it in config.yaml)", key=f"{where}.{name}")
        if "\0" in text:
            raise ConfigError(
                f"{where}.{name}: the value contains a NUL character, which no environment can hold", key=f"{where}.{name}"
            )
    return dict(value)


def _type_name(spec: Key) -> str:
    names = {
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        str: "a string",
        list: "a list of strings",
        dict: "a mapping of names to strings",
    }
    text = names[spec.type]
    if spec.min is not None:
        text += f" from {spec.min:g} to {spec.max:g}"
    return text + (" or null" if spec.nullable else "")


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
