"""The one atomic writer: a target is replaced whole or left as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hetconv.errors import ConfigError
from search.store.files import check_target, write_atomic


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
