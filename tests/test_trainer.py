"""The Trainer in one process, no Ray: block applications counted on the real block, the time
limit, epochs as the budget unit, and a checkpoint that restores every part of the state.

    .venv/bin/python -m pytest -q tests/test_trainer.py
"""

from __future__ import annotations

import math

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
    per_epoch = t.ds.examples_per_epoch / t.spec.train.global_batch_size  # the reference's step count
    assert t.sampler.batches_per_epoch == per_epoch
    assert t.plan.total == math.ceil(2 * per_epoch) and t.plan.eval_every == round(per_epoch)
    due = [b + 1 for b in range(t.plan.total) if t.train_batch()]
    assert due == sorted({round(per_epoch) * k for k in (1, 2) if round(per_epoch) * k < t.plan.total} | {t.plan.total})
    assert t.sampler.state_dict()["epoch"] in (1, 2)  # about two epochs of rows, less truncated tails
    plan = Plan(LoopConfig(unit="epochs", budget=0.5, eval_interval=0.25, log_interval=1), batches_per_epoch=10)
    assert (plan.total, plan.eval_every, plan.log_every) == (5, 2, 1)


def test_a_compute_budget_gives_both_methods_the_same_block_applications(tiny_spec, data10, tmp_path):
    """`train.unit=apps`: DIS (4 block applications per row and batch here) and TRM-ACT (2: one
    supervision step of each carried row) train different numbers of batches, and the applications
    counted by a hook on the block stack come out within one batch of each other and of the budget."""
    budget, spent = 1000, {}
    for method in ("dis", "trm"):
        t = _trainer(tiny_spec, data10, tmp_path / method, method=method, unit="apps", budget=budget,
                     eval_interval=budget, log_interval=5)
        counter = _BlockCounter(t.model)
        while not t.done:
            t.train_batch()  # no evaluation: only training applications are counted
        spent[method] = (counter.rows, t.plan.apps_per_batch, t.batch)
        logged = t.run.metrics("train")[-1]
        assert logged["train_block_apps"] == counter.rows  # the log states what was spent
        assert logged["train_flops"] == t.batch * t.plan.flops_per_batch > 0
    (dis, dis_batch, dis_batches), (trm, trm_batch, trm_batches) = spent["dis"], spent["trm"]
    assert dis_batches != trm_batches  # different rates per batch ...
    assert budget <= dis < budget + dis_batch and budget <= trm < budget + trm_batch  # ... the same compute
    assert abs(dis - trm) < max(dis_batch, trm_batch)
    plan = Plan(LoopConfig(unit="flops", budget=1e9, eval_interval=5e8, log_interval=1), 10, 16, 2.5e8)
    assert (plan.total, plan.eval_every) == (4, 2)


def _losses(run: Run) -> list[float]:
    return [r["loss"] for r in run.metrics("train")]


def _run_to_end(t: Trainer, save_at: int | None = None) -> None:
    while not t.done:
        if t.train_batch():
            t.evaluate()
            if t.batch == save_at:
                t.save(t.run.storage.path(t.run.name, ckpt.dir_name(t.batch)))
                return


