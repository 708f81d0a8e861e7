# depthsweep — the two commands: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench bench-gpu clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow (each over ~5 s). The -m replaces pyproject's `-m 'not gpu'`,
# so it deselects gpu again.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

lint: $(STAMP)
	$(BIN)/ruff check depthcore runners tests
	$(BIN)/ruff format --check depthcore runners tests
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/python runners/sweep.py sweeps/quickstart.yaml --calibrate
	$(BIN)/python runners/report.py results/ --sweep quickstart

bench: $(STAMP)
	$(BIN)/python runners/bench.py --device cpu --size 320x96 --batch 4 --steps 10 --rounds 3 --compile

# On a CUDA machine, with any Python that has the project installed (PY=...): the GPU tests, then
# the GPU benchmark of the performance target with the compiled loss, 2 packed runs and a profile.
bench-gpu:
	$(PY) -m pytest -q -m gpu tests/test_gpu.py
	$(PY) runners/bench.py --device cuda --size 640x192 --batch 8 --steps 60 --compile --pack 2 --profile 30

clean:
	rm -rf $(VENV) .pytest_cache
