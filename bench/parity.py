"""disco against the reference code, on the same weights and real ARC batches, in one run.

    .venv/bin/python bench/parity.py --trm PATH/TinyRecursiveModels --dis PATH/Deep-Improvement-Supervision

The reference checkouts (SamsungSAILMontreal/TinyRecursiveModels and machinestein/Deep-Improvement-
Supervision) are imported from where they are — their `models`, `dataset` and `evaluators` packages —
never copied into disco. Two of their imports get stand-ins for this run, because the compared code
does not need them: `numba.njit` (the evaluator's crop runs as plain Python) and `argdantic` (the
dataset builder's command line). Both sides compute in float32 on one device.

Compared, with disco's weights copied into the reference models:
- TRM-ACT (TinyRecursiveReasoningModel_ACTV1 + ACTLossHead) against disco's ACT objective and DIS
  (the DIS repository's ACTV5 + ACTLossHeadV4) against disco's DIS objective: the logits of every
  supervision step, the first step's loss and every gradient (weights and puzzle table), and the
  weights after a batch of optimizer steps (AdamW and SignSGD at a constant rate; no halting
  exploration, so both sides are deterministic; DIS's target frames come from the same random draws);
- the ARC evaluator on one random prediction set (truths, wrong grids, empty crops, tied confidences);
- the time of one training step (a supervision step: forward, backward, both optimizers) each.
Target: disco's training step at least as fast as the reference's. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from arc_data.build import build_dataset
from arc_data.dataset import TEST, ArcDataset
from arc_data.grids import augment, encode
from arc_data.manifest import BuildConfig
from trainer.engine import Engine
from trainer.evaluate import ArcEvaluator
from trainer.model import ModelConfig, TinyRecursiveModel
from trainer.objectives import ACTConfig, DISConfig, TorchBatch, build_objective
from trainer.optim import OptimConfig
from trainer.puzzle_emb import PuzzleEmbedding

REFERENCE_PACKAGES = ("models", "dataset", "evaluators", "utils")
OPTIM = OptimConfig(lr=1e-3, warmup_steps=0, lr_min_ratio=1.0, weight_decay=0.1, puzzle_emb_lr=1e-2)


@contextmanager
def reference(path: Path):
    """The reference checkout's packages importable inside the block, forgotten after it."""
    sys.modules.setdefault("numba", types.SimpleNamespace(njit=lambda f=None, **k: f if callable(f) else (lambda g: g)))
    stub = types.ModuleType("argdantic")
    stub.ArgParser = type("ArgParser", (), {"command": lambda self, *a, **k: (lambda f: f), "__call__": lambda self: None})
    sys.modules.setdefault("argdantic", stub)
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        sys.path.remove(str(path))
        for name in [n for n in sys.modules if n.split(".")[0] in REFERENCE_PACKAGES]:
            del sys.modules[name]


def reference_config(cfg: ModelConfig, batch: int) -> dict:
    return dict(batch_size=batch, seq_len=cfg.seq_len, puzzle_emb_ndim=cfg.puzzle_emb_ndim,
                num_puzzle_identifiers=cfg.num_puzzle_identifiers, vocab_size=cfg.vocab_size, H_cycles=cfg.cycles,
                L_cycles=cfg.latent_steps, H_layers=0, L_layers=cfg.layers, hidden_size=cfg.hidden_size,
                expansion=cfg.expansion, num_heads=cfg.num_heads, pos_encodings=cfg.pos_encodings,
                rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, halt_max_steps=cfg.supervision_steps,
                halt_exploration_prob=0.0, forward_dtype="float32", puzzle_emb_len=cfg.puzzle_emb_len)


RENAMES = [(r"^tok_emb\.weight$", "embed_tokens.embedding_weight"), (r"^step_emb\.weight$", "timestep_embed.embedding_weight"),
           (r"^answer_init$", "H_init"), (r"^latent_init$", "L_init"),
           (r"^blocks\.(\d+)\.mixer\.qkv\.", r"L_level.layers.\1.self_attn.qkv_proj."),
           (r"^blocks\.(\d+)\.mixer\.o\.", r"L_level.layers.\1.self_attn.o_proj."),
           (r"^blocks\.(\d+)\.mlp\.gate_up\.", r"L_level.layers.\1.mlp.gate_up_proj."),
           (r"^blocks\.(\d+)\.mlp\.down\.", r"L_level.layers.\1.mlp.down_proj.")]


def reference_name(name: str) -> str:
    for pattern, repl in RENAMES:
        name = re.sub(pattern, repl, name)
    return name


