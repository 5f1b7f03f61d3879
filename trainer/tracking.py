"""Run tracking on rank 0: a local JSONL metrics file (the source of truth) and optional W&B.

`metrics.jsonl` has one record per line: {"kind": "train", "batch", "step", "epoch", "elapsed_s",
"samples_per_s", "loss", "accuracy", ...} every log interval and {"kind": "eval", ...} after every
evaluation. On a resumed run, records past the restored batch are dropped first, so the file
never holds a batch twice. W&B runs in offline mode unless configured online; its files go
into the run directory (`wandb/`), and it is only ever started on rank 0: Ray's `setup_wandb
(rank_zero_only=True)` does not work under Train V2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .config import TrackingConfig

METRICS_FILE = "metrics.jsonl"


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
    """A thin guard around wandb: never started off rank 0, never raises into the training loop."""

    def __init__(self, cfg: TrackingConfig, run_name: str, run_dir: Path, config: dict, warn=print):
        self.run = None
        if cfg.wandb == "off":
            return
        mode = cfg.wandb
        if mode == "online" and not os.environ.get("WANDB_API_KEY"):
            warn("tracking.wandb=online but WANDB_API_KEY is not set; logging to W&B offline instead")
            mode = "offline"
        try:
            import wandb

            run_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=cfg.project, entity=cfg.entity, name=run_name, id=run_name,
                                  group=config.get("objective", {}).get("method"), config=config,
                                  dir=str(run_dir), mode=mode, resume="allow",
                                  settings=wandb.Settings(init_timeout=60, silent=True, console="off"))
        except Exception as e:  # noqa: BLE001 - tracking must never stop training
            warn(f"W&B disabled for this run: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            self.run = None

    def log(self, record: dict, step: int) -> None:
        if self.run is not None:
            self.run.log({f"{record['kind']}/{k}": v for k, v in record.items()
                          if k != "kind" and isinstance(v, int | float)}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
