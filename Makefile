# `make help` lists the targets. Every target sets up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt

.PHONY: help install train demo test test-all lint format clean

help:  ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -c $(CONSTRAINTS) -e ".[dev]"
	# deepspeed's setup.py imports torch: build it against the torch installed above.
	$(PIP) install --no-build-isolation -c $(CONSTRAINTS) "deepspeed>=0.16"
	touch $@

install: $(VENV)/.installed  ## create .venv and install the project (torch trio pinned)

train: install  ## the embedded default: tiny model, synthetic data, CPU (~15 min)
	$(PY) train.py experiment=stage2_fine

# Needs a checkpoint: make demo ARGS="ckpt_path=outputs/.../checkpoints/last.ckpt"
demo: install  ## the web demo on http://127.0.0.1:7860 (give ARGS="ckpt_path=...")
	$(PY) demo.py $(ARGS)

test: install  ## the default test suite (slow tests excluded)
	$(PY) -m pytest -q

test-all: install  ## every test, slow ones included
	$(PY) -m pytest -q -m ""

lint: install  ## ruff, codespell and the other pre-commit hooks
	$(VENV)/bin/pre-commit run --all-files

format: install  ## format the code with ruff
	$(VENV)/bin/ruff format src tests *.py && $(VENV)/bin/ruff check --fix src tests *.py

clean:  ## remove run outputs and caches (keeps .venv and data/)
	rm -rf outputs multirun .pytest_cache .ruff_cache .hypothesis
