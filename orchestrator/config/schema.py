"""Every setting, once: one frozen dataclass per section, each field with its default, comment,
range or choices and secret flag (``setting(...)``). ``SCHEMA`` (the table the loader, the
template and the tests read) is derived from these classes, so a section read such as
``settings.workers.default_timeout`` is typed for mypy and described in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from . import choice, hooks, plugins, quality
from . import score_weights as scoring
from .keys import Key, Section, StrEnum, setting
from .prices import ANTHROPIC_PRICES, parse_prices

# Every worker kind name a setting may hold, read when checked: auto, the kinds the package ships
# (workers/adapters: one module each), the installed plugins' and the ones config.yaml declares
# under workers.kinds (config/plugins.py). The template lists the shipped ones.
WORKER_KINDS = plugins.KINDS
PLANNERS = ("heuristic", "ai", "auto")


class Isolation(StrEnum):
    """``git.isolation``: where workers work. A job's config holds worktree or folder: auto is
    resolved at submission (checkouts/isolated.py's resolve_isolation)."""

    AUTO = "auto"
    WORKTREE = "worktree"  # a git worktree and branch per worker
    FOLDER = "folder"  # a plain folder each


class MergeStrategy(StrEnum):
    """``git.merge_strategy``: how workers' branches are merged (git/merging.py)."""

    AUTO = "auto"  # merge what merges cleanly, stop at the first conflict
    THEIRS = "theirs"  # the later worker wins a conflicting hunk
    MANUAL = "manual"  # merge nothing; report what would conflict
    RESOLVE = "resolve"  # as auto, but a resolver worker resolves each conflict, re-gated (delivery/resolving.py)


class ApprovalMode(StrEnum):
    """``git.approval``: whether a root job waits for a person before it lands (delivery/approval.py)."""

    NONE = "none"
    BEFORE_MERGE = "before_merge"


class PullRequestForge(StrEnum):
    """The shipped values of ``git.pull_request``: where a root job's result branch is proposed
    (delivery/publishing.py); a plugin's forge is another (config/plugins.py's ``FORGES``)."""

    NONE = "none"
    GITHUB = "github"
    GITLAB = "gitlab"


# The server's variable holding a forge's token when git.forge_token_env is empty.
DEFAULT_TOKEN_ENV: dict[str, str] = {PullRequestForge.GITHUB: "GITHUB_TOKEN", PullRequestForge.GITLAB: "GITLAB_TOKEN"}


class OnFailure(StrEnum):
    """``tasks.on_failure``: what a task graph does with the dependents of a task that failed (engine/scheduling.py)."""

    SKIP = "skip"  # they end skipped
    CONTINUE = "continue"  # they run anyway
    STOP = "stop"  # the rest of the job is cancelled


class Ownership(StrEnum):
    """``tasks.ownership``: what a diff touching paths outside a task's ``owns`` gets (quality/ownership.py)."""

    ENFORCE = "enforce"  # a path another task owns blocks the merge
    STRICT = "strict"  # any path outside its own globs blocks it
    WARN = "warn"  # recorded, not blocked


class ExecutorKind(StrEnum):
    """``distributed.executor``: where worker attempts run."""

    LOCAL = "local"  # processes of this server
    RQ = "rq"  # queued on Redis for nodes (cluster/)


class SandboxMode(StrEnum):
    """``workers.sandbox``: on (refuse to run unconfined), off, or auto (on where the machine can)."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class SandboxBackend(StrEnum):
    """``workers.sandbox_backend``: what confines a sandboxed worker (process/sandbox.py); the setting's
    ``auto`` (bubblewrap where it starts, else Landlock; Seatbelt on macOS) is no backend of its own."""

    BUBBLEWRAP = "bubblewrap"
    LANDLOCK = "landlock"
    SEATBELT = "seatbelt"  # macOS's sandbox-exec (process/seatbelt.py), untested on this project's machines


class SandboxBackendChoice(StrEnum):
    """``workers.sandbox_backend`` as set: one backend, or ``auto``: process/backends.py chooses one."""

    AUTO = "auto"
    BUBBLEWRAP = SandboxBackend.BUBBLEWRAP.value
    LANDLOCK = SandboxBackend.LANDLOCK.value
    SEATBELT = SandboxBackend.SEATBELT.value


class SandboxNetwork(StrEnum):
    """``workers.sandbox_network``: no network of its own, out through the orchestrator's proxy to the
    hosts allowed (``allow``); the host's whole network (``host``); or none at all."""

    ALLOW = "allow"
    HOST = "host"
    NONE = "none"


def parse_sandbox_allow(value: Any, where: str) -> list[str]:
    """``workers.sandbox_allow``: host patterns, checked by the proxy's own parser (network/policy.py)."""
    from ..network.policy import Policy

    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f'{where} must be a list of host patterns such as "registry.npmjs.org" or "*.pypi.org"', key=where)
    try:
        Policy.parse(value)
    except ValueError as exc:  # its message names the setting and the entry already
        text = str(exc)
        raise ConfigError(text if text.startswith(where) else f"{where}: {text}", key=where) from None
    return [item.strip() for item in value]


