"""`disco sweep`: Ray Tune + Optuna (persistent RDB study) + ASHA over real `disco train` runs.

Layout of `<storage>/<sweep>/`: Tune's experiment files (trial dirs, searcher state), `study.db`
(the Optuna study, inspectable with `optuna-dashboard sqlite:///…/study.db`), `sweep.json` (the
space, the request and the status) and `runs/`, where every trial is a normal disco run
(`trial-<id>`: run.json, metrics.jsonl, checkpoints) readable with `disco runs --storage …/runs`.

Each trial is a Tune function trainable that fits a `TorchTrainer` (`workers_per_trial` DDP
workers) with `TuneReportCallback`, so every evaluation is one Tune iteration and ASHA can stop
a trial between evaluations. The trial itself holds no CPU; its workers do.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from arc_data.errors import DiscoError
from cluster.storage import Storage

from .space import SweepSpace, load_space

SWEEP_FILE = "sweep.json"
RUNS = "runs"
APPS_METRIC = "train_block_apps_per_sample"


def run_trial(config: dict, base: dict, space: dict, runs: str, workers: int) -> None:
    """One trial (runs in a Tune actor): a disco training run that reports each evaluation to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from trainer.launch import train

    sweep_space = SweepSpace.model_validate(space)
    spec = sweep_space.trial_spec(base, config)
    spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"workers": workers})})
    storage = Storage.of(runs)
    name = f"trial-{tune.get_context().get_trial_id()}"
    # A restored sweep re-runs unfinished trials: their run continues from its last checkpoint.
    resumed = storage.read_text(name, "run.json") is not None
    out = train(spec, storage, name=name, resume=resumed, progress=False, callbacks=[TuneReportCallback()])
    if resumed and out.metrics:
        # The run may have had nothing left to train (killed after its last evaluation): report its
        # final metrics once more so Tune and the searcher see a result for this trial.
        tune.report({k: v for k, v in out.metrics.items() if isinstance(v, int | float | str)})


def _progress_callback(metric: str):
    """One line per trial evaluation and per finished trial, instead of Tune's tables."""
    from ray.tune import Callback

    class Lines(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            print(f"  {trial.trial_id}  eval {result.get('training_iteration')}  batch {result.get('batch')}  "
                  f"{metric} {result.get(metric, float('nan')):.4f}  ({sum(t.status == 'RUNNING' for t in trials)} "
                  f"running, {sum(t.status == 'TERMINATED' for t in trials)} done)", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            print(f"  {trial.trial_id}  finished after {trial.last_result.get('training_iteration', 0)} evaluation(s)",
                  flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"  {trial.trial_id}  failed (see its error file under the sweep directory)", flush=True)

    return Lines()


def _evals_per_trial(space: SweepSpace, base: dict) -> int:
    train = space.trial_spec(base, space.first_values()).train
    return max(1, math.ceil(train.budget / train.eval_interval))


def run_sweep(space_path: str | None, name: str, storage: Storage, trials: int | None = None,
              concurrency: int | None = None, workers_per_trial: int = 1, address: str | None = None,
              objective: str = "single", resume: bool = False, study_url: str | None = None,
              overrides: list[str] | None = None, verbose: int = 0):
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from trainer.launch import connect

    from .searcher import ResumableOptunaSearch

    record = storage.read_json(name, SWEEP_FILE)
    if resume:
        if record is None:
            raise DiscoError(f"no sweep named {name!r} in {storage.uri} to resume")
        space, base = SweepSpace.model_validate(record["space"]), record["base"]
        trials, concurrency, workers_per_trial = record["trials"], record["concurrency"], record["workers_per_trial"]
        objective, study_url = record["objective"], record["study_url"]
    else:
        if storage.exists(name):
            raise DiscoError(f"sweep {name!r} already exists in {storage.uri}; continue it with "
                             f"`disco sweep --resume {name}` or pick another --name")
        if space_path is None:
            raise DiscoError("--space is required (e.g. --space sweeps/cpu_tiny.yaml), or --resume SWEEP")
        space, base = load_space(space_path, overrides)
        trials, concurrency = trials or space.trials, concurrency or space.concurrency
        if study_url is None:
            if not storage.is_local:
                raise DiscoError("with remote storage, give --study-url (an SQLAlchemy URL for the Optuna study)")
            study_url = f"sqlite:///{Path(storage.uri, name, 'study.db')}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    # Worker output stays in Ray's logs: stopped trials print actor-death noise otherwise.
    started = connect(address, worker_output=False)
    record = {"name": name, "space": space.model_dump(mode="json"), "base": base, "trials": trials,
              "concurrency": concurrency, "workers_per_trial": workers_per_trial, "objective": objective,
              "study_url": study_url, "metric": space.metric, "selection_split": "validation",
              "validation_fraction": space.validation_fraction, "status": "running",
              "created": (record or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))}
    storage.write_json(record, name, SWEEP_FILE)
    if storage.is_local:
        Path(storage.uri, name).mkdir(parents=True, exist_ok=True)

    pareto = objective == "pareto"
    metrics = [space.metric, APPS_METRIC] if pareto else space.metric
    modes = ["max", "min"] if pareto else "max"
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=base, space=space.model_dump(mode="json"),
                             runs=Storage.of(storage.join(name, RUNS)).uri, workers=workers_per_trial),
        {"cpu": 0, "memory": 100 * 1024**2})  # the trial holds nothing; its Train workers take the CPUs
    status = "failed"
    try:
        if resume:
            tuner = tune.Tuner.restore(storage.join(name), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True, restart_errored=False)
        else:
            searcher = ResumableOptunaSearch(metric=metrics, mode=modes, seed=space.seed, study_name=name,
                                    storage=optuna.storages.RDBStorage(study_url))
            scheduler = (ASHAScheduler(time_attr="training_iteration", metric=space.metric, mode="max",
                                       max_t=_evals_per_trial(space, base), grace_period=space.scheduler.grace_period,
                                       reduction_factor=space.scheduler.reduction_factor)
                         if space.scheduler.type == "asha" else FIFOScheduler())
            tuner = tune.Tuner(
                trainable,
                param_space={k: p.tune_domain() for k, p in space.params.items()},
                # metric and mode live in the searcher and the scheduler (Tune refuses them twice)
                tune_config=tune.TuneConfig(num_samples=trials, scheduler=scheduler,
                                            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency)),
                run_config=tune.RunConfig(name=name, storage_path=storage.uri, verbose=verbose,
                                          callbacks=[_progress_callback(space.metric)] if verbose == 0 else None,
                                          failure_config=tune.FailureConfig(max_failures=1)))
        grid = tuner.fit()
        status = "finished"
    except (KeyboardInterrupt, SystemExit):
        status = "interrupted"
        raise KeyboardInterrupt from None
    finally:
        storage.write_json(record | {"status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                           name, SWEEP_FILE)
        if started:
            ray.shutdown()
    errors = [r.error for r in grid if r.error is not None]
    if errors and len(errors) == len(grid):
        raise DiscoError(f"all {len(errors)} trials failed; the first: {_last_line(errors[0])}")
    for e in errors:
        print(f"warning: a trial failed: {_last_line(e)}")
    return grid


def _last_line(e: BaseException) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    return lines[-1] if lines else type(e).__name__
