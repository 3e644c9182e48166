"""network/egress.py: an attempt's plan, its listeners (a Unix socket folder for a sandbox with a
network namespace of its own, a loopback port without one), the environment and bridge line it
hands the worker, the refusal lines in its log, and listening again after a restart. Real sockets on
127.0.0.1 only."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

import pytest

from orchestrator.network import egress
from orchestrator.network.egress import EgressPlan, open_egress, plan_for, reopen_egress
from orchestrator.network.policy import Endpoint
from orchestrator.network.proxy import Outcome, Refusal

from .helpers.echo import echo_server


@pytest.fixture
def echo():
    """A loopback server that answers each connection with b"hi" and closes."""
    with echo_server() as port:
        yield port


@pytest.fixture(autouse=True)
def short_tmp(monkeypatch):
    """A temp folder of the test's, short enough to hold the socket folders (they need < 108 bytes)."""
    folder = tempfile.mkdtemp(prefix="egress-", dir="/tmp")
    monkeypatch.setattr(egress.tempfile, "gettempdir", lambda: folder)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def test_the_plan_takes_the_users_list_the_kinds_hosts_and_the_endpoints_its_settings_name():
    plan = plan_for(
        ["pypi.org", "127.0.0.1:4873", "*.npmjs.org"],
        ["api.anthropic.com", "pypi.org"],
        ["https://gateway.example.com/v1", "not a url", "http://127.0.0.1:8000/x"],
        api_url="http://127.0.0.1:8000",
    )
    assert plan.allow == ("pypi.org", "127.0.0.1:4873", "*.npmjs.org", "api.anthropic.com")
    assert plan.always == (
        Endpoint("127.0.0.1", 8000, "this server's API"),
        Endpoint("gateway.example.com", 443, "the model API its settings name"),
    )
    assert plan.policy().check_name("127.0.0.1", 8000).reason == "this server's API"
    # The loopback ones, the orchestrator's and those listed with a port, are at their own port inside.
    assert plan.forwarded() == [("127.0.0.1", 8000), ("127.0.0.1", 4873)]
    assert EgressPlan.from_dict(plan.to_dict()) == plan
    assert plan.policy().check_name("registry.npmjs.org", 443).allowed
    assert not plan.policy().check_name("example.org", 443).allowed


def test_equal_plans_share_one_compiled_policy_and_a_bad_entry_is_refused_every_time():
    """Every attempt of a kind has the same plan: its allow-list is compiled once, not twice per
    attempt. What is shared never changes; what a caller may change (the forwarded list) is its own."""
    first = plan_for(["pypi.org", "127.0.0.1:4873"], ["api.anthropic.com"], [], api_url="http://127.0.0.1:8000")
    again = EgressPlan.from_dict(first.to_dict())
    assert again is not first and again.policy() is first.policy()
    assert plan_for(["pypi.org"], [], []).policy() is not first.policy()  # another list, another policy
    mine = again.forwarded()
    mine.append(("127.0.0.1", 1))
    assert first.forwarded() == [("127.0.0.1", 8000), ("127.0.0.1", 4873)]
    bad = EgressPlan(allow=("pypi.org", "https://"))
    for _ in range(2):  # a refusal is not remembered as a policy
        with pytest.raises(ValueError):
            bad.policy()


