"""Train one architecture on one data set: the single trial that a search runs many times.

SGD with Nesterov momentum and weight decay, the learning rate scaled linearly with
``batch_size / 128`` and annealed by a cosine over every step of every epoch; cross-entropy.
Each epoch ends with the validation accuracy, a checkpoint (written atomically, before the caller
hears of the epoch) and ``on_epoch``; the test split is scored once, at the end, and never used
for any choice. On CUDA the trainer uses mixed precision (bf16, else fp16 with a gradient
scaler) and channels-last tensors; on CPU it is plain float32.

The network normalises its own input (its first module holds the data's mean and std: the
training split's, or those that dense weights expect, ``search.training.normalization``), so the
trainer feeds it float images in ``[0, 1]``, exactly what a user of the exported network feeds
it.

Runs are deterministic on CPU for a given seed and thread count, and a run resumed from its
checkpoint ends exactly where the uninterrupted run would: the checkpoint
(``search.training.checkpoint``) holds the model, optimizer, step, epoch and every random state
that training draws from.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hetconv.errors import ConfigError
from search.training.augment import crop_padding, random_crop_flip, unit_range
from search.training.checkpoint import (
    check_settings,
    fingerprint,
    read_resumable,
    write_checkpoint,
)
from search.training.data import DataSplits
from search.training.seeds import check_seed
from space.architecture import Architecture, Normalization

_RESIDENT_BYTES = 2 << 30  # data sets up to this size live on the GPU for the whole run


@dataclass(frozen=True)
class TrainConfig:
    """How to train one trial. ``lr`` is the rate at batch 128; it scales with ``batch_size``.

    ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, …
    ``warmup_epochs``: linear warm-up before the cosine (0 = none), for large batches.
    """

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    nesterov: bool = True
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        check_seed(self.seed)
        checks = (("lr", self.lr > 0, "> 0"), ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"),
                  ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
                  ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, "in [0, epochs]"))
        for name, ok, rule in checks:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not ok:
                raise ConfigError(f"{name} must be {rule}, got {value!r}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov needs momentum > 0; set nesterov=False or a momentum")

    @property
    def peak_lr(self) -> float:
        """The learning rate after linear scaling with the batch size."""
        return self.lr * self.batch_size / 128


class Diverged(RuntimeError):
    """Training left the finite numbers (a loss or a weight that is NaN or infinite): the run
    stops there, keeping its last finite checkpoint, rather than report a NaN network as a
    result."""

    def __init__(self, epoch: int, train_loss: float, peak_lr: float) -> None:
        self.epoch = epoch  # the epoch that diverged; those before it finished
        super().__init__(f"training diverged in epoch {epoch} (train loss {train_loss:g}): the "
                         f"weights are no longer finite numbers; lower the learning rate "
                         f"(peak {peak_lr:g})")


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()
               if t.is_floating_point())


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch: mean training loss, validation accuracy, wall time of the epoch."""

    epoch: int
    train_loss: float
    val_accuracy: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """A finished trial. ``seconds`` sums the epochs across resumes, plus the final test.

    ``val_correct`` and ``test_correct`` say which validation and test images the final
    network classified right (bool, one per image, in split order): what makes two networks
    scored on the same images comparable pair by pair.
    """

    val_accuracy: float
    test_accuracy: float
    epochs_trained: int
    seconds: float
    history: tuple[EpochResult, ...] = ()
    val_correct: torch.Tensor | None = field(default=None, repr=False)
    test_correct: torch.Tensor | None = field(default=None, repr=False)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; an unusable device is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use auto or cpu")
    return device


def learning_rate(config: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): optional warm-up, then cosine to 0."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return config.peak_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * config.peak_lr * (1.0 + math.cos(math.pi * progress))


def trained_architecture(arch: Architecture, data: DataSplits) -> Architecture:
    """``arch`` carrying ``data``'s input statistics and class names, as trained."""
    return arch.trained_on(Normalization(data.mean, data.std), data.class_names)


