"""Training objectives: DIS (per-step diffusion targets) and TRM-ACT (halting baseline).

Both implement `Objective` (common.py): `train_steps(model, emb, batch)` yields one `StepOutput`
per optimizer step, `predict(model, emb, batch, steps=None)` serves evaluation, and everything
objective-specific (optimizer steps per batch, what to freeze, block applications per row,
row-weighted metrics, RNG and in-flight state) is answered by the objective itself.
"""

from __future__ import annotations

import torch

from ..model import ModelConfig
from .act import ACTConfig, ACTObjective
from .common import Objective, Prediction, RowNoise, StepOutput, TorchBatch, token_metrics, unwrap
from .dis import DISConfig, DISObjective

CONFIGS: dict[str, type[DISConfig] | type[ACTConfig]] = {"dis": DISConfig, "trm": ACTConfig}  # by `method`


def build_objective(cfg: DISConfig | ACTConfig, model_cfg: ModelConfig, dtype: torch.dtype = torch.float32,
                    seed: int = 0, device: torch.device | None = None, rank: int = 0, world: int = 1) -> Objective:
    """The objective of `cfg`; `dtype` is the compute dtype of activations and carries; this is
    rank `rank` of `world` (the objective's randomness is drawn per global row, common.RowNoise)."""
    cls = DISObjective if isinstance(cfg, DISConfig) else ACTObjective
    return cls(cfg, model_cfg, dtype=dtype, noise=RowNoise(seed, rank, world, device), device=device)


__all__ = ["CONFIGS", "ACTConfig", "ACTObjective", "DISConfig", "DISObjective", "Objective", "Prediction",
           "StepOutput", "TorchBatch", "build_objective", "token_metrics", "unwrap"]
