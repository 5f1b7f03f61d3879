"""Synchronous successive halving with paused trials: the scheduler `disco sweep` uses by default.

Every trial trains to the first rung (grace_period evaluations), stops there with its checkpoint
saved and waits, paused, holding no workers, while the others catch up. Once every trial of the
rung has reported, the best 1/reduction_factor go on to the next rung (grace·rf, grace·rf², …)
and the rest are stopped; the last trial trains to the end. Trials are compared by the best score
of their run so far (`best_<metric>`, what its best checkpoint scores: how the leaderboard ranks
trials), ties going to the trial drawn first. Unlike asynchronous halving nothing is
decided on partial information, so no early arrival trains further than its rung and no slow
starter is stopped before its peers are in: `bench/sweep_efficiency.py` measures both.

The protocol with the trial (`tuning/sweep.run_trial`): a trial trains until the rung after the
last one it was promoted from (`Rungs.target`), reports that evaluation once its run has stopped
and returns; at a rung this scheduler always pauses or stops it, and a paused trial that is
promoted restarts and resumes its run from the rung's checkpoint. Rungs are keyed on the
`evaluation` index each evaluation reports (Tune's own counter restarts with the trial).
Decisions are written to `scheduler/halving.json` in the sweep's directory before they take
effect, so a resumed driver and a restarted trial know them. Paused trials do not count towards
the sweep's concurrency (`RungLimiter`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import BaseModel, Field
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from arc_data.errors import DiscoError
from trainer.storage import Storage

# In a folder of its own: when a killed driver resumes, Tune copies the experiment directory's
# top-level .json/.pkl files into its staging copy and uploads that copy at every snapshot,
# which would put the decisions of the killed driver back over the resumed one's.
STATE_FILE = ("scheduler", "halving.json")


def rung_milestones(grace_period: int, reduction_factor: float, evaluations: int) -> list[int]:
    """Evaluations at which trials are compared: grace·rf^k below the run's evaluation count."""
    out, k = [], 0
    while (m := round(grace_period * reduction_factor**k)) < evaluations:
        if not out or m > out[-1]:
            out.append(m)
        k += 1
    return out


class Rungs(BaseModel):
    """halving.json: the trials in the order they were drawn, every rung's recorded metric per
    trial and, once decided, who went on."""

    milestones: list[int]
    order: list[str] = Field(default_factory=list)
    recorded: list[dict[str, float]] = Field(default_factory=list)
    promoted: list[list[str] | None] = Field(default_factory=list)

    def model_post_init(self, _) -> None:
        n = len(self.milestones)
        self.recorded += [{} for _ in range(n - len(self.recorded))]
        self.promoted += [None] * (n - len(self.promoted))

    def passed(self, trial_id: str) -> int:
        """How many rungs the trial has been promoted from."""
        k = 0
        while k < len(self.milestones) and self.promoted[k] is not None and trial_id in self.promoted[k]:
            k += 1
        return k

    def target(self, trial_id: str) -> int | None:
        """The evaluation the trial trains to now (None: to the end of its run)."""
        k = self.passed(trial_id)
        return self.milestones[k] if k < len(self.milestones) else None

    @classmethod
    def load(cls, home: Storage, milestones: list[int]) -> Rungs:
        """The sweep's rungs as last written (a fresh record when none was)."""
        raw = home.read_json(*STATE_FILE)
        return cls.model_validate(raw) if raw is not None else cls(milestones=milestones)

    def save(self, home: Storage) -> None:
        home.write_json(self.model_dump(mode="json"), *STATE_FILE)  # atomic (temp + rename)


class RungLimiter(ConcurrencyLimiter):
    """Tune's concurrency limiter, except that a trial paused at a rung holds no slot (otherwise
    `concurrency` paused trials would stop the searcher from suggesting the rest of the rung)."""

    def __init__(self, searcher: Searcher, max_concurrent: int):
        super().__init__(searcher, max_concurrent)
        self.waiting: set[str] = set()

    @property
    def busy(self) -> int:
        return len(self.live_trials - self.waiting)

    def suggest(self, trial_id: str):
        if self.busy >= self.max_concurrent:
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
        return suggestion

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        self.waiting.discard(trial_id)
        super().on_trial_complete(trial_id, result=result, error=error)

    def on_pause(self, trial_id: str):
        self.waiting.add(trial_id)

    def on_unpause(self, trial_id: str):
        self.waiting.discard(trial_id)