def parse_driver_names(value: Any, where: str) -> list[str]:
    """``git.trusted_merge_drivers``: names of ``merge.<name>.driver`` entries, as a ``merge=<name>``
    attribute names them (no space, no ``=``, not empty)."""
    if not isinstance(value, list):
        raise ConfigError(
            f"{where} must be a list of merge driver names (the <name> of merge.<name>.driver in your git config), "
            "e.g. [npm-merge-driver]",
            key=where,
        )
    for i, item in enumerate(value):
        if not isinstance(item, str) or not re.fullmatch(r"[^\s=\x00]+", item):
            raise ConfigError(
                f"{where}[{i}]: {str(item)[:80]!r} is not a merge driver name: the <name> of a merge.<name>.driver "
                "in your git config, as a merge=<name> attribute names it (no space, no '=', not empty)",
                key=f"{where}[{i}]",
            )
    return list(dict.fromkeys(value))


def parse_port_range(text: str) -> tuple[int, int]:
    """``"LOW-HIGH"`` (git.port_range) as two ports, 1024 <= LOW <= HIGH <= 65535."""
    found = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", text)
    if found is None:
        raise ValueError("expected LOW-HIGH, two port numbers such as 41000-41999")
    low, high = int(found[1]), int(found[2])
    if not 1024 <= low <= high <= 65535:
        raise ValueError("expected 1024 <= LOW <= HIGH <= 65535, such as 41000-41999")
    return low, high


def check_public_url(url: str) -> None:
    if url and (not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url) or "@" in url):
        raise ValueError("expected empty or http(s)://HOST[:PORT][/PATH] (no user, query or fragment)")


def check_redis_url(url: str) -> None:
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected redis://[:PASSWORD@]HOST:PORT/DB, rediss://... (TLS) or unix:///PATH?db=N")


