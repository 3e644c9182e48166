"""A node's record of the attempts and tokens it has taken (its replay guard), on a real file system."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from orchestrator.cluster import attempt


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attempt, "_seen_file", None)


def test_a_name_is_taken_once_by_a_link_and_a_second_take_is_refused(tmp_path: Path) -> None:
    # When two attempts' tokens are taken, then the first again
    attempt._taken(tmp_path, "a1-1")
    attempt._taken(tmp_path, "a1-2")
    with pytest.raises(FileExistsError):
        attempt._taken(tmp_path, "a1-1")
    # Then each is a link to this process's one file: no inode was made per attempt
    [own] = tmp_path.glob(".taken-*")
    assert os.stat(tmp_path / "a1-1").st_ino == os.stat(tmp_path / "a1-2").st_ino == own.stat().st_ino
    assert own.stat().st_nlink == 3


def test_a_linked_file_removed_meanwhile_is_made_again_and_no_name_is_taken_twice(tmp_path: Path) -> None:
    # Given a name taken, then the file the names link to removed (a cleaner of the node's folder)
    attempt._taken(tmp_path, "a-1")
    [own] = tmp_path.glob(".taken-*")
    own.unlink()
    # When the next name is taken
    attempt._taken(tmp_path, "a-2")
    # Then it links to a new file, and the first is still taken
    [again] = tmp_path.glob(".taken-*")
    assert again != own and os.stat(tmp_path / "a-2").st_ino == again.stat().st_ino
    with pytest.raises(FileExistsError):
        attempt._taken(tmp_path, "a-1")


@pytest.mark.slow
def test_past_the_file_systems_most_links_to_one_file_the_next_name_links_to_another(tmp_path: Path) -> None:
    # Given a file system that limits the links to one file (ext4: 65,000), names taken up to that limit
    attempt._taken(tmp_path, "n-0")
    first = attempt._seen_file
    assert first is not None
    limit = None
    for number in range(1, 70_000):
        attempt._taken(tmp_path, f"n-{number}")
        if attempt._seen_file != first:
            limit = number
            break
    if limit is None:
        pytest.skip("this file system allows more than 70,000 links to one file")
    # Then the name at the limit was taken by a link to a new file, and each before it to the first
    assert os.stat(tmp_path / f"n-{limit}").st_ino == os.stat(attempt._seen_file).st_ino != os.stat(first).st_ino
    assert os.stat(first).st_nlink == limit + 1  # (itself and every name before the limit)
    with pytest.raises(OSError) as found:
        os.link(first, tmp_path / "one-more")
    assert found.value.errno == errno.EMLINK
    # And no name can be taken twice, either side of the limit
    for number in (0, limit - 1, limit):
        with pytest.raises(FileExistsError):
            attempt._taken(tmp_path, f"n-{number}")
