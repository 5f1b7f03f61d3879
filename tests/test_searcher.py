"""The sweep's Optuna searcher survives a trial that the study finished before a driver restart
(Tune re-runs it on resume; plain OptunaSearch would crash the sweep)."""

from __future__ import annotations

import optuna
import pytest
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from tuning.searcher import ResumableOptunaSearch


def _finished_trial(cls, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = cls(space={"lr": tune.loguniform(1e-4, 1e-2)}, metric="val_accuracy", mode="max",
                   study_name="s", storage=optuna.storages.RDBStorage(url), seed=0)
    assert "lr" in searcher.suggest("t1")
    study = optuna.load_study(study_name="s", storage=url)
    (running,) = study.trials
    study.tell(running.number, 0.5)  # what the study held when the driver died
    return searcher, url


def test_plain_optuna_search_crashes_on_a_trial_the_study_already_finished(tmp_path):
    searcher, _ = _finished_trial(OptunaSearch, tmp_path)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        searcher.on_trial_result("t1", {"val_accuracy": 0.4, "training_iteration": 1})


def test_resumable_search_keeps_the_recorded_result(tmp_path):
    searcher, url = _finished_trial(ResumableOptunaSearch, tmp_path)
    searcher.on_trial_result("t1", {"val_accuracy": 0.4, "training_iteration": 1})
    searcher.on_trial_complete("t1", {"val_accuracy": 0.9, "training_iteration": 2})
    (trial,) = optuna.load_study(study_name="s", storage=url).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.5
