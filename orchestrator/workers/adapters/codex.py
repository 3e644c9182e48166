"""OpenAI Codex CLI (``codex exec``) run headless.

argv (checked against ``codex exec --help`` of @openai/codex 0.169.0)::

    codex exec --json -C WORKER_DIR --skip-git-repo-check
               [--sandbox workspace-write -c sandbox_workspace_write.network_access=true
                -c sandbox_workspace_write.exclude_slash_tmp=true]
               -c shell_environment_policy.ignore_default_excludes=true
               [-c allow_login_shell=false] [-c background_terminal_max_timeout=MS]
               [-m MODEL] [CLI_ARGS ...] -- PROMPT

* This version has no ``--full-auto``; ``codex exec`` never asks for approval,
  and ``--sandbox workspace-write`` lets the agent edit its worker directory.
  Network access inside that sandbox is switched on so a worker can reach the
  orchestrator's API to start child jobs. ``/tmp`` is left out of its writable
  roots (the worker's private ``$TMPDIR`` stays in): codex re-protects a ``.codex``
  under every writable root, and parallel workers sharing ``/tmp`` raced on
  ``/tmp/.codex`` ("bwrap: Can't remount readonly on /newroot/tmp/.codex", seen
  once in 3 workers). ``ignore_default_excludes`` keeps
  variables named ``*KEY*``/``*TOKEN*`` (the worker's ``ORCHESTRATOR_API_KEY``)
  in the commands the agent runs. When ``orchestrator.cli_args`` chooses its own
  sandbox (``-s``/``--sandbox``, ``--dangerously-bypass-approvals-and-sandbox``)
  ours is left out, since codex rejects the flag twice.
* ``--`` ends the options, so a prompt starting with ``-`` is still the prompt
  (measured). Codex also reads stdin when it is not a terminal; the orchestrator
  closes stdin (``/dev/null``), without which it would wait forever.
* Output is JSONL on stdout: ``thread.started``, ``turn.started``,
  ``item.completed`` (the answer is the last item with ``type: agent_message``),
  ``turn.completed`` with ``usage`` (``input_tokens`` including
  ``cached_input_tokens``, ``output_tokens``), or ``turn.failed`` with
  ``error.message``; transient ``{"type": "error"}`` lines report reconnects.
  Codex reports tokens, never a cost. The pre-0.44 event shape
  (``{"msg": {"type": "agent_message"|"token_count"|"task_complete"|"error"}}``)
  is read too.
* SIGINT and SIGTERM both end it (measured: SIGINT exits 1 after its own
  shutdown, SIGTERM 143); SIGINT is used so it can shut down cleanly.
* ``CODEX_HOME`` is left alone: it holds the user's ``auth.json``.
* Its shell runs commands as ``bash -lc`` by default; a login shell re-reads the profile,
  which resets PATH, and ``orchestrator-spawn`` (first on the worker's PATH) was "command
  not found" (measured). ``allow_login_shell=false`` keeps the worker's environment, unless
  ``cli_args`` set it.
* Shell-tool time limit: the model's ``exec_command`` runs a command for up to its
  ``yield_time_ms``, then leaves it running in a background terminal that it polls with
  ``write_stdin``; one empty poll waits at most ``background_terminal_max_timeout`` ms
  (config.toml, default 300000). ``-c background_terminal_max_timeout=`` raises it to the
  attempt's time left, so one poll can wait out a ``orchestrator-spawn --wait`` for a long
  child job, unless the user set it (in ``cli_args`` or ``$CODEX_HOME/config.toml``).
  (The classic ``shell`` tool takes a per-call ``timeout_ms``, default 10 s: the prompt
  asks the model for a long one.)
* Failures: ``turn.failed`` carries only a message; the HTTP status is in its words
  (``unexpected status 401 Unauthorized: ...``, ``exceeded retry limit, last status: 429
  Too Many Requests``), from which ``failure_class`` is read. Codex waits out a 429's
  retry-after itself (measured) but does not print it; its own retries
  (``request_max_retries``/``stream_max_retries`` of the provider, default 4 and 5)
  are left as they are: they retry one request, keeping the conversation.
* Its sandbox helper: on Linux, each codex at its start makes ``$CODEX_HOME/tmp/arg0-linux/
  codex-arg0XXXX`` (links named ``codex-linux-sandbox``, ``apply_patch`` to its own binary: the
  name chooses the part it runs) and first sweeps that folder: it removes each other such folder
  whose ``.lock`` it can flock. A codex locks its own folder's ``.lock`` just after making it, so
  another starting at the same moment can find the file made and not yet locked, and remove the
  folder; the loser warns ("could not create PATH aliases"), runs on without the links, and its
  ``workspace-write`` sandbox then fails every command: ``bwrap: execvp codex-linux-sandbox: No
  such file or directory`` (0.169.0, read in strace; workers started at once share CODEX_HOME,
  which holds the user's login, ``auth.json``). Codex has no setting or variable for that folder
  but CODEX_HOME, and a private CODEX_HOME would lose the user's login and sessions, so the
  adapter leaves the folder to codex and makes the loser's way out work: the same links, made in
  the worker's own TMPDIR (``codex-helpers-*``, :func:`helper_links`) and put last on its PATH, where
  codex without its own finds ``codex-linux-sandbox`` by name (a winner's own folder comes first).
  They lead to the binary the npm launcher runs, or to ``codex_command`` itself when that is no
  launcher (a script of the user's then runs by the helper's name: as before, a loser fails). A
  sandboxed worker's CODEX_HOME is a private overlay where bubblewrap has one (no other codex sees
  its folder), a writable bind where not: its links are made too. Retrying the worker instead
  would run its whole attempt again for a race it can lose again.
"""

