# One venv in .venv; every target builds it on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/mpimamba: pyproject.toml setup.py constraints.txt src/mpimamba/models/ssm/scan_kernels.c src/mpimamba/models/ssm/kernel_build.py
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

setup: $(BIN)/mpimamba

demo: setup
	$(BIN)/mpimamba demo demo-out --overwrite  # the target regenerates its own folder

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[bench]"
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-out
