"""The Optuna searcher of `disco sweep`, made safe to resume after a killed driver.

The study lives in its own database (sqlite beside the sweep, or `--study-url`) and is written the
moment a trial finishes; Tune's experiment snapshot, which `Tuner.restore` reads, is written
periodically. A driver killed between the two leaves a trial that the study holds as finished but
Tune runs again on resume. Ray's OptunaSearch then reports into a finished Optuna trial and the
whole sweep dies with UpdateFinishedTrialError. The study already has that trial's result, so the
re-run's reports are dropped (with a warning) instead.

Two more things Ray's searcher gets wrong for trials that are paused and restarted (synchronous
halving, `tuning/halving.py`): a trial stopped while paused completes without a result (Ray would
record it PRUNED with no value), so each trial's last result is kept and told instead; and Tune's
`training_iteration` restarts with the trial, so intermediate values are reported at the run's own
`evaluation` index.
"""

from __future__ import annotations

import logging

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)


class ResumableOptunaSearch(OptunaSearch):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._last_results: dict[str, dict] = {}  # saved with the searcher (OptunaSearch pickles its dict)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._last_results[trial_id] = result
        if "evaluation" in result:
            result = result | {TRAINING_ITERATION: result["evaluation"]}
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            log.warning("trial %s: its Optuna trial finished before the driver restarted; result not re-told",
                        trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not result and not error:  # stopped while paused
            result = self._last_results.get(trial_id)
        self._last_results.pop(trial_id, None)
        try:
            super().on_trial_complete(trial_id, result, error)
        except (UpdateFinishedTrialError, ValueError) as e:
            if isinstance(e, ValueError) and "Cannot tell a" not in str(e):  # optuna's wording for finished trials
                raise
            log.warning("trial %s: already complete in the Optuna study; keeping the recorded result", trial_id)
