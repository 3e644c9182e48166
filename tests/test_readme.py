"""The documentation's commands, snippets, routes, settings and links are the product's: README.md,
README_FOR_AI.md and every page under docs/. Each runnable block (```bash, ```python; in the two
READMEs ```sh too) carries a marker naming the test that runs it, ``<!-- test: NAME -->``, and
RUN_BY names that test, which must exist. A docs/ page may instead say why no test runs a block,
``<!-- test: skip: why -->``; the two READMEs may not: every block of theirs runs (what a user
pastes first must work)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from orchestrator.api.openapi import openapi_document
from orchestrator.config import SCHEMA

from .conftest import ROOT
from .helpers.readme import FENCE, GUIDE, PAGES, README, fences, snippet, text

# Markers of blocks a test runs or checks, and which test: "tests/FILE.py::test_name", one or more.
RUN_BY = {
    "ci": "tests/test_readme.py::test_ci_runs_the_readmes_two_commands_verbatim (.ci/run runs them)",
    "three-commands": "tests/test_readme_blocks.py::test_the_readmes_three_commands_on_a_machine_without_an_ai_cli, "
    "tests/test_readme_blocks.py::test_the_readmes_three_commands_with_claude_in_dot_cli_on_a_mock_model",
    "merge-result": "tests/test_readme_blocks.py::test_the_readmes_three_commands_on_a_machine_without_an_ai_cli, "
    "tests/test_readme_blocks.py::test_the_readmes_three_commands_with_claude_in_dot_cli_on_a_mock_model",
    "wheel": "tests/test_wheel.py::test_the_readmes_wheel_block_inits_a_repository_and_its_first_command_leaves_the_result_branch",
    "curl": "tests/test_readme.py::test_docs_curl_lines_work_against_a_live_server",
    "client": "tests/test_readme.py::test_docs_python_client_snippet_runs, "
    "tests/test_folders.py::test_the_launcher_and_the_readmes_client_snippet_work_from_the_host_repos_root",
    "webhook-check": "tests/test_webhooks.py::test_deliveries_are_signed_in_order_and_pass_the_documented_check",
    "config-reference": "tests/test_docs_configuration.py::"
    "test_the_pages_regenerate_command_rewrites_a_stale_reference_and_keeps_the_prose",
    "plugin-kind": "tests/test_plugins.py::test_the_pages_kind_module_is_a_kind_from_outside",
    "plugin-step": "tests/test_plugins.py::test_the_pages_step_module_runs_its_program_through_the_context",
}
# README_FOR_AI.md's own markers (tests/test_examples.py reads them by these names).
GUIDE_RUN_BY = {
    "install": "tests/test_guide_path.py::test_the_guides_blocks_take_a_project_from_install_to_a_merged_tested_result",
    "project": "tests/test_guide_path.py::test_the_guides_blocks_take_a_project_from_install_to_a_merged_tested_result",
    "run": "tests/test_examples.py::test_guide_curl_block_runs_and_prints_what_it_says, "
    "tests/test_examples.py::test_guide_python_block_runs_and_prints_what_it_says",
    "mcp": "tests/test_readme_blocks.py::test_the_guides_mcp_block_registers_our_server_in_claude_and_runs_a_job_through_it",
    "spawn": "tests/test_examples.py::test_guide_spawn_one_liner_run_by_a_worker_starts_and_waits_for_a_child_job",
    "worker": "tests/test_examples.py::test_guide_worker_python_block_starts_a_child_job_from_inside_a_worker",
}
RUNNABLE = ("bash", "python")  # in docs/
RUNNABLE_IN_READMES = ("bash", "sh", "shell", "console", "python")  # in README.md and README_FOR_AI.md


def prose(page):
    """``page`` without its fenced blocks (where a link or a name is code, not a reference)."""
    return FENCE.sub("", text(page))


def test_ci_runs_the_readmes_two_commands_verbatim():
    first_bash = next(code for _, lang, code in fences(README) if lang == "bash")
    assert first_bash == snippet("ci")
    commands = [line for line in first_bash.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2 and commands[0].startswith("./install.sh && ./quick-start.sh")
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci


def test_the_readme_is_what_a_person_reads_first_and_links_every_page():
    lines = text(README).splitlines()
    assert len(lines) < 300
    first_screen = "\n".join(lines[:50])
    for command in ("./install.sh", "./orchestrator.sh doctor --write", "./quick-start.sh", "docs/workers.md"):
        assert command in first_screen, command
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", text(README)))
    assert linked == {f"docs/{page.name}" for page in PAGES[2:]}


def test_every_runnable_block_says_which_test_runs_it_or_why_none_does():
    for page in PAGES:
        readme = page in (README, GUIDE)
        known = GUIDE_RUN_BY if page == GUIDE else RUN_BY
        for marker, lang, code in fences(page):
            if lang not in (RUNNABLE_IN_READMES if readme else RUNNABLE):
                continue
            where = f"{page.name}: {code.splitlines()[0]}"
            assert marker, f"{where}: mark it <!-- test: NAME --> (a test runs it)" + (
                "" if readme else " or <!-- test: skip: why -->"
            )
            if marker.startswith("skip:") and not readme:
                assert len(marker) > len("skip: ") + 10, f"{where}: say why no test runs it"
            else:
                assert marker in known, f"{where}: {marker!r} is none of {sorted(known)} (a README's block runs, no skip)"


def test_every_test_named_for_a_block_exists():
    for where in (*RUN_BY.values(), *GUIDE_RUN_BY.values()):
        for named in re.findall(r"(tests/[\w/]+\.py)::(\w+)", where):
            path, test = named
            assert re.search(rf"^def {test}\(", (ROOT / path).read_text(encoding="utf-8"), re.M), f"{path}::{test} does not exist"
        assert re.match(r"tests/", where), where
    used = {marker for page in PAGES for marker, _, _ in fences(page) if marker and not marker.startswith("skip:")}
    assert set(RUN_BY) | set(GUIDE_RUN_BY) == used, "a marker named here marks no block, or a block's marker is not here"


def test_every_route_named_anywhere_is_served():
    documented = set(openapi_document()["paths"])
    for page in PAGES:
        for path in set(re.findall(r"`(?:GET|POST|DELETE) (/[^` ?]+)", text(page))):
            assert path.replace("{id}", "{job_id}") in documented, f"{page.name}: {path}"
    assert re.findall(r"`(?:GET|POST|DELETE) (/[^` ?]+)", text(ROOT / "docs" / "api.md")), "the API page lists routes"


def test_every_setting_named_anywhere_exists():
    pattern = re.compile(rf"`((?:{'|'.join(SCHEMA)})\.[a-z_]+)")
    names = {(page.name, name) for page in PAGES for name in pattern.findall(prose(page))}
    assert len(names) > 100
    for page, name in names:
        section, key = name.split(".")
        assert key in SCHEMA[section], f"{page}: {name}"


def slug(heading):
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose(page), re.M)}


def test_every_relative_link_resolves_to_a_file_and_heading():
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {target} does not exist"
            if anchor:
                assert anchor in anchors(linked), f"{page.name}: {target}: no such heading in {linked.name}"
            checked += 1
    assert checked > 40


@pytest.mark.slow
def test_docs_curl_lines_work_against_a_live_server(live):
    script = snippet("curl").replace("http://localhost:8000", live.url).replace("your-api-key", live.key)
    submit, status = script.split("\ncurl http")
    out = subprocess.run(["bash", "-c", submit + " -s"], capture_output=True, text=True, check=True).stdout
    job_id = re.search(r'"job_id":\s*"([^"]+)"', out).group(1)
    live.wait(job_id)
    status = ("curl http" + status).replace("JOB_ID", job_id)
    doc = subprocess.run(["bash", "-c", status.strip() + " -s"], capture_output=True, text=True, check=True).stdout
    assert '"status": "completed"' in doc or '"status":"completed"' in doc


@pytest.mark.slow
def test_docs_python_client_snippet_runs(live):
    code = snippet("client").replace("http://localhost:8000", live.url).replace("your-api-key", live.key)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Status: running" in out.stdout and "completed" in out.stdout.splitlines()[-1]
