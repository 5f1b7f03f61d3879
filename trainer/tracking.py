"""Run tracking: a local JSONL metrics file (the source of truth), optional W&B, and the
cross-rank averages of training metrics.

`metrics.jsonl` has one record per line: {"kind": "train", "batch", "step", "epoch", "elapsed_s",
"samples_per_s", "loss", "accuracy", ...} every log interval and {"kind": "eval", ...} after every
evaluation. On a resumed run, records past the restored batch are dropped first, so the file
never holds a batch twice. Rank 0 holds a `Tracker`; every other rank holds a `NullTracker` with
the same methods, so the loop never asks which rank it is on. W&B runs in offline mode unless
configured online; its files go into the run directory (`wandb/`). Ray's `setup_wandb
(rank_zero_only=True)` does not work under Train V2, hence this.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from .config import RunSpec, TrackingConfig
from .device import is_distributed
from .storage import Storage

METRICS_FILE = "metrics.jsonl"


def log(msg: str) -> None:
    print(f"[disco] {msg}", flush=True)


def read_metrics(text: str | None) -> list[dict]:
    """Parse a metrics.jsonl text; a torn last line (crash mid-write) is ignored."""
    out = []
    for line in (text or "").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class MetricsLog:
    def __init__(self, path: Path, resume_batch: int | None = None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            keep = [r for r in read_metrics(path.read_text()) if resume_batch is not None and r.get("batch", 0) <= resume_batch]
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
            tmp.replace(path)
        self._f = path.open("a")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class Wandb:
    """A thin guard around wandb: never raises into the training loop."""

    def __init__(self, cfg: TrackingConfig, run_name: str, run_dir: Path, config: dict, warn=log):
        self.run = None
        if cfg.wandb == "off":
            return
        mode = cfg.wandb
        if mode == "online" and not os.environ.get("WANDB_API_KEY"):
            warn("warning: tracking.wandb=online but WANDB_API_KEY is not set; logging to W&B offline instead")
            mode = "offline"
        try:
            import wandb

            run_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=cfg.project, entity=cfg.entity, name=run_name, id=run_name,
                                  group=config.get("objective", {}).get("method"), config=config,
                                  dir=str(run_dir), mode=mode, resume="allow",
                                  settings=wandb.Settings(init_timeout=60, silent=True, console="off"))
        except Exception as e:  # noqa: BLE001 - tracking must never stop training
            warn(f"warning: W&B disabled for this run: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            self.run = None

    def log(self, record: dict, step: int) -> None:
        if self.run is not None:
            self.run.log({f"{record['kind']}/{k}": v for k, v in record.items()
                          if k != "kind" and isinstance(v, int | float)}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


class TensorBoard:
    """Scalars of train and eval records as TensorBoard events, beside metrics.jsonl."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, record: dict, step: int) -> None:
        for k, v in record.items():
            if k != "kind" and isinstance(v, int | float) and not isinstance(v, bool):
                self.writer.add_scalar(f"{record['kind']}/{k}", v, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Tracker:
    """Rank 0's record of a run: metrics.jsonl in the run's storage, W&B, and TensorBoard events."""

    def __init__(self, storage: Storage, name: str, spec: RunSpec, resume_batch: int | None):
        self.storage, self.name = storage, name
        path = storage.working_copy(name, METRICS_FILE)  # object stores cannot append: a local copy
        self.metrics = MetricsLog(path, resume_batch)
        self.wandb = Wandb(spec.tracking, name, path.parent, spec.model_dump(mode="json"))
        self.tensorboard = TensorBoard(path.parent / "tensorboard") if spec.tracking.tensorboard else None

    def log(self, record: dict, step: int) -> None:
        self.metrics.write(record)
        if record["kind"] in ("train", "eval"):
            self.wandb.log(record, step)
            if self.tensorboard is not None:
                self.tensorboard.log(record, step)

    def sync(self) -> None:
        """Put the metrics log (and TensorBoard events) in storage; nothing to do when they are written there."""
        self.storage.upload(self.metrics.path, self.name, METRICS_FILE)
        if self.tensorboard is not None:
            self.tensorboard.flush()
            self.storage.upload(self.tensorboard.folder, self.name, "tensorboard")

    def close(self) -> None:
        self.metrics.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.sync()
        self.wandb.finish()


class NullTracker:
    """What ranks other than 0 hold: the same calls, no effect."""

    def log(self, record: dict, step: int) -> None:
        pass

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class Averages:
    """Running sums of per-batch metric records, averaged across ranks when logged.

    Metrics in `row_metrics` were measured on the batch's `count` scored rows and are averaged
    over rows; a log interval with no scored row leaves them out instead of reporting zero. The
    whole-run block applications per finished sample survive such intervals (and resumes).
    Sums stay on the device until `reduce`, so adding a batch costs no host sync.
    """

    def __init__(self, row_metrics: frozenset[str]):
        self.row_metrics = row_metrics
        self.sums: dict[str, torch.Tensor | float] = {}
        self.batches = 0
        self.run_apps, self.run_rows = 0.0, 0.0  # whole run, all ranks

    def add(self, record: dict) -> None:
        record = dict(record)
        rows = record.pop("count", 1.0)
        for k, v in record.items():
            v = v.detach().double() if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums.get(k, 0.0) + (v * rows if k in self.row_metrics else v)
        self.sums["_rows"] = self.sums.get("_rows", 0.0) + rows
        self.batches += 1

    def reduce(self, device: torch.device, stop: bool) -> tuple[dict[str, float], bool]:
        """Averages over the interval and all ranks, and whether any rank asked to stop."""
        keys = sorted(self.sums)
        values = [torch.as_tensor(self.sums[k], dtype=torch.float64, device=device) for k in keys]
        t = torch.stack([torch.tensor(float(self.batches), dtype=torch.float64, device=device),
                         torch.tensor(float(stop), dtype=torch.float64, device=device), *values])
        if is_distributed():
            dist.all_reduce(t)
        t = t.cpu().tolist()
        sums = dict(zip(keys, t[2:], strict=True))
        rows = sums.pop("_rows", 0.0)
        self.run_apps += sums.get("block_apps_per_sample", 0.0)
        self.run_rows += rows
        out = {k: v / (rows if k in self.row_metrics else max(t[0], 1)) for k, v in sums.items()
               if k not in self.row_metrics or rows > 0}
        self.sums, self.batches = {}, 0
        return out, t[1] > 0

    @property
    def apps_per_sample(self) -> float:
        """Block applications per finished training sample over the whole run so far: the compute
        objective of Pareto sweeps (one log interval of TRM-ACT may see no sample halt)."""
        return self.run_apps / self.run_rows if self.run_rows else float("nan")

    def state_dict(self) -> dict:
        return {"run_apps": self.run_apps, "run_rows": self.run_rows}

    def load_state_dict(self, state: dict) -> None:
        self.run_apps, self.run_rows = float(state["run_apps"]), float(state["run_rows"])
