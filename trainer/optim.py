"""Optimisers and the learning-rate schedule (docs/reference.md §6.1).

Weights: AdamW (default) or Adam-atan2 (pure PyTorch, the imoneoi formula the TRM code installs).
Puzzle table: SignSGD (trainer.puzzle_emb). Both follow one warmup + cosine schedule, each with
its own base rate.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adamw", "adam_atan2"] = Field("adamw", description="weights optimiser")
    lr: float = Field(1e-4, gt=0, description="base learning rate of the weights")
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam betas")
    weight_decay: float = Field(0.1, ge=0, description="decoupled weight decay of the weights")
    puzzle_emb_lr: float = Field(1e-2, ge=0, description="SignSGD learning rate of the puzzle table")
    puzzle_emb_weight_decay: float = Field(0.1, ge=0, description="decoupled weight decay of the puzzle table")
    warmup_steps: int = Field(2000, ge=0, description="linear warmup from 0 (optimizer steps)")
    lr_min_ratio: float = Field(1.0, ge=0, le=1, description="cosine floor; 1.0 = constant after warmup (reference)")
    grad_clip: float | None = Field(None, gt=0, description="clip the global grad norm; None = off")
    ema_rate: float | None = Field(None, gt=0, lt=1, description="average the weights with this rate after every "
                                   "step and evaluate, select and export the average (TRM's ARC recipe: 0.999); "
                                   "None = off")


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the base rate for optimizer step `step` (1-based, as the reference)."""
    if step < warmup:
        return step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


class AdamAtan2(torch.optim.Optimizer):
    """p <- p(1 - lr*wd); m, v EMAs; p <- p - lr/(1-b1^t) * atan2(m, sqrt(v)/sqrt(1-b2^t)). No epsilon."""

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.95), weight_decay: float = 0.1):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1 - lr * wd)
                m.lerp_(p.grad, 1 - b1)
                v.lerp_(p.grad.square(), 1 - b2)
                p.add_(torch.atan2(m, v.sqrt() / math.sqrt(1 - b2**t)), alpha=-lr / (1 - b1**t))


def build_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam_atan2":
        return AdamAtan2(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


class NonFiniteLoss(RuntimeError):
    """A loss was NaN or infinite (reported at the next check, see Engine.check_finite)."""
