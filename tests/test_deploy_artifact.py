"""``python -m search.deploy``: a program plain PyTorch runs without HetNAS, at any batch size,
with the trained network's outputs, in layer forms chosen for the runtime named; bad input is
one line, exit status 2, and nothing written."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.networks import trained_like
from search.cli import run_cli
from search.deploy import PROG, _layer_lines, _runtime_note, main
from space import Architecture, Normalization

# Mostly part 1 (dense, nothing to time), so that choosing the deploy form takes seconds; the
# other layers give the program grouped forms and class-ordered activations.
PARTS = (4, 2, 1, 1, 1, 1, 8, 1, 1, 1, 1, 1, 4, 1, 1, 1, 1, 2)
ARCH = Architecture("resnet20", PARTS, input_size=16, num_classes=10,
                    in_channels=1).trained_on(Normalization((0.5,), (0.25,)), None)
BATCHES = (1, 3, 8)  # the deploy form is chosen at batch 1 (the default); the program takes any
PROJECT_PACKAGES = ("hetconv", "space", "search", "dashboards", "tests")
ROOT = Path(__file__).resolve().parent.parent

# Runs with ``python -I -S``: neither the working directory, PYTHONPATH nor site-packages' .pth
# files (the editable install's finder is one) are on the path; site-packages itself is added
# as a plain directory, so torch is importable and the project is not.
ISOLATED_LOAD = """
import importlib.util
import sys

sys.path.extend({site_dirs!r})
found = [name for name in {packages!r} if importlib.util.find_spec(name) is not None]
if found:
    raise SystemExit(f"the project is importable here ({{found}}): the check is not isolated")
try:
    import hetconv  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("import hetconv worked")

import torch

program = torch.export.load("model.pt2").module()
saved = torch.load("check.pt")
for x, expected in zip(saved["inputs"], saved["expected"], strict=True):
    out = program(x)
    assert not out.requires_grad
    atol = 1e-4 * max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=atol)
print("batches", *(len(x) for x in saved["inputs"]))
"""



def _deploy(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.deploy", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """A folder holding final.json and final.pt, and the trained model they describe."""
    folder = tmp_path_factory.mktemp("trained")
    torch.manual_seed(0)
    model = trained_like(ARCH.build())
    (folder / "final.json").write_text(ARCH.to_json())
    torch.save(model.state_dict(), folder / "final.pt")
    return folder, model


@pytest.fixture(scope="module")
def deployed(trained: tuple[Path, nn.Module]) -> subprocess.CompletedProcess:
    folder, _ = trained
    result = _deploy(folder, "final.json", "--weights", "final.pt", "--out", "model.pt2",
                     "--onnx", "model.onnx")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def deployed_for_onnxruntime(trained: tuple[Path, nn.Module],
                             tmp_path_factory: pytest.TempPathFactory
                             ) -> tuple[Path, subprocess.CompletedProcess]:
    """The same network deployed with its layer forms timed in ONNX Runtime on 1 thread."""
    source, _ = trained
    folder = tmp_path_factory.mktemp("onnxruntime")
    for name in ("final.json", "final.pt"):
        shutil.copy(source / name, folder / name)
    result = _deploy(folder, "final.json", "--weights", "final.pt", "--out", "model.pt2",
                     "--onnx", "model.onnx", "--runtime", "onnxruntime", "--threads", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result


def _inputs_and_outputs(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.rand(n, 1, 16, 16, generator=generator) for n in BATCHES]
    with torch.no_grad():
        return inputs, [model(x) for x in inputs]


def _load_in_plain_pytorch(folder: Path, model: nn.Module) -> None:
    """Run ``folder/model.pt2`` where neither HetNAS nor the tests can be imported, and compare
    its outputs with ``model``'s at every batch size of :data:`BATCHES`."""
    inputs, expected = _inputs_and_outputs(model)
    torch.save({"inputs": inputs, "expected": expected}, folder / "check.pt")
    site_dirs = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    script = ISOLATED_LOAD.format(site_dirs=site_dirs, packages=PROJECT_PACKAGES)
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=folder,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.split() == ["batches", *map(str, BATCHES)]


def test_the_program_runs_in_plain_pytorch_at_any_batch_size(trained, deployed) -> None:
    folder, model = trained
    _load_in_plain_pytorch(folder, model)


