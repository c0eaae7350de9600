# syntax=docker/dockerfile:1
# One image for every service of docker-compose.yml: the Ray head, the Ray workers, the search
# driver and both dashboards. Ray refuses to join processes whose Ray or Python (down to the
# patch level) differ, so the versions below are pinned and every container runs this image.
#
# CPU build (the default):   docker compose build
# GPU build (CUDA PyTorch):  TORCH_INDEX_URL=https://pypi.org/simple docker compose build
#   (PyPI's Linux torch wheels bundle CUDA; the host only needs the NVIDIA driver and the
#   NVIDIA Container Toolkit. .env.example sets this for the gpu profile.)
ARG PYTHON_VERSION=3.11.13
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG RAY_VERSION=2.60.0
ARG OPTUNA_VERSION=5.0.0
ARG OPTUNA_DASHBOARD_VERSION=0.21.0
# The project's version (pyproject.toml); docker-compose.yml tags the image with it.
ARG HETNAS_VERSION=0.2.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

# torch first, from the index that decides CPU or CUDA; the project's own `torch>=` requirement
# is then already met and pip leaves it alone.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
# ray[default] brings the Ray dashboard (port 8265) and `ray job submit`.
RUN pip install "ray[default,tune]==${RAY_VERSION}" "optuna==${OPTUNA_VERSION}" \
        "optuna-dashboard==${OPTUNA_DASHBOARD_VERSION}"

WORKDIR /opt/hetnas
COPY pyproject.toml README.md ./
COPY hetconv hetconv
COPY space space
COPY search search
COPY dashboards dashboards
RUN pip install . \
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
