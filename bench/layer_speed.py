"""Wall-clock speed of HetConv's fast path, per VGG-16 (CIFAR) layer shape and part P.

Why this exists: HetConv cuts MACs by ``1/P + (1 - 1/P)/K²`` (docs/HETCONV.md), but grouped
convolutions are often slower per MAC than dense ones, so the saving does not turn into time by
itself. This script measures, for every distinct searchable VGG-16 layer shape at 32x32 input,
the fast path (:class:`HetConv2d`: grouped KxK + dense 1x1), the masked reference
(:class:`MaskedHetConv2d`) and a plain dense :class:`torch.nn.Conv2d` of the same size, forward
only and forward + backward, and compares the realized speedup with the theoretical one.

Measurement hygiene: warm-up rounds first; forward-only timing under ``torch.inference_mode``;
within each round every variant of a shape (dense once, fast and masked at every P) gives one
sample (at least ``--min-sample`` seconds of back-to-back calls), in a freshly shuffled order, so
machine noise hits all of them alike; the figure reported is the median over ``--repeats``
rounds. Other processes may share the cores: a round during which they kept more than
``--max-busy`` cores busy (read from ``/proc/stat``) is re-run once they are idle again; a
shape that found no quiet rounds within ``--patience`` seconds is marked "noisy". On CUDA the
clock synchronises the device and cuDNN's autotuner is on (its search falls into the warm-up).
On CPU, glibc's malloc thresholds are fixed first (:func:`steady_malloc`), otherwise a shape's
time depends on which shapes ran before it.

``torch.utils.benchmark.Timer`` is not used for the samples: its ``timeit`` runs at least two
untimed calls before every measurement (tripling the cost of interleaved single-call samples on
a 2-core CPU) and ``blocked_autorange`` times one statement at a time, so it cannot interleave.
Only its thread-count context manager is borrowed.

Run from the repository root::

    python bench/layer_speed.py                # full table, plain text
    python bench/layer_speed.py --quick        # smoke run: two shapes, P in {1, 4, 32}
    python bench/layer_speed.py --markdown     # table for docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.benchmark.utils.common import set_torch_threads

from hetconv.layer import HetConv2d
from hetconv.timing import seconds_per_call
from space import cost_profile
from space.trace import searchable_layers

PARTS = (1, 2, 4, 8, 16, 32)
QUICK_PARTS = (1, 4, 32)
MODES = ("fwd", "fwd+bwd")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Shape:
    """One distinct searchable layer shape (stride 1, so input size equals output size)."""

    in_channels: int
    out_channels: int
    size: int
    kernel_size: int
    allowed_parts: tuple[int, ...]
    count: int  # how many VGG-16 layers share this shape

    def label(self) -> str:
        return f"{self.in_channels}->{self.out_channels} @{self.size}x{self.size}"

    def key(self) -> str:
        """The ``--shapes`` spelling: ``CINxCOUT@SIZE``, e.g. ``64x64@32``."""
        return f"{self.in_channels}x{self.out_channels}@{self.size}"


@dataclass
class Row:
    """Median times (ms) of one shape at one part, for one precision."""

    shape: Shape
    part: int
    noisy: bool  # measured while other processes kept the cores busy
    ms: dict[tuple[str, str], float] = field(default_factory=dict)  # (mode, impl) -> ms

    def speedup(self, mode: str) -> float:
        return self.ms[mode, "dense"] / self.ms[mode, "fast"]


def theoretical_speedup(part: int, kernel_size: int) -> float:
    """Paper-convention MACs ratio dense / HetConv: ``1 / (1/P + (1 - 1/P)/K²)``."""
    return 1.0 / (1.0 / part + (1.0 - 1.0 / part) / kernel_size ** 2)


def vgg16_shapes(input_size: int = 32) -> list[Shape]:
    """The searchable VGG-16 layer shapes with their spatial size, identical ones merged."""
    layers = searchable_layers("vgg16")
    pixels = cost_profile("vgg16", input_size, 10, 3).pixels
    merged: dict[tuple[int, int, int, int], list] = {}
    for layer, px in zip(layers, pixels, strict=True):
        if layer.stride != 1:
            raise ValueError(f"{layer.describe()}: stride {layer.stride}; this bench assumes 1")
        size = math.isqrt(int(px))
        key = (layer.in_channels, layer.out_channels, size, layer.kernel_size)
        if key in merged:
            merged[key][1] += 1
        else:
            merged[key] = [layer.allowed_parts, 1]
    return [Shape(m, n, s, k, allowed, count)
            for (m, n, s, k), (allowed, count) in merged.items()]


def quick_shapes(shapes: list[Shape]) -> list[Shape]:
    """Two cheap shapes for a smoke run: the last (smallest spatial size) and a mid one."""
    picked = [shapes[len(shapes) // 2], shapes[-1]]
    return list(dict.fromkeys(picked))


def _fwd_step(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    return lambda: module(x)


def _fwd_bwd_step(module: nn.Module, x: torch.Tensor,
                  grad_out: torch.Tensor) -> Callable[[], None]:
    """Forward + backward with the input gradient too, as for any layer inside the network."""
    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad_out)
    return step


class CpuMeter:
    """CPU time that *other* processes used while we measured: colleagues' tests share the cores.

    Reads the machine-wide busy time from ``/proc/stat`` (Linux) and subtracts this process's own
    CPU time; reports the average number of cores the rest of the machine kept busy.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter()

    def other_cores(self) -> float | None:
        """Average cores used by other processes since construction (None: cannot tell)."""
        end = self._sample()
        if self.start is None or end is None or end[2] <= self.start[2]:
            return None
        other = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return max(other, 0.0) / (end[2] - self.start[2])


