"""Host repositories shaped as users' projects, for the tests of what runs in a worker's checkout."""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

from .worktree import git, make_host, user_env


def src_layout_host(tmp_path: Path) -> tuple[Path, Path]:
    """make_host's repository as a src-layout Python project (``pkg.add``) with its own tests, and
    a venv at ``.venv`` (ignored) in which it is installed editable, as pip's setuptools backend
    installs a src layout: an ``__editable__`` .pth naming ``<host>/src`` and a dist-info whose
    direct_url.json says editable. (Written here: the machine is offline, and pip would build the
    same two files.) The venv reaches pytest through the orchestrator's own site-packages."""
    host, folder = make_host(tmp_path)
    (host / "src" / "pkg").mkdir(parents=True)
    (host / "src" / "pkg" / "__init__.py").write_text("def add(a, b):\n    return a + b\n")
    (host / "tests").mkdir()
    (host / "tests" / "test_add.py").write_text("from pkg import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    (host / "pyproject.toml").write_text('[project]\nname = "pkg"\nversion = "0.1"\n')
    (host / ".gitignore").write_text(".env\n.venv/\n__pycache__/\n.pytest_cache/\n")
    git(host, "add", "-A")
    git(host, "commit", "--no-verify", "-qm", "a src layout", env=user_env())
    venv = host / ".venv"
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    site.mkdir(parents=True)
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "pyvenv.cfg").write_text(f"home = {Path(sys.executable).parent}\ninclude-system-site-packages = false\n")
    (site / "__editable__.pkg-0.1.pth").write_text(f"{host / 'src'}\n")
    info = site / "pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pkg\nVersion: 0.1\n")
    (info / "direct_url.json").write_text(json.dumps({"url": host.as_uri(), "dir_info": {"editable": True}}))
    (site / "orchestrator-tools.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # pytest
    return host, folder
