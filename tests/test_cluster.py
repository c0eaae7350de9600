"""Cluster mode: docker-compose.yml checked against the code, then the same topology for real.

The compose file is proven here in two ways, without a container engine (the stack itself runs
in containers in tests/test_compose_stack.py):

* statically: Docker Compose validates it (``config -q``), and every service's command, port,
  volume and variable is checked against what the code reads (``search.run``'s own parser,
  ``ray start --help``, the dashboards' ``--help``, the postgres service's variables);
* for real: the compose file's own ``ray start`` commands start a Ray head (no CPUs) and a worker
  node as local processes on loopback, its search command runs a tiny search against them with
  the local PostgreSQL as storage, and the dashboards' commands read the result. Every trial must
  have run on the worker node.

The real cluster runs in its own process sessions, so it never meets the in-process Ray of other
test modules, and cleanup kills exactly those sessions.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from sqlalchemy.engine import make_url

from dashboards.data import table_from_study
from dashboards.optuna_figures import graph_ids
from search.run import build_parser, settings_from
from search.store import records
from space import Architecture

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")

SERVICES = {"postgres", "ray-head", "ray-worker", "ray-worker-cpu", "search", "optuna-dashboard",
            "dashboard"}
WORKERS = ("ray-worker", "ray-worker-cpu")
RAY_SERVICES = ("ray-head", *WORKERS, "search")
LOOPBACK = "127.0.0.1"


# -- reading the compose file as Docker Compose does ----------------------------------------------

_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_]\w*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.DOTALL)


class MissingVariable(Exception):
    """A ``${VAR:?message}`` whose variable is not set."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ``$$``, ``$VAR``, ``${VAR}``, ``:-``, ``-``, ``:?``, ``?``,
    ``:+`` and ``+``."""

    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        parsed = _BRACED.match(match["braced"])
        assert parsed, f"bad variable ${{{match['braced']}}}"
        name, op, arg = parsed["name"], parsed["op"], parsed["arg"]
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else value
        if op in (":?", "?"):
            if empty:
                raise MissingVariable(f"{name}: {arg}")
            return value
        if op in (":+", "+"):
            return "" if empty else arg
        return value or ""

    return _VARIABLE.sub(substitute, text)


def _interpolated(node: object, env: dict[str, str]) -> object:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    return node


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def load_compose(**overrides: str) -> dict:
    """docker-compose.yml as it runs with .env.example (plus ``overrides``) as its .env file."""
    env = {**read_env_file(ENV_EXAMPLE), **overrides}
    return _interpolated(yaml.safe_load(COMPOSE.read_text()), env)


def _argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _shell_commands(script: str, env: dict[str, str], args: list[str]) -> list[list[str]]:
    """The simple commands of a ``sh -c`` script, with ``$VAR`` and ``$@`` expanded."""
    commands = []
    for line in script.splitlines():
        words = []
        for word in shlex.split(line):
            if word in ("||", "&&", ";", "|") or word.startswith((">", "2>", "{")):
                break
            if word == "$@":
                words.extend(args)
            elif word.startswith("$"):
                words.append(env[word[1:]])
            else:
                words.append(word)
        if words and words[0] == "exec":
            words = words[1:]
        if words:
            commands.append(words)
    return commands


def commands(service: dict) -> list[list[str]]:
    """The command lines a service's container runs (entrypoint and command joined)."""
    argv = _argv(service.get("entrypoint")) + _argv(service.get("command"))
    if argv[:2] == ["sh", "-c"]:
        return _shell_commands(argv[2], service.get("environment", {}), argv[4:])
    return [argv]


def find_command(service: dict, *prefix: str) -> list[str]:
    """The one command line of ``service`` that starts with ``prefix``; the rest of it."""
    found = [argv[len(prefix):] for argv in commands(service) if argv[:len(prefix)] == [*prefix]]
    assert len(found) == 1, f"expected one `{' '.join(prefix)}` in {commands(service)}"
    return found[0]


