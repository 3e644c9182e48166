"""``doctor`` on what the host says about bubblewrap's user namespace (issue 50, "bubblewrap where users
are"): Ubuntu's AppArmor rule (``kernel.apparmor_restrict_unprivileged_userns``), the kernel's other
switches and the markers of a container, each read from a temporary root that holds the files the
kernel and the runtimes write (process/userns.Host); and ``doctor --fix`` installing the AppArmor
profile into that root with a fake ``apparmor_parser`` that records its argv. The real command line
is run once against this machine: ``--fix`` never changes it without an answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli.doctor import Level, Report, check_host, fix_bubblewrap, render
from orchestrator.process import backends, userns
from orchestrator.process.sandbox import LANDLOCK_TABLE, Backend, SandboxMode, SandboxNetwork, Support, decide

from .conftest import ROOT

BWRAP = "/usr/bin/bwrap"
PROFILE = "/etc/apparmor.d/bwrap-orchestrator"
LANDLOCK = Support(
    None,
    backend=Backend.LANDLOCK,
    landlock_abi=6,
    bwrap_reason="bubblewrap cannot start here: setting up uid map: Permission denied",
)
BUBBLEWRAP = Support(BWRAP)


def host_root(tmp_path: Path, *, restrict: str | None = None, **files: str) -> Path:
    """A root holding ``/proc/sys/kernel/apparmor_restrict_unprivileged_userns`` = ``restrict`` (absent
    when None), /etc/apparmor.d, and ``files`` (keys: paths with ``__`` for ``/``)."""
    root = tmp_path / "root"
    (root / "etc/apparmor.d").mkdir(parents=True, exist_ok=True)
    (root / "proc/sys/kernel").mkdir(parents=True, exist_ok=True)
    if restrict is not None:
        (root / userns.RESTRICT.lstrip("/")).write_text(f"{restrict}\n")
    for key, text in files.items():
        path = root / key.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def fake_parser(tmp_path: Path, *, fails: bool = False) -> tuple[Path, Path]:
    """An ``apparmor_parser`` that writes its argv, one per line, to the returned record (and fails
    with a parser's message when ``fails``)."""
    record = tmp_path / "parser-argv"
    script = tmp_path / "apparmor_parser"
    body = 'echo "AppArmor parser error for $2 at line 5: syntax error" >&2; exit 1' if fails else "exit 0"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n{body}\n')
    script.chmod(0o755)
    return script, record


def findings(report: Report, topic: str) -> list[tuple[Level, str, str]]:
    return [(f.level, f.text, f.fix) for f in report.findings if f.topic == topic]


# ---- what doctor reads ---------------------------------------------------------------------------


def test_the_kernel_settings_are_read_from_their_proc_files(tmp_path):
    root = host_root(
        tmp_path,
        restrict="1",
        proc__sys__kernel__unprivileged_userns_clone="0\n",
        proc__sys__user__max_user_namespaces="0\n",
    )
    facts = userns.read(userns.Host(root))
    assert (facts.restrict_userns, facts.userns_clone, facts.max_user_namespaces) == (1, 0, 0)
    assert facts.container == "" and facts.markers == () and not facts.seccomp and facts.apparmor == ""
    said = userns.causes(facts)
    assert said[0].startswith("kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 23.10+)"), said
    assert "`sysctl kernel.unprivileged_userns_clone=1`" in said[1] and "`sysctl user.max_user_namespaces=10000`" in said[2]
    # No file: no such setting (a kernel without Ubuntu's patch), not a guess.
    bare = userns.read(userns.Host(host_root(tmp_path / "bare")))
    assert (bare.restrict_userns, bare.userns_clone, bare.max_user_namespaces) == (None, None, None)
    assert userns.causes(bare) == []


@pytest.mark.parametrize(
    ("files", "kind", "marker"),
    [
        ({".dockerenv": ""}, "docker", "/.dockerenv"),
        ({"run__.containerenv": "engine=podman"}, "podman", "/run/.containerenv"),
        ({"proc__1__environ": "PATH=/bin\0container=lxc\0HOME=/"}, "lxc", "container=lxc in /proc/1/environ"),
        ({"proc__1__cgroup": "0::/kubepods/besteffort/pod1234/abcd\n"}, "kubepods", "kubepods in /proc/1/cgroup"),
    ],
    ids=["docker", "podman", "environ", "cgroup"],
)
def test_each_container_marker_is_found(tmp_path, files, kind, marker):
    facts = userns.read(userns.Host(host_root(tmp_path, **files)))
    assert facts.container == kind and facts.markers == (marker,), facts


def test_the_container_s_seccomp_filter_and_apparmor_label_are_read(tmp_path):
    root = host_root(
        tmp_path,
        **{
            ".dockerenv": "",
            "proc__self__status": "Name:\tpython\nSeccomp:\t2\nSeccomp_filters:\t1\n",
            "proc__self__attr__current": "docker-default (enforce)\n",
        },
    )
    facts = userns.read(userns.Host(root))
    assert facts.seccomp and facts.apparmor == "docker-default (enforce)", facts
    advice = userns.container_advice(facts)
    assert "its seccomp filter refuses unshare()" in advice and "(docker-default (enforce)) refuses mount()" in advice
    assert "--security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined" in advice
    # An unconfined label and no filter: nothing claimed about either.
    plain = host_root(tmp_path / "plain", **{"proc__self__status": "Seccomp:\t0\n", "proc__self__attr__current": "unconfined\n"})
    facts = userns.read(userns.Host(plain))
    assert not facts.seccomp and facts.apparmor == ""


# ---- what doctor says ----------------------------------------------------------------------------


def test_ubuntu_s_rule_with_landlock_running_shows_the_profile_and_where_it_goes(tmp_path):
    root = host_root(tmp_path, restrict="1")
    report = Report(tmp_path / "config.yaml")
    check_host(report, LANDLOCK, userns.Host(root, apparmor_parser="/usr/sbin/apparmor_parser", euid=1000), BWRAP)
    [(level, text, fix)] = findings(report, "apparmor")
    assert level is Level.NOTE and "kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 23.10+)" in text, text
    assert f"{BWRAP} has none, so bubblewrap cannot start: Landlock runs instead (the sandbox line above)" in text, text
    assert "doctor --fix" in fix
    assert findings(report, "container") == []
    plan = report.apparmor
    assert plan is not None and plan.verdict is userns.Verdict.FIX and plan.fix is not None
    assert plan.fix.shown == PROFILE and plan.fix.command == ("/usr/sbin/apparmor_parser", "-r", PROFILE)
    content = plan.fix.content
    assert "abi <abi/4.0>,\ninclude <tunables/global>\n" in content, content
    assert f"profile bwrap {BWRAP} flags=(unconfined) {{\n  userns,\n" in content, content
    assert "  include if exists <local/bwrap>\n}\n" in content, content
    shown = render(report)
    assert f"  file {PROFILE}:" in shown and f"    profile bwrap {BWRAP} flags=(unconfined) {{" in shown, shown
    assert f"  then: /usr/sbin/apparmor_parser -r {PROFILE}" in shown, shown
    assert report.to_dict()["apparmor_fix"] == {
        "verdict": "fix",
        "reason": plan.reason,
        "path": PROFILE,
        "content": content,
        "command": ["/usr/sbin/apparmor_parser", "-r", PROFILE],
    }
    assert not (root / PROFILE.lstrip("/")).exists()  # doctor alone changes nothing


def test_ubuntu_s_rule_as_root_says_an_ordinary_user_s_bubblewrap_is_refused(tmp_path):
    root = host_root(tmp_path, restrict="1")
    report = Report(tmp_path / "config.yaml")
    check_host(report, BUBBLEWRAP, userns.Host(root, apparmor_parser="/sbin/apparmor_parser", euid=0), BWRAP)
    [(level, text, _)] = findings(report, "apparmor")
    assert level is Level.NOTE and "bubblewrap starts for root, but an ordinary user's is refused" in text, text
    assert report.apparmor is not None and report.apparmor.verdict is userns.Verdict.FIX
    # Installed and loaded (the kernel's list names it): nothing to fix, said as ok.
    (root / PROFILE.lstrip("/")).write_text(userns.profile(BWRAP))
    loaded = root / userns.LOADED_PROFILES.lstrip("/")
    loaded.parent.mkdir(parents=True)
    loaded.write_text("docker-default (enforce)\nbwrap (unconfined)\n")
    report = Report(tmp_path / "config.yaml")
    check_host(report, BUBBLEWRAP, userns.Host(root, apparmor_parser="/sbin/apparmor_parser", euid=0), BWRAP)
    assert findings(report, "apparmor") == [
        (
            Level.OK,
            f"kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 23.10+): nothing to fix: {PROFILE} is installed and loaded",
            "",
        )
    ]
    assert "AppArmor profile for bubblewrap" not in render(report)


def test_a_docker_container_that_refuses_namespaces_says_landlock_runs_and_how_to_get_bubblewrap(tmp_path):
    root = host_root(
        tmp_path,
        **{".dockerenv": "", "proc__self__status": "Seccomp:\t2\n", "proc__self__attr__current": "docker-default (enforce)"},
    )
    report = Report(tmp_path / "config.yaml")
    check_host(report, LANDLOCK, userns.Host(root, euid=0), BWRAP)
    [(level, text, fix)] = findings(report, "container")
    assert level is Level.NOTE and text.startswith("in a Docker container (/.dockerenv): bubblewrap cannot start here"), text
    assert "Landlock runs (ABI 6): this mode cannot hide a readable file" in text, text
    assert "its seccomp filter refuses unshare()" in fix and "--security-opt seccomp=unconfined" in fix, fix
    assert findings(report, "apparmor") == [] and report.apparmor is None


def test_a_container_that_gives_namespaces_says_bubblewrap_runs(tmp_path):
    root = host_root(tmp_path, **{"run__.containerenv": ""})
    report = Report(tmp_path / "config.yaml")
    check_host(report, BUBBLEWRAP, userns.Host(root, euid=1000), BWRAP)
    assert findings(report, "container") == [
        (Level.OK, "in a Podman container (/run/.containerenv): it lets bubblewrap create its namespaces, so bubblewrap runs", "")
    ]


def test_no_rule_and_no_container_adds_nothing_but_a_kernel_switch_that_refuses(tmp_path):
    report = Report(tmp_path / "config.yaml")
    check_host(report, BUBBLEWRAP, userns.Host(host_root(tmp_path, restrict="0")), BWRAP)
    assert report.findings == [] and report.apparmor is None
    root = host_root(tmp_path / "debian", proc__sys__kernel__unprivileged_userns_clone="0")
    none = Support(None, "bwrap cannot create a sandbox here: No permissions to create new namespace")
    report = Report(tmp_path / "config.yaml")
    check_host(report, none, userns.Host(root), BWRAP)
    [(level, text, _)] = findings(report, "userns")
    assert level is Level.NOTE and "`sysctl kernel.unprivileged_userns_clone=1`" in text


# ---- doctor --fix --------------------------------------------------------------------------------


def run_fix(root: Path, parser: Path, *, euid: int = 0, answer: str | None = None, yes: bool = False, starts: bool = False):
    """``fix_bubblewrap`` with ``answer`` typed at its prompt (None: no prompt expected); (code, lines, prompts)."""
    lines: list[str] = []
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        if answer is None:
            raise AssertionError(f"asked {prompt!r} where no question was expected")
        return answer

    host = userns.Host(root, apparmor_parser=str(parser), euid=euid)
    code = fix_bubblewrap(host, bwrap=BWRAP, starts=starts, yes=yes, ask=ask, out=lines.append)
    return code, "\n".join(lines), prompts


def test_fix_not_confirmed_changes_nothing(tmp_path):
    root = host_root(tmp_path, restrict="1")
    parser, record = fake_parser(tmp_path)
    for answer in ("", "n", "no", "whatever"):
        code, out, prompts = run_fix(root, parser, answer=answer)
        assert code == 1 and prompts == ["Make this change? [y/N] "], (answer, out)
        assert "not confirmed: nothing changed" in out, out
        assert f"  file {PROFILE}:" in out and f"  then: {parser} -r {PROFILE}" in out, out  # shown before asking
    assert sorted(p.name for p in (root / "etc/apparmor.d").iterdir()) == [] and not record.exists()


def test_fix_with_no_answer_at_all_changes_nothing(tmp_path):
    root = host_root(tmp_path, restrict="1")
    parser, record = fake_parser(tmp_path)
    lines: list[str] = []

    def closed(prompt: str) -> str:
        raise EOFError

    host = userns.Host(root, apparmor_parser=str(parser), euid=0)
    assert fix_bubblewrap(host, bwrap=BWRAP, starts=False, ask=closed, out=lines.append) == 1
    assert "nothing changed" in lines[-1] and not record.exists() and not (root / PROFILE.lstrip("/")).exists()


@pytest.mark.parametrize("how", ["answered y", "--yes"])
def test_fix_confirmed_writes_the_exact_profile_and_loads_it(tmp_path, how):
    root = host_root(tmp_path, restrict="1")
    parser, record = fake_parser(tmp_path)
    code, out, prompts = run_fix(root, parser, answer="y" if how == "answered y" else None, yes=how == "--yes")
    assert code == 0, out
    target = root / PROFILE.lstrip("/")
    assert target.read_text() == userns.profile(BWRAP)
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert record.read_text().splitlines() == ["-r", str(target)]
    assert f"doctor --fix: wrote {PROFILE}" in out and f"doctor --fix: ran `{parser} -r {PROFILE}`: the profile is loaded" in out
    assert prompts == ([] if how == "--yes" else ["Make this change? [y/N] "])
    assert [p.name for p in (root / "etc/apparmor.d").iterdir()] == ["bwrap-orchestrator"]  # no temporary file left


def test_fix_not_root_is_refused_naming_sudo(tmp_path):
    root = host_root(tmp_path, restrict="1")
    parser, record = fake_parser(tmp_path)
    code, out, prompts = run_fix(root, parser, euid=1000)
    assert code == 1 and prompts == [], out
    assert "refused: writing /etc/apparmor.d/bwrap-orchestrator and loading it needs root" in out, out
    assert f"run `sudo {sys.executable} -m orchestrator doctor --fix`" in out, out
    assert f"`sudo {parser} -r {PROFILE}`" in out and "Nothing changed." in out, out
    assert not record.exists() and not (root / PROFILE.lstrip("/")).exists()


def test_fix_refuses_when_there_is_nothing_to_fix_or_apparmor_is_not_the_cause(tmp_path):
    parser, record = fake_parser(tmp_path)
    code, out, _ = run_fix(host_root(tmp_path / "a", restrict="0"), parser, starts=True)
    assert (
        code == 0
        and out == "doctor --fix: nothing to fix: bubblewrap starts here (kernel.apparmor_restrict_unprivileged_userns: 0)"
    )
    docker = host_root(tmp_path / "b", **{".dockerenv": "", "proc__self__status": "Seccomp:\t2\n"})
    code, out, _ = run_fix(docker, parser)
    assert code == 1 and "cannot fix this: kernel.apparmor_restrict_unprivileged_userns is absent" in out, out
    assert "a Docker container (/.dockerenv): its seccomp filter refuses unshare()" in out, out
    # Another profile already names bwrap (Ubuntu's bwrap-userns-restrict, a user's own): not a second one.
    other = host_root(tmp_path / "c", restrict="1", **{"etc__apparmor.d__bwrap": f"profile bwrap {BWRAP} {{\n  userns,\n}}\n"})
    code, out, _ = run_fix(other, parser)
    assert code == 1 and f"/etc/apparmor.d/bwrap already names {BWRAP}" in out, out
    assert not record.exists() and not (other / PROFILE.lstrip("/")).exists()
    # A parser that is not there: the profile is taken back out.
    missing = host_root(tmp_path / "d", restrict="1")
    code, out, _ = run_fix(missing, tmp_path / "no-such-parser", answer="y")
    assert code == 1 and f"`{tmp_path / 'no-such-parser'} -r {PROFILE}` did not run" in out, out
    assert f"removed {PROFILE} again: nothing changed" in out and not (missing / PROFILE.lstrip("/")).exists()


def test_a_parser_that_fails_leaves_the_machine_as_it_was(tmp_path):
    root = host_root(tmp_path, restrict="1")
    parser, record = fake_parser(tmp_path, fails=True)
    code, out, _ = run_fix(root, parser, yes=True)
    assert code == 1, out
    assert f"`{parser} -r {PROFILE}` failed: AppArmor parser error for" in out and "syntax error" in out, out
    assert f"removed {PROFILE} again: nothing changed" in out, out
    assert record.read_text().splitlines() == ["-r", str(root / PROFILE.lstrip("/"))]
    assert not (root / PROFILE.lstrip("/")).exists()


def test_an_installed_profile_not_loaded_is_loaded_without_rewriting(tmp_path):
    root = host_root(tmp_path, restrict="1")
    target = root / PROFILE.lstrip("/")
    target.write_text(userns.profile(BWRAP))
    os.utime(target, (1_000_000, 1_000_000))
    parser, record = fake_parser(tmp_path)
    code, out, _ = run_fix(root, parser, yes=True)
    assert code == 0 and "installed already, as above (not loaded)" in out and "wrote" not in out, out
    assert record.read_text().splitlines() == ["-r", str(target)]
    assert target.stat().st_mtime == 1_000_000 and target.read_text() == userns.profile(BWRAP)


# ---- the real command line on this machine -------------------------------------------------------


def doctor_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env.update({"HOME": str(tmp_path), "PYTHONPATH": str(ROOT)})
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "doctor", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_the_real_fix_never_changes_this_machine_without_an_answer(tmp_path):
    profile = Path(PROFILE)
    before = profile.read_bytes() if profile.exists() else None
    done = doctor_cli(tmp_path, "--fix")
    assert done.returncode in (0, 1) and done.stdout.startswith("doctor --fix"), (done.stdout, done.stderr)
    assert "wrote" not in done.stdout and "ran `" not in done.stdout, done.stdout
    assert (profile.read_bytes() if profile.exists() else None) == before
    for args, said in (
        (["--yes"], "--yes confirms doctor --fix"),
        (["--fix", "--json"], "--fix changes this machine alone"),
    ):
        done = doctor_cli(tmp_path, *args)
        assert done.returncode == 2 and said in done.stderr, (args, done.stderr)


# ---- the start-up note under Landlock ------------------------------------------------------------


@pytest.mark.parametrize("network", list(SandboxNetwork))
def test_the_landlock_note_names_what_it_does_not_hold_and_where_the_table_is(network):
    decision = decide(SandboxMode.AUTO, LANDLOCK, network=network)
    note = decision.note
    assert note.startswith("workers run sandboxed (Landlock ABI 6, bubblewrap cannot start here"), note
    assert (
        "not held here as under bubblewrap: private CLI state folders, the project view (what leads a gate to your checkout fails it instead), a PID namespace"
        in note
    )
    assert "other trees' branches" not in note  # a resolver's and the result gate's git dirs are their own too
    assert note.endswith(f"(the table: {LANDLOCK_TABLE})"), note
    assert ("an address filter (its rules name ports" in note) is (network is SandboxNetwork.ALLOW), note


def test_the_table_the_note_points_to_is_a_heading_of_docs_sandbox_md():
    path, anchor = LANDLOCK_TABLE.split("#")
    text = (ROOT / path).read_text()
    slugs = {
        "-".join("".join(c for c in line.lstrip("#").strip().lower() if c.isalnum() or c in " -").split())
        for line in text.splitlines()
        if line.startswith("#")
    }
    assert anchor in slugs, sorted(slugs)
    table = text.split("### Where bubblewrap cannot start", 1)[1].split("\n### ", 1)[0]
    assert "| promise | bubblewrap | Landlock |" in table


def test_bubblewraps_refusal_names_what_this_host_says_refuses_it(tmp_path):
    """The probe's sentence (the start-up note's, ``workers.sandbox: on``'s refusal): this host's own
    causes where it shows any (here a container, Ubuntu's rule, a kernel switch), else the general fix."""
    folder = tmp_path / "bin"
    folder.mkdir()
    fake = folder / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    backends.forget_probes()
    try:
        found = backends.probe("bwrap", backend="bubblewrap", path=str(folder))
    finally:
        backends.forget_probes()
    assert not found.available
    known = userns.causes(userns.read(userns.Host()))
    assert found.reason == (
        f"bwrap cannot create a sandbox here: bwrap: setting up uid map: Permission denied "
        f"({'; '.join(known) or backends.HOW_TO_ENABLE})"
    ), found.reason
