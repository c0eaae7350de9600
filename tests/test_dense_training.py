"""``search.train --backbone/--model``: a network's dense form trained by HetNAS, in HetNAS's
input normalisation, is what ``search.run --init-from`` starts from, as it is; from a factory
to a deployed program with HetNAS commands alone. Real training on the bundled digits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hetconv.errors import ConfigError
from search.train import main as train_main
from search.training.data import load_dataset
from search.training.start import check_dense, dense_accuracy
from space import Architecture
from tests.datasets import write_fashion_mnist

ROOT = Path(__file__).resolve().parent.parent
FACTORY = "tests.foreign_networks:foreign"
INPUT_SIZE = "8"


def _run(cwd: Path, module: str, *args: str, timeout: float = 300) -> str:
    """The command's output; a failure shows its whole output."""
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},  # the factory's module
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_factory_goes_from_dense_weights_to_a_deployed_program(tmp_path: Path) -> None:
    """Dense training, a search from its weights on a subset, the export, the final training
    from another folder (the file names the data) and the deploy: HetNAS commands alone."""
    write_fashion_mnist(tmp_path / "data", train=400, test=60, gz=False)
    data = ("--dataset", "fashion-mnist", "--data-dir", "data", "--input-size", INPUT_SIZE)
    trained = _run(tmp_path, "search.train", "--model", FACTORY, *data, "--train-images", "200",
                   "--epochs", "8", "--batch-size", "16", "--out", "dense.pt")
    assert f"training {FACTORY} (dense)" in trained and "epoch 8/8" in trained
    dense = json.loads((tmp_path / "dense.json").read_text())
    assert set(dense["parts"]) == {1} and dense["result"]["dataset"] == "fashion-mnist"
    assert "dense.pt match" in _run(tmp_path, "search.check", "dense.json", "--weights",
                                    "dense.pt")

    searched = _run(tmp_path, "search.run", "--model", FACTORY, *data, "--train-images", "200",
                    "--init-from", "dense.pt", "--budget", "7e5", "--trials", "1",
                    "--epochs", "1", "--baselines", "none", "--confirm-top", "0",
                    "--storage", "sqlite:///hetnas.db", "--study", "own")
    # On the same --seed and --train-images, the search feeds the dense weights exactly as
    # search.train did (the same statistics): the same score on the same validation images.
    score = re.search(r"the dense weights \S+, which score (\d+\.\d)% on (\d+) validation",
                      searched)
    assert score, searched
    assert float(score[1]) == pytest.approx(100 * dense["result"]["accuracy"], abs=0.05)
    assert int(score[2]) == dense["result"]["val_images"]
    assert float(score[1]) > 20  # trained (chance is 10 %), not a random start

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run(tmp_path, "search.export", "--storage", "sqlite:///hetnas.db", "--study", "own",
         "--out", "elsewhere/best.json", "--weights", "elsewhere/best.pt")
    result = json.loads((elsewhere / "best.json").read_text())["result"]
    assert (result["dataset"], result["data_dir"], result["train_images"]) == (
        "fashion-mnist", str(tmp_path / "data"), 200)
    # From another folder, without --data-dir: the data the file names, on a subset if asked.
    final = _run(elsewhere, "search.train", "best.json", "--weights", "best.pt", "--epochs", "1",
                 "--train-images", "100", "--out", "final.pt")
    shown = re.search(rf"on fashion-mnist in {re.escape(str(tmp_path / 'data'))} \((\d+) "
                      r"training images\)", final)
    assert shown and abs(int(shown[1]) - 100) <= 3, final  # about 100: a share of each class
    final_result = json.loads((elsewhere / "final.json").read_text())["result"]
    assert (final_result["train_images"], final_result["lr"]) == (100, 0.1)  # what it ran with

    _run(elsewhere, "search.deploy", "final.json", "--weights", "final.pt", "--out", "model.pt2")
    shipped = Architecture.from_json((elsewhere / "final.json").read_text())
    assert any(part > 1 for part in shipped.parts)
    model = shipped.build().eval()
    model.load_state_dict(torch.load(elsewhere / "final.pt", weights_only=True))
    images = torch.rand(3, 1, 8, 8)
    program = torch.export.load(elsewhere / "model.pt2").module()
    with torch.no_grad():
        assert torch.allclose(program(images), model(images), atol=1e-4)


def test_a_familys_dense_weights_load_as_init_from_weights(tmp_path: Path) -> None:
    _run(tmp_path, "search.train", "--backbone", "resnet20", "--dataset", "digits",
         "--input-size", INPUT_SIZE, "--epochs", "1", "--out", "dense.pt")
    dense = Architecture.from_json((tmp_path / "dense.json").read_text())
    result = json.loads((tmp_path / "dense.json").read_text())["result"]
    space = dense.space
    assert check_dense(space, str(tmp_path / "dense.pt")) == []  # every key fits, none fresh
    data = load_dataset("digits", int(INPUT_SIZE), seed=0)
    accuracy, images = dense_accuracy(space, str(tmp_path / "dense.pt"), data)
    assert (accuracy, images) == (pytest.approx(result["accuracy"]), result["val_images"])


@pytest.mark.parametrize(("args", "fragment"), [
    ([], "pass the architecture file to train (search.export), or --backbone or --model"),
    (["arch.json", "--backbone", "resnet20"], "the architecture file names the network"),
    (["arch.json", "--input-size", "8"], "the architecture file names the network"),
    (["--backbone", "resnet20", "--model", FACTORY], "--model and --backbone both name"),
    (["--model", "resnet20"], "must be written package.module:factory"),
    (["--backbone", "resnet20", "--input-size", "0"], "must be an integer from 1"),
])
def test_a_dense_run_without_one_network_is_refused_before_writing(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   args: list[str],
                                                                   fragment: str) -> None:
    (tmp_path / "arch.json").write_text(Architecture.uniform("resnet20", 4, 8, 10, 1).to_json())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        train_main([*args, "--epochs", "1", "--out", "dense.pt"])
    assert [p.name for p in tmp_path.iterdir()] == ["arch.json"]
