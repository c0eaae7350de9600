"""docker-compose.yml started for real: podman runs the images, Docker Compose the services.

The stack is the user's: the Dockerfile's image on a Debian base made with debootstrap
(``tests/compose/debian-base.sh``: no image registry is reachable here), PostgreSQL from
``tests/compose/postgres.Dockerfile`` on the same base (``POSTGRES_IMAGE``), and the compose file
unchanged, driven by Debian's ``docker-compose`` through podman's Docker-compatible socket:
PostgreSQL, the Ray head, two CPU workers and both dashboards come up, the ``search`` service
runs a tiny search, then resumes it with one searched architecture. Everything is checked from
outside the containers: the study in PostgreSQL (every trained trial ran on a worker container),
optuna-dashboard's HetNAS figures (as the dashboards draw them from the study now, after each
stage), the live page, the published ports (127.0.0.1 only), and ``down -v`` leaving nothing.

Podman runs its healthchecks from systemd timers; without systemd (this machine, most CI
containers) they never run, and Compose would wait for ``service_healthy`` forever, so this
test runs ``podman healthcheck run`` itself, as docs/CLUSTER.md tells such a host to.

Under ``CI=true`` a missing tool is a failure (``.ci/run`` installs them); elsewhere the test
skips with the reason. Images are built with podman's layer cache: a second run rebuilds only
what changed (the base image is reused while its script is unchanged).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import optuna
import psutil
import pytest

from dashboards.data import table_from_study
from dashboards.figures import all_figures
from dashboards.optuna_figures import GRAPH_PREFIX
from search.store import records
from space import Architecture

pytestmark = pytest.mark.compose

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
HELPERS = ROOT / "tests" / "compose"
BASE_IMAGE = "localhost/hetnas-base:bookworm"
POSTGRES_IMAGE = "localhost/hetnas-postgres:15"
LOOPBACK = "127.0.0.1"
# The three web pages and their ports inside the containers; nothing else is published.
PAGES = {"ray-head": 8265, "optuna-dashboard": 8080, "dashboard": 8050}
PORT_VARIABLES = {"ray-head": "RAY_DASHBOARD_PORT", "optuna-dashboard": "OPTUNA_DASHBOARD_PORT",
                  "dashboard": "HETNAS_DASHBOARD_PORT"}
WORKERS = 2
# Services that exit while the database holds no study yet (and restart, `restart:
# unless-stopped`): none, both dashboards wait for it.
EXIT_BEFORE_A_STUDY: set[str] = set()
# What a stage of the stack may take on a busy 2-core machine.
UP_S, SEARCH_S, PAGE_S = 300, 420, 120


def _missing_tools() -> str | None:
    """Why this machine cannot run the stack, or None."""
    if os.geteuid() != 0:
        return "needs root (rootful podman with a bridge network, debootstrap)"
    for tool, package in (("podman", "podman"), ("docker-compose", "docker-compose"),
                          ("debootstrap", "debootstrap"), ("ss", "iproute2")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install {package})"
    # `init: true`: podman's Docker API takes the init binary from this path only.
    if not Path("/usr/libexec/podman/catatonit").exists():
        return "podman's init binary is missing (apt-get install catatonit)"
    probe = subprocess.run(["podman", "info", "--format", "{{.Host.NetworkBackend}}"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        return f"podman cannot run here: {probe.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def tools() -> None:
    problem = _missing_tools()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the compose stack test needs podman under CI: {problem}; .ci/run "
                        f"installs podman, catatonit, debootstrap and docker-compose")
        pytest.skip(problem)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _read_env(path: Path) -> dict[str, str]:
    """An env file's variables as Compose reads them (a later line wins)."""
    return dict(line.partition("=")[::2] for line in path.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#"))


def _env_file_text(overrides: dict[str, str]) -> str:
    """.env.example with ``overrides`` in place of its values (comments kept)."""
    lines, seen = [], set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        key = line.partition("=")[0].strip()
        if not line.lstrip().startswith("#") and key in overrides:
            line = f"{key}={overrides[key]}"
            seen.add(key)
        lines.append(line)
    assert seen == set(overrides), f"not in .env.example: {set(overrides) - seen}"
    return "\n".join(lines) + "\n"


# -- the engine -----------------------------------------------------------------------------------


@dataclass
class Engine:
    """podman with this test's configuration, its API socket, and docker-compose on it."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    service: subprocess.Popen | None = None
    log: list[str] = field(default_factory=list)

    def run(self, argv: list[str], timeout: float, check: bool = True,
            **kwargs) -> subprocess.CompletedProcess:
        started = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env,
                                timeout=timeout, **kwargs)
        self.log.append(f"{time.monotonic() - started:6.1f} s  "
                        f"{' '.join(argv[:8]).splitlines()[0][:110]}")
        if check and result.returncode != 0:
            pytest.fail(f"`{' '.join(argv)}` exited {result.returncode}:\n"
                        f"{(result.stdout + result.stderr)[-6000:]}")
        return result

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return self.run(["podman", *args], timeout, check).stdout

    def start(self) -> None:
        """podman's Docker-compatible API on a socket of this test, in a session of its own."""
        socket_path = self.root / "podman.sock"
        with open(self.root / "podman.log", "w") as log:
            self.service = subprocess.Popen(
                ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while not socket_path.exists():
            assert self.service.poll() is None, (self.root / "podman.log").read_text()
            assert time.monotonic() < deadline, "podman's API socket never appeared"
            time.sleep(0.2)
        self.env["DOCKER_HOST"] = f"unix://{socket_path}"

    def stop(self) -> None:
        if self.service is not None and self.service.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.service.pid, signal.SIGTERM)
            try:
                self.service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.service.pid, signal.SIGKILL)
                self.service.wait(timeout=20)


