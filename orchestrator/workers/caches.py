"""Each job tree's private package caches, named to the package managers through their own documented
environment variables.

Inside the sandbox the user's caches (``~/.npm``, ``~/.cache/pip``, ``~/go/pkg/mod``, ``~/.cargo``...) are
read-only: a worker that could write them could plant a package the user later installs outside any
sandbox. So ``git.setup: [npm, ci]`` failed there (EROFS). Instead every process of a tree (its
workers, their ``git.setup``, gates and scoring commands) writes one cache folder of the tree's own
(``Workspace.tree_caches``), bound writable in that tree's sandboxes only and deleted with the tree.

Seeded from the user's caches only where the tool itself reads a second, read-only source: Go, whose
module cache's ``cache/download`` folder is a module proxy (``GOPROXY=file://...``), put before the
user's own GOPROXY. The others read and write one cache folder and have no read-only fallback (pip's
and uv's caches are not in a format ``--find-links`` reads), so they start empty.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

# Each tool's documented variable, and its folder in the tree's caches.
CACHE_VARIABLES: dict[str, str] = {
    "npm_config_cache": "npm",  # npm's ``cache`` setting (its _cacache and _npx)
    # Yarn 2+'s global cache (enableGlobalCache, yarn 4's default). Not YARN_CACHE_FOLDER: it would
    # override a project's own cacheFolder (a committed .yarn/cache: zero-installs), and yarn 1 skips a
    # cache folder it cannot write for one in its TMPDIR by itself.
    "YARN_GLOBAL_FOLDER": "yarn",
    "PIP_CACHE_DIR": "pip",
    "UV_CACHE_DIR": "uv",
    "GOMODCACHE": "go/mod",
    "GOCACHE": "go/build",
    "BUN_INSTALL_CACHE_DIR": "bun",
    "DENO_DIR": "deno",
    "POETRY_CACHE_DIR": "poetry",
    "PRE_COMMIT_HOME": "pre-commit",
    "COMPOSER_CACHE_DIR": "composer",
    # Not COREPACK_HOME: the yarn or pnpm corepack already fetched for the user runs from their cache
    # read-only; a private one would fetch it again in every tree.
    # Cargo has no variable for its registry cache alone: its whole home moves (the user's
    # ~/.cargo/config.toml is then not read; cargo and rustup themselves run from the PATH).
    "CARGO_HOME": "cargo",
}
GO_DEFAULT_PROXY = "https://proxy.golang.org,direct"
# What ``cache_env`` reads of the environment besides CACHE_VARIABLES and the GO* variables.
ENV_READ = frozenset({*CACHE_VARIABLES, "HOME", "XDG_CONFIG_HOME"})


def cache_env(folder: Path, env: Mapping[str, str], *, shared: Sequence[str | Path] = ()) -> dict[str, str]:
    """The variables that point the package managers at ``folder`` (a tree's caches), to be set on
    ``env``. A variable the user set to a path inside ``shared`` (``workers.sandbox_writable``: a
    cache they chose to let workers write) is kept; any other value of theirs is replaced, since that
    folder is read-only in the sandbox (and must stay so). Go's module downloads are seeded from the
    user's module cache, read-only, ahead of their own GOPROXY; GOFLAGS gets ``-modcacherw`` (Go
    otherwise makes its module files read-only and the tree could not be deleted)."""
    found: dict[str, str] = {}
    for name, sub in CACHE_VARIABLES.items():
        theirs = env.get(name, "")
        if theirs and _inside(theirs, shared):
            continue
        found[name] = str(folder / sub)
    go = {**go_env_file(env), **{k: v for k, v in env.items() if k.startswith("GO") and v}}
    seed = user_go_downloads(go, env)
    proxy = go.get("GOPROXY", "") or GO_DEFAULT_PROXY
    if seed is not None and "GOMODCACHE" in found and not proxy.startswith(seed):
        found["GOPROXY"] = f"{seed},{proxy}"
    flags = go.get("GOFLAGS", "").split()
    if "-modcacherw" not in flags:
        found["GOFLAGS"] = " ".join([*flags, "-modcacherw"])
    return found


def go_env_file(env: Mapping[str, str]) -> dict[str, str]:
    """What ``go env -w`` wrote for the user (``$GOENV``, else ``$XDG_CONFIG_HOME/go/env``, else
    ``~/.config/go/env``): an environment variable overrides that file whole, so a GOPROXY or GOFLAGS
    set here starts from the user's own (their proxy, their ``-mod=vendor``), never from Go's default."""
    path = env.get("GOENV", "")
    if path == "off":
        return {}
    if not path:
        config = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or str(Path.home()), ".config")
        path = os.path.join(config, "go", "env")
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read(1 << 16).splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    found = {}
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip().startswith("GO"):
            found[name.strip()] = value.strip()
    return found


def user_go_downloads(go: Mapping[str, str], env: Mapping[str, str]) -> str | None:
    """The user's Go module cache's download folder as a ``file://`` proxy, or None when there is
    none: GOMODCACHE, else the first GOPATH entry's ``pkg/mod``, else ``~/go/pkg/mod`` (Go's own
    defaults, read from ``go`` (the user's Go settings) without running ``go env``)."""
    modcache = go.get("GOMODCACHE", "")
    if not modcache:
        gopath = next((p for p in go.get("GOPATH", "").split(os.pathsep) if p), "")
        home = env.get("HOME") or str(Path.home())
        modcache = os.path.join(gopath or os.path.join(home, "go"), "pkg", "mod")
    downloads = Path(modcache, "cache", "download")
    if not downloads.is_absolute() or not downloads.is_dir():
        return None
    return downloads.as_uri()


def _inside(path: str, folders: Sequence[str | Path]) -> bool:
    """True when ``path`` is one of ``folders`` or below one, by name."""
    target = os.path.abspath(os.path.expanduser(path))
    for folder in folders:
        base = os.path.abspath(os.path.expanduser(str(folder)))
        if target == base or target.startswith(base.rstrip("/") + "/"):
            return True
    return False