@dataclass
class Gate:
    """Rounds during which other processes kept more than ``max_busy`` cores busy are re-run.

    Colleagues' tests share this machine's cores; with every core in use a contended round is
    slower for all variants but not alike (thread barriers stall), so it is dropped and re-run
    once the machine is idle again, for up to ``patience`` seconds per shape and mode. After that
    contended rounds are kept and the shape is marked noisy.
    """

    max_busy: float
    patience: float

    def wait_quiet(self, deadline: float, window_s: float = 0.25, quiet_windows: int = 4) -> None:
        """Idle until other processes stay under ``max_busy`` for a few windows, or deadline.

        Sleeping costs no CPU, so this lets a burst of colleagues' work pass without burning
        contended rounds (each of which runs far slower than a quiet one).
        """
        quiet = 0
        while quiet < quiet_windows and time.perf_counter() < deadline:
            meter = CpuMeter()
            time.sleep(window_s)
            busy = meter.other_cores()
            quiet = quiet + 1 if busy is None or busy <= self.max_busy else 0


@dataclass
class Timing:
    """Median seconds per call of each variant, and how quiet the machine was meanwhile."""

    median_s: dict[str, float]
    busy: list[float]  # cores other processes used during each kept round
    discarded: int
    noisy: bool

    def describe(self) -> str:
        busy = f"{statistics.mean(self.busy):.2f}" if self.busy else "n/a"
        return (f"others busy {busy} cores in kept rounds, {self.discarded} rounds re-run"
                + (", NOISY (patience ran out)" if self.noisy else ""))


