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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from arc_data.errors import DiscoError

from .config import DatasetRef, RunSpec, absolute_data
from .device import backend_for, uses_accelerator
from .runs import Run, RunRecord, now, stamp
from .storage import Storage, dataset_dir

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
    start_local_ray(num_cpus=int(cpus + 0.999), num_gpus=num_gpus, log_to_driver=worker_output)
    return True


def start_local_ray(**init) -> str:
    """Start an embedded Ray instance that every one of its processes can tell from any other Ray
    instance on the machine; returns its GCS address.

    Ray's own helpers (e.g. Train's placement-group cleaner) find "their" cluster by auto-detection,
    which fails with a second instance alive (ray-project/ray#65443) and then leaks placement groups
    until a sweep hangs. So the head's port is chosen here, and RAY_ADDRESS names it in the
    environment every process of the instance inherits."""
    import ray

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    address = f"{ray.util.get_node_ip_address()}:{port}"
    saved = {k: os.environ.get(k) for k in ("RAY_GCS_SERVER_PORT", "RAY_ADDRESS")}
    os.environ |= {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": address}
    try:
        ray.init(address="local", include_dashboard=True, logging_config=ray.LoggingConfig(log_level="ERROR"),
                 **init)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    return address


def new_run_name(spec: RunSpec) -> str:
    return f"{spec.method}-{stamp()}"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the run's record was written: it can be resumed by name."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclass
class Outcome:
    name: str
    run_dir: str
    metrics: dict
    best: str | None


class _Progress:
    """Follow this session's records in metrics.jsonl (from its start/resume record on, so a resumed
    run does not replay old lines): a tqdm bar on a terminal and a line per 10% otherwise
    (mode "bar"), or only the start and evaluation lines (mode "evals")."""

    def __init__(self, run: Run, session: str, mode: str):
        self.run, self.session, self.mode = run, session, mode
        self.bar, self.total, self.next_line, self.seen = None, None, 0.0, None

    def follow(self, stop: threading.Event) -> None:
        while not stop.wait(self.run.storage.poll_interval_s):
            records = self.run.metrics()
            if self.seen is None:  # this session's first record not written yet
                mine = [i for i, r in enumerate(records) if r.get("session") == self.session]
                if not mine:
                    continue
                self.seen = mine[0]
            for r in records[self.seen:]:
                self._show(r)
            self.seen = len(records)
        if self.bar is not None:
            self.bar.close()

    def _say(self, line: str) -> None:  # above the bar when there is one
        self.bar.write(line) if self.bar is not None else print(line, file=sys.stderr, flush=True)

    def _show(self, r: dict) -> None:
        from tqdm import tqdm

        kind = r.get("kind")
        if kind in ("start", "resume"):
            self.total = r.get("batches_total")
            self._say(f"  {r['world_size']} workers on {r['device']} ({r['dtype']}), {r['params']:,} parameters, "
                      f"{self.total} batches; copy-the-input baseline: token accuracy {r['copy_baseline_accuracy']:.3f}"
                      if kind == "start" else f"  resumed from {r['checkpoint']} at batch {r['batch']}/{self.total}")
            if self.mode == "bar" and sys.stderr.isatty() and self.total:
                self.bar = tqdm(total=self.total, initial=r["batch"], unit="batch", desc=self.run.name,
                                dynamic_ncols=True, mininterval=1.0)
        elif kind == "train" and self.mode == "bar":
            stats = (f"step {r['step']}  loss {r['loss']:.3f}  acc {r.get('accuracy', 0):.3f}  "
                     f"exact {r.get('exact_accuracy', 0):.3f}  {r['samples_per_s']:.1f} samples/s")
            if self.bar is not None:
                self.bar.n = r["batch"]
                self.bar.set_postfix_str(stats, refresh=True)
            elif self.total is None or r["batch"] >= self.next_line:
                self._say(f"  batch {r['batch']}/{self.total or '?'}  {stats}")
                self.next_line = r["batch"] + 0.1 * (self.total or 10)
        elif kind == "eval":
            test = (f"pass@1 {r.get('pass@1', 0):.3f}  pass@2 {r.get('pass@2', 0):.3f}" if r.get("test_pairs", 1)
                    else f"{r.get('unlabelled_pairs', 0)} test pairs without solutions predicted")
            tail = f"  test token acc {r.get('test_accuracy', 0):.3f}" if r.get("test_pairs", 1) else ""
            self._say(f"  eval @ batch {r['batch']}: {test}  train puzzles exact {r.get('train_exact_accuracy', 0):.3f}"
                      f" / token acc {r.get('train_accuracy', 0):.3f}{tail}")


def _prepare(run: Run, spec: RunSpec, resume: bool) -> tuple[RunSpec, RunRecord]:
    """Check the name and everything that can be checked against the data before Ray starts (a
    worker failing on it would only be retried); the run's new record."""
    from arc_data.dataset import ArcDataset

    record = run.read()
    if resume and record is None:
        raise DiscoError(f"no run named {run.name!r} in {run.storage.uri} to resume (see `disco runs list`)")
    if not resume and run.exists():
        if record is not None and record.status == "running" or run.checkpoints():
            raise DiscoError(f"run {run.name!r} already exists in {run.storage.uri}; continue it with "
                             f"`disco train --resume {run.name}` or pick another --name")
        print(f"note: run {run.name!r} never reached a checkpoint; starting it afresh", file=sys.stderr)
        record = None
    spec = absolute_data(spec)
    ds = ArcDataset(_dataset_here(spec, run.storage))  # fail here, not in every worker, when the data is missing
    if resume and record.dataset.fingerprint != ds.fingerprint and not spec.data.allow_fingerprint_mismatch:
        raise DiscoError(f"run {run.name!r} was trained on dataset {record.dataset.fingerprint[:12]}, not "
                         f"{ds.fingerprint[:12]} ({ds.root}); set data.allow_fingerprint_mismatch=true to resume anyway")
    for line in data_warnings(spec, ds):
        print(f"warning: {line}", file=sys.stderr)
    new = RunRecord(name=run.name, status="running", spec=spec, storage=run.storage.uri,
                    dataset=DatasetRef(path=str(ds.root), fingerprint=ds.fingerprint))
    return spec, new.model_copy(update={"created": record.created}) if record else new


def _dataset_here(spec: RunSpec, storage: Storage) -> str:
    """The dataset's directory, built from its recipe first (with a progress bar) when not cached."""
    path = dataset_dir(spec.data, storage, progress=True)
    if spec.data.recipe is not None:
        print(f"data: {spec.data.label} -> {path}", file=sys.stderr, flush=True)
    return path


def data_warnings(spec: RunSpec, ds) -> list[str]:
    """What will train, but perhaps not as the user expects, given this data."""
    out = []
    if ds.examples_per_epoch < spec.train.global_batch_size:
        out.append(f"{ds.examples_per_epoch} training examples per epoch are fewer than the global batch of "
                   f"{spec.train.global_batch_size}: each batch holds examples of several epochs")
    most = int(np.diff(ds.version_start).max())
    if spec.data.eval_versions and spec.data.eval_versions > most:
        out.append(f"data.eval_versions={spec.data.eval_versions} but {ds.root} has at most {most} versions per "
                   "puzzle: evaluation votes over those")
    if not ds.n_scored.any():
        out.append(f"{ds.root} has no test pairs with solutions: pass@k stays 0 (submission.json still holds "
                   "predictions); select on train_* metrics")
    return out


def _fits_this_machine(spec: RunSpec, data: str) -> None:
    """On an embedded Ray every worker holds a copy of the puzzle table in this machine's memory."""
    from arc_data.dataset import ArcDataset

    table = ArcDataset(data).num_identifiers * spec.model.puzzle_emb_ndim * 4 * spec.runtime.max_workers
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if table > 0.8 * memory:
        raise DiscoError(f"{spec.runtime.max_workers} worker(s) would hold {table / 2**30:.1f} GiB of puzzle tables, more than "
                         f"this machine's {memory / 2**30:.1f} GiB allow: use fewer workers, a smaller "
                         "model.puzzle_emb_ndim or fewer augmentations, or a cluster (--address)")


def _torch_trainer(run: Run, spec: RunSpec, callbacks: list | None, worker_callbacks: list, session: str,
                   until_evaluation: int | None = None):
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .worker import train_loop

    rt = spec.runtime
    gpu = uses_accelerator(rt)
    return TorchTrainer(
        train_loop,
        train_loop_config={"spec": spec.model_dump(mode="json"), "name": run.name, "storage": run.storage,
                           "callbacks": list(worker_callbacks), "session": session,
                           "until_evaluation": until_evaluation},
        torch_config=TorchConfig(backend=backend_for(rt)),
        scaling_config=ScalingConfig(num_workers=rt.workers, use_gpu=gpu, elastic_resize_monitor_interval_s=rt.resize_check_s,
                                     resources_per_worker={"CPU": rt.cpus_per_worker} | ({"GPU": rt.gpus_per_worker} if gpu else {})),
        run_config=RunConfig(
            name=run.name, **run.storage.ray_run_config(),
            # Ray keeps every checkpoint; the workers retain (Trainer.retain_checkpoints).
            checkpoint_config=CheckpointConfig(num_to_keep=None, checkpoint_score_attribute=spec.train.select_metric,
                                               checkpoint_score_order="max"),
            # Placing the worker group is retried once; each attempt waits half the timeout.
            failure_config=FailureConfig(max_failures=rt.max_failures, controller_failure_limit=1),
            worker_runtime_env={"env_vars": ray_env()}, callbacks=callbacks,
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )


def train(spec: RunSpec, storage: Storage, name: str | None = None, *, address: str | None = None,
          resume: bool = False, progress: Literal["bar", "evals", "off"] | bool = "bar", callbacks: list | None = None,
          worker_callbacks: list | tuple = (), until_evaluation: int | None = None) -> Outcome:
    """Train (or resume) a run on Ray Train; `callbacks` are Ray Train callbacks on the driver,
    `worker_callbacks` Trainer callbacks in every worker (tests inject faults this way). `progress`:
    a bar or a line per 10% plus evaluations, only the evaluations, or nothing (False). With
    `until_evaluation` the run stops after that evaluation, recorded as paused (sweeps' halving)."""
    import ray
    import ray.train

    run = Run(storage, name or new_run_name(spec))
    spec, record = _prepare(run, spec, resume)
    if address is None:
        _fits_this_machine(spec, record.dataset.path)
    rt = spec.runtime
    started = connect(address, num_cpus=rt.max_workers * rt.cpus_per_worker, num_gpus=None)
    run.write(record)  # only once the cluster is reachable
    run.forget_ray_snapshot()
    # Read by Ray Train's controller (propagated from this process when it starts). Right after a
    # node is lost the cluster still counts its resources, so an elastic restart first asks for too
    # many workers: a short attempt lets the next one start with the workers that are there.
    attempt_s = 30 * rt.resource_timeout_minutes
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(min(attempt_s, 60) if len(rt.world_sizes) > 1 else attempt_s)
    session = uuid.uuid4().hex[:12]
    trainer = _torch_trainer(run, spec, callbacks, worker_callbacks, session, until_evaluation)
    stop = threading.Event()
    mode = {True: "bar", False: "off"}.get(progress, progress)
    bar = None if mode == "off" else threading.Thread(target=_Progress(run, session, mode).follow, args=(stop,),
                                                      daemon=True)
    status = "failed"
    try:
        if bar:
            bar.start()
        result = trainer.fit()
        status = "finished"
    except (KeyboardInterrupt, SystemExit):  # Ray turns SIGINT into SystemExit in some paths
        status = "interrupted"
        raise RunInterrupted(run.name) from None
    except ray.train.TrainingFailedError as e:
        raise DiscoError(_failure_line(e, rt)) from None
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
    status = "paused" if metrics.get("paused") else status
    run.write(record.model_copy(update={"status": status, "updated": now(), "metrics": metrics}))
    return Outcome(run.name, run.location, metrics, run.checkpoint_location(best.name) if best else None)


def _failure_line(e: BaseException, rt) -> str:
    cause = _root_cause(e)
    if type(getattr(e, "controller_failure", None)).__name__ == "WorkerGroupStartupTimeoutError":
        import ray

        free = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
        ask = f"{rt.cpus_per_worker:g} CPU" + (f" + {rt.gpus_per_worker:g} GPU" if rt.gpus_per_worker else "")
        return (f"could not start {rt.workers} worker(s) of {ask} each within {rt.resource_timeout_minutes:g} min "
                f"(free now: {free or 'nothing'}); free resources, lower runtime.workers / cpus_per_worker, or raise "
                "runtime.resource_timeout_minutes")
    return f"training failed after {rt.max_failures} restart(s): {cause}"


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"