def options(argv: list[str]) -> dict[str, str | bool]:
    """``--name=value``, ``--name value`` and bare ``--flag`` options of a command line."""
    parsed: dict[str, str | bool] = {}
    index = 0
    while index < len(argv):
        word = argv[index]
        assert word.startswith("--"), f"unexpected argument {word!r} in {argv}"
        name, equals, value = word.partition("=")
        if not equals and index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            value, index = argv[index + 1], index + 1
        parsed[name] = value if (equals or value) else True
        index += 1
    return parsed


def with_options(argv: list[str], **changes: str | bool | None) -> list[str]:
    """``argv`` (options only) with options replaced, added (``True``: a flag) or removed."""
    merged = options(argv)
    for key, value in changes.items():
        name = "--" + key.replace("_", "-")
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return [name if value is True else f"{name}={value}" for name, value in merged.items()]


def mounts(service: dict) -> dict[str, str]:
    """Named volume -> path in the container."""
    return dict(v.split(":")[:2] for v in service.get("volumes", []))


def published(service: dict) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of every published port."""
    ports = []
    for spec in service.get("ports", []):
        parts = str(spec).split("/")[0].split(":")
        assert len(parts) == 3, f"port {spec!r} does not name the host address to bind"
        ports.append((parts[0], int(parts[1]), int(parts[2])))
    return ports


def help_options(command: list[str]) -> set[str]:
    """The ``--options`` a command's ``--help`` lists."""
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", result.stdout))


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def _storage_urls(services: dict[str, dict]) -> dict[str, str]:
    """Where each service takes its study storage from."""
    search = build_parser().parse_args(find_command(services["search"], "python", "-m",
                                                    "search.run"))
    urls = {"search": search.storage,
            "optuna-dashboard": options(find_command(services["optuna-dashboard"], "python",
                                                     "-m", "dashboards.browse"))["--storage"],
            "dashboard": options(find_command(services["dashboard"], "python", "-m",
                                              "dashboards.serve"))["--storage"]}
    for name in RAY_SERVICES:
        urls[f"{name} (HETNAS_STORAGE)"] = services[name]["environment"]["HETNAS_STORAGE"]
    return urls


# -- the compose file, statically ----------------------------------------------------------------


def _compose_binary() -> list[str] | None:
    for candidate in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(candidate[0]) is None:
            continue
        probe = subprocess.run([*candidate, "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return candidate
    return None


def test_docker_compose_validates_the_file(tmp_path: Path) -> None:
    binary = _compose_binary()
    if binary is None:
        message = "neither `docker compose` nor `docker-compose` is installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; .ci/run installs Debian's docker-compose")
        pytest.skip(message)
    clean = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}

    def config(env_file: Path) -> subprocess.CompletedProcess:
        return subprocess.run([*binary, "--env-file", str(env_file), "-f", str(COMPOSE),
                               "config", "-q"], capture_output=True, text=True, env=clean,
                              cwd=tmp_path, timeout=120)

    valid = config(ENV_EXAMPLE)
    assert valid.returncode == 0, valid.stderr
    # The database password has no default: without it Compose refuses to start anything.
    lacking = tmp_path / "no-password.env"
    lacking.write_text("".join(f"{k}={v}\n" for k, v in read_env_file(ENV_EXAMPLE).items()
                               if k != "POSTGRES_PASSWORD"))
    refused = config(lacking)
    assert refused.returncode != 0
    assert "POSTGRES_PASSWORD" in refused.stderr


