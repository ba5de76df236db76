# Every target creates or updates the environment it needs in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints-cpu.txt
DEPS := pyproject.toml constraints-cpu.txt

.PHONY: demo test lint imports docs docs-serve bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip

$(VENV)/.demo: $(BIN)/python $(DEPS)
	$(PIP) -e ".[demo]"
	touch $@

$(VENV)/.all: $(BIN)/python $(DEPS)
	$(PIP) -e ".[all]"
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo  ## Run the main job: the JEST demo on the embedded default data.
	$(BIN)/jestcore demo

test: $(VENV)/.all  ## Install everything (torch, jax, docs) and run lint, types, tests and the docs build.
	$(BIN)/python -c "import torch; assert torch.version.cuda is None, 'expected the CPU build of torch, got CUDA ' + str(torch.version.cuda)"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory imports
	$(BIN)/python -m pytest
	@if [ -f mkdocs.yml ]; then NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict; fi

lint: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory imports

# import-linter reads packages from disk, and our import namespace maps three folders into one
# package (jestcore, jestcore.backends, jestcore.adapters): lint a copy laid out as installed.
IMPORTS_TREE := build/lint-imports
imports: $(VENV)/.all  ## Check the layering contracts in pyproject.toml ([tool.importlinter]).
	rm -rf $(IMPORTS_TREE) && mkdir -p $(IMPORTS_TREE)
	cp -r jestcore $(IMPORTS_TREE)/jestcore
	cp -r backends $(IMPORTS_TREE)/jestcore/backends
	cp -r adapters $(IMPORTS_TREE)/jestcore/adapters
	cd $(IMPORTS_TREE) && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml

docs: $(VENV)/.all
	$(BIN)/mkdocs build --strict

docs-serve: $(VENV)/.all
	$(BIN)/mkdocs serve

bench: $(VENV)/.all
	$(BIN)/python bench/select_matrix.py

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis
