"""``python -m search.train``: an exported architecture trained to the end, from scratch or from
its weights, resumed after a SIGKILL, refused in one line on bad input, and data-parallel over
two Ray Train workers; every run's files read back by ``search.check``.

ResNet-20 at part 4 on the bundled digits at their native 8×8 size keeps it fast.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from search import check
from search.cli import run_cli
from search.store.uncertainty import wilson_interval
from search.train import PROG, main
from search.training.checkpoint import CHECKPOINT_FILE, read_checkpoint
from search.training.data import DataSplits, load_dataset
from space import Architecture

ARCH = Architecture.uniform("resnet20", 4, 8, 10, 1)  # the digits: one channel, 10 classes
FAST = ["--batch-size", "64", "--threads", "1"]


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits", 8)


def _architecture_file(folder: Path, dataset: str | None = "digits", arch: Architecture = ARCH,
                       name: str = "best.json") -> Path:
    """An architecture file as the export writes it: with the data set in its result, or not."""
    document = arch.to_dict()
    if dataset is not None:
        document["result"] = {"dataset": dataset}
    path = folder / name
    path.write_text(json.dumps(document))
    return path


def _run(*argv: object) -> tuple[int, str]:
    """``search.train``'s main in this process: its status and output. Torch's thread count is
    restored after (``--threads`` sets it, as the command should)."""
    threads = torch.get_num_threads()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            status = main([str(a) for a in argv])
    finally:
        torch.set_num_threads(threads)
    return status, out.getvalue()


def _result(weights: Path) -> dict:
    return json.loads(weights.with_suffix(".json").read_text())["result"]


def _checked(weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m search.check final.json --weights final.pt`` accepts the pair."""
    capsys.readouterr()
    assert check.main([str(weights.with_suffix(".json")), "--weights", str(weights)]) == 0
    assert f"weights      {weights} match" in capsys.readouterr().out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> SimpleNamespace:
    """Three epochs from scratch, the data set taken from the architecture file."""
    folder = tmp_path_factory.mktemp("scratch")
    arch_file = _architecture_file(folder)
    started = time.perf_counter()
    status, output = _run(arch_file, "--epochs", "3", "--out", folder / "final.pt", *FAST)
    return SimpleNamespace(folder=folder, arch_file=arch_file, weights=folder / "final.pt",
                           status=status, output=output, seconds=time.perf_counter() - started)


def test_a_run_from_scratch_writes_weights_and_an_architecture_file(scratch, digits,
                                                                    capsys) -> None:
    assert scratch.status == 0, scratch.output
    assert re.findall(r"^epoch (\d)/3  train loss ", scratch.output, re.M) == ["1", "2", "3"]
    result = _result(scratch.weights)
    n_val, n_test = len(digits.val_y), len(digits.test_y)
    assert result["dataset"] == "digits" and result["epochs"] == 3
    assert result["started_from"] == "scratch"
    assert result["test_accuracy"] > 0.6  # learned: chance is 0.1
    assert (result["val_images"], result["test_images"]) == (n_val, n_test)
    assert result["test_accuracy_interval"] == list(wilson_interval(result["test_accuracy"],
                                                                    n_test))
    low, high = result["test_accuracy_interval"]
    assert f"test accuracy {result['test_accuracy']:.2%} [{100 * low:.1f}, {100 * high:.1f}] " \
           f"on {n_test} images" in scratch.output
    trained = Architecture.from_json(scratch.weights.with_suffix(".json").read_text())
    assert trained.as_searched() == ARCH
    assert trained.class_names == digits.class_names
    assert trained.normalization is not None
    torch.testing.assert_close(torch.tensor(trained.normalization.mean), torch.tensor(digits.mean))
    # The weights are the last epoch's, the ones the test accuracy was measured on.
    saved = read_checkpoint(scratch.folder / "final.checkpoints")["model"]
    written = torch.load(scratch.weights, weights_only=True)
    assert all(torch.equal(value, saved[key]) for key, value in written.items())
    _checked(scratch.weights, capsys)


