"""The DIS-vs-TRM report: `report.md` + `report.html` with a table (parameters, block applications
per sample, training rows/s, wall time, pass@1/pass@2 with 95% Wilson intervals pooled over seeds,
exact accuracy on training puzzles), plots and example grids, all read back from the runs."""

from __future__ import annotations

import html
import math
import re
import tempfile
from pathlib import Path

import numpy as np

from arc_data.fsio import atomic_output, atomic_write_text
from trainer.storage import Storage

from .compare import ComparedRun, summarise

COLOURS = {"dis": "C0", "trm": "C3"}
COLUMNS = [("params", "parameters", "{:,}"), ("apps_train", "block apps / sample (train)", "{:.1f}"),
           ("apps_eval", "block apps / sample (eval)", "{}"), ("samples_per_s", "training rows/s", "{:.1f}"),
           ("wall_s", "wall time (s)", "{:.0f}"), ("batches", "batches", "{}")]
NOTES = ["pass@k: Wilson intervals over all (puzzle, seed) scores pooled; train puzzles exact: exact-match rate on "
         "the unaugmented training pairs at the last evaluation.",
         "Block applications per sample: DIS runs a fixed N·T·(n+1); TRM's training figure is the mean over "
         "samples that halted (ACT), its evaluation runs all supervision steps. Training rows/s: batch rows per "
         "second of training; a DIS row runs all its steps, a TRM-ACT row one step of a carried sample."]


