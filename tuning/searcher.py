"""The Optuna searcher of `disco sweep`, made safe to resume after a killed driver.

The study lives in its own database (sqlite beside the sweep, or `--study-url`) and is written the
moment a trial finishes; Tune's experiment snapshot, which `Tuner.restore` reads, is written
periodically. A driver killed between the two leaves a trial that the study holds as finished but
Tune runs again on resume. Ray's OptunaSearch then reports into a finished Optuna trial and the
whole sweep dies with UpdateFinishedTrialError. The study already has that trial's result, so the
re-run's reports are dropped (with a warning) instead.
"""

from __future__ import annotations

import logging

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)


class ResumableOptunaSearch(OptunaSearch):
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            log.warning("trial %s: its Optuna trial finished before the driver restarted; result not re-told",
                        trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        try:
            super().on_trial_complete(trial_id, result, error)
        except (UpdateFinishedTrialError, ValueError) as e:
            if isinstance(e, ValueError) and "Cannot tell a" not in str(e):  # optuna's wording for finished trials
                raise
            log.warning("trial %s: already complete in the Optuna study; keeping the recorded result", trial_id)
