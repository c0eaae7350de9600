"""Resume after the driver is killed: a real `python -m search.run` process, really SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from search.store import records
from search.store.lease import HEARTBEAT_S, STALE_S, lease_table
from space import Architecture
from tests.processes import search_process

BUDGET = Architecture.uniform("resnet20", 2, 8).macs


def _command(storage: str, artifacts: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "search.run", "--budget", str(BUDGET), "--backbone",
            "resnet20", "--input-size", "8", "--trials", "1", "--epochs", "3", "--confirm-top", "0",
            "--max-concurrent", "1", "--storage", storage, "--study", "killed",
            "--artifacts-dir", str(artifacts), "--seed", "1", *extra]


def _wait_for_mid_training(storage: str, deadline: float) -> None:
    """Until one trial has finished and another has a checkpoint of a finished epoch."""
    while time.monotonic() < deadline:
        try:
            trials = optuna.load_study(study_name="killed", storage=storage).get_trials()
        except KeyError:
            trials = []
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        mid = [t for t in trials if t.state == TrialState.RUNNING
               and t.user_attrs.get(records.EPOCHS_TRAINED, 0) >= 1]
        if done and mid:
            return
        time.sleep(0.2)
    raise AssertionError("the search never reached the middle of a trial")


def _states(storage: str) -> dict[int, TrialState]:
    study = optuna.load_study(study_name="killed", storage=storage)
    return {t.number: t.state for t in study.get_trials()}


def test_resume_after_the_driver_is_killed(tmp_path: Path) -> None:
    """Also: a second driver started while the first runs is refused and changes nothing."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    with search_process(_command(storage, tmp_path), tmp_path, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL) as driver:
        _wait_for_mid_training(storage, time.monotonic() + 240)
        running = [n for n, state in _states(storage).items() if state == TrialState.RUNNING]
        second = subprocess.run(_command(storage, tmp_path, "--resume"), cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert driver.poll() is None  # the first driver goes on, its trials untouched
        states = _states(storage)
        assert running and all(states[n] in (TrialState.RUNNING, TrialState.COMPLETE)
                               for n in running), states
        _wait_for_mid_training(storage, time.monotonic() + 240)  # a trial to interrupt again
    # A second driver while the first is alive: refused in one line, its trials left running.
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2, second.stderr[-2000:]
    assert len(lines) == 1 and "is being run by another driver" in lines[0], lines

    study = optuna.load_study(study_name="killed", storage=storage)
    before = {t.number: t for t in study.get_trials()}
    finished_before = {n: t for n, t in before.items() if t.state == TrialState.COMPLETE}
    interrupted = [t for t in before.values() if t.state == TrialState.RUNNING]
    assert finished_before and len(interrupted) == 1

    resumed = subprocess.run(_command(storage, tmp_path, "--resume"), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"trials [{interrupted[0].number}] were left running" in resumed.stdout
    assert f"taking over study 'killed' from its previous driver (pid {driver.pid} on this " \
        f"machine)" in resumed.stdout

    after = {t.number: t for t in
             optuna.load_study(study_name="killed", storage=storage).get_trials()}
    assert not [t for t in after.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # Finished trials are kept untouched and the count goes on after them.
    for number, trial in finished_before.items():
        assert after[number].state == TrialState.COMPLETE
        assert after[number].values == trial.values
    assert max(after) > max(before)
    # The interrupted trial failed and its architecture trained again, from its checkpoint.
    assert after[interrupted[0].number].state == TrialState.FAIL
    retried = [t for t in after.values() if t.number > max(before)
               and t.params == interrupted[0].params]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].user_attrs[records.RESUME_FROM] == \
        interrupted[0].user_attrs[records.CHECKPOINT]
    # Nothing finished ran again, and the study reached its trial count.
    trained = [r for r in records.read_records(optuna.load_study(study_name="killed",
                                                                  storage=storage))
               if r.status == records.COMPLETE]
    assert len(trained) == 7
    assert len({r.parts for r in trained}) == len(trained)


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stopped_search_exits_in_one_line_and_resumes(tmp_path: Path, stop: str) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) or SIGTERM to the driver alone (what
    ``docker stop``, systemd and SLURM send) mid-search: exit status 130 or 143 and one line
    saying how to continue, never the normal summary nor Ray's stack dump; --resume then
    finishes it."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    with search_process(_command(storage, tmp_path), tmp_path, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True) as driver:
        _wait_for_mid_training(storage, time.monotonic() + 240)
        if stop == "ctrl-c":
            os.killpg(driver.pid, signal.SIGINT)
        else:
            os.kill(driver.pid, signal.SIGTERM)
        stdout, stderr = driver.communicate(timeout=120)
    status, word = (130, "interrupted") if stop == "ctrl-c" else (143, "terminated")
    assert driver.returncode == status, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == \
        f"python -m search.run: {word}; continue with --resume"
    assert "SIGTERM received" not in stderr
    assert "verdict" not in stdout.lower() and "search.export" not in stdout  # no summary
    resumed = subprocess.run(_command(storage, tmp_path, "--resume"), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = optuna.load_study(study_name="killed", storage=storage).get_trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_a_driver_that_lost_its_lease_stops_in_one_line(tmp_path: Path) -> None:
    """A driver silent past the stale limit (SIGSTOP, a cut network) whose study another driver
    took over learns it at its next heartbeat and stops (exit 1, one line naming the
    successor) instead of training beside it; the successor's lease row stays."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    engine = sqlalchemy.create_engine(storage)
    with search_process(_command(storage, tmp_path), tmp_path, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True) as driver:
        _wait_for_mid_training(storage, time.monotonic() + 240)
        with engine.begin() as connection:  # what the successor's takeover writes
            connection.execute(lease_table.update().where(lease_table.c.study == "killed")
                               .values(owner="successor", host="node-9", pid=4343,
                                       heartbeat=time.time()))
        _, stderr = driver.communicate(timeout=HEARTBEAT_S + 120)
    assert driver.returncode == 1, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        "python -m search.run: failed: study 'killed' was taken over by pid 4343 on node-9 "
        f"while this driver was silent for over {STALE_S:.0f} s; this driver stopped so that "
        "one driver runs it (see its output)")
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.select(lease_table.c.owner)).scalars().all() == \
            ["successor"]
    engine.dispose()
