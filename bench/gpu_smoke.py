"""One command for a CUDA machine: DIS and TRM-ACT at the compact and full widths on one GPU.

    .venv/bin/python bench/gpu_smoke.py [--seconds 60] [--augmentations 8] [--compile|--no-compile]
    .venv/bin/python bench/gpu_smoke.py --device cpu --canvas 10 --seconds 3 --widths compact   # dry run

For each width (compact: dis_compact vs trm_compact; full: dis_medium vs trm) it trains the
preset's model and objective with the real Trainer (bf16 and torch.compile as trainer/device.py
decides on CUDA) on ARC-1 for --seconds after a warm-up, with each preset's per-GPU batch (its
global batch over the 4 GPUs of the papers' runs), and prints samples/s (samples that completed all
their supervision steps), peak GPU memory, achieved TFLOP/s and MFU against the GPU's bf16 dense
peak (the matmul peak measured here when the GPU is not in the table), and the TRM/DIS cost per
sample at each width. FLOPs come from the model's shape (`ModelConfig.step_flops`). The last line
is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch  # noqa: E402

from arc_data.build import build_dataset  # noqa: E402
from arc_data.manifest import BuildConfig  # noqa: E402
from trainer.config import load_spec  # noqa: E402
from trainer.loop import Trainer  # noqa: E402
from trainer.runs import Run  # noqa: E402
from trainer.storage import Storage  # noqa: E402

WIDTHS = {"compact": ("dis_compact", "trm_compact"), "full": ("dis_medium", "trm")}
# Dense bf16 tensor-core peaks from the vendors' datasheets (FLOP/s), by a substring of the name.
BF16_PEAK = {"H200": 989.4e12, "H100 PCIe": 756.0e12, "H100": 989.4e12, "A100": 312.0e12, "L40S": 362.1e12,
             "L4": 121.0e12, "A10G": 70.0e12, "A10": 125.0e12}


def peak_flops(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in BF16_PEAK.items():
            if key in name:
                return value, f"{name} datasheet bf16"
    n = 2048 if device.type == "cuda" else 512
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 2:
        a @ b
        reps += 1
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0), f"measured {dtype} matmul"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(preset: str, data: str, runs: Storage, args) -> dict:
    gpu = args.device == "cuda"
    base = load_spec(preset)
    batch = args.batch or max(1, base.train.global_batch_size // 4)  # one rank of the papers' 4-GPU runs
    sets = [f"data.path={data}", "runtime.workers=1", f"runtime.gpus_per_worker={1 if gpu else 0}",
            f"runtime.device={'cuda' if gpu else 'cpu'}", f"train.global_batch_size={batch}", "train.unit=batches",
            "train.budget=1000000", "train.eval_interval=1000000", "train.log_interval=1000000",
            "tracking.wandb=off", "optim.warmup_steps=10"]
    if args.compile is not None:
        sets.append(f"runtime.compile={str(args.compile).lower()}")
    spec = load_spec(preset, sets)
    trainer = Trainer(spec, Run(runs, preset))
    trainer.restore()
    device = trainer.rt.device
    for _ in range(args.warmup):  # compile, allocator, cuDNN/cuBLAS heuristics
        trainer.train_batch()
    _sync(device)
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    batches, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        trainer.train_batch()
        batches += 1
    _sync(device)
    elapsed = time.perf_counter() - t0
    trainer.engine.check_finite()
    cfg, steps = trainer.model.cfg, trainer.objective.optimizer_steps_per_batch
    # A DIS batch finishes `batch` samples; a TRM-ACT batch takes every row one step of its N_sup.
    samples = batches * batch * (1 if preset.startswith("dis") else 1 / cfg.supervision_steps)
    return {"preset": preset, "batch": batch, "params": sum(p.numel() for p in trainer.model.parameters()),
            "samples_per_s": samples / elapsed, "batches": batches, "dtype": str(trainer.rt.dtype).removeprefix("torch."),
            "compile": trainer.rt.compile, "flops_per_s": batches * steps * cfg.step_flops(batch) / elapsed,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if gpu else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--seconds", type=float, default=60.0, help="timed training per preset")
    ap.add_argument("--warmup", type=int, default=5, help="untimed batches first (compilation)")
    ap.add_argument("--batch", type=int, help="rows per batch (default: the preset's global batch / 4)")
    ap.add_argument("--augmentations", type=int, default=8, help="ARC-1 augmentations to build")
    ap.add_argument("--canvas", type=int, default=30)
    ap.add_argument("--widths", nargs="+", choices=tuple(WIDTHS), default=list(WIDTHS))
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the model (default: trainer/device.py's choice, on for CUDA)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; use --device cpu for a dry run of the script")
    with tempfile.TemporaryDirectory(prefix="disco-gpu-") as tmp:
        data = str(Path(tmp, "data"))
        build_dataset(BuildConfig(sources=["arc1"], canvas=args.canvas, augmentations=args.augmentations), data,
                      progress=False)
        runs = Storage.of(str(Path(tmp, "runs")))
        results = {w: [measure(p, data, runs, args) for p in WIDTHS[w]] for w in args.widths}
    device = torch.device(args.device)
    peak, source = peak_flops(device)
    name = torch.cuda.get_device_name(device) if args.device == "cuda" else "cpu"
    print(f"device  {name}; MFU against {peak / 1e12:.1f} TFLOP/s ({source})")
    out = {"bench": "gpu_smoke", "date": time.strftime("%Y-%m-%d"), "device": name, "peak_tflops": round(peak / 1e12, 1)}
    for width, (dis, trm) in results.items():
        for r in (dis, trm):
            mem = f"{r['peak_memory_gib']:.1f} GiB" if r["peak_memory_gib"] is not None else "-"
            print(f"{width:8} {r['preset']:12} batch {r['batch']:4}  {r['params']:>10,} params  {r['dtype']:8} "
                  f"compile={r['compile']!s:5}  {r['samples_per_s']:9.1f} samples/s  {r['flops_per_s'] / 1e12:7.2f} "
                  f"TFLOP/s  MFU {100 * r['flops_per_s'] / peak:5.1f}%  peak memory {mem}")
            out |= {f"{r['preset']}_samples_per_s": round(r["samples_per_s"], 2),
                    f"{r['preset']}_mfu": round(r["flops_per_s"] / peak, 4),
                    f"{r['preset']}_peak_memory_gib": r["peak_memory_gib"] and round(r["peak_memory_gib"], 2)}
        ratio = dis["samples_per_s"] / trm["samples_per_s"]
        print(f"{width:8} TRM/DIS wall-clock cost per sample: {ratio:.1f}x")
        out[f"{width}_trm_dis_cost_ratio"] = round(ratio, 2)
    out |= {"dtype": results[args.widths[0]][0]["dtype"], "compile": results[args.widths[0]][0]["compile"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
