"""Folders on file systems that refuse writes: one that fills up after ``FULL_AT`` bytes, for the
full-disk fault tests, and a read-only one, for the readers' tests.

A real tmpfs of that size where the machine lets the tests mount one (root in CI), otherwise a
process-wide file size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, which the writer
treats like a full disk; Python ignores the SIGXFSZ that would otherwise kill the process).
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FULL_AT = 256 * 1024


def _mount_tmpfs(folder: Path, size: int = FULL_AT) -> bool:
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True)
    return mounted.returncode == 0


@contextlib.contextmanager
def small_file_system(folder: Path, size: int) -> Iterator[Path]:
    """``folder`` (made here) on a real tmpfs of ``size`` bytes while the block runs, for a
    test whose subprocesses must fill it while writing freely elsewhere (a file size limit
    would bind them everywhere). Where mounting is not allowed the test skips, and fails under
    CI (root there)."""
    folder.mkdir()
    if not _mount_tmpfs(folder, size):
        if os.environ.get("CI") == "true":
            pytest.fail("mounting a tmpfs is required under CI (run the tests as root)")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def filling_folder(folder: Path) -> Iterator[Path]:
    """``folder`` (made here), full after ``FULL_AT`` bytes while the block runs."""
    folder.mkdir()
    if _mount_tmpfs(folder):
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=True)
        return
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FULL_AT, limits[1]))
    try:
        yield folder
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)


@contextlib.contextmanager
def read_only_folder(folder: Path, files: dict[str, bytes]) -> Iterator[Path]:
    """``folder`` (made here) holding ``files``, on a read-only mount while the block runs: a
    tmpfs remounted read-only where the machine lets the tests mount one (root in CI), else
    the folder's write permission taken away (which binds every user but root)."""
    folder.mkdir()
    if _mount_tmpfs(folder):
        try:
            for name, data in files.items():
                (folder / name).write_bytes(data)
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=True)
        return
    for name, data in files.items():
        (folder / name).write_bytes(data)
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)
