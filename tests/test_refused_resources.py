"""Resources the machine cannot give a trial are refused before anything is written.

(A Ray head that needs a token is refused just as early: the cluster test in
``tests/test_cluster.py`` runs the driver without it first.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

_WORKERS = 1 << (os.cpu_count() or 1).bit_length()  # a power of two above the CPU count


@pytest.mark.parametrize(("option", "fragment"), [
    (["--gpus-per-trial", str(torch.cuda.device_count() + 1)], "torch finds"),
    (["--cpus-per-trial", str((os.cpu_count() or 1) + 1)], "more than this machine's"),
    # A data-parallel supernet's workers all at once (Ray waited for them for ever).
    (["--supernet-workers", str(_WORKERS), "--strategy", "oneshot", "--batch-size",
      str(8 * _WORKERS)], "more than this machine's"),
])
def test_what_this_machine_lacks_is_refused_before_the_study(tmp_path: Path, option: list[str],
                                                             fragment: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "search.run", "--budget", "3e8", "--storage",
         f"sqlite:///{tmp_path / 'study.db'}", "--artifacts-dir", str(tmp_path / "artifacts"),
         *option], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and fragment in lines[0] and option[0] in lines[0], lines
    assert list(tmp_path.iterdir()) == []
