"""Zero-cost NAS proxies: scores of an initialised, untrained network that are meant to rank
architectures by their trained accuracy. They are the baselines a ground-truth benchmark holds
every accuracy estimator against, so each follows its paper and the reference code of
Abdelfattah et al. (2021), "Zero-Cost Proxies for Lightweight NAS" (``foresight/pruners``).

The scored weights are the kernels of every convolution and linear layer (never biases or batch
norm), as there: ``nn.Conv2d`` and ``nn.Linear`` weights, a :class:`HetConv2d`'s K×K ``weight``
together with its 1×1 ``pointwise`` weights (one layer, one kernel), and the dense kernels of
:class:`MaskedHetConv2d` and :class:`SuperHetConv2d`, whose masked taps get zero gradient because
the mask multiplies the kernel, so they add nothing to any score.

Every proxy works on a deep copy of the model, so the model keeps its weights, buffers, modes
and (absent) gradients. Images are ``uint8`` or float in ``[0, 1]``, ``(N, C, H, W)``, as the
built networks take them: they normalise their input themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from hetconv.layer import HetConv2d, MaskedHetConv2d
from hetconv.models.normalize import InputNormalization
from hetconv.supernet import SuperHetConv2d
from search.training.augment import unit_range

PROXIES: tuple[str, ...] = ("synflow", "naswot", "grad_norm", "snip")

Kernels = list[tuple[torch.Tensor, ...]]
"""Per convolution or linear layer, its kernel tensors (or their gradients), in module order."""

_BYPASSED_BY_SYNFLOW = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, InputNormalization)

# Every way a forward can apply a ReLU: the CIFAR ResNets call F.relu in their blocks and an
# nn.ReLU (which calls F.relu) in the stem; a network of one's own may use the others.
_RELUS: frozenset[Callable[..., Any]] = frozenset(
    {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_})


def layer_kernels(model: nn.Module) -> Kernels:
    """The trainable kernels of each convolution and linear layer of ``model``, in module order
    (a :class:`HetConv2d` with part > 1 holds two: its K×K and its 1×1 weights)."""
    layers: Kernels = []
    for module in model.modules():
        if isinstance(module, HetConv2d):
            layers.append((module.weight,) if module.pointwise is None
                          else (module.weight, module.pointwise))
        elif isinstance(module, (nn.Conv2d, nn.Linear, MaskedHetConv2d, SuperHetConv2d)):
            layers.append((module.weight,))
    return layers


def _kernel_gradients(net: nn.Module, objective: torch.Tensor, layers: Kernels) -> Kernels:
    """d objective / d kernel, shaped like ``layers``; returned, never left in ``.grad``.

    A kernel the forward did not use gets zeros, as the reference code scores it.
    """
    flat = [kernel for layer in layers for kernel in layer]
    grads = iter(torch.autograd.grad(objective, flat, materialize_grads=True))
    return [tuple(next(grads) for _ in layer) for layer in layers]


def _saliency(layers: Kernels, grads: Kernels) -> float:
    """``Σ |θ ⊙ g|`` over every kernel weight: the sum SynFlow and SNIP both score."""
    return sum((float((kernel.detach() * grad).abs().sum())
                for layer, layer_grads in zip(layers, grads, strict=True)
                for kernel, grad in zip(layer, layer_grads, strict=True)), 0.0)


def _grad_norm(grads: Kernels) -> float:
    """Sum over layers of the L2 norm of the layer's whole kernel gradient."""
    return sum((float(torch.linalg.vector_norm(torch.cat([grad.flatten() for grad in layer])))
                for layer in grads), 0.0)


def _scoring_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose kernels all take gradients, so the caller's model is never touched."""
    net = copy.deepcopy(model)
    for layer in layer_kernels(net):
        for kernel in layer:
            kernel.requires_grad_(True)
    return net


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Random draws of a train-mode forward (dropout) from ``seed``, leaving the global RNG as
    it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def _images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Images as float in ``[0, 1]`` on the model's device."""
    return unit_range(images).to(next(model.parameters()).device)


