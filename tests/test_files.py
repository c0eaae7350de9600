"""The one atomic writer: a target is replaced whole or left as it was."""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from file_systems import FULL_AT
from test_dashboards_support import write_study

from hetconv.errors import ConfigError
from search.store.files import (
    WriteFailed,
    check_target,
    folders_held,
    sole_writer,
    write_atomic,
    write_together,
)


def test_the_target_appears_whole_in_a_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "file.json"
    write_atomic(target, lambda path: path.write_text("whole"))
    assert target.read_text() == "whole"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_a_failing_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    target.write_text("old")

    def half_then_fail(path: Path) -> None:
        path.write_text("ha")
        raise KeyboardInterrupt  # even an interruption

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_targets_that_cannot_become_a_file_are_refused_before_any_work(tmp_path: Path) -> None:
    check_target(tmp_path / "new" / "deeper" / "file.pt", "--out")  # folders are made
    (tmp_path / "plain.pt").write_bytes(b"old")
    check_target(tmp_path / "plain.pt", "--out")  # replaced whole
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target, needle in ((tmp_path, "is a folder"), (fifo, "not a regular file"),
                           (tmp_path / "plain.pt" / "x.pt", "plain.pt is a file, not a folder")):
        with pytest.raises(ConfigError, match=needle):
            check_target(target, "--out")


def test_the_writer_itself_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """A link, a FIFO or a folder at the target stays as it was, and so does what a link
    points to; the check is the writer's own, not only the commands' early one."""
    pointed = tmp_path / "elsewhere.json"
    pointed.write_text("theirs")
    link = tmp_path / "link.json"
    link.symlink_to(pointed)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target, needle in ((link, "is a symbolic link"), (fifo, "not a regular file"),
                           (tmp_path, "is a folder")):
        with pytest.raises(ConfigError, match=needle):
            write_atomic(target, lambda path: path.write_text("ours"))
    assert link.is_symlink() and pointed.read_text() == "theirs"
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.json", "link.json", "pipe"]


def test_files_written_together_keep_the_previous_pair_when_one_fails(tmp_path: Path) -> None:
    architecture, weights = tmp_path / "best.json", tmp_path / "best.pt"
    architecture.write_text("old architecture")
    weights.write_bytes(b"old weights")

    def fail(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("the second file failed")

    with pytest.raises(RuntimeError, match="second file failed"):
        write_together({architecture: lambda path: path.write_text("new"), weights: fail})
    assert architecture.read_text() == "old architecture"
    assert weights.read_bytes() == b"old weights"
    write_together({architecture: lambda path: path.write_text("new"),
                    weights: lambda path: path.write_bytes(b"new weights")})
    assert (architecture.read_text(), weights.read_bytes()) == ("new", b"new weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.pt"]


def test_a_full_file_system_keeps_the_previous_files(full_folder: Path) -> None:
    """Real ENOSPC (a small tmpfs) or EFBIG (a file size limit where mounting is not allowed):
    the writer says so in one WriteFailed and both previous files are intact."""
    architecture, weights = full_folder / "best.json", full_folder / "best.pt"
    architecture.write_text("old architecture")
    weights.write_bytes(b"old weights")
    with pytest.raises(WriteFailed, match="cannot write .*best.json.*previous files are kept"):
        write_together({architecture: lambda path: path.write_text("new"),
                        weights: lambda path: path.write_bytes(bytes(FULL_AT * 2))})
    assert architecture.read_text() == "old architecture"
    assert weights.read_bytes() == b"old weights"
    assert sorted(p.name for p in full_folder.iterdir()) == ["best.json", "best.pt"]


def test_a_command_writing_onto_a_full_disk_fails_in_one_line(full_folder: Path,
                                                              tmp_path: Path) -> None:
    """The report (over 1 MB) onto a full file system: exit status 1, one line, the previous
    report kept and no temporary left."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    write_study(storage, "s")
    report = full_folder / "report.html"
    report.write_text("the previous report")
    result = subprocess.run([sys.executable, "-m", "dashboards.report", "--storage", storage,
                             "--study", "s", "--out", str(report)], capture_output=True,
                            text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(lines) == 1 and "cannot write" in lines[0] and "kept" in lines[0], lines
    assert report.read_text() == "the previous report"
    assert [p.name for p in full_folder.iterdir()] == ["report.html"]


def test_a_pair_is_replaced_only_while_no_other_writer_holds_its_folder(tmp_path: Path) -> None:
    """Two processes writing one pair (two deploys or exports to the same files) replace it one
    after the other: a writer waits while another holds the folder, so the pair it leaves is
    never one's file beside the other's."""
    pair = {tmp_path / "model.pt2": "new", tmp_path / "model.onnx": "new"}
    writer = threading.Thread(target=write_together, args=(
        {target: functools.partial(Path.write_text, data=text) for target, text in
         pair.items()},))
    with folders_held([tmp_path]):  # another writer, mid-replacement
        writer.start()
        writer.join(1.0)
        assert writer.is_alive() and not any(target.exists() for target in pair)
    writer.join(30)
    assert not writer.is_alive()
    assert {target: target.read_text() for target in pair} == pair


def test_the_sole_writer_of_a_folder_replaces_pairs_in_it_without_waiting_for_itself(
        tmp_path: Path) -> None:
    pair = {tmp_path / "a.pt": "a", tmp_path / "a.json": "b"}
    writes = {target: functools.partial(Path.write_text, data=text) for target, text in
              pair.items()}
    with sole_writer(tmp_path, "wait"):
        writer = threading.Thread(target=write_together, args=(writes,), daemon=True)
        writer.start()
        writer.join(30)
        assert not writer.is_alive(), "a writer waited for its own hold on the folder"
        refused = pytest.raises(ConfigError, match="being written by another process; wait$")
        with refused, sole_writer(tmp_path, "wait"):
            pass
    assert {target: target.read_text() for target in pair} == pair


def test_where_a_file_system_has_no_folder_locks_writes_go_on_unlocked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NFSv4 refuses an exclusive flock on a descriptor not open for writing (EBADF), Lustre
    and some FUSE mounts have none: the writers work there as they did before the locks."""
    def refused(handle: int, operation: int) -> None:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(fcntl, "flock", refused)
    pair = {tmp_path / "a.pt": "a", tmp_path / "a.json": "b"}
    with sole_writer(tmp_path / "checkpoints", "wait"):
        write_together({target: functools.partial(Path.write_text, data=text)
                        for target, text in pair.items()})
    assert {target: target.read_text() for target in pair} == pair