def connect(port: int, target: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(1024)
            if not chunk:
                break
            data += chunk
        if b" 200 " in data.split(b"\r\n", 1)[0]:
            data += s.recv(10)
        return data


def test_a_namespace_gets_a_private_socket_folder_a_bridge_line_and_the_proxy_variables(tmp_path, echo):
    log = tmp_path / "worker.log"
    log.write_text("")
    plan = EgressPlan(allow=(f"127.0.0.1:{echo}",), always=(Endpoint("127.0.0.1", 8000),))
    opened = open_egress(plan, key="tag-1", log_path=log)
    try:
        folder = opened.folder
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["plan.json", "proxy.sock", "127.0.0.1-8000.sock", f"127.0.0.1-{echo}.sock"]
        )
        assert opened.bridge.split() == [
            "127.0.0.1:3128=/run/orchestrator-net/proxy.sock",
            "127.0.0.1:8000=/run/orchestrator-net/127.0.0.1-8000.sock",
            f"127.0.0.1:{echo}=/run/orchestrator-net/127.0.0.1-{echo}.sock",
        ]
        assert opened.env["HTTPS_PROXY"] == opened.env["npm_config_https_proxy"] == "http://127.0.0.1:3128"
        assert opened.env["NO_PROXY"] == "localhost,127.0.0.1,::1"
        # The forwarded socket carries raw bytes to its endpoint.
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(folder / f"127.0.0.1-{echo}.sock"))
            assert s.recv(2) == b"hi"
    finally:
        opened.close()
    deadline = time.monotonic() + 5
    while folder.exists() and time.monotonic() < deadline:  # removed by the proxy's thread, soon
        time.sleep(0.01)
    assert not folder.exists()


def test_without_a_namespace_a_loopback_port_of_its_own_and_each_refusal_in_the_log(tmp_path, echo):
    log = tmp_path / "worker.log"
    log.write_text("")
    plan = EgressPlan(allow=(f"127.0.0.1:{echo}",), always=(Endpoint("127.0.0.1", 8000),))
    opened = open_egress(plan, key="tag-2", log_path=log, namespace=False)
    try:
        port = opened.ports[0]
        assert opened.ports == [port, 8000, echo] and port not in (3128, 0)
        assert opened.bridge == "" and opened.env["HTTP_PROXY"] == f"http://127.0.0.1:{port}"
        assert connect(port, f"127.0.0.1:{echo}").endswith(b"hi")
        assert b" 403 " in connect(port, "127.0.0.9:9")
        assert b" 403 " in connect(port, "127.0.0.9:9")
    finally:
        opened.close()
    lines = log.read_text().splitlines()
    assert all(line.startswith("[orchestrator] network: refused 127.0.0.9:9: ") for line in lines) and len(lines) == 2, lines
    assert lines[1].endswith("(2 so far)"), lines


def test_a_restarted_server_listens_again_in_the_same_folder(tmp_path, echo):
    plan = EgressPlan(allow=(f"127.0.0.1:{echo}",))
    first = open_egress(plan, key="tag-3", log_path=None)
    for listener in first.listeners:  # the server died: its listeners are gone, the folder stays
        listener.close()
    again = reopen_egress("tag-3")
    assert again is not None and again.folder == first.folder and again.bridge == first.bridge
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(again.folder / f"127.0.0.1-{echo}.sock"))
            assert s.recv(2) == b"hi"
    finally:
        again.close()
    assert reopen_egress("no-such-attempt") is None


