"""The deploy form: a trained network turned into its fastest inference form on one device.

Each step keeps the network's function (up to float rounding):

1. every batch norm is folded into the convolution in front of it, so it costs nothing;
2. activations between layers are kept in class order (:mod:`hetconv.layout`), so no HetConv
   layer reorders channels: each is a grouped K×K and a 1×1 convolution and an add;
3. every HetConv layer runs in the fastest of its equivalent forms, timed on the layer's own
   input on this device at torch's current thread count, in eager PyTorch or (``runtime=
   "onnxruntime"``, for an ONNX deployment) in ONNX Runtime (:mod:`hetconv.onnx_timing`).
   A part-P layer is also a part-Q layer for every Q dividing P (its K×K pattern is a subset of
   Q's, the extra weights are zero), and part 1 is one dense convolution, so grouped K×K + 1×1
   at P, at each smaller Q, and dense are all candidates;
4. a large batch runs in the chunk size that is quickest on this device (smaller chunks keep
   the activations of the 1×1 and grouped convolutions, which are limited by memory traffic,
   in cache);
5. 4-D activations go channels-last, and by default TorchInductor compiles the graph with
   freezing: weights become constants and are prepacked, and the add of the two branches, the
   bias and the ReLU fuse into the convolutions.

The result is compared with the original network on the example input before it is returned.
"""

from __future__ import annotations

import copy
import functools
import statistics
import warnings
from collections.abc import Callable, Mapping
from typing import cast

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from hetconv.errors import ConfigError
from hetconv.fold import fold_batchnorm
from hetconv.layer import HetConv2d, MaskedHetConv2d
from hetconv.layout import OrderedHetConv2d, replace_submodule, to_class_order
from hetconv.onnx_timing import onnxruntime_calls
from hetconv.timing import interleaved_samples

DENSE = "dense"
EAGER, ONNXRUNTIME = "eager", "onnxruntime"
FORM_RUNTIMES = (EAGER, ONNXRUNTIME)  # what layer forms are timed in
TIMING_ROUNDS = 5  # interleaved rounds deciding between forms (median) ...
SAMPLE_SECONDS = 0.005  # ... each about this long per form, and at least 3 calls
RTOL = 1e-3
ATOL_SCALE = 1e-4  # absolute tolerance, relative to the largest output magnitude
CHUNKS = (16, 8)  # batch chunk sizes tried for a larger batch


def grouped_form_name(part: int) -> str:
    return f"grouped-P{part}"


