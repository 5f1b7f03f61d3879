"""The Trainer in one process, no Ray: block applications counted on the real block, the time
limit, epochs as the budget unit, and a checkpoint that restores every part of the state.

    .venv/bin/python -m pytest -q tests/test_trainer.py
"""

from __future__ import annotations

import pytest
import torch

from trainer import checkpoint as ckpt
from trainer.config import LoopConfig, derive
from trainer.loop import Plan, Trainer
from trainer.runs import Run
from trainer.storage import Storage


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()  # the Trainer sets the process's threads, as a worker would
    yield
    torch.set_num_threads(threads)


def _trainer(tiny_spec, data10, tmp_path, name="run", method="dis", **train) -> Trainer:
    spec = tiny_spec(data10, method=method, workers=1, **train)
    t = Trainer(derive(spec, {"tracking": {"wandb": "off"}}), Run(Storage.of(str(tmp_path)), name))
    t.restore()
    return t


class _BlockCounter:
    """Counts rows through the block stack with a forward hook on its first block (one hook call
    per application of the stack to a batch)."""

    def __init__(self, model):
        self.rows = 0
        model.blocks[0].register_forward_hook(self._count)

    def _count(self, module, args, output) -> None:
        self.rows += args[0].shape[0]


@pytest.mark.parametrize("method", ["dis", "trm"])
def test_block_applications_are_counted_not_computed(tiny_spec, data10, tmp_path, method):
    t = _trainer(tiny_spec, data10, tmp_path, method=method, budget=4, eval_interval=4, log_interval=4)
    counter, rows = _BlockCounter(t.model), t.spec.train.global_batch_size
    t.train_batch()
    assert counter.rows == rows * t.objective.block_applications_per_row()  # what one training row costs
    for _ in range(3):
        t.train_batch()
    # TRM-ACT: nothing halts early at the start (q_halt < 0), so every row runs all 4 steps and
    # halts at batch 4; DIS runs all its steps on every batch. Both reports must match the count.
    (logged,) = Run(t.run.storage, "run").metrics("train")
    assert logged["block_apps_per_sample"] == pytest.approx(counter.rows / (rows * (4 if method == "dis" else 1)))
    counter.rows, predicted, predict = 0, [], t.objective.predict

    def counting_predict(model, emb, batch, steps=None):
        predicted.append(batch.inputs.shape[0])
        return predict(model, emb, batch, steps)

    t.objective.predict = counting_predict
    metrics = t.evaluate()
    assert metrics["block_apps_per_sample"] == pytest.approx(counter.rows / sum(predicted))
    assert metrics["block_apps_per_sample"] == (2 * 2 if method == "dis" else 4 * 2)


def test_time_limit_stops_at_a_log_interval_with_a_final_evaluation(tiny_spec, data10, tmp_path):
    t = _trainer(tiny_spec, data10, tmp_path, budget=50, eval_interval=50, log_interval=2, time_limit_minutes=1e-6)
    evals = 0
    while not t.done:
        if t.train_batch():
            t.evaluate()
            evals += 1
    assert t.batch == 2 and evals == 1  # the first log interval is past the limit: stop, evaluate once
    assert [r["batch"] for r in t.run.metrics("eval")] == [2]


def test_epochs_as_the_unit(tiny_spec, data10, tmp_path):
    t = _trainer(tiny_spec, data10, tmp_path, unit="epochs", budget=2, eval_interval=1, log_interval=1)
    per_epoch = t.sampler.batches_in_epoch(0)
    assert t.plan.total == 2 * per_epoch and t.plan.eval_every == per_epoch
    due = [b + 1 for b in range(t.plan.total) if t.train_batch()]
    assert due == [per_epoch, 2 * per_epoch]
    # An epoch of the budget is the first epoch's batch count; later epochs may pack one more or less.
    second = t.sampler.batches_in_epoch(1)
    position = {"epoch": 2, "batch": 0} if second == per_epoch else {"epoch": 1, "batch": per_epoch}
    assert t.sampler.state_dict() == {"seed": 0, **position}
    plan = Plan(LoopConfig(unit="epochs", budget=0.5, eval_interval=0.25, log_interval=1), batches_per_epoch=10)
    assert (plan.total, plan.eval_every, plan.log_every) == (5, 2, 1)


@pytest.mark.parametrize("method", ["dis", "trm"])
def test_a_checkpoint_restores_every_part(tiny_spec, data10, tmp_path, method):
    t = _trainer(tiny_spec, data10, tmp_path, method=method, budget=6, eval_interval=3)
    while not t.train_batch():
        pass
    t.evaluate()
    t.save(tmp_path / "run" / ckpt.dir_name(t.batch))
    t.train_batch()
    resumed = _trainer(tiny_spec, data10, tmp_path, method=method, budget=6, eval_interval=3)
    assert resumed.restored_from == ckpt.dir_name(3) and resumed.batch == 3
    resumed.train_batch()
    for (k, a), b in zip(t.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert torch.equal(t.emb.weight, resumed.emb.weight)
    assert t.engine.step == resumed.engine.step and t.sampler.state_dict() == resumed.sampler.state_dict()
    assert t.averages.apps_per_sample == resumed.averages.apps_per_sample
    assert torch.equal(t.objective.generator.get_state(), resumed.objective.generator.get_state())
    if method == "trm":  # the rows in flight continued, not restarted
        assert torch.equal(t.objective.rows.steps, resumed.objective.rows.steps)
        assert torch.equal(t.objective.rows.carry.latent, resumed.objective.rows.carry.latent)