def test_services_share_one_image_pinned_to_the_project_ray_and_python(
        services: dict[str, dict]) -> None:
    assert set(services) == SERVICES
    project = version("hetnas")
    dockerfile = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.MULTILINE))
    for name, service in services.items():
        if name == "postgres":
            assert re.fullmatch(r"postgres:\d+", service["image"]), "pin PostgreSQL's major"
            continue
        # One tag for head, workers, driver and dashboards: their Ray and Python match.
        assert service["image"] == f"hetnas:{project}", name
        assert service["build"]["context"] == "."
        assert service["build"]["args"]["HETNAS_VERSION"] == project, name
        # The base image is an argument; by default the Dockerfile's own.
        assert service["build"]["args"]["BASE_IMAGE"] == args["BASE_IMAGE"], name
    assert args["HETNAS_VERSION"] == project
    # Ray refuses to join processes whose Ray or Python (to the patch level) differ: the one
    # image holds one Python, and the default base pins it to the patch level.
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", args["BASE_IMAGE"])
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.MULTILINE)
    empty = load_compose(BASE_IMAGE="")["services"]["ray-head"]["build"]["args"]["BASE_IMAGE"]
    assert empty == args["BASE_IMAGE"], "the compose file's default is the Dockerfile's"
    # The PostgreSQL image is selectable too, the official one by default.
    assert load_compose(POSTGRES_IMAGE="localhost/pg:15")["services"]["postgres"]["image"] == \
        "localhost/pg:15"
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["RAY_VERSION"])
    assert '"ray[default,tune]==${RAY_VERSION}"' in dockerfile
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])
    assert '"torch==${TORCH_VERSION}"' in dockerfile
    # The image pins what the suite passed with: constraints.txt's versions, and the file itself.
    locked = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                  if "==" in line and not line.startswith("#"))
    pins = (("torch", "TORCH_VERSION"), ("ray", "RAY_VERSION"), ("optuna", "OPTUNA_VERSION"),
            ("optuna-dashboard", "OPTUNA_DASHBOARD_VERSION"))
    for name, arg in pins:
        assert args[arg] == locked[name], (arg, locked[name])
    assert "pip install -c constraints.txt -r /tmp/requirements.txt" in dockerfile
    # The torch build is an argument, the CPU build by default.
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    # Every package of the project goes into the image.
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))
    assert packages, "no top-level packages found"
    for package in packages:
        assert re.search(rf"^COPY {package} {package}$", dockerfile, re.MULTILINE), package


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for pattern in (".env", ".venv", ".git", "*.db"):
        assert pattern in ignored, pattern
    for package in (p.parent.name for p in ROOT.glob("*/__init__.py")):
        assert package not in ignored and f"{package}/" not in ignored


def test_every_published_port_binds_loopback_and_reaches_its_listener(
        services: dict[str, dict]) -> None:
    listeners = {
        "ray-head": lambda: (options(find_command(services["ray-head"], "ray", "start")),
                             "--dashboard-host", "--dashboard-port"),
        "optuna-dashboard": lambda: (options(find_command(services["optuna-dashboard"],
                                                          "python", "-m", "dashboards.browse")),
                                     "--host", "--port"),
        "dashboard": lambda: (options(find_command(services["dashboard"], "python", "-m",
                                                   "dashboards.serve")), "--host", "--port"),
    }
    with_ports = {name for name, service in services.items() if service.get("ports")}
    assert with_ports == set(listeners), "only the three web pages are published"
    for name, listener in listeners.items():
        [(host, host_port, container_port)] = published(services[name])
        assert host == LOOPBACK, f"{name} publishes on {host}"
        assert host_port > 0
        opts, host_flag, port_flag = listener()
        # Inside its container the page listens on every interface, on the published port.
        assert opts[host_flag] == "0.0.0.0", name
        assert int(opts[port_flag]) == container_port, name
    assert "network_mode" not in str(services)


def test_storage_urls_all_name_the_postgres_service_and_its_credentials(
        services: dict[str, dict]) -> None:
    password, user, db = (secrets.token_hex(8), "u" + secrets.token_hex(3),
                          "d" + secrets.token_hex(3))
    chosen = load_compose(POSTGRES_PASSWORD=password, POSTGRES_USER=user,
                          POSTGRES_DB=db)["services"]
    postgres = chosen["postgres"]["environment"]
    assert (postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_USER"],
            postgres["POSTGRES_DB"]) == (password, user, db)
    urls = _storage_urls(chosen)
    assert len(urls) == 3 + len(RAY_SERVICES)
    for where, text in urls.items():
        url = make_url(text)
        assert (url.drivername, url.host, url.port) == ("postgresql", "postgres", 5432), where
        assert (url.username, url.password, url.database) == (user, password, db), where
    # The password has no default anywhere: a missing one stops Compose, not the search.
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        load_compose(POSTGRES_PASSWORD="")
    assert "ports" not in services["postgres"], "PostgreSQL stays inside the compose network"
    assert mounts(services["postgres"]) == {"pgdata": "/var/lib/postgresql/data"}


