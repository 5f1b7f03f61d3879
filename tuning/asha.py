"""ASHA whose promotions are provisional (`scheduler: {type: asha}`; the default is synchronous
halving, tuning/halving.py, which spends less with few trials: docs/tuning.md).

Asynchronous successive halving decides at each rung from the results recorded there so far, so
the first trials to reach a rung always go on (nothing to compare with) and, with few trials,
usually run to the end: `bench/sweep_efficiency.py` measured plain ASHA spending 0.72 of the full
grid's training with 8 trials. Here a trial that went on is checked again at every later
evaluation against each rung it passed, with everything recorded there since; once it is no
longer in the top 1/reduction_factor of a rung, it stops. Early arrivals then cost a few
evaluations instead of a whole run, and a trial's fate is the one synchronous successive halving
would give it as soon as its peers have reported. Rungs are in evaluations (the run's `evaluation`):
grace period g, then g·rf, g·rf², … below the run's evaluation count.
"""

from __future__ import annotations

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler


class RecheckedASHA(AsyncHyperBandScheduler):
    # Reads the bracket's rungs (Ray 2.60's `_Bracket._rungs`: [(milestone, {trial_id: value})]).
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        bracket = self._trial_info.get(trial.trial_id)
        if action != TrialScheduler.CONTINUE or bracket is None:
            return action
        for _, recorded in bracket._rungs:
            mine = recorded.get(trial.trial_id)
            if mine is not None and len(recorded) > 1 and mine < bracket.cutoff(recorded):
                self._num_stopped += 1
                return TrialScheduler.STOP
        return action