@pytest.mark.parametrize("method", ["dis", "trm"])
def test_resume_equivalence(tiny_spec, data10, tmp_path, method):
    """8 batches straight == 4 batches, a stop, a resume from the checkpoint and 4 more: the same
    logged losses and the same final weights, table, weight average and optimizer, bit for bit
    (CPU fp32, one thread). TRM-ACT keeps the weight average on (its reference recipe) and carries
    rows in flight across the stop."""
    train = {"budget": 8, "eval_interval": 4, "log_interval": 1}
    spec = derive(tiny_spec(data10, method=method, workers=1, **train),
                  {"tracking": {"wandb": "off"}, "optim": {"ema_rate": 0.9 if method == "trm" else None}})
    straight = Trainer(spec, Run(Storage.of(str(tmp_path / "a")), "run"))
    straight.restore()
    _run_to_end(straight)
    first = Trainer(spec, Run(Storage.of(str(tmp_path / "b")), "run"))
    first.restore()
    _run_to_end(first, save_at=4)
    resumed = Trainer(spec, Run(Storage.of(str(tmp_path / "b")), "run"))
    assert resumed.restore() == ckpt.dir_name(4)
    _run_to_end(resumed)

    assert len(_losses(straight.run)) == 8
    assert _losses(resumed.run) == _losses(straight.run)  # one log: 1..4 before the stop, 5..8 after
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(straight.emb.weight, resumed.emb.weight)
    if method == "trm":
        assert all(torch.equal(a, b) for a, b in zip(straight.engine.ema.shadow, resumed.engine.ema.shadow, strict=True))
    a_state, b_state = straight.engine.optimizer.state_dict()["state"], resumed.engine.optimizer.state_dict()["state"]
    assert all(torch.equal(a_state[i]["exp_avg"], b_state[i]["exp_avg"]) for i in a_state)
    assert straight.sampler.state_dict() == resumed.sampler.state_dict()
    assert straight.objective.state_dict()["calls"] == resumed.objective.state_dict()["calls"] > 0
    assert straight.averages.state_dict() == resumed.averages.state_dict()
    assert [r["pass@2"] for r in resumed.run.metrics("eval")] == [r["pass@2"] for r in straight.run.metrics("eval")]


def test_the_weight_average_is_evaluated_checkpointed_and_exported(tiny_spec, data10, tmp_path):
    from trainer.evaluate import evaluate
    from trainer.inference import load

    spec = derive(tiny_spec(data10, workers=1, budget=2, eval_interval=2),
                  {"tracking": {"wandb": "off"}, "optim": {"ema_rate": 0.5}})
    t = Trainer(spec, Run(Storage.of(str(tmp_path)), "run"))
    t.restore()
    while not t.train_batch():
        pass
    metrics = t.evaluate()
    contents = ckpt.read(t.save(tmp_path / "run" / ckpt.dir_name(t.batch)))
    raw = ckpt.ModelState(t.model, t.emb).state_dict()
    assert all(torch.equal(contents.model_state[k], raw[k]) for k in raw)  # the trained weights, for resuming
    assert set(contents.ema_state) == set(t.engine.ema.names)
    assert any(not torch.equal(contents.ema_state[k], raw[k]) for k in contents.ema_state)  # a real average
    # The evaluation saw the average: the model a checkpoint loads as (the average) scores the same.
    loaded = load(contents.path, device="cpu")
    assert all(torch.equal(loaded.model.state_dict()[k], contents.ema_state[k]) for k in contents.ema_state)
    again = evaluate(loaded.model, loaded.emb, loaded.objective, t.ds, torch.device("cpu"), t.eval_options)
    assert again.metrics["test_accuracy"] == metrics["test_accuracy"] and metrics["ema"] is True


def test_a_set_smaller_than_one_batch_trains_with_a_warning(tiny_spec, data10, tmp_path):
    from arc_data.dataset import ArcDataset
    from trainer.launch import data_warnings

    rows = ArcDataset(data10).examples_per_epoch
    big = 2 * rows + 2
    t = _trainer(tiny_spec, data10, tmp_path, global_batch_size=big, budget=2, eval_interval=2)
    assert t.train_batch() is False and t.sampler.epoch >= 2  # a batch of more than two epochs' rows
    assert data_warnings(t.spec, t.ds) == [  # printed by the driver before Ray starts
        f"{rows} training examples per epoch are fewer than the global batch of {big}: each batch holds examples "
        "of several epochs"]
    many = derive(t.spec, {"data": {"eval_versions": 999}})
    assert any("data.eval_versions=999" in w and "versions per puzzle" in w for w in data_warnings(many, t.ds))


def test_tensorboard_events_beside_the_metrics_log(tiny_spec, data10, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = derive(tiny_spec(data10, workers=1, budget=2, eval_interval=2),
                  {"tracking": {"wandb": "off", "tensorboard": True}})
    t = Trainer(spec, Run(Storage.of(str(tmp_path)), "run"))
    t.restore()
    _run_to_end(t)
    t.close()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert losses == pytest.approx([r["loss"] for r in t.run.metrics("train")])
    assert "eval/pass@2" in events.Tags()["scalars"]
