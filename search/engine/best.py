"""Pick a study's best architecture and write it (and its trained weights) to files."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import optuna
import torch

from hetconv.errors import ConfigError
from search.store import records
from search.store.database import sqlite_file
from search.store.files import Writer, check_target, write_together
from search.store.records import ArchitectureRuns, TrialRecord
from search.store.storage import open_existing
from search.store.studies import open_study
from search.store.uncertainty import estimate, wilson_interval
from search.store.verdict import search_verdict
from search.training.checkpoint import load_weights
from search.training.exported import check_normalization
from space import Architecture, Normalization


def _best_in(study: optuna.Study, every: list[TrialRecord] | None = None) -> ArchitectureRuns:
    """The best architecture with all its runs: by the confirmation runs' mean validation
    accuracy where the study has confirmed architectures (the confirmation stage exists to make
    this choice), else by the single runs' validation accuracy. ``every``: the study's records,
    when read already."""
    every = records.read_records(study) if every is None else every
    ranked = records.ranked(every)
    if not ranked:
        raise ConfigError(f"study {study.study_name!r} has no trial that finished within budget "
                          f"yet; run or resume the search first")
    groups = records.runs_by_architecture(every)
    if groups[0].confirmed:
        return groups[0]
    return next(g for g in groups if g.first.parts == ranked[0].parts)


def _result(study: optuna.Study, runs: ArchitectureRuns, shipped: TrialRecord,
            every: list[TrialRecord]) -> dict:
    """What the exported file says about the result, with its noise: the 95 % Wilson interval
    of a single run, or the mean, spread and seeds of a confirmed architecture."""
    attrs = study.user_attrs
    val_images, test_images = (attrs.get(records.STUDY_VAL_IMAGES),
                               attrs.get(records.STUDY_TEST_IMAGES))
    result: dict = {"study": study.study_name, "trial": shipped.number,
                    "dataset": attrs.get(records.STUDY_DATASET),
                    "data_dir": attrs.get(records.STUDY_DATA_DIR),
                    "train_images": attrs.get(records.STUDY_TRAIN_IMAGES),
                    "accuracy": shipped.accuracy, "test_accuracy": shipped.test_accuracy,
                    "paper_macs": shipped.paper_macs, "executed_macs": shipped.executed_macs,
                    "params": shipped.params, "val_images": val_images,
                    "test_images": test_images,
                    "verdict": search_verdict(every, test_images)}
    for key, value, images in (("accuracy", shipped.accuracy, val_images),
                               ("test_accuracy", shipped.test_accuracy, test_images)):
        if value is not None and images:
            result[f"{key}_interval"] = list(wilson_interval(value, images))
    if runs.confirmed:
        val, test = estimate(runs.val_accuracies, val_images), (
            estimate(runs.test_accuracies, test_images) if runs.test_accuracies else None)
        result["confirmed"] = {
            "runs": len(runs.runs), "trials": [r.number for r in runs.runs],
            "replicates": [r.replicate for r in runs.runs],
            "accuracy_mean": val.mean, "accuracy_std": val.spread,
            "test_accuracy_mean": None if test is None else test.mean,
            "test_accuracy_std": None if test is None else test.spread}
    return result


def _exported_architecture(study: optuna.Study, record: TrialRecord) -> Architecture:
    """A trial's architecture with the input statistics and class names of the study's data:
    everything a user of the exported network needs."""
    attrs = study.user_attrs
    if record.architecture is None:
        raise ConfigError(f"trial {record.number} of study {study.study_name!r} records no "
                          f"architecture; it was not written by a HetNAS search")
    arch = Architecture.from_json(record.architecture)
    mean, std = attrs.get(records.STUDY_INPUT_MEAN), attrs.get(records.STUDY_INPUT_STD)
    if mean is None or std is None:
        raise ConfigError(f"study {study.study_name!r} does not record its input statistics "
                          f"(it was made by an older HetNAS); run the search again")
    return arch.trained_on(Normalization(tuple(mean), tuple(std)),
                           attrs.get(records.STUDY_CLASS_NAMES))


def export_best(storage_url: str, study_name: str, out: Path,
                weights: Path | None = None) -> TrialRecord:
    """Write the best architecture as JSON (with its input statistics, class names and result)
    and optionally its weights (which normalise their input too)."""
    database = {sqlite_file(storage_url): "the study database"}
    check_target(out, "--out", database)
    if weights is not None:
        check_target(weights, "--weights", database)
        if weights.resolve() == out.resolve():
            raise ConfigError(f"--out and --weights are both {out}; give the weights their own "
                              f"file")
    study = open_study(open_existing(storage_url), study_name)
    every = records.read_records(study)
    runs = _best_in(study, every)
    best = runs.best_run  # the weights shipped: the best of its runs on validation
    arch = _exported_architecture(study, best)
    model = None
    if weights is not None:
        if not best.checkpoint or not Path(best.checkpoint).exists():
            raise ConfigError(f"trial {best.number}'s checkpoint {best.checkpoint} is not on "
                              f"this machine; run the export where --artifacts-dir is readable")
        model = load_weights(Path(best.checkpoint), arch)
        check_normalization(model, arch, f"trial {best.number}'s checkpoint")
    document = arch.to_dict()
    document["result"] = _result(study, runs, best, every)
    writes: dict[Path, Writer] = {
        out: lambda path: path.write_text(json.dumps(document, indent=2) + "\n")}
    if model is not None and weights is not None:
        writes[weights] = functools.partial(torch.save, model.state_dict())
    write_together(writes)  # a failure keeps the previous pair, never a new JSON by old weights
    return best
