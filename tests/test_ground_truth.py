"""The ground-truth table's code path, tiny: ``bench/ground_truth.py`` builds a table of two
architectures, two seeds and one epoch on the digits through the real search machinery, resumes
without training anything twice, and ``bench/ground_truth_report.py`` reports it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import their siblings by name

import ground_truth  # noqa: E402
import ground_truth_report  # noqa: E402
from ground_truth_table import Band, Entry, GroundTruth, Run, Setting, load  # noqa: E402

from search.store.paired import kendall_tau, pack_correct  # noqa: E402
from search.training.data import load_dataset  # noqa: E402
from space import SearchSpace  # noqa: E402

TINY = ["--dataset", "digits", "--input-size", "8", "--train-images", "400", "--epochs", "1",
        "--batch-size", "64", "--seeds", "2", "--limit", "2", "--per-band", "2"]


def _build(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "bench" / "ground_truth.py"), *TINY, "--workdir",
               str(tmp_path / "work"), "--out", str(tmp_path / "gt.json"), *extra]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_a_tiny_table_is_built_resumed_and_read(tmp_path: Path) -> None:
    built = _build(tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    table = load(tmp_path / "gt.json")
    setting = table.setting
    assert (setting.dataset, setting.input_size, setting.epochs, setting.seeds) == \
        ("digits", 8, 1, 2)
    assert setting.train_images <= 400 and setting.test_images > 0
    space = SearchSpace("resnet20", 8, 10, 1)
    assert [e.parts for e in table.entries] == [space.uniform_parts(1), space.uniform_parts(2)]
    assert [e.label for e in table.entries] == ["uniform P1", "uniform P2"]
    for entry in table.entries:
        assert len(entry.runs) == 2 and entry.paper_macs > 0 and entry.params > 0
        assert set(entry.proxies) == set(ground_truth.PROXIES)
        assert all(np.isfinite(list(entry.proxies.values())))
        assert len({run.seed for run in entry.runs}) == 2  # two seeds, really
        for run in entry.runs:
            assert len(run.val_curve) == 1 and run.val_curve[-1] == run.val_accuracy
            test, val = run.test_mask(setting.test_images), run.val_mask(setting.val_images)
            assert test.mean() == pytest.approx(run.test_accuracy)
            assert val.mean() == pytest.approx(run.val_accuracy)
            assert run.seconds > 0
    assert table.entries[0].paper_macs > table.entries[1].paper_macs
    made = table.made
    assert "bench/ground_truth.py" in made["command"] and "--limit 2" in made["command"]
    assert len(str(made["commit"]).split("-")[0]) == 40 and made["date"]

    # The same command again trains nothing and writes the same runs.
    storage = f"sqlite:///{tmp_path / 'work' / 'study.db'}"
    trials = len(optuna.load_study(study_name=ground_truth.STUDY, storage=storage).trials)
    assert trials == 4
    again = _build(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(optuna.load_study(study_name=ground_truth.STUDY, storage=storage).trials) == 4
    assert load(tmp_path / "gt.json").entries == table.entries

    # A fresh machine (the study gone) continues from the file: nothing is trained again.
    fresh = _build(tmp_path, "--workdir", str(tmp_path / "fresh"))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "epoch 1/1" not in fresh.stdout
    assert load(tmp_path / "gt.json").entries == table.entries

    # A fresh machine asked for one seed more trains that seed's runs alone (the study then
    # holds confirmation runs only) and keeps the file's runs.
    more = _build(tmp_path, "--workdir", str(tmp_path / "more"), "--seeds", "3")
    assert more.returncode == 0, more.stderr[-3000:]
    grown = load(tmp_path / "gt.json")
    assert [len(e.runs) for e in grown.entries] == [3, 3]
    assert [e.runs[:2] for e in grown.entries] == [e.runs for e in table.entries]
    table = grown

    # Another pool in the same study is refused, the file left as it was.
    before = (tmp_path / "gt.json").read_bytes()
    other = _build(tmp_path, "--pool-seed", "1", "--limit", "3")
    assert other.returncode != 0 and "another pool" in other.stderr
    assert (tmp_path / "gt.json").read_bytes() == before


def _synthetic(seed: int = 0) -> GroundTruth:
    """A table with known structure: accuracy rises with an architecture's index."""
    rng = np.random.default_rng(seed)
    images = 2000
    bands = (Band("aggressive", 1.0, 10.0, "test"), Band("moderate", 20.0, 30.0, "test"))
    entries = []
    for index in range(16):
        group = "uniform" if index < 4 else ("aggressive" if index < 10 else "moderate")
        macs = {"uniform": 10 + 10 * index, "aggressive": 2 + index % 6,
                "moderate": 21 + index % 6}[group]
        runs = []
        for replicate in range(3):
            test = rng.random(images) < 0.6 + 0.01 * index
            val = rng.random(images) < 0.6 + 0.01 * index
            runs.append(Run(replicate, replicate, (float(val.mean()),), float(val.mean()),
                            float(test.mean()), 1.0, pack_correct(val), pack_correct(test)))
        entries.append(Entry((1 << (index % 4),) * 3, group, f"{group} {index}", macs, macs, macs,
                             {"synflow": float(index), "naswot": float(-index)}, tuple(runs)))
    setting = Setting("resnet20", "synthetic", 8, 100, images, images, 1, 32, 3, 0)
    return GroundTruth({"command": "python bench/ground_truth.py", "commit": "0" * 40,
                        "date": "today", "machine": "test"}, setting, bands, tuple(entries))


