# The README's two commands: `make search` (set up, run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BUDGET ?= 3e8

.PHONY: setup test search

setup: $(VENV)/.installed

# torch is pinned to the CPU build that lies on the CI disk; an unpinned torch pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

search: setup
	$(PY) -m search.run --budget $(BUDGET)