def check_queue_prefix(prefix: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", prefix):
        raise ValueError("expected 1 to 40 letters, digits, _ or -")


@dataclass(frozen=True)
class OrchestratorSettings(Section):
    execution_mode: str = setting(
        "native",
        "native: workers run directly (Linux, macOS; on Windows run the orchestrator inside WSL)",
        choices=("native",),
        refusal="wsl and windows are not supported: the orchestrator runs on Linux and macOS only (POSIX process groups "
        "and signals). On Windows, install and run the orchestrator inside WSL, where your CLIs live, with "
        "execution_mode: native.",
    )
    workspace_root: str = setting("./workspace", "where job folders go, relative to this folder")
    worker: str = setting(
        "auto",
        "worker kind: auto (first AI CLI on PATH, else simulated), simulated, command, claude, codex, gemini, aider, ollama, opencode, "
        "anthropic (the Messages API directly: see the anthropic section)",
        choices=WORKER_KINDS,
        refusal="A plugin's kind: install its package (pip install ...), or declare it under workers.kinds.<name> "
        "with adapter: package.module:KIND (docs/plugins.md).",
    )
    planner: str = setting(
        "auto",
        "how a request is split: heuristic (offline rules), ai (ask the AI CLI), auto (ai when an AI CLI is the worker, else heuristic)",
        choices=PLANNERS,
    )
    claude_command: str = setting("claude", "path or name of the claude CLI")
    codex_command: str = setting("codex", "path or name of the codex CLI")
    gemini_command: str = setting("gemini", "path or name of the gemini CLI")
    aider_command: str = setting("aider", "path or name of the aider CLI")
    ollama_command: str = setting("ollama", "path or name of the ollama CLI")
    opencode_command: str = setting("opencode", "path or name of the opencode CLI")
    command: list[str] = setting(
        [],
        "argv template for the 'command' kind; placeholders {prompt}, {prompt_file}, {worker_dir}, {task}, {model}, "
        "{feedback} (a continue round's feedback; empty in a first run)",
    )
    model: str = setting("", "model for the AI CLI (passed as its --model/-m); empty: the CLI's default")
    cli_args: list[str] = setting([], "extra arguments appended to the AI CLI's command line")
    claude_permission_mode: str = setting(
        "acceptEdits",
        "claude --permission-mode for headless runs",
        choices=("default", "acceptEdits", "auto", "dontAsk", "bypassPermissions", "plan"),
    )
    claude_allowed_tools: list[str] = setting(
        [
            "Read",
            "Write",
            "Edit",
            "Glob",
            "Grep",
            "Bash(orchestrator-spawn:*)",
            "Bash(python -m orchestrator spawn:*)",
            "Bash(python3 -m orchestrator spawn:*)",
            # The project's own test runners, so a worker that says it added a test has run it:
            # each runs the project's code in the worker's checkout, nothing else.
            "Bash(pytest:*)",
            "Bash(python -m pytest:*)",
            "Bash(python3 -m pytest:*)",
            "Bash(npm test:*)",
            "Bash(go test:*)",
            "Bash(cargo test:*)",
            "Bash(make test:*)",
        ],
        "claude --allowedTools: what a worker may use without asking (orchestrator-spawn, its older forms, the common test runners)",
    )
    claude_max_turns: int = setting(0, "claude --max-turns (0: the CLI's default)", min=0, max=10_000)
    ollama_model: str = setting("llama3.2", "model for the ollama kind (ollama run MODEL)")
    opencode_model: str = setting("", "provider/model for the opencode kind (-m); empty: its default")
    prompt_template: str | None = setting(None, "Jinja template file for AI worker prompts; null: the shipped one")
    planner_timeout: float = setting(
        120.0, "seconds the AI planner may take before the heuristic planner is used", min=1, max=3600
    )
    templates_dir: str | None = setting(None, "folder of Jinja templates that override the shipped report templates")
    max_request_chars: int = setting(20000, "longest request accepted, in characters", min=1, max=1_000_000)
    max_tasks: int = setting(100, "most explicit subtasks one request may list", min=1, max=10_000)
    retention_days: float = setting(
        0.0,
        "the server deletes finished job trees older than this many days, at start and hourly (0: keep all; see `prune`)",
        min=0,
        max=36500,
    )


@dataclass(frozen=True)
class WorkersSettings(Section):
    max_workers: int = setting(5, "default workers running at once per job", min=1, max=1024)
    max_workers_limit: int = setting(16, "most workers at once per job a request may ask for", min=1, max=1024)
    global_max_workers: int = setting(16, "most workers running at once across all jobs of this server", min=1, max=4096)
    default_timeout: float = setting(300.0, "seconds a worker attempt may run before the kill ladder", min=0.05, max=7 * 86400)
    max_timeout: float = setting(3600.0, "longest default_timeout a request may ask for, seconds", min=0.05, max=7 * 86400)
    max_retries: int = setting(2, "extra attempts after a failed one (exit code != 0)", min=0, max=20)
    retry_backoff: float = setting(
        1.0, "seconds before the first retry; doubles each time, plus up to 25% jitter", min=0, max=3600
    )
    retry_backoff_max: float = setting(60.0, "longest pause between attempts, seconds", min=0, max=86400)
    transient_retries: int = setting(
        5,
        "extra attempts after a rate limit, overload or 5xx the CLI reported; a budget of their own, not max_retries",
        min=0,
        max=100,
    )
    transient_backoff_max: float = setting(
        120.0,
        "longest pause before a transient retry, seconds (pauses start at 4 x retry_backoff and double; a longer retry-after from the service fails the worker)",
        min=0,
        max=86400,
    )
    retry_on_timeout: bool = setting(False, "retry an attempt that timed out (off: a timeout usually repeats)")
    kill_grace: float = setting(5.0, "seconds between SIGTERM and SIGKILL", min=0, max=3600)
    output_chars: int = setting(4000, "how much of a worker's output its record keeps as its result", min=0, max=1_000_000)
    quiet_after: float = setting(
        60.0,
        "a running worker whose log has not grown for this many seconds shows 'no output for N s' in status, watch and the dashboard (0: never)",
        min=0,
        max=86400,
    )
    max_memory_mb: int = setting(
        8192,
        "a worker's whole process tree may use this much memory (0: no cap); held by the kernel in a cgroup where the machine allows, else sampled",
        min=0,
        max=1 << 30,
    )
    memory_reserve_mb: int = setting(
        1024,
        "a worker starts only when its kind's measured peak RSS fits in free memory less this much; else it waits (0: off)",
        min=0,
        max=1 << 30,
    )
    max_processes: int = setting(
        512,
        "processes a worker's tree may have at once (0: no cap); in a cgroup, pids.max, which counts threads too",
        min=0,
        max=1 << 22,
    )
    max_log_mb: int = setting(
        200,
        "a worker's log may grow to this size; then it is stopped (0: no cap), within one monitor_interval of writing",
        min=0,
        max=1 << 30,
    )
    max_disk_mb: int = setting(
        4096,
        "a worker's folder, its worktree's git dir, its TMPDIR and what it adds to the object store may hold this much "
        "(0: no cap), checked every monitor_interval (less often where walking the folders would take over a tenth of a CPU); "
        "with max_log_mb, no file may pass the larger of the two",
        min=0,
        max=1 << 30,
    )
    monitor_interval: float = setting(0.25, "seconds between resource samples of running workers", min=0.05, max=60)
    sandbox: SandboxMode = setting(
        SandboxMode.AUTO,
        "confine each worker (and the gates, scoring and git.setup that run its code) with bubblewrap: it writes only "
        "its checkout, its TMPDIR, its worktree's git data and its CLI's state; auto: where the machine can, else "
        "unconfined with a note; on: refuse to run unconfined",
        choices=SandboxMode,
    )
    sandbox_backend: SandboxBackendChoice = setting(
        SandboxBackendChoice.AUTO,
        "what confines sandboxed workers: bubblewrap (a mount view, a PID namespace), landlock (the kernel's access "
        "rules, where bubblewrap cannot start: it cannot hide a readable file), or auto: "
        "bubblewrap where it starts, else landlock (docs/sandbox.md)",
        choices=SandboxBackendChoice,
    )
    sandbox_writable: list[str] = setting([], "more paths a sandboxed worker may write (relative: to this folder)")
    sandbox_hidden: list[str] = setting(
        ["config.yaml"], "paths a sandboxed worker sees empty (relative: to this folder); the API key lives in config.yaml"
    )
    sandbox_env_folders: list[str] = setting(
        [".venv", "venv", ".tox", "node_modules"],
        "folders at the top of your repository a sandboxed worker sees as you have them (read-only) where its checkout "
        "has none and git.setup is empty: the project's environment, which runs the worker's code (without a sandbox too, for a relative program such as .venv/bin/python)",
    )
    sandbox_network: SandboxNetwork = setting(
        SandboxNetwork.ALLOW,
        "a sandboxed worker's network: allow (none of its own; it reaches this server's API, its kind's model API and "
        "sandbox_allow's hosts through the orchestrator's proxy, which records what it refused), host (everything "
        "your machine reaches) or none (nothing, this server included)",
        choices=SandboxNetwork,
    )
    sandbox_allow: list[str] = setting(
        [],
        "hosts a sandboxed worker may reach with sandbox_network: allow, besides its kind's model API and this server: "
        '"registry.npmjs.org", "*.pypi.org" (subdomains), "github.com:443", "*" (any public host); "!host" denies and '
        "wins; private, loopback and link-local addresses only when listed by name or address. For git.setup and gates, "
        "the usual registries: registry.npmjs.org, pypi.org, files.pythonhosted.org, proxy.golang.org, sum.golang.org, "
        "index.crates.io, static.crates.io, github.com, codeload.github.com, objects.githubusercontent.com",
        parse=parse_sandbox_allow,
    )
    sandbox_unix_sockets: bool = setting(
        False,
        "a sandboxed worker may make Unix sockets (a test suite's own servers); false: socket(AF_UNIX) fails, "
        "so no host socket it can see (Docker's, ssh-agent's, the session bus) is reachable",
    )
    max_cost_usd: float = setting(
        0.0,
        "per root tree: once AI workers have reported or been estimated this much cost, no new worker starts (0: no budget)",
        min=0,
        max=1_000_000,
    )
    prices: dict[str, dict[str, float]] = setting(
        {},
        "USD per million input, output, cache_write, cache_read tokens, by model name or prefix (longest wins), for a "
        "CLI that reports tokens but no cost; a model missing here is looked up in the bundled genai-prices table",
        parse=parse_prices,
    )
    env: dict[str, str] = setting(
        {}, 'environment variables every worker gets, NAME: "value" (values are never logged or shown)', secret=True
    )
    inherit_env: bool = setting(
        True, "workers inherit the server's whole environment; false: only env_passthrough, env and the orchestrator's own"
    )
    kinds: dict[str, plugins.KindSettings] = setting({}, plugins.KINDS_HELP, parse=plugins.parse_kinds)
    env_passthrough: list[str] = setting(
        ["HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TERM", "SHELL"],
        "the server's variables a worker gets when inherit_env is false (add your CLI's API key variable); the host's "
        "agents and buses (SSH_AUTH_SOCK, GPG_AGENT_INFO, DBUS_SESSION_BUS_ADDRESS, DOCKER_HOST, DISPLAY, "
        "XDG_RUNTIME_DIR, ...) a worker gets only when named here",
    )


@dataclass(frozen=True)
class RecursionSettings(Section):
    enable: bool = setting(True, "let workers start child jobs")
    # The default of a job's max_recursion_depth (its name in config.yaml since the first release).
    max_depth: int = setting(3, "default deepest depth a child job may have (root = 0)", min=0, max=32)
    max_depth_limit: int = setting(5, "deepest max_recursion_depth a request may ask for", min=0, max=32)
    max_children_per_worker: int = setting(3, "child jobs one worker may start", min=0, max=1000)
    max_workers_per_root: int = setting(100, "workers in one root job's whole tree", min=1, max=100_000)
    tree_deadline: float = setting(
        21600.0, "seconds a root job's whole tree may run; then it is cancelled (0: no deadline)", min=0, max=30 * 86400
    )


@dataclass(frozen=True)
class ApiSettings(Section):
    host: str = setting("127.0.0.1", "address to bind; keep 127.0.0.1 unless you know why")
    port: int = setting(8000, "port to listen on (0 picks a free one)", min=0, max=65535)
    api_key: str = setting("", "key clients send as X-API-Key; install.sh generates one", secret=True)
    threads: int = setting(24, "waitress request threads (long-polls and streams hold one each)", min=2, max=512)
    max_body_bytes: int = setting(1_048_576, "largest request body accepted", min=1024, max=1 << 30)
    long_poll_max: float = setting(60.0, "longest a wait or stream request is held, seconds", min=1, max=3600)
    max_streams_per_key: int = setting(
        6,
        "open streams and long-polls (events, progress, log follow, wait, lock waits) one credential, the admin "
        "key or one worker's, may hold at once; more get 429",
        min=1,
        max=10_000,
    )
    reserved_threads: int = setting(
        4,
        "threads kept for short requests (/health, status, lists): streams and long-polls together hold at most "
        "api.threads less these",
        min=1,
        max=511,
    )
    allowed_hosts: list[str] = setting(
        [], "Host header names accepted besides 127.0.0.1, localhost, ::1 and api.host (DNS-rebinding guard)"
    )
    rate_limit_worker: float = setting(20.0, "requests per second one worker credential may make (0: no limit)", min=0, max=1e6)
    rate_limit_admin: float = setting(0.0, "requests per second the admin key may make (0: no limit)", min=0, max=1e6)
    rate_burst: int = setting(100, "requests a credential may make at once before its rate applies", min=1, max=1_000_000)
    rate_limit_failed_auth: float = setting(10.0, "requests per second one address may make with a wrong key", min=0, max=1e6)
    public_url: str = setting(
        "",
        "the API's address as workers on other machines and the links the server sends out (webhooks, approval) "
        "reach it, e.g. https://orchestrator.internal:8443; its host passes the Host check (empty: the address the "
        "server listens on)",
        check=check_public_url,
    )
    allow_remote: bool = setting(
        False, "let api.host be an address other machines reach (rq nodes); put TLS in front of it (README: Cluster)"
    )

    def local_url(self) -> str:
        """The configured address (host, port) as this machine reaches it: what a server of this folder
        listens on by default (a running one may have moved: cli/scripts.py's ``folder_url``)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::", "localhost") else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class LoggingSettings(Section):
    level: str = setting("INFO", "server log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    enable_structured: bool = setting(False, "write the server log and each job tree's logs/orchestrator.log as JSON lines")
    log_dir: str = setting("./logs", "folder for the server's own log, relative to this folder")


@dataclass(frozen=True)
class SimulatedSettings(Section):
    duration: float = setting(0.3, "seconds each simulated worker takes", min=0, max=3600)
    fail_matching: str = setting("", "regex: simulated workers whose subtask matches it fail")
    fail_attempts: int = setting(0, "every simulated worker fails its first N attempts (to show retries)", min=0, max=100)
    recurse: bool = setting(True, "simulated workers with a compound subtask start a child job when depth allows")


@dataclass(frozen=True)
class GitSettings(Section):
    isolation: Isolation = setting(
        Isolation.AUTO,
        "where workers work: worktree (a git worktree and branch per worker, in the repository holding this folder), "
        "folder (a plain folder each), auto (worktree when this folder is in a git work tree and git is installed, else folder)",
        choices=Isolation,
    )
    repo: str = setting("", "the repository for worktrees, relative to this folder (empty: the one holding this folder)")
    branch_prefix: str = setting("orchestrator/", "workers' branches are <branch_prefix><root job id>/<worker>")
    base: str = setting("HEAD", "the branch, tag or commit a root job's workers start from")
    include_uncommitted: bool = setting(
        False, "start from a snapshot of the uncommitted changes to tracked files (your index, files and stash stay as they are)"
    )
    merge_strategy: MergeStrategy = setting(
        MergeStrategy.AUTO,
        "how a job's workers' branches are merged into its result branch (a child job's: into its parent worker's branch): "
        "auto (merge what merges cleanly, stop at the first conflict), theirs (the later worker wins a conflicting hunk), "
        "manual (merge nothing; report what would conflict), resolve (as auto, but a resolver worker resolves each "
        "conflict in a worktree with the merge in progress; kept only when no conflict marker remains and the required "
        "gates pass on the merged tree, else that worker's branch is left out)",
        choices=MergeStrategy,
    )
    resolver_kind: str = setting(
        "",
        "merge_strategy resolve: the worker kind that resolves a conflict (empty: the kind of the worker whose branch "
        "conflicted)",
        choices=plugins.RESOLVER_KINDS,
    )
    resolver_model: str = setting("", "merge_strategy resolve: the resolver's model (empty: orchestrator.model)")
    resolver_command: list[str] = setting(
        [],
        "merge_strategy resolve with resolver_kind command: its argv, with orchestrator.command's placeholders "
        "({prompt}, {prompt_file}, {worker_dir}: the worktree with the merge in progress, {task}, {model}); "
        "empty: orchestrator.command",
    )
    resolver_timeout: float = setting(900.0, "merge_strategy resolve: seconds one resolver attempt may take", min=1, max=86400)
    resolver_retries: int = setting(
        1,
        "merge_strategy resolve: attempts after the first when the resolver fails, leaves a conflict marker or a "
        "required gate fails (each starts from the merge again, told why the last was refused)",
        min=0,
        max=10,
    )
    trusted_merge_drivers: list[str] = setting(
        [],
        "merge drivers of your git config (the <name> of merge.<name>.driver) that may merge workers' files: each runs "
        "in the workers' sandbox with their caps on the three versions of a path only, never in your checkout; a "
        "driver not listed here never runs, its path is a conflict 'merge driver <name> not run' (docs/sandbox.md)",
        parse=parse_driver_names,
    )
    merge_driver_timeout: float = setting(
        120.0, "seconds a trusted merge driver may take on one path (past it: that path is a conflict)", min=1, max=86400
    )
    merge_into: str = setting(
        "", "a branch of yours to fast-forward to a root job's result (empty: none; only that ref ever moves)"
    )
    push: str = setting(
        "",
        "a remote of the repository to push a root job's result branch to when it ends and after each merge, e.g. "
        "origin (empty: none); a failed push is recorded, never the job's failure (./orchestrator.sh publish JOB retries)",
    )
    pull_request: str = setting(
        PullRequestForge.NONE.value,
        "open a draft pull request from the pushed result branch, updated on each merge: none, github, gitlab, an "
        "installed plugin's forge or package.module:Forge (docs/plugins.md; a plugin's needs forge_token_env) "
        "(needs push, forge_repo and the token in forge_token_env)",
        choices=plugins.FORGES,
    )
    forge_api_url: str = setting(
        "", "the forge's API (empty: https://api.github.com for github, https://gitlab.com/api/v4 for gitlab)"
    )
    forge_repo: str = setting("", "the repository on the forge: OWNER/NAME on GitHub, the project's path or id on GitLab")
    forge_token_env: str = setting(
        "",
        "the environment variable of the server holding the forge token (empty: GITHUB_TOKEN or GITLAB_TOKEN); "
        "the token itself is never in config, records, logs or reports, and workers do not inherit that variable "
        "unless workers.env_passthrough names it",
    )
    pull_request_base: str = setting(
        "", "the branch the pull request targets (empty: merge_into, else the branch checked out in the repository)"
    )
    check_rounds: int = setting(
        2,
        "after the pull request: how many times a failed check of it goes back, as a continue round with the "
        "check's log tail, to the worker whose change broke it (named by the log, else found by bisection), or a "
        "writer's review comment on a line to the worker git blame names, then is pushed again (0: the checks "
        "are not watched); needs pull_request",
        min=0,
        max=20,
    )
    checks_poll_interval: float = setting(
        30.0, "seconds between two readings of the pull request's checks while they are watched", min=0.05, max=3600
    )
    checks_timeout: float = setting(
        3600.0,
        "seconds a pushed commit's checks may stay unfinished (or absent) before the watch ends timed_out",
        min=0.1,
        max=7 * 86400,
    )
    checks_appear_within: float = setting(
        600.0,
        "seconds after a push in which a first check must be reported; none by then ends the watch none (a "
        "repository whose forge runs no CI: nothing to wait for)",
        min=0.1,
        max=7 * 86400,
    )
    check_bisect_max: int = setting(
        8,
        "after the pull request: when a failed check's log names no worker's files and the pull request holds "
        "several workers' work, at most this many candidate commits (the base with a subset of the work) are "
        "pushed to side branches under the job's prefix for the forge's CI to find the breaker by bisection "
        "(0: no bisection, each worker in turn)",
        min=0,
        max=64,
    )
    keep_worktrees_days: float = setting(
        7.0,
        "a finished job's worktrees are removed this many days after it ended, or once its result is in merge_into "
        "(its branches stay until the job is deleted; 0: no age limit; see `prune`)",
        min=0,
        max=36500,
    )
    checkouts_root: str = setting(
        "",
        "where a worker's worktree lives when its sandbox shows no project view (Landlock, Seatbelt): outside "
        "this folder, so tools that look upwards for their configuration find your project's, never this folder's "
        "(the workspace's depth_<n>/worker_<k> is a link to it); empty: your state folder, "
        "$XDG_STATE_HOME/orchestrator/checkouts or ~/.local/state/orchestrator/checkouts. Must be yours, no folder "
        "on the way writable by another (else the worker is refused, saying which)",
    )
    remove_worker_worktrees: bool = setting(
        False,
        "remove each worker's worktree as soon as its work is committed on its branch (not one with child jobs or "
        "a candidate's: they keep it as before): the repository then holds only the running workers' worktrees, so "
        "each new one stays cheap to add; the worker's folder is gone, its branch, diff and results stay",
    )
    approval: ApprovalMode = setting(
        ApprovalMode.NONE,
        "none (a root job lands its result when its workers are done), before_merge (it stops in the waiting state, "
        "nothing merged, until POST /api/v1/jobs/<id>/approve or /reject; a root job's only)",
        choices=ApprovalMode,
    )
    approval_link_ttl: float = setting(
        259200.0, "seconds a signed approve/reject link (in a webhook's payload) stays valid", min=60, max=2592000
    )
    setup: list[str] = setting(
        [],
        "argv run once in each new worktree before its first attempt, with ORCHESTRATOR_PORT (e.g. [npm, ci]); "
        "a failure fails the worker; empty: none",
    )
    setup_timeout: float = setting(
        600.0, "seconds the setup command may take before the worker fails as setup failed", min=1, max=86400
    )
    teardown: list[str] = setting(
        [], "argv run in a worktree when its worker is cleaned up, whatever its outcome (a failure is only logged); empty: none"
    )
    port_range: str = setting(
        "41000-41999",
        "ports reserved one per worktree worker, given to setup and the worker as ORCHESTRATOR_PORT (LOW-HIGH)",
        check=parse_port_range,
    )


@dataclass(frozen=True)
class TasksSettings(Section):
    gates: list[quality.Gate] = setting(
        [],
        "quality gates run in a worker's worktree on the commit to be merged, after its last attempt: "
        "[{name: tests, run: [pytest, -q], required: true, timeout: 600, roles: [], when_changed: []}]; "
        "also env: {PYTHONPATH: src}, cwd: backend (a folder of the checkout), shell: true with run as one "
        "command line for /bin/sh, allow_no_tests: true (else a test run that ran no test fails); "
        "a required gate that fails, runs no tests, times out or cannot start blocks the merge",
        parse=quality.parse_gates,
    )
    gates_retry: int = setting(
        0,
        "extra attempts a worker gets after a failed gate, with the gate's output added to its prompt; "
        "also the continue rounds a worker whose work breaks the merged result is sent back for",
        min=0,
        max=20,
    )
    on_failure: OnFailure = setting(
        OnFailure.SKIP,
        "when a task fails: skip (its dependents end skipped), continue (they run anyway), stop (cancel the rest of the job)",
        choices=OnFailure,
    )
    ownership: Ownership = setting(
        Ownership.ENFORCE,
        "tasks' owns globs: enforce (a diff touching a path another task owns blocks the merge), strict (any path "
        "outside its own globs blocks it), warn (recorded, not blocked)",
        choices=Ownership,
    )
    roles: dict[str, quality.Role] = setting(
        {},
        "roles beside the shipped frontend, backend, testing, docs, infrastructure and integration: "
        "name: {preamble, worker, model, allowed_tools, gates}; a shipped role's name changes only the keys given",
        parse=functools.partial(quality.parse_roles, kinds=WORKER_KINDS),
    )
    steps: list[str] = setting(
        [],
        "after-attempt steps of your own, as package.module:StepClass (docs/plugins.md), run after the gates on each "
        "successful attempt, with those installed as entry points (orchestrator.steps)",
        parse=plugins.parse_dotted_paths,
    )
    lock_timeout: float = setting(
        30.0, "seconds a path lock request waits for a holder to let go before 409 (shared-folder jobs)", min=0, max=3600
    )
    lock_lease: float = setting(300.0, "seconds a path lock lasts unless renewed or released", min=1, max=86400)


@dataclass(frozen=True)
class CandidatesSettings(Section):
    candidates: list[choice.Candidate] = setting(
        [],
        "run each subtask as several candidates, each in its own worktree from the same base: "
        "[claude, {kind: codex, model: o3, timeout: 600}]; the selected one is merged. Empty: one worker per subtask",
        parse=functools.partial(choice.parse_candidates, kinds=WORKER_KINDS),
    )
    attempts: int = setting(
        1,
        "with candidates empty: run each subtask this many times on the job's worker kind, as candidates",
        min=1,
        max=choice.MAX_CANDIDATES,
    )
    select: choice.Select = setting(
        choice.Select.BEST,
        "how a subtask's winner is chosen among the candidates that passed their gates: best (weighted score), "
        "cheapest, fastest, first_passing (cancel the rest once one passes), judge (an AI compares them two at a time)",
        choices=choice.Select,
    )
    judge: choice.Judge = setting(
        {},
        "the AI kind that judges for select: judge: {kind: claude, model: sonnet, timeout: 300}",
        parse=functools.partial(choice.parse_judge, kinds=WORKER_KINDS),
    )
    judge_diff_bytes: int = setting(20000, "bytes of each candidate's diff shown to the judge", min=1000, max=1_000_000)


@dataclass(frozen=True)
class ScoringSettings(Section):
    command: list[str] = setting(
        [],
        "select: best runs this argv (never a shell) in each eligible candidate's worktree and reads the JSON object "
        "it prints, e.g. {tests_passed: 12, tests_failed: 0, coverage: 81.5, lint_warnings: 3}; empty: no command",
    )
    timeout: float = setting(120.0, "seconds the scoring command may run per candidate before it is killed", min=1, max=3600)
    weights: dict[str, float] = setting(
        dict(scoring.DEFAULT_WEIGHTS),
        "points per measure for select: best (positive: higher is better; negative: lower is better; 0: recorded only); "
        "keys left out keep these defaults; a scoring command's other keys score 0 unless named here. "
        "Ties break by higher score, then lower cost, then earlier end, then worker name",
        parse=scoring.parse_weights,
    )


@dataclass(frozen=True)
class AnthropicSettings(Section):
    model: str = setting(
        "claude-sonnet-5-5", "model of the anthropic kind when neither the worker's role nor orchestrator.model names one"
    )
    max_tokens: int = setting(8192, "max_tokens of each Messages API request (one turn's answer)", min=1, max=1_000_000)
    max_turns: int = setting(50, "model turns (requests) one attempt may make before it fails", min=1, max=10_000)
    command_timeout: float = setting(300.0, "seconds one run_command tool call may run", min=1, max=86400)
    tool_output_chars: int = setting(30000, "characters of one tool result sent back to the model", min=1000, max=10_000_000)
    max_retries: int = setting(
        2, "the SDK's own retries of a failed request (429, 529, 5xx; it honours retry-after)", min=0, max=10
    )
    prices: dict[str, dict[str, float]] = setting(
        ANTHROPIC_PRICES,
        "USD per million input, output, cache_write, cache_read tokens, by model name or prefix (longest wins); "
        "a model missing here has an unknown cost",
        parse=parse_prices,
    )


def check_database_url(url: str) -> None:
    """``database.url``: empty (SQLite in the workspace) or a PostgreSQL URL. Says nothing of the
    value itself: it may hold a password."""
    if url and not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("expected empty (the SQLite index in the workspace) or postgresql://USER:PASSWORD@HOST:PORT/DBNAME")


@dataclass(frozen=True)
class DatabaseSettings(Section):
    url: str = setting(
        "",
        "where the job index lives (task history for listing, paging and statistics; the workspace stays the "
        "truth and the index is rebuilt from it): empty for SQLite in <workspace>/.index/jobs.sqlite3, or "
        "postgresql://USER:PASSWORD@HOST:PORT/DBNAME (one database per workspace)",
        secret=True,
        check=check_database_url,
    )


@dataclass(frozen=True)
class WebhooksSettings(Section):  # what each does: config/hooks.py's HELP
    endpoints: list[hooks.Endpoint] = setting([], hooks.HELP["endpoints"], parse=hooks.parse_endpoints, masked=("secret",))
    max_attempts: int = setting(8, hooks.HELP["max_attempts"], min=1, max=100)
    backoff: float = setting(1.0, hooks.HELP["backoff"], min=0.01, max=3600)
    backoff_max: float = setting(300.0, hooks.HELP["backoff_max"], min=0.01, max=86400)
    allowed_callback_hosts: list[str] = setting([], hooks.HELP["allowed_callback_hosts"], parse=hooks.parse_callback_hosts)
    callback_secret: str = setting("", hooks.HELP["callback_secret"], secret=True)
    callback_url: str = setting("", hooks.HELP["callback_url"])
    keep_deliveries: int = setting(1000, hooks.HELP["keep_deliveries"], min=10, max=1_000_000)


@dataclass(frozen=True)
class DistributedSettings(Section):
    executor: ExecutorKind = setting(
        ExecutorKind.LOCAL,
        "where worker attempts run: local (processes of this server) or rq (queued on Redis for "
        "`python -m orchestrator node` processes on any machine that mounts the workspace)",
        choices=ExecutorKind,
    )
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        "the Redis that carries attempts, leases and nodes (executor rq): redis://[:PASSWORD@]HOST:PORT/DB, rediss:// for TLS",
        secret=True,
        check=check_redis_url,
    )
    queue_prefix: str = setting(
        "orchestrator", "names of this server's queues and keys in Redis (one server per prefix)", check=check_queue_prefix
    )
    lease: float = setting(
        30.0,
        "seconds an attempt's lease lasts; its node renews it every third of that. An attempt whose lease "
        "expires is lost and retried on another node",
        min=3,
        max=3600,
    )
    verify_key_file: str = setting(
        "",
        "on a node: the server's public key that every attempt must be signed with (the node runs nothing "
        "else); empty: <workspace>/.keys/cluster-ed25519.pub, which the server writes at its start. Relative "
        "to this folder",
    )


# The sections in config.yaml's order; ``Settings`` has one field of each (config/settings.py).
SECTIONS: dict[str, type[Section]] = {
    "orchestrator": OrchestratorSettings,
    "workers": WorkersSettings,
    "recursion": RecursionSettings,
    "api": ApiSettings,
    "logging": LoggingSettings,
    "simulated": SimulatedSettings,
    "git": GitSettings,
    "tasks": TasksSettings,
    "candidates": CandidatesSettings,
    "scoring": ScoringSettings,
    "anthropic": AnthropicSettings,
    "database": DatabaseSettings,
    "webhooks": WebhooksSettings,
    "distributed": DistributedSettings,
}
# A field's annotation (a string: annotations are postponed) -> (the value's type, whether null is allowed).
_TYPES: dict[str, tuple[type, bool]] = {
    "int": (int, False),
    "float": (float, False),
    "bool": (bool, False),
    "str": (str, False),
    "str | None": (str, True),
    "list[str]": (list, False),
    "dict[str, str]": (dict, False),
    "dict[str, plugins.KindSettings]": (dict, False),
    # Structured values, each checked by the Key's parse into its config/ shape.
    "list[quality.Gate]": (list, False),
    "dict[str, quality.Role]": (dict, False),
    "list[choice.Candidate]": (list, False),
    "choice.Judge": (dict, False),
    "dict[str, float]": (dict, False),
    "dict[str, dict[str, float]]": (dict, False),
    "list[hooks.Endpoint]": (list, False),
}


def _keys(section: type[Section]) -> dict[str, Key]:
    keys = {}
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        kind: type
        enum = f.metadata.get("enum")
        if enum is not None and str(f.type).rpartition(".")[2] == enum.__name__:  # a closed choice: a str
            kind, nullable = str, False
        elif str(f.type) not in _TYPES:
            raise TypeError(f"{section.__name__}.{f.name}: annotate a setting with one of {', '.join(_TYPES)}, not {f.type}")
        else:
            kind, nullable = _TYPES[str(f.type)]
        factory = f.default_factory
        default = f.default if factory is dataclasses.MISSING else factory()
        keys[f.name] = Key(kind, default, nullable=nullable, **f.metadata)
    return keys


# Every setting, by section. config.template.yaml is checked against this table by the tests.
SCHEMA: dict[str, dict[str, Key]] = {name: _keys(cls) for name, cls in SECTIONS.items()}


TEMPLATE_HEADER = """\
# orchestrator settings: every key, its default and what it does.
# Copy to config.yaml and change what you need (install.sh does the copy and sets api.api_key).
# Precedence: these defaults < config.yaml < environment (ORCHESTRATOR__SECTION__KEY=value)
# < a job's own "config" (which may lower, never raise, the limits below).
# Generated from orchestrator/config/schema.py: python -m orchestrator config --template
"""


def render_template() -> str:
    """config.template.yaml, from SCHEMA: every key with its default and its comment."""
    lines = [TEMPLATE_HEADER]
    for section, keys in SCHEMA.items():
        lines.append(f"{section}:")
        for name, spec in keys.items():
            allowed = f" ({spec.allowed()})" if spec.choices else f" {spec.allowed()}" if spec.allowed() else ""
            lines.append(f"  {name}: {spec.shown_default()}  # {spec.help}{allowed}")
        lines.append("")
    return "\n".join(lines)
