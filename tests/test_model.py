"""The network: parameter counts pinned to the spec's table, shapes, recursion, initial states."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from trainer.model import Carry, ModelConfig, TinyRecursiveModel, trunc_normal_

# (config, parameters counted by model.parameters(), docs/reference.md §3.6)
PARAM_TABLE = [
    ("trm_default", dict(hidden_size=512, layers=2, cycles=3, latent_steps=6, supervision_steps=16), 6_829_058),
    ("dis_compact", dict(hidden_size=256, puzzle_emb_ndim=256, layers=1, cycles=1, latent_steps=2,
                         supervision_steps=6, timestep_embedding=True), 860_674),
    ("dis_medium", dict(hidden_size=512, layers=2, cycles=1, latent_steps=2, supervision_steps=6,
                        timestep_embedding=True), 6_833_154),
    ("trm_compact_no_timestep", dict(hidden_size=256, puzzle_emb_ndim=256, layers=1, cycles=1, latent_steps=2),
     863_234 - 4_608),
    ("sudoku_mlp_t", dict(vocab_size=11, seq_len=81, mixer="mlp_t", pos_encodings="none"), 5_028_866),
]


@pytest.mark.parametrize("name,kwargs,expected", PARAM_TABLE, ids=[p[0] for p in PARAM_TABLE])
def test_parameter_counts_match_spec(name, kwargs, expected):
    model = TinyRecursiveModel(ModelConfig(**kwargs))
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("cycles,latent,steps,expected", [(3, 6, 16, 336), (1, 2, 6, 18)], ids=["trm", "dis"])
def test_block_applications_are_applied(cycles, latent, steps, expected):
    """The paper's N_sup·T·(n+1), counted on the block stack during real supervision steps."""
    cfg = ModelConfig(hidden_size=16, num_heads=2, puzzle_emb_ndim=16, puzzle_emb_len=1, seq_len=4, layers=2,
                      cycles=cycles, latent_steps=latent, supervision_steps=steps)
    model = TinyRecursiveModel(cfg)
    calls = []
    model.blocks[0].register_forward_hook(lambda module, args, output: calls.append(torch.is_grad_enabled()))
    carry = model.initial_carry(2, torch.float32)
    for _ in range(steps):
        carry, logits, _ = model(carry, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 16))
    assert len(calls) == expected == steps * sum(cfg.applications_per_step)
    assert calls.count(False) == steps * cfg.applications_per_step[1]  # the T-1 cycles run without grad


def test_forward_shapes_grad_path_and_detached_carry():
    cfg = ModelConfig(hidden_size=32, num_heads=4, puzzle_emb_ndim=32, puzzle_emb_len=2, seq_len=9,
                      layers=1, cycles=2, latent_steps=2, supervision_steps=3, timestep_embedding=True)
    model = TinyRecursiveModel(cfg)
    tokens = torch.randint(0, 12, (3, 9))
    x = model.embed(tokens, torch.randn(3, 32), torch.tensor([1, 2, 3]), torch.float32)
    assert x.shape == (3, 11, 32)
    carry = model.initial_carry(3, torch.float32)
    new, logits, q = model(carry, tokens, torch.randn(3, 32), torch.tensor([1, 2, 3]))
    assert logits.shape == (3, 9, 12) and q.shape == (3, 2) and q.dtype == torch.float32
    assert not new.answer.requires_grad and not new.latent.requires_grad
    logits.sum().backward()
    assert model.blocks[0].mlp.down.weight.grad is not None
    assert torch.allclose(q, torch.tensor(-5.0))  # q head starts at weight 0, bias -5
    # Resetting rows restores the fixed initial states only there.
    reset = model.reset(Carry(new.answer, new.latent), torch.tensor([True, False, False]))
    assert torch.equal(reset.answer[0], carry.answer[0]) and torch.equal(reset.answer[1], new.answer[1])


def test_invalid_configs_name_the_field():
    with pytest.raises(ValidationError, match="divisible by num_heads"):
        ModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValidationError, match="puzzle_emb_len must be 0"):
        ModelConfig(puzzle_emb_ndim=0, puzzle_emb_len=16)
    with pytest.raises(ValidationError, match="does not fit"):
        ModelConfig(hidden_size=64, num_heads=4, puzzle_emb_ndim=512, puzzle_emb_len=2)
    with pytest.raises(ValidationError, match="latent_steps"):
        ModelConfig(latent_steps=0)


def test_truncated_normal_has_requested_std():
    t = trunc_normal_(torch.empty(200_000), 0.5)
    assert abs(t.std().item() - 0.5) < 0.01 and t.abs().max() <= 2 * 0.5 * 1.14


def test_device_and_backend_come_from_one_decision(monkeypatch):
    from trainer.config import RuntimeConfig
    from trainer.device import backend_for, pick_runtime, set_cpu_threads, worker_runtime

    cpu = RuntimeConfig()
    rt = worker_runtime(cpu)  # no GPU reserved: CPU and gloo, on any machine
    assert (rt.device.type, rt.dtype, rt.compile, backend_for(cpu)) == ("cpu", torch.float32, False, "gloo")
    assert backend_for(RuntimeConfig(gpus_per_worker=1)) == "nccl"
    with pytest.raises(ValidationError, match="runtime.device=cpu with runtime.gpus_per_worker=1"):
        RuntimeConfig(device="cpu", gpus_per_worker=1)
    with pytest.raises(ValidationError, match="runtime.device=cuda needs runtime.gpus_per_worker > 0"):
        RuntimeConfig(device="cuda")
    if torch.cuda.is_available():
        assert pick_runtime("cuda").device.type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="CUDA was requested"):
            pick_runtime("cuda")
    assert pick_runtime("cpu", precision="bf16").dtype == torch.bfloat16
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert set_cpu_threads(1) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert set_cpu_threads(1) == 2
    finally:
        torch.set_num_threads(before)


def test_flops_from_the_shape_match_torch_s_own_count():
    """block_flops/step_flops (the compute figures of benchmarks and budgets) against PyTorch's FLOP
    counter on a real forward and backward. The token-mixing MLP variant is used because the
    counter does not see the CPU attention kernel; the formula's attention terms are standard."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = ModelConfig(hidden_size=64, num_heads=4, puzzle_emb_ndim=64, puzzle_emb_len=2, seq_len=16, layers=2,
                      mixer="mlp_t", pos_encodings="none")
    model = TinyRecursiveModel(cfg)
    h = torch.randn(3, cfg.total_len, 64)
    with FlopCounterMode(display=False) as counted:
        model._reason(h, h)
    assert counted.get_total_flops() == cfg.block_flops(3)
    with FlopCounterMode(display=False) as counted:
        _, logits, q = model(model.initial_carry(3, torch.float32), torch.zeros(3, 16, dtype=torch.long),
                             torch.zeros(3, 64))
        (logits.sum() + q.sum()).backward()
    assert counted.get_total_flops() == pytest.approx(cfg.step_flops(3), rel=1e-5)
