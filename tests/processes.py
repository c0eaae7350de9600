"""Running a real search driver to stop it: the harness the fault and resume tests share."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def search_process(command: Sequence[str], cwd: Path, **popen: Any) -> Iterator[subprocess.Popen]:
    """``command`` (a ``python -m search.run``) started in a session of its own, so the local
    Ray it starts is in its process group; on leaving, SIGKILL to that whole group (what is
    left of it) and the driver reaped. ``popen``: Popen's output options."""
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    driver = subprocess.Popen(list(command), cwd=cwd, env=env, start_new_session=True, **popen)
    try:
        yield driver
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing of the group is left
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
