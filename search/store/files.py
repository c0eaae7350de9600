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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
