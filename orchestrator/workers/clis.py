"""The AI CLIs installed here, their versions, and whether each is logged in: asked of the CLIs
themselves without a model call (``doctor``).

A CLI is found the way its adapter runs it: ``orchestrator.<kind>_command`` on PATH (a full path
there counts), else this folder's ``.cli/node_modules/.bin`` (where tests/install_cli.sh puts
them), which ``auto`` does not look in; the configuration doctor writes names the full path.

"Logged in" is what the CLI itself can tell without calling its model: claude's ``auth status``
(JSON; 2.x), codex's ``login status`` (its stored login), else the credential variables and
files each CLI documents. Where none of these answers, the state is "unknown", said as such.
Credential values are never read into a message: only the names of the variables that are set.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .adapters import AUTO_ORDER

PROBE_TIMEOUT = 15.0  # seconds a `--version` or status call may take (a healthy one: well under 1 s)
LOCAL_BIN = Path(".cli") / "node_modules" / ".bin"  # relative to the orchestrator's folder

# The npm package of each CLI that installs from npm.
NPM_PACKAGES = {
    "claude": "@anthropic-ai/claude-code",
    "codex": "@openai/codex",
    "gemini": "@google/gemini-cli",
    "opencode": "opencode-ai",
}
INSTALL = {
    "claude": f"npm install -g {NPM_PACKAGES['claude']}",
    "codex": f"npm install -g {NPM_PACKAGES['codex']}",
    "gemini": f"npm install -g {NPM_PACKAGES['gemini']}",
    "aider": "python3 -m pip install aider-install && aider-install",
    "ollama": "see https://ollama.com/download",
    "opencode": f"npm install -g {NPM_PACKAGES['opencode']}",
}
# The variables each CLI reads its provider's credentials and endpoint from, in the order shown.
PROVIDER_VARS = {
    "claude": (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "CLAUDE_CODE_USE_BEDROCK",
        "CLAUDE_CODE_USE_VERTEX",
        "CLAUDE_CODE_OAUTH_TOKEN",
    ),
    "codex": ("OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_BASE_URL"),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT"),
    "aider": (
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "OPENROUTER_API_KEY",
        "DEEPSEEK_API_KEY",
        "OPENAI_API_BASE",
    ),
    "ollama": ("OLLAMA_HOST",),
    "opencode": ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY", "GEMINI_API_KEY"),
}
# Of those, the ones that are a credential by themselves (a base URL or a switch is not).
_CREDENTIALS = {name for names in PROVIDER_VARS.values() for name in names if name.endswith(("_KEY", "_TOKEN"))}
LOGIN_FIX = {
    "claude": "set ANTHROPIC_API_KEY in workers.env (config.yaml) or in the server's environment, or run `claude` once and /login",
    "codex": "run `codex login` (or `printenv OPENAI_API_KEY | codex login --with-api-key`)",
    "gemini": "set GEMINI_API_KEY in workers.env (config.yaml), or run `gemini` once and choose a login",
    "aider": "set your model provider's key (e.g. ANTHROPIC_API_KEY or OPENAI_API_KEY) in workers.env (config.yaml)",
    "opencode": "run `opencode auth login`, or set your provider's key in workers.env (config.yaml)",
    "ollama": "",
}


class Login(str, Enum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"
    NOT_NEEDED = "not needed"


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
    for kind in AUTO_ORDER:
        where = locate(kind, commands.get(kind, kind), base_dir)
        if where is not None:
            cli = FoundCLI(kind, *where, variables=[n for n in PROVIDER_VARS[kind] if env.get(n)])
            if kind == "codex":
                cli.provider_key = codex_provider_key(env)[0]
            found.append(cli)

    def probe(cli: FoundCLI) -> None:
        cli.version, cli.version_error = version_of(cli.path, env)
        cli.login, cli.login_detail = login_of(cli, env)

    # At once: a node CLI takes 0.03-3.6 s to print its version here (gemini the slowest).
    with ThreadPoolExecutor(max_workers=max(1, len(found))) as pool:
        list(pool.map(probe, found))
    return found


def _run(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str] | str:
    """``argv`` with no stdin and a short timeout; the reason as a string when it could not run."""
    try:
        return subprocess.run(
            argv, env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PROBE_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {PROBE_TIMEOUT:g}s"
    except OSError as exc:
        return exc.strerror or str(exc)


def version_of(path: str, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(its ``--version`` line, "") or (None, why not)."""
    done = _run([path, "--version"], env)
    if isinstance(done, str):
        return None, done
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return None, f"`{Path(path).name} --version` failed: {said[:200]}"
    return lines[0][:200], ""


