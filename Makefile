# Quick start:  make demo   (venv + install + run the study recipe on synthetic data)
#               make test   (venv + install with test extras + lint, types, tests)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# torch first, pinned: with no torch installed, the predict extra's open range would pull
# the multi-GB CUDA build; the pinned 2.13.0 is the CPU build here.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/perturbscore demo demo-out --overwrite

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/perturbscore

test: lint
	# One worker per core, a test file per worker (its module fixtures are built once).
	$(BIN)/python -m pytest -q -n auto --dist loadfile

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_run.py --scale 0.1

clean:
	rm -rf $(VENV) demo-out bench-data .pytest_cache .mypy_cache .ruff_cache
