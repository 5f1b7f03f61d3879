"""Shared fixtures. Run the suite with `make test` (or `.venv/bin/python -m pytest -q`)."""

from __future__ import annotations

import os
from pathlib import Path

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


@pytest.fixture(scope="session")
def data10(tmp_path_factory) -> str:
    """4 real ARC-1 tasks on a 10x10 canvas, 4 augmentations: seconds-long training runs."""
    out = tmp_path_factory.mktemp("d10") / "d"
    build_dataset(BuildConfig(sources=["arc1"], canvas=10, tasks=4, augmentations=4, seed=3), out, progress=False)
    return str(out)


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """One embedded Ray instance for the whole session (never joins a stray cluster)."""
    import tempfile

    import ray

    from trainer.launch import ray_env, start_local_ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("WANDB_SILENT", "true")
    # Workers import test helpers (Trainer callbacks such as tests/fault_injection.py) by name.
    tests = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
    ray_env()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # unix socket paths must stay short
    start_local_ray(num_cpus=4, log_to_driver=False, object_store_memory=200 * 1024**2, _temp_dir=temp)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_spec():
    return _tiny_spec


def _tiny_spec(data: str, method: str = "dis", workers: int = 2, **train):
    """A seconds-long run on a small test dataset (width 32): DIS with 2 steps, or TRM-ACT with 4."""
    from trainer.config import RunSpec

    raw = {
        "data": {"path": data, "eval_versions": 2},
        "model": {"hidden_size": 32, "num_heads": 2, "expansion": 2, "layers": 1, "latent_steps": 1, "cycles": 1,
                  "supervision_steps": 2, "puzzle_emb_ndim": 32, "puzzle_emb_len": 1, "timestep_embedding": True},
        "objective": {"method": "dis"},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {"budget": 6, "eval_interval": 2, "global_batch_size": 8, "log_interval": 1,
                  "select_metric": "train_accuracy", **train},
        "runtime": {"workers": workers, "cpus_per_worker": 1, "max_failures": 1},
        "tracking": {"wandb": "offline"},
    }
    if method == "trm":
        raw["objective"] = {"method": "trm"}
        raw["model"] |= {"timestep_embedding": False, "supervision_steps": 4}
    return RunSpec.model_validate(raw)


@pytest.fixture(scope="session")
def finished_dis(ray_local, data10, tmp_path_factory):
    """A finished 2-worker DIS run named "base" (shared by the training and comparison tests)."""
    from trainer.launch import train
    from trainer.storage import Storage

    storage = Storage.of(str(tmp_path_factory.mktemp("runs")))
    return storage, train(_tiny_spec(data10), storage, name="base", progress=False)
