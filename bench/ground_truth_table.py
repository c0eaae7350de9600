"""The ground-truth table: architectures trained with several seeds, as a file and as values.

``bench/ground_truth.py`` builds the table through HetNAS's own search machinery and writes it
here; every later benchmark that judges a search, a supernet or a cheap predictor loads it with
:func:`load` and measures against it. One JSON file holds everything: how it was made (command,
commit, date, setting), the cost bands, and per architecture its costs, the cheap predictors
scored on its initialised network, and per training seed the validation accuracy after every
epoch, the final validation and test accuracy with their image counts, the training time, and
which validation and test images the network got right (packed bits,
``search.store.paired.pack_correct``), so two networks are compared on the same images.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from search.store.paired import unpack_correct

FORMAT = "hetnas-ground-truth/1"


@dataclass(frozen=True)
class Run:
    """One training of one architecture with one seed."""

    replicate: int  # 0, 1, 2, ...: the seed's index (the training seed follows from it)
    seed: int  # the training seed (weights, batch order, augmentation)
    val_curve: tuple[float, ...]  # validation accuracy after each epoch
    val_accuracy: float
    test_accuracy: float
    seconds: float  # training and evaluation time of the run
    val_correct: str  # packed bits: which validation images it got right
    test_correct: str

    def test_mask(self, images: int) -> np.ndarray:
        return unpack_correct(self.test_correct, images)

    def val_mask(self, images: int) -> np.ndarray:
        return unpack_correct(self.val_correct, images)


@dataclass(frozen=True)
class Entry:
    """One architecture of the pool, its costs, cheap predictors and runs."""

    parts: tuple[int, ...]
    group: str  # "uniform", a band's name (drawn at random in it), or "structured"
    label: str  # "uniform P4", "aggressive 3", "K×K early (moderate)", ...
    paper_macs: int
    executed_macs: int
    params: int  # paper convention
    proxies: dict[str, float]  # cheap predictors on the initialised network
    runs: tuple[Run, ...]

    @property
    def mean_val(self) -> float:
        return statistics.fmean(r.val_accuracy for r in self.runs)

    @property
    def mean_test(self) -> float:
        return statistics.fmean(r.test_accuracy for r in self.runs)

    @property
    def uniform_part(self) -> int | None:
        """P of a uniform network (the paper's), else None."""
        return max(self.parts) if self.group == "uniform" else None


@dataclass(frozen=True)
class Band:
    """A range of paper MACs the pool samples and the reports rank within."""

    name: str
    low: float
    high: float
    rule: str  # how the range was set, in words

    def holds(self, macs: float) -> bool:
        return self.low <= macs <= self.high


@dataclass(frozen=True)
class Setting:
    """What every run of the table shares."""

    backbone: str
    dataset: str
    input_size: int
    train_images: int  # images actually trained on
    val_images: int
    test_images: int
    epochs: int
    batch_size: int
    seeds: int  # runs per architecture
    data_seed: int  # the validation split and the training subset


@dataclass(frozen=True)
class GroundTruth:
    """The whole table."""

    made: dict[str, object]  # command, commit, date, machine, cost
    setting: Setting
    bands: tuple[Band, ...]
    entries: tuple[Entry, ...]

    def band(self, name: str) -> Band:
        return next(b for b in self.bands if b.name == name)

    def in_band(self, name: str) -> list[Entry]:
        """The band's own architectures: drawn in it or built for it (not the uniform ones)."""
        band = self.band(name)
        return [e for e in self.entries if e.group != "uniform" and band.holds(e.paper_macs)]

    def uniform(self) -> list[Entry]:
        return [e for e in self.entries if e.group == "uniform"]

    def complete(self) -> list[Entry]:
        """Entries with every seed's run."""
        return self.with_runs(self.setting.seeds)

    def with_runs(self, at_least: int) -> list[Entry]:
        """Entries with ``at_least`` runs (a table still being built has fewer for some)."""
        return [e for e in self.entries if len(e.runs) >= at_least]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "made": self.made,
                           "setting": asdict(self.setting),
                           "bands": [asdict(b) for b in self.bands],
                           "architectures": [asdict(e) for e in self.entries]},
                          separators=(",", ":")) + "\n"


def load(path: str | Path) -> GroundTruth:
    """Read a table :func:`GroundTruth.to_json` wrote."""
    document = json.loads(Path(path).read_text())
    if document.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} table (format {document.get('format')!r})")
    entries = tuple(
        Entry(parts=tuple(e["parts"]), group=e["group"], label=e["label"],
              paper_macs=e["paper_macs"], executed_macs=e["executed_macs"], params=e["params"],
              proxies=dict(e["proxies"]),
              runs=tuple(Run(**{**r, "val_curve": tuple(r["val_curve"])}) for r in e["runs"]))
        for e in document["architectures"])
    return GroundTruth(document["made"], Setting(**document["setting"]),
                       tuple(Band(**b) for b in document["bands"]), entries)
