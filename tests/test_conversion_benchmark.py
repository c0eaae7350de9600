"""The conversion benchmark's code path, tiny: ``bench/conversion_rules.py`` trains a dense
ResNet-20 on a few hundred real Fashion-MNIST images, starts uniform P4 from it by two rules as a
trial would, fine-tunes (the default rule at two learning rates), and prints the table and the
paired comparisons and writes the result file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.datasets import write_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import their siblings by name

import conversion_rules  # noqa: E402


def test_the_rules_are_scored_converted_and_fine_tuned_and_compared(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_fashion_mnist(tmp_path, train=700, test=200)
    conversion_rules.main(["--data-dir", str(tmp_path), "--train-images", "400",
                           "--val-images", "50", "--dense-epochs", "1", "--parts", "4",
                           "--seeds", "0", "--rules", "centre", "least-squares",
                           "--lrs", "0.1", "0.02", "--json", str(tmp_path / "result.json")])
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| 4 |")]
    assert [(row[2].strip(), row[3].strip()) for row in rows] == [
        ("centre", "0.1"), ("least-squares", "0.1"), ("least-squares", "0.02")]
    for row in rows:
        converted, seconds, tuned = (float(cell.strip()) for cell in row[4:7])
        assert 0 <= converted <= 100 and seconds >= 0 and 0 <= tuned <= 100
    assert "- P4, least-squares vs centre: converted" in out
    assert "- P4, least-squares at lr 0.02 vs 0.1: converted the same start" in out
    result = json.loads((tmp_path / "result.json").read_text())
    assert {(run["rule"], run["lr"]) for run in result["fine_tuned"]} == {
        ("centre", 0.1), ("least-squares", 0.1), ("least-squares", 0.02)}
    least_squares = next(run for run in result["converted"] if run["rule"] == "least-squares")
    row = next(row for row in rows if row[2].strip() == "least-squares")
    assert f"{100 * least_squares['test_accuracy']:.2f}" == row[4].strip()