def copy_weights(model: TinyRecursiveModel, emb: PuzzleEmbedding, inner) -> None:
    """disco's weights, buffers and puzzle table into the reference's inner model."""
    state = {reference_name(k): v for k, v in model.state_dict().items()}
    missing, unexpected = inner.load_state_dict(state, strict=False)
    assert not unexpected and all("puzzle_emb" in k for k in missing), (missing, unexpected)
    with torch.no_grad():
        inner.puzzle_emb.weights.copy_(emb.weight)


def reference_params(inner) -> dict[str, torch.Tensor]:
    return dict(inner.named_parameters())


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def disco_side(method: str, cfg: ModelConfig, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    model = TinyRecursiveModel(cfg).to(device)
    emb = PuzzleEmbedding(cfg.num_puzzle_identifiers, cfg.puzzle_emb_ndim, device)
    with torch.no_grad():
        emb.weight.normal_(0, 0.02)  # a trained-looking table, so its gradients and updates matter
    objective = build_objective(DISConfig() if method == "dis" else ACTConfig(halt_exploration_prob=0.0), cfg,
                                device=device)
    objective.prepare(model)
    return model, emb, objective


def reference_side(method: str, cfg: ModelConfig, batch_size: int, device: torch.device):
    if method == "dis":
        from models.losses import ACTLossHeadV4 as Head
        from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV5 as Wrapper
    else:
        from models.losses import ACTLossHead as Head
        from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1 as Wrapper
    from models.sparse_embedding import CastedSparseEmbeddingSignSGD_Distributed

    head = Head(Wrapper(reference_config(cfg, batch_size)), "stablemax_cross_entropy").to(device)
    inner = head.model.inner
    adamw = torch.optim.AdamW([p for n, p in inner.named_parameters() if p.requires_grad and
                               not (method == "dis" and n.startswith("q_head"))],  # DIS never trains it
                              lr=OPTIM.lr, betas=OPTIM.betas, weight_decay=OPTIM.weight_decay)
    signsgd = CastedSparseEmbeddingSignSGD_Distributed(inner.puzzle_emb.buffers(), world_size=1,
                                                       lr=OPTIM.puzzle_emb_lr, weight_decay=OPTIM.puzzle_emb_weight_decay)
    return head, adamw, signsgd


def as_reference_batch(batch: TorchBatch) -> dict[str, torch.Tensor]:
    return {"inputs": batch.inputs.int(), "labels": batch.labels.int(), "puzzle_identifiers": batch.puzzle_identifiers.int()}


def compare_method(method: str, cfg: ModelConfig, batch: TorchBatch, device: torch.device, timing_steps: int) -> dict:
    b = batch.inputs.shape[0]
    model, emb, objective = disco_side(method, cfg, device)
    head, adamw, signsgd = reference_side(method, cfg, b, device)
    copy_weights(model, emb, head.model.inner)
    ref_batch = as_reference_batch(batch)
    out = {}

    # 1. Logits of every supervision step (evaluation mode, no gradient).
    model.eval()
    head.eval()
    with torch.no_grad():
        carry, ref_carry, tokens, diffs = model.initial_carry(b, torch.float32), head.initial_carry(ref_batch), batch.inputs, []
        for s in range(1, cfg.supervision_steps + 1):
            step = torch.full((b,), s, device=device) if method == "dis" else None
            carry, logits, _ = model(carry, tokens, emb(batch.puzzle_identifiers, train=False), step)
            ref_carry, ref_out = head.model(carry=ref_carry, batch=ref_batch)
            diffs.append(max_rel(logits, ref_out["logits"]))
            tokens = logits.argmax(-1) if method == "dis" else tokens
    out["logits_max_rel_diff"] = max(diffs)

    # 2. The first training step: loss and every gradient. The DIS frames of both sides come from
    #    the same draws: the reference draws once in initial_carry, then once per forward.
    model.train()
    head.train()
    rng = torch.cuda.get_rng_state if device.type == "cuda" else torch.get_rng_state
    torch.manual_seed(1)
    ref_carry = head.initial_carry(ref_batch)
    objective.generator.set_state(rng())
    first = next(objective.train_steps(model, emb, batch))
    first.loss.backward()
    ref_carry, ref_loss, *_ = head(return_keys=[], carry=ref_carry, batch=ref_batch)
    (ref_loss / b).backward()
    out["loss"], out["reference_loss"] = float(first.loss.detach()), float(ref_loss.detach() / b)
    ref_params = reference_params(head.model.inner)
    grads = [max_rel(p.grad, ref_params[reference_name(n)].grad) for n, p in model.named_parameters()
             if p.grad is not None]
    table_grad = emb._pending[-1][1].grad  # the rows this step looked up
    grads.append(max_rel(table_grad, head.model.inner.puzzle_emb.local_weights.grad))
    out["grad_max_rel_diff"] = max(grads)

    # 3. A batch of optimizer steps from the same start (fresh copies of both sides).
    model, emb, objective = disco_side(method, cfg, device)
    head, adamw, signsgd = reference_side(method, cfg, b, device)
    copy_weights(model, emb, head.model.inner)
    engine = Engine(model, emb, objective, OPTIM, total_steps=10**6)
    torch.manual_seed(2)
    ref_carry = head.initial_carry(ref_batch)
    objective.generator.set_state(rng())
    steps = cfg.supervision_steps  # DIS: one batch; TRM-ACT: as many batches of one step each
    _timed(lambda: engine.train_batch(batch), device, reps=steps // objective.optimizer_steps_per_batch)
    ref_carry, _ = _reference_steps(head, adamw, signsgd, ref_carry, ref_batch, steps, device)
    ref_params = reference_params(head.model.inner)
    out["weights_max_rel_diff"] = max([max_rel(p.detach(), ref_params[reference_name(n)].detach())
                                       for n, p in model.named_parameters()] +
                                      [max_rel(emb.weight, head.model.inner.puzzle_emb.weights)])
    out["optimizer_steps"] = steps

    # 4. Time per training step, after those warm-up steps, on the same device and shapes.
    batches = max(1, timing_steps // objective.optimizer_steps_per_batch)
    timed = _timed(lambda: engine.train_batch(batch), device, reps=batches)
    out["disco_step_ms"] = 1e3 * timed / (batches * objective.optimizer_steps_per_batch)
    ref_steps = batches * objective.optimizer_steps_per_batch
    _, ref_time = _reference_steps(head, adamw, signsgd, ref_carry, ref_batch, ref_steps, device)
    out["reference_step_ms"] = 1e3 * ref_time / ref_steps
    return out


def _timed(fn, device: torch.device, reps: int) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return time.perf_counter() - t0


def _reference_steps(head, adamw, signsgd, carry, batch, steps: int, device: torch.device):
    """The reference training loop's step: loss / global batch, backward, both optimizers."""
    b = batch["inputs"].shape[0]
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        carry, loss, *_ = head(return_keys=[], carry=carry, batch=batch)
        (loss / b).backward()
        adamw.step()
        signsgd.step()
        adamw.zero_grad(set_to_none=True)
        signsgd.zero_grad()
    _sync(device)
    return carry, time.perf_counter() - t0


def compare_evaluator(ds: ArcDataset, tmp: Path, seed: int = 0) -> dict:
    """pass@k of one random prediction set under both evaluators."""
    import torch.distributed as dist
    from dataset.common import PuzzleDatasetMetadata
    from evaluators.arc import ARC

    names = ["<blank>"] + [ds.name(i) for i in range(1, ds.num_identifiers)]
    (tmp / "identifiers.json").write_text(json.dumps(names))
    test_puzzles = {}
    for t in np.flatnonzero(ds.n_test):
        pairs = sorted(ds.examples_of(t, TEST), key=lambda e: ds.ex_pair[e])
        test_puzzles[ds.task_ids[t]] = {"train": [], "test": [{"input": ds.grid(int(e), "input").tolist(),
                                                              "output": ds.grid(int(e), "output").tolist()} for e in pairs]}
    (tmp / "test_puzzles.json").write_text(json.dumps(test_puzzles))
    meta = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=12, seq_len=ds.seq_len,
                                 num_puzzle_identifiers=ds.num_identifiers, total_groups=1, mean_puzzle_examples=1,
                                 total_puzzles=1, sets=["all"])
    versions, examples = ds.test_rows()
    inputs, _ = ds.render_rows(versions, examples, None)
    rng = np.random.default_rng(seed)
    preds, kinds = [], rng.choice(3, size=versions.size, p=[0.5, 0.3, 0.2])
    for v, e, kind in zip(versions, examples, kinds, strict=True):
        _, tid, cmap = ds.version_of(int(v) + 1)
        truth = ds.grid(int(e), "output")
        wrong = truth.copy()
        wrong[0, 0] = (wrong[0, 0] + 1 + rng.integers(2)) % 10
        preds.append(np.zeros(ds.seq_len, np.uint8) if kind == 2 else
                     encode(augment(truth if kind == 0 else wrong, tid, cmap), canvas_side=ds.canvas))
    preds = np.stack(preds)
    confidence = np.round(rng.random(versions.size), 1).clip(0.05, 0.95)  # ties on purpose
    ours = ArcEvaluator(ds)
    ours.update(examples, versions + 1, preds, confidence)
    mine = ours.result().metrics
    if not dist.is_initialized():  # the TRM evaluator gathers even in one process
        dist.init_process_group("gloo", init_method=f"file://{tmp / 'store'}", rank=0, world_size=1)
    ref = ARC(str(tmp), meta)
    logits = torch.from_numpy(np.log(confidence / (1 - confidence)))
    ref.update_batch({"inputs": torch.from_numpy(inputs), "puzzle_identifiers": torch.from_numpy(versions + 1)},
                     {"preds": torch.from_numpy(preds), "q_halt_logits": logits})
    theirs = ref.result(None, rank=0, world_size=1)
    diffs = {k: abs(mine[f"pass@{k}"] - theirs[f"ARC/pass@{k}"]) for k in (1, 2, 5, 10, 100, 1000)}
    return {"evaluator_pass_max_abs_diff": max(diffs.values()), "pass@1": mine["pass@1"], "pass@2": mine["pass@2"],
            "reference_pass@2": theirs["ARC/pass@2"], "predictions": int(versions.size)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trm", type=Path, required=True, help="checkout of SamsungSAILMontreal/TinyRecursiveModels")
    ap.add_argument("--dis", type=Path, required=True, help="checkout of machinestein/Deep-Improvement-Supervision")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--timing-steps", type=int, default=24, help="training steps timed per implementation")
    args = ap.parse_args()
    for path in (args.trm, args.dis):
        if not (path / "models" / "recursive_reasoning" / "trm.py").is_file():
            raise SystemExit(f"{path}: not a checkout of the reference (no models/recursive_reasoning/trm.py)")
    torch.set_num_threads(1)
    device = torch.device(args.device)
    results = {}
    with tempfile.TemporaryDirectory(prefix="disco-parity-") as tmp:
        build_dataset(BuildConfig(sources=["arc1"], max_grid=12, tasks=8, augmentations=4, seed=0), f"{tmp}/d",
                      progress=False)
        ds = ArcDataset(f"{tmp}/d")  # the reference's 30x30 canvas (its crop assumes it)
        batch = TorchBatch.from_numpy(next(iter(ds.train_sampler(args.batch, seed=0))), device)
        shape = dict(hidden_size=args.hidden, num_heads=4, expansion=4.0, layers=1, seq_len=ds.seq_len,
                     puzzle_emb_ndim=args.hidden, puzzle_emb_len=16, num_puzzle_identifiers=ds.num_identifiers)
        with reference(args.trm):
            results["trm"] = compare_method("trm", ModelConfig(**shape, cycles=2, latent_steps=2, supervision_steps=4),
                                            batch, device, args.timing_steps)
            results["evaluator"] = compare_evaluator(ds, Path(tmp))
        with reference(args.dis):
            results["dis"] = compare_method("dis", ModelConfig(**shape, cycles=1, latent_steps=2, supervision_steps=6,
                                                               timestep_embedding=True), batch, device, args.timing_steps)
    print(f"device {device}, width {args.hidden}, batch {args.batch}, 30x30 canvas, float32")
    for method in ("trm", "dis"):
        r = results[method]
        print(f"{method.upper():4} logits per step max rel diff {r['logits_max_rel_diff']:.2e}  loss {r['loss']:.6f} vs "
              f"{r['reference_loss']:.6f}  grads max rel diff {r['grad_max_rel_diff']:.2e}  weights after "
              f"{r['optimizer_steps']} steps max rel diff {r['weights_max_rel_diff']:.2e}")
        print(f"{'':4} training step: disco {r['disco_step_ms']:.1f} ms, reference {r['reference_step_ms']:.1f} ms "
              f"(disco {r['reference_step_ms'] / r['disco_step_ms']:.2f}x as fast; target >= 1)")
    e = results["evaluator"]
    print(f"evaluator: {e['predictions']} predictions, pass@k max abs diff {e['evaluator_pass_max_abs_diff']} "
          f"(pass@2 {e['pass@2']:.4f} vs {e['reference_pass@2']:.4f})")
    flat = {"bench": "parity", "date": time.strftime("%Y-%m-%d"), "device": str(device)}
    for method in ("trm", "dis"):
        flat |= {f"{method}_{k}": (round(v, 9) if isinstance(v, float) and not math.isnan(v) else v)
                 for k, v in results[method].items()}
        flat[f"{method}_speed_ratio"] = round(results[method]["reference_step_ms"] / results[method]["disco_step_ms"], 3)
    flat |= {k: results["evaluator"][k] for k in ("evaluator_pass_max_abs_diff", "predictions")}
    print(json.dumps(flat))


if __name__ == "__main__":
    main()
