"""The one way HetNAS writes a file: whole, or not at all.

Checkpoints, exported architectures and weights, downloaded data and reports are written to a
temporary file beside the target, flushed to disk, and renamed over it. A reader (a resumed
trial, a user, a concurrent loader) sees the old file or the new one, never half of either; a
failure part-way leaves the old file as it was and no temporary behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from hetconv.errors import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_target(target: Path, label: str) -> None:
    """Refuse, before any work, a target :func:`write_atomic` could not replace with a file: a
    folder, something that is not a regular file, or a path under a file. ``label`` names the
    target in the message (a flag)."""
    if target.exists() and not target.is_file():
        kind = "a folder" if target.is_dir() else "not a regular file"
        raise ConfigError(f"{label} {target} is {kind}; give the path of a file to write")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{label} {target}: {parent} is a file, not a folder; write "
                                  f"the file elsewhere")
            break


def write_atomic(target: Path, write: Callable[[Path], object]) -> None:
    """Create ``target`` by ``write(temporary)``, then rename the temporary into place.

    ``target``'s folder is created if missing. Anything ``write`` raises propagates after the
    temporary is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        temporary.chmod(0o666 & ~_umask())  # mkstemp's 0600 would hide a report from others
        write(temporary)
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
