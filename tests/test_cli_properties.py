"""Every command line, driven with generated argument vectors (hypothesis): valid options mixed
with huge, negative and non-finite numbers, odd strings, and paths to an empty file, binary
garbage, truncated or absurdly nested JSON, a folder or nothing at all.

The promise of docs/RELIABILITY.md: exit status 0 or 2, never a traceback; exit 2 comes with one
line on stderr and leaves every file of the folder (databases included) as it was.

Each command runs in this process, as ``python -m MODULE`` runs it (``runpy``, so its own
``run_cli`` call with its flags and failures is the one tested), in a fresh copy of a folder of
inputs that it runs in. A command that would start real work when its vector is valid is kept
from it: ``search.run`` and ``search.profile`` get an invalid option appended last (and their
``--storage`` is always a file of that folder), ``search.deploy``'s ``--weights`` never fit,
``search.train``'s one readable architecture is for 2-channel images, which no data set here
has, ``dashboards.browse`` always gets ``--attach-only`` and ``dashboards.serve`` finds no study
with trials to serve. A watchdog turns any hang into a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import json
import os
import runpy
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from unittest import mock

import optuna
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from search.cli import macs_amount, milliseconds
from space import Architecture
from tests.datasets import write_imagefolder

WATCHDOG_S = 60  # one command call; far above the slowest refusal

# -- the folder every call runs in -----------------------------------------------------------

ARCH = Architecture.uniform("resnet20", 4, 8, 10, 2)  # 2 channels: no data set here fits it
FILES = ["arch.json", "arch.pt", "other.pt", "empty", "garbage.bin", "truncated.json",
         "deep.json", "huge.json", "bigint.json", "folder", "missing", "study.db",
         "nostudy.db", "images", "nan.pt", "fifo"]
"""What the folder holds (``missing`` is never there): see :func:`_write_inputs`; ``fifo``, a
named pipe nothing writes to, is made in each copy (:func:`_fresh_copy`)."""


def _write_inputs(root: Path) -> None:
    document = {**ARCH.to_dict(), "result": {"dataset": "digits"}}
    (root / "arch.json").write_text(json.dumps(document))
    torch.save(ARCH.build().state_dict(), root / "arch.pt")
    torch.save(Architecture.uniform("resnet20", 2, 8, 10, 2).build().state_dict(),
               root / "other.pt")
    diverged = ARCH.build().state_dict()  # the weights of a run that diverged
    diverged["stem.0.weight"] = torch.full_like(diverged["stem.0.weight"], float("nan"))
    torch.save(diverged, root / "nan.pt")
    (root / "empty").write_bytes(b"")
    (root / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    (root / "truncated.json").write_text(json.dumps(document)[:90])
    (root / "deep.json").write_text("[" * 100_000)
    (root / "huge.json").write_text(json.dumps({**document, "num_classes": 10**12}))
    (root / "bigint.json").write_text(json.dumps(document).replace('"size": 8', '"size": '
                                                                   + "9" * 5000))
    (root / "folder").mkdir()
    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'study.db'}")
    optuna.create_study(storage=storage, study_name="empty")  # a study without trials
    storage.engine.dispose()
    optuna.storages.RDBStorage(f"sqlite:///{root / 'nostudy.db'}").engine.dispose()
    write_imagefolder(root / "images", classes=2, per_class=3, size=8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    _write_inputs(root)
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int, int, str | None]]:
    """Every path under ``root`` with what a write would change: mode, size, modification time
    and, for a file, its content's hash."""
    state = {}
    for path in sorted(root.rglob("*")):
        status = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        state[str(path.relative_to(root))] = (status.st_mode, status.st_size,
                                              status.st_mtime_ns, digest)
    return state


# -- generated values ------------------------------------------------------------------------

LONG = "x" * 300  # a name longer than any file system's 255 bytes
NUMBERS = st.one_of(
    st.integers(-2**80, 2**80).map(str), st.floats().map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-0", "0x10", "1_000", "\u0663",
                     "9" * 5000]))
# Generated text holds no ':', so a --model or --backbone names no module but those here, none
# of which exists; nor NUL or surrogates, which no real argv holds.
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00:"),
            max_size=12),
    st.sampled_from(["", " ", "-", "--", "-h", LONG, "a\nb", "../..", "/", "nosuch:thing",
                     "x:y:z"]))
PATHS = st.sampled_from(FILES)
STORAGES = st.one_of(
    PATHS.map(lambda name: f"sqlite:///{name}"),
    st.sampled_from(["sqlite://", "sqlite:///:memory:", "nosuchdb://x", "not a url",
                     "postgresql://nobody@127.0.0.1:1/none", f"sqlite:///{LONG}"]))
