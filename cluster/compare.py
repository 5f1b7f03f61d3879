"""`disco compare`: DIS against the TRM-ACT baseline at equal width, data, seeds and budget.

Trains `configs/dis_<preset>.yaml` and `configs/trm_<preset>.yaml` once per seed (or takes
finished runs with `--from`), then writes `report.md` + `report.html` with a table (parameters,
block applications per sample, training rows/s, wall time, pass@1/pass@2 with 95% Wilson intervals
pooled over seeds, exact accuracy on training puzzles), plots and example grids. Every number in
the report is read back from the runs' metrics files and checkpoints.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from arc_data.errors import DiscoError
from arc_data.fsio import atomic_output
from cluster.storage import Storage
from trainer.config import RunSpec, load_spec
from trainer.model import ModelConfig
from trainer.runs import RUN_FILE, best_checkpoint, metrics

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def budget_overrides(budget: str | None, spec: RunSpec) -> list[str]:
    """samples=N -> the same number of training rows for both methods; minutes=M -> wall time."""
    if budget is None:
        return []
    kind, _, value = budget.partition("=")
    try:
        amount = float(value)
    except ValueError:
        raise DiscoError(f"--budget {budget!r}: expected samples=N or minutes=M") from None
    if kind == "samples" and amount > 0:
        batches = max(1, round(amount / spec.train.global_batch_size))
        return ["train.unit=batches", f"train.budget={batches}",
                f"train.eval_interval={max(1, min(batches, batches // 3 or 1))}"]
    if kind == "minutes" and amount > 0:
        return [f"train.time_limit_minutes={amount}", "train.unit=batches", "train.budget=1000000000",
                f"train.eval_interval={10 ** 9}"]
    raise DiscoError(f"--budget {budget!r}: expected samples=N or minutes=M with a positive number")


def run_pair(preset: str, seeds: int, budget: str | None, storage: Storage, prefix: str, address: str | None,
             overrides: list[str]) -> list[str]:
    """Train both methods for every seed; returns the run names."""
    import ray

    from trainer.launch import connect, train

    specs = {}
    for method in ("dis", "trm"):
        path = CONFIGS / f"{method}_{preset}.yaml"
        if not path.is_file():
            raise DiscoError(f"no preset {path.name} for --preset {preset} (have: "
                             f"{', '.join(sorted(p.stem[4:] for p in CONFIGS.glob('dis_*.yaml')))})")
        base = load_spec(path, overrides)
        specs[method] = load_spec(path, overrides + budget_overrides(budget, base))
    check_comparable([(m, s.model_dump(mode="json"), None) for m, s in specs.items()], allow=False)
    names = []
    started = connect(address, num_cpus=max(s.runtime.workers * s.runtime.cpus_per_worker for s in specs.values()))
    try:
        for seed in range(seeds):
            for method, spec in specs.items():
                name = f"{prefix}-{method}-s{seed}"
                spec = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": seed})})
                print(f"[compare] training {name}", flush=True)
                train(spec, storage, name=name, resume=storage.read_text(name, RUN_FILE) is not None)
                names.append(name)
    finally:
        if started:
            ray.shutdown()
    return names


def check_comparable(runs: list[tuple[str, dict, str | None]], allow: bool) -> None:
    """Refuse runs on different data or at different widths (unless `allow`)."""
    widths = {spec["model"]["hidden_size"] for _, spec, _ in runs}
    prints = {fp for _, _, fp in runs if fp is not None}
    paths = {str(Path(spec["data"]["path"]).expanduser().resolve()) for _, spec, fp in runs if fp is None}
    problems = []
    if len(widths) > 1:
        problems.append(f"widths differ ({sorted(widths)})")
    if len(prints) > 1 or len(paths) > 1:
        problems.append("the runs were trained on different datasets (fingerprints/paths differ)")
    if problems and not allow:
        raise DiscoError("not a fair comparison: " + "; ".join(problems) + " (pass --allow-mismatch to compare anyway)")


def collect(storage: Storage, names: list[str]) -> list[dict]:
    out = []
    for name in names:
        record = storage.read_json(name, RUN_FILE)
        if record is None:
            raise DiscoError(f"no run named {name!r} in {storage.uri}")
        recs = metrics(storage, name)
        start = next((r for r in recs if r["kind"] == "start"), {})
        train = [r for r in recs if r["kind"] == "train"]
        evals = [r for r in recs if r["kind"] == "eval"]
        if not evals:
            raise DiscoError(f"run {name!r} has no evaluation yet")
        out.append({"name": name, "method": record["spec"]["objective"]["method"], "spec": record["spec"],
                    "fingerprint": record["dataset"]["fingerprint"], "start": start, "train": train, "evals": evals,
                    "final": evals[-1], "best": best_checkpoint(storage, name, record["spec"]["train"]["select_metric"])})
    return out


def summarise(runs: list[dict]) -> dict[str, dict]:
    table = {}
    for method in ("dis", "trm"):
        rs = [r for r in runs if r["method"] == method]
        if not rs:
            continue
        row = {"runs": len(rs), "seeds": sorted(r["spec"]["train"]["seed"] for r in rs),
               "params": rs[0]["start"].get("params"),
               # Whole-run figure the workers record at each evaluation (the Pareto objective of sweeps).
               "apps_train": float(np.mean([r["final"].get("train_block_apps_per_sample", float("nan"))
                                            for r in rs])),
               "apps_eval": rs[0]["final"].get("block_apps_per_sample"),
               "samples_per_s": float(np.mean([r["final"]["batch"] * r["spec"]["train"]["global_batch_size"]
                                               / max(r["final"]["train_time_s"], 1e-9) for r in rs])),
               "wall_s": float(np.mean([r["final"]["train_time_s"] + sum(e["eval_time_s"] for e in r["evals"])
                                        for r in rs])),
               "batches": int(np.mean([r["final"]["batch"] for r in rs])),
               "train_exact": float(np.mean([r["final"].get("train_exact_accuracy", 0.0) for r in rs])),
               "train_accuracy": float(np.mean([r["final"].get("train_accuracy", 0.0) for r in rs]))}
        for k in ("pass@1", "pass@2"):
            n = int(sum(r["final"]["puzzles"] for r in rs))
            solved = float(sum(r["final"][k] * r["final"]["puzzles"] for r in rs))
            row[k] = solved / max(n, 1)
            row[f"{k}_ci"] = wilson(solved, n)
        row["puzzles"] = rs[0]["final"]["puzzles"]
        table[method] = row
    return table


def _apps_per_row(spec: dict) -> int:
    """Block applications one batch row costs: DIS runs every supervision step on it, TRM-ACT one
    step of the row's carried state (T cycles of n latent updates plus one answer update)."""
    cfg = ModelConfig.model_validate(spec["model"])
    per_step = sum(cfg.applications_per_step)
    return per_step * (cfg.supervision_steps if spec["objective"]["method"] == "dis" else 1)


