"""``python -m search.deploy best.json --weights best.pt --out model.pt2``: a self-contained
inference artifact of an exported architecture.

The trained network is turned into its deploy form (``hetconv.deployment``: batch norm folded,
class order, each HetConv layer in its fastest form on ``--device`` at ``--batch``), exported
with ``torch.export`` and saved as a ``.pt2`` program that plain PyTorch loads and runs, without
HetNAS: ``torch.export.load(path).module()(x)``. ``--onnx`` also writes the same graph as ONNX.

The fastest form depends on where the network runs, so ``--runtime`` names it and ``--threads``
the thread count: ``eager`` times each layer's forms in PyTorch as the program runs them;
``onnxruntime`` exports each form alone and times it in ONNX Runtime (for ``--onnx``). Forms
are not timed under TorchInductor (compiling every candidate form would take minutes). The
output names each layer's form, the time of every candidate, and says when a dense form keeps
its zeros.

What is exported is the deploy form's graph behind its channels-last conversion, with a dynamic
batch dimension, but without the deploy form's chunking: chunking splits a batch in a Python
loop whose length depends on the batch size, which a program with a symbolic batch cannot hold
(``torch.export`` refuses it). TorchInductor is not used: it compiles for this machine, and a
saved program must run on the reader's.

Each file is checked before it is written: the saved bytes are read back (by ``torch.export`` or
onnxruntime) and their outputs compared with the trained model's on random batches, at the
deploy form's own tolerance. Files are written atomically (``search.store.files``).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import warnings
from collections import Counter
from pathlib import Path
from typing import cast

import torch
from torch import nn

from hetconv.deployment import (
    ATOL_SCALE,
    DENSE,
    EAGER,
    FORM_RUNTIMES,
    ONNXRUNTIME,
    RTOL,
    DeployedModel,
    deploy,
)
from hetconv.errors import ConfigError
from hetconv.onnx_timing import quiet_onnx_exporter
from search.cli import OneLineParser, path_argument, run_cli
from search.engine.settings import check_integer
from search.store.files import check_target, write_together
from search.training.exported import load_trained, read_architecture
from space import Architecture
from space.architecture import DOCUMENT_KEYS
from space.latency import DEVICES, LatencySpec

PROG = "python -m search.deploy"
BATCH = torch.export.Dim("batch", min=1)
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
ONNX_INPUT, ONNX_OUTPUT = "images", "logits"
CHECK_SEED = 0
RUNTIME_NAMES = {EAGER: "eager PyTorch", ONNXRUNTIME: "ONNX Runtime"}


class ExportMismatch(RuntimeError):
    """The exported file computes something else than the trained model (a bug, not bad input:
    exit status 1)."""


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Turn an exported architecture and its "
                           "weights into a torch.export program (.pt2) that plain PyTorch "
                           "runs, optionally also ONNX.")
    parser.add_argument("architecture", type=path_argument,
                        help="architecture JSON (search.export)")
    parser.add_argument("--weights", type=path_argument, required=True,
                        help="its trained state dict (search.export --weights)")
    parser.add_argument("--out", type=path_argument, required=True, help="program to write (.pt2)")
    parser.add_argument("--onnx", type=path_argument, default=None,
                        help="also write the network as ONNX here (.onnx; needs "
                             "pip install 'hetnas[onnx]')")
    parser.add_argument("--batch", type=int, default=1,
                        help="batch size the layer forms are timed and chosen at (default 1); "
                             "the program takes any batch size")
    parser.add_argument("--device", default="cpu", choices=DEVICES,
                        help="device the program is made for and runs on (default cpu)")
    parser.add_argument("--runtime", default=EAGER, choices=FORM_RUNTIMES,
                        help="what will run the network, which the layer forms are timed in: "
                             "eager (PyTorch, the default) or onnxruntime (for --onnx; CPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads the layer forms are timed at (torch threads; ONNX "
                             "Runtime intra-op threads); default: torch's current count")
    return parser


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse output paths that would overwrite an input or a folder, lie under a file, or lack
    their suffix: before the slow work, not after it."""
    taken: dict[Path | None, str] = {args.architecture: "the architecture file",
                                     args.weights: "--weights"}
    targets = [("--out", args.out, ".pt2")]
    if args.onnx is not None:
        targets.append(("--onnx", args.onnx, ".onnx"))
    for flag, path, suffix in targets:
        check_target(path, flag, taken)
        if path.suffix != suffix:
            raise ConfigError(f"{flag} {path} should end in {suffix}; name the file e.g. "
                              f"model{suffix}")
        taken[path] = flag


