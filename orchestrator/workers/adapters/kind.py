"""The one description of a worker kind, which its module declares as ``KIND`` beside its adapter.

Every table the orchestrator keeps per kind (the adapters by name, ``auto``'s search order, the
memory a worker needs before one is measured, the price table's provider for its model names,
how to install its CLI, how to tell whether it is logged in, Kage Bunshin's task API's names for it) is read from
these declarations (the registry: adapters/__init__.py), so a new kind is its own module and its
tests. What the adapter class itself declares stays there: its argv, environment, output parsing,
the folders its CLI writes (``path_settings``: what a sandbox opens, credentials included) and the
hosts its CLI reaches (``network_hosts``: the sandbox's network defaults).

The login check runs the CLI's own status command (never a model call) through ``run_probe``,
with a short timeout and no stdin; credential values are never read, only whether a variable is set.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .base import Adapter

PROBE_TIMEOUT = 15.0  # seconds a `--version` or status call may take (a healthy one: well under 1 s)


class Login(str, Enum):
    """Whether an installed CLI is logged in, as far as it can be told without a model call."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"
    NOT_NEEDED = "not needed"


# A CLI's own answer about its login: (state, how it knows), or None when it gave none.
LoginAnswer = tuple[Login, str]


@dataclass(frozen=True)
class StoredLogin:
    """A file where a CLI keeps a login it made: ``$variable`` (else ``default`` under the home
    folder) joined with ``file``. Only its existence is looked at, never its content."""

    variable: str
    default: str
    file: str

    def path(self, env: Mapping[str, str]) -> Path:
        home = Path(env.get("HOME") or Path.home())
        return Path(env.get(self.variable) or home / self.default) / self.file


@dataclass(frozen=True)
class LoginFacts:
    """How ``doctor`` tells whether a kind's CLI is logged in, and how to fix it when it is not."""

    # The variables the CLI reads its provider's credentials and endpoint from, in the order shown
    # (the ones ending in _KEY or _TOKEN are a credential by themselves).
    variables: tuple[str, ...]
    fix: str  # the sentence that logs it in ("" when nothing needs doing)
    stored: tuple[StoredLogin, ...] = ()
    # The CLI's own status command (``claude auth status``): its answer, or None to go on with the variables.
    status: Callable[[str, Mapping[str, str]], LoginAnswer | None] | None = None
    # The variable the CLI's own configuration takes its provider's key from, and where that is said
    # (codex's ``env_key``): ("", "") when it names none.
    provider_key: Callable[[Mapping[str, str]], tuple[str, str]] | None = None
    # Why a set key variable is not proof of a login (its status command said no), "" when it is.
    doubted_keys: str = ""
    not_needed: str = ""  # set: the CLI needs no login (local models), and this says why
    required: bool = True  # with no credential found at all: not logged in (True) or unknown (False)


@dataclass(frozen=True)
class WorkerKind:
    """Everything the orchestrator knows of one worker kind, declared once in its module."""

    adapter: type[Adapter]
    # Its place in every listing of kinds (the API's enum, error messages) and, for a CLI that
    # ``auto`` looks for, in that search: lower first.
    rank: int
    auto: bool = False  # ``auto`` picks it when its CLI (``orchestrator.<kind>_command``) is on PATH
    # A worker's whole process tree at its peak, in MB, until workers of the kind are measured here
    # (process/admission.py learns the real figure from their records).
    memory_peak_mb: int = 300
    cost_provider: str | None = None  # genai-prices' provider of its bare model names ("openai")
    local_models: bool = False  # its models run on this machine: no per-token price
    npm_package: str | None = None  # the CLI's npm package, when it installs from npm
    install: str = ""  # how to install its CLI otherwise (doctor's hint)
    login: LoginFacts | None = None  # None: no CLI of its own to log in (doctor does not look for one)
    aliases: tuple[str, ...] = ()  # other names Kage Bunshin's task API gives it (``cli_name: claude_code``)

    @property
    def name(self) -> str:
        return self.adapter.name

    @property
    def install_hint(self) -> str:
        """How to install its CLI, as doctor says it when npm's global prefix is writable."""
        return f"npm install -g {self.npm_package}" if self.npm_package else self.install

    @property
    def network_hosts(self) -> tuple[str, ...]:
        """The hosts its CLI reaches, which a sandbox with ``sandbox_network: allow`` lets through."""
        return self.adapter.network_hosts


def run_probe(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str] | str:
    """``argv`` with no stdin and a short timeout; the reason as a string when it could not run."""
    try:
        return subprocess.run(
            argv, env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PROBE_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {PROBE_TIMEOUT:g}s"
    except OSError as exc:
        return exc.strerror or str(exc)