def _plots(runs: list[ComparedRun], out: Path) -> list[str]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        recs = [x for x in r.train if "accuracy" in x]  # TRM-ACT: intervals where something halted
        acc = [x["accuracy"] for x in recs]
        # Compute actually spent up to each log: batches x rows x block applications per row.
        compute = [x["batch"] * r.spec.train.global_batch_size * r.apps_per_row for x in recs]
        label = f"{r.method.upper()} seed {r.spec.train.seed}"
        style = dict(color=COLOURS[r.method], alpha=0.8, label=label, marker="o", markersize=3)  # one log is a point
        axes[0].plot([x["train_time_s"] for x in recs], acc, **style)
        axes[1].plot(compute, acc, **style)
    axes[0].set_xlabel("training wall-clock (s)")
    axes[1].set_xlabel(f"block applications (cumulative, all samples); budget {budget_label(runs)}")
    axes[1].set_xscale("log")
    axes[1].xaxis.set_major_locator(matplotlib.ticker.LogLocator(numticks=5))  # labels that do not overlap
    axes[1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for ax in axes:
        ax.set_ylabel("training token accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    files = [_save(fig, out / "accuracy.png")]
    stepped = [r for r in runs if _step_targets(r.train[-1])]  # objectives with a target per step (DIS)
    if stepped:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for r in stepped:
            steps = _step_targets(r.train[-1])
            ax.plot(steps, [r.train[-1][f"step{s}_target_accuracy"] for s in steps], marker="o",
                    label=f"{r.method.upper()} seed {r.spec.train.seed}")
        ax.set_xlabel("DIS step")
        ax.set_ylabel("accuracy vs that step's target")
        ax.set_title("DIS accuracy per step (last training log)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(_save(fig, out / "dis_steps.png"))
    return files


def budget_label(runs: list[ComparedRun]) -> str:
    """The runs' training budget as given (e.g. `apps=3e+09`, `batches=300`, `minutes=60`)."""
    labels = set()
    for r in runs:
        t = r.spec.train
        labels.add(f"minutes={t.time_limit_minutes:g}" if t.time_limit_minutes and t.budget >= 10**8
                   else f"{t.unit}={t.budget:g}")
    return ", ".join(sorted(labels))


def _step_targets(record: dict) -> list[int]:
    """The supervision steps with their own target accuracy in a training record."""
    return sorted(int(k[4:].split("_")[0]) for k in record if k.startswith("step") and k.endswith("_target_accuracy"))


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path.name


def _examples(runs: list[ComparedRun], out: Path) -> str | None:
    """Input, DIS steps 1..N, TRM's final answer and the target for up to three scored test pairs."""
    from arc_data.show import save_png
    from trainer.inference import load, open_dataset, predict_task

    dis = next((r for r in runs if r.method == "dis" and r.best), None)
    trm = next((r for r in runs if r.method == "trm" and r.best), None)
    if dis is None or trm is None:
        return None
    with dis.run.local_checkpoint(dis.best) as a, trm.run.local_checkpoint(trm.best) as b:
        d, t = load(a, device="cpu"), load(b, device="cpu")
    ds = open_dataset(d, None)
    rows = []
    for task_index in np.flatnonzero(ds.n_scored)[:3]:
        task = ds.task(int(task_index))
        task.test = [p for p in task.test if p.output is not None][:1]
        dp, _ = predict_task(d, task, ds)
        tp, _ = predict_task(t, task, ds)
        rows.append((f"{task.task_id}: input | DIS steps 1..{len(dp[0].steps)} | TRM final | target",
                     [task.test[0].input, *dp[0].steps, tp[0].final, task.test[0].output]))
    save_png(rows, out / "examples.png")
    return "examples.png"


def _format(fmt: str, value) -> str:
    """A table cell; no value (e.g. TRM-ACT's training cost before any sample halted) is "-"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def _code(text: str) -> str:
    """Markdown `code` spans as HTML."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _table(runs: list[ComparedRun]) -> tuple[list[str], list[list[str]], dict]:
    table = summarise(runs)
    header = ["method", *(c[1] for c in COLUMNS), "pass@1 [95% CI]", "pass@2 [95% CI]", "train puzzles exact", "runs"]
    body = []
    for method, row in table.items():
        cells = [method.upper()] + [_format(fmt, row[k]) for k, _, fmt in COLUMNS]
        for k in ("pass@1", "pass@2"):
            lo, hi = row[f"{k}_ci"]
            cells.append(f"{row[k]:.3f} [{lo:.3f}, {hi:.3f}]")
        cells += [f"{row['train_exact']:.3f}", f"{row['runs']} (seeds {', '.join(map(str, row['seeds']))})"]
        body.append(cells)
    return header, body, table


def write_report(runs: list[ComparedRun], out: str | Path, title: str, sweep: tuple | None = None) -> Path:
    """Write report.md, report.html and the pictures into the local directory `out`; `sweep`
    (record, leaderboard rows) adds the sweep's Pareto front of accuracy against compute."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header, body, table = _table(runs)
    pictures = _plots(runs, out) + [e for e in [_examples(runs, out)] if e]
    spec, first = runs[0].spec, runs[0].run.record
    # Runs evaluated before scoring was labelled skipped empty crops and ranked in float32.
    scorings = sorted({r.final.get("scoring", "pre-reference (empty crops skipped)") for r in runs})
    notes = [f"Data: `{spec.data.label}` (fingerprint `{first.dataset.fingerprint[:12]}`), "
             f"{next(iter(table.values()))['puzzles']} scored puzzles per run; width D={spec.model.hidden_size}; "
             f"scoring: {', '.join(scorings)}; budget per run: `{budget_label(runs)}`"
             + (" (block applications to training rows, each run stopping at the first whole batch that reaches it: "
                "the same compute for both methods)" if any(r.spec.train.unit in ("apps", "flops") for r in runs)
                else "") + ".", *NOTES]
    if sweep is not None:
        from .leaderboard import plot_pareto

        record, rows = sweep
        pictures.append(plot_pareto(record, rows, out / "pareto.png").name)
        front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["trial"])
        notes.append(f"From sweep `{record.name}`: the best trial of each method by {record.metric} on the validation "
                     f"split ({', '.join(f'`{r.run.name}`' for r in runs)}), out of {len(rows)} trials; the Pareto "
                     f"front of {record.metric} against block applications per training sample: "
                     + ", ".join(f"`{r['trial']}` ({r['method'].upper()})" for r in front) + ".")
    if short := [r.run.name for r in runs if len(r.evals) < 2 or len(r.train) < 2]:
        notes.append(f"Not enough evaluations or training logs for curves in {', '.join(short)}: the plots show "
                     "single points; give the runs a longer budget for trends.")
    md = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c) + " |" for c in body]
    md += ["", *notes, "", *(f"![{p}]({p})" for p in pictures), "", "Runs: " + ", ".join(f"`{r.run.name}`" for r in runs), ""]
    atomic_write_text(out / "report.md", "\n".join(md))
    h = ["<!doctype html><meta charset=utf-8><title>" + html.escape(title) + "</title>",
         "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;"
         "padding:4px 8px}table{border-collapse:collapse}</style>", f"<h1>{html.escape(title)}</h1><table><tr>"]
    h += ["".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"]
    h += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body]
    h += ["</table>", *(f"<p>{_code(n)}</p>" for n in notes)]
    h += [f'<p><img src="{p}" style="max-width:100%"></p>' for p in pictures]
    atomic_write_text(out / "report.html", "\n".join(h))
    return out / "report.md"


def publish_report(runs: list[ComparedRun], storage: Storage, name: str, title: str,
                   sweep: tuple | None = None) -> tuple[str, str]:
    """Write the report into `<storage>/<name>/` (local or remote); returns (its location, report.md's text)."""
    with tempfile.TemporaryDirectory(prefix="disco-report-") as tmp:
        md = write_report(runs, Path(tmp, name), title, sweep)
        text = md.read_text()
        storage.upload(Path(tmp, name), name)
    return storage.join(name), text
