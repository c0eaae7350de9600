"""The one way HetNAS writes a file: whole, or not at all.

Checkpoints, exported architectures and weights, downloaded data and reports are written to a
temporary file beside the target, flushed to disk, and renamed over it. A reader (a resumed
trial, a user, a concurrent loader) sees the old file or the new one, never half of either; a
failure part-way (a full disk, a killed process) leaves the old file as it was and no temporary
behind. Files that belong together (an architecture and its weights) are replaced together: a
failure leaves all the old ones. Only regular files are replaced: a folder, a symbolic link, a
FIFO or a device at the target is refused before anything is written. A folder that a command
writes over many steps (a training's checkpoints) has one writer at a time (:func:`sole_writer`),
and files replaced together are replaced while their folders are held (:func:`folders_held`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from hetconv.errors import ConfigError

Writer = Callable[[Path], object]

# What a file system answers when it will not take a file (not a fault of the writer's data).
_REFUSALS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
             errno.EIO}


class WriteFailed(Exception):
    """The file system refused a write (full, read-only, no permission): the run failed, no
    earlier file was lost. Commands report it in one line with exit status 1."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_source(source: Path, label: str) -> None:
    """Refuse, before it is opened, a file to read that is missing or no regular file: a
    folder, a FIFO (which would block the reader until a writer comes), a device. ``label``
    names it in the message (a flag)."""
    try:
        mode = source.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{label} {source} does not exist") from None
    except OSError as error:  # a name too long, a folder this user may not enter
        raise ConfigError(f"{label} {str(source)[:80]!r}: {error.strerror}; give another "
                          f"path") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else (
            "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file")
        raise ConfigError(f"{label} {source} is {kind}; give the path of a file")


def check_target(target: Path, label: str,
                 inputs: Mapping[Path | None, str] | None = None) -> None:
    """Refuse, before any work, a target this module could not replace with a file: a folder,
    something that is not a regular file (a link, a FIFO, a device), a path under a file, or
    one of the command's ``inputs`` (path -> what it is: the study database, an architecture
    file), which the write would destroy. ``label`` names the target in the message (a
    flag)."""
    for given, what in (inputs or {}).items():
        if given is not None and _same_file(target, given):
            raise ConfigError(f"{label} {target} would overwrite {what}; write it elsewhere")
    try:
        mode = target.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # a parent that is a file: said below
        mode = None
    except OSError as error:  # a name too long, a folder this user may not enter
        raise ConfigError(f"{label} {str(target)[:80]!r}: {error.strerror}; give another "
                          f"path") from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode)
                else "not a regular file")
        raise ConfigError(f"{label} {target} is {kind}; give the path of a file to write")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{label} {target}: {parent} is a file, not a folder; write "
                                  f"the file elsewhere")
            break


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links too), or would once written."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


_NO_LOCKS = {errno.EBADF, errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
_held_here: set[Path] = set()  # folders this process holds (a flock on another descriptor of
# the same folder would wait for this process itself)


@contextlib.contextmanager
def sole_writer(folder: Path, fix: str) -> Iterator[None]:
    """Hold ``folder`` (created if missing) for this process while the block runs, or refuse in
    one line (a :class:`ConfigError` ending in ``fix``) when another process holds it: two
    writers would both write its files. An advisory ``flock`` on the folder itself: the kernel
    drops it when the holder ends, however it ends, so nothing is left to clean up."""
    folder.mkdir(parents=True, exist_ok=True)
    with _held(folder, wait=False) as held:
        if not held:
            raise ConfigError(f"{folder} is being written by another process; {fix}")
        resolved = folder.resolve()
        _held_here.add(resolved)
        try:
            yield
        finally:
            _held_here.discard(resolved)


@contextlib.contextmanager
def folders_held(folders: Iterable[Path]) -> Iterator[None]:
    """Hold every folder of ``folders`` while the block runs, waiting for other holders (in
    path order, so two writers cannot each wait for the other); one this process holds already
    (:func:`sole_writer`) is its own."""
    with contextlib.ExitStack() as stack:
        for folder in sorted({f.resolve() for f in folders} - _held_here, key=str):
            stack.enter_context(_held(folder, wait=True))
        yield


@contextlib.contextmanager
def _held(folder: Path, wait: bool) -> Iterator[bool]:
    """An exclusive ``flock`` on ``folder`` for the block; False when ``wait`` is off and
    another open file description holds it. Where the file system offers no such lock on a
    folder (NFSv4 refuses one on a descriptor not open for writing, Lustre and some FUSE
    mounts have none), the block runs unlocked, as it did before these locks."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            held = True
        except BlockingIOError:
            held = False
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            held = True
        yield held
    finally:
        os.close(handle)


def write_atomic(target: Path, write: Writer) -> None:
    """Create ``target`` by ``write(temporary)``, then rename the temporary into place.

    ``target``'s folder is created if missing. Anything ``write`` raises propagates after the
    temporary is removed; a refusal of the file system becomes :class:`WriteFailed`.
    """
    write_together({target: write})


def write_together(writes: Mapping[Path, Writer]) -> None:
    """Write every file of ``writes`` (target -> writer) to a temporary, then replace the
    targets, holding their folders meanwhile; if any step fails, every target keeps its previous
    content (or stays absent), and another process's pair is never mixed with this one."""
    for target in writes:
        check_target(target, "output")
    temporaries: dict[Path, Path] = {}
    try:
        for target, write in writes.items():
            temporaries[target] = _written_temporary(target, write)
        # Two writers of one pair replacing at once could leave one's file beside the other's.
        with folders_held(target.parent for target in temporaries if len(temporaries) > 1):
            _replace_all(temporaries)
    except OSError as error:
        if error.errno not in _REFUSALS:
            raise
        names = ", ".join(str(target) for target in writes)
        raise WriteFailed(f"cannot write {names}: {error.strerror}; the previous files are "
                          f"kept (free space, or write elsewhere)") from error
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)


def _written_temporary(target: Path, write: Writer) -> Path:
    """A temporary beside ``target`` holding what ``write`` wrote, flushed to disk."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        temporary.chmod(0o666 & ~_umask())  # mkstemp's 0600 would hide a report from others
        write(temporary)
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _replace_all(temporaries: Mapping[Path, Path]) -> None:
    """Rename each temporary over its target; on a failure, put the previous files back (kept
    meanwhile as hard links) and remove the new ones."""
    previous: dict[Path, Path | None] = {}
    try:
        for target, temporary in temporaries.items():
            previous[target] = _keep(target) if len(temporaries) > 1 else None
            os.replace(temporary, target)
    except BaseException:
        for target, kept in previous.items():
            if kept is not None:
                os.replace(kept, target)
            elif not temporaries[target].exists():  # the new file had been put in place
                target.unlink(missing_ok=True)
        raise
    finally:
        for kept in previous.values():
            if kept is not None:
                kept.unlink(missing_ok=True)


def _keep(target: Path) -> Path | None:
    """A hard link to ``target``'s current file (None when there is none), to restore it."""
    if not target.exists():
        return None
    kept = target.with_name(f".{target.name}.previous")
    kept.unlink(missing_ok=True)
    os.link(target, kept)
    return kept
