"""The Tiny Recursive Model: one small block stack applied recursively (docs/reference.md §3).

A latent z is refined `latent_steps` times from (input x, answer y, z), then y from (y, z);
`cycles` such rounds make one supervision step, all but the last without gradient. The same
blocks serve both updates. Pure torch + einops: no I/O, no distributed code, no losses here.

Paper names: y = z_H, z = z_L, latent_steps = n (L_cycles), cycles = T (H_cycles),
supervision_steps = N_sup (halt_max_steps); see docs/model.md.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(12, ge=2, description="tokens: PAD, EOS, colours 0..9")
    seq_len: int = Field(900, ge=1, description="grid tokens per example (30x30)")
    hidden_size: int = Field(512, ge=8, description="width D")
    num_heads: int = Field(8, ge=1, description="attention heads; hidden_size must divide by it")
    expansion: float = Field(4.0, gt=0, description="SwiGLU expansion before the 2/3 and 256-rounding")
    layers: int = Field(2, ge=1, description="blocks in the shared reasoning stack (L_layers)")
    latent_steps: int = Field(6, ge=1, description="n: latent updates per cycle (L_cycles)")
    cycles: int = Field(3, ge=1, description="T: cycles per supervision step, T-1 without grad (H_cycles)")
    supervision_steps: int = Field(16, ge=1, description="N_sup: deep-supervision steps (halt_max_steps)")
    puzzle_emb_ndim: int = Field(512, ge=0, description="width of the per-puzzle embedding; 0 = none")
    puzzle_emb_len: int = Field(16, ge=0, description="prefix slots P; 0 = ceil(ndim / hidden_size)")
    num_puzzle_identifiers: int = Field(1, ge=1, description="rows of the sparse puzzle table (from the data)")
    timestep_embedding: bool = Field(False, description="DIS: add a learned embedding of the step index")
    mixer: Literal["attention", "mlp_t"] = Field("attention", description="token mixing: attention or MLP over tokens")
    pos_encodings: Literal["rope", "none"] = Field("rope", description="rotary positions or none")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base period")
    norm_eps: float = Field(1e-5, gt=0, description="RMSNorm epsilon")

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.pos_encodings == "rope" and (self.hidden_size // self.num_heads) % 2:
            raise ValueError("rotary embeddings need an even head dimension")
        if self.puzzle_emb_ndim == 0 and self.puzzle_emb_len:
            raise ValueError("puzzle_emb_len must be 0 when puzzle_emb_ndim is 0 (no puzzle prefix)")
        if self.puzzle_emb_ndim > self.prefix_len * self.hidden_size:
            raise ValueError(f"puzzle_emb_ndim {self.puzzle_emb_ndim} does not fit in {self.prefix_len} prefix "
                             f"slots of width {self.hidden_size}")
        return self

    @property
    def prefix_len(self) -> int:
        if self.puzzle_emb_ndim == 0:
            return 0
        return self.puzzle_emb_len or -(-self.puzzle_emb_ndim // self.hidden_size)

    @property
    def total_len(self) -> int:
        return self.prefix_len + self.seq_len

    @property
    def applications_per_step(self) -> tuple[int, int]:
        """Applications of the block stack per supervision step, with and without gradient."""
        per_cycle = self.latent_steps + 1
        return per_cycle, (self.cycles - 1) * per_cycle

    def block_flops(self, rows: int) -> float:
        """Forward FLOPs of one application of the block stack to `rows` rows (matmuls only)."""
        s, d = self.total_len, self.hidden_size
        inter = swiglu_width(d, self.expansion)
        mlp = 2 * s * d * 2 * inter + 2 * s * inter * d
        if self.mixer == "attention":
            mix = 2 * s * d * 3 * d + 2 * 2 * s * s * d + 2 * s * d * d
        else:
            inter_t = swiglu_width(s, self.expansion)
            mix = 2 * d * s * 2 * inter_t + 2 * d * inter_t * s
        return rows * self.layers * (mix + mlp)

    def step_flops(self, rows: int) -> float:
        """Training FLOPs of one supervision step on `rows` rows: the cycle with gradient forward and
        backward (3x), the cycles without forward only, the output and Q heads forward and backward
        (the output head runs over the prefix positions too, before they are dropped)."""
        grad, nograd = self.applications_per_step
        heads = 3 * 2 * rows * self.hidden_size * (self.total_len * self.vocab_size + 2)
        return self.block_flops(rows) * (3 * grad + nograd) + heads


def trunc_normal_(t: torch.Tensor, std: float) -> torch.Tensor:
    """JAX-style truncated normal at ±2 std, rescaled so the result really has std `std`."""
    if std == 0:
        return t.zero_()
    lo, hi = -2.0, 2.0
    a, b = math.erf(lo / math.sqrt(2)), math.erf(hi / math.sqrt(2))
    z = (b - a) / 2
    pdf = math.exp(-0.5 * hi**2) / math.sqrt(2 * math.pi)  # equal at both (symmetric) bounds
    comp_std = std / math.sqrt(1 - (hi - lo) * pdf / z)  # ~1.137 * std
    with torch.no_grad():
        return t.uniform_(a, b).erfinv_().mul_(math.sqrt(2) * comp_std).clamp_(lo * comp_std, hi * comp_std)


class Linear(nn.Linear):
    """fp32 master weights, computed in the input's dtype; truncated LeCun init."""

    def __init__(self, d_in: int, d_out: int, bias: bool = False):
        super().__init__(d_in, d_out, bias=bias)
        trunc_normal_(self.weight, 1 / math.sqrt(d_in))
        if bias:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    # No gain: the reference's norm has no learned scale. Computed in fp32.
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