def time_gated_rounds(steps: dict[str, Callable[[], object]], device: torch.device,
                     warmup: int, repeats: int, min_sample_s: float, gate: Gate) -> Timing:
    """Median seconds per call of each step; every round runs each step once, order shuffled.

    ``min_sample_s`` sets how many back-to-back calls make one sample: fast GPU kernels are not
    timed one launch at a time, and a round lasts long enough to tell whether it was contended.
    """
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            seconds_per_call(steps[name], 1, device)
    number = {name: max(1, math.ceil(min_sample_s / seconds_per_call(steps[name], 1, device)))
              for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(0)
    timing = Timing({}, [], 0, False)
    deadline = time.perf_counter() + gate.patience
    while len(timing.busy) < repeats:
        order.shuffle(names)
        meter = CpuMeter()
        times = {name: seconds_per_call(steps[name], number[name], device) for name in names}
        busy = meter.other_cores()
        if busy is not None and busy > gate.max_busy:
            if time.perf_counter() < deadline:
                timing.discarded += 1
                gate.wait_quiet(deadline)
                continue
            timing.noisy = True
        timing.busy.append(busy if busy is not None else float("nan"))
        for name, seconds in times.items():
            samples[name].append(seconds)
    timing.median_s = {name: statistics.median(values) for name, values in samples.items()}
    return timing


@contextmanager
def _precision(device: torch.device, amp: str) -> Iterator[None]:
    if amp == "none":
        yield
        return
    with torch.autocast(device.type, dtype=AMP_DTYPES[amp]):
        yield


def bench_shape(shape: Shape, parts: list[int], args: argparse.Namespace,
                device: torch.device, amp: str) -> list[Row]:
    """Time dense once and fast + masked at every part of one shape, all interleaved."""
    m, n, k, s = shape.in_channels, shape.out_channels, shape.kernel_size, shape.size
    modules: dict[str, nn.Module] = {"dense": nn.Conv2d(m, n, k, padding=k // 2, bias=False)}
    for p in parts:
        fast = HetConv2d(m, n, k, part=p)
        modules[f"fast/{p}"] = fast
        modules[f"masked/{p}"] = fast.to_masked()
    for module in modules.values():
        module.to(device)
    x = torch.randn(args.batch, m, s, s, device=device)
    x_grad = x.clone().requires_grad_(True)
    # Under autocast the layer's output (so its gradient) is in the autocast dtype.
    grad_out = torch.randn(args.batch, n, s, s, device=device,
                           dtype=AMP_DTYPES.get(amp, torch.float32))
    gate = Gate(args.max_busy, args.patience)

    timings: dict[str, Timing] = {}
    with torch.inference_mode(), _precision(device, amp):
        steps = {name: _fwd_step(mod, x) for name, mod in modules.items()}
        timings["fwd"] = time_gated_rounds(steps, device, args.warmup, args.repeats,
                                          args.min_sample, gate)
    with _precision(device, amp):
        steps = {name: _fwd_bwd_step(mod, x_grad, grad_out) for name, mod in modules.items()}
        timings["fwd+bwd"] = time_gated_rounds(steps, device, args.warmup, args.repeats,
                                              args.min_sample, gate)
    for mode, timing in timings.items():
        print(f"# {shape.label()} {mode}: {timing.describe()}", flush=True)
    noisy = any(timing.noisy for timing in timings.values())
    rows = []
    for p in parts:
        row = Row(shape, p, noisy)
        for mode in MODES:
            for impl in ("fast", "masked"):
                row.ms[mode, impl] = 1e3 * timings[mode].median_s[f"{impl}/{p}"]
            row.ms[mode, "dense"] = 1e3 * timings[mode].median_s["dense"]
        rows.append(row)
    return rows


HEADERS = ("layer (Cin->Cout @HxW)", "n", "P",
           "fwd fast", "fwd masked", "fwd dense", "fwd x",
           "f+b fast", "f+b masked", "f+b dense", "f+b x",
           "theory x", "fwd real/th", "f+b real/th", "slower than dense")


def _cells(row: Row) -> list[str]:
    theory = theoretical_speedup(row.part, row.shape.kernel_size)
    slower = [mode for mode in MODES if row.part > 1 and row.speedup(mode) < 1.0]
    cells = [row.shape.label() + (" (noisy)" if row.noisy else ""), str(row.shape.count),
             str(row.part)]
    for mode in MODES:
        cells += [f"{row.ms[mode, impl]:.2f}" for impl in ("fast", "masked", "dense")]
        cells.append(f"{row.speedup(mode):.2f}")
    cells += [f"{theory:.2f}", f"{row.speedup('fwd') / theory:.2f}",
              f"{row.speedup('fwd+bwd') / theory:.2f}",
              "control (same op as dense)" if row.part == 1
              else ("**SLOWER: " + ", ".join(slower) + "**" if slower else "")]
    return cells


def format_table(rows: list[Row], markdown: bool) -> str:
    """Rows as a markdown table, or as aligned plain text (SLOWER flag without bold)."""
    body = [_cells(row) for row in rows]
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |",
                 "|" + "|".join(["---"] + ["--:"] * (len(HEADERS) - 2) + ["---"]) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    body = [[cell.replace("**", "") for cell in cells] for cells in body]
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(HEADERS)]
    out = ["  ".join(h.ljust(w) if i in (0, len(HEADERS) - 1) else h.rjust(w)
                     for i, (h, w) in enumerate(zip(HEADERS, widths, strict=True)))]
    for cells in body:
        out.append("  ".join(c.ljust(w) if i in (0, len(HEADERS) - 1) else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device,
                        help=f"default: {default_device}")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per variant, median reported (default 5, quick 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds per variant before timing (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch CPU threads (default: torch's, {torch.get_num_threads()})")
    parser.add_argument("--parts", type=int, nargs="+", default=None,
                        help=f"parts to time (default {list(PARTS)}, quick {list(QUICK_PARTS)})")
    parser.add_argument("--amp", nargs="+", choices=("none", *AMP_DTYPES), default=None,
                        help="precisions: 'none' is fp32, others run under torch.autocast "
                             "(default: none on cpu, none bf16 on cuda)")
    parser.add_argument("--min-sample", type=float, default=0.05,
                        help="seconds of back-to-back calls that make one sample (default 0.05)")
    parser.add_argument("--max-busy", type=float, default=0.25,
                        help="re-run a round if other processes kept more cores than this busy "
                             "(default 0.25; 'inf' turns the gate off)")
    parser.add_argument("--patience", type=float, default=None,
                        help="seconds per shape and mode to wait for quiet rounds before "
                             "keeping contended ones and marking the shape noisy "
                             "(default 30, quick 5)")
    parser.add_argument("--shapes", nargs="+", default=None, metavar="CINxCOUT@SIZE",
                        help="only these layer shapes, e.g. 64x64@32 512x512@2 (default: all)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc thresholds alone (timings then depend on the "
                             "order shapes are measured in; see steady_malloc)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: two shapes, P in {1, 4, 32}, 3 repeats")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.shapes:
        known = [shape.key() for shape in vgg16_shapes()]
        unknown = [key for key in args.shapes if key not in known]
        if unknown:
            parser.error(f"unknown shapes {unknown}; VGG-16 has {known}")
    if args.patience is None:
        args.patience = 5.0 if args.quick else 30.0
    if args.parts is None:
        args.parts = list(QUICK_PARTS if args.quick else PARTS)
    if args.amp is None:
        args.amp = ["none", "bf16"] if args.device == "cuda" else ["none"]
    for name in ("batch", "repeats", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("warmup", "min_sample", "max_busy", "patience"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    return args


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameter numbers
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # the largest value glibc accepts on 64-bit


def steady_malloc() -> bool:
    """Keep freed CPU memory in glibc's heap so every call does not fault in fresh pages.

    torch's CPU tensors come from ``malloc``. By default glibc serves large blocks with a fresh
    ``mmap`` (and trims the heap top on free) until its adaptive threshold has grown past them,
    so a layer's timing depends on which larger tensors the process freed before: the same shape
    measured alone ran up to 2.5x slower than after bigger shapes, and the fast path, which
    allocates more intermediates than a dense convolution, paid the most. Fixing the thresholds
    gives the steady state a training loop reaches, whatever the order. Returns False where this
    is not glibc (nothing changed).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
                    and libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX))
    except (OSError, AttributeError):
        return False


def add_timing_options(parser: argparse.ArgumentParser, repeats: int,
                       patience: float) -> None:
    """The options of the whole-network scripts that time interleaved rounds on one device."""
    parser.add_argument("--repeats", type=int, default=repeats, help="interleaved rounds (median)")
    parser.add_argument("--min-sample", type=float, default=0.05,
                        help="seconds of back-to-back calls per sample")
    parser.add_argument("--max-busy", type=float, default=0.3,
                        help="cores other processes may keep busy during a kept round")
    parser.add_argument("--patience", type=float, default=patience,
                        help="seconds to wait for quiet rounds before keeping noisy ones")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")


def machine(device: torch.device, threads: int) -> str:
    """``cpu, 2 threads of 2 cores`` or the GPU's name: what a figure was measured on."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" \
        else f"cpu, {threads} threads of {os.cpu_count()} cores"


def closing_line(meter: CpuMeter, started: float) -> str:
    """The load while the script ran, and its wall time: whether the figures can be trusted."""
    busy = meter.other_cores()
    return (f"# load average at end: {load_average()}; other processes kept "
            f"{'n/a' if busy is None else f'{busy:.2f}'} cores busy on average over the run; "
            f"wall time {time.perf_counter() - started:.0f} s")


def load_average() -> str:
    """The machine's 1/5/15-minute load averages, as every benchmark prints them."""
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    malloc = "default glibc malloc" if args.default_malloc else \
        ("steady glibc malloc" if steady_malloc() else "default malloc (not glibc)")
    device = torch.device(args.device)
    threads = args.threads or torch.get_num_threads()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    shapes = vgg16_shapes()
    if args.shapes:
        shapes = [shape for shape in shapes if shape.key() in args.shapes]
    elif args.quick:
        shapes = quick_shapes(shapes)
    print(f"# layer_speed: torch {torch.__version__}, {machine(device, threads)}, batch "
          f"{args.batch}, "
          f"warmup {args.warmup}, repeats {args.repeats} (median), {malloc}, times in ms per call")
    print(f"# load average (1/5/15 min) at start: {load_average()}")
    started, meter = time.perf_counter(), CpuMeter()
    with set_torch_threads(threads):
        for amp in args.amp:
            rows: list[Row] = []
            for shape in shapes:
                parts = [p for p in args.parts if p in shape.allowed_parts]
                skipped = sorted(set(args.parts) - set(parts))
                if skipped:
                    print(f"# {shape.label()}: skipping parts {skipped} (not allowed)")
                if parts:
                    rows += bench_shape(shape, parts, args, device, amp)
            precision = "fp32" if amp == "none" else f"autocast {amp}"
            print(f"\n## {precision}\n")
            print(format_table(rows, args.markdown))
    print("\n" + closing_line(meter, started))


if __name__ == "__main__":
    main()
