"""The one-shot ranking benchmark's code path, tiny: ``bench/oneshot_ranking.py`` trains real
supernets on a ground-truth table's own data (the digits at 8 px, a pool from
``bench/ground_truth.py`` with made-up runs), scores every band's architectures, reports, and
resumes without training anything again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import their siblings by name

import ground_truth  # noqa: E402
import oneshot_ranking  # noqa: E402
from ground_truth_table import Entry, GroundTruth, Run, Setting  # noqa: E402

from search.store.paired import pack_correct  # noqa: E402
from search.training.data import load_dataset  # noqa: E402
from space import Architecture, SearchSpace  # noqa: E402

SIZE, TRAIN = 8, 600  # a subset size the stratified draw gives back exactly


def _table(path: Path) -> GroundTruth:
    """The pool of a real build (uniform, 3 random per band, structured) with made-up runs:
    two seeds, validation accuracy rising with paper MACs (the image masks drawn at that
    rate)."""
    data = load_dataset("digits", SIZE, seed=0, train_images=TRAIN)
    space = SearchSpace("resnet20", SIZE, 10, 1)
    rng = np.random.default_rng(0)
    train, val, test = data.sizes
    entries = []
    for member in ground_truth.make_pool(space, 3, seed=0):
        arch = Architecture("resnet20", member.parts, SIZE, 10, 1)
        runs = []
        for replicate in range(2):
            accuracy = 0.5 + 0.4 * arch.macs / space.max_macs + 1e-4 * replicate
            val_mask, test_mask = rng.random(val) < accuracy, rng.random(test) < accuracy
            runs.append(Run(replicate, replicate, (accuracy,), accuracy,
                            float(test_mask.mean()), 1.0, pack_correct(val_mask),
                            pack_correct(test_mask)))
        entries.append(Entry(member.parts, member.group, member.label, arch.macs,
                             arch.executed_macs, arch.params, {"synflow": float(arch.params)},
                             tuple(runs)))
    table = GroundTruth({"command": "test", "commit": "0" * 40, "date": "today",
                         "machine": "test"},
                        Setting("resnet20", "digits", SIZE, train, val, test, 1, 64, 2, 0),
                        ground_truth.bands(space), tuple(entries))
    path.write_text(table.to_json())
    return table


def test_the_recipes_are_trained_at_equal_work_scored_reported_and_resumed(
        tmp_path: Path) -> None:
    table = _table(tmp_path / "gt.json")
    out, workdir = tmp_path / "ranking.json", tmp_path / "work"
    argv = [str(tmp_path / "gt.json"), "--out", str(out), "--workdir", str(workdir),
            "--recipes", "largest", "strata", "--supernet-seeds", "0", "--work", "3",
            "--subnets", "2", "--calibration", "64", "128", "--threads", "1"]
    text = oneshot_ranking.main(argv)
    document = json.loads(out.read_text())
    supernets = {(s["recipe"], s["band"]): s for s in document["supernets"]}
    # The largest network alone serves both bands; strata draws from each band's budget.
    assert set(supernets) == {("largest", "all"), ("strata", "aggressive"),
                              ("strata", "moderate")}
    # Equal work: 3 stand-alone trainings each, 1 network a step for 3 epochs or 3 for 1.
    assert [(s["networks_per_step"], s["epochs"], s["work"]) for s in supernets.values()] \
        == [(1, 3, 3.0), (3, 1, 3.0), (3, 1, 3.0)]
    for (_recipe, band), found in supernets.items():
        bands = [b.name for b in table.bands] if band == "all" else [band]
        labels = {e.label for name in bands for e in table.in_band(name)}
        assert set(found["scores"]) == labels
        for scores in found["scores"].values():
            assert set(scores) == {"64", "128"}
            accuracy, loss = scores["64"]
            assert 0 <= accuracy <= 1 and loss > 0
        # The estimates tell architectures apart.
        assert len({tuple(s["128"]) for s in found["scores"].values()}) > 1
    assert "bench/oneshot_ranking.py" in document["made"]["command"]
    for band in table.bands:
        assert f"| {band.name} | largest | 3.0 | 3 | loss | 128 |" in text
    # Accuracy rises with MACs by construction: MACs rank each band perfectly.
    for band in table.bands:
        assert f"| {band.name} | {len(table.in_band(band.name))} | paper MACs: +1.00" in text

    # The same command again trains nothing and keeps the scores.
    checkpoint = workdir / "strata-moderate-0" / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    assert oneshot_ranking.main(argv) == text
    assert checkpoint.stat().st_mtime_ns == before
    assert json.loads(out.read_text())["supernets"] == document["supernets"]


def test_another_file_at_out_is_refused(tmp_path: Path) -> None:
    _table(tmp_path / "gt.json")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(SystemExit, match="not a hetnas-oneshot-ranking/1 file"):
        oneshot_ranking.main([str(tmp_path / "gt.json"), "--out", str(tmp_path / "other.json"),
                              "--report-only"])
