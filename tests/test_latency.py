"""The latency table: real measurements, stored in real SQLite and PostgreSQL databases.

Kept fast by profiling ResNet-20 at 8x8 inputs, batch 1, eager runtime, on one CPU thread (a
single thread also keeps the figures sane while other work shares the cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
import torch

from hetconv.errors import ConfigError
from search.profiling.profiler import (
    deploy_for,
    latency_model,
    layer_shapes,
    layer_weight_mb,
    measure_shape,
    profile,
)
from search.store.latency_table import (
    LAYER_TABLE,
    NETWORK_TABLE,
    LatencyStore,
    LayerShape,
    NetworkKey,
)
from search.store.storage import open_existing, open_storage
from space import LatencyModel, LatencySpec, SearchSpace
from space.latency import fit_network_terms

REPO = Path(__file__).resolve().parents[1]
ARGS = ("--backbone", "resnet20", "--input-size", "8", "--batch", "1", "--runtime", "eager")
SPACE = SearchSpace("resnet20", 8)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Measure on one thread, as the CLI tests do; restore the session's count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a new PostgreSQL database dropped afterwards (the
    shared ``test`` database may hold other runs' latency rows for this very machine)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("fresh_postgres_url")


def _profile_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "search.profile", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _rows(url: str, table: str) -> list[dict]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(row) for row in connection.execute(
                sqlalchemy.text(f"SELECT * FROM {table} ORDER BY id")).mappings()]
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _distinct_keys(space: SearchSpace) -> int:
    return len({(shape, part) for shape, layer in zip(layer_shapes(space), space.layers,
                                                      strict=True)
                for part in layer.allowed_parts})


def _fake_spec(batch: int = 1) -> LatencySpec:
    return LatencySpec(device=f"cpu: test machine {uuid.uuid4().hex[:8]}", batch=batch,
                       runtime="eager")


# -- the spec and the model (no database) ------------------------------------------------------


def test_spec_describes_this_machine_and_round_trips_through_json() -> None:
    spec = LatencySpec.current("cpu", batch=4, runtime="eager")
    assert spec.device.startswith("cpu: ") and f"{torch.get_num_threads()} thread" in spec.device
    assert (spec.batch, spec.dtype, spec.runtime, spec.torch) == (4, "float32", "eager",
                                                                  torch.__version__)
    assert LatencySpec.from_json(spec.to_json()) == spec
    assert set(spec.to_json()) == {"device", "batch", "dtype", "runtime", "torch"}


@pytest.mark.parametrize(("call", "fragment"), [
    (lambda: LatencySpec.current("cpu", batch=0), "batch must be a positive integer"),
    (lambda: LatencySpec.current("cpu", batch=True), "batch must be a positive integer"),
    (lambda: LatencySpec.current("tpu"), "use device cpu or device cuda"),
    (lambda: LatencySpec.current("cpu", runtime="jit"), "use runtime compiled or runtime eager"),
    (lambda: LatencySpec.from_json({"device": "cpu: x"}), "exactly the keys"),
    (lambda: LatencySpec(device="cpu: x", batch=1, dtype="float16"), "float32"),
])
def test_spec_rejects_bad_input_with_the_fix(call, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("-", r"\-")):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_spec_rejects_cuda_without_a_gpu() -> None:
    with pytest.raises(ConfigError, match="use device cpu"):
        LatencySpec.current("cuda")


def test_model_predicts_remainder_plus_layer_terms_vectorised() -> None:
    table = np.array([[4.0, 2.0, 1.0], [3.0, 2.5, np.nan]])
    model = LatencyModel(table, (1, 2, 4), remainder_ms=0.5, backbone="toy")
    parts = np.array([[[1, 1], [4, 2]], [[2, 1], [4, 1]]])  # shape (2, 2, L)
    np.testing.assert_allclose(model.predict_ms(parts), [[7.5, 4.0], [5.5, 4.5]])
    assert model.min_ms == pytest.approx(0.5 + 1.0 + 2.5)
    assert model.max_ms == pytest.approx(0.5 + 4.0 + 3.0)
    np.testing.assert_array_equal(model.fastest_parts(), [4, 2])
    with pytest.raises(ConfigError, match="layer 1: no latency for part 4"):
        model.predict_ms(np.array([1, 4]))
    with pytest.raises(ConfigError, match="2 searchable layers"):
        model.predict_ms(np.array([1, 1, 1]))
    model.check_budget(4.0)
    with pytest.raises(ConfigError, match=r"3\.9 ms is below the fastest toy.*4 ms.*7\.5"):
        model.check_budget(3.9)
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ConfigError, match="positive number of milliseconds"):
            model.check_budget(bad)


# -- the store ---------------------------------------------------------------------------------


def test_concurrent_inserts_of_the_same_key_do_not_fail(fresh_url: str) -> None:
    spec = _fake_spec()
    shape = LayerShape(16, 16, 3, 1, 1, 8, 8)
    stores = [LatencyStore(fresh_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def insert(store: LatencyStore, ms: float) -> None:
        try:
            barrier.wait()
            store.add_layers(spec, {(shape, 1): (ms, 10), (shape, 2): (ms, 10)})
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=insert, args=(store, 1.0 + i))
               for i, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = stores[0].layer_rows(spec, [(shape, 1), (shape, 2), (shape, 4)])
    assert set(rows) == {(shape, 1), (shape, 2)}
    first = rows[shape, 1].milliseconds
    assert first in {1.0, 2.0, 3.0, 4.0}  # one writer won; the others left it alone
    stores[0].add_layers(spec, {(shape, 1): (9.0, 10)})
    assert stores[1].layer_rows(spec, [(shape, 1)])[shape, 1].milliseconds == first
    stores[0].add_layers(spec, {(shape, 1): (9.0, 10)}, replace=True)
    assert stores[1].layer_rows(spec, [(shape, 1)])[shape, 1].milliseconds == 9.0
    for store in stores:
        store.close()
    assert len(_rows(fresh_url, LAYER_TABLE)) == 2


def test_tables_are_created_beside_a_study_without_harming_it(fresh_url: str) -> None:
    study = optuna.create_study(storage=open_storage(fresh_url), study_name="existing")
    study.add_trial(optuna.trial.create_trial(params={"x": 1.0}, value=0.5, distributions={
        "x": optuna.distributions.FloatDistribution(0, 2)}))
    study.set_user_attr("kept", True)
    before = _tables(fresh_url)
    LatencyStore(fresh_url).close()
    LatencyStore(fresh_url).close()  # a second open finds the tables and changes nothing
    assert _tables(fresh_url) == before | {LAYER_TABLE, NETWORK_TABLE}
    reloaded = optuna.load_study(study_name="existing", storage=open_existing(fresh_url))
    assert [(t.params, t.value) for t in reloaded.trials] == [({"x": 1.0}, 0.5)]
    assert reloaded.user_attrs == {"kept": True}


def test_latency_tables_alone_do_not_create_optuna_tables(fresh_url: str) -> None:
    LatencyStore(fresh_url).close()
    assert _tables(fresh_url) == {LAYER_TABLE, NETWORK_TABLE}


# -- measurement -------------------------------------------------------------------------------


def test_profile_cli_measures_once_reuses_then_force_remeasures(fresh_url: str,
                                                               tmp_path: Path) -> None:
    optuna.create_study(storage=open_storage(fresh_url), study_name="existing")
    first = _profile_cli(*ARGS, "--storage", fresh_url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "latency 1/5: resnet20" in first.stdout and "measured" in first.stdout
    layers, networks = _rows(fresh_url, LAYER_TABLE), _rows(fresh_url, NETWORK_TABLE)
    assert len(layers) == _distinct_keys(SPACE)
    assert len(networks) == 1
    assert all(row["milliseconds"] > 0 and row["samples"] >= 5 for row in layers)
    assert "uniform P1 " in first.stdout and "uniform P16" in first.stdout

    again = _profile_cli(*ARGS, "--storage", fresh_url, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "latency " not in again.stdout.split("layer name")[0]  # no progress lines
    assert "measured" not in again.stdout and "cached" in again.stdout
    assert _rows(fresh_url, LAYER_TABLE) == layers  # same rows, same timestamps
    assert _rows(fresh_url, NETWORK_TABLE) == networks

    forced = _profile_cli(*ARGS, "--storage", fresh_url, "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "cached" not in forced.stdout
    remeasured = _rows(fresh_url, LAYER_TABLE)
    assert [row["id"] for row in remeasured] == [row["id"] for row in layers]
    assert all(new["measured_at"] > old["measured_at"]
               for new, old in zip(remeasured, layers, strict=True))
    assert _rows(fresh_url, NETWORK_TABLE)[0]["measured_at"] > networks[0]["measured_at"]
    assert optuna.get_all_study_names(open_existing(fresh_url)) == ["existing"]


def test_latency_model_reads_the_table_silently_and_predicts_sums(fresh_url: str,
                                                                   one_thread: None) -> None:
    spec = LatencySpec.current("cpu", batch=1, runtime="eager")
    with pytest.raises(ConfigError, match="python -m search.profile --backbone resnet20"):
        latency_model(fresh_url, SPACE, spec, measure_missing=False)
    lines: list[str] = []
    measured = latency_model(fresh_url, SPACE, spec, report=lines.append)
    # One line per layer shape and one for the network; a busy machine may add its warning.
    lines = [line for line in lines if not line.startswith("latency: warning:")]
    assert len(lines) == 6 and lines[-1].startswith("latency: resnet20 whole network")
    quiet: list[str] = []
    model = latency_model(fresh_url, SPACE, spec, measure_missing=False, report=quiet.append)
    assert quiet == []
    np.testing.assert_array_equal(model.layer_ms, measured.layer_ms)
    assert model.remainder_ms == measured.remainder_ms

    # A prediction is the remainder plus, per layer, its stored figure alone and its weights'
    # memory share.
    shapes = layer_shapes(SPACE)
    with LatencyStore(fresh_url) as store:
        stored = store.layer_rows(spec, [(s, p) for s, layer in zip(shapes, SPACE.layers,
                                                                    strict=True)
                                         for p in layer.allowed_parts])
        network = NetworkKey(SPACE.backbone, SPACE.input_size, SPACE.num_classes,
                             SPACE.in_channels)
        calibration = store.calibration(spec, network)
    assert calibration.samples == 5 and calibration.ms_per_weight_mb >= 0
    assert model.remainder_ms == calibration.remainder_ms
    parts = SPACE.random_parts(np.random.default_rng(0), 20)
    expected = [calibration.remainder_ms
                + sum(stored[shape, int(p)].milliseconds
                      + calibration.ms_per_weight_mb * layer_weight_mb(shape, int(p), spec)
                      for shape, p in zip(shapes, row, strict=True))
                for row in parts]
    np.testing.assert_allclose(model.predict_ms(parts), expected)
    assert np.all(model.predict_ms(parts) >= model.min_ms - 1e-12)
    assert np.all(model.predict_ms(parts) <= model.max_ms + 1e-12)
    assert model.min_ms > 0
    model.check_budget(model.min_ms + 1e-6)
    with pytest.raises(ConfigError, match="below the fastest resnet20"):
        model.check_budget(model.min_ms * 0.9)


def test_a_layer_figure_newer_than_the_calibration_makes_it_measured_again(
        tmp_path: Path, one_thread: None) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    spec = LatencySpec.current("cpu", batch=1, runtime="eager")
    with LatencyStore(url) as store:
        first = profile(store, SPACE, spec, report=lambda _: None)
        shape = layer_shapes(SPACE)[0]
        store.add_layers(spec, {(shape, 1): (0.5, 10)}, replace=True)  # e.g. --force elsewhere
        lines: list[str] = []
        result = profile(store, SPACE, spec, report=lines.append)
    assert result.calibration_measured and not result.measured
    assert len(lines) == 1 and "whole network" in lines[0]
    assert result.calibration.measured_at > first.calibration.measured_at
    assert result.layers[shape, 1].milliseconds == 0.5


def test_measuring_for_another_machine_is_refused(tmp_path: Path) -> None:
    with LatencyStore(f"sqlite:///{tmp_path / 'study.db'}") as store, \
            pytest.raises(ConfigError, match="cannot measure latency for 'cpu: test machine"):
        profile(store, SPACE, _fake_spec())


def test_compiled_runtime_really_compiles_a_small_layer(one_thread: None) -> None:
    spec = LatencySpec.current("cpu", batch=1, runtime="compiled")
    shape = LayerShape(16, 16, 3, 1, 1, 4, 4)
    figures = measure_shape(shape, [1, 4], spec)
    assert set(figures) == {1, 4}
    assert all(ms > 0 and samples >= 5 for ms, samples in figures.values())
    x = torch.randn(1, 16, 4, 4)
    with pytest.raises(ConfigError, match="use runtime eager"):
        # A deploy that added no compiled graph (dynamo fell back to eager) is no figure.
        deploy_for(torch.nn.Identity(), x, spec)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "fragment"), [
    (("--backbone", "vgg19"), "unknown backbone 'vgg19'"),
    (("--backbone", "resnet20", "--batch", "0"), "batch must be a positive integer"),
    (("--backbone", "resnet20", "--batch", "two"), "--batch"),
    (("--backbone", "resnet20", "--runtime", "jit"), "--runtime"),
    (("--backbone", "vgg16", "--input-size", "8"), "--input-size"),
    pytest.param(("--backbone", "resnet20", "--device", "cuda"), "--device cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")),
    (("--backbone", "resnet20", "--storage", "nonsense"), "not a SQLAlchemy URL"),
])
def test_profile_cli_rejects_bad_input_in_one_line_writing_nothing(
        tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    result = _profile_cli(*args, "--storage", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path) \
        if "--storage" not in args else _profile_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_profile_cli_rejects_a_database_it_cannot_open(tmp_path: Path) -> None:
    result = _profile_cli(*ARGS, "--storage", f"sqlite:///{tmp_path / 'missing' / 'x.db'}",
                          cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot open storage" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_timestamps_are_ordered_as_written(tmp_path: Path) -> None:
    """The reuse test compares ``measured_at``: it must keep sub-second order in SQLite."""
    spec = _fake_spec()
    shape = LayerShape(8, 8, 3, 1, 1, 2, 2)
    with LatencyStore(f"sqlite:///{tmp_path / 'x.db'}") as store:
        store.add_layers(spec, {(shape, 1): (1.0, 5)})
        first = store.layer_rows(spec, [(shape, 1)])[shape, 1].measured_at
        store.add_layers(spec, {(shape, 1): (2.0, 5)}, replace=True)
        second = store.layer_rows(spec, [(shape, 1)])[shape, 1].measured_at
    assert timedelta(0) < second - first < timedelta(seconds=5)


def test_network_terms_fit_the_whole_networks() -> None:
    layer_sum = np.array([1.0, 1.2, 1.5, 2.0])
    weight_mb = np.array([2.0, 5.0, 10.0, 40.0])
    measured = layer_sum + 0.3 + 0.02 * weight_mb
    remainder, per_mb = fit_network_terms(measured, layer_sum, weight_mb)
    assert remainder == pytest.approx(0.3) and per_mb == pytest.approx(0.02)
    # Bigger weights never make a network faster: a negative slope falls back to the median.
    remainder, per_mb = fit_network_terms(layer_sum + 0.3 - 0.01 * weight_mb, layer_sum,
                                          weight_mb)
    assert per_mb == 0.0 and remainder == pytest.approx(np.median(0.3 - 0.01 * weight_mb))