def test_a_users_own_network_deploys_without_its_module(tmp_path: Path) -> None:
    """A network from a factory (tests/foreign_networks.py: 5x5, depthwise, residual layers)
    runs from its program where the module that defined it is not importable."""
    arch = Architecture("tests.foreign_networks:foreign", (4, 2, 8, 2), input_size=16,
                        num_classes=10, in_channels=1).trained_on(Normalization((0.5,), (0.25,)),
                                                                  None)
    torch.manual_seed(0)
    model = trained_like(arch.build())
    (tmp_path / "final.json").write_text(arch.to_json())
    torch.save(model.state_dict(), tmp_path / "final.pt")
    result = subprocess.run([sys.executable, "-m", "search.deploy", "final.json", "--weights",
                             "final.pt", "--out", "model.pt2"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _load_in_plain_pytorch(tmp_path, model)


def test_the_command_says_what_it_wrote_and_how_to_load_it(deployed) -> None:
    lines = deployed.stdout.splitlines()
    assert lines[0].startswith("wrote        model.pt2: torch.export program of resnet20")
    assert any("float32 (N, 1, 16, 16), any N, values in [0, 1]" in line for line in lines)
    assert any("torch.export.load('model.pt2').module()(x)" in line for line in lines)
    assert any(line.startswith("checked      max abs difference") for line in lines)
    assert any(line.startswith("onnx         model.onnx: opset") for line in lines)


def _check_onnx(path: Path, model: nn.Module) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x, expected in zip(*_inputs_and_outputs(model), strict=True):
        out = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        atol = 1e-4 * max(1.0, float(expected.abs().max()))
        torch.testing.assert_close(out, expected, rtol=1e-3, atol=atol)


def test_the_onnx_model_gives_the_trained_outputs_at_any_batch_size(trained, deployed) -> None:
    folder, model = trained
    _check_onnx(folder / "model.onnx", model)


def _kept_forms(stdout: str) -> dict[str, str]:
    """Layer name to form, from the command's per-layer lines."""
    return dict(re.findall(r"^  (blocks\.\d\.conv\d)  +(\S+)  ", stdout, flags=re.M))


@pytest.mark.parametrize("which", ["eager", "onnxruntime"])
def test_each_layer_is_named_with_the_form_it_kept_and_why(deployed, deployed_for_onnxruntime,
                                                           which: str) -> None:
    result = deployed if which == "eager" else deployed_for_onnxruntime[1]
    kept = _kept_forms(result.stdout)
    assert len(kept) == 18  # resnet20's HetConv layers, in network order
    assert list(kept) == sorted(kept)
    for (name, form), part in zip(kept.items(), PARTS, strict=True):
        allowed = {"dense", *(f"grouped-P{q}" for q in range(2, part + 1) if part % q == 0)}
        assert form in allowed, (name, form, part)
    runtime = "eager PyTorch" if which == "eager" else "ONNX Runtime"
    assert f"each the quickest at batch 1 in {runtime} on cpu:" in result.stdout
    if which == "onnxruntime":
        assert "1 thread" in result.stdout


def test_forms_chosen_in_onnxruntime_give_the_trained_outputs(trained,
                                                              deployed_for_onnxruntime) -> None:
    _, model = trained
    folder, _ = deployed_for_onnxruntime
    _check_onnx(folder / "model.onnx", model)
    _load_in_plain_pytorch(folder, model)


def test_the_onnx_note_appears_when_the_forms_were_chosen_elsewhere(
        deployed, deployed_for_onnxruntime) -> None:
    notes = [line for line in deployed.stdout.splitlines() if line.startswith("note")]
    assert len(notes) == 1 and "chosen for eager, not ONNX Runtime" in notes[0]
    assert "--runtime onnxruntime" in notes[0] and "model.onnx" in notes[0]
    assert not re.search("^note", deployed_for_onnxruntime[1].stdout, flags=re.M)


@pytest.mark.parametrize(("runtime", "onnx", "fragment"), [
    ("eager", None, None),
    ("onnxruntime", Path("m.onnx"), None),
    ("eager", Path("m.onnx"), "chosen for eager, not ONNX Runtime"),
    ("onnxruntime", None, "--onnx writes the ONNX file they were chosen for"),
])
def test_the_runtime_note_is_one_line_exactly_when_forms_and_files_differ(
        runtime: str, onnx: Path | None, fragment: str | None) -> None:
    note = _runtime_note(argparse.Namespace(runtime=runtime, onnx=onnx, out=Path("m.pt2")))
    if fragment is None:
        assert note is None
    else:
        assert note is not None and fragment in note and "\n" not in note


def test_a_dense_form_kept_for_a_grouped_layer_says_it_keeps_the_zeros() -> None:
    forms = {"a": "grouped-P4", "bb": "dense", "c": "dense"}
    seconds = {"a": {"grouped-P4": 1.2e-4, "grouped-P2": 1.5e-4, "dense": 2e-4},
               "bb": {"grouped-P2": 3e-4, "dense": 1e-4}}
    assert _layer_lines(forms, seconds) == [
        "  a   grouped-P4  (grouped-P4 0.12 ms, grouped-P2 0.15 ms, dense 0.2 ms)",
        "  bb  dense       (dense 0.1 ms, grouped-P2 0.3 ms): full-size weights, the grouped "
        "pattern's zeros kept",
        "  c   dense       (part 1: a dense layer as trained)"]


@pytest.fixture
def inputs_folder(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working folder of a bad call: the architecture and weights, other weights, a folder
    and a previous program that must survive."""
    source, _ = trained
    for name in ("final.json", "final.pt"):
        shutil.copy(source / name, tmp_path / name)
    torch.save(Architecture.uniform("resnet20", 4, input_size=16, num_classes=5,
                                    in_channels=1).build().state_dict(), tmp_path / "other.pt")
    (tmp_path / "folder").mkdir()
    (tmp_path / "model.pt2").write_bytes(b"a previous program")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _files(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


GOOD = ["final.json", "--weights", "final.pt"]


@pytest.mark.parametrize(("args", "fragment"), [
    ([*GOOD, "--out", "final.pt"], "--out final.pt would overwrite --weights"),
    ([*GOOD, "--out", "model.pt2", "--onnx", "final.json"],
     "--onnx final.json would overwrite the architecture file"),
    ([*GOOD, "--out", "folder"], "--out folder is a folder"),
    ([*GOOD, "--out", "final.pt/model.pt2"], "final.pt is a file, not a folder"),
    ([*GOOD, "--out", "model.onnx"], "--out model.onnx should end in .pt2"),
    ([*GOOD, "--out", "model.pt2", "--batch", "0"], "--batch 1"),
    ([*GOOD, "--out", "model.pt2", "--batch", "two"], "invalid int value: 'two'"),
    ([*GOOD, "--out", "model.pt2", "--device", "tpu"], "invalid choice: 'tpu'"),
    ([*GOOD, "--out", "model.pt2", "--runtime", "tvm"], "invalid choice: 'tvm'"),
    ([*GOOD, "--out", "model.pt2", "--threads", "0"], "--threads must be a positive integer"),
    ([*GOOD, "--out", "model.pt2", "--threads", "two"], "invalid int value: 'two'"),
    ([*GOOD, "--out", "model.pt2", "--runtime", "onnxruntime", "--device", "cuda"],
     "--runtime onnxruntime times layer forms on the CPU"),
    (["final.json", "--weights", "other.pt", "--out", "model.pt2"], "does not match"),
    (["final.json", "--weights", "missing.pt", "--out", "model.pt2"],
     "missing.pt does not exist"),
    (["final.json", "--weights", "folder", "--out", "model.pt2"],
     "--weights folder is a folder"),
    (["missing.json", "--weights", "final.pt", "--out", "model.pt2"],
     "architecture file missing.json does not exist"),
])
def test_bad_input_is_one_line_and_writes_nothing(inputs_folder: Path, args: list[str],
                                                  fragment: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    before = _files(inputs_folder)
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: main(args), PROG)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(PROG) and fragment in lines[0], lines
    assert _files(inputs_folder) == before


def test_the_command_line_exits_with_status_2_on_bad_input(inputs_folder: Path) -> None:
    before = _files(inputs_folder)
    result = _deploy(inputs_folder, "final.json", "--weights", "other.pt", "--out", "model.pt2")
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "does not match" in result.stderr
    assert _files(inputs_folder) == before
