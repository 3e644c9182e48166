"""The macOS Seatbelt profile (process/seatbelt.py), read back on Linux: its structure (deny by
default, writes only to the listed parameters, each deny after the allow it narrows, the network
choices, Unix sockets), every path passed as a ``-D`` parameter or a correctly quoted literal, and
sandbox-exec's argv. One test runs a profile for real where ``/usr/bin/sandbox-exec`` exists (macOS)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.process import seatbelt
from orchestrator.process.sandbox import SandboxNetwork, SandboxSpec


# -- a small SBPL reader: the profile as nested lists ----------------------------------------------
class Str(str):
    """A string literal read from the profile (as opposed to a symbol)."""


def read(text: str) -> list:
    """The top-level forms of ``text`` (comments dropped; strings unescaped as SBPL's reader does)."""
    stack: list[list] = [[]]
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char == ";":
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        elif char == "(":
            stack.append([])
            i += 1
        elif char == ")":
            assert len(stack) > 1, f"unbalanced ')' at {i}"
            done = stack.pop()
            stack[-1].append(done)
            i += 1
        elif char == '"' or text.startswith('#"', i):
            i += 2 if char == "#" else 1
            out = []
            while text[i] != '"':
                if text[i] == "\\":
                    nxt = text[i + 1]
                    if nxt == "x":
                        out.append(chr(int(text[i + 2 : i + 4], 16)))
                        i += 4
                        continue
                    out.append(nxt)
                    i += 2
                    continue
                assert text[i] != "\n", "a raw newline inside a string"
                out.append(text[i])
                i += 1
            stack[-1].append(Str("".join(out)))
            i += 1
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in '();"':
                i += 1
            stack[-1].append(text[start:i])
    assert len(stack) == 1, "unbalanced '('"
    return stack[0]


def rules(profile: str, action: str, operation: str) -> list[tuple[int, list]]:
    """(position, rule) of each top-level ``(action ... operation ...)``."""
    return [(n, f) for n, f in enumerate(read(profile)) if f[0] == action and operation in f[1:] and isinstance(f, list)]


def params_in(form) -> list[str]:
    """The names of every ``(param "NAME")`` inside ``form``."""
    if not isinstance(form, list):
        return []
    if len(form) == 2 and form[0] == "param":
        return [form[1]]
    return [name for part in form for name in params_in(part)]


# -- the spec every test starts from --------------------------------------------------------------
@pytest.fixture
def tree(tmp_path):
    """A checkout (writable, its ``.git`` read-only), the orchestrator's folder with a hidden
    config.yaml, a workspace shown emptied with one kept file, a TMPDIR."""
    checkout = tmp_path / "workspace" / "job_1" / "checkout"
    (checkout / ".git").mkdir(parents=True)
    tmp = tmp_path / "workspace" / "job_1" / "tmp"
    tmp.mkdir()
    (tmp_path / "workspace" / "shared.txt").write_text("kept")
    (tmp_path / "config.yaml").write_text("api_key: secret")
    return {
        "checkout": str(checkout),
        "git": str(checkout / ".git"),
        "tmp": str(tmp),
        "config": str(tmp_path / "config.yaml"),
        "workspace": str(tmp_path / "workspace"),
        "kept": str(tmp_path / "workspace" / "shared.txt"),
    }


def make_spec(tree, **changes) -> SandboxSpec:
    fields = {
        "bwrap": "",
        "writable": (tree["checkout"], tree["tmp"]),
        "readonly": (tree["git"],),
        "hidden": (tree["config"],),
        "emptied": (tree["workspace"],),
        "kept": (tree["kept"],),
    }
    return SandboxSpec(**{**fields, **changes})


def values(spec, **kw) -> dict[str, str]:
    return dict(seatbelt.parameters(spec, **kw))


# -- structure ------------------------------------------------------------------------------------
def test_the_profile_denies_by_default_before_any_allow(tree):
    forms = read(seatbelt.profile(make_spec(tree)))
    assert forms[0] == ["version", "1"]
    assert forms[1] == ["deny", "default"]
    assert ["allow", "signal", ["target", "same-sandbox"]] in forms
    assert ["allow", "process-info*", ["target", "same-sandbox"]] in forms
    assert not any(f[:2] == ["allow", "default"] for f in forms)
    assert not any(f[:2] == ["allow", "mach-lookup"] and len(f) == 2 for f in forms), "no mach-lookup of any service"


def test_writes_are_granted_only_to_the_listed_parameters_and_the_devices(tree):
    spec = make_spec(tree)
    profile = seatbelt.profile(spec)
    names = values(spec)
    granted = [name for _, rule in rules(profile, "allow", "file-write*") for name in params_in(rule)]
    assert granted and all(name.startswith("WRITABLE_") for name in granted)
    assert {names[n] for n in granted} == {*seatbelt.forms(tree["checkout"]), *seatbelt.forms(tree["tmp"])}
    # Every other write grant names a device or the process's own descriptors, never a parameter.
    for _, rule in rules(profile, "allow", "file-write-data"):
        assert params_in(rule) == []
        for f in rule[2:]:
            assert f[0] == "regex" or f[1].startswith("/dev/"), rule
    assert ["allow", "file-write*"] not in read(profile)


def test_the_hidden_file_is_denied_after_every_read_allow_and_cannot_be_written(tree):
    spec = make_spec(tree)
    profile = seatbelt.profile(spec)
    names = values(spec)
    allows = [n for n, _ in rules(profile, "allow", "file-read*")]
    denied = [(n, rule) for n, rule in rules(profile, "deny", "file-read*") if any("HIDDEN" in p for p in params_in(rule))]
    assert len(denied) == 1 and denied[0][0] > max(allows)
    hidden = [n for n in params_in(denied[0][1])]
    assert {names[n] for n in hidden} == set(seatbelt.forms(tree["config"]))
    assert ["literal", ["param", hidden[0]]] in denied[0][1], "a file by literal"
    write_denies = [n for n, rule in rules(profile, "deny", "file-write*") if set(hidden) <= set(params_in(rule))]
    assert write_denies and min(write_denies) > max(n for n, _ in rules(profile, "allow", "file-write*"))


def test_the_emptied_workspace_is_unreadable_but_its_kept_file_and_own_paths_are_read_again(tree):
    spec = make_spec(tree)
    profile = seatbelt.profile(spec)
    names = values(spec)
    (deny_at, deny), *_ = [(n, r) for n, r in rules(profile, "deny", "file-read*") if "EMPTIED_0" in params_in(r)]
    assert ["subpath", ["param", "EMPTIED_0"]] in deny and names["EMPTIED_0"] == tree["workspace"]
    (again_at, again), *_ = [(n, r) for n, r in rules(profile, "allow", "file-read*") if params_in(r)]
    assert again_at > deny_at
    read_again = {names[n] for n in params_in(again)}
    assert tree["kept"] in read_again and tree["checkout"] in read_again and tree["git"] in read_again
    assert ["literal", ["param", next(n for n in params_in(again) if names[n] == tree["kept"])]] in again


def test_the_read_only_git_inside_the_checkout_is_denied_after_the_writable_grant(tree):
    spec = make_spec(tree)
    profile = seatbelt.profile(spec)
    names = values(spec)
    (grant_at, _), *_ = rules(profile, "allow", "file-write*")
    (deny_at, deny), *_ = [(n, r) for n, r in rules(profile, "deny", "file-write*") if "READONLY_0" in params_in(r)]
    assert deny_at > grant_at
    assert {names[n] for n in params_in(deny)} == set(seatbelt.forms(tree["git"]))
    # Nor can the checkout itself be moved away and made anew with a .git of the worker's.
    above = [r for _, r in rules(profile, "deny", "file-write-unlink")]
    assert above and tree["checkout"] in {names[n] for n in params_in(above[0])}
    assert "file-write-create" in above[0]


def test_a_fixed_file_is_written_in_place_only(tree):
    reflog = os.path.join(tree["checkout"], "logs", "HEAD")
    spec = make_spec(tree, fixed=(reflog,))
    profile = seatbelt.profile(spec)
    names = values(spec)
    fixed = [n for n, v in names.items() if n.startswith("FIXED_")]
    assert {names[n] for n in fixed} == set(seatbelt.forms(reflog))
    (deny_at, deny), *_ = [(n, r) for n, r in rules(profile, "deny", "file-write*") if set(fixed) <= set(params_in(r))]
    (allow_at, allow), *_ = [(n, r) for n, r in rules(profile, "allow", "file-write-data") if params_in(r)]
    assert deny_at > min(n for n, _ in rules(profile, "allow", "file-write*")) and allow_at > deny_at
    assert all(f[0] == "literal" for f in allow[2:])
    above = {names[n] for _, r in rules(profile, "deny", "file-write-unlink") for n in params_in(r)}
    assert os.path.join(tree["checkout"], "logs") in above, "logs/ cannot be moved away and replaced by a link"


def test_a_moved_pair_is_writable_where_its_writes_land_never_at_its_destination(tree, tmp_path):
    source, destination = tmp_path / "workers-objects", tmp_path / "repo" / ".git" / "objects"
    spec = make_spec(tree, moved=((str(source), str(destination)),))
    names = values(spec)
    writable = {v for n, v in names.items() if n.startswith("WRITABLE_")}
    assert str(source) in writable and str(destination) not in writable


# -- paths: parameters, both forms, and no way out of a string -----------------------------------
def test_a_path_with_quotes_backslashes_and_parentheses_reaches_sandbox_exec_only_as_a_parameter(tree, tmp_path):
    hostile = tmp_path / 'zq"x\\ (allow default) ")\n(allow file-write* (subpath "~"))' / "\\"
    (hostile / ".git").mkdir(parents=True)
    spec = make_spec(tree, writable=(str(hostile), tree["tmp"]), readonly=(str(hostile / ".git"),))
    argv = seatbelt.argv(spec, ["true"])
    profile = argv[2]
    assert str(hostile) not in profile and "zq" not in profile
    assert f"WRITABLE_0={hostile}" in argv, "passed verbatim, one argv entry"
    # The same shape with a plain path: the very same profile text.
    assert profile == seatbelt.profile(make_spec(tree))
    forms = read(profile)
    assert ["allow", "default"] not in forms and ["allow", "file-write*", ["subpath", Str("~")]] not in forms


@pytest.mark.parametrize("text", ["plain", 'a"b', "a\\b", 'a\\"b', '")(allow default)("', "tab\tnew\nline\x7f", "\\", '"', "é/ü"])
def test_quote_makes_a_literal_the_reader_reads_back_unchanged(text):
    quoted = seatbelt.quote(text)
    forms = read(f"(literal {quoted})")
    assert forms == [["literal", Str(text)]]
    assert "\n" not in quoted


def test_paths_through_tmp_and_var_are_given_in_both_forms():
    assert seatbelt.forms("/tmp/job/x") == ["/tmp/job/x", "/private/tmp/job/x"]
    assert "/private/var/folders/ab/T" in seatbelt.forms("/var/folders/ab/T")
    assert seatbelt.forms("/Users/me/repo/../repo/co") == ["/Users/me/repo/co"]


def test_a_link_is_given_as_itself_and_as_what_it_points_to(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    found = seatbelt.forms(str(tmp_path / "link" / "f"))
    assert found[0] == str(tmp_path / "link" / "f") and str(tmp_path / "real" / "f") in found


def test_argv_is_sandbox_exec_with_the_profile_its_parameters_and_the_command_unquoted(tree):
    spec = make_spec(tree)
    command = ["sh", "-c", "echo $HOME; rm -rf /", "--", "-D"]
    argv = seatbelt.argv(spec, command)
    assert argv[:3] == ["/usr/bin/sandbox-exec", "-p", seatbelt.profile(spec)]
    assert all(isinstance(a, str) for a in argv)
    split = argv.index("--")
    assert argv[split + 1 :] == command
    pairs = argv[3:split]
    assert pairs[0::2] == ["-D"] * (len(pairs) // 2)
    assert pairs[1::2] == [f"{k}={v}" for k, v in seatbelt.parameters(spec)]
    assert set(params_in(read(argv[2]))) == {k for k, _ in seatbelt.parameters(spec)}, "each one used"
    with pytest.raises(ValueError, match="no command"):
        seatbelt.argv(spec, [])


# -- network and Unix sockets ---------------------------------------------------------------------
def network_rules(profile: str) -> list[list]:
    return [f for f in read(profile) if any(str(op).startswith(("network", "system-socket")) for op in f[1:2])]


def test_the_host_network_is_all_of_it_but_unix_sockets_other_than_the_resolver(tree):
    forms = network_rules(seatbelt.profile(make_spec(tree, network=SandboxNetwork.HOST)))
    assert forms[:2] == [["allow", "network*"], ["allow", "system-socket"]]
    assert forms[2:] == [
        ["deny", "network-bind", ["local", "unix-socket"]],
        ["deny", "network-outbound", ["remote", "unix-socket"]],
        ["allow", "network-outbound", ["remote", "unix-socket", ["path-literal", Str("/private/var/run/mDNSResponder")]]],
    ]


def test_no_network_is_no_network_rule_at_all(tree):
    profile = seatbelt.profile(make_spec(tree, network=SandboxNetwork.NONE), proxy_ports=(8080,))
    assert network_rules(profile) == []
    assert "trustd" not in profile


def test_allow_opens_the_proxy_ports_on_loopback_only(tree):
    spec = make_spec(tree, network="allow")
    forms = network_rules(seatbelt.profile(spec, proxy_ports=(3128, 1080, 3128)))
    assert forms == [
        ["allow", "network-outbound", ["remote", "ip", Str("localhost:3128")]],
        ["allow", "network-outbound", ["remote", "ip", Str("localhost:1080")]],
    ]
    assert network_rules(seatbelt.profile(spec)) == [], "no proxy: no network"
    for bad in (0, 65536, "3128", True):
        with pytest.raises(ValueError, match="proxy port"):
            seatbelt.profile(spec, proxy_ports=(bad,))


def test_an_unknown_network_choice_is_refused(tree):
    with pytest.raises(ValueError, match="unknown sandbox network 'lan'"):
        seatbelt.profile(make_spec(tree, network="lan"))


@pytest.mark.parametrize("network", [SandboxNetwork.HOST, SandboxNetwork.NONE, "allow"])
def test_unix_sockets_on_opens_every_socket_path(tree, network):
    forms = network_rules(seatbelt.profile(make_spec(tree, network=network, unix_sockets=True), proxy_ports=(3128,)))
    assert forms[-3:] == [
        ["allow", "system-socket", ["socket-domain", "AF_UNIX"]],
        ["allow", "network-bind", ["local", "unix-socket"]],
        ["allow", "network-outbound", ["remote", "unix-socket"]],
    ]
    assert not any(f[0] == "deny" for f in forms)


@pytest.mark.parametrize("network", [SandboxNetwork.NONE, "allow"])
def test_unix_sockets_off_without_the_host_network_grants_no_socket(tree, network):
    forms = network_rules(seatbelt.profile(make_spec(tree, network=network), proxy_ports=(3128,)))
    assert not any("unix-socket" in str(f) or "AF_UNIX" in str(f) for f in forms)
    assert ["allow", "system-socket"] not in forms


# -- for real, on macOS ---------------------------------------------------------------------------
@pytest.mark.skipif(not seatbelt.available(), reason="macOS only: /usr/bin/sandbox-exec not found")
def test_sandbox_exec_runs_the_profile_and_holds_its_promises(tree):
    spec = make_spec(tree, network=SandboxNetwork.NONE)
    script = (
        'echo ok > "$1/new.txt" || exit 10; '
        'echo no > "$1/.git/config" 2>/dev/null && exit 11; '
        'cat "$2" 2>/dev/null && exit 12; '
        'echo no > "$3/escaped.txt" 2>/dev/null && exit 13; '
        "exit 0"
    )
    outside = os.path.dirname(tree["workspace"])
    argv = seatbelt.argv(spec, ["/bin/sh", "-c", script, "sh", tree["checkout"], tree["config"], outside])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert Path(tree["checkout"], "new.txt").read_text() == "ok\n"
    assert not Path(outside, "escaped.txt").exists()
    assert sys.platform == "darwin"


def test_on_macos_the_probe_and_the_decision_choose_seatbelt_and_say_it_is_untested(monkeypatch, tmp_path):
    from orchestrator.process import backends, sandbox

    monkeypatch.setattr(backends.sys, "platform", "darwin")
    monkeypatch.setattr(seatbelt, "available", lambda: True)
    backends.forget_probes()
    try:
        support = backends.probe()
        assert support.available and support.backend is sandbox.Backend.SEATBELT
        decision = sandbox.decide(sandbox.SandboxMode.AUTO, support, network=sandbox.SandboxNetwork.ALLOW)
        assert decision.spec is not None and decision.spec.backend is sandbox.Backend.SEATBELT
        assert "not tested on a Mac" in decision.note
        spec = replace(decision.spec, writable=(str(tmp_path),), egress_ports=(41234,), chdir=str(tmp_path))
        argv = backends.argv(spec, ["true"])
        assert argv[0] == seatbelt.SANDBOX_EXEC and argv[-2:] == ["--", "true"]
        assert "localhost:41234" in argv[2] or any("41234" in a for a in argv), argv  # the proxy's port, the one way out
        assert backends.probe(backend="landlock").available is False  # Linux's backends are not macOS's
        monkeypatch.setattr(seatbelt, "available", lambda: False)
        backends.forget_probes()
        assert not backends.probe().available and "sandbox-exec" in backends.probe().reason
    finally:
        backends.forget_probes()


def test_seatbelt_on_linux_is_refused_with_the_choices_that_work():
    from orchestrator.process import backends

    found = backends.probe(backend="seatbelt")
    assert not found.available and "macOS" in found.reason and "landlock" in found.reason