from __future__ import annotations

import importlib
import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import transcript
from .aicli import AICLIAdapter, add, cli_args_of, has_flag, home_of, is_auth_error, json_lines
from .base import ConfigEndpoint, ParsedResult, PathSetting, PathUse, WorkerContext, class_of_http_status
from .kind import Login, LoginAnswer, LoginFacts, StoredLogin, WorkerKind, run_probe

if TYPE_CHECKING:
    pass

_OWN_SANDBOX_FLAGS = ("-s", "--sandbox", "--dangerously-bypass-approvals-and-sandbox", "--full-auto", "--yolo")
POLL_KEY = "background_terminal_max_timeout"
POLL_DEFAULT_MS = 300_000  # codex's own default: never lowered
_STATUS_RE = re.compile(r"\bstatus(?: code)?:?\s+(\d{3})\b", re.I)
_TRY_AGAIN_RE = re.compile(r"try again in (\d+(?:\.\d+)?)\s*(ms|s)\b", re.I)


class CodexAdapter(AICLIAdapter):
    name = "codex"
    co_author_name = "Codex"
    # The Responses API and a ChatGPT sign-in's (auth and its backend).
    network_hosts = ("api.openai.com", "auth.openai.com", "chatgpt.com")
    base_url_variables = ("OPENAI_BASE_URL",)
    co_author_email = "noreply@openai.com"
    cli = "codex"
    command_key = "orchestrator.codex_command"
    first_signal = signal.SIGINT
    resumes = True  # ``codex exec resume THREAD_ID``: the thread_id its ``thread.started`` event reported
    # CODEX_HOME: its config, sessions, logs and the auth it refreshes.
    path_settings = (PathSetting("CODEX_HOME", PathUse.CONFIG, default=".codex"),)
    # Its model endpoints: OPENAI_BASE_URL and a ``-c model_providers.X.base_url=`` in cli_args (the
    # base class), and each provider's ``base_url`` of the user's config.toml as the server found it at
    # its start (``config_endpoints``, workers/cli_configs.py), never as it is now: CODEX_HOME is a
    # folder its workers write, and a provider one planted there would open a host to the next worker.

    def config_files(self, env: Mapping[str, str]) -> list[Path]:
        return [_codex_home(env) / "config.toml"]

    def config_endpoints(self, texts: Mapping[Path, str]) -> list[ConfigEndpoint]:
        """Each ``[model_providers.NAME] base_url`` (profiles choose among them)."""
        found: list[ConfigEndpoint] = []
        for path, text in texts.items():
            providers = _toml(text).get("model_providers")
            for name, provider in providers.items() if isinstance(providers, dict) else ():
                url = provider.get("base_url") if isinstance(provider, dict) else None
                if isinstance(url, str) and url.strip():
                    found.append(ConfigEndpoint(url.strip(), f"model provider {name} in {path}"))
        return found

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        extra = cli_args_of(ctx)
        argv = [self.program(ctx), "exec", "--json", "-C", str(ctx.worker_dir), "--skip-git-repo-check"]
        if not has_flag(extra, *_OWN_SANDBOX_FLAGS):
            # Codex's own sandbox is a bubblewrap too, which cannot start inside the orchestrator's
            # ("setting up uid map: Operation not permitted"): there the orchestrator's confines it.
            if ctx.allowed_tools == ():
                # No tool (a planner, a judge): codex has no switch for none; in its read-only sandbox a
                # command writes nothing (and inside the orchestrator's it does not start at all).
                argv += ["--sandbox", "read-only"]
            elif ctx.sandboxed:
                argv += ["--sandbox", "danger-full-access"]
            else:
                argv += ["--sandbox", "workspace-write", "-c", "sandbox_workspace_write.network_access=true"]
                argv += ["-c", "sandbox_workspace_write.exclude_slash_tmp=true"]
        argv += ["-c", "shell_environment_policy.ignore_default_excludes=true"]
        if not any("allow_login_shell" in arg for arg in extra):
            # A login shell (bash -lc) re-reads the profile, which resets PATH: orchestrator-spawn
            # (first on the worker's PATH) would be "command not found" (measured).
            argv += ["-c", "allow_login_shell=false"]
        if ctx.time_left is not None and ctx.time_left > 0 and not _user_sets_poll_limit(extra, ctx.env):
            argv += ["-c", f"{POLL_KEY}={max(math.ceil(ctx.time_left) * 1000, POLL_DEFAULT_MS)}"]
        model = self.model_for(ctx.settings, ctx.model)
        if model:
            argv += ["-m", model]
        if ctx.resume_session:  # ``codex exec [its options] resume ID PROMPT``: the thread its last run started
            return [*argv, *extra, "resume", ctx.resume_session, "--", ctx.prompt]
        return [*argv, *extra, "--", ctx.prompt]

    def extra_env(self, ctx: WorkerContext) -> dict[str, str]:
        """Its sandbox helper's links last on PATH (the module's docstring says why), where the worker
        has a TMPDIR of its own and codex's binary is found."""
        tmp, path = ctx.env.get("TMPDIR"), ctx.env.get("PATH", os.defpath)
        binary = native_binary(self.program(ctx), path) if tmp and sys.platform.startswith("linux") else None
        if tmp is None or binary is None:
            return {}
        try:
            folder = helper_links(Path(tmp), binary)
        except OSError:
            return {}
        return {"PATH": os.pathsep.join((path, str(folder)))}

    def parse(self, text: str, exit_code: int | None, *, max_chars: int) -> ParsedResult:
        answer: str | None = None
        failure: str | None = None
        last_error: str | None = None
        tokens_in = tokens_out = cached = None
        turn_completed = False
        extra: dict[str, object] = {}
        for event in json_lines(text):
            kind = event.get("type")
            if kind is None and isinstance(event.get("msg"), dict):
                answer, tokens = _legacy(event["msg"], answer)
                if tokens is not None:
                    tokens_in, tokens_out = tokens
                if event["msg"].get("type") in ("error", "stream_error") and isinstance(event["msg"].get("message"), str):
                    last_error = event["msg"]["message"]
                continue
            if kind == "item.completed" and isinstance(event.get("item"), dict):
                item = event["item"]
                if item.get("type") in ("agent_message", "assistant_message") and isinstance(item.get("text"), str):
                    answer = item["text"]
            elif kind == "turn.completed" and isinstance(event.get("usage"), dict):
                usage = event["usage"]
                tokens_in = add(tokens_in, usage.get("input_tokens"))
                tokens_out = add(tokens_out, usage.get("output_tokens"))
                cached = add(cached, usage.get("cached_input_tokens"))  # part of input_tokens
                failure = None
                turn_completed = True
            elif kind == "turn.failed":
                error = event.get("error")
                failure = error.get("message") if isinstance(error, dict) else None
                failure = failure or "turn failed"
            elif kind == "error" and isinstance(event.get("message"), str):
                last_error = event["message"]
            elif kind == "thread.started" and event.get("thread_id"):
                extra["thread_id"] = event["thread_id"]
        fields = {"tokens_in": tokens_in, "tokens_out": tokens_out, "tokens_cache_read": cached, "extra": extra}
        if failure is not None:
            failure_class, retry_after = classify(failure)
            retryable = failure_class not in ("auth", "bad_request") and not is_auth_error(failure)
            return self.result(
                answer or "",
                max_chars,
                ok=False,
                error=f"codex: {failure}",
                retryable=retryable,
                failure_class=failure_class or ("auth" if not retryable else None),
                retry_after=retry_after,
                **fields,
            )
        if answer is None:
            why = "the turn completed without an agent message" if turn_completed else last_error
            parsed = self.no_result(text, exit_code, why=why)
            parsed.tokens_in, parsed.tokens_out, parsed.tokens_cache_read = tokens_in, tokens_out, cached
            parsed.extra = extra
            return parsed
        return self.result(answer, max_chars, **fields)

    def readable(self, line: str) -> str | None:
        """An event as a reader wants it: the agent's messages, each command (→ with its exit code
        and shortened output), file changes and tool calls, errors, and each turn's tokens (codex
        reports no cost); other lines as written."""
        event = transcript.event_of(line)
        if event is None or not isinstance(event.get("type"), str):
            return line
        kind = event["type"]
        if kind == "thread.started":
            return f"· session {event.get('thread_id', '?')}"
        if kind == "item.completed" and isinstance(event.get("item"), dict):
            return _item(event["item"])
        if kind == "turn.completed" and isinstance(event.get("usage"), dict):
            usage = event["usage"]
            return f"= turn completed: {transcript.cost_line(None, usage.get('input_tokens'), usage.get('output_tokens'))}"
        if kind == "turn.failed":
            error = event.get("error")
            return f"= turn failed: {error.get('message') if isinstance(error, dict) else 'no message'}"
        if kind == "error":
            return f"· error: {event.get('message', '')}"
        return None


