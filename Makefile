# depthsweep — the two commands: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check depthcore runners tests
	$(BIN)/ruff format --check depthcore runners tests

demo: $(STAMP)
	$(BIN)/python runners/sweep.py sweeps/quickstart.yaml
	$(BIN)/python runners/report.py results/ --sweep quickstart

bench: $(STAMP)
	$(BIN)/python runners/bench.py --device cpu --size 96x320 --batch 4 --steps 10 --rounds 3 --compile

clean:
	rm -rf $(VENV) .pytest_cache
