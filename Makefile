# The two commands of the README's Quick start: `make demo` and `make test`.
# Both create the virtual environment first if it is missing or out of date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-all test-slow venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[all,test]"
	touch $@

demo: venv
	$(BIN)/genforge demo

# Two workers: the end-to-end modules (one PostgreSQL + Prefect stack, waiting on flow runs) on one, the rest beside
# them (the grouping: tests/conftest.py).
PYTEST := $(BIN)/python -m pytest -q -n 2 --durations=25

test: venv
	$(PYTEST)

test-all: venv
	$(PYTEST) -m "slow or not slow"

test-slow: venv
	$(PYTEST) -m slow

clean:
	rm -rf $(VENV)
