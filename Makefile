# The two front-door commands (README Quickstart): `make demo` and `make test`.
# Everything installs into .venv from the project's own files; torch is pinned by
# constraints.txt to the CPU wheel on disk (any looser spec pulls a CUDA build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=23.1" -c constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,train]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/meap-data demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	for b in tests/benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-output build dist *.egg-info
