# The README's two commands: `make search` (set up, run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BUDGET ?= 3e8
LOCK_VENV := .lock-venv

.PHONY: setup test search lock

setup: $(VENV)/.installed

# torch is pinned to the CPU build that lies on the CI disk; an unpinned torch pulls a CUDA build.
# constraints.txt holds the exact versions the suite last passed with (`make lock` refreshes it);
# pyproject.toml keeps the ranges a library user needs.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

search: setup
	$(PY) -m search.run --budget $(BUDGET)

# The newest releases pyproject.toml allows, written to constraints.txt (torch without its local
# build label, so the CUDA build of the same version satisfies it). Run `make test` before
# committing the refreshed file: the lock holds only versions the suite passed with.
lock:
	rm -rf $(LOCK_VENV)
	python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q torch==2.13.0
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[test]"
	{ echo "# Exact versions the test suite passed with; refresh with 'make lock', then 'make test'."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -v '^hetnas' \
	    | sed 's/^torch==\([0-9.]*\)+.*/torch==\1/'; } > constraints.txt
	rm -rf $(LOCK_VENV)
