"""Driver side of `disco train`: Ray connection, the TorchTrainer, run records and progress.

Each run lives in `<storage>/<name>/` (see runs.py). A fresh run refuses an existing name;
`resume=True` continues one from its newest intact checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from arc_data.errors import DiscoError

from .config import DatasetRef, RunSpec, derive
from .device import backend_for, uses_accelerator
from .runs import Run, RunRecord, now, stamp
from .storage import Storage

# Quiet, responsive Ray defaults (see docs/training.md); users can override any of them.
RAY_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",  # each report() blocks up to this long (default 2 s)
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # prints would otherwise appear twice
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "0",
}


def ray_env() -> dict[str, str]:
    """Environment for Ray processes: the defaults above, unless the user set them."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    return {k: os.environ[k] for k in RAY_ENV}


def _probe(address: str, timeout: float = 10.0) -> None:
    """Fail fast (one line) when a cluster address cannot be reached."""
    if address == "auto":
        if os.environ.get("RAY_ADDRESS"):
            return _probe(os.environ["RAY_ADDRESS"], timeout)
        if not Path("/tmp/ray/ray_current_cluster").exists():  # written by `ray start` in Ray's default temp dir
            raise DiscoError("no running Ray cluster found for --address auto (start one with `ray start --head`, "
                             "or leave --address out to use an embedded local Ray)")
        return None
    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise DiscoError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise DiscoError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def connect(address: str | None, num_cpus: float | None = None, num_gpus: float | None = None,
            worker_output: bool = True) -> bool:
    """ray.init an embedded local instance (address None) or join a cluster; True if we started Ray."""
    import ray

    env = ray_env()
    if address:
        _probe(address)  # also when Ray is up already: a wrong address is an error, not ignored
    if ray.is_initialized():
        return False
    if address:
        # Inside a Ray job (`disco submit`) the job's runtime_env already sets some of these; Ray refuses
        # a driver runtime_env that repeats a key, and the job's value is the one the user chose.
        job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        env = {k: v for k, v in env.items() if k not in ((job.get("runtime_env") or {}).get("env_vars") or {})}
        ray.init(address=address, runtime_env={"env_vars": env}, logging_config=ray.LoggingConfig(log_level="ERROR"))
        return False
    cpus = max(float(os.cpu_count() or 1), num_cpus or 0)
    ray.init(address="local", num_cpus=int(cpus + 0.999), num_gpus=num_gpus, include_dashboard=True,
             logging_config=ray.LoggingConfig(log_level="ERROR"), log_to_driver=worker_output)
    return True


def new_run_name(spec: RunSpec) -> str:
    return f"{spec.method}-{stamp()}"


@dataclass
class Outcome:
    name: str
    run_dir: str
    metrics: dict
    best: str | None


def _progress(run: Run, stop: threading.Event) -> None:
    """Follow metrics.jsonl: a tqdm bar on a terminal, a line per 10% and per evaluation otherwise."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    bar, seen, total, next_line = None, 0, None, 0.0

    def say(line: str) -> None:  # above the bar when there is one
        bar.write(line) if bar is not None else print(line, file=sys.stderr, flush=True)

    while not stop.wait(run.storage.poll_interval_s):
        records = run.metrics()
        for r in records[seen:]:
            kind = r.get("kind")
            if kind in ("start", "resume") and total is None:
                total = r.get("batches_total")
                if kind == "start":
                    say(f"  {r['world_size']} workers on {r['device']} ({r['dtype']}), {r['params']:,} parameters, "
                        f"{total} batches; copy-the-input baseline: token accuracy {r['copy_baseline_accuracy']:.3f}")
                if tty and total:
                    bar = tqdm(total=total, unit="batch", desc=run.name, dynamic_ncols=True, mininterval=1.0)
            elif kind == "train":
                stats = (f"step {r['step']}  loss {r['loss']:.3f}  acc {r.get('accuracy', 0):.3f}  "
                         f"exact {r.get('exact_accuracy', 0):.3f}  {r['samples_per_s']:.1f} samples/s")
                if bar is not None:
                    bar.n = r["batch"]
                    bar.set_postfix_str(stats, refresh=True)
                elif total is None or r["batch"] >= next_line:
                    say(f"  batch {r['batch']}/{total or '?'}  {stats}")
                    next_line = r["batch"] + 0.1 * (total or 10)
            elif kind == "eval":
                say(f"  eval @ batch {r['batch']}: pass@1 {r.get('pass@1', 0):.3f}  pass@2 {r.get('pass@2', 0):.3f}"
                    f"  train puzzles exact {r.get('train_exact_accuracy', 0):.3f} / token acc "
                    f"{r.get('train_accuracy', 0):.3f}  test token acc {r.get('test_accuracy', 0):.3f}")
        seen = len(records)
    if bar is not None:
        bar.close()


def _prepare(run: Run, spec: RunSpec, resume: bool) -> tuple[RunSpec, RunRecord]:
    """Check the name, make the data path absolute and probe the dataset; the run's new record."""
    from arc_data.dataset import ArcDataset

    record = run.read()
    if resume and record is None:
        raise DiscoError(f"no run named {run.name!r} in {run.storage.uri} to resume (see `disco runs list`)")
    if not resume and run.exists():
        raise DiscoError(f"run {run.name!r} already exists in {run.storage.uri}; continue it with "
                         f"`disco train --resume {run.name}` or pick another --name")
    # Workers chdir into Ray's session directory: every path they see must be absolute.
    spec = derive(spec, {"data": {"path": str(Path(spec.data.path).expanduser().resolve())}})
    ds = ArcDataset(spec.data.path)  # fail here, not in every worker, when the data is missing
    if ds.examples_per_epoch < spec.train.global_batch_size:
        print(f"warning: {ds.examples_per_epoch} training examples per epoch are fewer than the global batch of "
              f"{spec.train.global_batch_size}: each batch holds examples of several epochs", file=sys.stderr)
    new = RunRecord(name=run.name, status="running", spec=spec, storage=run.storage.uri,
                    dataset=DatasetRef(path=spec.data.path, fingerprint=ds.fingerprint))
    return spec, new.model_copy(update={"created": record.created}) if record else new