def test_a_refused_host_is_logged_and_recorded_ten_times_then_at_each_power_of_ten(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("")
    record = tmp_path / "state" / "worker.network.jsonl"
    record.parent.mkdir()
    report = egress.reporter(log, record)
    for count in range(1, 1001):
        report(Refusal("evil.example", 443, "not in workers.sandbox_allow", count))
    report(Refusal("gone.example", 443, "its name did not resolve: unknown", 1, Outcome.UNREACHABLE))
    counts = [int(line.rsplit("(", 1)[1].split()[0]) for line in log.read_text().splitlines()]
    assert counts == [*range(1, 11), 100, 1000]  # a host not reached is not in the worker's log
    entries = egress.read_record(record)
    assert [e.count for e in entries] == [*range(1, 11), 100, 1000, 1]
    assert (entries[-1].outcome, entries[-1].authority) == (Outcome.UNREACHABLE, "gone.example:443")
    assert entries[-1].line() == (
        "[orchestrator] network: allowed host gone.example:443 could not be reached: its name did not resolve: unknown (1 so far)"
    )
    assert record.stat().st_mode & 0o777 == 0o600
    assert egress.read_record(record, egress.record_size(record)) == []  # an attempt starting now: none of these


def test_a_socket_folder_another_user_could_reach_is_refused(short_tmp):
    base = short_tmp / f"orchestrator-net-{os.getuid()}"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    with pytest.raises(OSError, match="not a private folder"):
        egress.sockets_base()
    base.rmdir()
    target = short_tmp / "elsewhere"
    target.mkdir(mode=0o700)
    base.symlink_to(target)
    with pytest.raises(OSError, match="not a private folder"):
        egress.sockets_base()


def test_a_loopback_endpoint_below_port_1024_is_left_to_the_proxy_and_the_log_says_so(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("")
    opened = open_egress(EgressPlan(always=(Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 8000))), key="tag-low", log_path=log)
    try:
        assert [line.split("=")[0] for line in opened.bridge.split()] == ["127.0.0.1:3128", "127.0.0.1:8000"]
        assert not (opened.folder / "127.0.0.1-80.sock").exists()
    finally:
        opened.close()
    assert "127.0.0.1:80 is not shown in the sandbox" in log.read_text()


def test_a_socket_base_removed_after_it_was_checked_is_made_again(short_tmp):
    egress.sockets_base()
    shutil.rmtree(short_tmp / f"orchestrator-net-{os.getuid()}")
    opened = open_egress(EgressPlan(), key="tag-again", log_path=None)
    try:
        assert (opened.folder / "proxy.sock").exists()
    finally:
        opened.close()


def test_a_stale_socket_folder_is_made_afresh_and_a_closed_attempts_folder_goes_whatever_it_holds(short_tmp):
    # Given the folder a crashed server left for an attempt, with a file and a folder in it
    stale = egress._folder("tag-stale")
    (stale / "old").mkdir(parents=True)
    (stale / "plan.json").write_text("{}")
    opened = open_egress(EgressPlan(), key="tag-stale", log_path=None)
    # Then it is made afresh, holding the new listener and plan only
    assert sorted(os.listdir(opened.folder)) == ["plan.json", "proxy.sock"]
    (opened.folder / "left").mkdir()  # (something the proxy does not make: removed all the same)
    opened.close()
    deadline = time.monotonic() + 5  # (removed by the proxy's thread, soon)
    while opened.folder.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not opened.folder.exists()


def test_a_link_in_a_closed_attempts_socket_folder_goes_and_what_it_points_at_stays(short_tmp, tmp_path):
    # Given a link to a folder of the user's in an attempt's socket folder, and one to a file
    outside = tmp_path / "keep"
    outside.mkdir()
    (outside / "data").write_text("mine")
    opened = open_egress(EgressPlan(), key="tag-link", log_path=None)
    (opened.folder / "to-folder").symlink_to(outside)
    (opened.folder / "to-file").symlink_to(outside / "data")
    opened.close()
    deadline = time.monotonic() + 5
    while opened.folder.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    # Then the folder and its links are gone, and nothing they pointed at was touched
    assert not opened.folder.exists()
    assert (outside / "data").read_text() == "mine" and sorted(os.listdir(outside)) == ["data"]


def test_an_attempt_a_restarted_server_adopts_gets_its_listeners_again(tmp_path, echo):
    """The server that listened died (its listeners with it), the attempt's folder stayed: the runner
    of the next server, adopting the attempt, listens there again; the worker's bridge connects anew."""
    import subprocess as sp

    from orchestrator.process.procscan import process_start_id
    from orchestrator.process.runner import ProcessRunner

    tag = f"egress-adopt-{os.getpid()}"
    first = open_egress(EgressPlan(allow=(f"127.0.0.1:{echo}",)), key=tag, log_path=None)
    for listener in first.listeners:
        listener.close()  # the old server is gone
    assert not (first.folder / f"127.0.0.1-{echo}.sock").exists()
    alive = sp.Popen(["sleep", "30"])
    runner = ProcessRunner()
    try:
        handle = runner.adopt(alive.pid, process_start_id(alive.pid), tag=tag, started_at=time.time(), exit_file=None)
        assert handle.egress is not None and tag in runner.bridged
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(first.folder / f"127.0.0.1-{echo}.sock"))
            assert s.recv(2) == b"hi"
    finally:
        alive.kill()
        alive.wait()
        handle.poll()
        runner.release(handle)
    assert handle.egress is None and tag not in runner.bridged  # closed with the attempt's end


