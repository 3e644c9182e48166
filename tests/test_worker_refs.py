"""A sandboxed worker's view of its tree's branches (git/worker_refs.py), with real git and no
sandbox: the view's file is written as the worker's git would write it through the sandbox's
bind, and ``take`` must move the real branch only to a commit, only from where it was shown."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from orchestrator.git import worker_gitdir, worker_refs
from orchestrator.git.job_refs import ref_value
from orchestrator.git.repository import linked_git_dir

from .helpers.worktree import git, user_env

REF = "refs/heads/orch/r1/w"


@pytest.fixture
def linked(tmp_path):
    """A repository with two commits, a linked worktree on branch orch/r1/w at the first, and its view shown."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for text in ("one", "two"):
        (repo / "a.txt").write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", text, env=user_env())
    first, second = git(repo, "rev-parse", "HEAD~1", "HEAD").split()
    tree = tmp_path / "tree"
    git(repo, "worktree", "add", "-q", "-b", "orch/r1/w", str(tree), first)
    private = linked_git_dir(tree)
    assert private is not None
    worker_refs.show(private, "w", ref_value(tree, REF) or "")
    return repo, tree, private, first, second


def view_file(private: Path) -> Path:
    return private / worker_refs.VIEW / "w"


def test_the_view_holds_its_own_branch_and_a_commit_there_moves_the_real_one_once(linked):
    repo, tree, private, first, second = linked
    assert view_file(private).read_text() == f"{first}\n"
    assert (private / worker_refs.SHOWN).read_text() == f"{first}\n"
    view_file(private).write_text(f"{second}\n")  # the worker's commit, through the sandbox's bind

    assert worker_refs.take(tree, repo, "w", REF) == ""
    assert git(repo, "rev-parse", REF).strip() == second
    assert (private / worker_refs.SHOWN).read_text() == f"{second}\n"
    assert worker_refs.take(tree, repo, "w", REF) == ""  # nothing new


def test_showing_the_same_tip_again_leaves_the_record_a_starting_sandbox_binds_in_place(linked, tmp_path):
    """bubblewrap binds the shown-tip record as a file: renamed over while another sandbox of the same
    worktree starts, that sandbox fails ("Unable to find ... in mount table"). The same tip again keeps
    the file; a new tip, or a link put in its place, replaces it."""
    repo, tree, private, first, second = linked
    record = private / worker_refs.SHOWN
    before = os.lstat(record).st_ino
    worker_refs.show(private, "w", first)
    assert os.lstat(record).st_ino == before and record.read_text() == f"{first}\n"
    worker_refs.show(private, "w", second)
    assert record.read_text() == f"{second}\n"
    outside = tmp_path / "outside"
    outside.write_text(f"{second}\n")
    record.unlink()
    record.symlink_to(outside)  # says the same tip, through a link: replaced, never trusted
    worker_refs.show(private, "w", second)
    assert not record.is_symlink() and record.read_text() == f"{second}\n" and outside.read_text() == f"{second}\n"


@pytest.mark.parametrize(
    "written, words",
    [
        ("ref: refs/heads/main", "is 'ref: refs/heads/main', not a commit"),
        (None, "is gone, not a commit"),
        ("f" * 40, "names ffffffffffff, not a commit the repository has"),
    ],
)
def test_a_copy_that_is_not_a_commit_leaves_the_real_branch_and_says_why(linked, written, words):
    repo, tree, private, first, _ = linked
    if written is None:
        view_file(private).unlink()
    else:
        view_file(private).write_text(written + "\n")
    said = worker_refs.take(tree, repo, "w", REF)
    assert words in said and said.endswith(f"{REF} was left where it was")
    assert git(repo, "rev-parse", REF).strip() == first


