"""DIS frames and losses, ACT halting, the puzzle table's SignSGD, optimisers, the NaN guard."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.engine import Engine
from trainer.losses import IGNORE, softmax_cross_entropy, stablemax_cross_entropy
from trainer.model import ModelConfig, TinyRecursiveModel
from trainer.objectives import ACTConfig, ACTObjective, DISConfig, DISObjective, RowNoise, TorchBatch
from trainer.objectives.frames import diffusion_frames, revealed_counts
from trainer.optim import AdamAtan2, NonFiniteLoss, OptimConfig, lr_factor
from trainer.puzzle_emb import PuzzleEmbedding

SCHEDULES = ["linear", "cosine", "power(2)", "power(0.5)"]


def _pair(b=6, length=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, 12, (b, length), generator=g)
    labels = torch.randint(1, 12, (b, length), generator=g)
    labels[:, length // 2 :] = IGNORE  # a smaller output: ignored tail
    labels[:, :5] = inputs[:, :5].clamp_min(1)  # some cells already right
    return inputs, labels


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("diff", ["reference", "supervised"])
def test_frames_nested_monotone_exact_endpoints(schedule, diff):
    inputs, labels = _pair()
    frames = diffusion_frames(inputs, labels, 6, schedule, diff, torch.Generator().manual_seed(1))
    assert frames.shape == (6, 7, 40)
    assert torch.equal(frames[:, -1], labels)
    if diff == "reference":
        assert torch.equal(frames[:, 0], inputs)
    else:  # ignored cells are ignored in every frame; supervised cells start from the input
        sup = labels != IGNORE
        assert torch.equal(frames[:, 0][sup], inputs[sup]) and (frames[:, :, ~sup[0]] == IGNORE).all()
    revealed = frames == labels[:, None, :]
    changed = inputs != labels
    dist = ((frames != labels[:, None, :]) & changed[:, None, :]).sum(-1)
    assert (dist[:, 1:] <= dist[:, :-1]).all()  # Hamming distance to the label never increases
    assert ((revealed[:, :-1] & changed[:, None]) <= (revealed[:, 1:] & changed[:, None])).all()  # nested


def test_revealed_counts_schedules():
    n = torch.tensor([10, 0, 7])
    assert revealed_counts("linear", 6, n)[0].tolist() == [0, 1, 3, 5, 6, 8, 10]  # the spec's example
    for s in SCHEDULES:
        c = revealed_counts(s, 6, n)
        assert (c[:, 0] == 0).all() and torch.equal(c[:, -1], n) and (c.diff(dim=1) >= 0).all()
    assert revealed_counts("power(2)", 6, n)[0, 3] < revealed_counts("linear", 6, n)[0, 3]
    with pytest.raises(ValueError, match="unknown DIS schedule"):
        DISConfig(schedule="power(-1)")


def test_cross_entropies_share_a_signature():
    logits = torch.randn(2, 5, 12)
    labels = torch.tensor([[1, 2, IGNORE, 3, 4], [IGNORE] * 5])
    for fn in (stablemax_cross_entropy, softmax_cross_entropy):
        loss = fn(logits, labels)
        assert loss.shape == (2, 5) and (loss[labels == IGNORE] == 0).all() and (loss[labels != IGNORE] > 0).all()
    assert stablemax_cross_entropy(logits, labels).dtype == torch.float64


def _tiny(steps=6, cycles=1, latent=2, timestep=True, seq=16):
    cfg = ModelConfig(hidden_size=32, num_heads=4, puzzle_emb_ndim=32, puzzle_emb_len=1, seq_len=seq, layers=1,
                      cycles=cycles, latent_steps=latent, supervision_steps=steps, timestep_embedding=timestep,
                      num_puzzle_identifiers=8)
    torch.manual_seed(0)
    return TinyRecursiveModel(cfg), PuzzleEmbedding(8, 32, torch.device("cpu"))


def test_dis_step_s_targets_frame_s():
    model, emb = _tiny()
    inputs, labels = _pair(b=4, length=16)
    batch = TorchBatch(inputs, labels, torch.tensor([1, 2, 3, 4]))
    obj = DISObjective(DISConfig(), model.cfg, noise=RowNoise(3))
    frames = diffusion_frames(inputs, labels, 6, "linear", "reference", RowNoise(3).next())
    outs = list(obj.train_steps(model, emb, batch))
    assert len(outs) == 6 and all(f"step{s}_target_accuracy" in o.metrics for s, o in enumerate(outs, start=1))
    assert outs[-1].metrics["block_apps_per_sample"] == 18
    pictured = diffusion_frames(inputs, labels, 6, "linear", "reference", torch.Generator().manual_seed(3))
    assert torch.equal(obj.target_frames(inputs, labels, seed=3), pictured)  # the frames `disco predict` draws
    # Recompute step 1's loss against frame 1 by hand (same weights, no optimizer step in between).
    from trainer.losses import row_mean_loss

    carry = model.initial_carry(4, torch.float32)
    _, logits, _ = model(carry, inputs, emb.weight[batch.puzzle_identifiers], torch.full((4,), 1))
    expected = row_mean_loss(stablemax_cross_entropy(logits, frames[:, 1]), frames[:, 1])
    assert torch.allclose(outs[0].loss, expected.float())
    other = row_mean_loss(stablemax_cross_entropy(logits, labels), labels)
    assert not torch.allclose(outs[0].loss, other.float())


def test_act_halting_and_exploration():
    model, emb = _tiny(steps=4, cycles=2, latent=2, timestep=False)
    inputs, labels = _pair(b=8, length=16)
    batch = TorchBatch(inputs, labels, torch.arange(8))
    # q_halt < 0 at init (bias -5): nobody halts before N_sup = 4 without exploration.
    obj = ACTObjective(ACTConfig(halt_exploration_prob=0.0), model.cfg)
    model.train()
    for call in range(1, 5):
        out = next(obj.train_steps(model, emb, batch))
        assert (obj.rows.steps == call).all()
        assert obj.rows.halted.all() == (call == 4)
    assert out.metrics["block_apps_per_sample"] == 4 * 2 * 3  # N_sup * T * (n+1)
    # A confident Q head halts every row after one step ...
    with torch.no_grad():
        model.q_head.bias.fill_(5.0)
    obj = ACTObjective(ACTConfig(halt_exploration_prob=0.0), model.cfg)
    next(obj.train_steps(model, emb, batch))
    assert obj.rows.halted.all() and (obj.rows.steps == 1).all()
    # ... unless exploration forces at least 2 steps; eval mode never halts early.
    obj = ACTObjective(ACTConfig(halt_exploration_prob=1.0), model.cfg)
    next(obj.train_steps(model, emb, batch))
    assert not obj.rows.halted.any()
    model.eval()
    obj = ACTObjective(ACTConfig(halt_exploration_prob=0.0), model.cfg)
    next(obj.train_steps(model, emb, batch))
    assert not obj.rows.halted.any()
    pred = obj.predict(model, emb, batch)
    assert len(pred.step_preds) == 4 and pred.applications == 24 and (pred.confidence > 0.99).all()
    assert len(pred.step_halts) == 4 and torch.equal(pred.step_halts[-1], pred.confidence)


def test_signsgd_updates_only_touched_rows_and_sums_duplicates():
    emb = PuzzleEmbedding(6, 3, torch.device("cpu"))
    rows = emb(torch.tensor([1, 1, 4]), train=True)
    (rows * torch.tensor([[1.0, -1, 0], [-3, 0, 0], [0.5, 0.5, 0.5]])).sum().backward()
    emb.step(lr=0.1, weight_decay=0.0)
    assert torch.allclose(emb.weight[1], torch.tensor([0.1, 0.1, 0.0]))  # summed grad (-2, -1, 0) -> -sign
    assert torch.allclose(emb.weight[4], torch.tensor([-0.1, -0.1, -0.1]))
    assert (emb.weight[[0, 2, 3, 5]] == 0).all()
    before = emb.weight.data_ptr()
    emb(torch.tensor([4]), train=True).sum().backward()
    emb.step(lr=0.1, weight_decay=0.5)  # decoupled decay: w(1 - lr*wd) - lr*sign(g)
    assert torch.allclose(emb.weight[4], torch.tensor([-0.1 * 0.95 - 0.1] * 3))
    assert emb.weight.data_ptr() == before  # updated in place, never copied


def test_adam_atan2_matches_formula_and_schedule():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdamAtan2([p], lr=0.1, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.tensor([0.5, -0.25])
    p.grad = g.clone()
    opt.step()
    m, v = 0.1 * g, 0.05 * g * g
    expected = torch.tensor([1.0, -2.0]) * (1 - 0.01) - 0.1 / 0.1 * torch.atan2(m, v.sqrt() / math.sqrt(0.05))
    assert torch.allclose(p.detach(), expected)
    assert lr_factor(1, 2000, 10_000, 1.0) == 1 / 2000 and lr_factor(5000, 2000, 10_000, 1.0) == 1.0
    assert lr_factor(10_000, 2000, 10_000, 0.1) == pytest.approx(0.1)
    assert lr_factor(6000, 2000, 10_000, 0.0) == pytest.approx(0.5)


def test_a_non_finite_loss_is_reported_at_the_next_check():
    """The step records it on the device (no host sync); `check_finite` names the first bad step."""
    model, emb = _tiny()
    inputs, labels = _pair(b=2, length=16)
    engine = Engine(model, emb, DISObjective(DISConfig(), model.cfg), OptimConfig(warmup_steps=0), total_steps=10)
    batch = TorchBatch(inputs, labels, torch.tensor([1, 2]))
    engine.train_batch(batch)
    engine.check_finite()  # six finite DIS steps
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    engine.train_batch(batch)
    with pytest.raises(NonFiniteLoss, match="non-finite loss at optimizer step 7"):
        engine.check_finite()


def test_training_randomness_does_not_depend_on_the_number_of_ranks():
    """What a row draws (DIS frames, ACT exploration) is keyed by its global position: one rank
    with 4 rows draws what two ranks with 2 rows each draw, call after call (elastic training)."""
    model, emb = _tiny(steps=4, cycles=2, latent=2, timestep=False)
    inputs, labels = _pair(b=4, length=16)
    one = RowNoise(5)
    halves = [RowNoise(5, rank=r, world=2) for r in range(2)]
    for _ in range(3):
        whole = diffusion_frames(inputs, labels, 6, scores=one.mine(torch.rand(4, 16, generator=one.next())))
        parts = [diffusion_frames(inputs[2 * r:2 * r + 2], labels[2 * r:2 * r + 2], 6,
                                  scores=n.mine(torch.rand(4, 16, generator=n.next()))) for r, n in enumerate(halves)]
        assert torch.equal(whole, torch.cat(parts))
    # ACT: the same rows halt under exploration whether the batch is split or not.
    batch = TorchBatch(inputs, labels, torch.tensor([1, 2, 3, 4]))
    act = ACTObjective(ACTConfig(halt_exploration_prob=0.5), model.cfg, noise=RowNoise(7))
    split = [ACTObjective(ACTConfig(halt_exploration_prob=0.5), model.cfg, noise=RowNoise(7, rank=r, world=2))
             for r in range(2)]
    for _ in range(4):
        list(act.train_steps(model, emb, batch))
        for r, o in enumerate(split):
            list(o.train_steps(model, emb, TorchBatch(inputs[2 * r:2 * r + 2], labels[2 * r:2 * r + 2],
                                                      batch.puzzle_identifiers[2 * r:2 * r + 2])))
        assert torch.equal(act.rows.halted, torch.cat([o.rows.halted for o in split]))
        assert torch.equal(act.rows.steps, torch.cat([o.rows.steps for o in split]))
    # A checkpoint of the two ranks, restored on one rank (and back), continues the same rows.
    merged = ACTObjective(ACTConfig(halt_exploration_prob=0.5), model.cfg, noise=RowNoise(7))
    merged.load_resharded([o.state_dict() for o in split])
    assert torch.allclose(merged.rows.carry.latent, act.rows.carry.latent, atol=1e-5)
    assert merged.noise.calls == act.noise.calls and torch.equal(merged.rows.steps, act.rows.steps)
    again = ACTObjective(ACTConfig(halt_exploration_prob=0.5), model.cfg, noise=RowNoise(7, rank=1, world=2))
    again.load_resharded([act.state_dict()])
    assert torch.allclose(again.rows.carry.answer, split[1].rows.carry.answer, atol=1e-5)
