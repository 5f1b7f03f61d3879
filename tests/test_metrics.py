"""Logged training metrics: row-weighted averages (TRM-ACT scores only halted rows) and the
compute accounting the comparison report plots."""

from __future__ import annotations

import math

import torch

from cluster.compare import _apps_per_row
from trainer.worker import Averages


def _act_step(accuracy: float, halted: int, steps: float) -> list[dict]:
    return [{"loss": torch.tensor(1.0), "accuracy": torch.tensor(accuracy), "count": torch.tensor(float(halted)),
             "steps": torch.tensor(steps), "block_apps_per_sample": torch.tensor(3.0 * steps)}]


def test_row_metrics_are_weighted_by_scored_rows_not_batches():
    avg = Averages()
    avg.add(_act_step(0.9, halted=30, steps=16))  # a burst of halts
    avg.add(_act_step(0.0, halted=0, steps=0))    # nothing halted: no evidence either way
    avg.add(_act_step(0.5, halted=10, steps=4))
    out, stop = avg.reduce(torch.device("cpu"), stop=False)
    assert not stop and out["loss"] == 1.0
    assert math.isclose(out["accuracy"], (0.9 * 30 + 0.5 * 10) / 40, rel_tol=1e-6)
    assert math.isclose(out["block_apps_per_sample"], 3 * (16 * 30 + 4 * 10) / 40, rel_tol=1e-6)
    avg.add(_act_step(0.0, halted=0, steps=0))
    out, _ = avg.reduce(torch.device("cpu"), stop=True)
    assert "accuracy" not in out and "steps" not in out and out["loss"] == 1.0


def test_compare_compute_accounting():
    model = {"cycles": 1, "latent_steps": 2, "supervision_steps": 6}
    assert _apps_per_row({"model": model, "objective": {"method": "dis"}}) == 18
    assert _apps_per_row({"model": model | {"supervision_steps": 16}, "objective": {"method": "trm"}}) == 3
    assert _apps_per_row({"model": {"cycles": 3, "latent_steps": 6}, "objective": {"method": "trm"}}) == 21


def test_run_level_block_applications_survive_intervals_without_halts():
    avg = Averages()
    assert math.isnan(avg.apps_per_sample)
    avg.add(_act_step(0.5, halted=32, steps=16))
    avg.reduce(torch.device("cpu"), stop=False)
    avg.add(_act_step(0.0, halted=0, steps=0))
    out, _ = avg.reduce(torch.device("cpu"), stop=False)
    assert "block_apps_per_sample" not in out  # this interval: nothing halted
    assert avg.apps_per_sample == 48.0         # the run so far: every finished sample took 16 steps