def _item(item: dict[str, Any]) -> str | None:
    """A completed item of ``codex exec --json``, for the transcript (None: reasoning)."""
    kind = item.get("type")
    if kind in ("agent_message", "assistant_message"):
        return str(item.get("text", "")).strip() or None
    if kind == "command_execution":
        code = item.get("exit_code")
        said = f"← exit {code}" if code is not None else f"← {item.get('status', 'done')}"
        output = transcript.shortened(str(item.get("aggregated_output", "")))
        return f"→ {transcript.one_line(item.get('command', ''))}\n{said}\n{output}"
    if kind == "file_change" and isinstance(item.get("changes"), list):
        changes = [f"{c.get('kind', '?')} {c.get('path', '?')}" for c in item["changes"] if isinstance(c, dict)]
        return f"→ files: {', '.join(changes) or '(none)'}"
    if kind == "mcp_tool_call":
        return f"→ {item.get('server', '?')}.{item.get('tool', '?')} ({item.get('status', '?')})"
    if kind == "web_search":
        return f"→ web search: {transcript.one_line(item.get('query', ''))}"
    if kind == "error":
        return f"· error: {item.get('message', '')}"
    return None


def classify(message: str) -> tuple[str | None, float | None]:
    """(failure class, retry-after seconds) from the words of a codex failure."""
    found = _STATUS_RE.search(message)
    failure_class = class_of_http_status(int(found.group(1))) if found else None
    again = _TRY_AGAIN_RE.search(message)
    retry_after = None
    if again and failure_class == "transient":
        retry_after = float(again.group(1)) / (1000 if again.group(2).lower() == "ms" else 1)
    return failure_class, retry_after


