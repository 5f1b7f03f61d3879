"""How long the DIS-vs-TRM comparison takes end to end: `disco compare --preset cpu_tiny`.

    .venv/bin/python bench/compare_time.py [--seeds 3] [--budget samples=N] [--keep DIR]

Builds the `make run` dataset (8+8 ARC-1 tasks, 10x10 canvas, 2 augmentations) if it is missing,
then runs the real command in a subprocess, exactly as a user would, into a temporary storage
directory. Prints the wall time, the per-method table read back from the runs, and one JSON line.
Target: total_s <= 1200 (20 minutes) on the 2-core box with the default 3 seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "arc1-tiny"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", help="passed to disco compare (default: the presets' own budgets)")
    ap.add_argument("--keep", help="write runs and the report here instead of a temporary directory")
    args = ap.parse_args()
    disco = str(Path(sys.executable).parent / "disco")
    env = os.environ | {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    if not (DATA / "manifest.json").is_file():
        subprocess.run([disco, "data", "build", "--source", "arc1", "--canvas", "10", "--tasks", "8",
                        "--augmentations", "2", "--out", str(DATA)], check=True, env=env)

    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-compare-"))
    cmd = [disco, "compare", "--preset", "cpu_tiny", "--seeds", str(args.seeds), "--storage", str(root / "runs"),
           "--out", str(root / "report"), "--set", f"data.path={DATA}"]
    if args.budget:
        cmd += ["--budget", args.budget]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"disco compare failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")

    sys.path.insert(0, str(ROOT))
    from trainer.storage import Storage
    from tuning.compare import collect, summarise

    storage = Storage.of(str(root / "runs"))
    names = sorted(p.name for p in (root / "runs").iterdir() if (p / "run.json").is_file())
    table = summarise(collect(storage, names))
    print(f"disco compare --preset cpu_tiny, {args.seeds} seeds: {total / 60:.1f} min   target <= 20 min")
    for method, row in table.items():
        print(f"  {method.upper():4} params {row['params']:,}  block apps/sample {row['apps_train']:.1f} train, "
              f"{row['apps_eval']} eval  {row['samples_per_s']:.1f} rows/s  train wall {row['wall_s']:.0f} s  "
              f"pass@2 {row['pass@2']:.3f} {tuple(round(x, 3) for x in row['pass@2_ci'])}  "
              f"train exact {row['train_exact']:.3f}")
    print(f"report: {root / 'report' / 'report.md'}")
    out = {"bench": "compare_time", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
           "cores": os.cpu_count(), "seeds": args.seeds, "budget": args.budget or "preset", "total_s": round(total, 1)}
    for method, row in table.items():
        out |= {f"{method}_wall_s": round(row["wall_s"], 1), f"{method}_rows_per_s": round(row["samples_per_s"], 1),
                f"{method}_apps_train": round(row["apps_train"], 1), f"{method}_pass2": row["pass@2"],
                f"{method}_train_exact": round(row["train_exact"], 4)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
