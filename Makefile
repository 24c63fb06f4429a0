# satgan: `make demo` runs the whole pipeline on the embedded default; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Stages and tests call `python`, `dvc` and `pytest`: make them the venv's.
export PATH := $(BIN):$(PATH)
export PYTHONUNBUFFERED := 1
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup demo test bench ablate gpu-check clean help

help:
	@echo "make demo   - set up .venv and run the whole pipeline (dvc repro) on the embedded default"
	@echo "make test   - set up .venv and run the test suite"
	@echo "make bench  - run the CPU benchmarks in bench/ (figures go in docs/benchmarks.md)"
	@echo "make ablate - queue and run one experiment per default-on GAN hack (dvc exp)"
	@echo "make gpu-check - on a CUDA machine: the cuda tests, a tiny dvc repro on the GPU, train_bench at batch 64/128/512"

# Idempotent: reinstalls only when requirements.txt or pyproject.toml change.
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "satgan needs Python >= 3.11, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

demo: setup
	dvc repro
	@$(BIN)/python -m satgan.summary

test: setup
	pytest $(PYTEST_ARGS)

bench: setup
	python bench/prepare_bench.py
	python bench/download_bench.py
	python bench/train_bench.py

ablate: setup
	python -m satgan.ablate

# Exits 2 (one line) without CUDA; writes gpu-check.md for docs/benchmarks.md.
gpu-check: setup
	python bench/gpu_check.py

clean:
	rm -rf $(VENV)