HELPER_PREFIX = "codex-helpers-"  # a folder of the worker's TMPDIR
HELPER_NAMES = ("codex-linux-sandbox", "apply_patch", "applypatch")  # codex's own links (codex-rs/arg0)
# The npm package's launcher (bin/codex.js) runs the binary of its platform's package.
_TRIPLES = {"x86_64": "x86_64-unknown-linux-musl", "aarch64": "aarch64-unknown-linux-musl", "arm64": "aarch64-unknown-linux-musl"}
_PLATFORM_PACKAGES = {"x86_64-unknown-linux-musl": "codex-linux-x64", "aarch64-unknown-linux-musl": "codex-linux-arm64"}


def native_binary(program: str, path: str) -> Path | None:
    """Codex's own binary for ``program`` (a path, or a name looked up on ``path``): the program itself,
    or where it is the npm launcher (``@openai/codex/bin/codex.js``), the binary of the platform's
    package beside it (or inside it, or its ``vendor``), as the launcher finds it. None: not found."""
    found = program if os.sep in program else shutil.which(program, path=path)
    if not found:
        return None
    real = Path(found).resolve()
    if real.suffix != ".js":
        return real if real.is_file() else None
    triple = _TRIPLES.get(platform.machine())
    if triple is None:
        return None
    package = real.parents[1]  # .../@openai/codex
    platform_package = _PLATFORM_PACKAGES[triple]
    for vendor in (
        package.parent / platform_package / "vendor",
        package / "node_modules" / "@openai" / platform_package / "vendor",
        package / "vendor",
    ):
        binary = vendor / triple / "bin" / "codex"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary.resolve()
    return None