def synflow(model: nn.Module, images: torch.Tensor) -> float:
    """SynFlow (Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
    conserving synaptic flow"), as Abdelfattah et al. (2021) score it: sum over the kernels of
    ``|θ ⊙ ∂R/∂θ|`` with ``R = sum(f(1))``.

    ``f`` is a float64 copy (double precision as in the reference: the products of absolute
    weights overflow float32 in deep nets) with every parameter replaced by its absolute value,
    in eval mode (no dropout) and with every batch norm replaced by the identity, as the
    reference's ``bn=False`` copy has none. The network's input normalisation is bypassed too,
    so the all-ones input of shape ``(1, C, H, W)`` enters the stem as in the reference, whose
    networks take inputs already normalised: the score then depends on the architecture and
    weights alone, not on data statistics a network may carry. Only ``images``' shape is used.
    """
    net = _scoring_copy(model).double().eval()
    for name, module in list(net.named_modules()):
        if isinstance(module, _BYPASSED_BY_SYNFLOW):
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent), child, nn.Identity())
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.abs_()
    device = next(net.parameters()).device
    ones = torch.ones((1, *images.shape[1:]), dtype=torch.float64, device=device)
    layers = layer_kernels(net)
    grads = _kernel_gradients(net, net(ones).sum(), layers)
    return _saliency(layers, grads)


class _ReluCodes(TorchFunctionMode):
    """Sums Mellor et al.'s kernel over every ReLU a forward applies, however it is called
    (module or function), from the binary code ``c = (output > 0)`` of each image."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel: torch.Tensor | None = None

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in _RELUS:
            codes = (out.detach().flatten(1) > 0).double()
            kernel = codes @ codes.T + (1 - codes) @ (1 - codes).T
            self.kernel = kernel if self.kernel is None else self.kernel + kernel
        return out


def naswot_kernel(model: nn.Module, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Mellor et al.'s ``(N, N)`` float64 kernel ``K = Σ over ReLUs of c cᵀ + (1 − c)(1 − c)ᵀ``,
    where row ``i`` of ``c`` is the binary code (unit active or not) of image ``i`` over all of
    that ReLU's units: ``K[i, j]`` counts the units on which images ``i`` and ``j`` agree.

    One forward in train mode, as in Mellor et al.'s code (batch norm on batch statistics),
    after the network's own input normalisation.
    """
    net = _scoring_copy(model).train()
    x = _images(net, images)
    with torch.no_grad(), _seeded(seed), _ReluCodes() as relus:
        net(x)
    if relus.kernel is None:
        raise ValueError("naswot needs a network that applies ReLUs; this one applied none")
    return relus.kernel


def naswot(model: nn.Module, images: torch.Tensor, seed: int = 0) -> float:
    """NASWOT (Mellor et al. 2021, "Neural Architecture Search without Training"):
    ``log|det K|`` (``slogdet``) of :func:`naswot_kernel`.

    High when the network's ReLU codes tell the images apart; minus infinity when two images
    have the same codes everywhere (``K`` singular), e.g. two identical images.
    """
    return float(torch.linalg.slogdet(naswot_kernel(model, images, seed)).logabsdet)


def _loss_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seed: int
                    ) -> tuple[Kernels, Kernels]:
    """The kernels of a train-mode copy and the gradients of the mean cross-entropy on the
    batch: the reference's ``bn=True`` copy, batch norm on batch statistics, one split."""
    net = _scoring_copy(model).train()
    x = _images(net, images)
    layers = layer_kernels(net)
    with _seeded(seed):
        loss = F.cross_entropy(net(x), labels.to(device=x.device, dtype=torch.long))
    return layers, _kernel_gradients(net, loss, layers)


def grad_norm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
              seed: int = 0) -> float:
    """Grad-norm (Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS"): the sum over
    layers of the L2 norm of the layer's kernel gradient of the mean cross-entropy loss on one
    minibatch (train mode; a HetConv layer's K×K and 1×1 weights form one kernel)."""
    _, grads = _loss_gradients(model, images, labels, seed)
    return _grad_norm(grads)


def snip(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> float:
    """SNIP (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity"), summed over the weights as Abdelfattah et al. (2021) do: ``Σ |θ ⊙ ∂L/∂θ|``
    over the kernels, ``L`` the mean cross-entropy loss on one minibatch (train mode)."""
    layers, grads = _loss_gradients(model, images, labels, seed)
    return _saliency(layers, grads)


def score_all(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
              seed: int = 0) -> dict[str, float]:
    """Every proxy of :data:`PROXIES` for ``model`` on one minibatch, by name.

    ``model`` is left as it was (each proxy scores a copy). ``seed`` fixes what a train-mode
    forward draws (dropout), so the scores are a function of model, batch and seed. Grad-norm and
    SNIP share one backward pass: both are read from the same loss gradient, as the reference
    computes them on identical copies.
    """
    layers, grads = _loss_gradients(model, images, labels, seed)
    return {"synflow": synflow(model, images),
            "naswot": naswot(model, images, seed),
            "grad_norm": _grad_norm(grads),
            "snip": _saliency(layers, grads)}
