"""Layer forms run in ONNX Runtime, for timing: what ``deploy(..., runtime="onnxruntime")``
chooses each HetConv layer's form by.

The quickest form of a layer depends on the runtime that runs it: timed in eager PyTorch at
batch 1, a user found 9 of resnet10t's 10 layers kept dense and ONNX Runtime ran that network
no faster than the dense one (issue 29); docs/BENCHMARKS.md, "Deploy forms per runtime", has
ResNet-20's figures. So for an ONNX deployment
each candidate form is exported alone, as a tiny ONNX model on the layer's own input, and run
by its own ``InferenceSession`` at torch's current thread count
(intra-op threads; one inter-op thread, as a single layer has no parallel branches).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import cast

import torch
from torch import nn

INPUT = "x"


@contextlib.contextmanager
def quiet_onnx_exporter() -> Iterator[None]:
    """torch.onnx logs one warning per torchvision operator it cannot register (torchvision is
    no dependency) and torch's internals raise FutureWarnings: noise to a deploy's user."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def onnxruntime_calls(forms: Mapping[str, nn.Module],
                      x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """One call per form: the form exported to ONNX on ``x``'s shape, run by onnxruntime on
    ``x`` (a CPU tensor) at ``torch.get_num_threads()`` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    example = x.contiguous()  # ONNX has no memory formats: NCHW
    feed = {INPUT: example.numpy()}
    calls: dict[str, Callable[[], object]] = {}
    for name, form in forms.items():
        with quiet_onnx_exporter():
            program = torch.onnx.export(form, (example,), dynamo=True, verbose=False,
                                        input_names=[INPUT])
        proto = cast(torch.onnx.ONNXProgram, program).model_proto
        session = onnxruntime.InferenceSession(proto.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
        calls[name] = functools.partial(session.run, None, feed)
    return calls