GARBAGE = st.one_of(NUMBERS, TEXT, PATHS, STORAGES)
INTEGERS = st.sampled_from(["1", "2", "4", "8", "32", "0"])  # the first is where hypothesis starts
AMOUNTS = st.sampled_from(["1", "0.5", "2.5", "3e8", "1e9", "0"])
WORDS = st.sampled_from(["resnet20", "vgg16", "digits", "imagefolder", "empty", "cpu", "eager",
                         "127.0.0.1"])
BAD_INTEGER = st.one_of(st.integers(max_value=-1), st.integers(min_value=2**40)).map(str) \
    | st.sampled_from(["nan", "1e999", "x"])
BAD_AMOUNT = st.floats(max_value=-1e-9).map(repr) | st.sampled_from(["nan", "inf", "-inf", "x"])


def _mostly(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``valid`` seven times in eight, else garbage: a vector of garbage alone would stop at its
    first option, never reaching the checks behind it (valid comes first, where hypothesis
    begins and shrinks to)."""
    return st.sampled_from(range(8)).flatmap(lambda pick: GARBAGE if pick == 7 else valid)


@dataclass(frozen=True)
class Command:
    """How to drive one command: ``fixed`` arguments come first (and their options are never
    generated), ``always`` options are always generated, ``values`` are the valid values of
    the options (by destination) that the parser's types do not tell, ``last`` arguments end
    every vector, and ``poison`` draws the invalid arguments that end it where the command's
    valid run is real work. A command that may not ``run`` must exit 2, or 0 for ``--help``."""

    module: str
    examples: int = 80  # about 5 s each on a shared 2-core machine; the cheap ones run more
    fixed: tuple[str, ...] = ()
    always: tuple[str, ...] = ()
    values: Mapping[str, st.SearchStrategy[str]] = field(default_factory=dict)
    last: tuple[str, ...] = ()
    poison: st.SearchStrategy[list[str]] | None = None
    run: bool = True
    waits: tuple[str, ...] = ()
    """Options (by destination) whose valid value waits for ever on these inputs (serve's
    ``--wait`` for a study that never comes): they only ever get invalid amounts."""
    edges: tuple[tuple[str, ...], ...] = ()
    """Vectors always tried, besides the generated ones: edges that once broke the promise."""


def _poison(integers: tuple[str, ...],
            amounts: tuple[str, ...] = ()) -> st.SearchStrategy[list[str]]:
    """One of the integer options or the amounts with a value out of range, or not a number."""
    return st.one_of(*(st.tuples(st.sampled_from(options), bad).map(list)
                       for options, bad in ((integers, BAD_INTEGER), (amounts, BAD_AMOUNT))
                       if options))


STUDIES = {"study": st.sampled_from(["empty", "nope"]),
           "storage": st.sampled_from(["sqlite:///study.db", "sqlite:///nostudy.db"])}
LISTEN = {**STUDIES, "host": st.sampled_from(["127.0.0.1", "localhost", "0.0.0.0"]),
          "allowed_hosts": st.sampled_from(["example.org", "a,b"]), "refresh": AMOUNTS}
COMMANDS = [
    Command("search.check", examples=300),
    Command("search.export", always=("--storage",),
            values={**STUDIES, "out": st.just("best.json"), "weights": st.just("best.pt")},
            edges=(("--storage", f"sqlite:///{LONG}", "--study", "empty", "--out", "b.json"),
                        ("--storage", "sqlite:///study.db", "--study", "empty", "--out", LONG))),
    Command("search.train", run=False,
            values={"architecture": st.just("arch.json"), "weights": st.just("arch.pt"),
                    "out": st.just("final.pt"), "data_dir": st.just("images"),
                    "dataset": st.sampled_from(["digits", "imagefolder"])}),
    Command("search.deploy", examples=200, run=False,
            values={"architecture": st.just("arch.json"), "out": st.just("model.pt2"),
                    "onnx": st.just("model.onnx"),
                    "weights": PATHS.filter(lambda name: name != "arch.pt")}),
    Command("search.profile", examples=200, fixed=("--storage", "sqlite:///profile.db"),
            always=("--backbone",),
            values={"backbone": st.sampled_from(["resnet20", "vgg16", "resnet18", "nonsense"])},
            poison=_poison(("--batch", "--input-size")), run=False),
    Command("search.run", examples=200, fixed=("--storage", "sqlite:///run.db"),
            always=("--budget",),
            values={"budget": st.sampled_from(["1e9", "3e8", "1e12"]),
                    "model": st.sampled_from(["tests.no_such_module:net", "nonsense",
                                              "tests.foreign_networks:raises"]),
                    "backbone": st.sampled_from(["resnet20", "vgg16", "nonsense"]),
                    "study": st.sampled_from(["empty", "s1", "../x"]),
                    "data_dir": st.just("images"), "init_from": PATHS},
            poison=_poison(("--trials", "--epochs", "--batch-size", "--seed", "--max-failures",
                            "--input-size"), ("--cpus-per-trial", "--gpus-per-trial")),
            run=False),
    Command("dashboards.report", always=("--storage",),
            values={**STUDIES, "out": st.just("report.html")},
            edges=(("--storage", f"sqlite:///{LONG}"),
                        ("--storage", "sqlite:///study.db", "--out", LONG))),
    Command("dashboards.serve", always=("--storage",), values=LISTEN, waits=("wait",),
            edges=(("--storage", f"sqlite:///{LONG}"),)),
    # --attach-only: a valid vector adds the figures and exits instead of serving for ever.
    Command("dashboards.browse", always=("--storage",), values=LISTEN, last=("--attach-only",),
            edges=(("--storage", f"sqlite:///{LONG}", "--attach-only"),)),
]


def _options(module: str) -> tuple[list[argparse.Action], list[argparse.Action]]:
    """The command's positionals and options (``--help`` left out), read off its own parser."""
    parser = importlib.import_module(module).build_parser()
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    return ([a for a in actions if not a.option_strings],
            [a for a in actions if a.option_strings])


def _value(command: Command, action: argparse.Action) -> st.SearchStrategy[str]:
    """A valid value of the option (as far as its parser, or ``command.values``, tells)
    mostly, else garbage."""
    if action.dest in command.waits:
        return BAD_AMOUNT
    if action.dest in command.values:
        valid = command.values[action.dest]
    elif action.choices:
        valid = st.sampled_from([str(choice) for choice in action.choices])
    elif action.dest == "storage":
        valid = STORAGES
    elif action.type is int:
        valid = INTEGERS
    elif action.type in (float, macs_amount, milliseconds):
        valid = AMOUNTS
    else:
        valid = st.one_of(PATHS, WORDS)
    return _mostly(valid)


@st.composite
def _argv(draw: st.DrawFn, command: Command) -> list[str]:
    """Every positional, the required and ``always`` options and some others, each with a
    generated value, now and then a stray token; the poison last, where argparse's last value
    wins."""
    positionals, options = _options(command.module)
    options = [a for a in options if not set(a.option_strings) & set(command.fixed)]
    chosen = draw(st.lists(st.sampled_from(options), max_size=5, unique_by=id))
    chosen += [a for a in options if (a.required or set(a.option_strings) & set(command.always))
               and a not in chosen]
    argv = list(command.fixed) + [draw(_value(command, a)) for a in positionals]
    for action in chosen:
        argv.append(action.option_strings[-1])
        if action.nargs != 0:
            argv.append(draw(_value(command, action)))
    if draw(st.sampled_from(range(8))) == 7:
        argv.insert(draw(st.integers(0, len(argv))), draw(TEXT))
    return argv + list(command.last) + (draw(command.poison) if command.poison is not None else [])


# -- running a command -----------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    status: object  # SystemExit's code
    stdout: str
    stderr: str


class Hung(BaseException):
    """A command ran past the watchdog (a BaseException: no ``except OSError`` of a server's
    start, nor any ``except Exception``, takes it for the command's own error)."""


def _timeout(signum: int, frame: FrameType | None) -> None:
    raise Hung(f"the command ran longer than {WATCHDOG_S} s")


@contextlib.contextmanager
def _watchdog() -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(WATCHDOG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _run(module: str, argv: list[str]) -> Outcome:
    """``python -m module *argv`` in this process; any exception but SystemExit escapes."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", [module, *argv]), mock.patch.dict(os.environ), \
            contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
            warnings.catch_warnings(), _watchdog():
        # runpy warns that the module was imported before (by _options): expected here.
        warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=False)
        except SystemExit as exit_:
            return Outcome(exit_.code, stdout.getvalue(), stderr.getvalue())
    raise AssertionError(f"python -m {module} returned without exiting")


@contextlib.contextmanager
def _fresh_copy(inputs: Path) -> Iterator[Path]:
    """A copy of the inputs as the working folder, removed afterwards."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "work"
        shutil.copytree(inputs, root)
        os.mkfifo(root / "fifo")  # copytree refuses to copy one
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(previous)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.module for c in COMMANDS])
def test_every_command_exits_0_or_2_in_one_line_and_writes_nothing_on_2(
        inputs: Path, command: Command) -> None:
    prog = f"python -m {command.module}: error: "

    @settings(max_examples=command.examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(argv=_argv(command))
    def check(argv: list[str]) -> None:
        with _fresh_copy(inputs) as root:
            before = _snapshot(root)
            outcome = _run(command.module, argv)
            after = _snapshot(root)
        assert outcome.status in (0, 2), outcome.stderr[-3000:]
        if outcome.status == 0 and not command.run:
            assert outcome.stdout.startswith("usage:"), f"{argv!r} ran: {outcome.stdout[-2000:]}"
        if outcome.status == 2:
            lines = outcome.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(prog), outcome.stderr[-3000:]
            assert after == before, f"{command.module} wrote though it refused {argv!r}"

    for argv in command.edges:  # a file name over 255 bytes
        check = example(argv=list(argv))(check)
    check()