def _check_onnx_installed(flag: str) -> None:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"{flag} needs {', '.join(missing)}: pip install 'hetnas[onnx]', or "
                          f"leave out {flag}")


def _check_runtime(args: argparse.Namespace) -> None:
    """Refuse a thread count out of range, and ONNX Runtime timing off the CPU."""
    if args.threads is not None:
        check_integer("threads", args.threads)
    if args.runtime == ONNXRUNTIME:
        if args.device != "cpu":
            raise ConfigError(f"--runtime {ONNXRUNTIME} times layer forms on the CPU; use "
                              f"--device cpu, or --runtime eager for --device {args.device}")
        _check_onnx_installed(f"--runtime {ONNXRUNTIME}")


def _servable(deployed: DeployedModel) -> DeployedModel:
    """The deploy form without chunking: the part of it a program with any batch size holds."""
    return DeployedModel(deployed.module, deployed.forms, deployed.memory_format, chunk=None,
                         compiled=False, runner=deployed.module, seconds=deployed.seconds).eval()


def _difference(actual: torch.Tensor, expected: torch.Tensor, what: str) -> float:
    """The largest absolute difference; raise beyond ``hetconv.deployment.check_equal``'s
    tolerance."""
    atol = ATOL_SCALE * max(1.0, float(expected.abs().max()))
    worst = float((actual - expected).abs().max())
    if not torch.allclose(actual, expected, rtol=RTOL, atol=atol):
        raise ExportMismatch(f"{what} differs from the trained model by up to {worst:.3g} "
                             f"(tolerance {atol:.3g}) on a random batch of {len(expected)}; "
                             f"nothing was written; please report this")
    return worst


def _saved_program(servable: nn.Module, model: nn.Module,
                  checks: list[torch.Tensor]) -> tuple[bytes, float]:
    """The servable exported and saved (its bytes), after the program read back from those
    bytes gave the model's outputs on ``checks``; and the largest difference seen.

    ``checks[0]`` is the example the export traces: a batch of 1 would be traced as the
    constant 1, not as the batch size, so it holds 2 or more images.
    """
    program = torch.export.export(servable, (checks[0],), dynamic_shapes=({0: BATCH},))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Channels-last weights are not contiguous, so the archive writer saves each one's
        # whole storage (which is exactly the weight) and warns that it found no "complete"
        # tensor; the read-back check below shows the weights survive.
        warnings.filterwarnings("ignore", message="No complete tensor found in the group")
        torch.export.save(program, buffer)
    loaded = torch.export.load(io.BytesIO(buffer.getvalue())).module()
    with torch.no_grad():
        worst = max(_difference(loaded(batch), model(batch), "the saved program")
                    for batch in checks)
    return buffer.getvalue(), worst


def _saved_onnx(servable: nn.Module, model: nn.Module,
               checks: list[torch.Tensor]) -> tuple[bytes, int, float]:
    """The servable as ONNX with a dynamic batch (its bytes), after onnxruntime gave the model's
    outputs on ``checks`` with them; its opset version and the largest difference seen."""
    import onnxruntime

    with quiet_onnx_exporter():
        program = torch.onnx.export(servable, (checks[0],), dynamo=True, verbose=False,
                                    input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                    dynamic_shapes=({0: BATCH},))
    proto = cast(torch.onnx.ONNXProgram, program).model_proto
    opset = next(entry.version for entry in proto.opset_import if entry.domain == "")
    data = proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in checks:
        actual = torch.from_numpy(session.run(None, {ONNX_INPUT: batch.cpu().numpy()})[0])
        with torch.no_grad():
            expected = model(batch).cpu()
        worst = max(worst, _difference(actual, expected, "the ONNX model (onnxruntime)"))
    return data, opset, worst


def _input_line(arch: Architecture) -> str:
    space = arch.space
    shape = f"float32 (N, {space.in_channels}, {space.input_size}, {space.input_size}), any N"
    norm = arch.normalization
    if norm is None:
        return f"{shape}, scaled as in training (the architecture records no normalisation)"
    mean, std = (", ".join(f"{v:.4f}" for v in values) for values in (norm.mean, norm.std))
    return f"{shape}, values in [0, 1] (normalised inside by mean ({mean}), std ({std}))"


def _forms_line(forms: dict[str, str]) -> str:
    counts = Counter(forms.values())
    return ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))


