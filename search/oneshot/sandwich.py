"""Training the supernet: the largest network alone, or the sandwich rule with in-place
distillation.

Every step trains, on the same batch, the largest network (part 1 everywhere) against the
labels, then the smallest of the space (every layer at its largest part) and ``random_subnets``
architectures drawn from a pool of architectures within the search's budgets, each of those
against the largest network's softened outputs (in-place distillation, as BigNAS and
Once-for-All do). Training the two ends bounds every architecture in between; distilling from
the largest gives the small ones a smoother target than the labels.

The networks' losses are averaged, not summed, before the one optimizer step: summed, a step
of four networks moves the shared weights four times as far as the trainer's learning rate
means, and the supernet barely trained (ResNet-20 on the digits at 16 px, 3 epochs: the largest
network reached 25 % validation accuracy summed, 43 % averaged; ``docs/BENCHMARKS.md``).

Measured (``docs/BENCHMARKS.md``, "One-shot quality"), the sandwich ranked architectures
*backwards* at the epochs this project could afford: the smallest network, trained in every
step, pulls the shared kernels its way, and the architectures nearest it estimate best (Kendall
tau -0.74 against stand-alone accuracy). Training the largest network alone, and estimating its
masked sub-networks with batch norm re-estimated, ranked them the right way round (tau +0.34;
the stand-alone seeds agree with each other at +0.67), so it is the default
(:func:`largest_only`); the sandwich stays a recipe for longer supernet trainings, where the
literature found it pays.

The run is :class:`~search.training.trainer.TrainingRun` with another step and network, so it
has the same schedule, checkpoints and exact resume; the subnet draws come from their own
generator, saved in the checkpoint. Its validation accuracy is the largest network's, with its
batch-norm statistics re-estimated (:func:`search.oneshot.estimates.recalibrate_batch_norm`):
running statistics averaged over differently sized networks fit none of them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hetconv.errors import ConfigError
from hetconv.supernet import set_parts, to_supernet
from search.oneshot.estimates import CALIBRATION_BATCHES, calibrate, calibration_images
from search.training.data import DataSplits
from search.training.trainer import TrainConfig, TrainingRun, correct_images
from space import Architecture, SearchSpace


@dataclass(frozen=True)
class SandwichRecipe:
    """What each supernet step trains. ``pool``: the part vectors the random subnets are drawn
    from (within the search's budgets); ``distill``: the smaller networks learn the largest's
    outputs rather than the labels."""

    pool: tuple[tuple[int, ...], ...]
    random_subnets: int = 2
    distill: bool = True
    calibration_batches: int = CALIBRATION_BATCHES
    smallest: bool = True  # False with no random subnets: the largest network alone

    def __post_init__(self) -> None:
        if self.random_subnets < 0:
            raise ConfigError(f"random_subnets must be >= 0, got {self.random_subnets}")
        if self.random_subnets and not self.pool:
            raise ConfigError("the sandwich rule needs architectures within the budgets to "
                              "draw its random subnets from, and random draws find none; raise "
                              "the budget, or pass --sandwich 0 or --supernet-recipe largest")

    def settings(self) -> dict[str, Any]:
        """The recipe as the checkpoint records it (the pool by its size and a digest)."""
        digest = zlib.crc32(repr(self.pool).encode())
        return {"random_subnets": self.random_subnets, "distill": self.distill,
                "smallest": self.smallest,
                "calibration_batches": self.calibration_batches,
                "pool": f"{len(self.pool)}:{digest:08x}"}


def supernet_architecture(space: SearchSpace) -> Architecture:
    """The network a supernet is built from: part 1 everywhere (the dense kernels)."""
    return Architecture(space.backbone, space.uniform_parts(1), space.input_size,
                        space.num_classes, space.in_channels)


def smallest_parts(space: SearchSpace) -> tuple[int, ...]:
    return tuple(int(p) for p in space.max_parts)


def distillation_loss(student: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's probabilities (soft labels)."""
    return -(teacher_probs * F.log_softmax(student.float(), dim=1)).sum(dim=1).mean()


class SupernetRun(TrainingRun):
    """A training run of the whole supernet with the sandwich rule."""

    def __init__(self, arch: Architecture, data: DataSplits, config: TrainConfig,
                 device: torch.device, recipe: SandwichRecipe) -> None:
        self.recipe = recipe
        self.space = arch.space
        super().__init__(arch, data, config, device)
        self.subnet_generator = torch.Generator().manual_seed(config.seed + 7919)
        self.calibration = calibration_images(data, recipe.calibration_batches,
                                              config.batch_size, config.seed)

    def build_model(self) -> nn.Module:
        return to_supernet(super().build_model())

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), **self.recipe.settings()}

    def step_architectures(self) -> list[tuple[int, ...]]:
        """The smaller networks of one step: the smallest, then the random draws."""
        chosen = [smallest_parts(self.space)] if self.recipe.smallest else []
        if self.recipe.random_subnets:
            picks = torch.randint(len(self.recipe.pool), (self.recipe.random_subnets,),
                                  generator=self.subnet_generator)
            chosen += [self.recipe.pool[int(i)] for i in picks]
        return chosen

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        smaller = self.step_architectures()
        share = 1.0 / (1 + len(smaller))  # the losses are averaged (module docstring)
        set_parts(self.model, self.space.uniform_parts(1))
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            logits = self.model(x)
            loss = self.criterion(logits, y)
        self.scaled(loss * share).backward()
        teacher = logits.detach().float().softmax(dim=1)
        for parts in smaller:
            set_parts(self.model, parts)
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                out = self.model(x)
                sub_loss = (distillation_loss(out, teacher) if self.recipe.distill
                            else self.criterion(out, y))
            self.scaled(sub_loss * share).backward()
        return loss.detach()

    def correct(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Which images the largest network classifies right, its batch-norm statistics
        re-estimated first."""
        calibrate(self.model, self.space.uniform_parts(1), self.calibration,
                  self.config.batch_size)
        return correct_images(self.model, images, labels, self.device)

    def state(self) -> dict[str, Any]:
        state = super().state()
        state["rng"]["subnets"] = self.subnet_generator.get_state()
        return state

    def restore(self, saved: Mapping[str, Any]) -> None:
        super().restore(saved)
        self.subnet_generator.set_state(saved["rng"]["subnets"])


Screen = Callable[[np.ndarray], np.ndarray]  # part vectors (rows) -> within the budgets


def within_budgets(space: SearchSpace, fits: Screen, count: int, seed: int,
                   draws: int = 200_000) -> tuple[tuple[int, ...], ...]:
    """Up to ``count`` distinct part vectors drawn uniformly per layer and kept where
    ``fits(parts_array) -> bool mask`` says they are within the budgets."""
    rng = np.random.default_rng(seed)
    candidates = space.random_parts(rng, draws)
    kept = np.unique(candidates[fits(candidates)], axis=0)
    rng.shuffle(kept)
    return tuple(tuple(int(p) for p in row) for row in kept[:count])


def largest_only() -> SandwichRecipe:
    """The recipe that trains the largest network alone: the dense network, whose masked
    sub-networks are then estimated (the one-shot default; ``docs/ONESHOT.md`` says why)."""
    return SandwichRecipe((), random_subnets=0, smallest=False)


def recipe_for(space: SearchSpace, fits: Screen, random_subnets: int, seed: int,
               pool_size: int = 4096, **options: Any) -> SandwichRecipe:
    """A sandwich recipe whose random subnets come from the search's budgets."""
    pool = within_budgets(space, fits, pool_size, seed) if random_subnets else ()
    return SandwichRecipe(pool, random_subnets, **options)