def swiglu_width(dim: int, expansion: float) -> int:
    return -(-round(expansion * dim * 2 / 3) // 256) * 256  # the reference rounds up to 256


class SwiGLU(nn.Module):
    def __init__(self, dim: int, expansion: float):
        super().__init__()
        inter = swiglu_width(dim, expansion)
        self.gate_up = Linear(dim, 2 * inter)
        self.down = Linear(inter, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Rotary(nn.Module):
    def __init__(self, head_dim: int, length: int, theta: float):
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, H, S, d]
        x32 = x.float()
        x1, x2 = x32.chunk(2, dim=-1)
        rotated = torch.cat([-x2, x1], dim=-1)
        return (x32 * self.cos + rotated * self.sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.num_heads
        self.qkv = Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.o = Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, rotary: Rotary | None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b s (three h d) -> three b h s d", three=3, h=self.heads)
        if rotary is not None:
            q, k = rotary(q), rotary(k)
        out = F.scaled_dot_product_attention(q, k, v)  # non-causal, unmasked: every cell sees every cell
        return self.o(rearrange(out, "b h s d -> b s (h d)"))


class Block(nn.Module):
    """Post-norm: h = norm(h + mix(h)); h = norm(h + mlp(h))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.eps = cfg.norm_eps
        self.mixer = Attention(cfg) if cfg.mixer == "attention" else SwiGLU(cfg.total_len, cfg.expansion)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.expansion)

    def forward(self, h: torch.Tensor, rotary: Rotary | None) -> torch.Tensor:
        if isinstance(self.mixer, Attention):
            h = rms_norm(h + self.mixer(h, rotary), self.eps)
        else:  # mlp_t: mix along the sequence axis, normalised over it too (as the reference)
            t = h.transpose(1, 2)
            h = rms_norm(t + self.mixer(t), self.eps).transpose(1, 2)
        return rms_norm(h + self.mlp(h), self.eps)


class Carry(NamedTuple):
    answer: torch.Tensor  # y = z_H  [B, P+L, D]
    latent: torch.Tensor  # z = z_L  [B, P+L, D]


class TinyRecursiveModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.embed_scale = math.sqrt(d)
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        trunc_normal_(self.tok_emb.weight, 1 / math.sqrt(d))
        self.step_emb = None
        if cfg.timestep_embedding:
            self.step_emb = nn.Embedding(cfg.supervision_steps + 2, d)
            trunc_normal_(self.step_emb.weight, 1 / math.sqrt(d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.rotary = (Rotary(d // cfg.num_heads, cfg.total_len, cfg.rope_theta)
                       if cfg.pos_encodings == "rope" and cfg.mixer == "attention" else None)
        self.lm_head = Linear(d, cfg.vocab_size)
        self.q_head = Linear(d, 2, bias=True)
        with torch.no_grad():  # start by predicting "do not halt" (sigmoid(-5) ~ 0.007)
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        # Fixed random initial states, shared by every position; buffers, never trained.
        self.register_buffer("answer_init", trunc_normal_(torch.empty(d), 1.0))
        self.register_buffer("latent_init", trunc_normal_(torch.empty(d), 1.0))

    def embed(self, tokens: torch.Tensor, puzzle_emb: torch.Tensor | None, step: torch.Tensor | None,
              dtype: torch.dtype) -> torch.Tensor:
        """x = sqrt(D) * ([puzzle prefix ; token embeddings] + step embedding): [B, P+L, D]."""
        cfg = self.cfg
        x = self.tok_emb(tokens.long()).to(dtype)
        if cfg.prefix_len:
            prefix = F.pad(puzzle_emb.to(dtype), (0, cfg.prefix_len * cfg.hidden_size - puzzle_emb.shape[-1]))
            x = torch.cat([prefix.view(-1, cfg.prefix_len, cfg.hidden_size), x], dim=1)
        if self.step_emb is not None and step is not None:
            x = x + self.step_emb(step.long()).to(dtype)[:, None, :]
        return self.embed_scale * x

    def initial_carry(self, batch: int, dtype: torch.dtype) -> Carry:
        """The fixed initial states in the compute dtype (the caller's choice; weights stay fp32)."""
        shape = (batch, self.cfg.total_len, self.cfg.hidden_size)
        return Carry(self.answer_init.to(dtype).expand(shape), self.latent_init.to(dtype).expand(shape))

    def reset(self, carry: Carry, rows: torch.Tensor) -> Carry:
        """Carry with `rows` (bool [B]) restarted from the initial states."""
        m = rows.view(-1, 1, 1)
        init = self.initial_carry(rows.shape[0], carry.answer.dtype)
        return Carry(torch.where(m, init.answer, carry.answer), torch.where(m, init.latent, carry.latent))

    def _reason(self, h: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        h = h + injection
        for block in self.blocks:
            h = block(h, self.rotary)
        return h

    def _cycle(self, y: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(self.cfg.latent_steps):
            z = self._reason(z, y + x)
        return self._reason(y, z), z

    def forward(self, carry: Carry, tokens: torch.Tensor, puzzle_emb: torch.Tensor | None,
                step: torch.Tensor | None = None) -> tuple[Carry, torch.Tensor, torch.Tensor]:
        """One supervision step on `tokens` [B, L] (embedding included, so DDP sees every use of
        the weights): returns (detached carry, logits [B, L, V], q logits [B, 2] in fp32)."""
        x = self.embed(tokens, puzzle_emb, step, carry.answer.dtype)
        y, z = carry
        with torch.no_grad():
            for _ in range(self.cfg.cycles - 1):
                y, z = self._cycle(y, z, x)
        y, z = self._cycle(y, z, x)
        logits = self.lm_head(y)[:, self.cfg.prefix_len :]
        q = self.q_head(y[:, 0]).float()
        return Carry(y.detach(), z.detach()), logits, q