def login_of(cli: FoundCLI, env: Mapping[str, str]) -> tuple[Login, str]:
    """Whether ``cli`` is logged in, and how (or why not), without a model call."""
    if cli.kind == "ollama":
        return Login.NOT_NEEDED, "local models: no login"
    if cli.kind == "claude":
        answer = _claude_status(cli.path, env)
        if answer is not None:
            return answer
    if cli.kind == "codex":
        done = _run([cli.path, "login", "status"], env)
        if not isinstance(done, str) and done.returncode == 0:
            return Login.YES, (done.stdout.strip().splitlines() or ["logged in"])[-1][:200]
    if cli.provider_key:
        where = codex_provider_key(env)[1]
        if env.get(cli.provider_key):
            return Login.YES, f"{cli.provider_key} set (the env_key of {where})"
        return Login.NO, f"{where} takes its key from {cli.provider_key}, which is not set"
    keys = [name for name in cli.variables if name in _CREDENTIALS]
    if keys:
        if cli.kind == "codex":
            return Login.UNKNOWN, f"{', '.join(keys)} set, but `codex login status` says not logged in"
        return Login.YES, f"{', '.join(keys)} set"
    stored = _stored_login(cli.kind, env)
    if stored is not None:
        return Login.YES, f"stored login in {stored}"
    if cli.kind in ("claude", "codex", "gemini", "aider"):
        return Login.NO, "no credential variable set and no stored login found"
    return Login.UNKNOWN, "no credential variable set; its own login store is not readable without a model call"


def codex_provider_key(env: Mapping[str, str]) -> tuple[str, str]:
    """(the variable codex reads its model provider's key from, which provider in which file),
    or ("", "") when ``$CODEX_HOME/config.toml`` selects no provider with an ``env_key``: a custom
    provider (``model_provider = "x"`` with ``[model_providers.x] env_key = "X_KEY"``, or the same
    in the selected ``profile``) needs that variable, not ``codex login``."""
    path = Path(env.get("CODEX_HOME") or Path(env.get("HOME") or Path.home()) / ".codex") / "config.toml"
    try:
        tomllib = importlib.import_module("tomllib")  # 3.11+; on 3.10 the login stays as codex says
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (ImportError, OSError, ValueError, UnicodeDecodeError):
        return "", ""
    if not isinstance(doc, dict):
        return "", ""
    profiles, chosen = doc.get("profiles"), doc.get("profile")
    profile = profiles.get(chosen) if isinstance(profiles, dict) and isinstance(chosen, str) else None
    name = (profile.get("model_provider") if isinstance(profile, dict) else None) or doc.get("model_provider")
    providers = doc.get("model_providers")
    provider = providers.get(name) if isinstance(providers, dict) and isinstance(name, str) else None
    key = provider.get("env_key") if isinstance(provider, dict) else None
    if not isinstance(key, str) or not key.strip():
        return "", ""
    return key.strip(), f"model provider {name} in {path}"


def install_command(kind: str, base_dir: Path, env: Mapping[str, str]) -> str:
    """How to install ``kind``'s CLI as this user: ``npm install -g`` only where npm's global prefix
    is writable; else into this folder's ``.cli/`` (where doctor and ``auto`` find it, as
    tests/install_cli.sh does), which needs no root."""
    package = NPM_PACKAGES.get(kind)
    if package is None:
        return INSTALL[kind]
    prefix = npm_global_prefix(env)
    if prefix is None or _writable_prefix(prefix):
        return INSTALL[kind]
    return f"npm install --prefix {base_dir / '.cli'} {package} (npm's global prefix {prefix} is not writable by you)"


def npm_global_prefix(env: Mapping[str, str]) -> Path | None:
    """``npm prefix -g``; None without npm or an answer."""
    npm = shutil.which("npm", path=env.get("PATH"))
    if npm is None:
        return None
    done = _run([npm, "prefix", "-g"], env)
    if isinstance(done, str) or done.returncode != 0:
        return None
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return Path(lines[-1]) if lines else None


def _writable_prefix(prefix: Path) -> bool:
    """Whether ``npm install -g`` can write under ``prefix`` (its lib/node_modules and bin, where they exist)."""
    targets = [path for path in (prefix / "lib" / "node_modules", prefix / "bin") if path.exists()] or [prefix]
    return all(os.access(path, os.W_OK) for path in targets)


def _claude_status(path: str, env: Mapping[str, str]) -> tuple[Login, str] | None:
    """``claude auth status`` (JSON: loggedIn, authMethod, apiKeySource); None from a version without it."""
    done = _run([path, "auth", "status", "--json"], env)
    if isinstance(done, str):
        return None
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("loggedIn"), bool):
        return None
    how = ", ".join(str(doc[k]) for k in ("authMethod", "apiKeySource") if isinstance(doc.get(k), str))
    if doc["loggedIn"]:
        return Login.YES, f"`claude auth status`: {how or 'logged in'}"
    return Login.NO, "`claude auth status`: not logged in"


def _stored_login(kind: str, env: Mapping[str, str]) -> str | None:
    """The file where ``kind`` keeps a login it made, if there is one (its content is not read)."""
    home = Path(env.get("HOME") or Path.home())
    candidates = {
        "claude": [Path(env.get("CLAUDE_CONFIG_DIR") or home / ".claude") / ".credentials.json"],
        "codex": [Path(env.get("CODEX_HOME") or home / ".codex") / "auth.json"],
        "gemini": [Path(env.get("GEMINI_CLI_HOME") or home) / ".gemini" / "oauth_creds.json"],
        "opencode": [Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "opencode" / "auth.json"],
    }.get(kind, [])
    return next((str(path) for path in candidates if path.is_file()), None)
