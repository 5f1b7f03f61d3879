"""Synchronous halving's decisions (tuning/halving.py), driven the way Tune drives a scheduler:
results in, PAUSE/STOP out, paused losers stopped, promoted trials chosen to run, and halving.json
read back by a fresh scheduler (a resumed driver) and by the trials. The real sweep runs in
tests/test_sweep.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from arc_data.errors import DiscoError
from trainer.storage import Storage
from tuning.halving import STATE_FILE, RungLimiter, Rungs, SyncHalving, rung_milestones

PAUSE, STOP = TrialScheduler.PAUSE, TrialScheduler.STOP


class _Draws(Searcher):
    """A searcher that draws nothing in particular (the limiter in front of it is what is tested)."""

    def suggest(self, trial_id):
        return {}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed = [*getattr(self, "completed", []), trial_id]


class _Controller:
    """What Tune hands a scheduler: its trials, the search algorithm and stop_trial."""

    def __init__(self, ids: str, concurrency: int = 2):
        self.trials = [SimpleNamespace(trial_id=i, status=Trial.RUNNING, is_saving=False) for i in ids]
        self.finished = True
        self.search_alg = SimpleNamespace(searcher=RungLimiter(_Draws(), concurrency), is_finished=lambda: self.finished)
        for t in self.trials:
            self.search_alg.searcher.live_trials.add(t.trial_id)

    def get_trials(self):
        return self.trials

    def trial(self, trial_id: str):
        return next(t for t in self.trials if t.trial_id == trial_id)

    def stop_trial(self, trial):
        self.search_alg.searcher.on_trial_complete(trial.trial_id)
        trial.status = Trial.TERMINATED


def _scheduler(tc: _Controller, milestones: list[int], home: Storage, mode: str = "max") -> SyncHalving:
    s = SyncHalving("m", mode, milestones, 2, home, trials=len(tc.trials))
    for t in tc.trials:  # Tune adds each trial as the searcher draws it
        s.on_trial_add(tc, t)
    return s


def _report(s: SyncHalving, tc: _Controller, trial_id: str, evaluation: int, value: float, best: float | None = None) -> str:
    t = tc.trial(trial_id)
    action = s.on_trial_result(tc, t, {"evaluation": evaluation, "m": value} | ({"best_m": best} if best else {}))
    t.status = {PAUSE: Trial.PAUSED, STOP: Trial.TERMINATED}.get(action, t.status)
    return action


def test_rung_milestones_are_in_evaluations_below_the_runs_length():
    assert rung_milestones(2, 2, 16) == [2, 4, 8]
    assert rung_milestones(2, 4, 16) == [2, 8]
    assert rung_milestones(1, 2, 4) == [1, 2]
    assert rung_milestones(2, 1.5, 8) == [2, 3, 4, 7]  # rounded, never repeated
    assert rung_milestones(4, 2, 4) == []  # grace as long as the run: nothing to compare


def test_trials_wait_at_each_rung_until_all_are_in_then_the_best_half_goes_on(tmp_path):
    home = Storage.of(str(tmp_path))
    tc = _Controller("abcd")
    s = _scheduler(tc, [1, 2], home)
    limiter = tc.search_alg.searcher
    tc.finished = False
    assert [_report(s, tc, i, 1, v) for i, v in (("a", 0.5), ("b", 0.9), ("c", 0.1))] == [PAUSE] * 3
    assert limiter.busy == 1 and s.choose_trial_to_run(tc) is None  # paused trials hold no slot; none promoted
    tc.finished = True  # the searcher has drawn every trial: the rung decides on d's report
    assert _report(s, tc, "d", 1, 0.7) == PAUSE  # promoted, and restarted to train on
    assert tc.trial("a").status == tc.trial("c").status == Trial.TERMINATED  # paused losers stopped
    assert limiter.searcher.completed == ["a", "c"]
    rungs = Rungs.load(home, [1, 2])  # what a restarted trial reads
    assert rungs.promoted[0] == ["b", "d"] and rungs.target("b") == 2 and rungs.target("a") == 1
    chosen = s.choose_trial_to_run(tc)
    assert chosen.trial_id == "b" and limiter.busy == 1
    chosen.status = Trial.RUNNING

    # A fresh scheduler (a resumed driver) knows every decision from halving.json.
    s = SyncHalving("m", "max", [1, 2], 2, home, trials=4)
    assert s.choose_trial_to_run(tc).trial_id == "d"
    tc.trial("d").status = Trial.RUNNING
    assert _report(s, tc, "b", 2, 0.2) == PAUSE
    assert _report(s, tc, "d", 2, 0.6) == PAUSE and tc.trial("b").status == Trial.TERMINATED
    assert Rungs.load(home, [1, 2]).target("d") is None  # the last trial trains to the end
    assert tmp_path.joinpath(*STATE_FILE).is_file()


def test_a_trial_that_fails_is_not_waited_for_and_a_lost_state_file_is_an_error(tmp_path):
    home = Storage.of(str(tmp_path))
    tc = _Controller("abc")
    s = _scheduler(tc, [1], home, mode="min")
    assert _report(s, tc, "a", 1, 0.5) == PAUSE and _report(s, tc, "b", 1, 0.2) == PAUSE
    s.on_trial_error(tc, tc.trial("c"))  # Tune marks it ERROR after this call
    assert Rungs.load(home, [1]).promoted[0] == ["b"]  # mode min: the lower value goes on
    assert tc.trial("a").status == Trial.TERMINATED
    # b restarts but keeps reporting its rung (it does not see its promotion): an error, not a loop.
    for _ in range(2):
        assert _report(s, tc, "b", 1, 0.2) == PAUSE
    with pytest.raises(DiscoError, match="storage not shared"):
        _report(s, tc, "b", 1, 0.2)


def test_trials_are_worth_their_best_score_so_far_ties_go_to_the_first_drawn(tmp_path):
    tc = _Controller("dcba")  # drawn in this order (Tune's ids are random)
    s = _scheduler(tc, [2], Storage.of(str(tmp_path)))
    _report(s, tc, "d", 2, 0.3)
    _report(s, tc, "c", 2, 0.1, best=0.3)  # its best checkpoint scores as much as d's
    _report(s, tc, "b", 2, float("nan"))  # no metric: ranks last
    assert _report(s, tc, "a", 2, 0.25) == STOP
    assert s.rungs.promoted[0] == ["d", "c"]
