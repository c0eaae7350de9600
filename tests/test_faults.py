"""Faults injected for real: a trial's worker process is SIGKILLed in the middle of training."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import sqlalchemy
import torch
from optuna.trial import TrialState

from dashboards import load_table
from dashboards.page import facts
from search.store import records
from space import Architecture, SearchSpace
from tests.file_systems import small_file_system
from tests.processes import search_process

EPOCHS = 10


def _trial_worker(driver: psutil.Process) -> psutil.Process | None:
    """The Ray worker process (a descendant of the driver) running the trainable."""
    for child in driver.children(recursive=True):
        try:
            if "ImplicitFunc.train" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_killed_worker_resumes_from_its_last_epoch(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # At the cheapest budget exactly one architecture fits: one trial to kill.
    budget = SearchSpace("resnet20", 8, 10, 1).min_macs  # digits: 10 classes, one channel
    command = [sys.executable, "-m", "search.run", "--budget", str(budget), "--backbone",
               "resnet20", "--input-size", "8", "--trials", "0", "--epochs", str(EPOCHS),
               "--storage", storage, "--study", "faulty", "--artifacts-dir", str(tmp_path)]
    with search_process(command, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                        text=True) as driver:
        deadline = time.monotonic() + 180
        killed_at = None
        while killed_at is None and time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                trials = optuna.load_study(study_name="faulty", storage=storage).trials
            except KeyError:
                continue
            epochs = trials[0].user_attrs.get(records.EPOCHS_TRAINED, 0) if trials else 0
            worker = _trial_worker(psutil.Process(driver.pid))
            if 2 <= epochs < EPOCHS - 2 and worker is not None:
                worker.send_signal(signal.SIGKILL)
                killed_at = epochs
        assert killed_at is not None, "never caught the trial mid-training"
        stdout, _ = driver.communicate(timeout=240)
    assert driver.returncode == 0, stdout[-2000:]

    (trial,) = optuna.load_study(study_name="faulty", storage=storage).trials
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs[records.EPOCHS_TRAINED] == EPOCHS
    assert sorted(trial.intermediate_values) == list(range(1, EPOCHS + 1))
    # The retry continued from a checkpoint at or after the epoch we saw, not from scratch.
    (continued,) = trial.user_attrs[records.CONTINUED_AFTER]
    assert killed_at <= continued < EPOCHS
    assert stdout.count("trial    0") == 1  # reported once


def _search_command(storage: str, study: str, artifacts: Path, trials: int,
                    epochs: int) -> list[str]:
    budget = SearchSpace("resnet20", 8, 10, 1).max_macs
    return [sys.executable, "-m", "search.run", "--budget", str(budget), "--backbone",
            "resnet20", "--input-size", "8", "--trials", str(trials), "--epochs", str(epochs),
            "--sampler", "random", "--storage", storage, "--study", study,
            "--artifacts-dir", str(artifacts), "--max-concurrent", "1", "--confirm-top", "0"]


def _trained(storage: str, study: str) -> list[records.TrialRecord]:
    loaded = optuna.load_study(study_name=study, storage=storage)
    return [r for r in records.read_records(loaded) if r.status == records.COMPLETE]


def test_search_survives_its_database_connections_being_terminated(
        postgres_url: str, study_name: str, tmp_path: Path) -> None:
    tag = f"hetnas-{study_name}"  # lets the test terminate this search's sessions only
    storage = f"{postgres_url}?application_name={tag}"
    driver = subprocess.Popen(_search_command(storage, study_name, tmp_path, 1, 2),
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "RAY_AIR_NEW_OUTPUT": "0"})
    admin = sqlalchemy.create_engine(postgres_url)
    terminated = 0
    try:
        deadline = time.monotonic() + 240
        while driver.poll() is None and time.monotonic() < deadline:
            time.sleep(1.0)
            with admin.connect() as connection:
                terminated += len(connection.execute(sqlalchemy.text(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where application_name = :tag"), {"tag": tag}).all())
        stdout, _ = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
        admin.dispose()
    assert terminated > 0, "no connection of the search was ever terminated"
    assert driver.returncode == 0, stdout[-3000:]
    assert len(_trained(postgres_url, study_name)) == 8


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_searches_share_one_database(backend: str, request: pytest.FixtureRequest,
                                                tmp_path: Path) -> None:
    storage = (f"sqlite:///{tmp_path / 'shared.db'}" if backend == "sqlite"
               else request.getfixturevalue("postgres_url"))
    studies = [f"{request.getfixturevalue('study_name')}-{i}" for i in range(2)]
    # At the standard network's budget all 7 uniform baselines fit: 7 trials each.
    drivers = [subprocess.Popen(_search_command(storage, study, tmp_path / study, 0, 1),
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, "RAY_AIR_NEW_OUTPUT": "0"})
               for study in studies]
    outputs = [driver.communicate(timeout=400)[0] for driver in drivers]
    for driver, output in zip(drivers, outputs, strict=True):
        assert driver.returncode == 0, output[-3000:]
        assert "database is locked" not in output
    for study in studies:
        trained = _trained(storage, study)
        assert len(trained) == 7
        assert {r.checkpoint.split("/checkpoints/")[1].split("/")[0] for r in trained} == {study}


def test_processes_creating_one_new_database_at_once_all_succeed(tmp_path: Path) -> None:
    """Two searches started together on a new file race to create Optuna's tables."""
    code = (f"from search.store.storage import open_storage; "
            f"open_storage('sqlite:///{tmp_path / 'new.db'}')")
    racers = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
              for _ in range(6)]
    errors = [racer.communicate(timeout=120)[1] for racer in racers]
    assert [racer.returncode for racer in racers] == [0] * 6, errors


