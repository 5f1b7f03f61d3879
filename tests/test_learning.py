"""Learning, not shapes: a tiny model memorises a few small real ARC puzzles exactly, on CPU,
under both DIS and TRM-ACT. (~30 s; marked slow, still run by `make test` and CI.)"""

from __future__ import annotations

import pytest
import torch

from arc_data.build import build_dataset
from arc_data.dataset import ArcDataset
from arc_data.manifest import BuildConfig
from trainer.engine import Engine
from trainer.model import ModelConfig, TinyRecursiveModel
from trainer.objectives import ACTConfig, DISConfig, TorchBatch, build_objective, token_metrics
from trainer.optim import OptimConfig
from trainer.puzzle_emb import PuzzleEmbedding

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_puzzles(tmp_path_factory) -> ArcDataset:
    # Three ARC-1 training puzzles whose grids fit a 6x6 canvas, no augmentation: 14 examples.
    out = tmp_path_factory.mktemp("learn") / "d"
    build_dataset(BuildConfig(sources=["arc1"], canvas=6, tasks=3, subsets=["training"], augmentations=0), out,
                  progress=False)
    return ArcDataset(out)


@pytest.mark.parametrize("method,batches", [("dis", 200), ("trm", 450)])
def test_tiny_model_memorises_real_puzzles(three_puzzles, method, batches):
    ds = three_puzzles
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        cfg = ModelConfig(hidden_size=64, num_heads=4, layers=1, seq_len=ds.seq_len, puzzle_emb_ndim=64,
                          puzzle_emb_len=1, num_puzzle_identifiers=ds.num_identifiers, supervision_steps=3,
                          cycles=1 if method == "dis" else 2, latent_steps=2, timestep_embedding=method == "dis")
        model = TinyRecursiveModel(cfg)
        emb = PuzzleEmbedding(ds.num_identifiers, 64, torch.device("cpu"))
        objective = build_objective(DISConfig() if method == "dis" else ACTConfig(halt_exploration_prob=0.5), cfg)
        objective.prepare(model)
        steps_per_batch = objective.optimizer_steps_per_batch
        assert steps_per_batch == (3 if method == "dis" else 1)  # DIS: one optimizer step per supervision step
        optim = OptimConfig(lr=2e-3 if method == "trm" else 3e-3, warmup_steps=20, weight_decay=0.0,
                            grad_clip=1.0, lr_min_ratio=0.0)
        engine = Engine(model, emb, objective, optim, total_steps=batches * steps_per_batch)
        n = ds.manifest.counts.train_examples
        batches_iter = iter(ds.train_sampler(n, seed=0))  # one batch = every example, reshuffled
        losses = []
        for _ in range(batches):
            batch = TorchBatch.from_numpy(next(batches_iter), torch.device("cpu"))
            losses.append(float(engine.train_batch(batch)[-1]["loss"]))
        assert engine.step == batches * steps_per_batch
        pred = objective.predict(model, emb, batch)
        metrics = token_metrics(pred.preds, batch.labels)
        copy_baseline = token_metrics(batch.inputs, batch.labels)["accuracy"]
        assert sum(losses[-10:]) < 0.2 * sum(losses[:10])
        assert metrics["accuracy"] > copy_baseline
        assert metrics["exact_accuracy"] == 1.0, f"{method}: exact {float(metrics['exact_accuracy']):.3f}"
    finally:
        torch.set_num_threads(threads)
