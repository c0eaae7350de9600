"""The checkpoint file a training run writes after every epoch: its name, format and version,
the atomic writer, and the readers that refuse a checkpoint of another architecture, data set
or training settings.

A checkpoint holds what the trainer needs to continue exactly (model, optimizer, step, epoch and
every random state that training draws from) and what it was trained with (architecture, data
set, a fingerprint of the splits, settings), stamped with the format and its version. It holds
only tensors and primitive containers, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hetconv.errors import ConfigError, first_line
from hetconv.models.dense import check_state_dict
from search.store.files import check_source, write_atomic
from search.training.data import DataSplits
from space.architecture import Architecture

CHECKPOINT_FILE = "checkpoint.pt"


def resume_file(checkpoint_dir: str, earlier: str | None = None) -> Path | None:
    """The checkpoint a (re)started trial continues: its own, else an earlier trial's of the
    same architecture (a re-queued trial), else none."""
    own = Path(checkpoint_dir) / CHECKPOINT_FILE
    if own.exists():
        return own
    if earlier and Path(earlier).exists():
        return Path(earlier)
    return None
_FORMAT = "hetnas/checkpoint"
_FORMAT_VERSION = 2  # 2: the paper's exact layer (compact 1×1 weights), input normalisation
# Settings that do not change what a run computes; a resumed run must share every other one
# (the trainer's config, and a supernet run's recipe on top).
_NOT_RESULT_SHAPING = ("device", "eval_batch_size")


def write_checkpoint(folder: Path, state: Mapping[str, Any]) -> None:
    """Replace ``folder/CHECKPOINT_FILE`` with ``state`` stamped with the format, atomically, so
    a crash mid-write leaves the previous epoch's checkpoint."""
    stamped = {"format": _FORMAT, "version": _FORMAT_VERSION, **state}
    write_atomic(Path(folder) / CHECKPOINT_FILE, functools.partial(torch.save, stamped))


def fingerprint(data: DataSplits) -> str:
    """Split sizes and a hash of the labels in order: tells a different seed or split apart."""
    digest = hashlib.sha1(usedforsecurity=False)
    for labels in (data.train_y, data.val_y, data.test_y):
        digest.update(labels.cpu().numpy().tobytes())
    return f"{data.sizes}:{digest.hexdigest()[:16]}"


def read_resumable(path: Path | str, arch: Architecture, data: DataSplits) -> dict[str, Any]:
    """The checkpoint at ``path`` (the file or its folder), refused unless it was written for
    ``arch`` on the same ``data`` splits; :func:`check_settings` then compares the training
    settings (known only once the run is built)."""
    path = _checkpoint_path(path)
    saved = _read_checkpoint(path)
    _check_architecture(saved, arch, path)
    if saved["dataset"] != data.name:
        raise ConfigError(f"checkpoint {path} was trained on {saved['dataset']!r}, not "
                          f"{data.name!r}; resume with the same data set")
    if saved["splits"] != fingerprint(data):
        raise ConfigError(f"checkpoint {path} was trained on other {data.name} splits (sizes or "
                          f"order differ); resume with the same data seed and val_fraction")
    return saved


def check_settings(saved: Mapping[str, Any], settings: Mapping[str, Any],
                   path: Path | str) -> None:
    """Refuse a checkpoint written with other result-shaping training ``settings`` (the run's
    :meth:`~search.training.trainer.TrainingRun.settings`)."""
    changed = [f"{k}: {saved['config'].get(k)!r} -> {value!r}" for k, value in settings.items()
               if k not in _NOT_RESULT_SHAPING and saved["config"].get(k) != value]
    if changed:
        raise ConfigError(f"checkpoint {_checkpoint_path(path)} was written with other training "
                          f"settings ({', '.join(changed)}); resume with the settings it was "
                          f"written with")


def load_weights(checkpoint_file: Path, arch: Architecture) -> nn.Module:
    """``arch`` built with the trained weights of a checkpoint, on the CPU, in eval mode.

    The weights include the input normalisation the network was trained with.
    ``checkpoint_file`` may also be the folder that holds :data:`CHECKPOINT_FILE`.
    """
    path = _checkpoint_path(checkpoint_file)
    saved = _read_checkpoint(path)
    _check_architecture(saved, arch, path)
    with torch.random.fork_rng(devices=[]):
        model = arch.build()
    try:
        model.load_state_dict(saved["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise ConfigError(f"checkpoint {path} does not fit architecture {arch.backbone} "
                          f"({str(error).splitlines()[0]}); pass the architecture it was "
                          f"trained with") from None
    return model.eval()


def read_state_dict(path: Path | str, label: str) -> dict[str, Any]:
    """The plain state dict a user's file holds, loaded without unpickling code; any problem
    is one :class:`ConfigError` naming the file as ``label`` (``weights file``, a flag)."""
    check_source(Path(path), label)  # before torch.load, which would block on a FIFO
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, foreign or unsafe: the file's fault either way
        raise ConfigError(f"{label} {path} is not a plain PyTorch state dict "
                          f"({_load_failure(error)}); save one with "
                          f"torch.save(model.state_dict(), path)") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{label} {path} holds a {type(state).__name__}, not a state dict; "
                          f"save one with torch.save(model.state_dict(), path)")
    return check_state_dict(state, f"{label} {path}")


def _load_failure(error: Exception) -> str:
    """Why torch could not load a file, never passing on its advice to load it unsafely
    (``weights_only=False`` runs whatever code the file holds)."""
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error):
        return "it holds Python objects beyond tensors, refused without running them"
    return first_line(error)


def _checkpoint_path(path: Path | str) -> Path:
    path = Path(path)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """A checkpoint's contents (the file, or the folder holding it), format checked."""
    return _read_checkpoint(_checkpoint_path(path))


def _read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist; pass a {CHECKPOINT_FILE} written "
                          f"by a training run (or the folder holding it)")
    check_source(path, "checkpoint")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, foreign or unsafe: the file's fault either way
        raise ConfigError(f"cannot read checkpoint {path} ({_load_failure(error)}); pass a "
                          f"{CHECKPOINT_FILE} written by a training run") from None
    if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
        raise ConfigError(f"{path} is not a HetNAS checkpoint; pass a {CHECKPOINT_FILE} written "
                          f"by a training run")
    if saved.get("version") == 1:
        raise ConfigError(f"checkpoint {path} was written by HetNAS 0.1, whose layer kept "
                          f"duplicate 1x1 weights and whose networks took normalised input; "
                          f"train it again with this HetNAS")
    if saved.get("version") != _FORMAT_VERSION:
        raise ConfigError(f"checkpoint {path} has format version {saved.get('version')!r}; this "
                          f"HetNAS reads version {_FORMAT_VERSION}")
    return saved


def _check_architecture(saved: Mapping[str, Any], arch: Architecture, path: Path) -> None:
    stored = Architecture.from_json(saved["architecture"])
    if stored.as_searched() != arch.as_searched():
        raise ConfigError(f"checkpoint {path} was trained for {stored.backbone} with parts "
                          f"{list(stored.parts)} at {stored.in_channels}x{stored.input_size}px, "
                          f"{stored.num_classes} classes, not {arch.backbone} with parts "
                          f"{list(arch.parts)} at {arch.in_channels}x{arch.input_size}px, "
                          f"{arch.num_classes} classes; pass the architecture it was trained "
                          f"with")
