"""Seeing runs while they train: `disco runs watch` (a live view of one run's latest metrics) and
`disco runs plot` (curves of several runs). Both read only the run's files through its storage, so
they work for local and remote storage and for runs inside Ray jobs alike."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from arc_data.fsio import atomic_output

from .runs import Run

CLEAR = "\x1b[2J\x1b[H"


def snapshot(run: Run) -> list[str]:
    """The lines of one view of a run: status, progress with ETA, latest training log and evaluation."""
    record, records = run.read(), run.metrics()
    start = next((r for r in reversed(records) if r.get("kind") in ("start", "resume")), {})
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    total = start.get("batches_total")
    lines = [f"run {run.name}  {record.status if record else 'no run.json yet'}  {run.location}"]
    if train:
        t = train[-1]
        done = f"batch {t['batch']}/{total}" if total else f"batch {t['batch']}"
        left = (total - t["batch"]) * t["train_time_s"] / max(t["batch"], 1) if total else None
        eta = f"  ETA {left / 60:.1f} min of training" if left is not None and record and record.status == "running" else ""
        lines.append(f"  {done}  ({100 * t['batch'] / total:.0f}%){eta}" if total else f"  {done}{eta}")
        lines.append(f"  loss {t['loss']:.4f}  accuracy {_f(t.get('accuracy'))}  exact {_f(t.get('exact_accuracy'))}  "
                     f"lr {_f(t.get('lr'), '.2e')}  {t['samples_per_s']:.1f} samples/s")
    else:
        lines.append("  no training log yet")
    if evals:
        e = evals[-1]
        lines.append(f"  eval @ batch {e['batch']}: pass@1 {_f(e.get('pass@1'))}  pass@2 {_f(e.get('pass@2'))}  "
                     f"val {_f(e.get('val_pass@2'))}  train puzzles exact {_f(e.get('train_exact_accuracy'))}  "
                     f"({e.get('scoring', 'scoring not recorded')})")
    return lines


def _f(value, fmt: str = ".3f") -> str:
    return format(value, fmt) if isinstance(value, int | float) else "-"


def watch(run: Run, interval: float = 5.0, once: bool = False, out=sys.stdout) -> None:
    """Refresh the view until the run stops running (or Ctrl-C): redrawn on a terminal, one block
    per change otherwise."""
    tty, last = out.isatty(), None
    while True:
        record = run.read()  # before the snapshot: a run that ends in between is drawn once more
        lines = snapshot(run)
        if lines != last:
            out.write((CLEAR if tty else "") + "\n".join(lines) + "\n")
            out.flush()
            last = lines
        if once or (record is not None and record.status != "running"):
            return
        time.sleep(interval)


def plot(runs: list[Run], path: str | Path) -> Path:
    """Loss and training accuracy against batches and against block applications, and samples/s,
    one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for run in runs:
        records = run.metrics()
        start = next((r for r in records if r.get("kind") == "start"), {})
        train = [r for r in records if r.get("kind") == "train"]
        batches = [r["batch"] for r in train]
        rows = run.record.spec.train.global_batch_size * start.get("block_apps_per_row", float("nan"))
        label = f"{run.name} ({run.record.method.upper()})"
        style = dict(marker="o", markersize=2, label=label)
        axes[0].plot(batches, [r["loss"] for r in train], **style)
        scored = [r for r in train if "accuracy" in r]  # TRM-ACT: intervals where a sample halted
        axes[1].plot([r["batch"] * rows for r in scored], [r["accuracy"] for r in scored], **style)
        axes[2].plot(batches, [r["samples_per_s"] for r in train], **style)
    for ax, (x, y) in zip(axes, (("batches", "training loss"), ("block applications (all rows)", "training token accuracy"),
                                 ("batches", "samples/s")), strict=True):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
