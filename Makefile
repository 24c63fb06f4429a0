# satgan: `make demo` runs the whole pipeline on the embedded default; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Stages and tests call `python`, `dvc` and `pytest`: make them the venv's.
export PATH := $(BIN):$(PATH)
export PYTHONUNBUFFERED := 1
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup demo test bench quality ablate readme-figures gpu-check clean help

help:
	@echo "make demo   - set up .venv and run the whole pipeline (dvc repro) on the embedded default"
	@echo "make test   - set up .venv and run the test suite"
	@echo "make bench  - run the CPU benchmarks in bench/ (figures go in docs/benchmarks.md)"
	@echo "make quality - train each recipe for the same budget, evaluate each, print one table (QUALITY_ARGS)"
	@echo "make ablate - queue and run one experiment per default-on GAN hack (dvc exp)"
	@echo "make readme-figures - after make demo (or a dvc repro): copy its figures to docs/img, rewrite README's demo table (date, machine, command, git rev)"
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
	@$(BIN)/python -m satgan.evaluate.summary

test: setup
	ruff check src stages tests bench
	pytest $(PYTEST_ARGS)

bench: setup
	python bench/prepare_bench.py
	python bench/download_bench.py
	python bench/validate_bench.py
	python bench/train_bench.py
	python bench/busy_bench.py

# Equal-compute quality table (bench/quality_bench.py); results under bench/out/ (git-ignored).
# Recipes are chosen on the validation split (equal iterations, 4 seeds: mean ± sd and the difference from canonical);
# certify the chosen one on the held-out split with bench/quality_bench.py --certify RECIPE --out <the bench's folder>.
# The default is 8 CPU runs of 2,000 iterations (~2-3 min each on 2 idle cores); e.g. QUALITY_ARGS="--budget-iterations 200 --seeds 0,1"
QUALITY_ARGS ?= --budget-iterations 2000 --recipes canonical,default --seeds 0,1,2,3
quality: setup
	dvc repro prepare
	python bench/quality_bench.py $(QUALITY_ARGS)

ablate: setup
	python -m satgan.ablate

# README's demo figures and metrics table, from the outputs of a real `dvc repro` (`make demo` runs one; bench/readme_figures.py).
readme-figures: setup
	python bench/readme_figures.py

# Exits 2 (one line) without CUDA; writes gpu-check.md for docs/benchmarks.md.
gpu-check: setup
	python bench/gpu_check.py

clean:
	rm -rf $(VENV)
