"""Training cost per sample: DIS vs TRM-ACT at the same width, on the same data, in one run.

    .venv/bin/python bench/step_cost.py [--canvas 10] [--hidden 256] [--batch 16] [--seconds 20] [--device auto]

Paper configs at compact width (D=256, 1 layer): DIS T=1, n=2, 6 steps (18 block applications per
sample); TRM T=3, n=6, 16 steps with halting (336). Samples/s counts samples that completed all
their supervision steps; the TRM rows run all 16 steps here because a fresh Q head never halts
early (that is also the reference's early-training regime). Achieved GFLOP/s uses an analytic FLOP
count of the matmuls (forward, plus 2x for backward where gradients flow) against an fp32 matmul
peak measured in the same process. Targets (2-core CPU): TRM/DIS cost per sample >= 8x; >= 40% of
the matmul peak. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from arc_data.build import build_dataset  # noqa: E402
from arc_data.dataset import ArcDataset  # noqa: E402
from arc_data.manifest import BuildConfig  # noqa: E402
from trainer.device import pick_runtime, set_cpu_threads  # noqa: E402
from trainer.engine import Engine  # noqa: E402
from trainer.model import ModelConfig, TinyRecursiveModel  # noqa: E402
from trainer.objectives import ACTConfig, DISConfig, TorchBatch, build_objective  # noqa: E402
from trainer.optim import OptimConfig  # noqa: E402
from trainer.puzzle_emb import PuzzleEmbedding  # noqa: E402


def matmul_peak(runtime, dtype: torch.dtype, n: int = 1024, seconds: float = 3.0) -> float:
    device = runtime.device
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    runtime.synchronize()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    runtime.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def measure(method: str, ds: ArcDataset, hidden: int, batch: int, seconds: float, runtime) -> dict:
    dis = method == "dis"
    cfg = ModelConfig(hidden_size=hidden, num_heads=8, layers=1, seq_len=ds.seq_len, puzzle_emb_ndim=hidden,
                      num_puzzle_identifiers=ds.num_identifiers, timestep_embedding=dis,
                      cycles=1 if dis else 3, latent_steps=2 if dis else 6, supervision_steps=6 if dis else 16)
    torch.manual_seed(0)
    model = TinyRecursiveModel(cfg).to(runtime.device)
    emb = PuzzleEmbedding(ds.num_identifiers, hidden, runtime.device)
    objective = build_objective(DISConfig() if dis else ACTConfig(halt_exploration_prob=0.0), cfg, runtime.dtype,
                                device=runtime.device)
    objective.prepare(model)
    engine = Engine(torch.compile(model) if runtime.compile else model, emb, objective,
                    OptimConfig(warmup_steps=10), total_steps=10**6)
    batches = iter(ds.train_sampler(batch, seed=0))

    def run_one() -> int:
        """Train one loader batch; returns optimizer steps taken."""
        return len(engine.train_batch(TorchBatch.from_numpy(next(batches), runtime.device)))

    for _ in range(2 if dis else 4):  # warm-up (and compile)
        run_one()
    runtime.synchronize()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < cfg.supervision_steps:
        steps += run_one()
    runtime.synchronize()
    elapsed = time.perf_counter() - t0
    # Each optimizer step advances `batch` rows by one supervision step.
    samples = steps * batch / cfg.supervision_steps
    grad, nograd = cfg.applications_per_step
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "samples_per_s": samples / elapsed,
        "block_apps_per_sample": cfg.supervision_steps * (grad + nograd),
        "gflops": steps * cfg.step_flops(batch) / elapsed / 1e9,
        "steps": steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--canvas", type=int, default=10, help="data canvas side (30 = full ARC sequences)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA default: on)")
    args = ap.parse_args()
    runtime = pick_runtime(args.device, compile=True if args.compile else None)
    threads = set_cpu_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        build_dataset(BuildConfig(sources=["arc1"], canvas=args.canvas, augmentations=20, subsets=["training"]),
                      f"{tmp}/d", progress=False)
        ds = ArcDataset(f"{tmp}/d")
        peak = matmul_peak(runtime, torch.float32)
        dis = measure("dis", ds, args.hidden, args.batch, args.seconds, runtime)
        trm = measure("trm", ds, args.hidden, args.batch, args.seconds, runtime)
    ratio = dis["samples_per_s"] / trm["samples_per_s"]
    print(f"device         {runtime.device} {runtime.dtype} compile={runtime.compile} threads={threads}")
    print(f"data           ARC-1 training, {args.canvas}x{args.canvas} canvas ({ds.seq_len} tokens + 16 prefix), "
          f"batch {args.batch}, width {args.hidden}, 1 layer")
    for name, r in (("DIS", dis), ("TRM-ACT", trm)):
        print(f"{name:<14} {r['params']:,} params  {r['block_apps_per_sample']} block apps/sample  "
              f"{r['samples_per_s']:.2f} samples/s  {r['gflops']:.1f} GFLOP/s ({r['steps']} optimizer steps)")
    print(f"cost ratio     TRM/DIS wall-clock per sample = {ratio:.1f}x (target >= 8x)")
    print(f"matmul peak    {peak:.1f} GFLOP/s fp32 (1024^3); DIS reaches {100 * dis['gflops'] / peak:.0f}%, "
          f"TRM {100 * trm['gflops'] / peak:.0f}% (target >= 40%)")
    print(json.dumps({
        "dis_samples_per_s": round(dis["samples_per_s"], 3), "trm_samples_per_s": round(trm["samples_per_s"], 3),
        "cost_ratio": round(ratio, 2), "dis_block_apps_per_sample": dis["block_apps_per_sample"],
        "trm_block_apps_per_sample": trm["block_apps_per_sample"], "achieved_gflops": round(dis["gflops"], 2),
        "trm_achieved_gflops": round(trm["gflops"], 2), "matmul_peak_gflops": round(peak, 2),
        "device": str(runtime.device), "canvas": args.canvas, "hidden": args.hidden, "batch": args.batch,
    }))


if __name__ == "__main__":
    main()
