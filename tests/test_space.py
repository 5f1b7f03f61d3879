"""Search spaces and leaderboards without Ray: one trial's config is derived and validated like the
command line (methods as an axis, workers per trial), and the Pareto front of accuracy vs compute.

    .venv/bin/python -m pytest -q tests/test_space.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from trainer.config import load_spec
from tuning.leaderboard import dominates, pareto_front
from tuning.space import SweepSpace
from tuning.sweep import APPS_METRIC, SweepRecord

SPACE = SweepSpace.model_validate({
    "base": "dis_cpu_tiny", "set": {"train.budget": 200},
    "params": {"method": {"choice": ["dis", "trm"]}, "objective.schedule": {"choice": ["cosine"]},
               "objective.halt_exploration_prob": {"uniform": [0.0, 0.5]}, "model.layers": {"choice": [2]}}})


def test_a_trial_of_either_method_keeps_only_its_own_objective_keys():
    base = load_spec("dis_cpu_tiny")
    params = {"objective.schedule": "cosine", "objective.halt_exploration_prob": 0.3, "model.layers": 2}
    dis = SPACE.trial_spec(base, {"method": "dis", **params})
    trm = SPACE.trial_spec(base, {"method": "trm", **params})
    assert (dis.method, dis.objective.schedule, dis.model.timestep_embedding) == ("dis", "cosine", True)
    assert (trm.method, trm.objective.halt_exploration_prob, trm.model.timestep_embedding) == ("trm", 0.3, False)
    assert not hasattr(trm.objective, "schedule") and not hasattr(dis.objective, "halt_exploration_prob")
    for spec in (dis, trm):  # the space's fixed settings and the sweep's selection settings apply to both
        assert spec.train.budget == 200 and spec.model.layers == 2
        assert spec.train.select_metric == SPACE.metric and spec.data.validation_fraction == SPACE.validation_fraction


def test_each_method_gets_its_own_fixed_values():
    """`objective.method` as the axis, and each method's own step count under `methods`."""
    space = SweepSpace.model_validate({
        "base": "dis_cpu_tiny", "params": {"objective.method": {"choice": ["dis", "trm"]},
                                           "optim.lr": {"loguniform": [1e-4, 1e-3]}},
        "methods": {"dis": {"model.supervision_steps": 6}, "trm": {"model.supervision_steps": 16}}})
    base = load_spec("dis_cpu_tiny")
    assert set(space.params) == {"method", "optim.lr"}
    dis = space.trial_spec(base, {"objective.method": "dis", "optim.lr": 3e-4})
    trm = space.trial_spec(base, {"method": "trm", "optim.lr": 3e-4})
    assert (dis.method, dis.model.supervision_steps) == ("dis", 6)
    assert (trm.method, trm.model.supervision_steps, trm.model.timestep_embedding) == ("trm", 16, False)
    with pytest.raises(ValidationError, match="methods.trm.optim.lr is also a searched parameter"):
        SweepSpace.model_validate({"base": "dis_cpu_tiny", "params": {"optim.lr": {"choice": [1e-3]}},
                                   "methods": {"trm": {"optim.lr": 1e-4}}})


def test_workers_per_trial_go_through_validation():
    base = load_spec("dis_cpu_tiny")  # global batch 32
    record = SweepRecord(name="s", space=SPACE, base=base, trials=2, concurrency=1, workers_per_trial=4,
                         study_url="sqlite:///x.db")
    assert record.trial_spec(SPACE.first_values()).runtime.workers == 4
    with pytest.raises(ValidationError, match="must be a multiple of runtime.workers 3"):
        record.model_copy(update={"workers_per_trial": 3}).trial_spec(SPACE.first_values())


def _row(trial, metric, apps):
    return {"trial": trial, "val_accuracy": metric, APPS_METRIC: apps}


def test_pareto_dominance_and_front():
    a, b, c = _row("a", 0.8, 18), _row("b", 0.8, 48), _row("c", 0.9, 48)
    assert dominates(a, b, "val_accuracy") and not dominates(b, a, "val_accuracy")  # as good, cheaper
    assert dominates(c, b, "val_accuracy")  # as cheap, better
    assert not dominates(a, c, "val_accuracy") and not dominates(c, a, "val_accuracy")  # a trade-off
    assert not dominates(a, dict(a), "val_accuracy")  # equal points do not dominate each other
    rows = [a, b, c, _row("d", 0.5, 336), _row("e", None, 18), _row("f", 0.95, 336)]
    assert pareto_front(rows, "val_accuracy") == {"a", "c", "f"}  # unscored trials are not on the front


def test_the_command_line_set_wins_over_the_space_set_and_may_not_hide_a_searched_key(tmp_path):
    """`disco sweep --set` beats the space's own `set:` (as the command line beats a file everywhere);
    setting a searched parameter is refused instead of silently ignored."""
    from arc_data.errors import DiscoError
    from trainer.storage import Storage
    from tuning.sweep import plan_sweep

    space = tmp_path / "space.yaml"
    space.write_text("base: dis_cpu_tiny\nset: {train.budget: 120}\nparams: {optim.lr: {choice: [0.001, 0.01]}}\n")
    storage = Storage.of(str(tmp_path / "runs"))
    record = plan_sweep(str(space), "s", storage, overrides=["train.budget=20", "train.eval_interval=10",
                                                              "data.path=somewhere"])
    trial = record.trial_spec({"optim.lr": 0.01})
    assert (trial.train.budget, trial.train.eval_interval, trial.optim.lr) == (20, 10, 0.01)
    assert trial.data.path == str((Path.cwd() / "somewhere").resolve())  # trials run elsewhere: absolute
    assert plan_sweep(str(space), "t", storage).trial_spec({"optim.lr": 0.01}).train.budget == 120
    with pytest.raises(DiscoError, match="--set optim.lr is a searched parameter"):
        plan_sweep(str(space), "u", storage, overrides=["optim.lr=0.5"])


class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def test_asha_rechecks_a_promotion_once_peers_report():
    """The first trial at a rung goes on (nothing to compare with); plain ASHA then lets it run to
    the end, the rechecked one stops it at its next evaluation once it is not in the top half."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    from tuning.asha import RecheckedASHA

    def decisions(cls) -> list[str]:
        s = cls(time_attr="training_iteration", metric="m", mode="max", max_t=8, grace_period=1, reduction_factor=2)
        trials = {n: _Trial(n) for n in "abc"}
        for t in trials.values():
            s.on_trial_add(None, t)
        return [s.on_trial_result(None, trials[n], {"training_iteration": i, "m": m})
                for n, i, m in (("a", 1, 0.5), ("a", 2, 0.55), ("b", 1, 0.9), ("c", 1, 0.8), ("a", 3, 0.6))]

    cont, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    assert decisions(AsyncHyperBandScheduler) == [cont, cont, cont, cont, cont]
    assert decisions(RecheckedASHA) == [cont, cont, cont, cont, stop]  # a: 0.5 at rung 1, below b and c
