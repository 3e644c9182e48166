"""``orchestrator doctor``: what this machine and folder need before real AI workers run, each
problem with the line that fixes it, and a working configuration for the CLIs found
(``--write`` merges it into config.yaml, keeping its comments: config/edit.py).

Every check asks the code that decides at run time (the adapters' CLI lookup, repository.find_host
for ``isolation: auto``, merging.require_git, backends.probe, sandbox.decide, cgroups.hierarchies,
ports.bind_error), so doctor cannot disagree with what a job will do. Nothing here calls a model.

Exit codes: 0 nothing blocks real workers; 1 something does (each with its fix); 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..process import userns
from ..workers.adapters import get_adapter, load_plugins, program_of, resolve_kind
from ..workers.clis import LOCAL_BIN, FoundCLI, Login, find_clis, install_command, login_facts, login_kinds

if TYPE_CHECKING:
    from ..config import Settings
    from ..process.sandbox import Backend, Support

MIN_PYTHON = (3, 10)
# Test commands a repository shows by its files, as a gate's argv (the first found wins).
TEST_COMMANDS: tuple[tuple[str, list[str]], ...] = (
    ("pyproject.toml", ["pytest", "-q"]),
    ("pytest.ini", ["pytest", "-q"]),
    ("go.mod", ["go", "test", "./..."]),
    ("Cargo.toml", ["cargo", "test"]),
    ("package.json", ["npm", "test"]),
)
NPM_NO_TESTS = 'echo "Error: no test specified" && exit 1'  # what `npm init` writes


class Level(str, Enum):
    OK = "ok"
    NOTE = "note"  # works, with something worth knowing
    PROBLEM = "problem"  # blocks real workers: its fix says how to remove it


@dataclass(frozen=True)
class Finding:
    topic: str
    level: Level
    text: str
    fix: str = ""


@dataclass
class Report:
    """What doctor found, and the configuration it proposes (``changes``, values included: they
    are written, never printed; ``shown`` is the same with the copied variables' values hidden)."""

    config_path: Path
    findings: list[Finding] = field(default_factory=list)
    clis: list[FoundCLI] = field(default_factory=list)
    worker: str = ""  # the AI CLI kind checked and proposed ("" when none)
    runs: str = ""  # the kind a job started now runs: orchestrator.worker, ``auto`` resolved as a job resolves it
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    copied: list[str] = field(default_factory=list)  # variables whose values go into workers.env
    written: bool = False
    network: list[str] = field(default_factory=list)  # the proxy's effective list for the chosen kind
    apparmor: userns.Plan | None = None  # the AppArmor profile that lets bwrap start, where one is needed

    def add(self, topic: str, level: Level, text: str, fix: str = "") -> None:
        self.findings.append(Finding(topic, level, text, fix))

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level is Level.PROBLEM]

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    @property
    def shown(self) -> dict[str, dict[str, Any]]:
        shown = {section: dict(keys) for section, keys in self.changes.items()}
        env = shown.get("workers", {}).get("env")
        if env is not None:
            shown["workers"]["env"] = {k: "(from your environment, not shown)" if k in self.copied else "(set)" for k in env}
        return shown

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "exit_code": self.exit_code,
            "config": str(self.config_path),
            "worker": self.worker,
            "runs": self.runs,
            "clis": [cli.to_dict() for cli in self.clis],
            "checks": [{**asdict(f), "level": f.level.value} for f in self.findings],
            "suggested": self.shown,
            "written": self.written,
            "network": self.network,
            "apparmor_fix": _plan_dict(self.apparmor),
        }