def test_fine_tuning_starts_from_the_given_weights(scratch, tmp_path) -> None:
    """At a learning rate of 1e-9 one epoch barely moves the weights (batch norm's statistics
    do move): a run started from the trained weights keeps their accuracy, one from scratch
    stays near chance."""
    trained = _result(scratch.weights)["accuracy"]  # the weights' validation accuracy
    tiny = ["--epochs", "1", "--lr", "1e-9", *FAST]
    exported = scratch.weights.with_suffix(".json")  # the exported pair, normalisation included
    assert _run(exported, "--weights", scratch.weights, "--out", tmp_path / "tuned.pt",
                *tiny)[0] == 0
    assert _run(exported, "--out", tmp_path / "fresh.pt", *tiny)[0] == 0
    tuned, fresh = _result(tmp_path / "tuned.pt"), _result(tmp_path / "fresh.pt")
    assert trained > 0.6
    assert tuned["accuracy"] >= trained - 0.05, (tuned, trained)
    assert fresh["accuracy"] < 0.35, fresh
    assert tuned["started_from"] == str(scratch.weights.resolve())


def test_a_killed_run_resumes_to_the_uninterrupted_runs_weights(tmp_path, capsys) -> None:
    arch_file = _architecture_file(tmp_path)
    options = ["--epochs", "8", *FAST]
    assert _run(arch_file, "--out", tmp_path / "straight.pt", *options)[0] == 0
    command = [sys.executable, "-m", "search.train", str(arch_file),
               "--out", str(tmp_path / "killed.pt"), *options]
    checkpoint = tmp_path / "killed.checkpoints" / CHECKPOINT_FILE
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    done = read_checkpoint(checkpoint)["epoch"]
    assert 1 <= done < 8 and not (tmp_path / "killed.pt").exists()

    resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {done}/8" in resumed.stdout
    epochs = re.findall(r"^epoch (\d)/8 ", resumed.stdout, re.M)
    assert epochs == [str(e) for e in range(done + 1, 9)]  # continued, not started over
    assert "test accuracy" in resumed.stdout
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    killed = torch.load(tmp_path / "killed.pt", weights_only=True)
    assert straight.keys() == killed.keys()
    for key, value in straight.items():
        assert torch.equal(value, killed[key]), key
    straight_result, killed_result = (_result(tmp_path / name)
                                      for name in ("straight.pt", "killed.pt"))
    assert (killed_result["accuracy"], killed_result["test_accuracy"]) \
        == (straight_result["accuracy"], straight_result["test_accuracy"])
    _checked(tmp_path / "killed.pt", capsys)


def _text_file(folder: Path) -> Path:
    """A file that is no state dict: torch.load fails on it with a KeyError."""
    path = folder.parent / f"{folder.name}-hello.pt"
    path.write_text("hello\n")
    return path


def _tree(*folders: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for folder in folders for p in folder.rglob("*")}


