"""Bad input to the command lines: one clear line on stderr, exit status 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search.store import records
from search.training.data import load_dataset
from space import Architecture, SearchSpace
from tests.datasets import write_fashion_mnist, write_imagefolder

MIN_MACS = SearchSpace("vgg16", None, 10, 1).min_macs  # the digits: one channel, 10 classes


def _run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(("args", "fragments"), [
    (["--budget", "1e3"], ["below the cheapest vgg16", str(MIN_MACS)]),
    (["--budget", "abc"], ["not a number of MACs"]),
    (["--budget", "-5"], ["positive"]),
    (["--budget", "0"], ["positive"]),
    (["--budget", "nan"], ["positive"]),
    (["--budget", "3e8", "--backbone", "vgg19"], ["unknown backbone 'vgg19'", "vgg16"]),
    (["--budget", "3e8", "--dataset", "mnist"], ["mnist", "digits"]),
    (["--budget", "3e8", "--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"],
     ["/nonexistent/cifar"]),
    (["--budget", "3e8", "--sampler", "grid"], ["--sampler"]),
    (["--budget", "3e8", "--scheduler", "hyperband"], ["--scheduler"]),
    (["--budget", "3e8", "--trials=-1"], ["--trials must be 0"]),
    (["--budget", "3e8", "--trials", "0", "--baselines", "none"], ["trains nothing"]),
    (["--budget", "3e8", "--baselines", "some"], ["--baselines"]),
    (["--budget", "3e8", "--confirm-seeds", "1"], ["--confirm-seeds must be 2 or more"]),
    (["--budget", "3e8", "--confirm-top=-1"], ["--confirm-top must be 0"]),
    (["--budget", "3e8", "--ray-address", "127.0.0.1:1"], ["127.0.0.1:1", "ray start"]),
    (["--budget", "3e8", "--strategy", "darts"], ["--strategy"]),
    (["--budget", "3e8", "--strategy", "oneshot", "--candidates", "0"],
     ["--candidates must be a positive integer"]),
    (["--budget", "3e8", "--strategy", "oneshot", "--candidates", "5", "--finalists", "6"],
     ["--finalists 6 is more than --candidates 5"]),
    (["--budget", "3e8", "--strategy", "oneshot", "--sandwich=-1"], ["--sandwich must be 0"]),
    (["--budget", "3e8", "--strategy", "oneshot", "--supernet-epochs", "0"],
     ["--supernet-epochs must be a positive integer"]),
    (["--budget", "3e8", "--strategy", "oneshot", "--supernet-workers", "0"],
     ["--supernet-workers must be a positive integer"]),
    (["--budget", "3e8", "--strategy", "oneshot", "--finalist-init", "imagenet"],
     ["--finalist-init"]),
    (["--budget", "3e8", "--strategy", "oneshot", "--supernet-workers", "3"],
     ["--batch-size 32 does not split evenly over --supernet-workers 3"]),
    (["--budget", "3e8", "--strategy", "oneshot", "--supernet-recipe", "bignas"],
     ["--supernet-recipe"]),
    (["--budget", "3e8", "--strategy", "oneshot", "--scheduler", "asha"],
     ["one-shot search trains only its finalists"]),
    # One-shot options with the standard strategy, in range or not, would be ignored.
    (["--budget", "3e8", "--candidates=-5"],
     ["--candidates is an option of the one-shot search", "add --strategy oneshot"]),
    (["--budget", "3e8", "--finalists", "2", "--supernet-recipe", "sandwich"],
     ["--finalists, --supernet-recipe are options of the one-shot search"]),
    ([], ["give --budget MACS", "--latency-budget MS"]),
    (["--latency-budget", "abc"], ["not a number of milliseconds"]),
    (["--latency-budget", "0"], ["positive"]),
    (["--latency-budget", "inf"], ["positive"]),
    (["--latency-budget", "5", "--latency-batch", "0"], ["--latency-batch"]),
    (["--latency-budget", "5", "--latency-runtime", "jit"], ["--latency-runtime"]),
    (["--latency-budget", "5", "--latency-device", "tpu"], ["--latency-device"]),
    (["--latency-budget", "5", "--latency-device", "cuda"], ["--latency-device cuda"]),
    # Beyond any real run, and beyond what numpy, torch or the database take.
    (["--budget", "3e8", "--seed=-1"], ["--seed must be a non-negative integer"]),
    (["--budget", "3e8", "--seed", str(2**70)], ["--seed", "at most 4,294,967,295"]),
    (["--budget", "3e8", "--cpus-per-trial", "nan"], ["--cpus-per-trial must be a finite"]),
    (["--budget", "3e8", "--gpus-per-trial", "inf"], ["--gpus-per-trial must be a finite"]),
    (["--budget", "3e8", "--epochs", str(10**30)], ["--epochs", "at most 10,000"]),
    (["--budget", "3e8", "--batch-size", str(2**70)], ["--batch-size", "at most 65,536"]),
    (["--budget", "3e8", "--trials", str(10**30)], ["--trials", "at most 100,000"]),
    (["--budget", "3e8", "--strategy", "oneshot", "--supernet-workers", str(10**20)],
     ["--supernet-workers", "at most 1,024"]),
    (["--budget", "3e8", "--input-size", str(10**12)], ["--input-size", "from 1 to 4,096"]),
    (["--latency-budget", "5", "--latency-batch", str(2**70)], ["--latency-batch"]),
    (["--budget", "3e8", "--data-dir", "x" * 300], ["--data-dir", "no usable path"]),
])
def test_search_run_rejects_bad_options_before_writing(tmp_path: Path, args: list[str],
                                                       fragments: list[str]) -> None:
    result = _run("search.run", *args, "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                  cwd=tmp_path)
    _assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []  # no database, no artifacts


def test_artifacts_under_a_file_are_refused_before_writing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder\n")
    result = _run("search.run", "--budget", "3e8", "--artifacts-dir", "file/artifacts",
                  "--storage", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    _assert_one_line_error(result, "--artifacts-dir file/artifacts lies under file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize(("module", "args", "fragments"), [
    ("search.train", ["--epochs", str(10**30)], ["--epochs", "at most 10,000"]),
    ("search.train", ["--epochs", "1", "--seed", str(2**70)], ["--seed", "at most"]),
    ("search.train", ["--epochs", "1", "--batch-size", str(2**70)], ["--batch-size"]),
    ("search.train", ["--epochs", "1", "--workers", str(10**20)], ["--workers", "at most"]),
    ("search.train", ["--epochs", "1", "--threads", str(10**20)], ["--threads", "at most"]),
    ("search.train", ["--epochs", "1", "--out", ""], ["--out . is a folder"]),
    ("search.deploy", ["--weights", "w.pt", "--batch", str(2**70)], ["--batch", "65,536"]),
    ("search.deploy", ["--weights", "w.pt", "--threads", str(10**20)], ["--threads", "at most"]),
    ("search.profile", ["--batch", str(2**70)], ["--batch", "65,536"]),
    ("search.profile", ["--input-size", str(10**20)], ["--input-size", "from 1 to 4,096"]),
])
def test_numbers_beyond_any_run_are_refused_in_one_line(tmp_path: Path, module: str,
                                                         args: list[str],
                                                         fragments: list[str]) -> None:
    """Integers that would overflow torch, numpy or the database, or never end."""
    arch = Architecture.uniform("resnet20", 4, 8, 10, 1)
    (tmp_path / "arch.json").write_text(arch.to_json())
    files = {"search.train": ["arch.json", "--dataset", "digits", "--out", "final.pt"],
             "search.deploy": ["arch.json", "--out", "model.pt2"],
             "search.profile": ["--storage", f"sqlite:///{tmp_path / 'x.db'}"]}[module]
    result = _run(module, *files, *args, cwd=tmp_path)
    _assert_one_line_error(result, *fragments)
    assert [p.name for p in tmp_path.iterdir()] == ["arch.json"]


def test_search_run_rejects_a_data_directory_of_the_wrong_format(tmp_path: Path) -> None:
    batches = tmp_path / "data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        (batches / name).write_text("these are not CIFAR batches\n")
    result = _run("search.run", "--budget", "3e8", "--dataset", "cifar10", "--data-dir", "data",
                  "--storage", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    _assert_one_line_error(result, "data_batch_1")
    assert not (tmp_path / "x.db").exists()


def _truncate_an_image(root: Path) -> str:
    write_imagefolder(root, classes=3, per_class=6, size=24)
    image = sorted((root / "train").glob("*/*.png"))[4]
    image.write_bytes(image.read_bytes()[:60])  # the header survives, the pixels do not
    return image.name


def _cut_an_idx_file(root: Path) -> str:
    write_fashion_mnist(root, train=60, test=20, gz=False)
    labels = root / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    return labels.name


@pytest.mark.parametrize(("dataset", "damage"), [("imagefolder", _truncate_an_image),
                                                 ("fashion-mnist", _cut_an_idx_file)])
def test_search_run_finds_damaged_data_before_writing_anything(tmp_path: Path, dataset: str,
                                                               damage) -> None:
    name = damage(tmp_path / "data")
    result = _run("search.run", "--budget", "1e9", "--backbone", "resnet20", "--dataset",
                  dataset, "--data-dir", "data", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                  cwd=tmp_path)
    _assert_one_line_error(result, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no database, no artifacts


@pytest.mark.parametrize(("storage", "fragment"), [
    ("postgresql://postgres@127.0.0.1:1/test", "cannot open storage"),
    ("nosuchdb://somewhere/x", "unknown database scheme"),
    ("not a url", "not a SQLAlchemy URL"),
])
def test_search_run_rejects_unusable_storage(tmp_path: Path, storage: str,
                                             fragment: str) -> None:
    result = _run("search.run", "--budget", "3e8", "--storage", storage, cwd=tmp_path)
    _assert_one_line_error(result, fragment)


def test_latency_budget_below_the_fastest_architecture_creates_no_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    result = _run("search.run", "--latency-budget", "1e-6", "--backbone", "resnet20",
                  "--input-size", "8", "--latency-runtime", "eager", "--storage", storage,
                  cwd=tmp_path)
    _assert_one_line_error(result, "below the fastest resnet20 architecture")
    assert optuna.get_all_study_names(storage) == []


def test_resume_of_a_missing_study_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    storage = f"sqlite:///{db}"
    optuna.create_study(storage=storage, study_name="other")
    result = _run("search.run", "--budget", "3e8", "--storage", storage, "--resume",
                  "--study", "missing", cwd=tmp_path)
    _assert_one_line_error(result, "no study named 'missing'")
    assert optuna.get_all_study_names(storage) == ["other"]


def test_export_errors(tmp_path: Path) -> None:
    missing = _run("search.export", "--storage", f"sqlite:///{tmp_path / 'none.db'}",
                   "--study", "s", "--out", "best.json", cwd=tmp_path)
    _assert_one_line_error(missing, "no such database file")
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    optuna.create_study(storage=storage, study_name="empty")
    for study, fragment in (("nope", "no study named 'nope'"), ("empty", "no trial")):
        result = _run("search.export", "--storage", storage, "--study", study, "--out",
                      "best.json", cwd=tmp_path)
        _assert_one_line_error(result, fragment)
    assert not (tmp_path / "best.json").exists()


def _digits_facts() -> list[tuple[str, object]]:
    """What a search on the digits at seed 0 records about its data."""
    data = load_dataset("digits", 32, seed=0)
    return [(records.STUDY_INPUT_MEAN, list(data.mean)), (records.STUDY_INPUT_STD, list(data.std)),
            (records.STUDY_CLASS_NAMES, list(data.class_names))]


def test_resume_of_a_study_made_by_hetnas_0_1_says_so(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    study = optuna.create_study(storage=storage, study_name="old")
    study.set_user_attr(records.STUDY_BACKBONE, "vgg16")
    result = _run("search.run", "--budget", "3e8", "--storage", storage, "--resume", "--study",
                  "old", cwd=tmp_path)
    _assert_one_line_error(result, "made by HetNAS 0.1", "start a new search")


@pytest.mark.parametrize(("options", "fragment"), [
    (["--budget", "2e8"], "has budget 300000000.0 MACs, not 2e+08"),
    (["--budget", "3e8", "--backbone", "resnet56"], "backbone 'vgg16', not 'resnet56'"),
    (["--budget", "3e8", "--dataset", "fashion-mnist"], "dataset 'digits', not 'fashion-mnist'"),
    (["--budget", "3e8", "--seed", "1"], "run on other digits data"),
    (["--budget", "3e8", "--strategy", "oneshot"], "--strategy standard, not oneshot"),
])
def test_resume_with_other_settings_than_stored(tmp_path: Path, options: list[str],
                                                fragment: str) -> None:
    _resumed_with_other_settings(tmp_path, [(records.STUDY_STRATEGY, "standard")], options,
                                 fragment)


@pytest.mark.parametrize(("options", "fragment"), [
    # Finalists fine-tuned from the supernet ranked beside finalists from scratch.
    (["--finalist-init", "scratch"], "--finalist-init supernet, not scratch"),
    # A killed supernet continued from a checkpoint trained another way.
    (["--supernet-epochs", "2"], "--supernet-epochs 4, not 2"),
    (["--supernet-recipe", "sandwich"], "--supernet-recipe largest, not sandwich"),
])
def test_resume_of_a_oneshot_study_with_other_oneshot_options(tmp_path: Path,
                                                              options: list[str],
                                                              fragment: str) -> None:
    stored = [(records.STUDY_STRATEGY, "oneshot"), (records.STUDY_SUPERNET_EPOCHS, 4),
              (records.STUDY_SUPERNET_RECIPE, "largest"), (records.STUDY_SANDWICH, 2),
              (records.STUDY_FINALIST_INIT, "supernet")]
    _resumed_with_other_settings(tmp_path, stored, ["--budget", "3e8", "--strategy", "oneshot",
                                                    *options], fragment)


def _resumed_with_other_settings(tmp_path: Path, stored: list[tuple[str, object]],
                                 options: list[str], fragment: str) -> None:
    """A study holding the digits search's records and ``stored``, resumed with ``options``:
    one line naming ``fragment``, and nothing written to the study."""
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    study = optuna.create_study(storage=storage, study_name="stored")
    for key, value in ((records.STUDY_BACKBONE, "vgg16"), (records.STUDY_DATASET, "digits"),
                       (records.STUDY_OBJECTIVE, "accuracy"), (records.STUDY_BUDGET, 3e8),
                       (records.STUDY_INPUT_SIZE, 32), (records.STUDY_NUM_CLASSES, 10),
                       (records.STUDY_IN_CHANNELS, 1), (records.STUDY_EPOCHS, 4), *stored,
                       *_digits_facts()):
        study.set_user_attr(key, value)
    before = optuna.load_study(study_name="stored", storage=storage).user_attrs
    result = _run("search.run", *options, "--storage", storage, "--resume", "--study",
                  "stored", cwd=tmp_path)
    _assert_one_line_error(result, fragment)
    after = optuna.load_study(study_name="stored", storage=storage)
    assert len(after.trials) == 0 and after.user_attrs == before


ROOT = Path(__file__).resolve().parent.parent
OWN = ["--budget", "1e9", "--input-size", "8"]


@pytest.mark.parametrize(("args", "fragments"), [
    (["--model", "tests.no_such_module:net", *OWN], ["cannot import 'tests.no_such_module'"]),
    (["--model", "tests.foreign_networks:raises", *OWN],
     ["raised ValueError when called with num_classes=10"]),
    (["--model", "tests.foreign_networks:pointwise_only", *OWN],
     ["no convolution that can take a HetConv part", "groups=8"]),
    (["--model", "tests.foreign_networks", *OWN], ["must be written package.module:factory"]),
    (["--model", "tests.foreign_networks:foreign", "--backbone", "vgg16", *OWN],
     ["--model and --backbone"]),
    (["--model", "tests.foreign_networks:foreign", "--budget", "1e9"], ["give --input-size"]),
    (["--model", "tests.foreign_networks:foreign", *OWN, "--init-from", "missing.pt"],
     ["--init-from missing.pt does not exist"]),
    (["--model", "tests.foreign_networks:foreign", *OWN, "--init-from", "{rgb}"],
     ["'stem.0.weight' has shape (12, 3, 3, 3)", "(12, 1, 3, 3)"]),
    (["--model", "tests.foreign_networks:foreign", *OWN, "--init-from", "{garbage}"],
     ["not a plain PyTorch state dict"]),
    (["--model", "tests.foreign_networks:batch_of_one", *OWN],
     ["cannot train on a batch of 8 images of 1x8x8 on the CPU", "must take any batch size"]),
    (["--model", "tests.foreign_networks:aux_in_training", *OWN],
     ["returned tuple in training mode", "without auxiliary outputs"]),
    (["--model", "tests.foreign_networks:no_running_stats", *OWN],
     ["batch norms without running statistics (network.wide.1)", "track_running_stats=True"]),
    (["--model", "tests.foreign_networks:data_dependent", *OWN],
     ["cannot be deployed: torch.fx cannot trace it", "control flow that depends on the data"]),
])
def test_own_network_options_fail_in_one_line_before_writing(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, args: list[str],
        fragments: list[str]) -> None:
    import torch

    from tests.foreign_networks import foreign

    files = tmp_path_factory.mktemp("weights")
    torch.save(foreign(10, in_channels=3).state_dict(), files / "rgb.pt")
    (files / "garbage.pt").write_bytes(b"no state dict")
    args = [a.format(rgb=files / "rgb.pt", garbage=files / "garbage.pt") for a in args]
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "search.run", *args, "--storage",
                             f"sqlite:///{tmp_path / 'x.db'}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    _assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../escape", "a/b", "x" * 101, "-dash", ".hidden", "",
                                  "sp ace", "ünïcode"])
def test_a_study_name_that_is_no_safe_folder_name_is_refused(tmp_path: Path, name: str) -> None:
    result = _run("search.run", "--budget", "3e8", f"--study={name}", "--storage",
                  f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    _assert_one_line_error(result, "cannot name a study", "1 to 100 letters")
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_a_crafted_study_name_from_the_database(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'crafted.db'}"
    optuna.create_study(storage=storage, study_name="../../outside")
    result = _run("search.run", "--budget", "3e8", "--resume", "--storage", storage,
                  cwd=tmp_path)
    _assert_one_line_error(result, "--resume: the latest study, '../../outside' cannot name")
    assert not (tmp_path / "hetnas_artifacts").exists()
    assert not (tmp_path.parent / "outside").exists()
    study = optuna.load_study(study_name="../../outside", storage=storage)
    assert study.trials == [] and study.user_attrs == {}


@pytest.mark.parametrize("storage", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_storage_that_would_keep_nothing_is_refused(tmp_path: Path,
                                                                storage: str) -> None:
    result = _run("search.run", "--budget", "3e8", "--storage", storage, cwd=tmp_path)
    _assert_one_line_error(result, "in-memory SQLite database, which keeps nothing")
    assert list(tmp_path.iterdir()) == []
