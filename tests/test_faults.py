"""Faults injected for real: a trial's worker process is SIGKILLed in the middle of training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
from optuna.trial import TrialState

from search import records
from space import SearchSpace

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
    budget = SearchSpace("resnet20", 8).min_macs
    command = [sys.executable, "-m", "search.run", "--budget", str(budget), "--backbone",
               "resnet20", "--input-size", "8", "--trials", "1", "--epochs", str(EPOCHS),
               "--storage", storage, "--study", "faulty", "--artifacts-dir", str(tmp_path)]
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                              env={**os.environ, "RAY_AIR_NEW_OUTPUT": "0"})
    try:
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
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, stdout[-2000:]

    (trial,) = optuna.load_study(study_name="faulty", storage=storage).trials
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs[records.EPOCHS_TRAINED] == EPOCHS
    assert sorted(trial.intermediate_values) == list(range(1, EPOCHS + 1))
    # The retry continued from a checkpoint at or after the epoch we saw, not from scratch.
    (continued,) = trial.user_attrs[records.CONTINUED_AFTER]
    assert killed_at <= continued < EPOCHS
    assert stdout.count("trial    0") == 1  # reported once
