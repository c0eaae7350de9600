# One image for every service of docker-compose.yml: the Ray head, the Ray workers, the search
# driver and both dashboards. Ray refuses to join processes whose Ray or Python (down to the
# patch level) differ, so the versions below are pinned and every container runs this image.
# The pins are constraints.txt's (the versions the suite passed with; a test keeps them equal),
# and the project's other dependencies are installed under that file too.
#
# CPU build (the default):   docker compose build
# GPU build (CUDA PyTorch):  TORCH_INDEX_URL=https://pypi.org/simple docker compose build
#   (PyPI's Linux torch wheels bundle CUDA; the host only needs the NVIDIA driver and the
#   NVIDIA Container Toolkit. .env.example says how to switch.)
# Another base image:        docker compose build with BASE_IMAGE=... in .env, or
#   podman build --build-arg BASE_IMAGE=localhost/hetnas-base:bookworm -t hetnas:0.2.0 .
#   Any Debian-like image with python3 and its venv module works; the Python patch version is
#   the base image's, the same in every container of the one image.
#   tests/compose/debian-base.sh makes one with debootstrap on a machine that cannot pull.

# The official Python image, pinned to the patch level (its Debian is bookworm).
ARG BASE_IMAGE=python:3.11.13-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG RAY_VERSION=2.60.0
ARG OPTUNA_VERSION=5.1.0
ARG OPTUNA_DASHBOARD_VERSION=0.21.0
# The project's version (pyproject.toml); docker-compose.yml tags the image with it.
ARG HETNAS_VERSION=0.2.0
# pip trusts the base image's CA store (not only its own copy of the public CAs), so a build
# behind a TLS-inspecting proxy works once the proxy's CA is in that store. A build argument:
# set while building, not in the image.
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt

# Everything goes into one virtual environment, first on PATH (python, pip, ray,
# optuna-dashboard): the same layout on every base, and never Debian's own python3 packages.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

# torch first, from the index that decides CPU or CUDA; the project's own `torch>=` requirement
# is then already met and pip leaves it alone.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
# ray[default] brings the Ray dashboard (port 8265) and `ray job submit`.
RUN pip install "ray[default,tune]==${RAY_VERSION}" "optuna==${OPTUNA_VERSION}" \
        "optuna-dashboard==${OPTUNA_DASHBOARD_VERSION}"

WORKDIR /opt/hetnas
# The project's other dependencies before its code, so that a change of code alone rebuilds
# only the last layers.
COPY pyproject.toml README.md constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))\
['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY hetconv hetconv
COPY space space
COPY search search
COPY dashboards dashboards
RUN pip install --no-deps . \
    && pip check \
    && python -c "import ray, torch; assert ray.__version__ == '${RAY_VERSION}', ray.__version__; \
assert torch.__version__.split('+')[0] == '${TORCH_VERSION}', torch.__version__; \
from importlib.metadata import version; \
assert version('hetnas') == '${HETNAS_VERSION}', 'pyproject.toml is at ' + version('hetnas')"

# An unprivileged user. The shared folders exist in the image with its ownership, so the named
# volumes mounted on them start out writable by it.
RUN useradd --create-home --uid 1000 hetnas \
    && mkdir -p /artifacts /data \
    && chown hetnas:hetnas /artifacts /data
USER hetnas
WORKDIR /home/hetnas

LABEL org.opencontainers.image.title="hetnas" \
      org.opencontainers.image.version="${HETNAS_VERSION}" \
      org.opencontainers.image.description="HetNAS: Ray head/worker, search driver, dashboards"