def _layer_lines(forms: dict[str, str], seconds: dict[str, dict[str, float]]) -> list[str]:
    """A line per layer: the form kept and why (every candidate's time, quickest first). A dense
    form kept for a grouped layer stores, and multiplies by, the grouped pattern's zeros."""
    name_width = max(map(len, forms), default=0)
    form_width = max(map(len, forms.values()), default=0)
    lines = []
    for name, form in forms.items():
        times = seconds.get(name)
        if times is None:
            why = "(part 1: a dense layer as trained)"
        else:
            why = "(" + ", ".join(f"{candidate} {times[candidate] * 1e3:.3g} ms" for candidate
                                  in sorted(times, key=times.__getitem__)) + ")"
            if form == DENSE:
                why += ": full-size weights, the grouped pattern's zeros kept"
        lines.append(f"  {name:<{name_width}}  {form:<{form_width}}  {why}")
    return lines


def _runtime_note(args: argparse.Namespace) -> str | None:
    """One line when the forms were chosen for another runtime than a file written for."""
    if args.onnx is not None and args.runtime != ONNXRUNTIME:
        return (f"note         the layer forms were chosen for {args.runtime}, not ONNX Runtime, "
                f"which may run {args.onnx} slower than it could; --runtime {ONNXRUNTIME} "
                f"chooses them for it")
    if args.onnx is None and args.runtime == ONNXRUNTIME:
        return (f"note         the layer forms were chosen for ONNX Runtime, which may run "
                f"{args.out} slower in PyTorch than --runtime {EAGER}; --onnx writes the ONNX "
                f"file they were chosen for")
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Every check on the input comes before the slow work: bad input fails at once.
    _check_runtime(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    spec = LatencySpec.current(args.device, args.batch, "eager")  # names the thread count
    _check_outputs(args)
    if args.onnx is not None:
        _check_onnx_installed("--onnx")
    if args.weights.is_dir():
        raise ConfigError(f"--weights {args.weights} is a folder; pass the state dict file")
    arch = read_architecture(args.architecture)
    device = spec.torch_device
    model = load_trained(arch, args.weights).to(device)
    space = arch.space
    generator = torch.Generator().manual_seed(CHECK_SEED)

    def images(count: int) -> torch.Tensor:
        shape = (count, space.in_channels, space.input_size, space.input_size)
        return torch.rand(shape, generator=generator).to(device)

    deployed = deploy(model, images(args.batch), compile=False,
                      runtime=ONNXRUNTIME if args.runtime == ONNXRUNTIME else EAGER)
    servable = _servable(deployed)
    larger = images(args.batch + 1)
    checks = [larger, larger[:args.batch]]  # any batch size works, --batch's included
    data, worst = _saved_program(servable, model, checks)
    onnx = None if args.onnx is None else _saved_onnx(servable, model, checks)
    files = {args.out: data} if onnx is None else {args.out: data, args.onnx: onnx[0]}
    write_together({path: functools.partial(Path.write_bytes, data=content)
                    for path, content in files.items()})

    classes = "" if arch.class_names is None else \
        f", classes in the order of {args.architecture.name}'s class_names"
    print(f"wrote        {args.out}: torch.export program of {arch.backbone} for {device}")
    print(f"layer forms  {_forms_line(deployed.forms)}: each the quickest at batch {args.batch} "
          f"in {RUNTIME_NAMES[args.runtime]} on {spec.device}")
    for line in _layer_lines(deployed.forms, deployed.seconds):
        print(line)
    print(f"input        {_input_line(arch)}")
    print(f"output       float32 (N, {space.num_classes}): class scores (logits){classes}")
    print(f"load         torch.export.load({str(args.out)!r}).module()(x) with x on {device}: "
          f"plain PyTorch (written by torch {torch.__version__}), no HetNAS")
    print(f"checked      max abs difference {worst:.3g} from the trained model on random "
          f"batches of {len(checks[0])} and {len(checks[1])}")
    if onnx is not None:
        print(f"onnx         {args.onnx}: opset {onnx[1]}, input {ONNX_INPUT!r} (N, "
              f"{space.in_channels}, {space.input_size}, {space.input_size}), output "
              f"{ONNX_OUTPUT!r}; onnxruntime max abs difference {onnx[2]:.3g}")
    note = _runtime_note(args)
    if note is not None:
        print(note)
    return 0


if __name__ == "__main__":
    run_cli(main, PROG, failures=(ExportMismatch,), flags=DOCUMENT_KEYS)
