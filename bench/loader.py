"""Examples materialised per second on one core: training rows (translated) and test rows.

    .venv/bin/python bench/loader.py [--data DIR] [--batch 512] [--seconds 10]

Without --data it builds full ARC-1 with 1000 augmentations in a temp dir first. Rendering is
single-threaded numpy, so one process = one core. Target: >= 20,000 examples/s/core.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _rate(batches, seconds: float) -> tuple[float, int]:
    n, t0 = 0, time.perf_counter()
    for b in batches:
        n += len(b)
        if time.perf_counter() - t0 > seconds:
            break
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    from arc_data.build import build_dataset
    from arc_data.dataset import ArcDataset
    from arc_data.manifest import BuildConfig

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp) / "arc1"
            build_dataset(BuildConfig(sources=["arc1"], augmentations=1000), root, progress=False)
        t0 = time.perf_counter()
        ds = ArcDataset(root)
        open_s = time.perf_counter() - t0
        train, n_train = _rate(iter(ds.train_sampler(args.batch, seed=0)), args.seconds)
        test, n_test = _rate(ds.test_batches(args.batch), args.seconds)
    print(f"dataset        {root} ({ds.manifest.counts.versions} versions), opened in {open_s:.2f} s")
    print(f"train rows     {train:,.0f} examples/s/core  ({n_train} rows, batch {args.batch}, inputs+labels)")
    print(f"test rows      {test:,.0f} examples/s/core  ({n_test} rows)")
    print("target         >= 20,000 examples/s/core")
    print(json.dumps({"examples_per_second_per_core": round(train), "test_examples_per_second_per_core": round(test),
                      "batch": args.batch, "open_seconds": round(open_s, 3)}))


if __name__ == "__main__":
    main()
