# `make run`: set up and run the main job.  `make test`: set up and run the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install whenever pyproject.toml changes; otherwise setup is a no-op.
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: setup run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

# The main job: a real DIS training on a tiny ARC-1 slice, 2 Ray Train workers, with evaluation.
# Its data is a recipe in the preset, built on first use into runs/.datasets and reused after.
run: setup
	$(BIN)/disco train --config configs/dis_cpu_tiny.yaml

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python bench/data_build.py
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/step_cost.py
	$(BIN)/python bench/ray_overhead.py
	$(BIN)/python bench/sweep_efficiency.py
	$(BIN)/python bench/node_loss.py
	$(BIN)/python bench/compare_time.py
	$(BIN)/python bench/structure.py

clean:
	rm -rf $(VENV) data .pytest_cache
