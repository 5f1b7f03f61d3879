"""The CUDA path, checked as far as a CPU allows: the training step never waits for the device,
bf16 compute, attention through scaled_dot_product_attention, and torch.compile. On a CUDA machine
the sync check also runs for real (torch.cuda.set_sync_debug_mode) and batches go through pinned
memory.

    .venv/bin/python -m pytest -q tests/test_gpu_path.py
"""

from __future__ import annotations

import pytest
import torch

from trainer.engine import Engine
from trainer.model import ModelConfig, TinyRecursiveModel
from trainer.objectives import ACTConfig, DISConfig, TorchBatch, build_objective
from trainer.optim import OptimConfig
from trainer.puzzle_emb import PuzzleEmbedding
from trainer.tracking import Averages

CUDA = torch.cuda.is_available()


def _setup(method: str, device: torch.device, optimizer: str = "adamw", dtype=torch.float32):
    cfg = ModelConfig(hidden_size=32, num_heads=4, puzzle_emb_ndim=32, puzzle_emb_len=1, seq_len=16, layers=1,
                      cycles=2, latent_steps=1, supervision_steps=3, timestep_embedding=method == "dis",
                      num_puzzle_identifiers=8)
    torch.manual_seed(0)
    model = TinyRecursiveModel(cfg).to(device)
    emb = PuzzleEmbedding(8, 32, device)
    # The objective's generator stays on the CPU for meta tensors (a meta generator does not exist).
    objective = build_objective(DISConfig() if method == "dis" else ACTConfig(), cfg, dtype,
                                device=None if device.type == "meta" else device)
    objective.prepare(model)
    engine = Engine(model, emb, objective, OptimConfig(optimizer=optimizer, warmup_steps=0, ema_rate=0.9,
                                                       grad_clip=1.0), total_steps=10)
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, 12, (4, 16), generator=gen)
    labels = torch.randint(0, 12, (4, 16), generator=gen)
    batch = TorchBatch(inputs.to(device), labels.to(device), torch.tensor([1, 2, 3, 4], device=device))
    return model, emb, objective, engine, batch


@pytest.mark.parametrize("optimizer", ["adamw", "adam_atan2"])
@pytest.mark.parametrize("method", ["dis", "trm"])
def test_the_training_step_never_waits_for_the_device(method, optimizer):
    """On the meta device a tensor has no values, so anything in the step that needs one on the host
    (`.item()`, Python branching on a tensor, `unique`, boolean-mask indexing) raises: the CPU-side
    proof that a CUDA step queues its work without synchronising."""
    _, _, objective, engine, batch = _setup(method, torch.device("meta"), optimizer)
    averages = Averages(objective.row_metrics)
    for _ in range(2):  # TRM-ACT: the second call continues rows in flight
        averages.add(objective.batch_metrics(engine.train_batch(batch)))
    assert engine.step == 2 * objective.optimizer_steps_per_batch


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device (the meta-device test covers the CPU side)")
@pytest.mark.parametrize("method", ["dis", "trm"])
def test_no_sync_on_cuda(method):
    _, _, objective, engine, batch = _setup(method, torch.device("cuda"), dtype=torch.bfloat16)
    averages = Averages(objective.row_metrics)
    averages.add(objective.batch_metrics(engine.train_batch(batch)))  # warm-up (allocations, lazy init)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        averages.add(objective.batch_metrics(engine.train_batch(batch)))
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_batches_are_copied_through_pinned_memory():
    import numpy as np

    from trainer.device import to_device

    t = to_device(np.arange(6, dtype=np.uint8), torch.device("cuda"))
    assert t.device.type == "cuda" and t.dtype == torch.uint8


@pytest.mark.parametrize("method", ["dis", "trm"])
def test_bf16_compute_on_cpu(method):
    model, emb, objective, engine, batch = _setup(method, torch.device("cpu"), dtype=torch.bfloat16)
    outs = engine.train_batch(batch)
    engine.check_finite()
    assert all(torch.isfinite(o["loss"]) for o in outs)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    if method == "trm":
        assert objective.rows.carry.answer.dtype == torch.bfloat16  # activations and carries in bf16
    pred = objective.predict(model, emb, batch)
    assert pred.preds.shape == (4, 16) and pred.confidence.dtype == torch.float64


def test_attention_runs_through_scaled_dot_product_attention(monkeypatch):
    import torch.nn.functional as F

    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    model, emb, objective, _, batch = _setup("dis", torch.device("cpu"))
    objective.predict(model, emb, batch)
    assert len(calls) == 3 * 2 * 2  # steps x cycles x (n + 1) block applications, one attention each


@pytest.mark.slow
def test_torch_compile_of_the_model_on_cpu():
    """One tiny compiled training step matches the eager one (inductor on CPU; about a minute)."""
    model, emb, objective, engine, batch = _setup("dis", torch.device("cpu"))
    eager = [float(o["loss"]) for o in engine.train_batch(batch)]
    model2, emb2, objective2, _, _ = _setup("dis", torch.device("cpu"))
    compiled = Engine(torch.compile(model2), emb2, objective2, OptimConfig(warmup_steps=0, ema_rate=0.9,
                                                                           grad_clip=1.0), total_steps=10)
    losses = [float(o["loss"]) for o in compiled.train_batch(batch)]
    assert losses == pytest.approx(eager, rel=1e-4)
