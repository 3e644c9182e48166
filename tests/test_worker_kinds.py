"""One description per worker kind (workers/adapters/kind.py): every table of kinds is derived from
the registry, so a kind declared in one module (tests/kind_double.py) appears in each of them:
the adapters by name, auto's order, the memory a worker needs, the price table's provider, doctor's
CLI search, install hint and login check, the sandbox's network defaults and Kage Bunshin's task API's names."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from orchestrator.api.tasks_openapi import cli_kinds
from orchestrator.cluster.node import kind_problem
from orchestrator.config import WORKER_KINDS, load_settings, plugins
from orchestrator.process.admission import MB, Peaks
from orchestrator.workers import adapters, costs
from orchestrator.workers.adapters import ADAPTERS, KINDS, auto_order, discover, get_adapter, memory_peaks, resolve_kind
from orchestrator.workers.adapters.base import ParsedResult
from orchestrator.workers.adapters.kind import WorkerKind
from orchestrator.workers.clis import Login, find_clis, install_command, login_kinds
from orchestrator.workers.confinement import Confinement
from orchestrator.workspace.layout import Workspace

from . import kind_double
from .conftest import make_settings


@pytest.fixture
def throwaway():
    adapters.register(kind_double.KIND)
    try:
        yield kind_double.KIND
    finally:
        adapters.unregister(kind_double.KIND.name)
    assert "throwaway" not in ADAPTERS


def test_every_kind_module_of_the_package_is_in_the_registry_in_its_listed_order():
    # config/ sits below workers/, so it names the shipped kinds (config/plugins.py) to check settings
    # without importing a kind: the registry's modules and that list are the same, in listing order.
    assert adapters.SHIPPED and list(ADAPTERS) == [k.name for k in sorted(KINDS.values(), key=lambda k: k.rank)]
    assert list(plugins.SHIPPED_KINDS) == [name for name in ADAPTERS if name in adapters.SHIPPED], (
        "name the package's kinds, in their rank's order, in SHIPPED_KINDS (orchestrator/config/plugins.py)"
    )
    assert all(isinstance(kind, WorkerKind) and kind.adapter.name == name for name, kind in KINDS.items())


def test_a_module_that_declares_a_kind_is_discovered_by_dropping_it_in_a_package(tmp_path, monkeypatch):
    package = tmp_path / "somekinds"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("VALUE = 1\n")  # no KIND: not a kind
    (package / "mine.py").write_text(Path(kind_double.__file__).read_text(encoding="utf-8"))
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover("somekinds", [str(package)])
    assert list(found) == ["throwaway"] and found["throwaway"].memory_peak_mb == 123
    for name in [m for m in sys.modules if m == "somekinds" or m.startswith("somekinds.")]:
        monkeypatch.delitem(sys.modules, name)


def test_a_registered_kind_is_in_the_adapters_the_listing_and_auto_s_order(throwaway):
    assert list(ADAPTERS)[list(ADAPTERS).index("aider") + 1] == "throwaway"  # its rank: between aider and ollama
    order = auto_order()
    assert order[order.index("aider") + 1] == "throwaway" and len(order) == len([k for k in KINDS.values() if k.auto])
    assert get_adapter("throwaway").network_hosts == ("api.throwaway.invalid",)
    settings = load_settings(base_dir=Path.cwd(), environ={}, overrides={})
    assert resolve_kind("throwaway", settings) == ("throwaway", "worker kind throwaway (configured)")


def test_a_registered_kind_has_its_memory_peak_and_its_cost_provider(throwaway):
    assert memory_peaks()["throwaway"] == 123
    assert Peaks(memory_peaks()).need("throwaway") == 123 * MB
    parsed = ParsedResult(output="", tokens_in=1_000_000, tokens_out=0)
    costs.estimate(parsed, "gpt-4o", kind="throwaway", overrides={})
    priced_as_codex = ParsedResult(output="", tokens_in=1_000_000, tokens_out=0)
    costs.estimate(priced_as_codex, "gpt-4o", kind="codex", overrides={})
    assert parsed.cost_usd is not None and parsed.cost_usd == priced_as_codex.cost_usd  # openai's price, as declared


def test_doctor_finds_a_registered_kind_s_cli_its_login_and_its_install_hint(throwaway, tmp_path):
    cli = tmp_path / "throwaway"
    cli.write_text("#!/bin/sh\necho 'throwaway 1.2.3'\n")
    cli.chmod(0o755)
    assert "throwaway" in login_kinds()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "THROWAWAY_API_KEY": "k"}
    [found] = find_clis({"throwaway": str(cli)}, tmp_path, env)
    assert (found.kind, found.version, found.login) == ("throwaway", "throwaway 1.2.3", Login.YES)
    assert found.variables == ["THROWAWAY_API_KEY"]
    (tmp_path / ".throwaway").mkdir()
    (tmp_path / ".throwaway" / "auth.json").write_text("{}")
    [stored] = find_clis({"throwaway": str(cli)}, tmp_path, {"PATH": env["PATH"], "HOME": str(tmp_path)})
    assert stored.login is Login.YES and str(tmp_path / ".throwaway" / "auth.json") in stored.login_detail
    hint = install_command("throwaway", tmp_path, {"PATH": ""})  # no npm: the global install
    assert hint == "npm install -g @throwaway/cli"


def test_a_registered_kind_s_hosts_are_its_sandbox_s_network_defaults_and_its_aliases_kage_bunshin_s(throwaway, tmp_path):
    settings = load_settings(base_dir=tmp_path, environ={}, overrides={})
    plan = Confinement(settings, Workspace(tmp_path / "workspace")).egress_plan(get_adapter("throwaway"), {})
    assert plan.allow == ("api.throwaway.invalid",)
    assert "allow api.throwaway.invalid (any port)" in plan.policy().entries()
    assert cli_kinds()["throwaway-cli"] == "throwaway" and cli_kinds()["throwaway"] == "throwaway"


def test_a_registered_kind_is_a_choice_of_every_setting_that_names_a_kind(throwaway, tmp_path):
    # orchestrator.worker's choices are read from the registry when checked (config/plugins.py): a
    # kind registered from outside the package is one, in every setting that names a kind.
    assert sorted(WORKER_KINDS) == sorted(["auto", *ADAPTERS])
    settings = load_settings(
        base_dir=tmp_path,
        environ={},
        overrides={
            "orchestrator": {"worker": "throwaway"},
            "git": {"resolver_kind": "throwaway"},
            "tasks": {"roles": {"docs": {"worker": "throwaway"}}},
            "candidates": {"candidates": ["throwaway", {"kind": "claude"}], "judge": {"kind": "throwaway"}},
        },
    )
    assert settings.orchestrator.worker == settings.git.resolver_kind == "throwaway"
    assert "throwaway" not in plugins.KINDS.documented  # the template lists the package's own


def test_the_shipped_ai_clis_keep_the_seeds_command_settings():
    # A shipped CLI kind's program is orchestrator.<kind>_command (the seed's claude_command and its
    # siblings); a plugin kind's is workers.kinds.<name>.command (tests/test_plugins.py).
    settings = load_settings(base_dir=Path.cwd(), environ={}, overrides={})
    for kind in [k for k in auto_order() if k in adapters.SHIPPED]:
        assert hasattr(settings.orchestrator, f"{kind}_command"), (
            f'add `{kind}_command: str = setting({kind!r}, "path or name of the {kind} CLI")` to OrchestratorSettings '
            "in orchestrator/config/schema.py, then regenerate config.template.yaml (python -m orchestrator config --template)"
        )
        assert settings.get("orchestrator", f"{kind}_command") == kind


def test_each_kind_says_what_program_it_needs_and_a_node_checks_only_what_it_has_set(tmp_path):
    settings = make_settings(tmp_path, orchestrator={"claude_command": "no-such-claude-xyz", "command": []})
    assert get_adapter("simulated").configured_program(settings) is None  # this package's own Python
    assert get_adapter("anthropic").configured_program(settings) is None
    assert get_adapter("claude").configured_program(settings) == "no-such-claude-xyz"
    assert get_adapter("command").configured_program(settings) == ""
    assert "orchestrator.command (an argv list)" in get_adapter("command").unset_program()
    assert "orchestrator.claude_command" in get_adapter("claude").program_fix()
    # A node runs the argv the server built: a program it has not set is not its problem; one it has set must be there.
    assert kind_problem(settings, "command") == ""
    assert "'no-such-claude-xyz' (orchestrator.claude_command) is not on the workers' PATH" in kind_problem(settings, "claude")
    assert kind_problem(settings, "simulated") == ""
    assert kind_problem(settings, "nope").startswith("unknown kind")
