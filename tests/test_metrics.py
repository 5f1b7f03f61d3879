"""Logged training metrics: row-weighted averages (TRM-ACT scores only halted rows), the per-batch
record each objective makes of its steps, and what one training row costs each objective."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.model import ModelConfig
from trainer.objectives import ACTConfig, ACTObjective, DISConfig, DISObjective
from trainer.tracking import Averages

ACT_ROWS = ACTObjective.row_metrics


def _act_step(accuracy: float, halted: int, steps: float) -> dict:
    return {"loss": torch.tensor(1.0), "accuracy": torch.tensor(accuracy), "count": torch.tensor(float(halted)),
            "steps": torch.tensor(steps), "block_apps_per_sample": torch.tensor(3.0 * steps)}


def test_row_metrics_are_weighted_by_scored_rows_not_batches():
    avg = Averages(ACT_ROWS)
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


def test_run_level_block_applications_survive_intervals_without_halts_and_resumes():
    avg = Averages(ACT_ROWS)
    assert math.isnan(avg.apps_per_sample)
    avg.add(_act_step(0.5, halted=32, steps=16))
    avg.reduce(torch.device("cpu"), stop=False)
    avg.add(_act_step(0.0, halted=0, steps=0))
    out, _ = avg.reduce(torch.device("cpu"), stop=False)
    assert "block_apps_per_sample" not in out  # this interval: nothing halted
    assert avg.apps_per_sample == 48.0         # the run so far: every finished sample took 16 steps
    resumed = Averages(ACT_ROWS)
    resumed.load_state_dict(avg.state_dict())
    assert resumed.apps_per_sample == 48.0


def test_dis_batch_record_keeps_every_steps_target_accuracy_and_the_mean_loss():
    obj = DISObjective(DISConfig(), ModelConfig(supervision_steps=3, cycles=1, latent_steps=2, timestep_embedding=True))
    steps = [{"loss": torch.tensor(float(s)), f"step{s}_target_accuracy": torch.tensor(s / 10), "lr": 0.1 * s}
             for s in (1, 2, 3)]
    steps[-1] |= {"accuracy": torch.tensor(0.7), "count": torch.tensor(4.0)}
    record = obj.batch_metrics(steps)
    assert float(record["loss"]) == 2.0 and record["lr"] == pytest.approx(0.3) and float(record["accuracy"]) == pytest.approx(0.7)
    assert [float(record[f"step{s}_target_accuracy"]) for s in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.3])


def test_block_applications_per_training_row():
    cfg = ModelConfig(cycles=1, latent_steps=2, supervision_steps=6, timestep_embedding=True)
    assert DISObjective(DISConfig(), cfg).block_applications_per_row() == 18  # every step on every row
    assert ACTObjective(ACTConfig(), cfg.model_copy(update={"supervision_steps": 16})).block_applications_per_row() == 3
    trm = ModelConfig(cycles=3, latent_steps=6)
    assert ACTObjective(ACTConfig(), trm).block_applications_per_row() == 21  # one step of a carried sample
