"""`disco sweep`: Ray Tune + Optuna (persistent RDB study) + synchronous halving over real `disco train` runs.

Layout of `<storage>/<sweep>/`: Tune's experiment files (trial dirs, searcher state), `study.db`
(the Optuna study, inspectable with `optuna-dashboard sqlite:///…/study.db`), `sweep.json` (the
typed `SweepRecord`: space, request, status), `scheduler/halving.json` (tuning/halving.py) and `runs/`, where every trial is a normal disco run
(`trial-<id>`) readable with `disco runs --storage …/runs`.

Each trial is a Tune function trainable that fits a `TorchTrainer` (`workers_per_trial` DDP
workers) with `TuneReportCallback`, so every evaluation is one Tune result and the scheduler can
pause or stop a trial between evaluations (`tuning/halving.py`). The trial itself holds no CPU; its workers do. Every trial's config
is derived by `SweepSpace.trial_spec` and validated; `plan_sweep` validates one before Ray starts.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arc_data.errors import DiscoError
from trainer.config import RunSpec, parse_assignments
from trainer.runs import Run, now
from trainer.storage import Storage

from .space import SweepSpace, absolute, load_space

SWEEP_FILE = "sweep.json"
RUNS = "runs"
APPS_METRIC = "train_block_apps_per_sample"
Objective = Literal["single", "pareto"]


class SweepRecord(BaseModel):
    """sweep.json: everything needed to run, resume and rank a sweep."""

    model_config = ConfigDict(extra="forbid")

    name: str
    space: SweepSpace
    base: RunSpec = Field(description="the base preset's run config")
    overrides: dict[str, Any] = Field(default_factory=dict, description="--set of the command line (dotted keys)")
    trials: int = Field(ge=1)
    concurrency: int = Field(ge=1)
    workers_per_trial: int = Field(1, ge=1)
    objective: Objective = "single"
    study_url: str = Field(description="SQLAlchemy URL of the Optuna study")
    status: Literal["planned", "running", "finished", "failed", "interrupted"] = "planned"
    created: str = Field(default_factory=now)
    updated: str = Field(default_factory=now)

    @property
    def metric(self) -> str:
        return self.space.metric

    @property
    def validation_fraction(self) -> float:
        return self.space.validation_fraction

    @property
    def evaluations(self) -> int:
        """Evaluations in a full trial (of the space's first values; the rungs are counted in them)."""
        first = self.trial_spec(self.space.first_values()).train
        return max(1, math.ceil(first.budget / first.eval_interval))

    @property
    def milestones(self) -> list[int]:
        """The evaluations at which halving compares trials."""
        from .halving import rung_milestones

        s = self.space.scheduler
        return rung_milestones(s.grace_period, s.reduction_factor, self.evaluations)

    def trial_spec(self, params: dict) -> RunSpec:
        """One trial's run config (the sampled params plus this sweep's workers per trial)."""
        return self.space.trial_spec(self.base, {**params, "runtime.workers": self.workers_per_trial}, self.overrides)


def read_sweep(storage: Storage, name: str, missing_ok: bool = False) -> SweepRecord | None:
    raw = storage.read_json(name, SWEEP_FILE)
    if raw is None:
        if missing_ok:
            return None
        raise DiscoError(f"no sweep named {name!r} in {storage.uri} (see `disco runs list` for plain runs)")
    try:
        return SweepRecord.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise DiscoError(f"{storage.join(name, SWEEP_FILE)}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


class SweepRequest(BaseModel):
    """What the command line asks of a new sweep beyond its space (None = the space's default)."""

    model_config = ConfigDict(extra="forbid")

    trials: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)
    workers_per_trial: int = Field(1, ge=1)
    objective: Objective = "single"
    study_url: str | None = None


def plan_sweep(space_ref: str, name: str, storage: Storage, request: SweepRequest | None = None,
               overrides: list[str] | None = None) -> SweepRecord:
    """A new sweep's record, with one trial's config validated (workers included): an invalid
    request fails here, naming the field, before Ray starts."""
    request = request or SweepRequest()
    if storage.exists(name):
        raise DiscoError(f"sweep {name!r} already exists in {storage.uri}; continue it with "
                         f"`disco sweep --resume {name}` or pick another --name")
    space, base = load_space(space_ref)
    sets = parse_assignments(overrides or [])
    if clash := sorted(set(sets) & set(space.params)):
        raise DiscoError(f"--set {clash[0]} is a searched parameter of the space; drop it from --set or from params")
    if "data.path" in sets:  # trials run in Ray's session directory
        sets["data.path"] = absolute(sets["data.path"])
    study_url = request.study_url
    if study_url is None:
        if not storage.is_local:
            raise DiscoError("with remote storage, give --study-url (an SQLAlchemy URL for the Optuna study)")
        study_url = f"sqlite:///{storage.path(name, 'study.db')}"
    record = SweepRecord(name=name, space=space, base=base, trials=request.trials or space.trials,
                         concurrency=request.concurrency or space.concurrency,
                         workers_per_trial=request.workers_per_trial, objective=request.objective, study_url=study_url,
                         overrides=sets)
    method = space.params.get("method")
    for m in method.choice if method is not None and method.choice else [None]:  # every method's trials
        record.trial_spec(space.first_values() | ({"method": m} if m else {}))  # fail now, not in trial 17
    return record


def run_trial(config: dict, sweep: dict, home: Storage) -> None:
    """One trial (runs in a Tune actor): a disco training run that reports each evaluation to Tune.
    Under synchronous halving it trains only to its next rung and returns; the scheduler pauses it
    there, and restarts it once it is promoted (the run resumes from the rung's checkpoint)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from trainer.launch import train

    from .halving import Rungs

    class Report(TuneReportCallback):
        """Each evaluation to Tune, except the rung's: reported once the run has stopped cleanly
        (the scheduler pauses the trial on it, which would cut the run's shutdown short)."""

        def after_report(self, run_context, metrics, checkpoint):
            if until is None or metrics[0].get("evaluation") != until:
                super().after_report(run_context, metrics, checkpoint)

    record = SweepRecord.model_validate(sweep)
    trial_id = tune.get_context().get_trial_id()
    runs, name = home.child(RUNS), f"trial-{trial_id}"
    until = Rungs.load(home, record.milestones).target(trial_id) if record.space.scheduler.type == "halving" else None
    # A restored sweep re-runs unfinished trials, a promoted one restarts: the run continues from its last checkpoint.
    state = Run(runs, name).read()
    if until is not None and state is not None and state.status == "paused" and state.metrics.get("evaluation", 0) >= until:
        metrics = state.metrics  # waiting at its rung when the driver was killed: say so again, no workers needed
    else:
        out = train(record.trial_spec(config), runs, name=name, resume=state is not None, progress=False,
                    callbacks=[Report()], until_evaluation=until)
        # Reported here: the rung's evaluation, or the last one when nothing was left to train
        # (killed after it); so Tune, the scheduler and the searcher see this trial's result.
        metrics = out.metrics if out.metrics.get("paused") or not out.metrics.get("reported") else {}
    if metrics:
        tune.report({k: v for k, v in metrics.items() if isinstance(v, int | float | str)})


def _progress_callback(metric: str, evaluations: int):
    """One line per trial state change (started with its params, each evaluation, stopped early,
    finished, failed; the halving scheduler adds pauses and rung decisions), instead of Tune's
    tables; the leaderboard follows at the end."""
    from ray.tune import Callback

    def params(trial) -> str:
        return " ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                        for k, v in (trial.config or {}).items())

    def evaluation(result: dict) -> int:  # the run's own index: Tune's counter restarts with a paused trial
        return result.get("evaluation", result.get("training_iteration", 0))

    class Lines(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            k = evaluation(trial.last_result or {})
            print(f"  {trial.trial_id}  {f'resumed at eval {k}' if k else 'started'}   {params(trial)}", flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            print(f"  {trial.trial_id}  eval {evaluation(result)}/{evaluations}  batch {result.get('batch')}  "
                  f"{metric} {result.get(metric, float('nan')):.4f}  ({sum(t.status == 'RUNNING' for t in trials)} "
                  f"running, {sum(t.status == 'TERMINATED' for t in trials)} done)", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            k = evaluation(trial.last_result)
            how = f"stopped early at eval {k}/{evaluations}" if k < evaluations else f"finished after {k} evaluation(s)"
            print(f"  {trial.trial_id}  {how}  {metric} {trial.last_result.get(metric, float('nan')):.4f}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"  {trial.trial_id}  failed (see its error file under the sweep directory)", flush=True)

    return Lines()


def _tuner(record: SweepRecord, storage: Storage, resume: bool, verbose: int):
    import optuna
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from .asha import RecheckedASHA
    from .halving import RungLimiter, SyncHalving
    from .searcher import ResumableOptunaSearch

    home = storage.child(record.name)
    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=record.model_dump(mode="json"), home=home),
                                    {"cpu": 0, "memory": 100 * 1024**2})  # the trial holds nothing; its Train workers take the CPUs
    if resume:  # the scheduler and searcher come back from the experiment's own files
        return tune.Tuner.restore(storage.join(record.name), trainable=trainable, resume_unfinished=True,
                                  resume_errored=True, restart_errored=False,
                                  **({} if storage.is_local else {"storage_filesystem": storage.fs}))
    space, pareto = record.space, record.objective == "pareto"
    searcher = ResumableOptunaSearch(metric=[space.metric, APPS_METRIC] if pareto else space.metric,
                                     mode=["max", "min"] if pareto else "max", seed=space.seed, study_name=record.name,
                                     storage=optuna.storages.RDBStorage(record.study_url))
    s, say = space.scheduler, print if verbose == 0 else None
    scheduler = {"halving": lambda: SyncHalving(space.metric, "max", record.milestones, s.reduction_factor, home,
                                                     record.trials, say),
                 "asha": lambda: RecheckedASHA(time_attr="evaluation", metric=space.metric, mode="max",
                                               max_t=record.evaluations, grace_period=s.grace_period,
                                               reduction_factor=s.reduction_factor),
                 "fifo": FIFOScheduler}[s.type]()
    return tune.Tuner(
        trainable,
        param_space={k: p.tune_domain() for k, p in space.params.items()},
        # metric and mode live in the searcher and the scheduler (Tune refuses them twice)
        tune_config=tune.TuneConfig(num_samples=record.trials, scheduler=scheduler,
                                    search_alg=RungLimiter(searcher, max_concurrent=record.concurrency)),
        run_config=tune.RunConfig(name=record.name, **storage.ray_run_config(), verbose=verbose,
                                  callbacks=[_progress_callback(space.metric, record.evaluations)]
                                  if verbose == 0 else None,
                                  failure_config=tune.FailureConfig(max_failures=1)))


def run_sweep(record: SweepRecord, storage: Storage, address: str | None = None, resume: bool = False,
              verbose: int = 0):
    """Run a planned sweep (or finish an interrupted one) to its requested number of trials."""
    import optuna
    import ray

    from trainer.launch import connect

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Worker output stays in Ray's logs: stopped trials print actor-death noise otherwise.
    started = connect(address, worker_output=False)
    record = record.model_copy(update={"status": "running", "updated": now()})
    storage.write_json(record.model_dump(mode="json"), record.name, SWEEP_FILE)
    status = "failed"
    try:
        grid = _tuner(record, storage, resume, verbose).fit()
        status = "finished"
        _close_orphans(record)
    except (KeyboardInterrupt, SystemExit):
        status = "interrupted"
        raise KeyboardInterrupt from None
    finally:
        storage.write_json(record.model_copy(update={"status": status, "updated": now()}).model_dump(mode="json"),
                           record.name, SWEEP_FILE)
        if started:
            ray.shutdown()
    errors = [r.error for r in grid if r.error is not None]
    if errors and len(errors) == len(grid):
        raise DiscoError(f"all {len(errors)} trials failed; the first: {_last_line(errors[0])}")
    for e in errors:
        print(f"warning: a trial failed: {_last_line(e)}")
    return grid


def _close_orphans(record: SweepRecord) -> None:
    """Close the Optuna trials a killed driver left RUNNING. Tune re-runs the trials its last
    snapshot knew under their own study trials; one asked for after that snapshot is re-drawn as a
    new trial, and its first study trial would stay RUNNING forever (and skew TPE and the study's
    counts). Once every Tune trial has ended, nothing can still report into a RUNNING one."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.RDBStorage(record.study_url)
    study = optuna.load_study(study_name=record.name, storage=storage)
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    study_id = storage.get_study_id_from_name(record.name)
    for t in orphans:
        storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study_id, t.number), "disco",
                                    "in flight when the sweep's driver was killed; its configuration was drawn "
                                    "again as a new trial")
        study.tell(t.number, state=TrialState.FAIL)
    if orphans:
        print(f"closed {len(orphans)} Optuna trial(s) a killed driver left running (marked FAIL, see user attr "
              "'disco'); every trial of the sweep is COMPLETE", flush=True)


def _last_line(e: BaseException) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    return lines[-1] if lines else type(e).__name__