def helper_links(tmp: Path, binary: Path) -> Path:
    """A new folder in ``tmp`` holding codex's helper links (:data:`HELPER_NAMES`) to ``binary``.
    New each time (``mkdtemp``): ``tmp`` is the worker's TMPDIR, which an earlier attempt of it wrote,
    and nothing there is followed or written through (a planted ``codex-helpers`` link to a folder
    of the user's would have the server make links there)."""
    folder = Path(tempfile.mkdtemp(prefix=HELPER_PREFIX, dir=tmp))
    for name in HELPER_NAMES:
        (folder / name).symlink_to(binary)
    return folder


def _codex_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("CODEX_HOME") or home_of(env) / ".codex")


def _toml(text: str) -> dict[str, Any]:
    """``text`` read as TOML; {} for what is not (or on Python 3.10, which has no tomllib)."""
    try:
        doc = importlib.import_module("tomllib").loads(text)
    except (ImportError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _user_sets_poll_limit(cli_args: list[str], env: Mapping[str, str]) -> bool:
    """Whether the user chose background_terminal_max_timeout: in cli_args, or in the config.toml
    of the worker's CODEX_HOME (``env``: the worker's environment)."""
    if any(POLL_KEY in arg for arg in cli_args):
        return True
    home = Path(env.get("CODEX_HOME") or home_of(env) / ".codex")
    try:
        text = (home / "config.toml").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(rf"^\s*{POLL_KEY}\s*=", text, re.M) is not None


def _legacy(msg: dict, answer: str | None) -> tuple[str | None, tuple[int | None, int | None] | None]:
    """Events of codex before 0.44: ``{"id": ..., "msg": {"type": ...}}``."""
    kind = msg.get("type")
    if kind == "agent_message" and isinstance(msg.get("message"), str):
        return msg["message"], None
    if kind == "task_complete" and isinstance(msg.get("last_agent_message"), str):
        return msg["last_agent_message"], None
    if kind == "token_count":
        info = found if isinstance(found := msg.get("info"), dict) else msg
        usage = total if isinstance(total := info.get("total_token_usage"), dict) else info
        return answer, (add(None, usage.get("input_tokens")), add(None, usage.get("output_tokens")))
    return answer, None


def _login_status(path: str, env: Mapping[str, str]) -> LoginAnswer | None:
    """``codex login status`` (its stored login): logged in when it exits 0; else None (no answer)."""
    done = run_probe([path, "login", "status"], env)
    if not isinstance(done, str) and done.returncode == 0:
        return Login.YES, (done.stdout.strip().splitlines() or ["logged in"])[-1][:200]
    return None


def provider_key(env: Mapping[str, str]) -> tuple[str, str]:
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


KIND = WorkerKind(
    CodexAdapter,
    rank=40,
    auto=True,
    memory_peak_mb=300,  # a Node.js launcher and its agent binary: of the order of claude's measured tree
    cost_provider="openai",
    npm_package="@openai/codex",
    login=LoginFacts(
        variables=("OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_BASE_URL"),
        fix="run `codex login` (or `printenv OPENAI_API_KEY | codex login --with-api-key`)",
        stored=(StoredLogin("CODEX_HOME", ".codex", "auth.json"),),
        status=_login_status,
        provider_key=provider_key,
        doubted_keys="`codex login status` says not logged in",
    ),
)