def test_a_branch_moved_outside_meanwhile_is_not_moved_back(linked):
    repo, tree, private, first, second = linked
    git(repo, "update-ref", REF, second, first)  # the orchestrator's move, without ``follow``
    third = git(repo, "commit-tree", "-p", first, "-m", "the worker's", f"{first}^{{tree}}", env=user_env()).strip()
    view_file(private).write_text(f"{third}\n")  # and the worker's commit on the tip it was shown
    said = worker_refs.take(tree, repo, "w", REF)
    assert "moved outside its sandbox while it committed" in said and said.endswith("left where it was")
    assert git(repo, "rev-parse", REF).strip() == second


def test_follow_shows_the_orchestrators_move_and_clears_what_a_worker_left(linked, tmp_path):
    repo, tree, private, _, second = linked
    view = private / worker_refs.VIEW
    (view / "result").write_text(f"{second}\n")  # a branch it made under another name
    (view / "deep").mkdir()
    (view / "deep" / "x").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, view / "link")

    worker_refs.follow(tree, "w", second)

    assert sorted(p.name for p in view.iterdir()) == ["w"] and view_file(private).read_text() == f"{second}\n"
    assert (private / worker_refs.SHOWN).read_text() == f"{second}\n"
    assert outside.is_dir()  # a link removed, not followed
    assert worker_refs.take(tree, repo, "w", REF) == ""


