"""Leaderboards of sweeps (`disco best`): every trial ranked by its best checkpoint, the Pareto
front of accuracy against compute, and its plot."""

from __future__ import annotations

from pathlib import Path

from arc_data.fsio import atomic_output
from trainer.runs import Run, best_of
from trainer.storage import Storage

from .sweep import APPS_METRIC, RUNS, SweepRecord, read_sweep


def leaderboard(storage: Storage, sweep: str, pareto: bool = False) -> tuple[SweepRecord, list[dict]]:
    """(sweep record, one row per trial ranked by the sweep metric of its best checkpoint); with
    `pareto` (or a Pareto sweep) each row says whether it is on the front of metric vs compute."""
    record = read_sweep(storage, sweep)
    metric = record.metric
    runs = storage.child(sweep, RUNS)
    rows = []
    for name in runs.listdir():
        run = Run(runs, name)
        trial = run.read()
        best = best_of(run.checkpoints(), metric) if trial is not None else None
        if best is None:
            continue
        records = run.metrics()
        evals = [r for r in records if r.get("kind") == "eval"]
        start = next((r for r in records if r.get("kind") == "start"), {})
        total, last, m = start.get("batches_total"), evals[-1]["batch"] if evals else 0, best.metrics
        spec = trial.spec.model_dump(mode="json")
        rows.append({
            "trial": name, "method": trial.method, "params": {k: _lookup(spec, k) for k in record.space.params},
            metric: m.get(metric), "test_pass@2": m.get("pass@2"), "test_pass@1": m.get("pass@1"),
            "train_exact_accuracy": m.get("train_exact_accuracy"), APPS_METRIC: m.get(APPS_METRIC),
            "parameters": start.get("params"), "batches": last, "samples": last * trial.spec.train.global_batch_size,
            "train_time_s": evals[-1].get("train_time_s") if evals else None,
            "status": "complete" if total and last >= total else "stopped early" if record.status != "running"
            else "paused" if trial.status == "paused" else "running",
            "checkpoint": run.checkpoint_location(best.name),
        })
    rows.sort(key=lambda r: (-(r[metric] if r[metric] is not None else float("-inf")), r["trial"]))
    for i, r in enumerate(rows, start=1):
        r["rank"] = i
    if pareto or record.objective == "pareto":
        front = pareto_front(rows, metric)
        for r in rows:
            r["pareto"] = r["trial"] in front
    return record, rows


def dominates(a: dict, b: dict, metric: str) -> bool:
    """`a` is at least as accurate and at least as cheap as `b`, and better in one of the two."""
    ka, kb = (a[metric], -a[APPS_METRIC]), (b[metric], -b[APPS_METRIC])
    return all(x >= y for x, y in zip(ka, kb, strict=True)) and ka != kb


def pareto_front(rows: list[dict], metric: str) -> set[str]:
    """Trials no other trial dominates on (metric up, block applications per sample down)."""
    scored = [r for r in rows if r.get(metric) is not None and r.get(APPS_METRIC) is not None]
    return {r["trial"] for r in scored if not any(dominates(o, r, metric) for o in scored if o is not r)}


def _lookup(spec: dict, key: str):
    if key == "method":
        return spec["objective"]["method"]
    node = spec
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def format_table(record: SweepRecord, rows: list[dict]) -> str:
    metric = record.metric
    head = (f"sweep {record.name} ({record.status}): {len(rows)}/{record.trials} trials with checkpoints; "
            f"ranked by {metric} on the validation split ({record.validation_fraction:.0%} of scored puzzles); "
            "test_pass@2 is on the other puzzles")
    cols = ["rank", "trial", "params", metric, "test_pass@2", APPS_METRIC, "batches", "status"]
    if any("pareto" in r for r in rows):
        cols.append("pareto")
    table = [cols] + [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(cols))]
    lines = [head, ""] + ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) for row in table]
    if rows:
        lines += ["", f"best checkpoint: {rows[0]['checkpoint']}"]
    if front := [r for r in rows if r.get("pareto")]:
        front.sort(key=lambda r: r[APPS_METRIC])
        lines += ["", f"Pareto front ({metric} up, {APPS_METRIC} down), cheapest first:"]
        lines += [f"  {r['trial']}  {r['method'].upper()}  {metric} {_fmt(r[metric])}  "
                  f"{APPS_METRIC} {_fmt(r[APPS_METRIC])}  {_fmt(r['params'])}" for r in front]
    return "\n".join(lines)


def plot_pareto(record: SweepRecord, rows: list[dict], path: str | Path) -> Path:
    """Validation metric against block applications per training sample; the front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = record.metric
    fig, ax = plt.subplots(figsize=(6, 4))
    for front, style in ((False, dict(c="0.6", marker="o")), (True, dict(c="C3", marker="*", s=120))):
        pts = [r for r in rows if r.get("pareto", False) == front and r[metric] is not None]
        ax.scatter([r[APPS_METRIC] for r in pts], [r[metric] for r in pts], label="Pareto front" if front else "trial",
                   **style)
        for r in pts:
            ax.annotate(r["method"], (r[APPS_METRIC], r[metric]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("block applications per training sample (lower = cheaper)")
    ax.set_ylabel(f"{metric} (validation split)")
    ax.set_title(f"sweep {record.name}")
    ax.legend()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return " ".join(f"{k.split('.')[-1]}={_fmt(x)}" for k, x in v.items())
    return "-" if v is None else str(v)


def run_checkpoints(storage: Storage, name: str) -> dict | None:
    """A plain run's complete checkpoints ranked by its selection metric (best first), or None
    when there is no such run."""
    from trainer.runs import ranked

    run = Run(storage, name)
    if (record := run.read()) is None:
        return None
    metric = record.spec.train.select_metric
    rows = [{"rank": i, "checkpoint": c.name, "batch": c.batch, metric: c.metrics.get(metric),
             "pass@2": c.metrics.get("pass@2"), "location": run.checkpoint_location(c.name)}
            for i, c in enumerate(ranked(run.checkpoints(), metric), start=1)]  # the run's own best rule
    cols = ["rank", "checkpoint", "batch", metric, "pass@2"]
    table = [cols] + [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = [f"run {name} ({record.status}), {record.method.upper()}: checkpoints ranked by {metric}", ""]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table]
    lines += ["", f"best checkpoint: {rows[0]['location']}" if rows else "no complete checkpoint yet"]
    return {"run": name, "metric": metric, "rows": rows, "text": "\n".join(lines)}


def watch(storage: Storage, sweep: str, interval: float = 10.0, pareto: bool = False, out=None) -> None:
    """Redraw the leaderboard whenever it changes, until the sweep stops running (or Ctrl-C)."""
    import sys
    import time

    out = out or sys.stdout
    last = None
    while True:
        record, rows = leaderboard(storage, sweep, pareto)
        text = format_table(record, rows)
        if text != last:
            out.write(("\x1b[2J\x1b[H" if out.isatty() else "") + text + "\n\n")
            out.flush()
            last = text
        if record.status not in ("planned", "running"):
            return
        time.sleep(interval)
