"""Training steps in one process: objective -> loss -> guard -> backward -> optimizer steps.

The Trainer runs one Engine per rank (DDP-wrapped model, sharded batches); tests and benchmarks
use it directly. Its state (optimizer moments and step count) is one entry of a checkpoint.
"""

from __future__ import annotations

import torch

from .objectives import Objective, StepOutput, TorchBatch
from .optim import NonFiniteLoss, OptimConfig, build_optimizer, lr_factor
from .puzzle_emb import PuzzleEmbedding


class Engine:
    def __init__(self, model: torch.nn.Module, emb: PuzzleEmbedding, objective: Objective, optim: OptimConfig,
                 total_steps: int):
        self.model, self.emb, self.objective, self.cfg = model, emb, objective, optim
        self.total_steps = total_steps
        self.optimizer = build_optimizer(optim, [p for p in model.parameters() if p.requires_grad])
        self.step = 0  # optimizer steps taken (= supervision steps trained)

    def _apply(self, out: StepOutput) -> dict:
        if not torch.isfinite(out.loss):
            self.emb.discard_pending()
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(f"non-finite loss {out.loss.item()} at optimizer step {self.step + 1}; "
                                "nothing was applied (lower the learning rate or check the data)")
        out.loss.backward()
        metrics = dict(out.metrics)
        if self.cfg.grad_clip:
            metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.step += 1
        factor = lr_factor(self.step, self.cfg.warmup_steps, self.total_steps, self.cfg.lr_min_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * factor
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.emb.step(self.cfg.puzzle_emb_lr * factor, self.cfg.puzzle_emb_weight_decay)
        metrics["lr"] = self.cfg.lr * factor
        return metrics

    def train_batch(self, batch: TorchBatch) -> list[dict]:
        """Every optimizer step the objective asks for on this batch; one metrics dict each."""
        self.model.train()
        return [self._apply(out) for out in self.objective.train_steps(self.model, self.emb, batch)]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