def _torch_trainer(run: Run, spec: RunSpec, callbacks: list | None, worker_callbacks: list):
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .worker import train_loop

    rt = spec.runtime
    gpu = uses_accelerator(rt)
    return TorchTrainer(
        train_loop,
        train_loop_config={"spec": spec.model_dump(mode="json"), "name": run.name, "storage": run.storage,
                           "callbacks": list(worker_callbacks)},
        torch_config=TorchConfig(backend=backend_for(rt)),
        scaling_config=ScalingConfig(num_workers=rt.workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": rt.cpus_per_worker} | ({"GPU": rt.gpus_per_worker} if gpu else {})),
        run_config=RunConfig(
            name=run.name, **run.storage.ray_run_config(),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.train.keep_checkpoints,
                                               checkpoint_score_attribute=spec.train.select_metric,
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=rt.max_failures),
            worker_runtime_env={"env_vars": ray_env()}, callbacks=callbacks,
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )


def train(spec: RunSpec, storage: Storage, name: str | None = None, *, address: str | None = None,
          resume: bool = False, progress: bool = True, callbacks: list | None = None,
          worker_callbacks: list | tuple = ()) -> Outcome:
    """Train (or resume) a run on Ray Train; `callbacks` are Ray Train callbacks on the driver,
    `worker_callbacks` Trainer callbacks in every worker (tests inject faults this way)."""
    import ray
    import ray.train

    run = Run(storage, name or new_run_name(spec))
    spec, record = _prepare(run, spec, resume)
    rt = spec.runtime
    started = connect(address, num_cpus=rt.workers * rt.cpus_per_worker, num_gpus=None)
    run.write(record)  # only once the cluster is reachable
    trainer = _torch_trainer(run, spec, callbacks, worker_callbacks)
    stop = threading.Event()
    bar = threading.Thread(target=_progress, args=(run, stop), daemon=True) if progress else None
    status = "failed"
    try:
        if bar:
            bar.start()
        result = trainer.fit()
        status = "finished"
    except (KeyboardInterrupt, SystemExit):  # Ray turns SIGINT into SystemExit in some paths
        status = "interrupted"
        raise KeyboardInterrupt from None
    except ray.train.TrainingFailedError as e:
        raise DiscoError(f"training failed after {rt.max_failures} restart(s): {_root_cause(e)}") from None
    finally:
        stop.set()
        if bar:
            bar.join(timeout=5)
        if status != "finished":
            run.write(record.model_copy(update={"status": status, "updated": now()}))
        if started:
            ray.shutdown()
    best = run.best()
    metrics = result.return_value or result.metrics or {}
    best_at = run.checkpoint_location(best.name) if best else None
    run.write(record.model_copy(update={"status": status, "updated": now(), "metrics": metrics,
                                        "best_checkpoint": best_at}))
    return Outcome(run.name, run.location, metrics, best_at)


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"
