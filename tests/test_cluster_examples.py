"""examples/cluster/ (docs/cluster.md): the config loads as the rq executor's, the systemd
units run the documented commands as an argv under a user that is not root (and systemd itself
finds nothing wrong in them), and the Redis snippet is one the real redis-server accepts."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cluster.connect import connect
from orchestrator.config import load_settings
from orchestrator.errors import ConfigError

from .conftest import ROOT
from .redisserver import RedisServer

CLUSTER = ROOT / "examples" / "cluster"
UNITS = ["orchestrator-server.service", "orchestrator-node@.service"]
FOLDER = "/srv/orchestrator"  # where the examples put the orchestrator folder


def unit(name: str) -> dict[str, list[str]]:
    """``Section.Key`` -> its values in order (systemd allows a key more than once)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in (CLUSTER / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def exec_start(name: str) -> list[str]:
    (line,) = unit(name)["Service.ExecStart"]
    return shlex.split(line)


def test_every_file_of_the_cluster_example_is_named_in_its_readme():
    listed = (CLUSTER / "README.md").read_text(encoding="utf-8")
    for path in CLUSTER.iterdir():
        if path.name != "README.md":
            assert f"`{path.name}`" in listed, path.name


def test_the_cluster_config_loads_as_the_rq_executors(tmp_path):
    settings = load_settings(CLUSTER / "config.cluster.yaml", base_dir=tmp_path, environ={})
    assert settings.distributed.executor == "rq"
    assert settings.distributed.redis_url.startswith("rediss://:")  # TLS and a password
    assert settings.api.public_url.startswith("https://") and settings.api.host == "127.0.0.1"
    assert settings.workspace_root == tmp_path / "workspace"  # in the folder, shared at the same path
    assert settings.workers.max_retries >= 1  # an attempt lost with its node has a retry to take


@pytest.mark.parametrize("name", UNITS)
def test_each_unit_runs_an_argv_from_the_folders_venv_as_a_user_that_is_not_root(name):
    found = unit(name)
    argv = exec_start(name)
    assert argv[0] == f"{FOLDER}/.venv/bin/python"  # an absolute interpreter, not a shell
    assert not {"sh", "bash", "-c", "/bin/sh", "/bin/bash"} & set(argv) and not any(c in " ".join(argv) for c in ";|&`")
    (user,) = found["Service.User"]
    assert user and user != "root" and user != "0"
    assert found["Service.WorkingDirectory"] == [FOLDER] and found["Unit.RequiresMountsFor"] == [FOLDER]
    assert found["Service.NoNewPrivileges"] == ["yes"]


def test_both_units_run_as_the_same_user():
    assert unit(UNITS[0])["Service.User"] == unit(UNITS[1])["Service.User"]


def test_the_server_unit_starts_the_documented_server_entry():
    argv = exec_start("orchestrator-server.service")
    assert argv[1:] == [f"{FOLDER}/api_server.py"]
    assert (ROOT / "api_server.py").is_file()
    assert "`python api_server.py`" in (ROOT / "docs" / "api.md").read_text(encoding="utf-8")  # docs: REST API


def test_the_node_unit_starts_a_node_with_every_variable_it_names_documented():
    argv = exec_start("orchestrator-node@.service")
    assert argv[1:4] == ["-m", "orchestrator", "node"]
    options = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert options == {"--slots": "${SLOTS}", "--kinds": "${KINDS}", "--name": "%H-%i"}  # no --redis: ps shows argv
    header = (CLUSTER / "orchestrator-node@.service").read_text(encoding="utf-8").split("[Unit]")[0]
    assert "ORCHESTRATOR__DISTRIBUTED__REDIS_URL=rediss://:" in header  # the password comes from the 0600 env file
    files = unit("orchestrator-node@.service")["Service.EnvironmentFile"]
    assert files == ["/etc/orchestrator/node.env", "/etc/orchestrator/node-%i.env"]
    for variable in re.findall(r"\$\{([A-Z_]+)\}", " ".join(argv)):
        assert re.search(rf"\b{variable}=", header), f"{variable} is not shown in an env file of the header"
    steps = (CLUSTER / "README.md").read_text(encoding="utf-8")
    for variable in ("ORCHESTRATOR__DISTRIBUTED__REDIS_URL=", "SLOTS=", "KINDS="):
        assert variable in steps


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name", UNITS)
def test_systemd_finds_nothing_wrong_in_the_units(name, tmp_path):
    # with the folder's path made this one's (systemd checks that the interpreter exists)
    text = (CLUSTER / name).read_text(encoding="utf-8").replace(FOLDER, str(ROOT))
    path = tmp_path / name.replace("@.", "@main.")
    path.write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_the_redis_snippet_is_accepted_by_the_real_redis_server(tmp_path):
    server = RedisServer(tmp_path)  # skips (fails under CI) without redis-server
    snippet = (CLUSTER / "redis.conf").read_text(encoding="utf-8")
    directives = dict(line.split(None, 1) for line in snippet.splitlines() if line.strip() and not line.startswith("#"))
    assert directives["appendonly"] == "yes" and directives["protected-mode"] == "yes"
    assert "0.0.0.0" not in directives["bind"] and "requirepass" in directives
    # the snippet as a whole config, on this test's port and folder, with this test's password
    conf = tmp_path / "redis.conf"
    conf.write_text(
        re.sub(r"(?m)^bind .*$", "bind 127.0.0.1", snippet)
        .replace("port 6379", f"port {server.port}")
        .replace(directives["requirepass"], server.password)
        + f"\ndir {tmp_path}\ndaemonize no\nlogfile {tmp_path / 'redis.log'}\n"
    )
    process = subprocess.Popen([server.binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = None
        for _ in range(200):
            if process.poll() is not None:
                pytest.fail(f"redis-server refused the snippet: {(tmp_path / 'redis.log').read_text()[-1500:]}")
            try:
                client = connect(server.url)
                break
            except ConfigError:
                time.sleep(0.05)
        assert client is not None
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        with pytest.raises(ConfigError, match="requires a password"):
            connect(f"redis://127.0.0.1:{server.port}/0")
    finally:
        process.terminate()
        process.wait(20)


def readme_node_command() -> list[str]:
    """The node's command line in docs/cluster.md."""
    page = (ROOT / "docs" / "cluster.md").read_text(encoding="utf-8")
    (line,) = [line for line in page.splitlines() if line.startswith(".venv/bin/python -m orchestrator node")]
    return shlex.split(line)


def test_the_readmes_node_command_is_the_units():
    argv = readme_node_command()
    assert argv[0] == ".venv/bin/python" and argv[1:4] == ["-m", "orchestrator", "node"]
    assert set(argv[4::2]) <= set(exec_start("orchestrator-node@.service")[4::2])
    assert "--redis" not in argv  # the password stays out of argv (ps)
    page = (ROOT / "docs" / "cluster.md").read_text(encoding="utf-8")
    assert 'export ORCHESTRATOR__DISTRIBUTED__REDIS_URL="rediss://:' in page


def test_the_node_command_takes_the_options_the_unit_and_the_readme_give_it():
    if importlib.util.find_spec("orchestrator.cluster.node") is None:
        pytest.skip("`python -m orchestrator node` is not on this branch yet")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "node", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    for option in [*exec_start("orchestrator-node@.service")[4::2], "--prefix", "--lease"]:
        assert option in done.stdout, option  # the unit's, and docs/cluster.md's for the node


def test_the_examples_readme_mount_step_and_the_units_agree_on_the_folder():
    steps = (CLUSTER / "README.md").read_text(encoding="utf-8")
    assert f" {FOLDER}\n" in steps and "same uid" in steps  # the mount step mounts where the units look


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate for 127.0.0.1 signed by it (openssl, argv only)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (it makes the test's TLS certificates)")
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.crt", "redis.key", "redis.csr", "redis.crt"))
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    quiet = {"capture_output": True, "check": True, "timeout": 60}
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-subj",
            "/CN=test-ca",
            "-days",
            "1",
        ],
        **quiet,
    )
    subprocess.run(
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"], **quiet
    )
    subprocess.run(
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1"]
        + ["-extfile", folder / "san.ext"],
        **quiet,
    )
    return ca, cert, key


@pytest.mark.slow
def test_the_redis_snippets_tls_lines_serve_the_rediss_url_the_readme_shows(tmp_path):
    server = RedisServer(tmp_path)  # skips (fails under CI) without redis-server
    ca, cert, key = make_certificates(tmp_path)
    snippet = (CLUSTER / "redis.conf").read_text(encoding="utf-8")
    tls = re.sub(r"(?m)^# (tls-[a-z-]+ )", r"\1", snippet)  # the commented TLS lines turned on
    assert tls.count("\ntls-") == 5
    paths = {"/etc/redis/tls/redis.crt": cert, "/etc/redis/tls/redis.key": key, "/etc/redis/tls/ca.crt": ca}
    for shown, real in paths.items():
        tls = tls.replace(shown, str(real))
    conf = tmp_path / "redis.conf"
    conf.write_text(
        re.sub(r"(?m)^bind .*$", "bind 127.0.0.1", tls)
        .replace("port 6379", "port 0")  # TLS only, as the snippet suggests
        .replace("tls-port 6380", f"tls-port {server.port}")
        .replace(re.search(r"(?m)^requirepass (.*)$", tls).group(1), server.password)
        + f"\ndir {tmp_path}\ndaemonize no\nlogfile {tmp_path / 'redis.log'}\n"
    )
    process = subprocess.Popen([server.binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://:{server.password}@127.0.0.1:{server.port}/0"
    try:
        client = None
        for _ in range(200):
            if process.poll() is not None:
                pytest.fail(f"redis-server refused the TLS lines: {(tmp_path / 'redis.log').read_text()[-1500:]}")
            try:
                client = connect(f"{url}?ssl_ca_certs={ca}")  # a private CA, as the README's settings table says
                break
            except ConfigError:
                time.sleep(0.05)
        assert client is not None and client.ping()
        with pytest.raises(ConfigError, match="cannot reach Redis") as refused:
            connect(url)  # the system's CAs do not know the private one
        assert server.password not in str(refused.value)
        with pytest.raises(ConfigError):
            connect(url.replace("rediss://", "redis://"))  # no plain TCP on the TLS port
    finally:
        process.terminate()
        process.wait(20)
