"""The sandboxed workers' object store (git/worker_objects.py), with real git and no sandbox: git
is pointed at the workers' store as the sandbox's bind does (GIT_OBJECT_DIRECTORY, the real store
an alternate), and ``take`` must move exactly the objects that are what they are named."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import zlib
from pathlib import Path

import pytest

from orchestrator.git import worker_objects
from orchestrator.process import backends
from orchestrator.process.sandbox import SandboxSpec, Support

from .helpers.worktree import git, user_env


@pytest.fixture
def linked(tmp_path):
    """A repository with one commit and a linked worktree whose stores are made."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one", env=user_env())
    tree = tmp_path / "tree"
    git(repo, "worktree", "add", "-q", "-b", "w", str(tree))
    stores = worker_objects.stores_of(tree, tmp_path / "job_tree" / "state" / "git-objects")
    assert stores is not None
    worker_objects.prepare(stores)
    return repo, tree, stores


def as_worker(tree: Path, stores: worker_objects.Stores, *args: str, input: str = "") -> str:
    """git in the worktree writing to the workers' store (what the sandbox's bind makes of it)."""
    env = {**user_env(), "GIT_OBJECT_DIRECTORY": str(stores.workers), "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(stores.host)}
    argv = ["git", "-C", str(tree), *args]
    return subprocess.run(argv, input=input, capture_output=True, text=True, check=True, env=env).stdout


def loose_in(store: Path) -> set[str]:
    return {p.parent.name + p.name for p in store.glob("[0-9a-f][0-9a-f]/*")}


def fsck(repo: Path) -> bool:
    return subprocess.run(["git", "-C", str(repo), "fsck", "--no-dangling"], capture_output=True).returncode == 0


def test_the_workers_store_reads_the_repository_through_its_alternates(linked):
    _, tree, stores = linked
    # Relative (to the workers' store): a project view shows the git dir at another path.
    assert (stores.workers / "info" / "alternates").read_text() == "../orchestrator-host-objects\n"
    # Where the sandbox binds the tree's store (the repository's objects), that is where it shows the real one.
    assert (stores.host / "../orchestrator-host-objects").resolve() == stores.shown_at.resolve()
    assert stores.shown_at.is_dir() and not any(stores.shown_at.iterdir())  # outside the sandbox: an empty folder
    # Where git is told the store's own path (Landlock), an empty folder: no "alternate missing" from every git.
    beside = stores.workers / "../orchestrator-host-objects"
    assert beside.is_dir() and not any(beside.iterdir())
    done = subprocess.run(
        ["git", "-C", str(tree), "log", "-1"],
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_OBJECT_DIRECTORY": str(stores.workers), "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(stores.host)},
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_a_workers_own_commit_is_moved_into_the_repository_and_only_once(linked):
    repo, tree, stores = linked
    (tree / "b.txt").write_text("b\n")
    as_worker(tree, stores, "add", "b.txt")
    as_worker(tree, stores, "commit", "-qm", "own")
    written = loose_in(stores.workers)
    assert len(written) == 3 and not written & loose_in(stores.host)  # blob, tree, commit: only in the workers' store
    assert not fsck(repo)  # its branch names a commit the repository does not have yet

    taken = worker_objects.take(tree, repo, stores.workers)

    assert (taken.objects, taken.packs, taken.refused) == (3, 0, [])
    assert written <= loose_in(stores.host) and not loose_in(stores.workers)
    assert fsck(repo) and git(repo, "log", "-1", "--format=%s", "w").strip() == "own"
    assert worker_objects.take(tree, repo, stores.workers).objects == 0  # nothing new: nothing moved


def test_a_forged_object_is_refused_and_named_and_the_rest_is_taken(linked):
    repo, tree, stores = linked
    real = git(repo, "rev-parse", "HEAD").strip()
    forged = "ab" + "0" * 38  # a commit's bytes under a name they do not hash to
    (stores.workers / "ab").mkdir()
    body = git(repo, "cat-file", "commit", real).encode()
    (stores.workers / "ab" / forged[2:]).write_bytes(zlib.compress(b"commit %d\0" % len(body) + body))
    (stores.workers / "cd").mkdir()
    (stores.workers / "cd" / ("1" * 38)).write_bytes(b"not zlib at all")
    (tree / "c.txt").write_text("c\n")
    blob = as_worker(tree, stores, "hash-object", "-w", "c.txt").strip()

    taken = worker_objects.take(tree, repo, stores.workers)

    assert taken.objects == 1 and blob in loose_in(stores.host)
    assert sorted(taken.refused) == [
        f"{forged}: its content is object {real}, not the one it is named",
        "cd" + "1" * 38 + ": not a zlib stream",
    ]
    assert forged not in loose_in(stores.host) and forged not in loose_in(stores.workers)  # refused and removed
    assert fsck(repo)


def commit_as_worker(tree: Path, stores: worker_objects.Stores, name: str) -> str:
    (tree / f"{name}.txt").write_text(f"{name}\n")
    as_worker(tree, stores, "add", f"{name}.txt")
    as_worker(tree, stores, "commit", "-qm", name)
    return as_worker(tree, stores, "rev-parse", "HEAD").strip()


def test_an_object_gone_between_the_listing_and_its_reading_is_not_refused(linked, monkeypatch):
    """The worker's own git packs its loose objects away (``git gc``: ``prune-packed``) while they are
    taken: each listed one is gone when it is read. Nothing was refused; the pack is taken."""
    repo, tree, stores = linked
    commit_as_worker(tree, stores, "own")
    real = worker_objects._take_loose
    packed = []

    def packs_first(*args):
        if not packed:  # between the listing and the first object's reading
            packed.append(as_worker(tree, stores, "repack", "-adq"))
            assert not loose_in(stores.workers)
        return real(*args)

    monkeypatch.setattr(worker_objects, "_take_loose", packs_first)
    first = worker_objects.take(tree, repo, stores.workers)
    assert packed and first.refused == []
    monkeypatch.setattr(worker_objects, "_take_loose", real)
    second = worker_objects.take(tree, repo, stores.workers)
    assert second.refused == [] and first.packs + second.packs == 1
    assert fsck(repo) and git(repo, "log", "-1", "--format=%s", "w").strip() == "own"


def test_sibling_workers_takes_of_their_shared_store_run_one_at_a_time(linked, tmp_path, monkeypatch):
    """Two sibling workers' commits end at once: each take lists the whole store, the sibling's new
    objects too. A second take held back until the first is done finds nothing left to take; one
    that ran in between moved what the first had listed, and the first named each such object as
    "not taken" (a false alarm on good work: issue 47, item 6)."""
    repo, tree, stores = linked
    sibling = tmp_path / "sibling"
    git(repo, "worktree", "add", "-q", "-b", "w2", str(sibling))
    commits = [commit_as_worker(tree, stores, "mine"), commit_as_worker(sibling, stores, "theirs")]
    written = loose_in(stores.workers)
    real = worker_objects._take_loose
    results: dict[str, worker_objects.Taken] = {}
    racing = threading.Thread(target=lambda: results.setdefault("sibling", worker_objects.take(sibling, repo, stores.workers)))

    def sibling_ends_now(*args):
        if not racing.is_alive() and "sibling" not in results:
            racing.start()
            racing.join(2.0)  # done at once if nothing holds it back: then it took what this take listed
        return real(*args)

    monkeypatch.setattr(worker_objects, "_take_loose", sibling_ends_now)
    results["first"] = worker_objects.take(tree, repo, stores.workers)
    racing.join(30)
    assert not racing.is_alive()
    first, second = results["first"], results["sibling"]
    assert first.refused == [] and second.refused == []
    assert (first.objects, second.objects) == (len(written), 0)  # one take at a time: the first took all
    assert written <= loose_in(stores.host) and not loose_in(stores.workers)
    assert fsck(repo) and all(git(repo, "cat-file", "-t", c).strip() == "commit" for c in commits)


def test_an_object_that_inflates_to_more_than_it_says_is_refused(linked):
    repo, tree, stores = linked
    data = b"blob 3\0abc" + b"x" * (1 << 20)  # a header that lies about the size
    oid = hashlib.sha1(data).hexdigest()
    (stores.workers / oid[:2]).mkdir()
    (stores.workers / oid[:2] / oid[2:]).write_bytes(zlib.compress(data))
    assert worker_objects.take(tree, repo, stores.workers).refused == [f"{oid}: not a git object"]
    assert oid not in loose_in(stores.host)


def test_links_in_the_workers_store_take_nothing_and_delete_nothing_elsewhere(linked, tmp_path):
    """A worker turns a folder of the store into a link to another repository's objects (or the
    store itself, were it writable to it): moving them would delete them there."""
    repo, tree, stores = linked
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    (other / "o.txt").write_text("other\n")
    git(other, "add", "-A")
    git(other, "commit", "-qm", "other", env=user_env())
    theirs = loose_in(other / ".git" / "objects")
    folder = sorted(theirs)[0][:2]
    os.symlink(other / ".git" / "objects" / folder, stores.workers / folder)
    target = sorted(p for p in (other / ".git" / "objects" / folder).iterdir())[0]
    os.symlink(target, stores.workers / "info" / "x")  # (not an object folder: ignored anyway)
    assert worker_objects.take(tree, repo, stores.workers).objects == 0

    stores.workers.rename(stores.workers.with_name("moved-away"))
    os.symlink(other / ".git" / "objects", stores.workers)
    assert worker_objects.take(tree, repo, stores.workers).objects == 0

    assert loose_in(other / ".git" / "objects") == theirs and fsck(other)
    assert not theirs & loose_in(stores.host)


def test_a_pack_the_worker_made_is_read_by_index_pack(linked):
    repo, tree, stores = linked
    for name in ("p", "q"):
        (tree / f"{name}.txt").write_text(name * 100)
        as_worker(tree, stores, "add", "-A")
        as_worker(tree, stores, "commit", "-qm", name)
    as_worker(tree, stores, "repack", "-adq")  # -a: the objects it borrows from the repository too
    assert list((stores.workers / "pack").glob("pack-*.pack")) and not loose_in(stores.workers)

    taken = worker_objects.take(tree, repo, stores.workers)

    assert (taken.packs, taken.refused) == (1, [])
    assert not list((stores.workers / "pack").iterdir())
    assert fsck(repo) and git(repo, "log", "--format=%s", "w").split() == ["q", "p", "one"]


def test_a_broken_pack_is_refused_with_git_s_words(linked):
    repo, tree, stores = linked
    pack = stores.workers / "pack"
    pack.mkdir()
    (pack / "pack-1234.pack").write_bytes(b"PACK\0\0\0\2\0\0\0\1garbage")
    (pack / "pack-1234.idx").write_bytes(b"")
    (taken,) = worker_objects.take(tree, repo, stores.workers).refused
    assert taken.startswith("pack-1234.pack: git index-pack refused it (")
    assert not (pack / "pack-1234.pack").exists() and not (pack / "pack-1234.idx").exists()  # refused: removed


def dotdot_tree(tree: Path, stores: worker_objects.Stores) -> str:
    """A tree naming ``..`` (git mktree writes it: git 2.39 does not refuse it), in the workers' store."""
    blob = as_worker(tree, stores, "hash-object", "-w", "--stdin").strip()
    return as_worker(tree, stores, "mktree", input=f"100644 blob {blob}\t..\n").strip()


def test_a_loose_tree_that_names_dotdot_is_refused_and_removed(linked):
    repo, tree, stores = linked
    bad = dotdot_tree(tree, stores)
    taken = worker_objects.take(tree, repo, stores.workers)
    assert taken.refused == [f"{bad}: a tree git fsck refuses: an entry is named '..'"]
    assert bad not in loose_in(stores.host) | loose_in(stores.workers)
    assert taken.objects == 1  # the blob it names is an ordinary object


def test_a_packed_tree_that_names_dotdot_is_refused(linked):
    repo, tree, stores = linked
    bad = dotdot_tree(tree, stores)
    (stores.workers / "pack").mkdir()
    as_worker(
        tree, stores, "pack-objects", "-q", str(stores.workers / "pack" / "pack"), input="\n".join(loose_in(stores.workers))
    )
    for oid in loose_in(stores.workers):
        (stores.workers / oid[:2] / oid[2:]).unlink()
    (taken,) = worker_objects.take(tree, repo, stores.workers).refused
    assert "hasDotdot" in taken and bad not in git(repo, "cat-file", "--batch-all-objects", "--batch-check")


def test_what_is_no_object_leaves_the_store_once_nothing_wrote_it_for_a_while(linked):
    repo, tree, stores = linked
    junk = [stores.workers / "huge.bin", stores.workers / "ab" / "tmp_obj_x", stores.workers / "info" / "packs"]
    (stores.workers / "ab").mkdir()
    (stores.workers / "pack").mkdir()
    junk.append(stores.workers / "pack" / "pack-1.pack")  # a pack with no index
    for path in junk:
        path.write_bytes(b"x" * 4096)
    fresh = stores.workers / "tmp_pack_now"  # a git writing now
    fresh.write_bytes(b"y")
    old = os.stat(fresh).st_mtime - worker_objects.GRACE - 1
    for path in junk:
        os.utime(path, (old, old))
    worker_objects.take(tree, repo, stores.workers)
    assert [p for p in junk if p.exists()] == [] and fresh.exists()
    assert (stores.workers / "info" / "alternates").is_file()  # the store's own


def test_a_plain_folder_or_a_repository_without_the_store_takes_nothing(linked, tmp_path):
    repo, tree, stores = linked
    assert worker_objects.take(tmp_path, repo, stores.workers).objects == 0
    for path in sorted(stores.workers.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() else path.rmdir()
    stores.workers.rmdir()
    assert worker_objects.take(tree, repo, stores.workers).objects == 0


def test_the_sandbox_binds_the_workers_store_over_the_repositorys_and_a_node_gets_the_same():
    spec = SandboxSpec(
        bwrap="/usr/bin/bwrap",
        writable=("/w/tree", "/r/.git/worktrees/t"),
        moved=(("/r/.git/orchestrator-objects", "/r/.git/objects"),),
        shown=(("/r/.git/objects", "/r/.git/orchestrator-host-objects"),),
    )
    argv = backends.argv(spec, ["true"])
    moved = argv.index("/r/.git/orchestrator-objects")
    assert argv[moved - 1 : moved + 5] == [
        "--bind",
        "/r/.git/orchestrator-objects",
        "/r/.git/objects",
        "--ro-bind",  # the real store, from the host's side: not the store bound over it
        "/r/.git/objects",
        "/r/.git/orchestrator-host-objects",
    ]
    assert SandboxSpec.from_dict(spec.to_dict(), Support("/usr/bin/bwrap")) == spec


def test_a_refusal_found_by_a_siblings_take_is_told_to_whoever_names_the_object(linked, tmp_path):
    """The store is every worker's: a sibling's take may be the one to refuse a worker's object.
    The refusal is remembered, so the worker whose branch names it hears why, whichever take found
    it (a sibling's log naming another's object was issue 47's false alarm)."""
    repo, tree, stores = linked
    sibling = tmp_path / "sibling"
    git(repo, "worktree", "add", "-q", "-b", "s", str(sibling))
    bad = dotdot_tree(tree, stores)  # the first worker's object
    taken = worker_objects.take(sibling, repo, stores.workers)  # found by the sibling's take
    assert taken.refused == [f"{bad}: a tree git fsck refuses: an entry is named '..'"]
    said = f"fatal: bad tree object {bad}"  # git's words when the first worker's branch is checked
    assert worker_objects.refused_earlier(said) == [f"{bad}: a tree git fsck refuses: an entry is named '..'"]
    assert worker_objects.refused_earlier("fatal: bad tree object " + "0" * 40) == []