def test_diverging_trials_are_recorded_as_diverged_and_the_search_goes_on(
        tmp_path: Path) -> None:
    """Dense weights that send every network's loss to infinity (batch-norm scales of 1e30,
    finite, so they pass the weights check): each trial is recorded as diverged once, with its
    reason (not retried by Ray, not trained again), the search goes through all of them, says so
    on each trial line, and ends in one line (exit 1) since nothing trained to a result."""
    state = {key: value for key, value in
             Architecture.uniform("resnet20", 1, 8, 10, 1).build().state_dict().items()
             if not key.startswith("normalize.")}
    huge = {key: value * 1e30 if value.dim() == 1 and key.endswith(".weight") else value
            for key, value in state.items()}
    torch.save(huge, tmp_path / "huge.pt")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    done = subprocess.run([*_search_command(storage, "diverging", tmp_path, 2, 2),
                           "--baselines", "none", "--init-from", str(tmp_path / "huge.pt")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RAY_AIR_NEW_OUTPUT": "0"})
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        "python -m search.run: failed: no trial trained to a result: 2 diverged; the first: "
        "training diverged in epoch 1 (train loss ")
    trials = optuna.load_study(study_name="diverging", storage=storage).trials
    diverged = [t for t in trials if t.user_attrs.get(records.STATUS) == records.DIVERGED]
    assert len(diverged) == 2 == len({tuple(t.user_attrs[records.PARTS]) for t in diverged})
    assert all(t.state == TrialState.PRUNED and not t.user_attrs.get(records.CONTINUED_AFTER)
               and "lower the learning rate" in t.user_attrs[records.DIVERGENCE]
               for t in diverged)
    read = records.read_records(optuna.load_study(study_name="diverging", storage=storage))
    assert [r.status for r in read if r.divergence] == [records.DIVERGED] * 2
    lines = [line for line in done.stdout.splitlines() if "diverged: training diverged" in line]
    assert len(lines) == 2, done.stdout[-3000:]
    shown = dict(facts(load_table(storage, "diverging")))  # the report's and live page's facts
    assert shown["trials"] == "2 (2 diverged)"


def test_a_storage_that_fills_up_mid_search_stops_it_in_one_line_and_resume_finishes(
        tmp_path: Path) -> None:
    """The SQLite file's disk fills while a trial ends: one line and exit 1 (it was 227 lines of
    tracebacks), the trial that could not be recorded is left RUNNING, and once the database has
    room (here: copied to a roomier disk) --resume queues it again and finishes."""
    artifacts = tmp_path / "artifacts"
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    with small_file_system(tmp_path / "small", 700 * 1024) as small:
        command = [*_search_command(f"sqlite:///{small / 'study.db'}", "full", artifacts, 3, 1),
                   "--baselines", "none"]
        stopped = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=600)
        roomy = tmp_path / "roomy"
        roomy.mkdir()
        for part in small.iterdir():
            shutil.copy(part, roomy / part.name)
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    assert stopped.stderr.splitlines() == [
        "python -m search.run: failed: the study's storage failed mid-search (database or disk "
        "is full); free the space or bring the database back, then continue with --resume (it "
        "queues again the trials left unrecorded)"]
    storage = f"sqlite:///{roomy / 'study.db'}"
    left = [t.number for t in optuna.load_study(study_name="full", storage=storage).trials
            if t.state == TrialState.RUNNING]
    assert left, "the disk filled before any trial was running: make the file system larger"
    resumed = subprocess.run([*command[:command.index("--storage")], "--storage", storage,
                              *command[command.index("--storage") + 2:], "--resume"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"trials {left} were left running and are queued again" in resumed.stdout
    assert len(_trained(storage, "full")) == 3
    states = {t.state for t in optuna.load_study(study_name="full", storage=storage).trials}
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
