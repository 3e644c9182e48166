"""The orchestrator's git in a worker's sandbox (git/sandboxed.py): the descriptor its seccomp program
reaches bubblewrap by. With 16 workers at once CI once saw bubblewrap read that program cut short
("Invalid seccomp data, must be multiple of 8"): a write or a read through a descriptor number another
thread no longer owned. The program's memfd is sealed, so a stray write fails where it is made, and a
refusal says what the descriptor held."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.git import sandboxed
from orchestrator.git.repository import GitError
from orchestrator.git.sandboxed import CheckoutGit
from orchestrator.process.backends import probe
from orchestrator.process.sandbox import SandboxSpec, refusals, seccomp_program

SUPPORT = probe()
needs_bwrap = pytest.mark.skipif(not SUPPORT.available, reason=f"no sandbox on this machine: {SUPPORT.reason}")


def spec_for(*writable: Path) -> SandboxSpec:
    return SandboxSpec(SUPPORT.bwrap or "/usr/bin/bwrap", writable=tuple(map(str, writable)))


@pytest.mark.skipif(seccomp_program(refusals(spec_for())) is None, reason="no seccomp program for this architecture")
def test_a_stray_write_into_the_seccomp_program_fails_and_leaves_it_whole():
    """A thread writing through a number it closed earlier, which this memfd now has, gets EPERM:
    the program bubblewrap reads from the offset stays whole."""
    spec = spec_for()
    fd = sandboxed._worker_filter(spec)
    assert fd is not None
    try:
        with pytest.raises(PermissionError):
            os.write(fd, b'{"-": "a late line"}\n')
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
        assert os.read(fd, 1 << 16) == seccomp_program(refusals(spec))[2]  # type: ignore[index]
    finally:
        os.close(fd)


@needs_bwrap
def test_bubblewrap_refusing_the_program_is_told_what_file_its_descriptor_number_held(tmp_path, monkeypatch):
    """A number another thread closed and the next open reused reaches bubblewrap as another file:
    the git run fails (bubblewrap reads a program cut short), and the error names the file that
    number held and says its bytes are not the program, which tells a stolen number from a moved offset."""
    other = tmp_path / "registrations.jsonl"
    other.write_bytes(b'{"-": "k1"}\n')  # 12 bytes: not a whole number of instructions

    def stolen(spec: SandboxSpec) -> int:
        return os.open(other, os.O_RDONLY | os.O_CLOEXEC)

    said, size = _refused(tmp_path, monkeypatch, stolen)
    assert f"{other}, at offset 12 of 12 bytes, not the program of {size} bytes" in said, said


@needs_bwrap
def test_bubblewrap_refusing_its_own_memfd_says_the_program_was_whole(tmp_path, monkeypatch):
    """The program's own memfd, whole, read short: its offset had moved (a read through a stale number)."""
    real = sandboxed._worker_filter

    def moved(spec: SandboxSpec) -> int | None:
        fd = real(spec)
        assert fd is not None
        os.read(fd, 1)  # a reader through a stale number: bubblewrap starts one byte in
        return fd

    said, size = _refused(tmp_path, monkeypatch, moved)
    assert f"the program memfd, at offset {size} of {size} bytes, the program of {size} bytes" in said, said


def _refused(tmp_path: Path, monkeypatch, worker_filter: Callable[[SandboxSpec], int | None]) -> tuple[str, int]:
    """``git status`` in a new repository in the sandbox, ``worker_filter`` giving bubblewrap its
    ``--seccomp`` descriptor, refused as a program read short: what the error said, and the program's size."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.setattr(sandboxed, "_worker_filter", worker_filter)
    with pytest.raises(GitError) as failed:
        CheckoutGit(repo, spec_for(repo)).run("status")
    said = str(failed.value)
    assert "Invalid seccomp data" in said, said
    return said, len(seccomp_program(refusals(spec_for(repo)))[2])  # type: ignore[index]
