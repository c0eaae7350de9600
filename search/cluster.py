"""The Ray cluster a command runs on: join one at ``--ray-address`` (checked, in one line, before
anything is written) or start a local one, and how many trials it has room for.

Shared by the search driver and ``search.train --workers``, neither of which needs the other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray
import torch

from hetconv.errors import ConfigError
from search.cli import stop_on_sigterm

_WORKER_WAIT_S = 60


def check_ray_address(address: str) -> None:
    """Fail fast, in one line, when a ``host:port`` Ray address does not answer."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r} is not host:port (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ConfigError(f"--ray-address {address}: no Ray head answers ({error.strerror or error}"
                          f"); start one with `ray start --head` or omit --ray-address") from None


def _auth_refused(error: BaseException | None) -> bool:
    """Whether Ray refused the connection for want of its authentication token."""
    while error is not None:
        if "InvalidAuthToken" in str(error) or "Authentication" in type(error).__name__:
            return True
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[None]:
    """Hold back what Ray's C++ client writes to stderr while it connects (a warning a second
    while a head refuses it, for 20 s) and let it out only if the connection succeeds, so that
    a refusal is one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
            held.seek(0)
            os.write(saved, held.read())
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def connect_ray(address: str | None) -> None:
    """Join the cluster at ``address``, or start a local Ray when none is given."""
    if ray.is_initialized():
        return
    # Ray's start-up chatter would bury the search's own lines; errors still show.
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        check_ray_address(address)
        try:
            with _native_stderr_held():
                ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError) as error:
            if _auth_refused(error):
                raise ConfigError(f"--ray-address {address}: the cluster requires Ray's token "
                                  f"authentication; set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                                  f"to its token (see docs/CLUSTER.md)") from None
            raise ConfigError(f"--ray-address {address}: {error}") from None
    else:
        ray.init(include_dashboard=False, **quiet)
    stop_on_sigterm()  # the Ray driver replaced the command's SIGTERM handler with its own


def trial_slots(cpus: float, gpus: float) -> int:
    """How many trials of ``cpus`` CPUs and ``gpus`` GPUs the cluster holds at once right now."""
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 0) // cpus
    if gpus:
        slots = min(slots, resources.get("GPU", 0) // gpus)
    return int(slots)


def wait_for_room(cpus: float, gpus: float, report: Callable[[str], None]) -> None:
    """Until the Ray cluster has room for one trial, or a :class:`ConfigError` after a minute.

    A cluster whose workers are still starting has no room for a trial yet; waiting for one
    beats settling on one trial at a time, or waiting forever for a GPU.
    """
    deadline = time.monotonic() + _WORKER_WAIT_S
    if trial_slots(cpus, gpus) < 1:
        report("waiting for Ray workers with room for a trial ...")
    while trial_slots(cpus, gpus) < 1:
        if time.monotonic() > deadline:
            raise ConfigError(
                f"the Ray cluster has no worker with {cpus:g} CPU / {gpus:g} GPU free for a trial; "
                f"start one with "
                f"`ray start --address=...` or lower --cpus-per-trial/--gpus-per-trial")
        time.sleep(1.0)


def check_local_resources(cpus_per_trial: float, gpus_per_trial: float,
                          supernet_workers: int = 1) -> None:
    """Refuse what the local Ray this machine would start cannot give a trial: more CPUs than
    the machine has, or GPUs where torch sees fewer (Ray finds GPUs as torch does); and for a
    one-shot search's data-parallel supernet, its ``supernet_workers`` at once (Ray would wait
    for them for ever)."""
    cpus = os.cpu_count() or 1
    if cpus_per_trial > cpus:
        raise ConfigError(f"--cpus-per-trial {cpus_per_trial:g} is more than this "
                          f"machine's {cpus} CPUs; lower it or join a cluster with --ray-address")
    gpus = torch.cuda.device_count()
    if gpus_per_trial > gpus:
        found = f"only {gpus}" if gpus else "no GPU"
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial:g} but torch finds {found} "
                          f"on this machine (torch {torch.__version__}); pass --gpus-per-trial 0 "
                          f"or join a cluster with GPUs with --ray-address")
    if supernet_workers > 1 and supernet_workers * cpus_per_trial > cpus:
        raise ConfigError(f"--supernet-workers {supernet_workers} need "
                          f"{supernet_workers * cpus_per_trial:g} CPUs (--cpus-per-trial "
                          f"{cpus_per_trial:g} each), more than this machine's {cpus}; lower it "
                          f"or join a cluster with --ray-address")
    if supernet_workers > 1 and gpus_per_trial > 0 and supernet_workers > gpus:
        raise ConfigError(f"--supernet-workers {supernet_workers} on GPUs need one GPU each; "
                          f"torch finds {gpus} on this machine; lower it or join a cluster")