@pytest.fixture(scope="module")
def engine(tools: None) -> Iterator[Engine]:
    # Short: podman's socket path must stay below the 107-character limit.
    root = Path(tempfile.mkdtemp(prefix="hetnas-compose-"))
    # Podman's default ulimits are raised to the host's maximum, which a sandboxed machine may
    # refuse ("error setting rlimits"); none is needed here.
    (root / "containers.conf").write_text("[containers]\ndefault_ulimits = []\n")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DOCKER_", "COMPOSE_", "CONTAINERS_"))}
    env["CONTAINERS_CONF"] = str(root / "containers.conf")
    engine = Engine(root, env)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)
        print("\ncompose stack, the steps of a second or more:\n" +
              "\n".join(line for line in engine.log if not line.startswith("   0.")))


# -- the images -----------------------------------------------------------------------------------


def _torch_index(engine: Engine) -> str | None:
    """A package index with the CPU build of the Dockerfile's torch from this machine's pip
    sources (its find-links, its mirror), for a machine that cannot reach PyTorch's index;
    mounted at /mnt in the build. None where pip finds no such wheel: the Dockerfile's default
    index is used then."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    torch = re.search(r"^ARG TORCH_VERSION=(\S+)$", dockerfile, re.MULTILINE)[1]
    python = engine.podman("run", "--rm", BASE_IMAGE, "python3", "-c",
                           "import sys; print('%d%d' % sys.version_info[:2])").strip()
    files = engine.root / "index" / "files"
    result = engine.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(files),
                         "--only-binary=:all:", "--implementation", "cp", "--python-version",
                         python, "--abi", f"cp{python}", "--platform", "manylinux_2_28_x86_64",
                         "--platform", "manylinux_2_17_x86_64", "--platform",
                         "manylinux2014_x86_64", f"torch=={torch}+cpu"], timeout=600, check=False)
    if result.returncode != 0:
        return None
    for wheel in files.iterdir():
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        page = engine.root / "index" / "simple" / project / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        with page.open("a") as out:
            out.write(f'<a href="../../files/{wheel.name}">{wheel.name}</a>\n')
    return "file:///mnt/simple"


@pytest.fixture(scope="module")
def images(engine: Engine) -> None:
    """The base, HetNAS and PostgreSQL images (podman's cache makes a repeat quick)."""
    engine.run([str(HELPERS / "debian-base.sh")], timeout=900)
    build = ["podman", "build", "--quiet", "--network", "host",
             "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--tag", f"hetnas:{version('hetnas')}"]
    index = _torch_index(engine)
    if index is not None:
        build += ["--volume", f"{engine.root / 'index'}:/mnt:ro",
                  "--build-arg", f"TORCH_INDEX_URL={index}"]
    # The build trusts what this machine trusts (a TLS-inspecting proxy's CA, say); mounted
    # over the image's own store while building, never part of the image.
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file():
        build += ["--volume", f"{bundle}:{bundle}:ro"]
    engine.run([*build, str(ROOT)], timeout=1500)
    engine.run(["podman", "build", "--quiet", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                "--file", str(HELPERS / "postgres.Dockerfile"), "--tag", POSTGRES_IMAGE,
                str(HELPERS)], timeout=600)
    shutil.rmtree(engine.root / "index", ignore_errors=True)


# -- the stack ------------------------------------------------------------------------------------


class Healthchecks:
    """Runs the healthchecks of a project's starting containers every 2 s, in a thread, where
    podman has no systemd to run them."""

    def __init__(self, engine: Engine, project: str) -> None:
        self.engine, self.project = engine, project
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="healthchecks", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(2):
            with contextlib.suppress(subprocess.TimeoutExpired):
                listing = subprocess.run(
                    ["podman", "ps", "--format", "{{.ID}} {{.Status}}", "--filter",
                     f"label=com.docker.compose.project={self.project}"],
                    capture_output=True, text=True, env=self.engine.env, timeout=60)
                for line in listing.stdout.splitlines():
                    container, _, status = line.partition(" ")
                    if "(starting)" in status or "(unhealthy)" in status:
                        subprocess.run(["podman", "healthcheck", "run", container],
                                       capture_output=True, env=self.engine.env, timeout=60)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=70)