class _LayerTracer(fx.Tracer):
    """Keeps HetConv layers whole in the graph, so they can be folded and swapped as units."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (isinstance(module, (HetConv2d, MaskedHetConv2d, OrderedHetConv2d))
                or super().is_leaf_module(module, qualified_name))


def trace(model: nn.Module) -> fx.GraphModule:
    """The model as a graph with each HetConv layer one node, masked references made fast."""
    graph = fx.GraphModule(model, _LayerTracer().trace(model))
    for name, module in list(graph.named_modules()):
        if isinstance(module, MaskedHetConv2d):
            replace_submodule(graph, name, HetConv2d.from_masked(module))
    return graph


def fold_batchnorms(graph: fx.GraphModule) -> int:
    """Fold each eval-mode batch norm into the convolution that alone feeds it; returns how many."""
    modules = dict(graph.named_modules())
    folded = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module"
                and len(source.users) == 1):
            continue
        conv, bn = modules[source.target], modules[node.target]
        fused: nn.Module
        if isinstance(conv, HetConv2d):
            fused = fold_batchnorm(conv, bn)
        elif type(conv) is nn.Conv2d:
            fused = fuse_conv_bn_eval(conv, bn)
        else:
            continue
        replace_submodule(graph, str(source.target), fused)
        node.replace_all_uses_with(source)
        graph.graph.erase_node(node)
        folded += 1
    graph.graph.lint()
    graph.delete_all_unused_submodules()
    graph.recompile()
    return folded


def equivalent_forms(layer: HetConv2d | OrderedHetConv2d) -> dict[str, nn.Module]:
    """Every form computing ``layer``'s function: grouped at each part dividing its own, dense.

    The forms of an :class:`OrderedHetConv2d` read and write class order as it does.
    """
    forms: dict[str, nn.Module] = {}
    smaller = [q for q in range(layer.part, 1, -1) if layer.part % q == 0]
    if isinstance(layer, OrderedHetConv2d):
        forms = {grouped_form_name(q): layer.with_part(q).eval() for q in smaller}
        forms[DENSE] = layer.to_dense().eval()
        return forms
    dense = layer.dense_weight().detach()
    for part in smaller:
        form = HetConv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                         layer.stride, layer.padding, part, bias=layer.bias is not None)
        form = form.to(device=dense.device, dtype=dense.dtype)
        form.load_dense_weight(dense)
        if layer.bias is not None and form.bias is not None:
            with torch.no_grad():
                form.bias.copy_(layer.bias)
        forms[grouped_form_name(part)] = form.eval()
    forms[DENSE] = layer.to_dense().eval()
    return forms


def memory_format_for(x: torch.Tensor) -> torch.memory_format:
    """Channels-last for images: the fast layout of oneDNN and cuDNN convolutions."""
    return torch.channels_last if x.dim() == 4 else torch.contiguous_format


def quickest(calls: Mapping[str, Callable[[], object]],
             device: torch.device) -> tuple[str, dict[str, float]]:
    """The name of the quickest of ``calls``, and every call's median seconds.

    The calls take turns within each round so that machine noise hits them alike
    (:func:`~hetconv.timing.interleaved_samples`); the median over rounds decides.
    """
    samples = interleaved_samples(calls, device, TIMING_ROUNDS, SAMPLE_SECONDS)
    seconds = {name: statistics.median(rounds) for name, (rounds, _) in samples.items()}
    return min(seconds, key=seconds.__getitem__), seconds


def check_runtime(runtime: str, device: torch.device) -> None:
    """Refuse a runtime that cannot time layer forms on ``device`` (ONNX Runtime: CPU only)."""
    if runtime not in FORM_RUNTIMES:
        raise ConfigError(f"runtime {runtime!r} is unknown; use one of {', '.join(FORM_RUNTIMES)}")
    if runtime == ONNXRUNTIME and device.type != "cpu":
        raise ConfigError(f"runtime {ONNXRUNTIME} times layer forms on the CPU, not {device.type}")


def fastest_form(layer: HetConv2d | OrderedHetConv2d, x: torch.Tensor,
                 runtime: str = EAGER) -> tuple[str, nn.Module, dict[str, float]]:
    """The quickest of :func:`equivalent_forms` on input ``x`` in ``runtime`` (one of
    :data:`FORM_RUNTIMES`) at torch's current thread count, and every form's seconds."""
    check_runtime(runtime, x.device)
    forms = equivalent_forms(layer)
    if len(forms) == 1:
        (name, form), = forms.items()
        return name, form, {}
    fmt = memory_format_for(x)
    x = x.contiguous(memory_format=fmt)
    for form in forms.values():
        form.to(memory_format=fmt)  # type: ignore[call-overload]  # torch's stubs lack the kwarg
    with torch.no_grad():  # the warm-up calls of the timing let oneDNN / cuDNN pick kernels
        calls = (onnxruntime_calls(forms, x) if runtime == ONNXRUNTIME
                 else {name: functools.partial(form, x) for name, form in forms.items()})
        best, seconds = quickest(calls, x.device)
    return best, forms[best], seconds


def chunked(runner: Callable[[torch.Tensor], torch.Tensor],
            chunk: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``runner`` applied to ``chunk`` images at a time (all at once when ``chunk`` is None)."""
    if chunk is None:
        return runner

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= chunk:
            return runner(x)
        return torch.cat([runner(part) for part in x.split(chunk)])

    return run


def chunk_candidates(batch: int) -> list[int | None]:
    """The chunk sizes tried for a batch (``None``: all at once): those of :data:`CHUNKS` that
    are smaller than the batch and divide it."""
    return [None, *(size for size in CHUNKS if size < batch and batch % size == 0)]


def fastest_chunk(runner: Callable[[torch.Tensor], torch.Tensor],
                  example_input: torch.Tensor) -> int | None:
    """The chunk size with which ``runner`` runs the example batch quickest."""
    sizes = chunk_candidates(example_input.shape[0])
    if len(sizes) == 1:
        return None
    runs = {str(size): chunked(runner, size) for size in sizes}
    calls = {name: functools.partial(run, example_input) for name, run in runs.items()}
    with torch.no_grad():
        best, _ = quickest(calls, example_input.device)
    return None if best == "None" else int(best)


