"""Training steps in one process: objective -> loss -> backward -> optimizer steps -> weight average.

The Trainer runs one Engine per rank (DDP-wrapped model, sharded batches); tests and benchmarks
use it directly. Its state (optimizer moments and step count) is one entry of a checkpoint.
Nothing in a step waits for the device: a non-finite loss is recorded on the device and reported
by `check_finite`, which the Trainer calls where it synchronises anyway (every log interval, so
always before a checkpoint is written).
"""

from __future__ import annotations

import torch

from .ema import EMA
from .objectives import Objective, StepOutput, TorchBatch
from .optim import NonFiniteLoss, OptimConfig, build_optimizer, lr_factor
from .puzzle_emb import PuzzleEmbedding


class Engine:
    def __init__(self, model: torch.nn.Module, emb: PuzzleEmbedding, objective: Objective, optim: OptimConfig,
                 total_steps: int):
        self.model, self.emb, self.objective, self.cfg = model, emb, objective, optim
        self.total_steps = total_steps
        trained = [p for p in model.parameters() if p.requires_grad]
        # A frozen network (fine-tuning only the puzzle table) has no optimizer and no weight average.
        self.optimizer = build_optimizer(optim, trained) if trained else None
        self.ema = EMA(model, optim.ema_rate) if optim.ema_rate and trained else None
        self.step = 0  # optimizer steps taken (= supervision steps trained)
        # First optimizer step with a non-finite loss since the last check (0 = none), on the device.
        self._nonfinite = torch.zeros((), dtype=torch.long, device=next(model.parameters()).device)

    def check_finite(self) -> None:
        """Raise if a loss since the last check was not finite (this waits for the device)."""
        if (step := int(self._nonfinite)) > 0:
            raise NonFiniteLoss(f"non-finite loss at optimizer step {step}: the weights are no longer finite and "
                                "nothing after the last checkpoint was saved; resume from it with a lower learning "
                                "rate, or check the data")

    def _apply(self, out: StepOutput) -> dict:
        bad = ~torch.isfinite(out.loss.detach())
        self._nonfinite = torch.where(bad & (self._nonfinite == 0), self.step + 1, self._nonfinite)
        out.loss.backward()
        metrics = dict(out.metrics)
        if self.cfg.grad_clip:
            metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.step += 1
        factor = lr_factor(self.step, self.cfg.warmup_steps, self.total_steps, self.cfg.lr_min_ratio)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.lr * factor
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        self.emb.step(self.cfg.puzzle_emb_lr * factor, self.cfg.puzzle_emb_weight_decay)
        metrics["lr"] = self.cfg.lr * factor
        return metrics

    def train_batch(self, batch: TorchBatch) -> list[dict]:
        """Every optimizer step the objective asks for on this batch; one metrics dict each."""
        self.model.train()
        return [self._apply(out) for out in self.objective.train_steps(self.model, self.emb, batch)]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict() if self.optimizer is not None else {}, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