@dataclass
class Stack:
    engine: Engine
    project: str
    env_file: Path
    settings: dict[str, str]

    def compose(self, *args: str, timeout: float = UP_S,
                check: bool = True) -> subprocess.CompletedProcess:
        return self.engine.run(["docker-compose", "--ansi", "never", "--project-name", self.project,
                                "--file", str(COMPOSE), "--env-file", str(self.env_file),
                                *args], timeout, check, cwd=self.engine.root)

    def containers(self, service: str | None = None) -> list[dict]:
        """``podman inspect`` of the project's running containers (of ``service``)."""
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service is not None:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = self.engine.podman("ps", "--quiet", *filters).split()
        return json.loads(self.engine.podman("inspect", *ids)) if ids else []

    def one(self, service: str) -> dict:
        [container] = self.containers(service)
        return container

    def address(self, service: str) -> str:
        """The container's address on the project's network (the host reaches it: podman
        runs as root)."""
        [address] = {network["IPAddress"] for network in
                     self.one(service)["NetworkSettings"]["Networks"].values()}
        return address

    def storage_url(self) -> str:
        s = self.settings
        return (f"postgresql://{s['POSTGRES_USER']}:{s['POSTGRES_PASSWORD']}@"
                f"{self.address('postgres')}:5432/{s['POSTGRES_DB']}")

    def url(self, service: str, path: str) -> str:
        return f"http://{LOOPBACK}:{self.settings[PORT_VARIABLES[service]]}{path}"

    def logs(self) -> str:
        result = self.compose("logs", "--no-color", "--tail=25", timeout=120, check=False)
        return (result.stdout + result.stderr)[-8000:]