def test_healthchecks_run_on_docker_and_podman(services: dict[str, dict]) -> None:
    """Compose waits for these before it starts the workers, the search and the dashboards."""
    checked = {name for name, service in services.items() if "healthcheck" in service}
    assert checked == {"postgres", "ray-head"}
    for name in checked:
        kind, *argv = services[name]["healthcheck"]["test"]
        assert kind in ("CMD", "CMD-SHELL"), name
        if kind == "CMD":
            # podman 4's Docker API splits a CMD healthcheck's arguments at spaces.
            assert not [word for word in argv if " " in word], (name, argv)


def test_ray_head_runs_no_trials_and_every_node_joins_its_port(services: dict[str, dict]) -> None:
    head = options(find_command(services["ray-head"], "ray", "start"))
    assert head["--head"] is True and head["--block"] is True
    assert head["--num-cpus"] == "0" and head["--num-gpus"] == "0"
    gcs = f"ray-head:{head['--port']}"
    for name in WORKERS:
        worker = options(find_command(services[name], "ray", "start"))
        assert worker["--address"] == gcs, name
        assert worker["--block"] is True, name
        assert "--num-cpus" not in worker, f"{name} offers its container's CPUs"
    # The search container joins as a node without resources (drivers need a local node) ...
    driver_node = options(find_command(services["search"], "ray", "start"))
    assert driver_node["--address"] == gcs
    assert (driver_node["--num-cpus"], driver_node["--num-gpus"]) == ("0", "0")
    assert "--block" not in driver_node
    # ... and the search reaches the same head.
    search = build_parser().parse_args(find_command(services["search"], "python", "-m",
                                                    "search.run"))
    assert search.ray_address == gcs
    # Every Ray process authenticates with the one token from .env.
    token = secrets.token_hex(32)
    chosen = load_compose(RAY_AUTH_TOKEN=token)["services"]
    for name in RAY_SERVICES:
        assert chosen[name]["environment"]["RAY_AUTH_MODE"] == "token", name
        assert chosen[name]["environment"]["RAY_AUTH_TOKEN"] == token, name
    # Every option given to `ray start` exists in this Ray.
    known = help_options([RAY, "start"])
    for name in ("ray-head", *WORKERS, "search"):
        assert set(options(find_command(services[name], "ray", "start"))) <= known, name


