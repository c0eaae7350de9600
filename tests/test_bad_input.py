"""Malformed architecture files and weights: a ConfigError (one line, exit 2), never a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hetconv.errors import ConfigError
from search.training.exported import load_trained
from space import Architecture

GOOD = Architecture.uniform("resnet20", 4, 8)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=5),
    max_leaves=20)


def _mutations() -> st.SearchStrategy[dict]:
    """The good document with one key replaced by anything, or removed, or one added."""
    base = GOOD.to_dict()
    replace = st.tuples(st.sampled_from(sorted(base)), json_values).map(
        lambda kv: {**base, kv[0]: kv[1]})
    remove = st.sampled_from(sorted(base)).map(
        lambda key: {k: v for k, v in base.items() if k != key})
    parts = st.lists(st.integers(-3, 130), min_size=0, max_size=20).map(
        lambda p: {**base, "parts": p})
    return replace | remove | parts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_mutations())
def test_malformed_architecture_documents_raise_config_error_only(document: dict) -> None:
    try:
        arch = Architecture.from_json(json.dumps(document))
    except ConfigError:
        return
    assert arch.to_dict() == {**GOOD.to_dict(), **document}  # accepted only when valid


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(
    lambda b: b.decode("latin-1")))
def test_arbitrary_text_raises_config_error_only(text: str) -> None:
    with pytest.raises(ConfigError):
        Architecture.from_json(text)


@pytest.mark.parametrize(("text", "fragment"), [
    ("[" * 100_000, "nested too deeply"),  # Python's parser raises RecursionError
    ("9" * 5000, "not valid JSON"),  # ValueError: more digits than int() converts
    (GOOD.to_json().replace('"num_classes": 10', f'"num_classes": {10**12}'),
     "num_classes must be an integer from 1 to 100,000"),  # a classifier of terabytes
    (GOOD.to_json().replace('"size": 8', '"size": 1000000'), "input_size must be an integer"),
    (GOOD.to_json().replace('"channels": 3', f'"channels": {10**9}'), "in_channels must be"),
])
def test_documents_beyond_what_any_network_takes_are_config_errors(text: str,
                                                                     fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Architecture.from_json(text)


def _check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.check", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ})


def _one_line_exit_2(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


@pytest.mark.parametrize(("content", "fragment"), [
    (GOOD.to_json()[:40], "not valid JSON"),
    (json.dumps({**GOOD.to_dict(), "version": 99}), "schema version 99"),
    (json.dumps({**GOOD.to_dict(), "parts": [4] * 17}), "18 searchable layers but 17"),
    (json.dumps({**GOOD.to_dict(), "parts": [3] + [4] * 17}), "layer 0"),
    (json.dumps({**GOOD.to_dict(), "backbone": "vgg19"}), "unknown backbone"),
])
def test_check_cli_rejects_bad_architecture_files(tmp_path: Path, content: str,
                                                  fragment: str) -> None:
    path = tmp_path / "arch.json"
    path.write_text(content)
    _one_line_exit_2(_check(tmp_path, str(path)), fragment)


def test_check_cli_rejects_a_folder_a_huge_file_and_absurd_sizes(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    _one_line_exit_2(_check(tmp_path, "folder"), "is a folder")
    with (tmp_path / "huge.json").open("wb") as huge:
        huge.truncate(17 << 20)  # sparse: read only up to the 16 MiB limit
    _one_line_exit_2(_check(tmp_path, "huge.json"), "larger than 16 MiB")
    (tmp_path / "classes.json").write_text(GOOD.to_json().replace('"num_classes": 10',
                                                                  f'"num_classes": {10**12}'))
    torch.save(GOOD.build().state_dict(), tmp_path / "w.pt")
    _one_line_exit_2(_check(tmp_path, "classes.json", "--weights", "w.pt"),
                     "'num_classes' must be an integer from 1 to 100,000")  # the file's key
    _one_line_exit_2(_check(tmp_path, "x" * 300), "no usable path (File name too long)")
    _one_line_exit_2(_check(tmp_path, "two\nlines.json"), "two\\nlines.json")  # one line


def test_check_cli_accepts_a_good_file_and_matching_weights(tmp_path: Path) -> None:
    (tmp_path / "arch.json").write_text(GOOD.to_json())
    torch.save(GOOD.build().state_dict(), tmp_path / "w.pt")
    result = _check(tmp_path, "arch.json", "--weights", "w.pt")
    assert result.returncode == 0, result.stderr
    assert f"{GOOD.macs:,}" in result.stdout and "match" in result.stdout


def test_weights_that_do_not_fit_or_are_not_plain_tensors(tmp_path: Path) -> None:
    (tmp_path / "arch.json").write_text(GOOD.to_json())
    other = Architecture.uniform("resnet20", 2, 8)
    torch.save(other.build().state_dict(), tmp_path / "other.pt")
    _one_line_exit_2(_check(tmp_path, "arch.json", "--weights", "other.pt"), "does not match")
    # A pickle that would run code when loaded unsafely: weights_only refuses it.
    marker = tmp_path / "pwned"
    torch.save({"x": _Evil(str(marker))}, tmp_path / "evil.pt")
    evil = _check(tmp_path, "arch.json", "--weights", "evil.pt")
    _one_line_exit_2(evil, "not a plain")
    assert not marker.exists()
    assert "weights_only" not in evil.stderr  # never the advice to load it unsafely
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "other.pt").read_bytes()[:100])
    _one_line_exit_2(_check(tmp_path, "arch.json", "--weights", "trunc.pt"), "not a plain")
    with pytest.raises(ConfigError, match="does not exist"):
        load_trained(GOOD, tmp_path / "missing.pt")


def test_files_that_are_not_regular_files_are_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO would block its reader until a writer comes: refused before it is opened."""
    (tmp_path / "arch.json").write_text(GOOD.to_json())
    torch.save(GOOD.build().state_dict(), tmp_path / "good.pt")
    os.mkfifo(tmp_path / "fifo")
    _one_line_exit_2(_check(tmp_path, "fifo"), "architecture file fifo is a FIFO")
    _one_line_exit_2(_check(tmp_path, "arch.json", "--weights", "fifo"), "fifo is a FIFO")
    _one_line_exit_2(_check(tmp_path, "arch.json", "--weights", "/dev/null"),
                     "not a regular file")
    assert _check(tmp_path, "arch.json", "--weights", "good.pt").returncode == 0


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda state: {**state, 7: torch.zeros(1)}, "named by a int, not a string"),
    (lambda state: {k: v.to("meta") for k, v in state.items()}, "on the meta device"),
    (lambda state: {k: v.fill_(float("nan")) if v.is_floating_point() else v
                    for k, v in state.items()}, "NaN or infinite"),
    (lambda state: {**state, "extra": "text"}, "is a str, not a tensor"),
])
def test_state_dicts_are_checked_as_data(tmp_path: Path, change, fragment: str) -> None:
    (tmp_path / "arch.json").write_text(GOOD.to_json())
    torch.save(change(GOOD.build().state_dict()), tmp_path / "bad.pt")
    _one_line_exit_2(_check(tmp_path, "arch.json", "--weights", "bad.pt"), fragment)


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))