@pytest.fixture(scope="module")
def stack(engine: Engine, images: None) -> Iterator[Stack]:
    project = f"hetnas-test-{secrets.token_hex(3)}"
    settings = {
        "POSTGRES_PASSWORD": secrets.token_hex(16), "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "COMPOSE_PROFILES": "cpu", "BASE_IMAGE": BASE_IMAGE, "POSTGRES_IMAGE": POSTGRES_IMAGE,
        **{variable: str(_free_port()) for variable in PORT_VARIABLES.values()}}
    env_file = engine.root / "stack.env"
    env_file.write_text(_env_file_text(settings))
    stack = Stack(engine, project, env_file, _read_env(env_file))
    checks = Healthchecks(engine, project)
    try:
        up = stack.compose("up", "--detach", "--no-build", "--scale", f"ray-worker-cpu={WORKERS}",
                           check=False)
        if up.returncode != 0:
            pytest.fail(f"docker-compose up exited {up.returncode}:\n{up.stderr[-3000:]}\n"
                        f"{stack.logs()}")
        yield stack
    finally:
        checks.stop()
        stack.compose("down", "--volumes", "--remove-orphans", timeout=300, check=False)


# -- what the checks read -------------------------------------------------------------------------


def _get(url: str, deadline: float, host: str | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET, retrying while nothing answers until ``deadline``."""
    error: Exception | None = None
    while time.monotonic() < deadline:
        request = urllib.request.Request(url, headers={"Host": host} if host else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read()
        except OSError as failure:
            error = failure
            time.sleep(1)
    raise AssertionError(f"{url} never answered: {error}")


def _node_ids(stack: Stack, service: str) -> dict[str, str]:
    """Ray node id -> container name, read from the raylet's command line in each container."""
    script = ("import pathlib\n"
              "for p in pathlib.Path('/proc').glob('[0-9]*/cmdline'):\n"
              "    try: argv = p.read_bytes().split(b'\\0')\n"
              "    except OSError: continue\n"
              "    if argv[0].endswith(b'/raylet'):\n"
              "        print(*[a[10:].decode() for a in argv if a.startswith(b'--node_id=')])\n")
    ids = {}
    deadline = time.monotonic() + UP_S
    for container in stack.containers(service):
        name = container["Name"]
        # `ray start` takes seconds to start the raylet after the container started.
        while not (found := stack.engine.podman("exec", name, "python", "-c", script).split()):
            assert time.monotonic() < deadline, f"no raylet in {name}"
            time.sleep(1)
        [node] = found
        ids[node] = name
    return ids


def _served_figures(stack: Stack, study_name: str, deadline: float) -> dict[str, list]:
    """optuna-dashboard's custom figures of the study: id -> trace names."""
    status, body = _get(stack.url("optuna-dashboard", "/api/studies"), deadline)
    assert status == 200, body[:500]
    [study_id] = [s["study_id"] for s in json.loads(body)["study_summaries"]
                  if s["study_name"] == study_name]
    status, body = _get(stack.url("optuna-dashboard", f"/api/studies/{study_id}?after=0"),
                        deadline)
    assert status == 200, body[:500]
    return {graph["id"]: _trace_names(graph["graph_object"])
            for graph in json.loads(body)["plotly_graph_objects"]}


def _trace_names(graph_object: str) -> list | None:
    """The trace names of one served figure, or None for a figure caught mid-write:
    optuna-dashboard saves a figure as 2,045-character study attributes written one by one, so
    a read between the first and the last of them joins pieces of two versions (the next read
    gets the whole new one)."""
    try:
        figure = json.loads(graph_object)
    except json.JSONDecodeError:
        return None
    return [trace.get("name") for trace in figure["data"]]


def _drawn_now(study: optuna.Study) -> dict[str, list]:
    """The figures the dashboards draw from the study as it is now: id -> trace names (the
    names count the points: 'uniform baseline (5)', 'complete (1)', ...)."""
    figures = all_figures(table_from_study(study))
    return {GRAPH_PREFIX + key: [trace.name for trace in figure.data]
            for key, figure in figures.items()}


def _wait_for_figures(stack: Stack, study: optuna.Study, timeout: float) -> dict[str, list]:
    """optuna-dashboard's figures once they are the study's current ones; fails after
    ``timeout`` with what it served last."""
    expected = _drawn_now(study)
    deadline = time.monotonic() + timeout
    served: dict[str, list] = {}
    while time.monotonic() < deadline:
        served = _served_figures(stack, study.study_name, deadline)
        if served == expected:
            return served
        time.sleep(2)
    raise AssertionError(f"optuna-dashboard's figures are not the study's current ones:\n"
                         f"served   {served}\nexpected {expected}")


def _check_trials(study: optuna.Study, workers: dict[str, str], head: set[str],
                  trained: int) -> set[str]:
    """Every trained trial ran on a worker container; the containers that ran them."""
    done = [t for t in study.get_trials() if t.user_attrs.get(records.STATUS) == records.COMPLETE]
    assert len(done) == trained, [t.user_attrs.get(records.STATUS) for t in study.get_trials()]
    nodes = {t.number: t.user_attrs[records.NODE] for t in done}
    assert not set(nodes.values()) & head, f"a trial ran on the Ray head: {nodes}"
    assert set(nodes.values()) <= set(workers), f"trials on unknown nodes: {nodes} {workers}"
    for trial in done:
        assert trial.user_attrs[records.CHECKPOINT].startswith("/artifacts/"), trial.number
    return {workers[node] for node in nodes.values()}


def _check_live_page(stack: Stack, study: optuna.Study, deadline: float) -> None:
    table = table_from_study(study)
    status, page = _get(stack.url("dashboard", "/"), deadline)
    assert status == 200 and b"<html" in page.lower()
    while True:
        status, body = _get(stack.url("dashboard", f"/api/study?name={study.study_name}"),
                            deadline)
        live = json.loads(body) if status == 200 else {}
        if (live.get("name"), live.get("trials"), live.get("version")) == \
                (study.study_name, len(table), table.version) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert (live.get("name"), live.get("trials"), live.get("version")) == \
        (study.study_name, len(table), table.version), (status, body[:500])


def _check_published_ports(stack: Stack) -> None:
    """Only the three pages are published, on 127.0.0.1, and only there does anything listen."""
    published = {}
    for container in stack.containers():
        service = container["Config"]["Labels"]["com.docker.compose.service"]
        for port, bindings in (container["HostConfig"].get("PortBindings") or {}).items():
            for binding in bindings or []:
                published[(service, port)] = (binding["HostIp"], binding["HostPort"])
    assert published == {(service, f"{port}/tcp"):
                         (LOOPBACK, stack.settings[PORT_VARIABLES[service]])
                         for service, port in PAGES.items()}
    host_ports = {int(stack.settings[variable]) for variable in PORT_VARIABLES.values()}
    listening = subprocess.run(["ss", "--listening", "--tcp", "--numeric", "--no-header"],
                               capture_output=True, text=True, check=True).stdout
    bound = {}
    for line in listening.splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        if int(port) in host_ports:
            bound.setdefault(int(port), set()).add(address.strip("[]"))
    assert bound == {port: {LOOPBACK} for port in host_ports}, bound
    # Nor does any other address of this machine reach them (podman forwards published ports
    # with its own firewall rules, which a listening socket does not show).
    others = {a.address for addresses in psutil.net_if_addrs().values() for a in addresses
              if a.family == socket.AF_INET and not a.address.startswith("127.")}
    for address in others:
        for port in host_ports:
            with socket.socket() as sock:
                sock.settimeout(3)
                assert sock.connect_ex((address, port)) != 0, f"{address}:{port} answers"


def _search(stack: Stack, study_name: str, budget: int, *extra: str) -> str:
    """``docker compose run --rm search`` with a tiny search appended (later options win)."""
    result = stack.compose(
        "run", "--rm", "-T", "search", "--study", study_name, "--budget", str(budget),
        "--backbone", "resnet20", "--input-size", "8", "--epochs", "1", "--batch-size", "64",
        "--sampler", "random", "--gpus-per-trial", "0", "--cpus-per-trial", "1",
        "--max-concurrent", str(WORKERS), *extra, timeout=SEARCH_S)
    return result.stdout + result.stderr


# -- the test -------------------------------------------------------------------------------------


def test_compose_stack_runs_a_search_on_its_workers_and_serves_it(stack: Stack) -> None:
    try:
        _exercise(stack)
    except BaseException:
        print(f"docker-compose logs of {stack.project}:\n{stack.logs()}")
        raise


def _exercise(stack: Stack) -> None:
    # Every long-running service is up: one container each, two CPU workers.
    running = {}
    for container in stack.containers():
        service = container["Config"]["Labels"]["com.docker.compose.service"]
        running[service] = running.get(service, 0) + 1
    assert running == {"postgres": 1, "ray-head": 1, "ray-worker-cpu": WORKERS,
                       "optuna-dashboard": 1, "dashboard": 1}, running
    workers = _node_ids(stack, "ray-worker-cpu")
    head = set(_node_ids(stack, "ray-head"))
    assert len(workers) == WORKERS and not head & set(workers)
    _check_published_ports(stack)
    status, _ = _get(stack.url("ray-head", "/"), time.monotonic() + PAGE_S)
    assert status == 200, "Ray's dashboard"

    # Stage 1: the uniform baselines alone. The budget is uniform P4's, so P4 ... P64 are
    # trained, and random proposals fit it often enough for stage 2.
    study_name = f"compose-{secrets.token_hex(4)}"
    budget = Architecture.uniform("resnet20", 4, 8).macs
    output = _search(stack, study_name, budget, "--trials", "0")
    storage = stack.storage_url()
    study = optuna.load_study(study_name=study_name, storage=storage)
    used = _check_trials(study, workers, head, trained=5)
    figures = _wait_for_figures(stack, study, PAGE_S)
    assert {GRAPH_PREFIX + key for key in ("pareto", "parts", "progress")} <= set(figures)
    _check_live_page(stack, study, time.monotonic() + PAGE_S)

    # Stage 2: the same study resumed with one searched architecture; optuna-dashboard (started
    # before the study existed) draws the figures again as the new trials arrive.
    output += _search(stack, study_name, budget, "--trials", "1", "--confirm-top", "0",
                      "--resume")
    study = optuna.load_study(study_name=study_name, storage=storage)
    used |= _check_trials(study, workers, head, trained=6)
    _wait_for_figures(stack, study, PAGE_S)
    _check_live_page(stack, study, time.monotonic() + PAGE_S)
    print(f"trials ran on {sorted(used)}")

    # The pages refuse a Host they were not told about (--allowed-hosts), as outside compose.
    for service in ("optuna-dashboard", "dashboard"):
        status, _ = _get(stack.url(service, "/"), time.monotonic() + 30, host="evil.example")
        assert status == 403, service
    # The long-running services never restarted (a crash shows here, not only in the logs).
    restarts = {c["Name"]: c["RestartCount"] for c in stack.containers()
                if c["Config"]["Labels"]["com.docker.compose.service"] not in EXIT_BEFORE_A_STUDY}
    assert set(restarts.values()) == {0}, restarts
    assert "Traceback" not in output, output[-4000:]
    # The database password stays out of the search's output (a terminal, a CI log).
    assert stack.settings["POSTGRES_PASSWORD"] not in output
    assert '--storage "$HETNAS_STORAGE"' in output

    # `down -v` leaves no container, network or volume of the project.
    stack.compose("down", "--volumes", "--remove-orphans", timeout=300)
    label = f"label=com.docker.compose.project={stack.project}"
    assert stack.engine.podman("ps", "--all", "--quiet", "--filter", label).split() == []
    assert stack.engine.podman("volume", "ls", "--quiet", "--filter", label).split() == []
    networks = stack.engine.podman("network", "ls", "--format", "{{.Name}}").split()
    assert not [n for n in networks if n.startswith(stack.project)], networks