def test_showing_one_view_from_several_threads_at_once_fails_none_and_leaves_what_it_recorded(linked):
    """A selection builds a candidate's sandbox while its retry's reset shows its branch again: each
    show removes what is not the branch, which was once the other's temporary file (ENOENT on its
    rename), and the view and its record could name different tips."""
    repo, tree, private, first, second = linked
    failures: list[BaseException] = []

    def shows(tip: str) -> None:
        for _ in range(150):
            try:
                worker_refs.show(private, "w", tip)
            except BaseException as exc:  # noqa: BLE001 (each one counted)
                failures.append(exc)

    threads = [threading.Thread(target=shows, args=(tip,)) for tip in (first, second, first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert sorted(p.name for p in (private / worker_refs.VIEW).iterdir()) == ["w"]
    assert view_file(private).read_text() == (private / worker_refs.SHOWN).read_text()
    assert worker_refs.take(tree, repo, "w", REF) == ""  # what it shows is what it recorded: nothing to take


def test_a_view_turned_into_a_link_is_replaced_never_written_through(linked, tmp_path):
    repo, tree, private, first, second = linked
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "w").write_text(f"{second}\n")
    view = private / worker_refs.VIEW
    view.rename(tmp_path / "away")
    os.symlink(elsewhere, view)

    assert worker_refs.take(tree, repo, "w", REF) == ""  # read through no link: nothing to take
    assert git(repo, "rev-parse", REF).strip() == first
    worker_refs.follow(tree, "w", first)  # (no view: a link is not one)
    worker_refs.show(private, "w", first)
    assert view.is_dir() and not view.is_symlink() and view_file(private).read_text() == f"{first}\n"
    assert (elsewhere / "w").read_text() == f"{second}\n"


def test_a_plain_folder_has_no_view(tmp_path):
    assert worker_refs.take(tmp_path, tmp_path, "w", REF) == ""
    worker_refs.follow(tmp_path, "w", "0" * 40)
    assert list(tmp_path.iterdir()) == []


def test_the_folders_of_other_trees_and_a_packed_refs_without_them(linked, tmp_path):
    """Issue 48, item 8: what a sandbox of tree r1 shows empty of the git dir (every worktree's git dir,
    the prefix's branches and reflogs) and binds back (its tree's reflogs, its siblings' worktrees),
    and packed-refs without other trees' branches, the user's kept with their tags' peeled lines."""
    repo, tree, private, first, _ = linked
    git(repo, "branch", "orch/r2/w", first)  # another tree's
    git(repo, "branch", "orch/r1/sibling", first)  # its own tree's
    git(repo, "branch", "orchard", first)  # the user's, beside the prefix
    git(repo, "tag", "-a", "-m", "t", "v1", first, env=user_env())
    sibling, other = tmp_path / "r1" / "sibling", tmp_path / "r2" / "other"  # in the trees' folders
    git(repo, "worktree", "add", "-q", str(sibling), "orch/r1/sibling")
    git(repo, "worktree", "add", "-q", str(other), "orch/r2/w")
    git(repo, "pack-refs", "--all")
    common = repo / ".git"
    (common / "refs" / "heads" / "orch" / "r1").mkdir(parents=True)  # the tree's ref folder, as its sandbox makes it
    (common / "logs" / "refs" / "heads" / "orch" / "r1").mkdir(parents=True, exist_ok=True)

    emptied, kept = worker_refs.other_trees(common, "orch/", "r1", tmp_path / "r1", private)

    assert sorted(emptied) == sorted([common / "worktrees", common / "refs/heads/orch", common / "logs/refs/heads/orch"])
    siblings = linked_git_dir(sibling)
    assert kept == [common / "logs/refs/heads/orch/r1", siblings]  # not the other tree's worktree, nor its own
    theirs = worker_refs.other_trees(common, "orch/", "r2", tmp_path / "r2", private)[1]
    assert theirs == [common / "logs/refs/heads/orch/r2", linked_git_dir(other)]
    # Every worktree its tree's (one tree running alone): the folder is left whole, nothing bound per sibling
    assert worker_refs.other_trees(common, "orch/", "r1", tmp_path, private)[1] == [common / "logs/refs/heads/orch/r1"]
    assert worker_refs.other_trees(common, "orch-", "r1", tmp_path, private)[0] == []

    copy = worker_refs.packed_without_trees(common, "orch/", "r1", tmp_path / "state" / "packed-refs")

    assert copy is not None
    original, shown = (common / "packed-refs").read_text(), copy.read_text()
    assert " refs/heads/orch/r2/w\n" in original and " refs/heads/orch/r1/sibling\n" in original
    assert "refs/heads/orch/r2/" not in shown and " refs/heads/orch/r1/sibling\n" in shown
    kept_lines = [line for line in original.splitlines() if "refs/heads/orch/r2/" not in line]
    assert shown.splitlines() == kept_lines and "refs/tags/v1" in shown and "^" in shown and "refs/heads/orchard" in shown
    git(repo, "worktree", "remove", str(other))
    git(repo, "branch", "-D", "orch/r2/w")
    assert worker_refs.packed_without_trees(common, "orch/", "r1", copy) is None  # nothing of another tree's
    (common / "packed-refs").unlink()
    assert worker_refs.packed_without_trees(common, "orch/", "r1", copy) is None


def test_each_worktree_s_gitdir_is_read_once_until_it_changes_and_a_rewrite_in_place_is_seen(linked, tmp_path, monkeypatch):
    """Every sandbox's start classifies every worktree (a graph of N tasks: N x N): a ``gitdir`` file
    is read again only when it changed. Rewritten in place to the same length (as ``git worktree
    repair`` writes it), its worktree moves to the other side at once; a link put in its place is
    never followed."""
    repo, _, _, first, _ = linked
    mine, theirs = tmp_path / "r1", tmp_path / "r2"
    for name in ("a", "b", "c"):
        git(repo, "worktree", "add", "-q", "--detach", str(mine / name), first)
    common = repo / ".git"
    time.sleep(0.3)  # older than a file timestamp's granularity: what they name may be remembered
    reads: list[str] = []
    real_read = worker_refs._read
    monkeypatch.setattr(worker_refs, "_read", lambda name, folder=None: reads.append(name) or real_read(name, folder))
    ours, others = worker_refs.worktrees_in(common / "worktrees", mine)
    assert sorted(p.name for p in ours) == ["a", "b", "c"] and [p.name for p in others] == ["tree"]
    reads.clear()
    for _ in range(3):
        assert worker_refs.worktrees_in(common / "worktrees", mine) == (ours, others)
    assert reads == []  # nothing changed: no file read again

    moved = common / "worktrees" / "b" / "gitdir"
    text = moved.read_text()
    moved.write_text(text.replace(str(mine), str(theirs)))  # the same length, the same inode
    assert len(moved.read_text()) == len(text)
    ours, others = worker_refs.worktrees_in(common / "worktrees", mine)
    assert sorted(p.name for p in ours) == ["a", "c"] and sorted(p.name for p in others) == ["b", "tree"]
    assert reads == [str(moved)]
    assert worker_refs.worktrees_in(common / "worktrees", theirs)[0] == [common / "worktrees" / "b"]

    planted = common / "worktrees" / "c" / "gitdir"
    real = tmp_path / "elsewhere"
    real.write_text(planted.read_text())
    planted.unlink()
    planted.symlink_to(real)  # names a checkout in r1 through a link: not taken as its tree's
    ours, others = worker_refs.worktrees_in(common / "worktrees", mine)
    assert [p.name for p in ours] == ["a"] and sorted(p.name for p in others) == ["b", "c", "tree"]


def test_a_retired_worktrees_hidden_entry_is_no_worktree_and_a_broken_entry_stays_anothers(linked, tmp_path):
    """A Retirer hides a finished worktree's entry (its ``gitdir`` renamed to RETIRED_MARK-<pid>) a few
    seconds before deleting it: no sibling, and not another's (which would empty the folder of every
    worktree's git dir for each sandbox starting meanwhile). An entry that only lacks its ``gitdir``
    stays another's (the safe side)."""
    repo, _, _, first, _ = linked
    mine = tmp_path / "r1"
    for name in ("a", "b", "c"):
        git(repo, "worktree", "add", "-q", "--detach", str(mine / name), first)
    entries = repo / ".git" / "worktrees"
    (entries / "a" / "gitdir").rename(entries / "a" / f"{worker_refs.RETIRED_MARK}-{os.getpid()}")
    (entries / "b" / "gitdir").unlink()
    ours, others = worker_refs.worktrees_in(entries, mine)
    assert [p.name for p in ours] == ["c"] and sorted(p.name for p in others) == ["b", "tree"]
    assert "/a\n" not in git(repo, "worktree", "list", "--porcelain")  # git skips it as well


def own_git(tree: Path, git_dir: Path, env: dict[str, str], *args: str) -> str:
    """git as a worker under Landlock runs it: told its own git dir (worker_gitdir), nothing else of the repository's."""
    scrubbed = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(["git", *args], cwd=tree, env={**scrubbed, **user_env(), **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_git_dir_of_its_own_shows_its_branch_and_the_users_refs_and_nothing_of_other_trees(linked, tmp_path):
    """Landlock (git/worker_gitdir.py): no mount hides other trees' folders of the git dir, so the worker's
    git is told one of its own. It lists the user's branches and tags and its own branch (other trees'
    loose and packed ones, their worktrees and reflogs not); its commit moves its view, which ``take``
    moves the real branch to; what it left as links or folders in its own git dir is replaced."""
    repo, tree, private, first, _ = linked
    git(repo, "tag", "-a", "-m", "t", "v1", "main", env=user_env())
    git(repo, "branch", "orch/r2/w", "main")  # another tree's, packed
    git(repo, "pack-refs", "--all")
    git(repo, "branch", "orch/r3/w", "main")  # another's, loose
    git(repo, "worktree", "add", "-q", "-b", "orch/r3/x", str(tmp_path / "other"), "main")
    store = tmp_path / "store"
    store.mkdir()
    own = tmp_path / "git-dirs" / private.name
    common = repo / ".git"
    env = worker_gitdir.prepare(own, private, common, tree, "orch/", "r1", "w", store)
    env |= {"GIT_OBJECT_DIRECTORY": str(store), "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(common / "objects")}
    refs = own_git(tree, own, env, "for-each-ref", "--format=%(refname)").split()
    assert refs == ["refs/heads/main", "refs/heads/orch/r1/w", "refs/tags/v1"]
    assert "orch/r3" not in own_git(tree, own, env, "worktree", "list") + own_git(tree, own, env, "reflog", "show", "--all")
    (tree / "b.txt").write_text("mine")
    own_git(tree, own, env, "add", "b.txt")
    own_git(tree, own, env, "commit", "-qm", "mine")
    mine = own_git(tree, own, env, "rev-parse", "HEAD").strip()
    assert view_file(private).read_text().strip() == mine != first
    assert git(repo, "rev-parse", REF).strip() == first  # the real branch: not until it is taken
    for path in store.rglob("*"):  # (worker_objects.take checks and moves them; here a plain copy)
        if path.is_file() and path.parent.name != "info":
            target = common / "objects" / path.relative_to(store)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    assert worker_refs.take(tree, repo, "w", REF) == ""
    assert git(repo, "rev-parse", REF).strip() == mine
    # What a worker may leave in its own git dir: HEAD elsewhere, a folder where config goes, a link in logs.
    (own / "HEAD").write_text("ref: refs/heads/main\n")
    (own / "config").unlink()
    (own / "config").mkdir()
    (own / "logs" / "HEAD").unlink()
    (own / "logs" / "HEAD").symlink_to(repo / "a.txt")
    worker_gitdir.prepare(own, private, common, tree, "orch/", "r1", "w", store)
    assert (own / "HEAD").read_text() == "ref: refs/heads/orch/r1/w\n" and (own / "config").is_file()
    assert not (own / "logs" / "HEAD").is_symlink() and (repo / "a.txt").read_text() == "two"
    assert "packRefs = false" in (own / "config").read_text()


def test_a_detached_worktrees_git_dir_of_its_own_holds_its_commit_and_no_branch_of_any_tree(linked, tmp_path):
    """Landlock, a resolver's or the result gate's detached worktree (git/worker_gitdir.py): its git dir
    of its own has HEAD at the commit its private HEAD names (moved from the repository's side, copied at
    the next start), the user's refs, and no branch of its tree or another's, even where an earlier git dir
    of that name (a worker's) linked its tree's branches. A HEAD there that names a branch (a process
    wrote it) is not copied: git there fails rather than follow it."""
    repo, _, _, first, second = linked
    git(repo, "branch", "orch/r2/w", "main")  # another tree's
    detached = tmp_path / "detached"
    git(repo, "worktree", "add", "-q", "--detach", str(detached), first)
    private = linked_git_dir(detached)
    assert private is not None
    store = tmp_path / "store"
    store.mkdir()
    own = tmp_path / "git-dirs" / private.name
    common = repo / ".git"
    worker_gitdir.prepare(own, private, common, detached, "orch/", "r1", "w", store)  # an earlier worker's, that name
    assert (own / "refs" / "heads" / "orch" / "r1").is_symlink()
    env = worker_gitdir.prepare(own, private, common, detached, "orch/", "r1", "", store)
    env |= {"GIT_OBJECT_DIRECTORY": str(store), "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(common / "objects")}
    assert own_git(detached, own, env, "rev-parse", "HEAD").strip() == first
    assert own_git(detached, own, env, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main"]
    git(repo, "update-ref", "--no-deref", f"worktrees/{private.name}/HEAD", second)  # the result gate's move
    worker_gitdir.prepare(own, private, common, detached, "orch/", "r1", "", store)
    assert own_git(detached, own, env, "rev-parse", "HEAD").strip() == second
    (private / "HEAD").write_text("ref: refs/heads/orch/r2/w\n")
    (own / "commondir").write_text(f"{common}\n")
    worker_gitdir.prepare(own, private, common, detached, "orch/", "r1", "", store)
    assert (own / "HEAD").read_bytes() == b"" and not (own / "commondir").exists()
