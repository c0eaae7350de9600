"""Training the supernet: the largest network alone, or with smaller networks each step, in
place distilled from it.

Which smaller networks a step trains is the recipe's ``draw`` (``docs/ONESHOT.md``):

* ``sandwich``, the sandwich rule: the smallest network of the space and ``random_subnets`` drawn
  uniformly from a pool within and near the budgets;
* ``strata``: one network from each of ``random_subnets`` cost strata of that pool (the pool
  sorted by paper MACs, cut into equal shares), so every step trains the range of costs the
  search will score, not the smallest network it never will;
* ``fair``: strictly fair over each layer's parts (FairNAS): a step trains as many networks as
  a layer has parts, each layer taking each of its parts once, in a random order.

The pool is drawn by projecting uniformly random part vectors onto budgets spread over the top
quarter of the search's (:func:`near_budgets`): a random vector seldom fits a tight budget as
drawn (not one in 20,000 at ResNet-20's uniform-P16 MACs), and the architectures a search
scores lie just under its budget.

Each smaller network learns, on the same batch, the largest network's softened outputs
(in-place distillation, as BigNAS and Once-for-All do) unless ``distill`` is off.

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hetconv.errors import ConfigError
from hetconv.supernet import set_parts, to_supernet
from search.engine.budgets import Budgets
from search.engine.settings import SUPERNET_RECIPES
from search.oneshot.estimates import CALIBRATION_IMAGES, calibrate
from search.training.data import DataSplits, draw_calibration
from search.training.trainer import TrainConfig, TrainingRun, correct_images
from space import Architecture, SearchSpace

DRAWS = SUPERNET_RECIPES[1:]  # how a step picks its smaller networks (module docstring)
NEAR_BUDGET = 0.75  # the pool's costs span this share of the budgets up to them


@dataclass(frozen=True)
class SandwichRecipe:
    """What each supernet step trains. ``pool``: part vectors within and near the search's
    budgets, sorted by paper MACs (``pool`` and ``strata`` draw from it); ``distill``: the
    smaller networks learn the largest's outputs rather than the labels."""

    pool: tuple[tuple[int, ...], ...]
    random_subnets: int = 2
    distill: bool = True
    calibration_images: int = CALIBRATION_IMAGES
    smallest: bool = True  # the space's smallest network in every step (the sandwich rule)
    draw: str = "sandwich"

    def __post_init__(self) -> None:
        if self.random_subnets < 0:
            raise ConfigError(f"random_subnets must be >= 0, got {self.random_subnets}")
        if self.draw not in DRAWS:
            raise ConfigError(f"draw must be one of {', '.join(DRAWS)}, not {self.draw!r}")
        if self.draw != "fair" and self.random_subnets and not self.pool:
            raise ConfigError("the sandwich rule needs architectures within the budgets to "
                              "draw its random subnets from, and projecting random draws onto "
                              "them finds none; raise "
                              "the budget, or pass --sandwich 0 or --supernet-recipe largest")

    def settings(self) -> dict[str, Any]:
        """The recipe as the checkpoint records it (the pool by its size and a digest)."""
        digest = zlib.crc32(repr(self.pool).encode())
        return {"random_subnets": self.random_subnets, "distill": self.distill,
                "smallest": self.smallest, "draw": self.draw,
                "calibration_images": self.calibration_images,
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
        self.calibration = draw_calibration(data, recipe.calibration_images, config.seed)

    def build_model(self) -> nn.Module:
        return to_supernet(super().build_model())

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), **self.recipe.settings()}

    def step_architectures(self) -> list[tuple[int, ...]]:
        """The smaller networks of one step."""
        chosen = [smallest_parts(self.space)] if self.recipe.smallest else []
        if self.recipe.draw == "fair":
            return chosen + fair_draw(self.space, self.subnet_generator)
        if self.recipe.random_subnets:
            count, strata = len(self.recipe.pool), self.recipe.random_subnets
            if self.recipe.draw == "strata":  # stratum i holds pool[i*count//k : (i+1)*count//k]
                bounds = [i * count // strata for i in range(strata + 1)]
                picks = [lo + int(torch.randint(max(1, hi - lo), (1,),
                                                generator=self.subnet_generator))
                         for lo, hi in zip(bounds, bounds[1:], strict=False)]
            else:
                picks = [int(i) for i in torch.randint(count, (strata,),
                                                       generator=self.subnet_generator)]
            chosen += [self.recipe.pool[min(i, count - 1)] for i in picks]
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


def fair_draw(space: SearchSpace, generator: torch.Generator) -> list[tuple[int, ...]]:
    """One step of strictly fair sampling: as many networks as the layer with the most parts
    has, every layer taking each of its parts once in a random order (a layer with fewer
    parts starts its order again)."""
    count = max(len(layer.allowed_parts) for layer in space.layers)
    columns = []
    for layer in space.layers:
        allowed = layer.allowed_parts
        order = torch.randperm(count, generator=generator)
        columns.append([allowed[int(i) % len(allowed)] for i in order])
    return [tuple(int(column[k]) for column in columns) for k in range(count)]


def near_budgets(space: SearchSpace, budgets: Budgets, count: int, seed: int,
                 draws: int = 2048) -> tuple[tuple[int, ...], ...]:
    """Up to ``count`` distinct architectures within ``budgets`` and near them, sorted by paper
    MACs: uniformly random part vectors, each projected (:meth:`Budgets.project`) onto the
    budgets scaled by a share drawn uniformly from [:data:`NEAR_BUDGET`, 1]."""
    rng = np.random.default_rng(seed)
    shares = rng.uniform(NEAR_BUDGET, 1.0, draws)
    found: set[tuple[int, ...]] = set()
    for row, share in zip(space.random_parts(rng, draws), shares, strict=True):
        parts = budgets.scaled(float(share)).project(space, tuple(int(p) for p in row))
        if parts is not None:
            found.add(parts)
    kept = sorted(found)
    rng.shuffle(kept)
    pool = sorted(kept[:count], key=lambda p: (int(space.cost.paper_macs(np.array(p))), p))
    return tuple(pool)


def largest_only() -> SandwichRecipe:
    """The recipe that trains the largest network alone: the dense network, whose masked
    sub-networks are then estimated (the one-shot default; ``docs/ONESHOT.md`` says why)."""
    return SandwichRecipe((), random_subnets=0, smallest=False)


def recipe_for(space: SearchSpace, budgets: Budgets, draw: str, random_subnets: int, seed: int,
               pool_size: int = 1024, **options: Any) -> SandwichRecipe:
    """A recipe whose smaller networks come from within and near the search's budgets:
    ``sandwich`` trains the smallest network too, ``strata`` and ``fair`` do not."""
    pool = near_budgets(space, budgets, pool_size, seed) if draw != "fair" else ()
    options.setdefault("smallest", draw == "sandwich")
    return SandwichRecipe(pool, random_subnets if draw != "fair" else 0, draw=draw, **options)