class SyncHalving(FIFOScheduler):
    """Tune pickles its scheduler when the sweep starts and unpickles that copy when a killed
    driver resumes, so the rungs are read from `home`'s halving.json on first use, not kept here."""

    def __init__(self, metric: str, mode: str, milestones: list[int], reduction_factor: float, home: Storage,
                 trials: int, say: Callable[[str], None] | None = None):
        super().__init__()
        self._metric, self._mode, self.sign, self.milestones = metric, mode, 1.0 if mode == "max" else -1.0, milestones
        self.reduction_factor, self.home, self._say, self._rungs = reduction_factor, home, say, None
        self._echoes: dict[str, int] = {}
        self.trials = trials  # the sweep's; only for messages (rung 1 waits until the searcher is done)

    @property
    def rungs(self) -> Rungs:
        if self._rungs is None:
            self._rungs = Rungs.load(self.home, self.milestones)
        return self._rungs

    def _persist(self) -> None:  # not `save`: TrialScheduler.save(checkpoint_path) is Tune's API
        self.rungs.save(self.home)

    def say(self, line: str) -> None:
        if self._say is not None:
            self._say(line)

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # metric and mode are fixed at construction (Tune may ask again on restore)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        evaluation = result.get("evaluation")
        if evaluation not in self.rungs.milestones:
            return TrialScheduler.CONTINUE
        k, passed = self.rungs.milestones.index(evaluation), self.rungs.passed(trial.trial_id)
        if passed < k:  # beyond the rung it may train to (cannot happen while halving.json is kept)
            return TrialScheduler.STOP
        if passed > k:  # restarted after its promotion, it should have trained on: it cannot read halving.json
            self._echoes[trial.trial_id] = self._echoes.get(trial.trial_id, 0) + 1
            if self._echoes[trial.trial_id] > 2:
                raise DiscoError(f"trial {trial.trial_id} restarts at eval {evaluation} although promoted: its "
                                 f"workers do not see {self.home.join(*STATE_FILE)} (storage not shared?)")
        if passed == k and trial.trial_id not in self.rungs.recorded[k]:
            # A trial is worth its best checkpoint (how the leaderboard ranks it): compare the best
            # score so far (the run reports it), not the last evaluation's noise.
            value = result.get(f"best_{self._metric}", result.get(self._metric))
            ok = isinstance(value, int | float) and not math.isnan(value)
            self.rungs.recorded[k][trial.trial_id] = self.sign * value if ok else -math.inf  # missing ranks last
            self._persist()
        self._decide(tune_controller, current=trial)
        promoted = self.rungs.promoted[k]
        if promoted is not None and trial.trial_id not in promoted:
            return TrialScheduler.STOP
        if promoted is None:
            cohort = self._cohort(tune_controller, k)
            expected = max(len(cohort), self.trials - len(self._failed(tune_controller))) if k == 0 else len(cohort)
            self.say(f"  {trial.trial_id}  paused at rung {k + 1}/{len(self.rungs.milestones)} (eval {evaluation}): "
                     f"{len(self.rungs.recorded[k])} of {expected} trials in")
        # Promoted (now or before a restart) or waiting: the trial only waits at its rung (its
        # protocol), so pause it; once promoted it restarts and trains on to its next rung.
        tune_controller.search_alg.searcher.on_pause(trial.trial_id)
        return TrialScheduler.PAUSE

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        if trial.trial_id not in self.rungs.order:  # Tune's ids are random: ties go by this order
            self.rungs.order.append(trial.trial_id)
            self._persist()

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._decide(tune_controller, gone=trial)  # a rung may have been waiting for this trial only

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        limiter = tune_controller.search_alg.searcher
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PENDING:
                return trial
        if limiter.busy >= limiter.max_concurrent:
            return None
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PAUSED and self._promoted_waiting(trial.trial_id):
                limiter.on_unpause(trial.trial_id)
                return trial
        return None

    def debug_string(self) -> str:
        return "Synchronous successive halving (disco): " + ", ".join(
            f"eval {m}: {len(r)} in" for m, r in zip(self.rungs.milestones, self.rungs.recorded, strict=True))

    def _promoted_waiting(self, trial_id: str) -> bool:
        k = self.rungs.passed(trial_id)
        return k > 0 and trial_id in self.rungs.recorded[k - 1] and trial_id not in (
            self.rungs.recorded[k] if k < len(self.rungs.milestones) else {})

    @staticmethod
    def _failed(tune_controller) -> list[Trial]:
        return [t for t in tune_controller.get_trials() if t.status == Trial.ERROR]

    def _cohort(self, tune_controller, k: int, gone: Trial | None = None) -> set[str]:
        """The trials rung k waits for: every trial of the sweep (k = 0) or those promoted to it,
        less the ones that failed or ended without reaching it."""
        trials = {t.trial_id: t for t in tune_controller.get_trials() if t is not gone}
        members = set(trials) if k == 0 else set(self.rungs.promoted[k - 1] or ())
        recorded = self.rungs.recorded[k]
        return {t for t in members if t in recorded or (t in trials and trials[t].status not in (Trial.ERROR,
                                                                                                  Trial.TERMINATED))}

    def _decide(self, tune_controller, current: Trial | None = None, gone: Trial | None = None) -> None:
        """Decide every rung whose trials have all reported; stop the paused losers."""
        for k, milestone in enumerate(self.rungs.milestones):
            if self.rungs.promoted[k] is not None:
                continue
            if k > 0 and self.rungs.promoted[k - 1] is None:
                return
            cohort = self._cohort(tune_controller, k, gone)
            recorded = self.rungs.recorded[k]
            if (k == 0 and not tune_controller.search_alg.is_finished()) or not cohort or cohort - set(recorded):
                return
            drawn = {t: i for i, t in enumerate(self.rungs.order)}
            ranked = sorted(cohort, key=lambda t: (-recorded[t], drawn.get(t, len(drawn))))  # ties: the earlier drawn
            keep = ranked[: max(1, math.ceil(len(ranked) / self.reduction_factor))]
            self.rungs.promoted[k] = keep
            self._persist()  # before acting: a restarted trial reads its new target from it
            self.say(f"  rung {k + 1}/{len(self.rungs.milestones)} (eval {milestone}): {len(keep)} of {len(ranked)} "
                     f"go on: {', '.join(keep)}")
            trials = {t.trial_id: t for t in tune_controller.get_trials()}
            for trial_id in ranked[len(keep):]:
                t = trials.get(trial_id)
                if t is not None and t is not current and (t.status == Trial.PAUSED or t.is_saving):
                    tune_controller.stop_trial(t)
