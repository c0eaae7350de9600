"""The deploy-runtimes benchmark's code path, tiny: ``bench/deploy_runtimes.py`` deploys a small
ResNet-20 with forms chosen for eager PyTorch, exports it and the dense network to ONNX, and
times both in both runtimes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import their siblings by name

import deploy_runtimes  # noqa: E402


def test_each_variant_is_timed_in_both_runtimes(capsys: pytest.CaptureFixture[str]) -> None:
    deploy_runtimes.main(["--input-size", "8", "--choose-at", "2", "--choose-for", "eager",
                          "--run-at", "1", "3", "--rounds", "1", "--sample-seconds", "0.001"])
    out = capsys.readouterr().out
    assert "- P4, forms for torch eager at batch 2: " in out
    header = next(line for line in out.splitlines() if line.startswith("| variant |"))
    assert header.count("ONNX Runtime, batch") == header.count("torch eager, batch") == 2
    rows = {cells[1].strip(): [float(cell) for cell in cells[2:-1]]
            for cells in (line.split("|") for line in out.splitlines())
            if len(cells) > 2 and cells[1].strip().startswith(("P4,", "dense"))}
    assert set(rows) == {"P4, forms for torch eager at batch 2", "dense (every part 1)"}
    assert all(len(times) == 4 and all(ms > 0 for ms in times) for times in rows.values())
