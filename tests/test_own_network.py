"""A search of a network HetNAS did not write (``--model``), started from its trained dense
weights (``--init-from``): real Ray, real storage, real training on the bundled digits."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from hetconv import HetConv2d
from search.driver import run_search
from search.engine.best import export_best
from search.engine.settings import OneShotSettings, SearchSettings
from search.oneshot.sandwich import SupernetRun, largest_only, supernet_architecture
from search.oneshot.strategy import SupernetRecord
from search.store import records
from search.store.storage import open_storage
from search.training.checkpoint import read_checkpoint
from search.training.data import load_dataset
from search.training.start import dense_start
from search.training.trainer import TrainConfig, train
from space import Architecture, SearchSpace
from tests.foreign_networks import SEARCHABLE

FACTORY = "tests.foreign_networks:foreign"
INPUT_SIZE, SEED = 8, 3


@pytest.fixture(scope="module")
def dense_weights(tmp_path_factory) -> Path:
    """The user's network trained dense on the digits, saved as its own state dict."""
    data = load_dataset("digits", INPUT_SIZE, seed=SEED)
    arch = Architecture(FACTORY, (1,) * len(SEARCHABLE), INPUT_SIZE, 10, 1)
    folder = tmp_path_factory.mktemp("dense")
    train(arch, data, TrainConfig(epochs=3, batch_size=64, seed=0), checkpoint_dir=folder)
    state = read_checkpoint(folder)["model"]
    trained = {key.removeprefix("network."): value for key, value in state.items()
               if key.startswith("network.")}
    path = folder / "dense.pt"
    torch.save(trained, path)
    return path


def _settings(storage: str, artifacts: Path, dense: Path, **overrides) -> SearchSettings:
    space = SearchSpace(FACTORY, INPUT_SIZE, 10, 1)
    budget = Architecture.uniform(FACTORY, 4, INPUT_SIZE, 10, 1).macs
    assert space.min_macs < budget < space.max_macs
    options = dict(budget=budget, backbone=FACTORY, input_size=INPUT_SIZE, trials=2, epochs=1,
                   batch_size=64, sampler="random", storage=storage, study="own",
                   artifacts_dir=str(artifacts), max_concurrent=2, seed=SEED, confirm_top=0,
                   baselines="near", init_from=str(dense))
    options.update(overrides)
    return SearchSettings(**options)


def test_search_of_own_network_from_dense_weights(local_ray, tmp_path, dense_weights) -> None:
    settings = _settings(f"sqlite:///{tmp_path / 'own.db'}", tmp_path, dense_weights)
    out = io.StringIO()
    outcome = run_search(settings, out=out)
    line = re.search(rf"every run starts from the dense weights {re.escape(str(dense_weights))}, "
                     r"which score (\d+\.\d)% on (\d+) validation images", out.getvalue())
    assert line and float(line[1]) > 50  # trained by HetNAS, so fed as it was trained
    complete = [r for r in outcome.records if r.status == records.COMPLETE]
    assert len(complete) >= settings.trials + 1  # searched ones and the near baselines
    study = optuna.load_study(study_name="own", storage=open_storage(settings.storage))
    assert study.user_attrs[records.STUDY_BACKBONE] == FACTORY
    assert study.user_attrs[records.STUDY_INIT_FROM]["path"] == str(dense_weights)
    # Each trial started from the dense weights: training it here from them, with the trial's
    # seed on one thread, ends in exactly the trial's weights; from scratch it does not.
    data = load_dataset("digits", INPUT_SIZE, seed=SEED)
    record = next(r for r in complete if any(p > 1 for p in r.parts))
    arch = Architecture.from_json(record.architecture)
    config = TrainConfig(epochs=1, batch_size=64,
                         seed=study.trials[record.number].user_attrs[records.SEED])
    saved = read_checkpoint(record.checkpoint)["model"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trial's worker (--cpus-per-trial 1)
    try:
        again = train(arch, data, config, checkpoint_dir=tmp_path / "again",
                      initial_weights=dense_start(arch, data, str(dense_weights)))
        scratch = train(arch, data, config, checkpoint_dir=tmp_path / "scratch")
    finally:
        torch.set_num_threads(threads)
    assert again.val_accuracy == record.accuracy
    assert all(torch.equal(value, saved[key])
               for key, value in read_checkpoint(tmp_path / "again")["model"].items())
    assert scratch.val_accuracy != record.accuracy or not torch.equal(
        read_checkpoint(tmp_path / "scratch")["model"]["network.head.weight"],
        saved["network.head.weight"])
    # The export names the factory and rebuilds the user's network with the searched parts.
    best = tmp_path / "best.json"
    shipped = export_best(settings.storage, "own", best, tmp_path / "best.pt")
    document = json.loads(best.read_text())
    assert document["backbone"] == FACTORY and tuple(document["parts"]) == shipped.parts
    model = Architecture.from_json(best.read_text()).build()
    model.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))
    parts = [m.part for m in model.modules() if isinstance(m, HetConv2d)]
    assert parts == list(shipped.parts)
    # A resume with other dense weights is refused: its trials would not be comparable.
    other = tmp_path / "other.pt"
    state = torch.load(dense_weights, weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, other)
    with pytest.raises(ValueError, match="holds other weights"):
        run_search(dataclasses.replace(settings, resume=True, init_from=str(other)))


def test_oneshot_search_of_own_network_starts_its_supernet_from_dense_weights(
        local_ray, postgres_url, study_name, tmp_path, dense_weights) -> None:
    settings = _settings(postgres_url, tmp_path, dense_weights, study=study_name,
                         strategy="oneshot",
                         oneshot=OneShotSettings(supernet_epochs=1, candidates=12, finalists=1))
    outcome = run_search(settings, out=io.StringIO())
    study = optuna.load_study(study_name=study_name, storage=open_storage(postgres_url))
    # Only 7 architectures of this network fit the budget: each is estimated once, and the
    # estimates stop there rather than scoring one twice.
    estimated = [r.parts for r in outcome.records if r.estimate and r.status == records.ESTIMATED]
    space = SearchSpace(FACTORY, INPUT_SIZE, 10, 1)
    every = space.random_parts(np.random.default_rng(0), 5_000)
    within = {tuple(int(p) for p in row) for row in every[space.fits(every, settings.budget)]}
    assert len(estimated) == len(set(estimated)) == min(12, len(within))
    assert any(r.status == records.COMPLETE and not r.estimate for r in outcome.records)
    supernet = SupernetRecord.of(study)
    assert supernet is not None
    # The supernet trial started from the dense weights: the same training here, from them,
    # on one thread, ends in exactly its checkpoint.
    data = load_dataset("digits", INPUT_SIZE, seed=SEED)
    arch = supernet_architecture(settings.space)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(arch, data, TrainConfig(epochs=1, batch_size=64, seed=SEED),
              checkpoint_dir=tmp_path / "again",
              initial_weights=dense_start(arch, data, str(dense_weights)),
              run_factory=functools.partial(SupernetRun, recipe=largest_only()))
    finally:
        torch.set_num_threads(threads)
    saved = read_checkpoint(supernet.checkpoint)["model"]
    again = read_checkpoint(tmp_path / "again")["model"]
    assert saved.keys() == again.keys()
    assert all(torch.equal(value, saved[key]) for key, value in again.items())