def _size_bytes(text: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", str(text).lower()).groups()
    return float(number) * 1024 ** " kmg".index(unit or " ")


def test_workers_reserve_gpus_scale_and_have_shared_memory(services: dict[str, dict]) -> None:
    gpu, cpu = services["ray-worker"], services["ray-worker-cpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "deploy" not in cpu
    assert find_command(gpu, "ray", "start") == find_command(cpu, "ray", "start")
    assert (gpu["profiles"], cpu["profiles"]) == (["gpu"], ["cpu"])
    # .env.example starts CPU workers, which work on any machine; the gpu profile is its
    # commented block (see test_env_example_selects_cpu_workers_and_documents_the_gpu_switch).
    assert read_env_file(ENV_EXAMPLE)["COMPOSE_PROFILES"] == "cpu"
    for worker in (gpu, cpu):
        # `--scale ray-worker=N` needs no fixed container name and no host port.
        assert "container_name" not in worker and "ports" not in worker
        assert _size_bytes(worker["shm_size"]) >= 1024 ** 3
        assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_search_command_parses_and_shares_the_checkpoint_folder(services: dict[str, dict]) -> None:
    argv = find_command(services["search"], "python", "-m", "search.run")
    args = build_parser().parse_args(argv)
    settings_from(args).validate()
    assert "search" in services["search"]["profiles"]
    assert args.gpus_per_trial == float(read_env_file(ENV_EXAMPLE)["GPUS_PER_TRIAL"])
    # Checkpoints and data sets: one volume each, at the path the search is given, on every
    # process that may open them (driver, head for `ray job submit`, workers).
    for volume, path in (("artifacts", args.artifacts_dir), ("data", args.data_dir)):
        assert Path(path).is_absolute()
        for name in RAY_SERVICES:
            assert mounts(services[name]).get(volume) == path, f"{volume} on {name}"
    assert {"pgdata", "artifacts", "data"} <= set(load_compose()["volumes"])
    # Options given to `docker compose run --rm search ...` replace the defaults and win.
    assert argv[-len(_argv(services["search"]["command"])):] == \
        _argv(services["search"]["command"])


def test_dashboard_commands_use_options_their_programs_have(services: dict[str, dict]) -> None:
    browse_argv = find_command(services["optuna-dashboard"], "python", "-m", "dashboards.browse")
    assert set(options(browse_argv)) <= help_options([sys.executable, "-m", "dashboards.browse"])
    serve_argv = find_command(services["dashboard"], "python", "-m", "dashboards.serve")
    assert set(options(serve_argv)) <= help_options([sys.executable, "-m", "dashboards.serve"])
    for name in ("optuna-dashboard", "dashboard"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        # Bound to every interface of its container, each page answers its service name.
        argv = options(find_command(services[name], "python", "-m",
                                    "dashboards.browse" if name == "optuna-dashboard"
                                    else "dashboards.serve"))
        assert argv["--allowed-hosts"] == name
    # optuna-dashboard shows the HetNAS figures and keeps them current while a search runs
    # (drawn again when a study's trials change), not a snapshot of the first look.
    assert float(options(browse_argv)["--refresh"]) <= 30


def _gpu_lines(text: str) -> list[str]:
    """The commented gpu block of .env.example, uncommented."""
    return re.findall(r"^# ((?:COMPOSE_PROFILES|TORCH_INDEX_URL|GPUS_PER_TRIAL)=.*)$", text,
                      re.MULTILINE)


def test_env_example_selects_cpu_workers_and_documents_the_gpu_switch(tmp_path: Path) -> None:
    text = ENV_EXAMPLE.read_text()
    cpu = read_env_file(ENV_EXAMPLE)
    assert (cpu["COMPOSE_PROFILES"], cpu["GPUS_PER_TRIAL"]) == ("cpu", "0")
    assert cpu["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    # Uncommenting the gpu lines (they follow the cpu ones, and a later line wins) switches
    # workers, the torch build and the trials' GPUs together.
    lines = _gpu_lines(text)
    assert len(lines) == 3, lines
    gpu_env = tmp_path / "gpu.env"
    gpu_env.write_text(text + "\n".join(lines) + "\n")
    gpu = read_env_file(gpu_env)
    assert (gpu["COMPOSE_PROFILES"], gpu["GPUS_PER_TRIAL"]) == ("gpu", "1")
    assert gpu["TORCH_INDEX_URL"] == "https://pypi.org/simple"
    services = _interpolated(yaml.safe_load(COMPOSE.read_text()), gpu)["services"]
    assert services["ray-head"]["build"]["args"]["TORCH_INDEX_URL"] == gpu["TORCH_INDEX_URL"]
    search = build_parser().parse_args(find_command(services["search"], "python", "-m",
                                                    "search.run"))
    assert search.gpus_per_trial == 1
    # Docker Compose accepts the gpu profile as written (not started: no GPU here).
    binary = _compose_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is missing; .ci/run installs Debian's docker-compose")
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run([*binary, "--env-file", str(gpu_env), "-f", str(COMPOSE), "--profile",
                             "search", "config"], capture_output=True, text=True, cwd=tmp_path,
                            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)["services"]
    assert config["ray-worker"]["profiles"] == ["gpu"]
    [device] = config["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    command = config["search"]["command"]
    assert command[command.index("--gpus-per-trial") + 1] == "1"


def test_env_example_documents_every_variable_the_compose_file_reads() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Za-z_]\w*)", text))
    required = set(re.findall(r"\$\{([A-Za-z_]\w*):?\?", text))
    documented = read_env_file(ENV_EXAMPLE)
    assert required == {"POSTGRES_PASSWORD", "RAY_AUTH_TOKEN"}
    assert used <= set(documented), used - set(documented)
    assert set(documented) - used <= {"COMPOSE_PROFILES"}, "stale keys in .env.example"


# -- the same topology with real processes -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _session_pids(session: int) -> list[int]:
    pids = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getsid(process.pid) == session and \
                    process.info["status"] != psutil.STATUS_ZOMBIE:
                pids.append(process.pid)
        except OSError:
            continue
    return pids


def _kill_session(session: int) -> None:
    """Stop every process of one of our sessions: SIGTERM, then SIGKILL what is left."""
    assert session != os.getsid(0)
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pid in _session_pids(session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _session_pids(session) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _session_pids(session):
            return


class LocalCluster:
    """Processes started in sessions of their own; ``close`` kills exactly those sessions."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.sessions: list[int] = []

    def start(self, argv: list[str], log: str, env: dict[str, str]) -> subprocess.Popen:
        with open(self.root / log, "w") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       env={**self.env, **env}, cwd=self.root)
        self.sessions.append(process.pid)
        return process

    def run(self, argv: list[str], log: str, env: dict[str, str], timeout: float) -> str:
        """Run to the end (its daemons stay, in its session); fail with its log if it fails."""
        process = self.start(argv, log, env)
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
        output = (self.root / log).read_text()
        if status != 0:
            pytest.fail(f"`{shlex.join(argv[:4])} ...` "
                        f"{'timed out' if status is None else f'exited {status}'}:\n"
                        f"{output[-4000:]}")
        return output

    def node_id(self, session: int) -> str:
        """The Ray node id of the raylet started in ``session``."""
        for pid in _session_pids(session):
            try:
                cmdline = psutil.Process(pid).cmdline()
            except psutil.Error:
                continue
            if cmdline and cmdline[0].endswith("/raylet"):
                for word in cmdline:
                    if word.startswith("--node_id="):
                        return word.split("=", 1)[1]
        raise AssertionError(f"no raylet in session {session}")

    def close(self) -> None:
        for session in reversed(self.sessions):
            _kill_session(session)


@pytest.fixture
def local_cluster() -> Iterator[LocalCluster]:
    # Short: Ray's socket paths under it must stay below the 107-character limit.
    root = Path(tempfile.mkdtemp(prefix="hetnas-ray-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "HETNAS_STORAGE"))}
    cluster = LocalCluster(root, base)
    try:
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


def _get(url: str, deadline: float) -> bytes:
    """GET ``url``, retrying until it answers 200 or ``deadline`` passes."""
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError as failure:
            error = failure
            time.sleep(0.3)
    raise AssertionError(f"{url} never answered: {error}")


def test_search_on_a_two_node_cluster_trains_on_the_worker_and_dashboards_read_it(
        local_cluster: LocalCluster, postgres_url: str, study_name: str) -> None:
    started = time.monotonic()
    token = secrets.token_hex(32)
    services = load_compose(RAY_AUTH_TOKEN=token)["services"]
    env = {name: {k: str(v) for k, v in services[name]["environment"].items()}
           for name in RAY_SERVICES}
    root = local_cluster.root
    small_store = "--object-store-memory=100000000"

    # The head, as ray-head runs it: no CPUs, no GPUs. Ports are free ones, nothing on 0.0.0.0,
    # and no --block: `ray start` returns once the node is up.
    port = _free_port()
    head_argv = with_options(find_command(services["ray-head"], "ray", "start"), port=str(port),
                             dashboard_host=LOOPBACK, dashboard_port=str(_free_port()),
                             dashboard_agent_listen_port=str(_free_port()),
                             temp_dir=str(root / "head"), block=None)
    local_cluster.run([RAY, "start", *head_argv, small_store], "head.log", env["ray-head"], 120)
    head_id = local_cluster.node_id(local_cluster.sessions[-1])

    # A worker, as ray-worker runs it, joined at 127.0.0.1 instead of the service name.
    worker_argv = with_options(find_command(services["ray-worker"], "ray", "start"),
                               address=f"{LOOPBACK}:{port}", num_cpus="2", num_gpus="0",
                               dashboard_agent_listen_port=str(_free_port()),
                               temp_dir=str(root / "worker"), block=None)
    local_cluster.run([RAY, "start", *worker_argv, small_store], "worker.log", env["ray-worker"],
                      120)
    worker_id = local_cluster.node_id(local_cluster.sessions[-1])
    assert worker_id != head_id

    # The search, as the search service runs it, with a tiny search appended (later options
    # win), the local PostgreSQL as storage and the head at 127.0.0.1.
    budget = Architecture.uniform("resnet20", 16, 8).macs  # baselines P16, P32, P64: 3 trials
    artifacts = root / "artifacts"
    search_argv = find_command(services["search"], "python", "-m", "search.run") + [
        "--budget", str(budget), "--backbone", "resnet20", "--input-size", "8", "--trials", "0",
        "--epochs", "1", "--batch-size", "64", "--sampler", "random", "--gpus-per-trial", "0",
        "--cpus-per-trial", "1", "--max-concurrent", "2", "--storage", postgres_url,
        "--study", study_name, "--ray-address", f"{LOOPBACK}:{port}",
        "--artifacts-dir", str(artifacts), "--data-dir", str(root)]
    # Without the token the head refuses the driver: one line, before anything is written.
    tokenless = {k: v for k, v in env["search"].items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run([sys.executable, "-m", "search.run", *search_argv],
                             env={**local_cluster.env, **tokenless, "RAY_AUTH_MODE": "disabled"},
                             cwd=root, capture_output=True, text=True, timeout=120)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert len(lines) == 1 and "requires Ray's token authentication" in lines[0], lines
    assert study_name not in optuna.get_all_study_names(postgres_url)
    assert not artifacts.exists()
    output = local_cluster.run([sys.executable, "-m", "search.run", *search_argv], "search.log",
                               {**env["search"], "HETNAS_STORAGE": postgres_url}, 150)

    # Every trained trial ran on the worker node, never on the head.
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    trials = [t for t in study.get_trials() if t.user_attrs.get(records.STATUS) == records.COMPLETE]
    assert len(trials) == 3, output
    assert {t.user_attrs[records.NODE] for t in trials} == {worker_id}, (head_id, worker_id)
    for trial in trials:
        checkpoint = Path(trial.user_attrs[records.CHECKPOINT])
        assert checkpoint.is_file() and checkpoint.is_relative_to(artifacts)
    assert [r.status for r in records.read_records(study)] == [records.COMPLETE] * 3

    # The dashboards read the result: optuna-dashboard with the HetNAS figures and the live
    # page, started with the compose file's own commands (for this study only: the test
    # database holds other tests' studies), and the HTML report.
    optuna_port, live_port = _free_port(), _free_port()
    browse_argv = with_options(find_command(services["optuna-dashboard"], "python", "-m",
                                            "dashboards.browse"),
                               storage=postgres_url, host=LOOPBACK, port=str(optuna_port),
                               study=study_name)
    live_argv = with_options(find_command(services["dashboard"], "python", "-m",
                                          "dashboards.serve"),
                             storage=postgres_url, host=LOOPBACK, port=str(live_port),
                             study=study_name)
    local_cluster.start([sys.executable, "-m", "dashboards.browse", *browse_argv], "optuna.log",
                        {})
    local_cluster.start([sys.executable, "-m", "dashboards.serve", *live_argv], "live.log", {})

    report = root / "report.html"
    result = subprocess.run([sys.executable, "-m", "dashboards.report", "--storage", postgres_url,
                             "--study", study_name, "--out", str(report)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert study_name in report.read_text()

    deadline = time.monotonic() + 60
    studies = json.loads(_get(f"http://{LOOPBACK}:{optuna_port}/api/studies", deadline))
    [study_id] = [s["study_id"] for s in studies["study_summaries"]
                  if s["study_name"] == study_name]
    detail = json.loads(_get(f"http://{LOOPBACK}:{optuna_port}/api/studies/{study_id}?after=0",
                             deadline))
    assert {g["id"] for g in detail["plotly_graph_objects"]} == \
        set(graph_ids(table_from_study(study)))
    assert b"<html" in _get(f"http://{LOOPBACK}:{live_port}/", deadline).lower()
    live = json.loads(_get(f"http://{LOOPBACK}:{live_port}/api/study?name={study_name}",
                           deadline))
    assert (live["name"], live["trials"]) == (study_name, 3)
    assert time.monotonic() - started < 240