def _plan_dict(plan: userns.Plan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    fix = plan.fix
    return {
        "verdict": plan.verdict.value,
        "reason": plan.reason,
        "path": fix.shown if fix else None,
        "content": fix.content if fix else None,
        "command": list(fix.command) if fix else None,
    }


def examine(
    settings: Settings,
    config_path: Path,
    environ: Mapping[str, str] | None = None,
    worker: str | None = None,
    machine: userns.Host | None = None,
) -> Report:
    """Every check, and the configuration to propose. ``worker``: the AI CLI kind to propose
    (``doctor --worker``), else the configured one, else the first logged-in CLI found; ``machine``: where
    the kernel's and a container's facts are read (a test's temporary root; default ``/``)."""
    from ..process.sandbox import Backend
    from ..workers.environment import base_env

    report = Report(config_path)
    _check_plugins(report, settings)  # first: a plugin kind is then in every table below
    env = base_env(settings)
    commands = {kind: program_of(kind, settings) for kind in login_kinds()}
    report.clis = find_clis(commands, settings.base_dir, env)
    _check_clis(report, settings, env, worker)
    _check_python(report)
    host = _check_git(report, settings)
    backend = _check_sandbox(report, settings, userns.Host() if machine is None else machine)
    sandboxed = backend is not None
    if sandboxed:
        _check_network(report, settings, env)
    project = _check_project(report, settings, host, sandboxed, view=backend is Backend.BUBBLEWRAP)
    _check_cgroups(report)
    _check_port(report, settings)
    _check_config_file(report)
    _propose(report, settings, host, sandboxed, os.environ if environ is None else environ, project)
    return report


def _check_clis(report: Report, settings: Settings, env: Mapping[str, str], worker: str | None = None) -> None:
    from ..config import AUTO_KIND

    configured = worker or settings.orchestrator.worker
    ai_kinds = login_kinds()
    chosen_by = "chosen with --worker" if worker else "configured"

    def install(kind: str) -> str:
        return install_command(kind, settings.base_dir, env)

    for cli in report.clis:
        if cli.version is None:
            report.add(
                cli.kind, Level.PROBLEM, f"{cli.path} does not run: {cli.version_error}", f"reinstall it: {install(cli.kind)}"
            )
    report.runs, why = resolve_kind(settings.orchestrator.worker, settings)
    if configured not in (AUTO_KIND, *ai_kinds):
        report.worker = configured
        report.add("worker", Level.OK, f"worker kind {configured} (configured): no AI CLI needed")
        return
    usable = [cli for cli in report.clis if cli.version is not None]
    if configured == AUTO_KIND:
        _say_what_auto_runs(report, why, usable)
    if configured in ai_kinds:
        chosen = next((cli for cli in usable if cli.kind == configured), None)
        if chosen is None:
            report.add(
                "worker",
                Level.PROBLEM,
                f"worker kind {configured} is {chosen_by} but its CLI is not installed (or does not run)",
                install(configured),
            )
            return
    else:
        logged = [cli for cli in usable if cli.login in (Login.YES, Login.NOT_NEEDED)]
        chosen = next(iter(logged or usable), None)
        if chosen is None:
            if not report.clis:
                report.add(
                    "worker",
                    Level.PROBLEM,
                    f"worker kind auto -> {report.runs}: no AI CLI found (looked for {', '.join(ai_kinds)} on PATH "
                    f"and {LOCAL_BIN}/): jobs run the {report.runs} worker, no AI",
                    "install one, e.g. " + "; ".join(f"{k}: {install(k)}" for k in ai_kinds[:3]),
                )
            return
    report.worker = chosen.kind
    if chosen.login is Login.NO:
        report.add(
            "login", Level.PROBLEM, f"{chosen.kind} is not logged in ({chosen.login_detail})", login_facts(chosen.kind).fix
        )
    elif chosen.login is Login.UNKNOWN:
        report.add("login", Level.NOTE, f"{chosen.kind}'s login is unknown ({chosen.login_detail})", login_facts(chosen.kind).fix)
    else:
        report.add("login", Level.OK, f"{chosen.kind} is logged in ({chosen.login_detail})")


def _say_what_auto_runs(report: Report, why: str, usable: list[FoundCLI]) -> None:
    """Worker kind ``auto`` as a job started now resolves it: the first AI CLI on PATH, else the
    simulated worker. A CLI only in .cli/ is one auto does not find until config.yaml names it."""
    if report.runs == "simulated" and usable:
        report.add("worker", Level.NOTE, why, "doctor --write names the CLI proposed below in config.yaml")
    elif report.runs == "simulated":
        if report.clis:  # none runs: each one's problem above says how to fix it
            report.add("worker", Level.NOTE, why)
    elif any(cli.kind == report.runs for cli in usable):
        report.add("worker", Level.OK, why)
    else:  # its CLI is on PATH but does not run: its own problem above says how to fix it
        report.add("worker", Level.PROBLEM, f"{why}, which does not run", "reinstall it, or set orchestrator.worker")


def _check_plugins(report: Report, settings: Settings) -> None:
    """The plugins the server would load at its start (docs/plugins.md), or the one that stops it."""
    from ..delivery.pull_requests import load_forges
    from ..engine.after_attempt import plugin_steps
    from ..errors import ConfigError

    try:
        found = [*load_plugins(settings), *load_forges(settings), *(f"step {s.name}" for s in plugin_steps(settings))]
    except ConfigError as exc:
        report.add("plugins", Level.PROBLEM, exc.message, "see docs/plugins.md")
        return
    report.add("plugins", Level.OK, "; ".join(found) if found else "none installed or configured")


def _check_python(report: Report) -> None:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        report.add(
            "python",
            Level.PROBLEM,
            f"Python {version} is older than {need}",
            f"install Python {need} or newer, then ./install.sh",
        )
    else:
        report.add("python", Level.OK, f"Python {version} ({sys.executable})")


def _check_git(report: Report, settings: Settings) -> Path | None:
    """git, worktree support and the isolation ``auto`` picks; the host repository, if any."""
    from ..config import Isolation
    from ..git.merging import GitTooOld, require_git
    from ..git.repository import Host, find_host, git_version, worktree_list

    mode = settings.git.isolation
    version = git_version()
    found = find_host(settings.base_dir, settings.workspace_root, settings.git.repo)
    host = found if isinstance(found, Host) else None
    if version is None:
        level = Level.PROBLEM if mode == Isolation.WORKTREE else Level.NOTE
        report.add("git", level, "git is not installed: workers get plain folders, no branches", "install git (2.38 or newer)")
    else:
        report.add("git", Level.OK, f"git {'.'.join(map(str, version))}")
    if host is not None:
        try:
            worktree_list(host.repo)
        except Exception as exc:  # noqa: BLE001 (any failure means no worktrees here)
            report.add("git", Level.PROBLEM, f"`git worktree list` fails in {host.repo}: {exc}", "install git 2.38 or newer")
            host = None
    if host is None:
        level = Level.PROBLEM if mode == Isolation.WORKTREE else Level.OK
        fix = "set git.isolation: folder, or fix the above" if mode == Isolation.WORKTREE else ""
        report.add("isolation", level, f"isolation {mode} -> folder: {found if isinstance(found, str) else 'no worktrees'}", fix)
        return None
    if mode == Isolation.FOLDER:
        report.add("isolation", Level.OK, f"isolation folder (configured; {host.repo} could hold worktrees)")
        return None
    try:
        require_git()
    except GitTooOld as exc:
        report.add("isolation", Level.PROBLEM, f"isolation {mode} -> worktree, but {exc}", "install git 2.38 or newer")
        return host.repo
    report.add("isolation", Level.OK, f"isolation {mode} -> worktree: {host.reason}")
    return host.repo


def _check_sandbox(report: Report, settings: Settings, host: userns.Host) -> Backend | None:
    """Which backend sandboxes the workers (bubblewrap, or Landlock where bubblewrap cannot start), or None,
    and what on this host decides it (:func:`check_host`)."""
    from ..process.backends import probe
    from ..process.sandbox import SandboxMode, SandboxNetwork, decide

    mode = SandboxMode(settings.workers.sandbox)
    support = probe(backend=settings.workers.sandbox_backend)
    try:
        decision = decide(mode, support, network=SandboxNetwork(settings.workers.sandbox_network))
    except ValueError as exc:
        report.add("sandbox", Level.PROBLEM, str(exc), "fix the above, or set workers.sandbox: auto")
        return None
    level = Level.NOTE if decision.spec is None and mode is not SandboxMode.OFF else Level.OK
    report.add("sandbox", level, decision.note, support.reason if decision.spec is None and support.reason else "")
    if mode is not SandboxMode.OFF:
        check_host(report, support, host, userns.find_bwrap())
    return decision.spec.backend if decision.spec is not None else None


def check_host(report: Report, support: Support, host: userns.Host, bwrap: str | None) -> None:
    """What the kernel and a container around this process say about bubblewrap's user namespace, the
    backend that runs because of it, and (Ubuntu 23.10+) the AppArmor profile that lets bwrap start.
    ``bwrap``: its real path, None when not installed."""
    from ..process.sandbox import LANDLOCK_GIVES_UP, LANDLOCK_TABLE, Backend

    facts = userns.read(host)
    bubblewrap = support.backend is Backend.BUBBLEWRAP
    if support.backend is Backend.LANDLOCK:
        runs = f"{support.bwrap_reason}; Landlock runs (ABI {support.landlock_abi}): {LANDLOCK_GIVES_UP} ({LANDLOCK_TABLE})"
    else:
        runs = f"no backend runs: {support.reason}"
    if facts.container:
        where = f"in {userns.runtime_name(facts)} ({', '.join(facts.markers)})"
        if bubblewrap:
            report.add("container", Level.OK, f"{where}: it lets bubblewrap create its namespaces, so bubblewrap runs")
        else:
            report.add("container", Level.NOTE, f"{where}: {runs}", userns.container_advice(facts))
    if facts.restrict_userns == 1 and support.backend is not Backend.SEATBELT:
        plan = userns.plan(host, facts, bwrap, starts=bubblewrap)
        report.apparmor = plan
        setting = "kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 23.10+)"
        if plan.verdict is userns.Verdict.NOTHING:
            report.add("apparmor", Level.OK, f"{setting}: {plan.reason}")
        elif plan.verdict is userns.Verdict.CANNOT:
            report.add("apparmor", Level.NOTE, f"{setting}: {plan.reason}")
        elif bubblewrap:  # root: bubblewrap starts for root alone
            report.add(
                "apparmor",
                Level.NOTE,
                f"{setting}: bubblewrap starts for root, but an ordinary user's is refused until bwrap has an "
                "AppArmor profile allowing userns (below)",
                "doctor --fix installs and loads it",
            )
        else:
            report.add(
                "apparmor",
                Level.NOTE,
                f"{setting}: only a program under an AppArmor profile allowing userns may create a user namespace, "
                f"and {bwrap} has none, so bubblewrap cannot start: "
                + ("Landlock runs instead (the sandbox line above)" if support.available else "no backend runs"),
                "doctor --fix (as root) installs and loads the profile below",
            )
    elif not bubblewrap and support.backend is not Backend.SEATBELT:
        for cause in userns.settings_refusing(facts):
            report.add("userns", Level.NOTE, cause)


def _check_network(report: Report, settings: Settings, env: Mapping[str, str]) -> None:
    """What a sandboxed worker of the chosen kind reaches (workers.sandbox_network), and, with
    ``allow``, the proxy's effective list for it."""
    from ..config import SandboxNetwork
    from ..network.egress import plan_for
    from ..workers.adapters import get_adapter

    network = SandboxNetwork(settings.workers.sandbox_network)
    if network is SandboxNetwork.HOST:
        report.add(
            "network",
            Level.NOTE,
            "sandboxed workers reach every host and port your machine reaches (workers.sandbox_network: host)",
            "set workers.sandbox_network: allow to let them reach only listed hosts",
        )
        return
    if network is SandboxNetwork.NONE:
        report.add(
            "network", Level.OK, "sandboxed workers have no network, this server's API included (workers.sandbox_network: none)"
        )
        return
    kind = report.worker or report.runs
    adapter = get_adapter(kind)
    urls = adapter.model_urls(settings, env)
    plan = plan_for(
        settings.workers.sandbox_allow,
        adapter.network_hosts,
        urls,
        api_url=settings.api.local_url(),
    )
    lines = plan.policy().entries()
    report.network = lines
    report.add(
        "network",
        Level.OK,
        f"sandboxed {kind} workers reach only, through the orchestrator's proxy: " + "; ".join(lines),
        "add hosts (package registries...) to workers.sandbox_allow",
    )


def _check_cgroups(report: Report) -> None:
    from ..process.cgroups import CONTROLLERS, hierarchies

    bases = hierarchies().bases
    held = [f"{c} ({bases[c][0].value})" for c in CONTROLLERS if c in bases]
    sampled = [c for c in CONTROLLERS if c not in bases]
    if not sampled:
        report.add("cgroups", Level.OK, f"the kernel holds workers' caps: {', '.join(held)}")
    else:
        report.add(
            "cgroups",
            Level.NOTE,
            f"no writable {' or '.join(sampled)} cgroup: those caps are sampled every workers.monitor_interval"
            + (f" (kernel: {', '.join(held)})" if held else ""),
            "run the server as root, or in a systemd unit with Delegate=yes, for kernel-held caps",
        )


def _check_port(report: Report, settings: Settings) -> None:
    from ..process.ports import bind_error
    from .server import folder_server

    host, port = settings.api.host, settings.api.port
    running = folder_server(settings.base_dir)
    if running is not None:
        report.add("port", Level.OK, f"this folder's server is running at {running.url}")
        return
    error = bind_error(host, port) if port else None
    if error is None:
        report.add("port", Level.OK, f"{host}:{port or '(any free port)'} is free for the API server")
    else:
        report.add("port", Level.NOTE, f"{host}:{port} is taken ({error.strerror or error})", "set api.port to a free port, or 0")


def _check_config_file(report: Report) -> None:
    path = report.config_path
    if not path.is_file():
        report.add(
            "config", Level.NOTE, f"no {path.name} yet: defaults apply", "run ./install.sh (it writes one with an API key)"
        )
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        report.add(
            "config",
            Level.PROBLEM,
            f"{path} holds api.api_key but others can access it (mode {mode:04o})",
            f"chmod 600 {path}",
        )
    else:
        report.add("config", Level.OK, f"{path} is private to you (mode {mode:04o})")
    _check_ignored(report, path)


def _check_ignored(report: Report, path: Path) -> None:
    """config.yaml holds keys: a repository holding it must ignore it, or one `git add -A` commits them."""
    from ..git.repository import GitError, run_git, toplevel

    top = toplevel(path.parent)
    if top is None:
        return
    try:
        ignored = run_git(top, "check-ignore", "-q", "--", str(path), check=False).returncode == 0
    except GitError:
        return
    if not ignored:
        report.add(
            "config",
            Level.NOTE,
            f"{path} holds keys but the repository {top} does not ignore it: `git add -A` would commit them",
            f"add {path.name} to {path.parent / '.gitignore'}",
        )


def _propose(
    report: Report,
    settings: Settings,
    host: Path | None,
    sandboxed: bool,
    environ: Mapping[str, str],
    project: Project | None = None,
) -> None:
    """The settings a real CLI needs that are not in the configuration yet."""
    from ..config import SCHEMA

    cli = next((c for c in report.clis if c.kind == report.worker), None)
    if cli is None:
        return
    orch: dict[str, Any] = {"worker": cli.kind, f"{cli.kind}_command": cli.path}
    advice = get_adapter(cli.kind).advice(settings, sandboxed)
    orch.update(advice.settings)
    if advice.note:
        report.add("tools", Level.NOTE, advice.note, advice.fix)
    report.changes["orchestrator"] = {k: v for k, v in orch.items() if settings.get("orchestrator", k) != v}
    env = dict(settings.workers.env)
    names = [*login_facts(cli.kind).variables, *([cli.provider_key] if cli.provider_key else [])]
    report.copied = [name for name in dict.fromkeys(names) if environ.get(name) and name not in env]
    if report.copied:
        report.changes["workers"] = {"env": {**env, **{name: environ[name] for name in report.copied}}}
    gate = _suggested_gate(report, host, project, sandboxed) if not settings.tasks.gates else None
    if gate is not None:
        report.changes["tasks"] = {"gates": [gate]}
    report.changes = {s: keys for s, keys in report.changes.items() if keys and s in SCHEMA}


def _suggested_gate(
    report: Report, host: Path | None, project: Project | None = None, sandboxed: bool = True
) -> dict[str, Any] | None:
    """A required "tests" gate when the host repository shows an obvious test command. A Python
    project's runs the interpreter of the venv that installs it editable (the checkout's code in the
    sandbox's view); unsandboxed, a src layout's gets ``PYTHONPATH=src`` in front, which Python
    puts before the .pth entries that name your main checkout."""
    if host is None:
        return None
    for marker, argv in TEST_COMMANDS:
        path = host / marker
        if not path.is_file() or (marker == "package.json" and not _npm_tests(path)):
            continue
        python = project is not None and argv[0] == "pytest"
        if python and project is not None and project.editable:
            argv = [str(project.editable[0].python), "-m", "pytest", "-q"]
        elif shutil.which(argv[0]) is None:
            report.add("gates", Level.NOTE, f"{marker} suggests `{' '.join(argv)}` as a gate, but {argv[0]} is not on PATH")
            return None
        if python and project is not None and project.src_layout and not sandboxed:
            argv = ["env", "PYTHONPATH=src", *argv]
        return {"name": "tests", "run": argv, "required": True, "timeout": 600}
    return None


@dataclass(frozen=True)
class Editable:
    """An editable install of the host repository in one of its venvs."""

    venv: Path
    name: str  # the file that says so (site-packages' __editable__*.pth, a direct_url.json's dist-info, an .egg-link)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


@dataclass(frozen=True)
class Project:
    """What of the host repository decides which code a gate tests."""

    editable: list[Editable] = field(default_factory=list)
    src_layout: bool = False


def find_project(host: Path, venvs: list[Path]) -> Project:
    """The host's editable installs in ``venvs`` (by the files pip and setuptools write: an
    ``__editable__*.pth`` or its finder, a dist-info's ``direct_url.json`` with ``editable``, an
    ``.egg-link``, naming a path in ``host``) and whether it keeps its packages under ``src/``."""
    found: list[Editable] = []
    top = str(host.resolve())
    for venv in venvs:
        for site in sorted(venv.glob("lib/python*/site-packages")):
            for path in sorted(site.iterdir()):
                if _names_host(path, top):
                    found.append(Editable(venv, path.name))
                    break
    src = host / "src"
    layout = src.is_dir() and any(child.suffix == ".py" or (child / "__init__.py").is_file() for child in src.iterdir())
    return Project(found, layout)


def _names_host(path: Path, top: str) -> bool:
    """Whether ``path`` (a site-packages entry) is an editable install's record naming a path in ``top``."""
    name = path.name
    try:
        if name.startswith("__editable__") or name.endswith(".egg-link"):
            text = path.read_text(encoding="utf-8", errors="replace")
        elif name.endswith(".dist-info") and (path / "direct_url.json").is_file():
            data = json.loads((path / "direct_url.json").read_text(encoding="utf-8"))
            if not (isinstance(data, dict) and isinstance(data.get("dir_info"), dict) and data["dir_info"].get("editable")):
                return False
            text = str(data.get("url", "")).removeprefix("file://")
        else:
            return False
    except (OSError, ValueError):
        return False
    return top in text


def _check_project(
    report: Report, settings: Settings, host: Path | None, sandboxed: bool, *, view: bool = True
) -> Project | None:
    """Which code a gate tests: where workers run unconfined, their checkouts lie in the
    orchestrator's folder inside the repository and the host's venv runs the main checkout's code.
    ``view``: the sandbox shows each checkout at the repository's path (bubblewrap); without one
    (Landlock, Seatbelt) the checkout lives outside this folder and a gate's PYTHONPATH leads to it."""
    if host is None:
        return None
    venvs = [host / name for name in settings.workers.sandbox_env_folders if (host / name / "pyvenv.cfg").is_file()]
    project = find_project(host, venvs)
    installs = ", ".join(f"{e.venv.name}/…/{e.name}" for e in project.editable)
    if sandboxed and not view:
        _check_no_view(report, settings, host, project, installs)
        return project
    if sandboxed:
        if project.editable:
            report.add(
                "project",
                Level.OK,
                f"an editable install of {host} ({installs}): the sandbox shows each worker's checkout at {host}, "
                "so it runs the worker's code",
            )
        return project
    inside = settings.workspace_root.resolve().is_relative_to(host.resolve())
    if inside:
        report.add(
            "project",
            Level.NOTE,
            f"workers run unconfined and their checkouts lie in {settings.workspace_root}, inside {host}: tools that "
            "look upwards for their configuration (pytest's rootdir and conftest.py, Cargo and uv workspaces, "
            "tsconfig, eslint) find this folder's before or instead of your project's",
            "enable the sandbox (workers.sandbox: auto with bubblewrap): it shows each checkout at the repository's path",
        )
    if project.editable:
        report.add(
            "project",
            Level.NOTE,
            f"workers run unconfined and {host} is installed editable ({installs}): that venv imports your main "
            "checkout, not the worker's, so a gate that runs it tests the wrong code and can pass a breaking worker",
            "enable the sandbox, or put PYTHONPATH=src (the checkout's own code) in front of the gate's command"
            if project.src_layout
            else "enable the sandbox, or run the gate with PYTHONPATH set to the checkout's packages",
        )
    return project


def _check_no_view(report: Report, settings: Settings, host: Path, project: Project, installs: str) -> None:
    """Without a project view (Landlock): where the checkouts live, and which links of the project
    still lead to the user's checkout rather than the worker's."""
    from ..errors import WorkspaceError
    from ..workspace import checkout_place as place

    try:
        folder = place.make_private(
            settings, settings.workspace_root, (settings.base_dir, settings.workspace_root, host), create=False
        )
    except WorkspaceError as exc:
        report.add("project", Level.PROBLEM, str(exc), f"set {place.SETTING} in config.yaml to a folder of your own")
        return
    report.add(
        "project",
        Level.OK,
        f"no project view under this sandbox: each worker's worktree lives in {folder}, outside this folder, so tools "
        "that look upwards for their configuration find your project's (the workspace's depth_<n>/worker_<k> links to it)",
    )
    from ..workers.confinement import Confinement
    from ..workspace.layout import Workspace

    refused = Confinement(settings, Workspace(settings.workspace_root)).tree_refusal(os.path.realpath(host))
    if refused is None:
        report.add(
            "project",
            Level.NOTE,
            f"{host} holds this folder, the orchestrator's Python or its package whole (or is your home folder): "
            "under this sandbox workers and gates read your checkout there, so an editable install or a link a gate "
            "follows into it tests your code, not the worker's",
            "keep the orchestrator's folder and its venv outside the repository (or in a folder of it), or use bubblewrap",
        )
        return
    report.add(
        "project",
        Level.OK,
        f"no project view under this sandbox: workers and their gates are refused your working tree at {host} but "
        "its environment folders (workers.sandbox_env_folders), this folder and CLIs installed in it, so nothing leads "
        "a gate to your code: what does fails with Permission denied",
    )
    if project.editable:
        report.add(
            "project",
            Level.OK,
            f"an editable install of {host} ({installs}): a gate gets the worker's checkout's package roots first on "
            "PYTHONPATH (those your pyproject.toml declares for setuptools, hatch, flit, pdm or poetry, and those the "
            "install names; else src/, else its top), so it runs the worker's code; a root not found there fails the "
            "gate with an ImportError, never imports yours",
        )
    for what in _links_to_host(host):
        report.add(
            "project",
            Level.NOTE,
            f"{what}: under this sandbox it leads to your checkout at {host}, which workers and gates are refused, so "
            "a gate that goes through it fails (Permission denied) rather than testing your code",
            "name it by a relative path (a worker's checkout then has its own), use bubblewrap (its project view shows "
            "the worker's checkout at your repository's path), or a git.setup that installs the project in the "
            "worker's checkout",
        )


def _links_to_host(host: Path) -> list[str]:
    """What in the host's environment points at the host's own files by a path that does not follow
    a worker's checkout: npm/yarn workspace or ``npm link`` links in ``node_modules``, and Cargo path
    dependencies given as absolute paths into the repository."""
    found: list[str] = []
    top = str(host.resolve())
    modules = host / "node_modules"
    if modules.is_dir() and not modules.is_symlink():
        links = []
        for entry in sorted(modules.glob("*")) + sorted(modules.glob("@*/*")):
            if entry.is_symlink() and (os.path.realpath(entry) + "/").startswith(top + "/"):
                links.append(entry.relative_to(modules).as_posix())
        if links:
            found.append(f"node_modules links to the repository's own packages ({', '.join(links[:5])}: workspaces or npm link)")
    for manifest in [host / "Cargo.toml", *sorted(host.glob("*/Cargo.toml")), *sorted(host.glob("*/*/Cargo.toml"))][:200]:
        try:
            text = manifest.read_text(encoding="utf-8")
        except OSError:
            continue
        if f'path = "{top}' in text or f"path = '{top}" in text:
            found.append(f"{manifest.relative_to(host)} names a path dependency by its absolute path in the repository")
    return found


def _npm_tests(path: Path) -> bool:
    try:
        script = json.loads(path.read_text(encoding="utf-8")).get("scripts", {}).get("test")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(script, str) and bool(script.strip()) and script.strip() != NPM_NO_TESTS


def write(report: Report) -> None:
    """Merge ``report.changes`` into its config file, atomically, mode 0600 (it holds secrets)."""
    from ..config.edit import merge_settings
    from ..errors import ConfigError
    from ..workspace.filesystem import atomic_write

    path = report.config_path
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: run ./install.sh first (it creates config.yaml), then doctor --write")
    old = path.read_text(encoding="utf-8")
    new = merge_settings(old, report.changes, str(path))
    if new != old:
        atomic_write(path, new.encode("utf-8"), mode=0o600)
    report.written = True


def render(report: Report) -> str:
    """The human report: CLIs, checks (each problem with its fix), the proposed configuration."""
    lines = ["AI CLIs"]
    for cli in report.clis:
        lines.append(
            f"  {cli.kind:<9}{cli.version or 'broken'}  {cli.path} (from {cli.source})  "
            f"logged in: {cli.login.value}" + (f" ({cli.login_detail})" if cli.login_detail else "")
        )
    if not report.clis:
        lines.append("  none found")
    lines.append("Checks")
    for f in report.findings:
        lines.append(f"  {f.level.value.upper() if f.level is Level.PROBLEM else f.level.value:<8}{f.topic:<10}{f.text}")
        if f.fix and f.level is not Level.OK:
            lines.append(f"  {'':<18}fix: {f.fix}")
    if report.apparmor is not None and report.apparmor.fix is not None:
        lines.extend(_render_fix(report.apparmor.fix, "doctor --fix installs it; or by hand, as root"))
    if report.changes:
        verb = "written to" if report.written else "for"
        lines.append(f"Configuration {verb} {report.config_path}" + ("" if report.written else " (doctor --write merges it)"))
        for section, keys in report.shown.items():
            lines.append(f"  {section}:")
            lines.extend(f"    {key}: {json.dumps(value)}" for key, value in keys.items())
    elif report.worker:
        lines.append(f"Configuration: {report.config_path} already has what worker kind {report.worker} needs")
    count = len(report.problems)
    lines.append(
        f"{count} problem(s) block real workers: fix them and run doctor again" if count else "Nothing blocks real workers."
    )
    return "\n".join(lines)


def _render_fix(fix: userns.Fix, how: str) -> list[str]:
    """The profile, where it goes and the command that loads it, as ``doctor --fix`` would do it."""
    lines = [f"AppArmor profile for bubblewrap ({how})"]
    if fix.write:
        lines.append(f"  file {fix.shown}:")
        lines.extend(f"    {line}" if line else "" for line in fix.content.splitlines())
    else:
        lines.append(f"  file {fix.shown}: installed already, as above (not loaded)")
    lines.append(f"  then: {' '.join(fix.command)}")
    return lines


def fix_bubblewrap(
    host: userns.Host,
    *,
    bwrap: str | None,
    starts: bool,
    yes: bool = False,
    ask: Callable[[str], str] = input,
    out: Callable[[str], None] = print,
) -> int:
    """``doctor --fix``: install and load the AppArmor profile that lets bwrap create its namespaces,
    after showing exactly what changes and a yes to the prompt (``yes``: ``--yes``, for scripts).
    Refused, naming why, when there is nothing to fix, AppArmor is not the cause, or this is not root.
    0: fixed, or nothing to fix; 1: refused, declined or failed (nothing changed then)."""
    plan = userns.plan(host, userns.read(host), bwrap, starts=starts)
    if plan.verdict is userns.Verdict.NOTHING:
        out(f"doctor --fix: {plan.reason}")
        return 0
    if plan.fix is None:
        out(f"doctor --fix: cannot fix this: {plan.reason}")
        return 1
    fix = plan.fix
    out(f"doctor --fix would {plan.reason}:")
    for line in _render_fix(fix, "what changes")[1:]:
        out(line)
    if host.euid != 0:
        again = shlex.join([sys.executable, "-m", "orchestrator", "doctor", "--fix"])
        out(
            f"doctor --fix: refused: writing {fix.shown} and loading it needs root; run `sudo {again}`, or write the "
            f"profile above to {fix.shown} and run `sudo {' '.join(fix.command)}`. Nothing changed."
        )
        return 1
    if not yes:
        try:
            answer = ask("Make this change? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            out("doctor --fix: not confirmed: nothing changed (--yes confirms without asking)")
            return 1
    applied = userns.apply(host, fix)
    for line in applied.lines:
        out(f"doctor --fix: {line}")
    if applied.ok:
        out("doctor --fix: run `doctor` as the user who runs the server: its sandbox line says whether bubblewrap starts now")
    return 0 if applied.ok else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..config import load_settings
    from ..process.backends import probe
    from ..process.sandbox import Backend

    if args.yes and not args.fix:
        print("doctor: --yes confirms doctor --fix; it does nothing alone", file=sys.stderr)
        return 2
    if args.fix:
        if args.write or args.json or args.worker:
            print("doctor: --fix changes this machine alone; run it without --write, --json or --worker", file=sys.stderr)
            return 2
        starts = probe(backend="bubblewrap").backend is Backend.BUBBLEWRAP
        return fix_bubblewrap(userns.Host(), bwrap=userns.find_bwrap(), starts=starts, yes=args.yes)

    if args.worker is not None and args.worker not in login_kinds():
        print(f"doctor: --worker {args.worker} is not an AI CLI kind; choose one of: {', '.join(login_kinds())}", file=sys.stderr)
        return 2
    settings = load_settings(args.config)
    path = Path(args.config) if args.config else settings.base_dir / "config.yaml"
    report = examine(settings, path.resolve(), worker=args.worker)
    if args.write and report.changes:
        write(report)
        _check_config_file_again(report)
        _tell_running_server(report, settings.base_dir)
    elif args.write and not report.worker:
        report.add("config", Level.NOTE, f"nothing written to {report.config_path.name}: no AI CLI to configure")
    print(json.dumps(report.to_dict(), indent=2) if args.json else render(report))
    return report.exit_code


def _tell_running_server(report: Report, base_dir: Path) -> None:
    """Whether this folder's running server picks the written configuration up (it reads
    config.yaml again at its next job, config/live.py) or needs a restart for part of it."""
    from ..config.live import RESTART, needs_restart
    from .scripts import running_server

    record = running_server(base_dir)
    if record is None:
        return
    keys = [f"{section}.{key}" for section, values in report.changes.items() for key in values]
    at_start = [key for key in keys if needs_restart(*key.split(".", 1))]
    if at_start:  # none of what doctor proposes today; said plainly should that change
        report.add(
            "server",
            Level.NOTE,
            f"the server at {record.url} reads {', '.join(at_start)} at start",
            f"restart to apply: {RESTART}",
        )
    else:
        report.add("server", Level.OK, f"the server running at {record.url} applies this configuration to its next job")


def _check_config_file_again(report: Report) -> None:
    """The mode check after a write (which leaves the file 0600)."""
    report.findings = [f for f in report.findings if f.topic != "config"]
    _check_config_file(report)
