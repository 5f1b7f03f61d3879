"""Training objectives: DIS (per-step diffusion targets) and TRM-ACT (halting baseline).

Both expose `train_steps(model, emb, batch)` yielding one `StepOutput` per optimizer step, and
`predict(model, emb, batch, steps=None)` for evaluation.
"""

from __future__ import annotations

from .act import ACTConfig, ACTObjective
from .common import Prediction, StepOutput, TorchBatch, token_metrics, unwrap
from .dis import DISConfig, DISObjective


def build_objective(cfg: DISConfig | ACTConfig, steps: int, seed: int = 0, device=None):
    cls = DISObjective if isinstance(cfg, DISConfig) else ACTObjective
    return cls(cfg, steps, seed=seed, device=device)


__all__ = ["ACTConfig", "ACTObjective", "DISConfig", "DISObjective", "Prediction",
           "StepOutput", "TorchBatch", "build_objective", "token_metrics", "unwrap"]
