"""Each job tree's private package caches (workers/caches.py), with real git, real repositories and
the real sandbox (bubblewrap): a Node host whose ``git.setup`` runs ``npm ci`` against a registry
served here on 127.0.0.1 installs in the sandbox, into the tree's own npm cache; the user's caches (a
HOME made here) stay unwritten; another tree neither sees nor writes the first tree's caches; they
go when the tree is deleted."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process.backends import probe
from orchestrator.workers.caches import CACHE_VARIABLES, cache_env

from .conftest import run_job
from .helpers.worktree import git, snapshot, user_env, workers

sandboxed = pytest.mark.skipif(not probe().available, reason="bubblewrap cannot sandbox on this machine")


def _files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its hash: what must not change."""
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = Path(base, name)
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A user's HOME with caches of their own: npm's, pip's, uv's and a Go module cache."""
    home = tmp_path / "user home"
    for sub in (".npm/_cacache", ".cache/pip/http", ".cache/uv", "go/pkg/mod/cache/download/example.com/m/@v"):
        (home / sub).mkdir(parents=True)
    (home / ".npm" / "_cacache" / "mine").write_text("the user's\n")
    (home / ".cache" / "pip" / "http" / "mine").write_text("the user's\n")
    (home / "go/pkg/mod/cache/download/example.com/m/@v/list").write_text("v1.0.0\n")
    monkeypatch.setenv("HOME", str(home))
    for name in [*CACHE_VARIABLES, "GOPATH", "GOPROXY", "GOFLAGS", "XDG_CACHE_HOME"]:
        monkeypatch.delenv(name, raising=False)
    return home


# -- the variables (fast) -----------------------------------------------------------------------------


def test_every_cache_variable_points_into_the_trees_folder_and_go_is_seeded_read_only(tmp_path):
    seed = tmp_path / "gopath" / "pkg" / "mod" / "cache" / "download"
    seed.mkdir(parents=True)
    env = {"GOPATH": str(tmp_path / "gopath"), "GOFLAGS": "-mod=mod", "PIP_CACHE_DIR": "/home/u/.cache/pip"}
    found = cache_env(tmp_path / "caches", env)
    for name, sub in CACHE_VARIABLES.items():
        assert found[name] == str(tmp_path / "caches" / sub)  # the user's PIP_CACHE_DIR replaced: read-only in the sandbox
    assert found["GOPROXY"] == f"{seed.as_uri()},https://proxy.golang.org,direct"
    assert found["GOFLAGS"] == "-mod=mod -modcacherw"
    again = cache_env(tmp_path / "caches", {**env, "GOPROXY": "off", "GOFLAGS": "-modcacherw"})
    assert again["GOPROXY"] == f"{seed.as_uri()},off" and "GOFLAGS" not in again


def test_a_cache_the_user_lets_workers_write_is_kept_and_no_seed_without_a_go_cache(tmp_path):
    shared = tmp_path / "shared"
    env = {"npm_config_cache": str(shared / "npm"), "HOME": str(tmp_path / "nohome")}
    found = cache_env(tmp_path / "caches", env, shared=[shared])
    assert "npm_config_cache" not in found  # in workers.sandbox_writable: the owner's choice stands
    assert found["PIP_CACHE_DIR"] == str(tmp_path / "caches" / "pip")
    assert "GOPROXY" not in found  # no module cache of the user's to read


def test_a_trees_caches_are_worked_out_once_and_a_new_tree_reads_the_users_go_settings_again(tmp_path):
    from orchestrator.config import load_settings
    from orchestrator.workers.environment import add_caches
    from orchestrator.workspace.layout import Workspace

    home = tmp_path / "home"
    (home / ".config" / "go").mkdir(parents=True)
    settings_file = home / ".config" / "go" / "env"
    settings_file.write_text("GOFLAGS=-mod=vendor\n")
    settings = load_settings(base_dir=tmp_path, environ={})
    workspace = Workspace(tmp_path / "workspace")
    first, second = {"HOME": str(home)}, {"HOME": str(home)}
    add_caches(first, settings, workspace, "aaaaaaaaaaaa")
    settings_file.write_text("GOFLAGS=-mod=mod\n")  # the user's `go env -w` while that tree runs
    add_caches(second, settings, workspace, "aaaaaaaaaaaa")
    assert first["GOFLAGS"] == second["GOFLAGS"] == "-mod=vendor -modcacherw"  # one tree: one reading
    other = {"HOME": str(home)}
    add_caches(other, settings, workspace, "bbbbbbbbbbbb")
    assert other["GOFLAGS"] == "-mod=mod -modcacherw"  # the next tree reads it again
    assert other["PIP_CACHE_DIR"] == str(workspace.tree_caches("bbbbbbbbbbbb") / "pip")
    changed = {"HOME": str(home), "GOFLAGS": "-trimpath"}  # a different environment: worked out for it
    add_caches(changed, settings, workspace, "aaaaaaaaaaaa")
    assert changed["GOFLAGS"] == "-trimpath -modcacherw"


def test_go_starts_from_what_go_env_w_wrote_for_the_user(tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "go").mkdir(parents=True)
    (home / ".config" / "go" / "env").write_text("GOPROXY=https://goproxy.example,direct\nGOFLAGS=-mod=vendor\n")
    seed = home / "go" / "pkg" / "mod" / "cache" / "download"
    seed.mkdir(parents=True)
    found = cache_env(tmp_path / "caches", {"HOME": str(home)})
    assert found["GOPROXY"] == f"{seed.as_uri()},https://goproxy.example,direct"  # their proxy, not Go's default
    assert found["GOFLAGS"] == "-mod=vendor -modcacherw"
    assert "GOPROXY" not in cache_env(tmp_path / "caches", {"HOME": str(home), "GOENV": "off", "GOPATH": "/nowhere"})


# -- a loopback npm registry --------------------------------------------------------------------------


def _tarball() -> bytes:
    """A package tarball as npm publishes it: package/package.json and package/index.js."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in (
            ("package/package.json", json.dumps({"name": "tinypkg", "version": "1.0.0", "main": "index.js"})),
            ("package/index.js", "module.exports = { hi: 'hello from tinypkg' };\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def registry() -> Iterator[tuple[str, str, list[str]]]:
    """(registry URL, the tarball's integrity, the paths requested): one package, ``tinypkg@1.0.0``,
    its packument and tarball, as the npm registry serves them."""
    tarball = _tarball()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    requested: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            requested.append(self.path)
            url = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/tinypkg/-/tinypkg-1.0.0.tgz":
                body, kind = tarball, "application/octet-stream"
            elif self.path == "/tinypkg":
                dist = {"tarball": f"{url}/tinypkg/-/tinypkg-1.0.0.tgz", "integrity": integrity}
                version = {"name": "tinypkg", "version": "1.0.0", "dist": dist}
                packument = {"name": "tinypkg", "dist-tags": {"latest": "1.0.0"}, "versions": {"1.0.0": version}}
                body, kind = json.dumps(packument).encode(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", integrity, requested
    finally:
        server.shutdown()
        server.server_close()


def _node_host(host: Path, registry_url: str, integrity: str) -> None:
    """The host becomes a Node project depending on tinypkg, with its lockfile (npm ci needs one)."""
    package = {"name": "app", "version": "1.0.0", "dependencies": {"tinypkg": "1.0.0"}}
    lock = {
        "name": "app",
        "version": "1.0.0",
        "lockfileVersion": 3,
        "requires": True,
        "packages": {
            "": package,
            "node_modules/tinypkg": {
                "version": "1.0.0",
                "resolved": f"{registry_url}tinypkg/-/tinypkg-1.0.0.tgz",
                "integrity": integrity,
            },
        },
    }
    (host / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    (host / "package-lock.json").write_text(json.dumps(lock, indent=2) + "\n")
    (host / ".gitignore").write_text(".env\nnode_modules/\n")
    git(host, "add", "-A")
    git(host, "commit", "-q", "--no-verify", "-m", "a node project", env=user_env())


NPM_ENV = {"npm_config_audit": "false", "npm_config_fund": "false", "npm_config_update_notifier": "false"}


@pytest.mark.slow
@sandboxed
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_npm_ci_in_git_setup_installs_from_a_loopback_registry_in_the_sandbox_into_the_trees_cache(hosted, home, registry):
    host, folder, make = hosted
    url, integrity, requested = registry
    _node_host(host, url, integrity)
    before, users = snapshot(host, folder), _files(home)
    registry_at = url.split("//", 1)[1].rstrip("/")  # workers.sandbox_allow lets the sandbox reach it
    engine = make(
        git={"setup": ["npm", "ci"]},
        workers={"sandbox": "on", "env": {**NPM_ENV, "npm_config_registry": url}, "sandbox_allow": [registry_at]},
    )
    task = "node -p \"require('tinypkg').hi\" > out.txt"
    job = run_job(engine, "node", tasks=[task], timeout=120)
    w = workers(engine, job)["worker_1"]
    log = engine.workspace.worker_log(job.id, 0, "worker_1").read_text(errors="replace")
    assert job.status is JobStatus.COMPLETED and w.status is WorkerStatus.SUCCESS, log
    checkout = engine.workspace.worker_dir(job.id, 0, "worker_1")
    assert (checkout / "node_modules" / "tinypkg" / "index.js").is_file()
    assert (checkout / "out.txt").read_text() == "hello from tinypkg\n"
    assert "/tinypkg/-/tinypkg-1.0.0.tgz" in requested  # from the loopback registry, not from anywhere else
    assert any((engine.workspace.tree_caches(job.id) / "npm" / "_cacache").iterdir())  # the tree's own npm cache
    assert _files(home) == users  # the user's ~/.npm (and every other cache of theirs) unchanged
    assert snapshot(host, folder) == before


# -- what a worker sees -------------------------------------------------------------------------------

SEES = (
    'printf "%s\\n" "$PIP_CACHE_DIR" "$UV_CACHE_DIR" "$npm_config_cache" "$GOPROXY" "$GOFLAGS" > env.txt; '
    'mkdir -p "$PIP_CACHE_DIR" && echo mine > "$PIP_CACHE_DIR/written" && echo wrote >> env.txt; '
    'echo poison > "$HOME/.cache/pip/http/poison" 2>/dev/null && echo POISONED >> env.txt; '
    'echo poison > "$HOME/.npm/_cacache/poison" 2>/dev/null && echo POISONED >> env.txt; '
    "echo end >> env.txt"
)


@pytest.mark.slow
@sandboxed
def test_a_workers_cache_variables_name_its_trees_folder_which_it_writes_and_the_users_it_cannot(hosted, home):
    host, folder, make = hosted
    before, users = snapshot(host, folder), _files(home)
    engine = make(workers={"sandbox": "on"})
    job = run_job(engine, "env", tasks=[SEES])
    w = workers(engine, job)["worker_1"]
    assert w.status is WorkerStatus.SUCCESS, w.error
    caches = engine.workspace.tree_caches(job.id)
    seen = (engine.workspace.worker_dir(job.id, 0, "worker_1") / "env.txt").read_text().splitlines()
    seed = (home / "go/pkg/mod/cache/download").as_uri()
    assert seen == [
        str(caches / "pip"),
        str(caches / "uv"),
        str(caches / "npm"),
        f"{seed},https://proxy.golang.org,direct",  # the user's Go downloads first, read-only
        "-modcacherw",
        "wrote",  # no POISONED: the user's caches are read-only in the sandbox
        "end",
    ]
    assert (caches / "pip" / "written").read_text() == "mine\n"
    assert _files(home) == users
    assert snapshot(host, folder) == before


@pytest.mark.slow
@sandboxed
def test_another_tree_neither_sees_nor_writes_a_trees_caches_which_go_with_the_tree(hosted, home, tmp_path):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(workers={"sandbox": "on"})
    first = run_job(engine, "first", tasks=['mkdir -p "$PIP_CACHE_DIR" && echo secret > "$PIP_CACHE_DIR/secret"'])
    assert workers(engine, first)["worker_1"].status is WorkerStatus.SUCCESS
    theirs = engine.workspace.tree_caches(first.id) / "pip"
    assert (theirs / "secret").read_text() == "secret\n"
    probe_it = (
        f'cat "{theirs}/secret" > seen.txt 2>&1; echo "read $?" >> seen.txt; '
        f'echo x > "{theirs}/planted" 2>/dev/null; echo "write $?" >> seen.txt; '
        'mkdir -p "$PIP_CACHE_DIR" && echo ok > "$PIP_CACHE_DIR/own"'
    )
    second = run_job(engine, "second", tasks=[probe_it])
    assert workers(engine, second)["worker_1"].status is WorkerStatus.SUCCESS
    seen = (engine.workspace.worker_dir(second.id, 0, "worker_1") / "seen.txt").read_text()
    assert "secret\n" not in seen and "read 0" not in seen and "write 0" not in seen, seen
    assert not (theirs / "planted").exists()
    assert (engine.workspace.tree_caches(second.id) / "pip" / "own").read_text() == "ok\n"
    engine.delete(first.id)
    assert not engine.workspace.tree_caches(first.id).exists()  # gone with its tree
    assert (engine.workspace.tree_caches(second.id) / "pip" / "own").is_file()  # the other tree's stays
    assert snapshot(host, folder) == before


@pytest.mark.slow
@sandboxed
def test_a_gate_reads_and_writes_the_same_caches_as_its_worker(hosted, home):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(workers={"sandbox": "on"})
    gate = {"name": "cached", "run": ["sh", "-c", 'cat "$PIP_CACHE_DIR/from-worker" && echo gate > "$PIP_CACHE_DIR/from-gate"']}
    task = 'mkdir -p "$PIP_CACHE_DIR" && echo worker > "$PIP_CACHE_DIR/from-worker" && echo a > a.txt'
    job = run_job(engine, "gated", tasks=[task], config={"gates": [gate], "max_retries": 0})
    w = workers(engine, job)["worker_1"]
    assert w.status is WorkerStatus.SUCCESS and w.gates[0].status == "passed", w.error
    caches = engine.workspace.tree_caches(job.id) / "pip"
    assert (caches / "from-gate").read_text() == "gate\n"
    assert snapshot(host, folder) == before


@pytest.mark.slow
@sandboxed
def test_a_scoring_command_writes_its_trees_caches(hosted, home):
    host, folder, make = hosted
    before = snapshot(host, folder)
    score = 'mkdir -p "$PIP_CACHE_DIR" && echo scored >> "$PIP_CACHE_DIR/scored" && echo \'{"cached": 1}\''
    engine = make(workers={"sandbox": "on"}, candidates={"attempts": 2}, scoring={"command": ["sh", "-c", score]})
    job = run_job(engine, "scored", tasks=["echo a > a.txt"])
    assert job.status is JobStatus.COMPLETED, job.error
    assert (engine.workspace.tree_caches(job.id) / "pip" / "scored").read_text() == "scored\nscored\n"  # both candidates'
    assert snapshot(host, folder) == before
