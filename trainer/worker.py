"""The training loop each Ray Train worker runs (one DDP rank).

Every rank builds the same model (same seed), reads its own rows of each global batch from the
Arrow dataset, and steps in lockstep: DDP all-reduces the weight gradients, the puzzle table
all-gathers its sparse updates. At every evaluation all ranks evaluate their slice of the test
rows, rank 0 gathers and scores, writes a checkpoint and every rank calls `ray.train.report`
(a barrier). Training metrics are averaged across ranks every `log_interval` batches and written
by rank 0 to metrics.jsonl; reports happen only at evaluations, since each can block up to
RAY_TRAIN_HEALTH_CHECK_INTERVAL_S.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from arc_data.dataset import ArcDataset
from cluster.storage import Storage

from . import checkpoint as ckpt
from .config import RunSpec
from .device import pick_runtime, set_cpu_threads
from .engine import Engine
from .evaluate import evaluate, validation_tasks
from .model import TinyRecursiveModel
from .objectives import TorchBatch, build_objective, token_metrics, unwrap
from .puzzle_emb import PuzzleEmbedding
from .tracking import METRICS_FILE, MetricsLog, Wandb

FAULT_ENV = "DISCO_FAULT_AT_BATCH"  # test hook: rank 1 (or 0) dies once at this batch


def log(msg: str) -> None:
    print(f"[disco] {msg}", flush=True)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Plan:
    """The run's length and intervals in batches."""

    def __init__(self, spec: RunSpec, batches_per_epoch: int):
        t = spec.train
        scale = batches_per_epoch if t.unit == "epochs" else 1
        self.batches_per_epoch = batches_per_epoch
        self.total = max(1, math.ceil(t.budget * scale))
        self.eval_every = max(1, round(t.eval_interval * scale))
        self.log_every = min(t.log_interval, self.eval_every)
        self.steps_per_batch = spec.model.supervision_steps if spec.method == "dis" else 1


def build(spec: RunSpec, ds: ArcDataset, device: torch.device, dtype: torch.dtype):
    """Model (fp32 master weights), puzzle table and objective, identical on every rank."""
    cfg = spec.model.model_copy(update={"seq_len": ds.seq_len, "num_puzzle_identifiers": ds.num_identifiers})
    torch.manual_seed(spec.train.seed)
    model = TinyRecursiveModel(cfg).to(device)
    model.compute_dtype = dtype
    if spec.method == "dis":
        model.q_head.requires_grad_(False)  # DIS never trains its halting head; DDP must not wait for it
    emb = PuzzleEmbedding(ds.num_identifiers, cfg.puzzle_emb_ndim, device)
    return model, emb, cfg


def model_state(model, emb: PuzzleEmbedding) -> dict[str, torch.Tensor]:
    state = dict(unwrap(model).state_dict())
    if emb.dim:
        state["puzzle_emb.weight"] = emb.weight
    return state


def load_model_state(model, emb: PuzzleEmbedding, state: dict[str, torch.Tensor]) -> None:
    state = dict(state)
    table = state.pop("puzzle_emb.weight", None)
    unwrap(model).load_state_dict(state)
    if table is not None:
        emb.load_state_dict({"weight": table})


# Metrics measured over a batch's scored rows (`count` of them). TRM-ACT scores only the rows that
# halt at a step, and halting comes in bursts, so these are weighted by rows, not batches: a batch
# where nothing halted must not pull accuracy and block applications towards zero.
ROW_METRICS = ("accuracy", "exact_accuracy", "steps", "block_apps_per_sample", "q_halt_accuracy")


