# `make run`: set up and run the main job.  `make test`: set up and run the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install whenever pyproject.toml changes; otherwise setup is a no-op.
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DATA   := data/arc1-small

.PHONY: setup run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

# The main job. Until `disco train` lands it builds a small real ARC-1 dataset and summarises it.
run: setup
	$(BIN)/disco data build --source arc1 --max-grid 10 --tasks 16 --augmentations 100 --out $(DATA) --force
	$(BIN)/disco data info $(DATA) --verify

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python bench/data_build.py
	$(BIN)/python bench/loader.py

clean:
	rm -rf $(VENV) data .pytest_cache
