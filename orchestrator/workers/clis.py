"""The AI CLIs installed here, their versions, and whether each is logged in: asked of the CLIs
themselves without a model call (``doctor``).

A CLI is found the way its adapter runs it: ``orchestrator.<kind>_command`` on PATH (a full path
there counts), else this folder's ``.cli/node_modules/.bin`` (where tests/install_cli.sh puts
them), which ``auto`` does not look in; the configuration doctor writes names the full path.

"Logged in" is what the CLI itself can tell without calling its model, as its kind declares
(``LoginFacts``, adapters/kind.py): its own status command (claude's ``auth status``, JSON, 2.x;
codex's ``login status``), else the credential variables and files each CLI documents. Where none of these answers, the state is "unknown", said as such.
Credential values are never read into a message: only the names of the variables that are set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .adapters import KINDS, auto_order
from .adapters.kind import PROBE_TIMEOUT, Login, LoginFacts, run_probe

LOCAL_BIN = Path(".cli") / "node_modules" / ".bin"  # relative to the orchestrator's folder

__all__ = ["LOCAL_BIN", "PROBE_TIMEOUT", "FoundCLI", "Login", "find_clis", "install_command", "login_of", "login_kinds"]


def login_kinds() -> tuple[str, ...]:
    """The kinds with a CLI of their own to find, in ``auto``'s order."""
    return tuple(name for name in auto_order() if KINDS[name].login is not None)


def login_facts(kind: str) -> LoginFacts:
    """How ``kind``'s CLI logs in (a kind without a CLI: nothing to check, no fix)."""
    return KINDS[kind].login or LoginFacts(variables=(), fix="", required=False)


@dataclass
class FoundCLI:
    """One installed CLI: where, which version, and its login as far as it can be known."""

    kind: str
    path: str
    source: str  # "PATH", "orchestrator.<kind>_command" or ".cli/"
    version: str | None = None
    version_error: str = ""
    login: Login = Login.UNKNOWN
    login_detail: str = ""
    variables: list[str] = field(default_factory=list)  # provider variables set (names only)
    # The key variable of the model provider the CLI's own configuration selects (codex's
    # ``env_key``), set or not: "" when its configuration names none.
    provider_key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "login": self.login.value}


def locate(kind: str, configured: str, base_dir: Path) -> tuple[str, str] | None:
    """(full path, where it was found) of ``kind``'s CLI, or None."""
    found = shutil.which(configured)
    if found:
        return found, "PATH" if configured == kind else f"orchestrator.{kind}_command"
    local = base_dir / LOCAL_BIN / kind
    if local.is_file() and os.access(local, os.X_OK):
        return str(local), ".cli/"
    return None


def find_clis(commands: Mapping[str, str], base_dir: Path, env: Mapping[str, str]) -> list[FoundCLI]:
    """Every AI CLI found, in ``auto``'s order, with its version and login.
    ``commands``: kind -> its orchestrator.<kind>_command; ``env``: what a worker's CLI gets."""
    found = []
    for kind in login_kinds():
        where = locate(kind, commands.get(kind, kind), base_dir)
        if where is not None:
            facts = login_facts(kind)
            cli = FoundCLI(kind, *where, variables=[n for n in facts.variables if env.get(n)])
            if facts.provider_key is not None:
                cli.provider_key = facts.provider_key(env)[0]
            found.append(cli)

    def probe(cli: FoundCLI) -> None:
        cli.version, cli.version_error = version_of(cli.path, env)
        cli.login, cli.login_detail = login_of(cli, env)

    # At once: a node CLI takes 0.03-3.6 s to print its version here (gemini the slowest).
    with ThreadPoolExecutor(max_workers=max(1, len(found))) as pool:
        list(pool.map(probe, found))
    return found


def version_of(path: str, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(its ``--version`` line, "") or (None, why not)."""
    done = run_probe([path, "--version"], env)
    if isinstance(done, str):
        return None, done
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return None, f"`{Path(path).name} --version` failed: {said[:200]}"
    return lines[0][:200], ""


def login_of(cli: FoundCLI, env: Mapping[str, str]) -> tuple[Login, str]:
    """Whether ``cli`` is logged in, and how (or why not), without a model call: its kind's
    declaration (``LoginFacts``) says what to ask."""
    facts = login_facts(cli.kind)
    if facts.not_needed:
        return Login.NOT_NEEDED, facts.not_needed
    if facts.status is not None:
        answer = facts.status(cli.path, env)
        if answer is not None:
            return answer
    if cli.provider_key and facts.provider_key is not None:
        where = facts.provider_key(env)[1]
        if env.get(cli.provider_key):
            return Login.YES, f"{cli.provider_key} set (the env_key of {where})"
        return Login.NO, f"{where} takes its key from {cli.provider_key}, which is not set"
    keys = [name for name in cli.variables if name.endswith(("_KEY", "_TOKEN"))]  # a base URL or a switch is no credential
    if keys:
        if facts.doubted_keys:
            return Login.UNKNOWN, f"{', '.join(keys)} set, but {facts.doubted_keys}"
        return Login.YES, f"{', '.join(keys)} set"
    stored = next((str(path) for path in (s.path(env) for s in facts.stored) if path.is_file()), None)
    if stored is not None:
        return Login.YES, f"stored login in {stored}"
    if facts.required:
        return Login.NO, "no credential variable set and no stored login found"
    return Login.UNKNOWN, "no credential variable set; its own login store is not readable without a model call"


def install_command(kind: str, base_dir: Path, env: Mapping[str, str]) -> str:
    """How to install ``kind``'s CLI as this user: ``npm install -g`` only where npm's global prefix
    is writable; else into this folder's ``.cli/`` (where doctor and ``auto`` find it, as
    tests/install_cli.sh does), which needs no root."""
    declared = KINDS[kind]
    package = declared.npm_package
    if package is None:
        return declared.install_hint
    prefix = npm_global_prefix(env)
    if prefix is None or _writable_prefix(prefix):
        return declared.install_hint
    return f"npm install --prefix {base_dir / '.cli'} {package} (npm's global prefix {prefix} is not writable by you)"


def npm_global_prefix(env: Mapping[str, str]) -> Path | None:
    """``npm prefix -g``; None without npm or an answer."""
    npm = shutil.which("npm", path=env.get("PATH"))
    if npm is None:
        return None
    done = run_probe([npm, "prefix", "-g"], env)
    if isinstance(done, str) or done.returncode != 0:
        return None
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return Path(lines[-1]) if lines else None


def _writable_prefix(prefix: Path) -> bool:
    """Whether ``npm install -g`` can write under ``prefix`` (its lib/node_modules and bin, where they exist)."""
    targets = [path for path in (prefix / "lib" / "node_modules", prefix / "bin") if path.exists()] or [prefix]
    return all(os.access(path, os.W_OK) for path in targets)