class Averages:
    """Running sums of per-batch metrics, averaged across ranks when logged."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.batches = 0
        self.run_apps, self.run_rows = 0.0, 0.0  # since this process started (all ranks)

    def add(self, outs: list[dict]) -> None:
        last = outs[-1]
        rows = float(last.get("count", 1.0))
        values = {k: float(v) * (rows if k in ROW_METRICS else 1.0)
                  for k, v in last.items() if k not in ("loss", "dis_step", "count")}
        for o in outs:  # per-step metrics of DIS (step{s}_target_accuracy) come from every step
            values |= {k: float(v) for k, v in o.items() if k.startswith("step") and k != "steps"}
        values["loss"] = float(np.mean([float(o["loss"]) for o in outs]))
        values["_rows"] = rows
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.batches += 1

    def reduce(self, device: torch.device, stop: bool) -> tuple[dict[str, float], bool]:
        keys = sorted(self.sums)
        t = torch.tensor([self.batches, float(stop), *(self.sums[k] for k in keys)], dtype=torch.float64,
                         device=device)
        if _distributed():
            dist.all_reduce(t)
        t = t.cpu().tolist()
        sums = dict(zip(keys, t[2:], strict=True))
        rows = sums.pop("_rows", 0.0)
        self.run_apps, self.run_rows = self.run_apps + sums.get("block_apps_per_sample", 0.0), self.run_rows + rows
        # Row metrics with no scored row in the interval (TRM-ACT: nothing halted) are left out.
        out = {k: v / (rows if k in ROW_METRICS else max(t[0], 1)) for k, v in sums.items()
               if k not in ROW_METRICS or rows > 0}
        self.sums, self.batches = {}, 0
        return out, t[1] > 0

    @property
    def apps_per_sample(self) -> float:
        """Block applications per finished training sample over the whole run so far: the compute
        objective of Pareto sweeps (one log interval of TRM-ACT may see no sample halt)."""
        return self.run_apps / self.run_rows if self.run_rows else float("nan")


def _train_accuracy(model, emb, objective, ds: ArcDataset, device, batch_size: int, rank: int, world: int) -> dict:
    """Exact and token accuracy on the unaugmented training pairs of every puzzle."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for batch in ds.original_train_batches(batch_size, rank, world):
        tb = TorchBatch.from_numpy(batch, device)
        pred = objective.predict(model, emb, tb)
        m = token_metrics(pred.preds, tb.labels, rows=tb.puzzle_identifiers > 0)
        sums += torch.stack([m["count"], m["accuracy"] * m["count"], m["exact_accuracy"] * m["count"]]).double()
    if _distributed():
        dist.all_reduce(sums)
    n = max(sums[0].item(), 1.0)
    return {"train_accuracy": sums[1].item() / n, "train_exact_accuracy": sums[2].item() / n}


def _copy_baseline(ds: ArcDataset) -> float:
    """Token accuracy of answering with the input grid itself, on the original training pairs."""
    total, n = 0.0, 0.0
    for batch in ds.original_train_batches(256):
        m = token_metrics(torch.from_numpy(batch.inputs).long(), torch.from_numpy(batch.labels).long(),
                          rows=torch.from_numpy(batch.puzzle_identifiers > 0))
        total, n = total + float(m["accuracy"] * m["count"]), n + float(m["count"])
    return total / max(n, 1.0)


def _restore(storage: Storage, name: str) -> ckpt.Loaded | None:
    """The checkpoint to resume from: Ray's latest if intact, else the newest intact one in the run."""
    import ray.train

    given = ray.train.get_checkpoint()
    if given is not None:
        local = Path(given.path) if storage.is_local else Path(given.to_directory())
        why = ckpt.problem(local)
        if why is None:
            return ckpt.load(local)
        log(f"warning: latest checkpoint {given.path} is {why}; looking for an older one")
    if storage.is_local:
        found = ckpt.newest_valid(Path(storage.uri, name), warn=lambda m: log(f"warning: {m}"))
        return ckpt.load(found) if found else None
    for cand in reversed([c for c in storage.listdir(name) if ckpt.step_of(c) is not None]):
        local = storage.download(f"{name}/{cand}", Path(tempfile.mkdtemp(prefix="disco-ckpt-")))
        if why := ckpt.problem(local):
            log(f"warning: skipping checkpoint {cand}: {why}")
            continue
        return ckpt.load(local)
    return None


