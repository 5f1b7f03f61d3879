"""One rank's training: the Trainer owns the model, data, objective, engine, tracking and
checkpoints of a run, and steps them in lockstep with the other ranks.

    trainer = Trainer(spec, run, rank, world)
    trainer.restore()                      # the run's newest intact checkpoint, if it has one
    while not trainer.done:
        if trainer.train_batch():          # True when an evaluation (and a checkpoint) is due
            metrics = trainer.evaluate()
            trainer.save(directory)        # every rank: each writes its part
    trainer.close()

Every rank builds the same model (same seed), reads its own rows of each global batch, and DDP
all-reduces the weight gradients while the puzzle table all-gathers its sparse updates. Training
metrics are averaged across ranks every `log_interval` batches; at every evaluation all ranks
evaluate their slice of the test rows and rank 0 scores them. Ray is not imported here:
`worker.py` runs this loop in Ray Train; tests and benchmarks run it in-process.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist

from arc_data.dataset import ArcDataset

from . import checkpoint as ckpt
from .config import DatasetRef, InitConfig, LoopConfig, RunSpec
from .device import is_distributed, set_cpu_threads, worker_runtime
from .engine import Engine
from .evaluate import EvalOptions, EvalResult, evaluate, validation_tasks
from .model import TinyRecursiveModel
from .objectives import TorchBatch, build_objective, token_metrics
from .puzzle_emb import PuzzleEmbedding
from .runs import Run, local_copy
from .storage import dataset_dir
from .tracking import Averages, NullTracker, Tracker, log


class Plan:
    """The run's length and intervals in batches. An epoch is the training examples of one epoch
    over the global batch (the sampler packs across epoch boundaries); a compute budget (`apps`,
    `flops`) becomes the first whole batch that reaches it, so two methods under one budget spend it
    within one batch of each other."""

    def __init__(self, loop: LoopConfig, batches_per_epoch: float, apps_per_batch: float = 1.0,
                 flops_per_batch: float = 1.0):
        scale = {"batches": 1.0, "epochs": batches_per_epoch, "apps": 1 / apps_per_batch,
                 "flops": 1 / flops_per_batch}[loop.unit]
        self.batches_per_epoch, self.apps_per_batch, self.flops_per_batch = batches_per_epoch, apps_per_batch, flops_per_batch
        self.total = max(1, math.ceil(loop.budget * scale - 1e-9))  # no extra batch from rounding noise
        self.eval_every = max(1, round(loop.eval_interval * scale))
        self.log_every = min(loop.log_interval, self.eval_every)

    def eval_due(self, batch: int) -> bool:
        return batch % self.eval_every == 0 or batch == self.total

    def log_due(self, batch: int) -> bool:
        return batch % self.log_every == 0

    def evaluation(self, batch: int) -> int:
        """The index (from 1) of the evaluation at `batch`; `evaluation(total)` is how many a run has."""
        return math.ceil(batch / self.eval_every)


class Progress:
    """Batches trained, the training clock and the time spent in ray.train.report (the worker
    adds it), continued across resumes."""

    def __init__(self):
        self.batch, self.train_time_s, self.samples, self.report_blocked_s = 0, 0.0, 0, 0.0

    def state_dict(self) -> dict:
        return {"batch": self.batch, "train_time_s": self.train_time_s, "samples": self.samples,
                "report_blocked_s": self.report_blocked_s}

    def load_state_dict(self, state: dict) -> None:
        self.batch, self.train_time_s, self.samples = int(state["batch"]), float(state["train_time_s"]), int(state["samples"])
        self.report_blocked_s = float(state.get("report_blocked_s", 0.0))  # absent before 2026-12


class Callback(Protocol):
    def after_batch(self, trainer: Trainer) -> None: ...


class Trainer:
    def __init__(self, spec: RunSpec, run: Run, rank: int = 0, world: int = 1, local_rank: int = 0,
                 callbacks: list[Callback] | tuple = ()):
        self.spec, self.run, self.rank, self.world = spec, run, rank, world
        self.callbacks = list(callbacks)
        self.say = log if rank == 0 else (lambda msg: None)
        self.threads = set_cpu_threads(max(1, int(spec.runtime.cpus_per_worker)))
        self.rt = worker_runtime(spec.runtime, local_rank)
        self.ds = ArcDataset(dataset_dir(spec.data, run.storage))  # a recipe is built on this node if missing
        self.model, self.emb = self._build_model()
        if spec.init is not None:
            # A resumed fine-tuning run restores its own checkpoint: the starting one is not needed.
            self._initialise(spec.init, load=not any(c.complete for c in run.checkpoints()))
        self.objective = build_objective(spec.objective, self.model.cfg, self.rt.dtype,
                                         seed=spec.train.seed, device=self.rt.device, rank=rank, world=world)
        self.objective.prepare(self.model)
        self.sampler = self.ds.train_sampler(spec.train.global_batch_size, rank, world, seed=spec.train.seed,
                                             max_examples=spec.data.max_examples_per_puzzle)
        rows = spec.train.global_batch_size
        self.plan = Plan(spec.train, self.sampler.batches_per_epoch, rows * self.objective.block_applications_per_row(),
                         self.objective.optimizer_steps_per_batch * self.model.cfg.step_flops(rows))
        self.net = self._wrap(self.model)
        self.engine = Engine(self.net, self.emb, self.objective, spec.optim,
                             total_steps=self.plan.total * self.objective.optimizer_steps_per_batch)
        self.progress = Progress()
        self.averages = Averages(self.objective.row_metrics)
        self.checkpointer = ckpt.Checkpointer(
            ckpt.ModelState(self.model, self.emb),
            shared={"engine": self.engine, "sampler": self.sampler, "progress": self.progress,
                    "averages": self.averages},
            per_rank={"objective": self.objective}, rank=rank, world=world, warn=self.say, ema=self.engine.ema)
        eval_batch = spec.train.eval_batch_size or spec.train.global_batch_size
        validation = validation_tasks(self.ds, spec.data.validation_fraction) if spec.data.validation_fraction else None
        self.eval_options = EvalOptions(max(world, eval_batch - eval_batch % world), spec.train.eval_steps,
                                        spec.data.eval_versions, validation, spec.scoring)
        self.tracker: Tracker | NullTracker = NullTracker()
        self.restored_from: str | None = None
        self.last_metrics: dict = {}
        self._last_train: dict = {}
        self._eval_result: EvalResult | None = None
        self._stop = False
        self._batches = iter(self.sampler)
        self._t_start = time.perf_counter()
        self._clock: float | None = None  # start of the training time not yet counted

    # ------------------------------------------------------------------ building

    def _build_model(self) -> tuple[TinyRecursiveModel, PuzzleEmbedding]:
        """Model (fp32 master weights) and puzzle table, identical on every rank."""
        cfg = self.spec.model.model_copy(update={"seq_len": self.ds.seq_len,
                                                 "num_puzzle_identifiers": self.ds.num_identifiers})
        torch.manual_seed(self.spec.train.seed)
        model = TinyRecursiveModel(cfg).to(self.rt.device)
        return model, PuzzleEmbedding(self.ds.num_identifiers, cfg.puzzle_emb_ndim, self.rt.device)

    def _initialise(self, init: InitConfig, load: bool) -> None:
        """The network of a trained checkpoint (its weight average when it kept one); the puzzle
        table stays new."""
        if load:
            with local_copy(init.checkpoint) as d:
                state = ckpt.read(d).evaluated_state
            state.pop("puzzle_emb.weight", None)
            self.model.load_state_dict(state)
        if init.train == "embeddings":
            self.model.requires_grad_(False)

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        net = torch.compile(model) if self.rt.compile else model
        if is_distributed() and any(p.requires_grad for p in model.parameters()):  # else only the table trains
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[self.rt.device.index] if self.rt.is_accelerator else None, forward_sync_buffers=False)
        return net

    # ------------------------------------------------------------------ state

    @property
    def batch(self) -> int:
        return self.progress.batch

    @property
    def done(self) -> bool:
        return self.progress.batch >= self.plan.total or self._stop

    def restore(self, preferred: str | None = None, session: str | None = None) -> str | None:
        """Load the newest intact checkpoint of the run (`preferred` first, e.g. Ray's latest) and
        start tracking (`session` labels this start in the metrics log); returns the checkpoint's
        name, None for a fresh start."""
        names = [c.name for c in reversed(self.run.checkpoints())]
        damaged = []
        for name in ([preferred] if preferred in names else []) + [n for n in names if n != preferred]:
            with self.run.local_checkpoint(name) as d:
                if why := ckpt.problem(d):
                    self.say(f"warning: skipping checkpoint {name}: {why}")
                    damaged.append(name)
                    continue
                self._check_dataset(ckpt.read_meta((d / ckpt.META).read_text(), str(d)), d)
                meta = self.checkpointer.restore(d)
            self.progress.batch = meta.batch  # format 1 kept the batch in meta.json only
            self.last_metrics, self.restored_from = dict(meta.metrics), name
            break
        if damaged:  # never the run's best, never retained over an intact one: set aside, once all ranks looked
            if is_distributed():
                dist.barrier()
            if self.rank == 0:
                for name in damaged:
                    self.say(f"warning: moved the damaged {name} to {self.run.set_aside(name)}")
        self._open_tracker(session)
        return self.restored_from

    def _check_dataset(self, meta: ckpt.CheckpointMeta, where: Path) -> None:
        if meta.dataset.fingerprint != self.ds.fingerprint and not self.spec.data.allow_fingerprint_mismatch:
            raise ckpt.CheckpointError(f"checkpoint {where} was trained on dataset {meta.dataset.fingerprint[:12]}, "
                                       f"not {self.ds.fingerprint[:12]}; set data.allow_fingerprint_mismatch=true "
                                       "to use it anyway")

    def _open_tracker(self, session: str | None) -> None:
        resumed = self.restored_from is not None
        if self.rank == 0:
            self.tracker = Tracker(self.run.storage, self.run.name, self.spec, self.batch if resumed else None)
        if resumed:
            self.say(f"resumed from {self.restored_from} at batch {self.batch}/{self.plan.total}")
            self.tracker.log({"kind": "resume", "batch": self.batch, "checkpoint": self.restored_from, "world_size": self.world,
                              "batches_total": self.plan.total, "session": session}, self.engine.step)
            return
        self.tracker.log({"kind": "start", "batch": 0, "world_size": self.world, "threads": self.threads,
                          "device": str(self.rt.device), "dtype": str(self.rt.dtype).removeprefix("torch."),
                          "params": sum(p.numel() for p in self.model.parameters()),
                          "batches_total": self.plan.total, "batches_per_epoch": self.plan.batches_per_epoch,
                          "apps_per_batch": self.plan.apps_per_batch, "flops_per_batch": self.plan.flops_per_batch,
                          "block_apps_per_row": self.objective.block_applications_per_row(),
                          "copy_baseline_accuracy": self._copy_baseline(), "session": session}, 0)

    # ------------------------------------------------------------------ the loop

    def train_batch(self) -> bool:
        """Train one batch; True when an evaluation (and a checkpoint) is due after it. Nothing here
        waits for the device: the clock and the checks run at log intervals (`_log_train`)."""
        if self._clock is None:  # the first batch after a start, a restore or an evaluation
            self._clock = time.perf_counter()
        batch = TorchBatch.from_numpy(next(self._batches), self.rt.device)
        self.averages.add(self.objective.batch_metrics(self.engine.train_batch(batch)))
        p = self.progress
        p.batch, p.samples = p.batch + 1, p.samples + self.spec.train.global_batch_size
        for callback in self.callbacks:
            callback.after_batch(self)
        due = self.plan.eval_due(p.batch)
        if self.plan.log_due(p.batch) or due:
            self._log_train()
        return due or self._stop

    def _log_train(self) -> None:
        self.engine.check_finite()
        limit, p = self.spec.train.time_limit_minutes, self.progress
        over = bool(limit and p.train_time_s + time.perf_counter() - self._clock > 60 * limit)
        # The time limit rides on the metrics all-reduce, so every rank stops at the same batch.
        train, self._stop = self.averages.reduce(self.rt.device, over)
        now = time.perf_counter()  # the reduce waited for the device: the clock is exact here
        p.train_time_s, self._clock = p.train_time_s + now - self._clock, now
        self._last_train = train
        self.tracker.log({"kind": "train", "batch": p.batch, "step": self.engine.step,
                          "epoch": round(p.batch / self.plan.batches_per_epoch, 3), **self._compute(),
                          "elapsed_s": round(now - self._t_start, 2), "train_time_s": round(p.train_time_s, 2),
                          "samples_per_s": round(p.samples / max(p.train_time_s, 1e-9), 2), **train}, self.engine.step)

    def evaluate(self) -> dict:
        """Evaluate on every rank (rank 0 scores); returns the metrics to report."""
        t0 = time.perf_counter()
        eval_net = self.net.module if isinstance(self.net, torch.nn.parallel.DistributedDataParallel) else self.net
        ema = self.engine.ema
        with ema.applied() if ema is not None else contextlib.nullcontext():  # evaluate (and select) the average
            result = evaluate(eval_net, self.emb, self.objective, self.ds, self.rt.device, self.eval_options)
            train_accuracy = self._train_accuracy(eval_net)
        p = self.progress
        metrics = {"batch": p.batch, "evaluation": self.plan.evaluation(p.batch),
                   "evaluations": self.plan.evaluation(self.plan.total), "step": self.engine.step,
                   "epoch": round(p.batch / self.plan.batches_per_epoch, 3),
                   **self._compute(),
                   "train_time_s": round(p.train_time_s, 2), "rank_weight_spread": self._weight_spread(),
                   "train_loss": self._last_train.get("loss", float("nan")),
                   "train_block_apps_per_sample": self.averages.apps_per_sample, "ema": ema is not None,
                   "report_blocked_s": round(p.report_blocked_s, 3), **train_accuracy}
        metrics["eval_time_s"] = round(time.perf_counter() - t0, 2)
        if result is not None:  # rank 0
            metrics |= {k: v for k, v in result.metrics.items() if isinstance(v, int | float | str)}
            # What the run's best checkpoint would score now (checkpoints are ranked by it); sweeps
            # compare trials at a rung by it.
            key = f"best_{self.spec.train.select_metric}"
            scores = [m for m in (self.last_metrics.get(key), metrics.get(self.spec.train.select_metric))
                      if isinstance(m, int | float) and not math.isnan(m)]
            if scores:
                metrics[key] = max(scores)
        self.tracker.log({"kind": "eval", **metrics}, self.engine.step)
        self.tracker.sync()
        self.last_metrics, self._eval_result, self._clock = metrics, result, None  # evaluations are not training time
        return metrics

    def save(self, directory: str | Path) -> Path:
        """Write this rank's part of a checkpoint (a collective: every rank calls it)."""
        meta = ckpt.CheckpointMeta(name=self.run.name, batch=self.batch, step=self.engine.step, spec=self.spec,
                                   model=self.model.cfg, dataset=DatasetRef(path=str(self.ds.root),
                                                                            fingerprint=self.ds.fingerprint),
                                   metrics=self.last_metrics)
        d = self.checkpointer.save(directory, meta)
        if self._eval_result is not None:
            self._eval_result.write(d / "eval")
        return d

    def retain_checkpoints(self) -> None:
        """Rank 0 keeps the `train.keep_checkpoints` best intact checkpoints and the latest. disco
        retains, not Ray: Ray's ranking would keep a checkpoint found damaged over an intact one."""
        if self.rank == 0:
            self.run.retain(self.spec.train.keep_checkpoints, self.spec.train.select_metric)

    def close(self) -> None:
        self.tracker.close()

    # ------------------------------------------------------------------ measurements

    def _compute(self) -> dict:
        """Training compute spent so far: block-stack applications to rows, and their FLOPs."""
        return {"train_block_apps": self.batch * self.plan.apps_per_batch,
                "train_flops": self.batch * self.plan.flops_per_batch}

    def _train_accuracy(self, net: torch.nn.Module) -> dict:
        """Exact and token accuracy on the unaugmented training pairs of every puzzle."""
        net.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.rt.device)
        for batch in self.ds.original_train_batches(self.eval_options.batch_size, self.rank, self.world):
            tb = TorchBatch.from_numpy(batch, self.rt.device)
            m = token_metrics(self.objective.predict(net, self.emb, tb).preds, tb.labels, rows=tb.puzzle_identifiers > 0)
            sums += torch.stack([m["count"], m["accuracy"] * m["count"], m["exact_accuracy"] * m["count"]]).double()
        if is_distributed():
            dist.all_reduce(sums)
        n = max(sums[0].item(), 1.0)
        return {"train_accuracy": sums[1].item() / n, "train_exact_accuracy": sums[2].item() / n}

    def _weight_spread(self) -> float:
        """Largest difference across ranks of the weights' and the table's sums (0.0 when in sync)."""
        if not is_distributed():
            return 0.0
        digest = torch.stack([sum(p.detach().double().sum() for p in self.model.parameters()),
                              self.emb.weight.double().sum()])
        digests = [torch.empty_like(digest) for _ in range(self.world)]
        dist.all_gather(digests, digest)
        return max(float((d - digests[0]).abs().max()) for d in digests)

    def _copy_baseline(self) -> float:
        """Token accuracy of answering with the input grid itself, on the original training pairs."""
        total, n = 0.0, 0.0
        for batch in self.ds.original_train_batches(256):
            m = token_metrics(torch.from_numpy(batch.inputs).long(), torch.from_numpy(batch.labels).long(),
                              rows=torch.from_numpy(batch.puzzle_identifiers > 0))
            total, n = total + float(m["count"] * m["accuracy"]), n + float(m["count"])
        return total / max(n, 1.0)
