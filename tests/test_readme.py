"""The documentation's commands, snippets, routes, settings and links are the product's: README.md,
README_FOR_AI.md and every page under docs/. Each runnable block (```bash, ```python) in README.md
and docs/ carries a marker naming the test that runs it, ``<!-- test: NAME -->``, or saying why
none does, ``<!-- test: skip: why -->``; README_FOR_AI.md marks its own (tests/test_examples.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from orchestrator.api.openapi import openapi_document
from orchestrator.config import SCHEMA

from .conftest import ROOT
from .helpers.readme import FENCE, GUIDE, PAGES, README, fences, snippet, text

# Markers of blocks a test runs or checks, and where.
RUN_BY = {
    "ci": "test_ci_runs_the_readmes_two_commands_verbatim (.ci/run runs them)",
    "curl": "test_docs_curl_lines_work_against_a_live_server",
    "client": "test_docs_python_client_snippet_runs, tests/test_folders.py",
    "webhook-check": "tests/test_webhooks.py",
    "config-reference": "tests/test_docs_configuration.py",
}


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
        if page == GUIDE:
            continue
        for marker, lang, code in fences(page):
            if lang not in ("bash", "python"):
                continue
            where = f"{page.name}: {code.splitlines()[0]}"
            assert marker, f"{where}: mark it <!-- test: NAME --> (a test runs it) or <!-- test: skip: why -->"
            if marker.startswith("skip:"):
                assert len(marker) > len("skip: ") + 10, f"{where}: say why no test runs it"
            else:
                assert marker in RUN_BY, f"{where}: {marker!r} is none of {sorted(RUN_BY)}"


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
