"""Do the deploy forms chosen for one runtime pay off in another? (``search.deploy --runtime``)

Deploys ResNet-20 at a uniform part with its layer forms chosen for eager PyTorch and for ONNX
Runtime, each at ``--choose-at`` batch sizes, and the dense network (every part 1); then times
every variant in eager PyTorch and in ONNX Runtime at each ``--run-at`` batch size, interleaved
(median of ``--rounds`` rounds), on ``--threads`` threads. The weights are random with batch
norm statistics set (``bench/networks.trained_like``): speed does not depend on training.
Prints markdown; asserts nothing.

    python bench/deploy_runtimes.py --threads 1
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable

import onnxruntime
import torch
from networks import trained_like

from hetconv.deployment import EAGER, ONNXRUNTIME, deploy
from hetconv.timing import interleaved_samples
from search.deploy import _saved_onnx, _servable
from space import Architecture

BACKBONE = "resnet20"
RUNTIMES = {EAGER: "torch eager", ONNXRUNTIME: "ONNX Runtime"}


def _session(servable: torch.nn.Module, model: torch.nn.Module, size: int,
             threads: int) -> onnxruntime.InferenceSession:
    """The variant as search.deploy writes its ONNX file, in a session on ``threads``."""
    checks = [torch.rand(3, 3, size, size), torch.rand(1, 3, size, size)]
    data = _saved_onnx(servable, model, checks)[0]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", type=int, default=4)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--choose-at", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--choose-for", nargs="+", choices=list(RUNTIMES),
                        default=list(RUNTIMES), help="runtimes the forms are chosen for")
    parser.add_argument("--run-at", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sample-seconds", type=float, default=0.2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = args.input_size
    print(f"$ python {' '.join(sys.argv)}\n{BACKBONE} uniform P{args.part} at {size} px, 3 "
          f"channels; {args.threads} thread(s); torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}\n", flush=True)
    models = {part: trained_like(Architecture.uniform(BACKBONE, part, size, 10, 3).build(),
                                 part).eval() for part in (1, args.part)}
    variants: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
    for batch in args.choose_at:
        for runtime in args.choose_for:
            began = time.perf_counter()
            deployed = deploy(models[args.part], torch.rand(batch, 3, size, size),
                              compile=False, runtime=runtime)
            forms = Counter(deployed.forms.values())
            name = f"P{args.part}, forms for {RUNTIMES[runtime]} at batch {batch}"
            print(f"- {name}: {', '.join(f'{form} x{n}' for form, n in sorted(forms.items()))} "
                  f"(chosen in {time.perf_counter() - began:.0f} s)", flush=True)
            variants[name] = (_servable(deployed), models[args.part])
    variants["dense (every part 1)"] = (
        _servable(deploy(models[1], torch.rand(1, 3, size, size), compile=False)), models[1])
    sessions = {name: _session(servable, model, size, args.threads)
                for name, (servable, model) in variants.items()}
    print("\n| variant | " + " | ".join(f"{RUNTIMES[r]}, batch {b}, ms" for b in args.run_at
                                        for r in RUNTIMES)
          + " |\n|---|" + "--:|" * (len(args.run_at) * len(RUNTIMES)), flush=True)
    medians: dict[tuple[str, int, str], float] = {}
    for batch in args.run_at:
        images = torch.rand(batch, 3, size, size)
        feed = {sessions[next(iter(sessions))].get_inputs()[0].name: images.numpy()}
        calls: dict[tuple[str, str], Callable[[], object]] = {}
        for name, (servable, _) in variants.items():
            calls[name, EAGER] = functools.partial(servable, images)
            calls[name, ONNXRUNTIME] = functools.partial(sessions[name].run, None, feed)
        with torch.no_grad():
            samples = interleaved_samples(calls, None, rounds=args.rounds,
                                          sample_seconds=args.sample_seconds)
        for (name, runtime), (rounds, _) in samples.items():
            medians[name, batch, runtime] = 1e3 * statistics.median(rounds)
    for name in variants:
        print(f"| {name} | " + " | ".join(f"{medians[name, b, r]:.3f}" for b in args.run_at
                                          for r in RUNTIMES) + " |", flush=True)


if __name__ == "__main__":
    main()