def train_loop(config: dict) -> dict:
    """Entry point of every worker; `config` = {"spec": RunSpec dict, "name", "storage"}."""
    import ray.train
    import ray.train.v2._internal.execution.context as _ctx_module

    # Ray logs every report under a file-path logger name that escapes LoggingConfig.
    logging.getLogger(_ctx_module.__file__).setLevel(logging.WARNING)
    spec = RunSpec.model_validate(config["spec"])
    name, storage = config["name"], Storage.of(config["storage"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = set_cpu_threads(max(1, int(spec.runtime.cpus_per_worker)))
    rt = pick_runtime(spec.runtime.device, spec.runtime.precision, spec.runtime.compile, ctx.get_local_rank())

    ds = ArcDataset(spec.data.path)
    model, emb, model_cfg = build(spec, ds, rt.device, rt.dtype)
    objective = build_objective(spec.objective, model_cfg.supervision_steps, seed=spec.train.seed * 1000 + rank,
                                device=rt.device)
    sampler = ds.train_sampler(spec.train.global_batch_size, rank, world, seed=spec.train.seed)
    plan = Plan(spec, sampler.batches_in_epoch(0))
    net = torch.compile(model) if rt.compile else model
    if _distributed():
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[rt.device.index] if rt.is_accelerator else None, forward_sync_buffers=False)
    engine = Engine(net, emb, objective, spec.optim, total_steps=plan.total * plan.steps_per_batch)

    batches = 0
    restored = _restore(storage, name)
    if restored is not None:
        if restored.meta["dataset"]["fingerprint"] != ds.fingerprint and not spec.data.allow_fingerprint_mismatch:
            raise ckpt.CheckpointError(f"checkpoint {restored.path} was trained on dataset "
                                       f"{restored.meta['dataset']['fingerprint'][:12]}, not {ds.fingerprint[:12]}; "
                                       "set data.allow_fingerprint_mismatch=true to use it anyway")
        load_model_state(model, emb, restored.model_state)
        state = restored.trainer_state()
        engine.load_state_dict({**state["engine"], "puzzle_emb": emb.state_dict()})
        sampler.load_state_dict(state["sampler"])
        rngs = state["rng"]
        if len(rngs) == world:
            objective.generator.set_state(rngs[rank])
        batches = int(restored.meta["batch"])
        if rank == 0:
            log(f"resumed from {restored.path.name} at batch {batches}/{plan.total}")

    local_dir = Path(storage.uri, name) if storage.is_local else Path(tempfile.mkdtemp(prefix="disco-run-"))
    metrics_log = wandb = None
    if rank == 0:
        if not storage.is_local and (text := storage.read_text(name, METRICS_FILE)):
            (local_dir / METRICS_FILE).write_text(text)
        metrics_log = MetricsLog(local_dir / METRICS_FILE, resume_batch=batches if restored else None)
        wandb = Wandb(spec.tracking, name, local_dir, spec.model_dump(mode="json"), warn=lambda m: log(f"warning: {m}"))
        if restored is not None:
            metrics_log.write({"kind": "resume", "batch": batches, "checkpoint": restored.path.name,
                               "batches_total": plan.total})
        else:
            metrics_log.write({"kind": "start", "batch": 0, "world_size": world, "threads": threads,
                               "device": str(rt.device), "dtype": str(rt.dtype).removeprefix("torch."),
                               "params": sum(p.numel() for p in model.parameters()),
                               "batches_total": plan.total, "batches_per_epoch": plan.batches_per_epoch,
                               "copy_baseline_accuracy": _copy_baseline(ds)})

    validation = validation_tasks(ds, spec.data.validation_fraction) if spec.data.validation_fraction else None
    eval_batch = spec.train.eval_batch_size or spec.train.global_batch_size
    eval_batch = max(world, eval_batch - eval_batch % world)
    fault_at = int(os.environ.get(FAULT_ENV, "0"))
    avg = Averages()
    last_eval = restored.meta["metrics"] if restored is not None else {}
    eval_net = net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net
    t_start, train_time, samples = time.perf_counter(), 0.0, 0
    it = iter(sampler)
    stop, train = False, {}
    while batches < plan.total and not stop:
        t0 = time.perf_counter()
        batch = TorchBatch.from_numpy(next(it), rt.device)
        avg.add(engine.train_batch(batch))
        rt.synchronize()
        train_time += time.perf_counter() - t0
        batches += 1
        samples += spec.train.global_batch_size
        if fault_at and batches == fault_at and rank == world - 1 and restored is None:
            log(f"rank {rank}: fault injection at batch {batches}: exiting")
            os._exit(1)
        limit = spec.train.time_limit_minutes
        due_eval = batches % plan.eval_every == 0 or batches == plan.total
        if batches % plan.log_every == 0 or due_eval:
            train, stop = avg.reduce(rt.device, bool(limit and train_time > 60 * limit))
            if rank == 0:
                record = {"kind": "train", "batch": batches, "step": engine.step, "epoch": round(batches / plan.batches_per_epoch, 3),
                          "elapsed_s": round(time.perf_counter() - t_start, 2), "train_time_s": round(train_time, 2),
                          "samples_per_s": round(samples / max(train_time, 1e-9), 2), **train}
                metrics_log.write(record)
                wandb.log(record, engine.step)
        if due_eval or stop:
            last_eval = _evaluate_and_checkpoint(spec, name, storage, local_dir, rank, world, rt, model, eval_net, emb,
                                                 objective, engine, sampler, ds, batches, plan, validation,
                                                 eval_batch, metrics_log, wandb, train_time, train,
                                                 avg.apps_per_sample)
    if rank == 0:
        metrics_log.close()
        wandb.finish()
    return last_eval


def _evaluate_and_checkpoint(spec, name, storage, local_dir, rank, world, rt, model, net, emb, objective, engine,
                             sampler, ds, batches, plan, validation, eval_batch, metrics_log, wandb, train_time,
                             train, apps_per_sample):
    import ray.train

    t0 = time.perf_counter()
    result = evaluate(net, emb, objective, ds, rt.device, eval_batch, rank, world, spec.train.eval_steps,
                      spec.data.eval_versions, validation)
    train_acc = _train_accuracy(net, emb, objective, ds, rt.device, eval_batch, rank, world)
    rngs = [objective.generator.get_state()]
    # Ranks must hold identical weights and puzzle tables (DDP + the table's all-gather); check it.
    digest = torch.stack([sum(p.detach().double().sum() for p in model.parameters()), emb.weight.double().sum()])
    spread = 0.0
    if _distributed():
        gathered = [None] * world
        dist.all_gather_object(gathered, rngs[0])
        rngs = gathered
        digests = [torch.empty_like(digest) for _ in range(world)]
        dist.all_gather(digests, digest)
        spread = max(float((d - digests[0]).abs().max()) for d in digests)
    metrics = {"batch": batches, "step": engine.step, "epoch": round(batches / plan.batches_per_epoch, 3),
               "train_time_s": round(train_time, 2), "eval_time_s": round(time.perf_counter() - t0, 2),
               "rank_weight_spread": spread, "train_loss": train.get("loss", float("nan")),
               "train_block_apps_per_sample": apps_per_sample, **train_acc}
    if rank != 0:
        ray.train.report(metrics)
        return metrics
    metrics |= {k: v for k, v in result.metrics.items() if isinstance(v, int | float | str)}
    metrics_log.write({"kind": "eval", **metrics})
    wandb.log({"kind": "eval", **metrics}, engine.step)
    if not storage.is_local:  # object stores cannot append: upload the whole log with each checkpoint
        storage.write_text((local_dir / METRICS_FILE).read_text(), name, METRICS_FILE)
    meta = {"name": name, "batch": batches, "step": engine.step, "spec": spec.model_dump(mode="json"),
            "model": unwrap(model).cfg.model_dump(mode="json"),
            "dataset": {"path": str(ds.root), "fingerprint": ds.fingerprint}, "metrics": metrics,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    state = {"engine": {k: v for k, v in engine.state_dict().items() if k != "puzzle_emb"},
             "sampler": sampler.state_dict(), "rng": rngs}
    with tempfile.TemporaryDirectory(prefix="disco-ckpt-") as d:
        ckpt.write(d, model_state(model, emb), state, meta)
        result.write(Path(d) / "eval")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=ckpt.dir_name(batches))
    return metrics
