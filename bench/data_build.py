"""Full ARC-1 build (training + evaluation, 1000 augmentations): wall time, peak RSS, bytes on disk.

    .venv/bin/python bench/data_build.py [--augmentations 1000]

The build runs in a child process so its peak RSS is measured on its own. Targets on the 2-core
dev box: <= 60 s and <= 150 MB. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys
from arc_data.build import build_dataset
from arc_data.manifest import BuildConfig
m = build_dataset(BuildConfig(sources=["arc1"], augmentations=int(sys.argv[2])), sys.argv[1], progress=False)
print(m.counts.model_dump_json())
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--augmentations", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "arc1"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(out), str(args.augmentations)],
                              capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        disk = sum(p.stat().st_size for p in out.iterdir())
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"machine        {platform.node()} ({platform.processor() or platform.machine()})")
    print(f"ARC-1 build    {counts['tasks']} puzzles, {counts['versions']} versions, "
          f"{counts['train_examples']} train rows, {counts['test_examples']} test rows")
    print(f"wall time      {seconds:.1f} s  (target <= 60 s; includes interpreter start and imports)")
    print(f"peak RSS       {peak / 2**20:.1f} MiB  (target <= 150 MB)")
    print(f"on disk        {disk / 2**20:.1f} MiB  (the reference materialises ~7 GB)")
    print(json.dumps({"build_seconds": round(seconds, 2), "disk_bytes": disk, "peak_rss_bytes": peak,
                      "augmentations": args.augmentations, "versions": counts["versions"]}))


if __name__ == "__main__":
    main()
