"""Reading runs back from storage: listing, details, best checkpoint, checkpoint lookup."""

from __future__ import annotations

import tempfile
from pathlib import Path

from arc_data.errors import DiscoError
from cluster.storage import Storage

from . import checkpoint as ckpt
from .tracking import METRICS_FILE, read_metrics

RUN_FILE = "run.json"


def list_runs(storage: Storage) -> list[dict]:
    out = []
    for name in storage.listdir():
        record = storage.read_json(name, RUN_FILE)
        if record is not None:
            out.append(record)
    return out


def checkpoints(storage: Storage, name: str) -> list[dict]:
    """The run's checkpoints in storage (oldest first): name, batch, metrics, complete or not."""
    out = []
    for d in storage.listdir(name):
        if ckpt.step_of(d) is None:
            continue
        meta = None
        try:
            meta = storage.read_json(name, d, "meta.json")
        except DiscoError:
            pass
        complete = storage.read_text(name, d, ckpt.COMMIT) is not None and meta is not None
        out.append({"name": d, "batch": ckpt.step_of(d), "complete": complete,
                    "metrics": (meta or {}).get("metrics", {})})
    return out


def best_checkpoint(storage: Storage, name: str, metric: str) -> str | None:
    """Path (in storage) of the complete checkpoint with the highest `metric`; ties go to the later one."""
    done = [c for c in checkpoints(storage, name) if c["complete"]]
    if not done:
        return None
    best = max(done, key=lambda c: (c["metrics"].get(metric, float("-inf")), c["batch"]))
    return storage.join(name, best["name"])


def metrics(storage: Storage, name: str) -> list[dict]:
    return read_metrics(storage.read_text(name, METRICS_FILE))


def resolve_checkpoint(ref: str, storage: Storage) -> Path:
    """A local checkpoint directory for `ref`: a checkpoint directory, or a run name (its best checkpoint)."""
    p = Path(ref).expanduser()
    if p.is_dir():
        if (p / ckpt.COMMIT).exists() or (p / "meta.json").exists():
            return p
        run_dir = p  # a run directory given by path
        storage, ref = Storage.of(str(run_dir.parent)), run_dir.name
    record = storage.read_json(ref, RUN_FILE)
    if record is None:
        raise DiscoError(f"{ref!r} is neither a checkpoint directory nor a run in {storage.uri} (see `disco runs list`)")
    metric = record.get("spec", {}).get("train", {}).get("select_metric", "val_pass@2")
    best = best_checkpoint(storage, ref, metric)
    if best is None:
        raise DiscoError(f"run {ref!r} has no complete checkpoint yet")
    if storage.is_local:
        return Path(best)
    local = Path(tempfile.mkdtemp(prefix="disco-ckpt-"))
    return storage.download(best.removeprefix(storage.uri).lstrip("/"), local)