@torch.inference_mode()
def correct_images(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   device: torch.device | str | None = None,
                   batch_size: int = 1024) -> torch.Tensor:
    """Which of ``images`` (raw: uint8, or float in ``[0, 1]``; the model normalises them
    itself) ``model`` (put in eval mode) classifies right, top-1: a bool per image, on the CPU.

    ``device`` is where the model lives (default: where its parameters are); batches go there.
    """
    if device is None:
        device = next(model.parameters()).device
    device = resolve_device(device) if isinstance(device, str) else device
    amp = _amp_dtype(device)
    model.eval()
    correct = torch.zeros(len(labels), dtype=torch.bool, device=device)
    for start in range(0, len(labels), batch_size):
        x = images[start:start + batch_size].to(device, non_blocking=True)
        x = _prepare(x, channels_last=device.type == "cuda")
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        correct[start:start + batch_size] = \
            logits.argmax(1) == labels[start:start + batch_size].to(device)
    return correct.cpu()


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             device: torch.device | str | None = None, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on raw ``images`` (see :func:`correct_images`)."""
    return correct_images(model, images, labels, device, batch_size).sum().item() \
        / max(1, len(labels))


def train(arch: Architecture, data: DataSplits, config: TrainConfig,
          checkpoint_dir: Path | None = None, resume_from: Path | None = None,
          on_epoch: Callable[[EpochResult], None] | None = None,
          initial_weights: Mapping[str, torch.Tensor] | None = None,
          run_factory: RunFactory | None = None) -> TrainResult:
    """Train ``arch`` on ``data`` for ``config.epochs`` epochs and score it on the test split.

    With ``checkpoint_dir``, ``checkpoint_dir/CHECKPOINT_FILE`` is replaced after every epoch,
    before ``on_epoch`` is called. ``resume_from`` (that file, or its folder) continues after the
    saved epoch; it must come from the same architecture, data set and training settings. An
    exception raised by ``on_epoch`` stops training and propagates (the checkpoint is written).
    ``initial_weights`` (a state dict of ``arch``'s network) replaces the random initialisation:
    fine-tuning. ``run_factory`` builds another kind of run with the same loop (the one-shot
    supernet's). The caller's random state and thread count are left as they were.
    """
    if (arch.input_size, arch.num_classes, arch.in_channels) \
            != (data.input_size, data.num_classes, data.channels):
        raise ConfigError(f"architecture expects {arch.in_channels}x{arch.input_size}px inputs "
                          f"and {arch.num_classes} classes but dataset {data.name!r} has "
                          f"{data.channels}x{data.input_size}px and {data.num_classes}; build "
                          f"the architecture with the data set's input shape and class count")
    if len(data.train_y) < 2 or len(data.val_y) < 1 or len(data.test_y) < 1:
        raise ConfigError(f"dataset {data.name!r} has splits of sizes {data.sizes}; training "
                          f"needs at least 2 training images and 1 each for val and test")
    device = resolve_device(config.device)
    saved = read_resumable(resume_from, arch, data) if resume_from is not None else None
    with _isolated_rng(device), _cudnn_benchmark(device):
        run = (run_factory or TrainingRun)(arch, data, config, device)
        if saved is not None and resume_from is not None:
            check_settings(saved, run.settings(), resume_from)
        if initial_weights is not None:
            run.load_weights(initial_weights)
        return run.fit(saved, checkpoint_dir, on_epoch)


# -- the training run ---------------------------------------------------------------------


class TrainingRun:
    """Model, optimizer and random state of one run, and how to save and restore them.

    Subclasses change what one step computes (:meth:`backward`), the network
    (:meth:`build_model`) and what a resumed run must share (:meth:`settings`); the loop,
    the schedule, the checkpoints and the random state stay here.
    """

    def __init__(self, arch: Architecture, data: DataSplits, config: TrainConfig,
                 device: torch.device) -> None:
        self.arch, self.data, self.config, self.device = arch, data, config, device
        self.amp = _amp_dtype(device)
        self.channels_last = device.type == "cuda"
        torch.manual_seed(config.seed)  # model init and dropout; _isolated_rng restores after
        self.model = self.build_model().to(device)
        if self.channels_last:
            # Module.to takes memory_format; torch's type stubs lack the overload.
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.peak_lr,
                                         momentum=config.momentum, nesterov=config.nesterov,
                                         weight_decay=config.weight_decay)
        self.scaler = (torch.amp.GradScaler(device.type) if self.amp == torch.float16 else None)
        self.generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([config.seed, 1]).generate_state(1)[0]))
        self.padding = crop_padding(data.input_size)
        n = len(data.train_y)
        self.batch_size = min(config.batch_size, n)
        self.steps_per_epoch = n // self.batch_size  # the last partial batch is dropped
        self.total_steps = self.steps_per_epoch * config.epochs
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.epoch, self.step, self.seconds = 0, 0, 0.0
        self.history: list[EpochResult] = []
        resident = device.type != "cuda" or _nbytes(data) <= _RESIDENT_BYTES
        self.store = device if resident else torch.device("cpu")
        self.train_x, self.train_y = (t.to(self.store) for t in (data.train_x, data.train_y))

    def build_model(self) -> nn.Module:
        return trained_architecture(self.arch, self.data).build()

    def load_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Start from these weights instead of the random initialisation."""
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as error:
            raise ConfigError(f"initial weights do not fit {self.arch.backbone} with parts "
                              f"{list(self.arch.parts)} ({str(error).splitlines()[0]})") from None

    def settings(self) -> dict[str, Any]:
        """What the run was trained with; a resumed run must share what shapes the result."""
        return dataclasses.asdict(self.config)

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward and backward of one batch (gradients accumulate); the loss, detached."""
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            loss = self.criterion(self.model(x), y)
        self.scaled(loss).backward()
        return loss.detach()

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """The part of a batch this process trains on (all of it; data-parallel runs split it)."""
        return index

    def reduce_gradients(self) -> None:
        """Combine the gradients of the processes training together (none here)."""

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` scaled for fp16 mixed precision (unchanged otherwise)."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def fit(self, saved: Mapping[str, Any] | None, checkpoint_dir: Path | None,
            on_epoch: Callable[[EpochResult], None] | None) -> TrainResult:
        if saved is not None:
            self.restore(saved)
        val_correct = None
        for epoch in range(self.epoch + 1, self.config.epochs + 1):
            started = time.perf_counter()
            loss = self.train_epoch()
            if not (math.isfinite(loss) or self.scaler is not None) or not _finite(self.model):
                raise Diverged(epoch, loss, self.config.peak_lr)  # fp16 skips overflowed steps
            val_correct = self.correct(self.data.val_x, self.data.val_y)
            val = _share(val_correct)
            result = EpochResult(epoch, loss, val, time.perf_counter() - started)
            self.epoch = epoch
            self.seconds += result.seconds
            self.history.append(result)
            if checkpoint_dir is not None:
                write_checkpoint(checkpoint_dir, self.state())
            if on_epoch is not None:
                on_epoch(result)
        started = time.perf_counter()
        test_correct = self.correct(self.data.test_x, self.data.test_y)
        if val_correct is None:  # resumed after its last epoch: score the saved network again
            val_correct = self.correct(self.data.val_x, self.data.val_y)
        val = self.history[-1].val_accuracy if self.history else _share(val_correct)
        seconds = self.seconds + time.perf_counter() - started
        return TrainResult(val, _share(test_correct), self.epoch, seconds, tuple(self.history),
                           val_correct, test_correct)

    def train_epoch(self) -> float:
        """One pass over a fresh permutation of the training split; the mean batch loss."""
        self.model.train()
        order = torch.randperm(len(self.train_y), generator=self.generator).to(self.store)
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        for i in range(self.steps_per_epoch):
            index = self.shard(order[i * self.batch_size:(i + 1) * self.batch_size])
            x = self.train_x[index].to(self.device, non_blocking=True)
            y = self.train_y[index].to(self.device, non_blocking=True)
            x = random_crop_flip(x, self.generator, self.padding, self.data.hflip)
            x = _prepare(x, self.channels_last)
            lr = learning_rate(self.config, self.step, self.total_steps, self.steps_per_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.backward(x, y)
            self.reduce_gradients()
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            loss_sum += loss.float()
            self.step += 1
        return loss_sum.item() / self.steps_per_epoch

    def correct(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Which of ``images`` the network classifies right now (:func:`correct_images`)."""
        return correct_images(self.model, images, labels, self.device,
                              self.config.eval_batch_size)

    def state(self) -> dict[str, Any]:
        """Everything needed to continue, as tensors and primitive containers only."""
        rng = {"data": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "architecture": self.arch.to_json(), "dataset": self.data.name,
            "splits": fingerprint(self.data),
            "config": self.settings(),
            "epoch": self.epoch, "step": self.step, "seconds": self.seconds,
            "history": [dataclasses.asdict(r) for r in self.history],
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rng,
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scaler is not None and saved["scaler"]:
            self.scaler.load_state_dict(saved["scaler"])
        self.epoch, self.step, self.seconds = saved["epoch"], saved["step"], saved["seconds"]
        self.history = [EpochResult(**r) for r in saved["history"]]
        self.generator.set_state(saved["rng"]["data"])
        torch.set_rng_state(saved["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in saved["rng"]:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], self.device)


RunFactory = Callable[[Architecture, DataSplits, TrainConfig, torch.device], TrainingRun]


def _share(correct: torch.Tensor) -> float:
    """The accuracy a per-image correctness vector stands for."""
    return correct.sum().item() / max(1, len(correct))


def _prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch already on its device as float in ``[0, 1]``; channels-last on CUDA, where it is
    faster."""
    x = unit_range(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _nbytes(data: DataSplits) -> int:
    return data.train_x.numel() * data.train_x.element_size()


@contextmanager
def _isolated_rng(device: torch.device) -> Iterator[None]:
    """Seed freely inside; give the caller back its own CPU (and CUDA) random state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


@contextmanager
def _cudnn_benchmark(device: torch.device) -> Iterator[None]:
    """Let cuDNN pick the fastest kernels for the fixed batch shapes; restore the flag after."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