def _plots(runs: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    colours = {"dis": "C0", "trm": "C3"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        recs = [x for x in r["train"] if "accuracy" in x]  # TRM-ACT: intervals where something halted
        t = [x["train_time_s"] for x in recs]
        acc = [x["accuracy"] for x in recs]
        # Compute actually spent up to each log: batches x rows x block applications per row.
        compute = [x["batch"] * r["spec"]["train"]["global_batch_size"] * _apps_per_row(r["spec"]) for x in recs]
        label = f"{r['method'].upper()} seed {r['spec']['train']['seed']}"
        axes[0].plot(t, acc, color=colours[r["method"]], alpha=0.8, label=label)
        axes[1].plot(compute, acc, color=colours[r["method"]], alpha=0.8, label=label)
    axes[0].set_xlabel("training wall-clock (s)")
    axes[1].set_xlabel("block applications (cumulative, all samples)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("training token accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    files.append(_save(fig, out / "accuracy.png"))
    dis = [r for r in runs if r["method"] == "dis"]
    if dis:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for r in dis:
            last = r["train"][-1]
            steps = sorted(int(k[4:].split("_")[0]) for k in last if k.startswith("step") and k.endswith("target_accuracy"))
            ax.plot(steps, [last[f"step{s}_target_accuracy"] for s in steps], marker="o",
                    label=f"seed {r['spec']['train']['seed']}")
        ax.set_xlabel("DIS step")
        ax.set_ylabel("accuracy vs that step's target")
        ax.set_title("DIS accuracy per step (last training log)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(_save(fig, out / "dis_steps.png"))
    return files


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path.name


def _examples(runs: list[dict], out: Path) -> str | None:
    """Input, DIS steps 1..N, TRM's final answer and the target for one scored test pair."""
    from arc_data.dataset import TEST, TRAIN
    from arc_data.show import save_png
    from arc_data.sources import Pair, Task
    from trainer.inference import load, open_dataset, predict_task

    dis = next((r for r in runs if r["method"] == "dis" and r["best"]), None)
    trm = next((r for r in runs if r["method"] == "trm" and r["best"]), None)
    if dis is None or trm is None or "://" in dis["best"]:
        return None
    d, t = load(dis["best"], device="cpu"), load(trm["best"], device="cpu")
    ds = open_dataset(d, None)
    rows = []
    for task_index in np.flatnonzero(ds.n_test)[:3]:
        pairs = [Pair(ds.grid(int(e), "input"), ds.grid(int(e), "output")) for e in ds.examples_of(task_index, TEST)]
        train = [Pair(ds.grid(int(e), "input"), ds.grid(int(e), "output")) for e in ds.examples_of(task_index, TRAIN)]
        task = Task(ds.task_ids[task_index], "", "eval", "", train, pairs[:1])
        dp, _ = predict_task(d, task, ds)
        tp, _ = predict_task(t, task, ds)
        rows.append((f"{task.task_id}: input | DIS steps 1..{len(dp[0].steps)} | TRM final | target",
                     [pairs[0].input, *dp[0].steps, tp[0].final, pairs[0].output]))
    save_png(rows, out / "examples.png")
    return "examples.png"


def write_report(runs: list[dict], out: str | Path, title: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = summarise(runs)
    plots = _plots(runs, out)
    example = _examples(runs, out)
    cols = [("params", "parameters", "{:,}"), ("apps_train", "block apps / sample (train)", "{:.1f}"),
            ("apps_eval", "block apps / sample (eval)", "{}"), ("samples_per_s", "training rows/s", "{:.1f}"),
            ("wall_s", "wall time (s)", "{:.0f}"), ("batches", "batches", "{}")]
    header = ["method", *(c[1] for c in cols), "pass@1 [95% CI]", "pass@2 [95% CI]", "train puzzles exact", "runs"]
    body = []
    for method, row in table.items():
        cells = [method.upper()] + [fmt.format(row[k]) if row[k] is not None else "-" for k, _, fmt in cols]
        for k in ("pass@1", "pass@2"):
            lo, hi = row[f"{k}_ci"]
            cells.append(f"{row[k]:.3f} [{lo:.3f}, {hi:.3f}]")
        cells += [f"{row['train_exact']:.3f}", f"{row['runs']} (seeds {', '.join(map(str, row['seeds']))})"]
        body.append(cells)
    spec = runs[0]["spec"]
    notes = [f"Data: `{spec['data']['path']}` (fingerprint `{runs[0]['fingerprint'][:12]}`), "
             f"{table[next(iter(table))]['puzzles']} scored puzzles per run; width D={spec['model']['hidden_size']}.",
             "pass@k: Wilson intervals over all (puzzle, seed) scores pooled; train puzzles exact: exact-match rate on "
             "the unaugmented training pairs at the last evaluation.",
             "Block applications per sample: DIS runs a fixed N·T·(n+1); TRM's training figure is the mean over "
             "samples that halted (ACT), its evaluation runs all supervision steps. Training rows/s: batch rows per "
             "second of training; a DIS row runs all its steps, a TRM-ACT row one step of a carried sample."]
    md = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c) + " |" for c in body]
    md += ["", *notes, ""] + [f"![{p}]({p})" for p in plots] + ([f"![examples]({example})"] if example else [])
    md += ["", "Runs: " + ", ".join(f"`{r['name']}`" for r in runs), ""]
    with atomic_output(out / "report.md") as tmp:
        tmp.write_text("\n".join(md))
    h = ["<!doctype html><meta charset=utf-8><title>" + html.escape(title) + "</title>",
         "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;"
         "padding:4px 8px}table{border-collapse:collapse}</style>", f"<h1>{html.escape(title)}</h1><table><tr>"]
    h += ["".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"]
    h += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body]
    h += ["</table>"] + [f"<p>{html.escape(n)}</p>" for n in notes]
    h += [f'<p><img src="{p}" style="max-width:100%"></p>' for p in plots + ([example] if example else [])]
    with atomic_output(out / "report.html") as tmp:
        tmp.write_text("\n".join(h))
    return out / "report.md"
