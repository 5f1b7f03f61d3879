"""Shared fixtures. Run the suite with `make test` (or `.venv/bin/python -m pytest -q`)."""

from __future__ import annotations

import pytest

from arc_data.build import build_dataset
from arc_data.dataset import ArcDataset
from arc_data.manifest import BuildConfig


@pytest.fixture(scope="session")
def small_config() -> BuildConfig:
    # A real ARC-1 slice: 6 training + 6 evaluation tasks with grids <= 10x10.
    return BuildConfig(sources=["arc1"], augmentations=20, max_grid=10, tasks=6, seed=7)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, small_config) -> ArcDataset:
    out = tmp_path_factory.mktemp("data") / "arc1-small"
    build_dataset(small_config, out, progress=False)
    return ArcDataset(out)