def _layer_inputs(graph: fx.GraphModule, example_input: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each HetConv layer receives when the graph runs on the example input."""
    inputs: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in graph.named_modules():
        if isinstance(module, (HetConv2d, OrderedHetConv2d)):
            def keep(_module, args, name=name):
                inputs[name] = args[0].detach()
            hooks.append(module.register_forward_pre_hook(keep))
    try:
        with torch.no_grad():
            graph(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs


class DeployedModel(nn.Module):
    """An inference-only network: no autograd, weights frozen at deploy time.

    ``forms`` names the form each HetConv layer runs in (``grouped-P4``, ``dense``, ...), in
    network order; ``seconds`` holds, per layer whose form was timed, each candidate form's
    median seconds (what :func:`fastest_form` chose by);
    ``chunk`` is the number of images run at a time (``None``: the whole batch);
    ``compiled`` says whether TorchInductor runs it.
    """

    _runner: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, module: fx.GraphModule, forms: dict[str, str],
                 memory_format: torch.memory_format, chunk: int | None, compiled: bool,
                 runner: Callable[[torch.Tensor], torch.Tensor],
                 seconds: dict[str, dict[str, float]] | None = None) -> None:
        super().__init__()
        self.module = module
        self.forms = forms
        self.seconds = {} if seconds is None else seconds
        self.memory_format = memory_format
        self.chunk = chunk
        self.compiled = compiled
        self.__dict__["_runner"] = chunked(runner, chunk)  # not a submodule: wraps self.module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._runner(x.contiguous(memory_format=self.memory_format))


def _compiled(module: fx.GraphModule,
              examples: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """TorchInductor with freezing, compiled now for each of the example inputs' shapes.

    Freezing must be on while Dynamo traces (it decides there whether weights are constants),
    which ``torch.compile(options=...)`` does not reach; hence the config patch around the
    first calls, which compile. Shapes are static (each chunk size gets its own kernels); other
    shapes compile when first seen, without freezing.
    """
    import torch._inductor.config as inductor_config

    compiled = torch.compile(module, dynamic=False)
    with inductor_config.patch(freezing=True), torch.no_grad():
        for example in examples:
            compiled(example)
    return compiled


def check_equal(deployed: nn.Module, model: nn.Module, example_input: torch.Tensor) -> None:
    """Raise unless ``deployed`` gives ``model``'s outputs on the example (float tolerance)."""
    with torch.no_grad():
        expected = model(example_input)
        actual = deployed(example_input)
    atol = ATOL_SCALE * max(1.0, float(expected.abs().max()))
    if not torch.allclose(actual, expected, rtol=RTOL, atol=atol):
        worst = float((actual - expected).abs().max())
        raise RuntimeError(f"the deploy form differs from the model by up to {worst:.3g} on the "
                           f"example input (tolerance {atol:.3g}); please report this")


def deploy(model: nn.Module, example_input: torch.Tensor, compile: bool = True,
           runtime: str = EAGER) -> DeployedModel:
    """Return ``model``'s fastest inference form on ``example_input``'s device.

    ``example_input`` is one batch of the shape and device the form will serve: layer forms are
    chosen by timing on it (in ``runtime``, at torch's current thread count) and the result is
    checked against ``model`` on it. ``model`` is not changed. ``compile=False`` skips
    TorchInductor (no C++ compiler, or start-up time matters); layer forms are timed eagerly
    either way, as compiling every candidate form of every layer would take minutes.
    """
    check_runtime(runtime, example_input.device)
    original = model
    model = copy.deepcopy(model).eval()
    graph = trace(model)
    fold_batchnorms(graph)
    fmt = memory_format_for(example_input)
    example_input = example_input.contiguous(memory_format=fmt)
    # Part-1 layers are dense convolutions already; the class-order pass makes them nn.Conv2d.
    forms = {name: DENSE for name, module in graph.named_modules()
             if isinstance(module, HetConv2d) and module.part == 1}
    with torch.no_grad():
        to_class_order(graph, example_input)
    graph.to(memory_format=fmt)  # type: ignore[call-overload]  # torch's stubs lack the kwarg
    seconds: dict[str, dict[str, float]] = {}
    for name, x in _layer_inputs(graph, example_input).items():
        layer = cast(HetConv2d, graph.get_submodule(name))
        forms[name], form, seconds[name] = fastest_form(layer, x, runtime)
        replace_submodule(graph, name, form)
    graph.recompile()
    order = {name: index for index, (name, _) in enumerate(graph.named_modules())}
    forms = dict(sorted(forms.items(), key=lambda item: order[item[0]]))
    runner: Callable[[torch.Tensor], torch.Tensor] = graph
    if compile:
        try:
            runner = _compiled(graph, [example_input[:size]
                                       for size in chunk_candidates(len(example_input))])
        except Exception as error:  # inductor needs a C++ compiler (CPU) or Triton (CUDA)
            warnings.warn(f"TorchInductor could not compile the deploy form ({error}); it runs "
                          f"eagerly", stacklevel=2)
    chunk = fastest_chunk(runner, example_input)
    deployed = DeployedModel(graph, forms, fmt, chunk, compiled=runner is not graph,
                             runner=runner, seconds={name: times for name, times
                                                     in seconds.items() if times})
    was_training = original.training
    original.eval()
    try:
        check_equal(deployed, original, example_input)
    finally:
        original.train(was_training)
    return deployed
