"""`disco compare`: DIS against the TRM-ACT baseline at equal width, data, seeds and budget.

Trains `configs/dis_<preset>.yaml` and `configs/trm_<preset>.yaml` once per seed (or takes
finished runs with `--from`) on the cluster it is given, then `report.py` writes the report.
Every number in the report is read back from the runs' metrics files and checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arc_data.errors import DiscoError
from trainer.config import RunSpec, load_spec, preset_path, presets
from trainer.runs import Run
from trainer.storage import Storage

METHODS = ("dis", "trm")


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


BUDGETS = "samples=N, apps=N (block applications), flops=F or minutes=M"


def budget_overrides(budget: str | None, spec: RunSpec) -> list[str]:
    """samples=N -> the same number of training rows for both methods; apps=N / flops=F -> the same
    compute (block applications to training rows, or the training FLOPs they imply), which DIS and
    TRM-ACT spend at very different rates per row; minutes=M -> wall time."""
    if budget is None:
        return []
    kind, _, value = budget.partition("=")
    try:
        amount = float(value)
    except ValueError:
        raise DiscoError(f"--budget {budget!r}: expected {BUDGETS}") from None
    if kind in ("apps", "flops") and amount > 0:  # three evaluations, as for samples
        return [f"train.unit={kind}", f"train.budget={amount!r}", f"train.eval_interval={amount / 3!r}"]
    if kind == "samples" and amount > 0:
        batches = max(1, round(amount / spec.train.global_batch_size))
        return ["train.unit=batches", f"train.budget={batches}",
                f"train.eval_interval={max(1, min(batches, batches // 3 or 1))}"]
    if kind == "minutes" and amount > 0:
        return [f"train.time_limit_minutes={amount}", "train.unit=batches", "train.budget=1000000000",
                f"train.eval_interval={10 ** 9}"]
    raise DiscoError(f"--budget {budget!r}: expected {BUDGETS} with a positive number")


def pair_specs(preset: str, seeds: int, budget: str | None, overrides: list[str]) -> list[RunSpec]:
    """Every (seed, method) run config of a comparison, each validated like the command line."""
    paths = {}
    for method in METHODS:
        try:
            paths[method] = preset_path(f"{method}_{preset}")
        except DiscoError:
            have = sorted(n.removeprefix("dis_") for n in presets() if n.startswith("dis_"))
            raise DiscoError(f"no preset {method}_{preset}.yaml for --preset {preset} (have: {', '.join(have)})") from None
    specs = []
    for seed in range(seeds):
        for method in METHODS:
            base = load_spec(paths[method], overrides)
            specs.append(load_spec(paths[method], [*overrides, *budget_overrides(budget, base), f"train.seed={seed}"]))
    check_comparable([(s, None) for s in specs], allow=False)
    return specs


def run_pair(specs: list[RunSpec], storage: Storage, prefix: str, address: str | None) -> list[str]:
    """Train every run (resuming any that exists) on one Ray connection; returns the run names."""
    import ray

    from trainer.launch import connect, train

    names = []
    started = connect(address, num_cpus=max(s.runtime.max_workers * s.runtime.cpus_per_worker for s in specs))
    try:
        for spec in specs:
            name = f"{prefix}-{spec.method}-s{spec.train.seed}"
            print(f"[compare] training {name}", flush=True)
            train(spec, storage, name=name, address=address, resume=Run(storage, name).read() is not None)
            names.append(name)
    finally:
        if started:
            ray.shutdown()
    return names


def check_comparable(runs: list[tuple[RunSpec, str | None]], allow: bool) -> None:
    """Refuse runs on different data or at different widths (unless `allow`); a fingerprint of
    None compares the data paths instead."""
    widths = {spec.model.hidden_size for spec, _ in runs}
    prints = {fp for _, fp in runs if fp is not None}
    paths = {str(Path(spec.data.path).expanduser().resolve()) if spec.data.path else spec.data.recipe.model_dump_json()
             for spec, fp in runs if fp is None}
    problems = []
    if len(widths) > 1:
        problems.append(f"widths differ ({sorted(widths)})")
    if len(prints) > 1 or len(paths) > 1:
        problems.append("the runs were trained on different datasets (fingerprints/paths differ)")
    if problems and not allow:
        raise DiscoError("not a fair comparison: " + "; ".join(problems) + " (pass --allow-mismatch to compare anyway)")


@dataclass
class ComparedRun:
    """One run as the report sees it: its record and its logged metrics."""

    run: Run
    start: dict
    train: list[dict]
    evals: list[dict]
    best: str | None  # checkpoint directory name

    @property
    def spec(self) -> RunSpec:
        return self.run.record.spec

    @property
    def method(self) -> str:
        return self.spec.method

    @property
    def final(self) -> dict:
        return self.evals[-1]

    @property
    def apps_per_row(self) -> int:
        """Block applications one training batch row costs (recorded by the workers at the start)."""
        if "block_apps_per_row" in self.start:
            return int(self.start["block_apps_per_row"])
        from trainer.objectives import build_objective  # runs recorded before the start record had it

        return build_objective(self.spec.objective, self.spec.model).block_applications_per_row()


def sweep_pick(storage: Storage, sweep: str) -> tuple[Storage, list[str], tuple]:
    """The best trial of each method in a sweep (by the sweep's metric): (the trials' storage,
    their names, (sweep record, leaderboard rows with the Pareto front marked))."""
    from .leaderboard import leaderboard
    from .sweep import RUNS

    record, rows = leaderboard(storage, sweep, pareto=True)
    names = []
    for method in METHODS:
        best = next((r for r in rows if r["method"] == method), None)
        if best is None:
            raise DiscoError(f"sweep {sweep!r} has no {method.upper()} trial with a checkpoint; a comparison needs "
                             "both (search `method: {choice: [dis, trm]}`)")
        names.append(best["trial"])
    return storage.child(sweep, RUNS), names, (record, rows)


def collect(storage: Storage, names: list[str]) -> list[ComparedRun]:
    out = []
    for name in names:
        run = Run(storage, name)
        records = run.metrics()
        evals = [r for r in records if r["kind"] == "eval"]
        if not evals:
            raise DiscoError(f"run {name!r} has no evaluation yet")
        best = run.best()
        out.append(ComparedRun(run, next((r for r in records if r["kind"] == "start"), {}),
                               [r for r in records if r["kind"] == "train"], evals, best.name if best else None))
    if {r.method for r in out} != set(METHODS):
        raise DiscoError("a comparison needs at least one DIS run and one TRM run")
    return out


def summarise(runs: list[ComparedRun]) -> dict[str, dict]:
    """Per method: means over its runs, and pass@k pooled over (puzzle, seed) with Wilson intervals."""
    table = {}
    for method in METHODS:
        rs = [r for r in runs if r.method == method]
        if not rs:
            continue
        row = {"runs": len(rs), "seeds": sorted(r.spec.train.seed for r in rs), "params": rs[0].start.get("params"),
               # Whole-run figure the workers record at each evaluation (the Pareto objective of sweeps).
               "apps_train": float(np.mean([r.final.get("train_block_apps_per_sample", float("nan")) for r in rs])),
               "apps_eval": rs[0].final.get("block_apps_per_sample"),
               "samples_per_s": float(np.mean([r.final["batch"] * r.spec.train.global_batch_size
                                               / max(r.final["train_time_s"], 1e-9) for r in rs])),
               "wall_s": float(np.mean([r.final["train_time_s"] + sum(e["eval_time_s"] for e in r.evals) for r in rs])),
               "batches": int(np.mean([r.final["batch"] for r in rs])),
               "train_exact": float(np.mean([r.final.get("train_exact_accuracy", 0.0) for r in rs])),
               "train_accuracy": float(np.mean([r.final.get("train_accuracy", 0.0) for r in rs])),
               "puzzles": rs[0].final["puzzles"]}
        for k in ("pass@1", "pass@2"):
            n = int(sum(r.final["puzzles"] for r in rs))
            solved = float(sum(r.final[k] * r.final["puzzles"] for r in rs))
            row[k] = solved / max(n, 1)
            row[f"{k}_ci"] = wilson(solved, n)
        table[method] = row
    return table