def test_a_base_url_a_worker_plants_in_its_clis_config_file_allows_nothing(tmp_path):
    """A codex worker writes its CODEX_HOME (its CLI's state: the real folder below bubblewrap 0.9 and
    under Landlock). A model provider it plants in config.toml must not open a host to the next worker:
    the endpoints always allowed come from the server's settings and environment only."""
    from orchestrator.config import load_settings
    from orchestrator.workers.adapters import get_adapter

    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text('[model_providers.x]\nbase_url = "http://exfil.example.com:8443/v1"\n')
    settings = load_settings(
        base_dir=tmp_path,
        environ={},
        overrides={"orchestrator": {"cli_args": ["-c", 'model_providers.m.base_url="http://127.0.0.1:4010/v1"']}},
    )
    urls = get_adapter("codex").model_urls(settings, {"CODEX_HOME": str(home), "OPENAI_BASE_URL": "https://gw.example.org/v1"})
    assert urls == ["https://gw.example.org/v1", "http://127.0.0.1:4010/v1"]  # the environment's and the settings' only
    plan = plan_for([], get_adapter("codex").network_hosts, urls)
    assert not plan.policy().check_name("exfil.example.com", 8443).allowed


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_direct_connection_guards_record_is_its_proxys_byte_for_byte(tmp_path, host):
    """network/direct.py writes its refusals without importing this module (the supervisor does, and
    imports little): the same log lines and record entries, the same throttle, which status reads."""
    from orchestrator.network import direct

    (tmp_path / "a.log").touch()
    (tmp_path / "b.log").touch()
    report = egress.reporter(tmp_path / "a.log", tmp_path / "a.jsonl")
    for count in (*range(1, 13), 100, 101):
        report(Refusal(host, 8080, direct.REASON, count))
        direct.record(str(tmp_path / "b.log"), str(tmp_path / "b.jsonl"), (host, 8080), count)
    assert direct.REFUSED_LINE == egress.REFUSED
    assert (tmp_path / "a.log").read_bytes() == (tmp_path / "b.log").read_bytes() != b""
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes() != b""


def test_a_replaced_registrations_file_takes_no_late_line_into_the_descriptor_number_it_had(tmp_path):
    """A registrations file found removed (a cleaner of /tmp) is replaced, and the old one's descriptor
    closed. A thread that took the old journal just before (``_Shared.unregister`` reads it unlocked)
    then writes its end line: never through that number, which the next open in the process reuses (a
    sandboxed git's seccomp memfd: bwrap then read a program cut short, "Invalid seccomp data, must be
    multiple of 8"). The line lands in the new file, and the registration ends there."""
    old = egress._Journal(tmp_path)
    old.add("k", b'{"key": "k"}\n')
    number = old._fd
    old.path.unlink()  # the cleaner of /tmp
    new = egress._Journal(tmp_path, old)  # as _Shared._folder replaces it
    reused = os.memfd_create("next-open")  # the lowest free number: the old journal's, unless a thread took it
    if reused != number:
        with pytest.raises(OSError):
            os.fstat(number)  # closed by the replacement, and still free: the memfd goes there
        os.dup2(reused, number)
        os.close(reused)
        reused = number
    try:
        old.end("k")  # the thread that took the old journal before the replacement
        assert os.fstat(reused).st_size == 0
        assert "k" not in egress._replay(new.path)
    finally:
        os.close(reused)
        new._close()
