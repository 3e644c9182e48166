"""The workspace: strict ids (they become paths), the layout, atomic writes, records, logs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from orchestrator.config import JobConfig
from orchestrator.errors import InvalidId, JobNotFound, WorkerNotFound, WorkspaceError
from orchestrator.models import Attempt, JobRecord, JobStatus, WorkerRecord, WorkerStatus
from orchestrator.workspace import layout as workspace_module
from orchestrator.workspace.filesystem import atomic_write, spread_subfolders
from orchestrator.workspace.ids import child_job_id, parse_worker_ref, root_of, validate_job_id, validate_worker_name
from orchestrator.workspace.layout import Workspace, read_served

ROOT_ID = "3f9a2c7b1d0e"
BAD_IDS = [
    "..",
    "../etc",
    "/etc/passwd",
    "%2e%2e%2f",
    "abc\x00",
    f"{ROOT_ID}\n",
    "3F9A2C7B1D0E",
    ROOT_ID + "0",
    ROOT_ID[:-1],
    f"{ROOT_ID}-c0",
    f"{ROOT_ID}-c",
    f"{ROOT_ID}/..",
    "",
    "３f9a2c7b1d0e",
    "٣f9a2c7b1d0e",
    None,
    12,
    b"3f9a2c7b1d0e",
]
BAD_WORKERS = [
    "worker_0",
    "worker_1/..",
    "worker_1\n",
    "../worker_1",
    "worker",
    "worker_",
    "Worker_1",
    "worker_01",
    "worker_１",
    "",
    None,
    1,
]


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "workspace", durable=False)


def make_job(job_id=ROOT_ID, **kw):
    return JobRecord(
        id=job_id,
        root_id=root_of(job_id),
        request="build it",
        status=JobStatus.RUNNING,
        tasks=["a", "b"],
        worker_names=["worker_1", "worker_2"],
        created_at=1.0,
        **kw,
    )


def make_worker(name="worker_1", index=1, depth=0, **kw):
    return WorkerRecord(
        job_id=ROOT_ID,
        root_id=ROOT_ID,
        name=name,
        index=index,
        depth=depth,
        task="a",
        kind="simulated",
        created_at=float(index),
        **kw,
    )


# -- ids -----------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", [ROOT_ID, f"{ROOT_ID}-c2", f"{ROOT_ID}-c1234567"])
def test_valid_job_ids_are_returned_unchanged(job_id):
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize("job_id", BAD_IDS)
def test_anything_else_is_an_invalid_job_id(job_id):
    with pytest.raises(InvalidId, match="invalid job id"):
        validate_job_id(job_id)


def test_an_invalid_id_message_is_short_even_for_a_huge_id():
    with pytest.raises(InvalidId) as info:
        validate_job_id("x" * 10_000)
    assert len(info.value.message) < 300


@pytest.mark.parametrize("name", ["worker_1", "worker_2_1", "worker_10_3_7"])
def test_valid_worker_names(name):
    assert validate_worker_name(name) == name


@pytest.mark.parametrize("name", BAD_WORKERS)
def test_anything_else_is_an_invalid_worker_name(name):
    with pytest.raises(InvalidId, match="invalid worker id"):
        validate_worker_name(name)


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("worker_2_1", (None, "worker_2_1")),
        ("depth_1_worker_2_1", (1, "worker_2_1")),
        ("depth_0_worker_1", (0, "worker_1")),
    ],
)
def test_parse_worker_ref_splits_an_optional_depth(ref, expected):
    assert parse_worker_ref(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        *[w for w in BAD_WORKERS if isinstance(w, str)],
        "depth_1_worker_1\n",
        "depth_x_worker_1",
        "depth_1_../worker_1",
        "depth_1234_worker_1",
        "depth_٣_worker_1",
        None,
    ],
)
def test_parse_worker_ref_refuses_bad_refs(ref):
    with pytest.raises(InvalidId):
        parse_worker_ref(ref)


@pytest.mark.parametrize("ref", [1, ["worker_1"]])
def test_parse_worker_ref_refuses_non_strings_as_invalid_ids(ref):
    with pytest.raises(InvalidId):
        parse_worker_ref(ref)


def test_root_of_a_root_or_child_id():
    assert root_of(ROOT_ID) == ROOT_ID
    assert root_of(f"{ROOT_ID}-c12") == ROOT_ID
    with pytest.raises(InvalidId):
        root_of("../etc")


def test_child_job_id_carries_its_root():
    child = child_job_id(ROOT_ID, 3)
    assert child == f"{ROOT_ID}-c3"
    assert validate_job_id(child) == child and root_of(child) == ROOT_ID


# -- layout --------------------------------------------------------------------------


def test_layout_paths(ws):
    job = ws.root / f"job_{ROOT_ID}"
    assert ws.job_dir(ROOT_ID) == job
    assert ws.depth_dir(ROOT_ID, 1) == job / "depth_1"
    assert ws.worker_dir(ROOT_ID, 1, "worker_2_1") == job / "depth_1" / "worker_2_1"
    assert ws.worker_log(ROOT_ID, 1, "worker_2_1") == job / "logs" / "depth_1_worker_2_1.log"
    assert ws.level_report(ROOT_ID, 1) == job / "depth_1" / "LEVEL_1_REPORT.md"
    assert ws.final_report(ROOT_ID) == job / "FINAL_RESULT.md"
    assert ws.job_record_path(f"{ROOT_ID}-c2") == job / "state" / "jobs" / f"{ROOT_ID}-c2.json"


def test_every_layout_path_is_inside_the_workspace(ws):
    paths = [
        ws.job_dir(ROOT_ID),
        ws.depth_dir(ROOT_ID, 2),
        ws.worker_dir(ROOT_ID, 2, "worker_1_1_1"),
        ws.worker_log(ROOT_ID, 2, "worker_1_1_1"),
        ws.level_report(ROOT_ID, 2),
        ws.final_report(ROOT_ID),
        ws.worker_record_path(ROOT_ID, 2, "worker_1_1_1"),
        ws.prompt_path(ROOT_ID, 2, "worker_1_1_1"),
    ]
    for path in paths:
        assert ws.contains(path), path


@pytest.mark.parametrize(
    "call",
    [
        lambda ws: ws.job_dir(".."),
        lambda ws: ws.job_dir(f"{ROOT_ID}-c1"),  # a child id is not a folder
        lambda ws: ws.worker_dir(ROOT_ID, 0, "../worker_1"),
        lambda ws: ws.worker_log(ROOT_ID, 0, "worker_1/../../x"),
        lambda ws: ws.job_record_path("../../etc/passwd"),
    ],
)
def test_layout_refuses_ids_that_would_escape(ws, call):
    with pytest.raises(InvalidId):
        call(ws)


def test_contains_follows_symlinks(ws, tmp_path):
    ws.root.mkdir()
    (ws.root / "out").symlink_to(tmp_path)
    assert not ws.contains(ws.root / "out" / "x")
    assert not ws.contains(ws.root / ".." / "x")
    assert ws.contains(ws.root / "a" / "b")


# -- atomic_write ------------------------------------------------------------------------


def no_space(src, dst):
    raise OSError(28, "No space left on device")


def test_atomic_write_replaces_the_content_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "record.json"
    path.write_bytes(b"old")
    atomic_write(path, b"new content")
    assert path.read_bytes() == b"new content"
    assert os.listdir(tmp_path) == ["record.json"]


def test_a_failed_atomic_write_keeps_the_old_file_and_removes_its_temp_file(tmp_path, monkeypatch):
    # Given a file and a rename that fails (full disk, killed process...)
    path = tmp_path / "record.json"
    path.write_bytes(b"old")

    monkeypatch.setattr(workspace_module.os, "replace", no_space)
    # When it is rewritten
    with pytest.raises(OSError):
        atomic_write(path, b"new")
    # Then the old content is intact and no temp file is left
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["record.json"]


def test_a_failed_write_through_the_workspace_is_a_workspace_error(ws, monkeypatch):
    ws.create_job_tree(ROOT_ID)
    monkeypatch.setattr(workspace_module.os, "replace", no_space)
    with pytest.raises(WorkspaceError, match="No space left on device"):
        ws.save_job(make_job())


def test_atomic_write_gives_the_mode_open_would_give(tmp_path):
    # mkstemp creates 0600 files; reports must be readable like any file the user makes
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")
    atomic_write(tmp_path / "atomic.txt", b"x")
    mode = stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode)
    assert mode != 0o600


def test_atomic_write_follows_the_current_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "atomic.txt", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode) == 0o640


# -- creating and removing trees -------------------------------------------------------


def test_create_job_tree_then_remove_it(ws):
    job_dir = ws.create_job_tree(ROOT_ID)
    assert job_dir == ws.job_dir(ROOT_ID)
    for sub in ("logs", "reports", "state/jobs", "state/workers", "state/prompts"):
        assert (job_dir / sub).is_dir(), sub
    ws.remove_job_tree(ROOT_ID)
    assert not job_dir.exists()
    assert ws.root.is_dir()


def _fs_type(path):
    """The file system type of ``path`` from /proc/mounts (longest mount point that holds it)."""
    real = os.path.realpath(path)
    with open("/proc/mounts") as handle:
        mounts = [line.split()[:3] for line in handle]
    return max((m for m in mounts if real == m[1] or real.startswith(m[1].rstrip("/") + "/")), key=lambda m: len(m[1]))[2]


@pytest.mark.skipif(not os.path.exists("/proc/mounts") or not shutil.which("lsattr"), reason="needs Linux and lsattr")
def test_a_trees_tmpdirs_go_at_its_end_and_nothing_a_worker_linked_them_to(ws, tmp_path):
    # Given a tree's TMPDIRs as its workers could have left them: most empty, one with files and a
    # folder, one swapped for a link to a folder of files outside, one for a link to an empty folder
    # outside, a file where a folder was, and a link to a file outside
    ws.create_job_tree("0123456789ab")
    outside, empty_outside, secret = tmp_path / "outside", tmp_path / "empty-outside", tmp_path / "secret.txt"
    outside.mkdir()
    (outside / "keep.txt").write_text("k")
    empty_outside.mkdir()
    secret.write_text("s")
    names = [f"worker_{i}" for i in range(1, 8)]
    tmps = [ws.worker_tmp("0123456789ab", 0, name) for name in names]
    for tmp in tmps[:3]:
        tmp.mkdir(parents=True)
    (tmps[1] / "sub").mkdir()
    (tmps[1] / "sub" / "f").write_text("f")
    (tmps[1] / "g").write_text("g")
    tmps[3].symlink_to(outside, target_is_directory=True)
    tmps[4].symlink_to(empty_outside, target_is_directory=True)
    tmps[5].write_text("a file")
    tmps[6].symlink_to(secret)
    # When the tree ends
    ws.remove_tree_tmp("0123456789ab")
    # Then every TMPDIR is gone, and every link's target is as it was
    tree_tmp = tmps[0].parent
    assert not tree_tmp.exists() and not tree_tmp.is_symlink()
    assert (outside / "keep.txt").read_text() == "k" and empty_outside.is_dir() and secret.read_text() == "s"


def test_a_trees_tmp_swapped_for_a_link_leaves_its_target_alone(ws, tmp_path):
    # Given the tree's TMPDIR folder itself swapped for a link to a folder outside, with an empty folder in it
    ws.create_job_tree("0123456789ab")
    tree_tmp = ws.worker_tmp("0123456789ab", 0, "worker_1").parent
    shutil.rmtree(tree_tmp, ignore_errors=True)
    outside = tmp_path / "outside"
    (outside / "depth_0_worker_1").mkdir(parents=True)
    tree_tmp.symlink_to(outside, target_is_directory=True)
    # When the tree ends, Then nothing is removed through the link
    ws.remove_tree_tmp("0123456789ab")
    assert (outside / "depth_0_worker_1").is_dir()


def test_job_trees_and_their_state_ask_ext4_for_block_groups_of_their_own(ws):
    # Given a workspace, when a job tree is made
    ws.check_writable()
    job_dir = ws.create_job_tree(ROOT_ID)
    flags = {
        p: subprocess.run(["lsattr", "-d", str(p)], capture_output=True, text=True).stdout.split()[0]
        for p in (ws.root, job_dir, job_dir / "state", job_dir / "logs")
    }
    if _fs_type(ws.root).startswith("ext"):
        # Then on ext2/3/4 the workspace, each tree and its state folder carry the Orlov "top dir" flag (T)
        assert all("T" in flags[p] for p in (ws.root, job_dir, job_dir / "state")), flags
        assert "T" not in flags[job_dir / "logs"]
    else:
        # and elsewhere the flag is not there and nothing else changed
        assert spread_subfolders(job_dir) is False
    assert (job_dir / "state" / "workers").is_dir()


def test_a_workspace_root_that_is_a_file_is_a_workspace_error(tmp_path):
    (tmp_path / "workspace").write_text("not a folder")
    ws = Workspace(tmp_path / "workspace")
    with pytest.raises(WorkspaceError) as info:
        ws.create_job_tree(ROOT_ID)
    assert "cannot create job folder" in info.value.message and "Not a directory" in info.value.message
    assert "orchestrator.workspace_root" in info.value.message


def test_creating_an_existing_job_tree_keeps_the_existing_one(ws):
    # Given a job tree with a report in it
    job_dir = ws.create_job_tree(ROOT_ID)
    ws.final_report(ROOT_ID).write_text("done")
    # When the same id is created again, it is refused
    with pytest.raises(WorkspaceError):
        ws.create_job_tree(ROOT_ID)
    # Then the first job's files are still there
    assert (job_dir / "FINAL_RESULT.md").read_text() == "done"


def test_check_writable_creates_the_root_and_leaves_no_probe(ws):
    ws.check_writable()
    assert ws.root.is_dir() and os.listdir(ws.root) == []


def test_check_writable_under_a_regular_file_names_the_fix(tmp_path):
    (tmp_path / "file").write_text("x")
    ws = Workspace(tmp_path / "file" / "workspace")
    with pytest.raises(WorkspaceError) as info:
        ws.check_writable()
    assert "is not writable" in info.value.message and "orchestrator.workspace_root" in info.value.message
    assert info.value.details["path"] == str(ws.root)


def test_check_writable_on_a_read_only_folder(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(WorkspaceError, match="not writable"):
        Workspace(tmp_path / "ro").check_writable()


# -- records -------------------------------------------------------------------------


def test_job_and_worker_records_round_trip(ws):
    ws.create_job_tree(ROOT_ID)
    job = make_job(notes=["lowered"], config=JobConfig(max_workers=2))
    worker = make_worker(
        status=WorkerStatus.FAILED,
        attempts=[Attempt(number=1, started_at=1.0, ended_at=2.5, exit_code=1)],
        files_created=["a.md"],
        output="ünïcode ✔",
    )
    ws.save_job(job)
    ws.save_worker(worker)
    assert ws.load_job(ROOT_ID) == job
    assert ws.load_worker(ROOT_ID, 0, "worker_1") == worker


def test_load_tree_ignores_temp_files(ws):
    # Given two workers saved, and temp files from an interrupted write
    ws.create_job_tree(ROOT_ID)
    ws.save_job(make_job())
    ws.save_worker(make_worker("worker_2", 2))
    ws.save_worker(make_worker("worker_1", 1))
    folder = ws.state_dir(ROOT_ID) / "workers"
    (folder / "depth_0_worker_3.json.tmp").write_text("{half")
    (folder / ".depth_0_worker_3.json.abc123.tmp").write_text("{half")
    (folder / ".depth_0_worker_4.json").write_text("{half")
    # Then the tree holds only the real records, in order
    jobs, workers = ws.load_tree(ROOT_ID)
    assert [j.id for j in jobs] == [ROOT_ID]
    assert [w.name for w in workers] == ["worker_1", "worker_2"]


def test_load_tree_of_a_missing_job_is_empty(ws):
    assert ws.load_tree(ROOT_ID) == ([], [])


@pytest.mark.parametrize("job_id", [ROOT_ID, f"{ROOT_ID}-c1"])
def test_load_job_of_a_missing_job_is_job_not_found(ws, job_id):
    with pytest.raises(JobNotFound, match=job_id):
        ws.load_job(job_id)


def test_load_job_refuses_an_invalid_id(ws):
    with pytest.raises(InvalidId):
        ws.load_job("../../etc/passwd")


def test_load_worker_of_a_missing_worker_is_worker_not_found(ws):
    ws.create_job_tree(ROOT_ID)
    with pytest.raises(WorkerNotFound, match="depth_0_worker_9"):
        ws.load_worker(ROOT_ID, 0, "worker_9")


# -- files_in ------------------------------------------------------------------------


def test_files_in_lists_nested_files_relative_to_the_folder(ws, tmp_path):
    folder = tmp_path / "w"
    (folder / "src" / "pkg").mkdir(parents=True)
    (folder / "README.md").write_text("x")
    (folder / "src" / "pkg" / "main.py").write_text("x")
    (folder / "empty").mkdir()
    assert ws.files_in(folder) == ["README.md", os.path.join("src", "pkg", "main.py")]


def test_files_in_lists_symlinks_without_following_them(ws, tmp_path):
    # Given a worker folder with links to a folder and a file outside it
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "link_dir").symlink_to(outside, target_is_directory=True)
    (folder / "link_file").symlink_to(outside / "secret.txt")
    (folder / "dangling").symlink_to(tmp_path / "nowhere")
    # Then each link is one entry and the folder behind link_dir is not walked
    assert ws.files_in(folder) == ["dangling", "link_dir", "link_file"]


def test_files_in_a_missing_folder_is_empty(ws, tmp_path):
    assert ws.files_in(tmp_path / "missing") == []


def test_files_in_a_folder_swapped_for_a_link_or_under_one_lists_nothing(ws, tmp_path):
    # Given a worker folder whose files are real, and the same folder reached through a link to
    # it and through a linked parent (a worker that swapped its folder or a parent for a link)
    real = tmp_path / "real"
    (real / "inner").mkdir(parents=True)
    (real / "inner" / "secret.txt").write_text("x")
    (tmp_path / "swapped").symlink_to(real / "inner", target_is_directory=True)
    (tmp_path / "parent").symlink_to(real, target_is_directory=True)
    # Then only the real path is listed: a link is never followed into its target's files
    assert ws.files_in(real / "inner") == ["secret.txt"]
    assert ws.files_in(tmp_path / "swapped") == []
    assert ws.files_in(tmp_path / "parent" / "inner") == []


def test_real_path_names_what_realpath_names(tmp_path):
    # Given links in every place realpath resolves: a linked folder, a linked parent, a relative
    # link, a link to a link, a dangling one, a missing name below a link, a FIFO and a plain file
    from orchestrator.workspace.filesystem import real_path

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "file").write_text("x")
    os.mkfifo(tmp_path / "a" / "fifo")
    (tmp_path / "to_a").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "up").symlink_to("..")
    (tmp_path / "to_to_a").symlink_to("to_a")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    paths = [
        tmp_path / "a" / "b",
        tmp_path / "to_a" / "b",
        tmp_path / "to_a" / "up" / "to_to_a" / "b" / "file",
        tmp_path / "to_to_a",
        tmp_path / "dangling",
        tmp_path / "to_a" / "missing" / "deeper",
        tmp_path / "a" / "fifo",
        str(tmp_path / "a" / "b" / "file"),
    ]
    # Then the kernel's answer (or realpath's, where it has none) is realpath's, without blocking on the FIFO
    for path in paths:
        assert real_path(path) == os.path.realpath(path), path


def test_files_in_stops_at_the_cap(ws, tmp_path, monkeypatch):
    monkeypatch.setattr(workspace_module, "MAX_FILES_LISTED", 3)
    for i in range(5):
        (tmp_path / f"f{i}").write_text("x")
    assert len(ws.files_in(tmp_path)) == 3


# -- reading logs -------------------------------------------------------------------


def write_lines(path, count):
    path.write_text("".join(f"line {i}\n" for i in range(1, count + 1)))
    return path


def test_read_tail_of_a_small_file(ws, tmp_path):
    path = write_lines(tmp_path / "w.log", 3)
    assert ws.read_tail(path, 2) == "line 2\nline 3"
    assert ws.read_tail(path, 10) == "line 1\nline 2\nline 3"


def test_read_tail_of_a_big_file_reads_only_its_end(ws, tmp_path):
    path = write_lines(tmp_path / "w.log", 100_000)
    assert ws.read_tail(path, 3, max_bytes=1024) == "line 99998\nline 99999\nline 100000"


def test_read_tail_of_a_missing_file_is_empty(ws, tmp_path):
    assert ws.read_tail(tmp_path / "missing.log") == ""


def test_read_from_an_offset(ws, tmp_path):
    path = write_lines(tmp_path / "w.log", 3)  # 21 bytes, 7 per line
    assert ws.read_from(path, 7, 1000) == "line 2\nline 3\n"
    assert ws.read_from(path, 21, 1000) == ""
    assert ws.read_from(tmp_path / "missing.log", 0, 10) == ""


def test_a_line_appended_to_a_log_says_where_it_starts_with_no_seek(ws, tmp_path, monkeypatch):
    # Given a log whose last line lacks its newline (a worker's output), and every seek counted
    path = tmp_path / "w.log"
    path.write_bytes(b"partial")
    seeks = []
    seek = os.lseek
    monkeypatch.setattr(os, "lseek", lambda *args: seeks.append(args) or seek(*args))
    # When a marker goes on a line of its own, then a plain line after it, then a line to a new log
    first = ws.append_log(path, b"===== marker =====\n", own_line=True)
    second = ws.append_log(path, b"more\n")
    third = ws.append_log(tmp_path / "new.log", b"first\n", own_line=True)
    # Then each offset is where its data starts (the newline the marker needed first), and the
    # size its open's fstat gave served: no seek to the end
    assert path.read_bytes() == b"partial\n===== marker =====\nmore\n"
    assert (first, second, third) == (8, 27, 0) and (tmp_path / "new.log").read_bytes() == b"first\n"
    assert seeks == []


def test_read_from_a_big_file_keeps_its_end(ws, tmp_path):
    path = write_lines(tmp_path / "w.log", 100_000)
    assert ws.read_from(path, 0, 14) == "9\nline 100000\n"
    assert ws.read_from(path, 7, 14) == "9\nline 100000\n"  # an early offset still keeps the end


def test_read_from_replaces_invalid_utf8(ws, tmp_path):
    path = tmp_path / "w.log"
    path.write_bytes(b"ok \xff\xfe end\n")
    assert ws.read_from(path, 0, 100) == "ok \ufffd\ufffd end\n"


def served_log(ws, lines=3):
    ws.create_job_tree(ROOT_ID)
    return write_lines(ws.worker_log(ROOT_ID, 0, "worker_1"), lines)


def test_read_served_reads_a_log_whole_or_its_tail(ws):
    path = served_log(ws)
    assert read_served(ws, path) == (b"line 1\nline 2\nline 3\n", 21)
    assert read_served(ws, path, tail_lines=1) == (b"line 3\n", 21)
    assert read_served(ws, path, offset=14) == (b"line 3\n", 21)


def test_read_served_of_a_missing_log_is_empty(ws):
    ws.create_job_tree(ROOT_ID)
    assert read_served(ws, ws.worker_log(ROOT_ID, 0, "worker_1")) == (b"", 0)


def test_read_served_refuses_a_symlinked_log(ws):
    # Given a worker that replaced its log with a link to a host file
    ws.create_job_tree(ROOT_ID)
    log = ws.worker_log(ROOT_ID, 0, "worker_1")
    os.symlink("/etc/hostname", log)
    # Then serving it is refused, not followed
    with pytest.raises(WorkspaceError, match="refusing to serve depth_0_worker_1.log"):
        read_served(ws, log)


def test_read_served_refuses_a_path_outside_the_workspace(ws, tmp_path):
    ws.root.mkdir()
    outside = write_lines(tmp_path / "outside.log", 1)
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        read_served(ws, outside)
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        read_served(ws, ws.root / ".." / "outside.log")


def test_read_served_refuses_a_log_in_a_symlinked_folder_that_leaves_the_workspace(ws, tmp_path):
    ws.create_job_tree(ROOT_ID)
    write_lines(tmp_path / "outside.log", 1)
    (ws.job_dir(ROOT_ID) / "escape").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        read_served(ws, ws.job_dir(ROOT_ID) / "escape" / "outside.log")


# -- root_ids -------------------------------------------------------------------------


def test_root_ids_lists_only_job_folders_with_a_root_id(ws, tmp_path):
    # Given one real job folder among look-alikes
    ws.create_job_tree(ROOT_ID)
    for name in ("job_3F9A2C7B1D0E", f"job_{ROOT_ID}-c1", "job_123", "other", f"job_{ROOT_ID}0"):
        (ws.root / name).mkdir()
    (ws.root / "job_aaaaaaaaaaaa").write_text("a file")
    (ws.root / "job_bbbbbbbbbbbb").symlink_to(tmp_path, target_is_directory=True)
    # Then only the real one is listed
    assert ws.root_ids() == [ROOT_ID]


def test_root_ids_are_newest_first(ws):
    older, newer = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
    ws.create_job_tree(older)
    ws.create_job_tree(newer)
    os.utime(ws.job_dir(older), (1_000_000, 1_000_000))
    assert ws.root_ids() == [newer, older]


def test_root_ids_of_a_missing_workspace_is_empty(ws):
    assert ws.root_ids() == []


def _tmp_of(ws, name):
    return ws.worker_tmp("0123456789ab", 0, name)


def test_an_ended_workers_emptied_tmpdir_is_the_next_workers_not_a_new_folder(ws):
    # Given a tree whose first worker's TMPDIR was made, used and emptied by its end
    ws.create_job_tree("0123456789ab")
    used = ws.make_worker_tmp("0123456789ab", 0, "worker_1")
    (used / "scratch").write_text("s")
    ws.release_worker_tmp("0123456789ab", 0, "worker_1")  # not empty: removed, as before
    assert not used.exists()
    first = ws.make_worker_tmp("0123456789ab", 0, "worker_2")
    inode = first.stat().st_ino
    ws.release_worker_tmp("0123456789ab", 0, "worker_2")  # empty: set aside
    # When the tree's next worker gets its TMPDIR
    second = ws.make_worker_tmp("0123456789ab", 0, "worker_3")
    # Then it is the emptied one, renamed: no new inode, nothing in it, nothing else in the tree's tmp
    assert second.stat().st_ino == inode and not any(second.iterdir())
    assert sorted(p.name for p in second.parent.iterdir()) == ["depth_0_worker_3"]
    # And a TMPDIR already there (a worker re-adopted after a restart) is kept as it is
    (second / "keep").write_text("k")
    assert ws.make_worker_tmp("0123456789ab", 0, "worker_3") == second and (second / "keep").read_text() == "k"


@pytest.mark.parametrize("tamper", ["a file", "a mode", "an acl"])
def test_a_set_aside_tmpdir_not_as_a_new_one_would_be_is_never_taken(ws, tamper):
    # Given two ended workers' emptied TMPDIRs set aside, and the last one changed after its worker's end
    ws.create_job_tree("0123456789ab")
    clean, changed = (ws.make_worker_tmp("0123456789ab", 0, name) for name in ("worker_1", "worker_2"))
    clean_inode, changed_inode = clean.stat().st_ino, changed.stat().st_ino
    ws.release_worker_tmp("0123456789ab", 0, "worker_1")
    ws.release_worker_tmp("0123456789ab", 0, "worker_2")
    spares = {p.stat().st_ino: p for p in clean.parent.iterdir()}
    assert set(spares) == {clean_inode, changed_inode}
    spare = spares[changed_inode]
    if tamper == "a file":
        (spare / "planted").write_text("p")
    elif tamper == "a mode":
        spare.chmod(0o777)
    else:
        try:
            os.setxattr(spare, "user.planted", b"p")
        except OSError as exc:
            pytest.skip(f"no user extended attributes here: {exc}")
    # When the next two workers get their TMPDIRs
    third, fourth = (ws.make_worker_tmp("0123456789ab", 0, name) for name in ("worker_3", "worker_4"))
    # Then the untouched one is taken, the changed one never: a new folder instead, the changed one left aside
    assert third.stat().st_ino == clean_inode and not any(third.iterdir())
    assert fourth.stat().st_ino != changed_inode and not any(fourth.iterdir())
    assert spare.exists() and stat.S_IMODE(fourth.stat().st_mode) == stat.S_IMODE(third.stat().st_mode)
    # And the tree's end removes all of them
    ws.remove_tree_tmp("0123456789ab")
    assert not third.parent.exists()


def test_a_set_aside_tmpdir_replaced_by_a_link_is_never_taken_nor_followed(ws, tmp_path):
    # Given an ended worker's emptied TMPDIR set aside, then replaced by a link to a folder elsewhere
    # made as a TMPDIR would be (same mode, empty)
    ws.create_job_tree("0123456789ab")
    made = ws.make_worker_tmp("0123456789ab", 0, "worker_1")
    mode = stat.S_IMODE(made.stat().st_mode)
    ws.release_worker_tmp("0123456789ab", 0, "worker_1")
    (spare,) = made.parent.iterdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    elsewhere.chmod(mode)
    spare.rmdir()
    spare.symlink_to(elsewhere, target_is_directory=True)
    # When the tree's next worker gets its TMPDIR
    got = ws.make_worker_tmp("0123456789ab", 0, "worker_2")
    # Then it is a new folder, not the link; the link stays where it was and the folder it names is untouched
    assert not got.is_symlink() and got.is_dir() and not any(got.iterdir())
    assert spare.is_symlink() and elsewhere.is_dir() and not any(elsewhere.iterdir())
    # And the tree's end removes the link, never what it names
    ws.remove_tree_tmp("0123456789ab")
    assert not got.parent.exists() and elsewhere.is_dir()


def test_a_set_aside_tmpdir_a_crash_left_is_not_taken_and_goes_with_the_tree(tmp_path):
    # Given a server that set an emptied TMPDIR aside, then stopped
    before = Workspace(tmp_path / "workspace", durable=False)
    before.create_job_tree("0123456789ab")
    inode = before.make_worker_tmp("0123456789ab", 0, "worker_1").stat().st_ino
    before.release_worker_tmp("0123456789ab", 0, "worker_1")
    left = list(_tmp_of(before, "worker_1").parent.iterdir())
    assert [p.stat().st_ino for p in left] == [inode] and left[0].name.startswith(workspace_module.SPARE_TMP)
    # When the restarted server's next worker gets its TMPDIR
    after = Workspace(tmp_path / "workspace", durable=False)
    made = after.make_worker_tmp("0123456789ab", 0, "worker_2")
    # Then it is a new folder (what the earlier server set aside is not known to it), and the tree's end removes both
    assert made.stat().st_ino != inode and left[0].is_dir()
    after.remove_tree_tmp("0123456789ab")
    assert not made.parent.exists()