def test_the_report_reads_every_section_off_the_table(tmp_path: Path) -> None:
    table = _synthetic()
    text = ground_truth_report.report(table)
    for heading in ("Noise ceiling", "Achievable gain", "Cheap predictors"):
        assert heading in text
    # Accuracy rises with the index by construction: the predictor that follows the index
    # ranks the band well, its mirror backwards, and the report says so; the file round-trips.
    entries = table.in_band("aggressive")
    truth = [e.mean_val for e in entries]
    found = {name: kendall_tau([score(e) for e in entries], truth).coefficient
             for name, score in ground_truth_report.predictors(table).items()}
    assert found["synflow"] > 0.3 and found["naswot"] == pytest.approx(-found["synflow"])
    assert kendall_tau([e.proxies["synflow"] for e in entries], truth).describe() in text
    path = tmp_path / "t.json"
    path.write_text(table.to_json())
    assert load(path) == table
    ground_truth_report.figure(table).write_html(tmp_path / "f.html", include_plotlyjs=True)
    assert json.loads(path.read_text())["format"] == "hetnas-ground-truth/1"


def test_the_noise_ceiling_of_a_table_still_being_built_uses_the_seeds_all_have() -> None:
    table = _synthetic()
    inside = table.in_band("aggressive")
    cut = {id(inside[0]): 1, id(inside[1]): 2}  # one run, two runs; the others keep three
    table = dataclasses.replace(table, entries=tuple(
        dataclasses.replace(e, runs=e.runs[:cut[id(e)]]) if id(e) in cut else e
        for e in table.entries))
    [line] = [row for row in ground_truth_report.noise_report(table)
              if row.startswith("| aggressive |")]
    assert line.startswith(f"| aggressive | {len(inside) - 1} (2) | Kendall tau ")


def test_queuing_again_adds_nothing_while_runs_wait(tmp_path: Path) -> None:
    """A build stopped before its queued runs started, then started again, queues nothing
    twice: a waiting trial is known by the parts it carries."""
    args = ground_truth.parse_args([*TINY, "--workdir", str(tmp_path), "--out",
                                    str(tmp_path / "gt.json")])
    settings = ground_truth.settings_from(args)
    pool = ground_truth.make_pool(settings.space, args.per_band, args.pool_seed)[:args.limit]
    data = load_dataset("digits", 8, seed=0, train_images=400)
    study = ground_truth.queue_runs(settings, pool, 2, data, set())
    assert len(study.trials) == 4
    again = ground_truth.queue_runs(settings, pool, 2, data, set())
    assert len(again.trials) == 4
    assert {(tuple(t.user_attrs["parts"]), t.user_attrs["replicate"]) for t in again.trials} \
        == {(m.parts, r) for m in pool for r in range(2)}