Args = Callable[[SimpleNamespace, Path], list[object]]
ERRORS: dict[str, tuple[Args, list[str]]] = {
    "no data set": (lambda s, t: [_architecture_file(t, dataset=None), "--epochs", "1",
                                  "--out", t / "x.pt"],
                    ["does not name the data set it was trained on", "pass --dataset"]),
    "earlier checkpoint": (lambda s, t: [s.arch_file, "--epochs", "3", "--out", s.weights],
                           ["holds an earlier run's checkpoint", "pass --resume"]),
    "resume without checkpoint": (lambda s, t: [s.arch_file, "--epochs", "1", "--resume",
                                                "--out", t / "x.pt"],
                                  ["--resume: no checkpoint in", "run without --resume"]),
    "resume from other weights": (lambda s, t: [s.arch_file, "--epochs", "3", "--resume",
                                                "--weights", t / "other.pt", "--out", s.weights],
                                  ["started from scratch, not --weights", "its own --weights"]),
    "out is weights": (lambda s, t: [s.arch_file, "--epochs", "1", "--weights", s.weights,
                                     "--out", s.weights], ["would overwrite --weights"]),
    "out over the architecture": (lambda s, t: [s.arch_file, "--epochs", "1",
                                                "--out", s.arch_file.with_suffix(".pt")],
                                  ["would overwrite the architecture file",
                                   "write it elsewhere"]),
    "class count": (lambda s, t: [_architecture_file(t, arch=Architecture.uniform(
        "resnet20", 4, 8, 100, 1)), "--epochs", "1", "--out", t / "x.pt"],
                    ["100 classes", "'digits' has 1-channel images and 10 classes",
                     "pass the --dataset"]),
    "out is a folder": (lambda s, t: [s.arch_file, "--epochs", "1", "--out", t],
                        ["--out", "is a folder"]),
    "text weights": (lambda s, t: [s.arch_file, "--epochs", "1", "--weights",
                                   _text_file(t), "--out", t / "x.pt"],
                     ["not a plain PyTorch state dict"]),
    "uneven workers": (lambda s, t: [s.arch_file, "--epochs", "1", "--workers", "3",
                                     "--out", t / "x.pt", *FAST],
                       ["--batch-size 64 does not split evenly over --workers 3"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, scratch, tmp_path,
                                                           capsys) -> None:
    make_args, fragments = ERRORS[case]
    argv = [str(a) for a in make_args(scratch, tmp_path)]
    before = _tree(tmp_path, scratch.folder)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(functools.partial(main, argv), PROG)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0]
    assert _tree(tmp_path, scratch.folder) == before


def test_a_diverging_run_fails_in_one_line_and_writes_no_result(tmp_path) -> None:
    """A learning rate that sends the weights to NaN: exit status 1 and one line naming the
    divergence and the fix, no weights and no architecture file (it used to write NaN weights
    and exit 0)."""
    arch_file = _architecture_file(tmp_path)
    done = subprocess.run([sys.executable, "-m", "search.train", arch_file, "--epochs", "2",
                           "--lr", "1e30", "--out", tmp_path / "nan.pt", *FAST],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"{PROG}: failed: training diverged in epoch 1 ")
    assert "lower the learning rate" in line
    assert not (tmp_path / "nan.pt").exists() and not (tmp_path / "nan.json").exists()


def test_a_second_run_on_the_same_output_is_refused_while_the_first_trains(tmp_path) -> None:
    """Two runs on one output (here a --resume beside a running run) would both train into its
    checkpoints and both write the result: the second is refused in one line, and the first
    goes on undisturbed."""
    arch_file = _architecture_file(tmp_path)
    command = [sys.executable, "-m", "search.train", str(arch_file), "--epochs", "200",
               "--out", str(tmp_path / "final.pt"), *FAST]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        while not (line := first.stdout.readline()).startswith("epoch 1/"):
            assert line, "the first run ended before its first epoch"
        second = subprocess.run([*command, "--resume"], capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        [refusal] = second.stderr.strip().splitlines()
        assert "final.checkpoints is being written by another process" in refusal
        assert "pass another --out" in refusal
        assert first.poll() is None and first.stdout.readline().startswith("epoch 2/")
    finally:
        first.kill()
        first.wait()


def test_data_parallel_training_on_two_ray_train_workers(local_ray, digits, tmp_path,
                                                         capsys) -> None:
    """Two CPU workers on gloo, each on half of every batch; rank 0's epochs printed here."""
    arch_file = _architecture_file(tmp_path)
    status, output = _run(arch_file, "--epochs", "2", "--workers", "2",
                          "--out", tmp_path / "final.pt", *FAST)
    assert status == 0, output
    assert "data-parallel over 2 Ray Train workers" in output
    assert re.findall(r"^epoch (\d)/2  train loss ", output, re.M) == ["1", "2"]
    result = _result(tmp_path / "final.pt")
    assert result["epochs"] == 2 and result["test_accuracy"] > 0.3  # chance is 0.1
    assert f"test accuracy {result['test_accuracy']:.2%}" in output
    saved = read_checkpoint(tmp_path / "final.checkpoints")
    assert saved["config"]["workers"] == 2
    # Each worker took half of each batch: the step count is the full batches', not doubled.
    assert saved["step"] == 2 * (len(digits.train_y) // 64)
    _checked(tmp_path / "final.pt", capsys)
