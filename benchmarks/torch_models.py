"""PyTorch twins of jaxdl's models, written as a PyTorch user would, with jaxdl's architecture and initialisation.

- `CNN` = jaxdl.models.CNN(features=(16, 32), dense=128, no batch norm, no dropout): 3x3 'SAME' convolutions with
  bias, ReLU, 2x2 max-pooling, dense, ReLU, dense. Flax's default initialisation: LeCun normal kernels
  (truncated normal, std sqrt(1/fan_in) / 0.8796) and zero biases. NCHW, so the flatten order before the first
  dense layer is (c, h, w) where jaxdl's is (h, w, c): a fixed permutation of that layer's rows, the same function
  class. Pooling is `F.max_pool2d`; jaxdl's reshape-max has the same forward values, and its gradient splits ties
  evenly where max_pool2d routes to one input; after a ReLU ties are zeros, whose gradient the ReLU zeroes anyway
  (benchmarks/checks.py compares losses and gradient norms of the two with copied weights).
- `GPT` = jaxdl.models.GPT (untied, no dropout): pre-LayerNorm blocks (eps 1e-6, flax's), learned positions,
  separate query/key/value/out projections with bias, tanh-GELU MLP (flax's nn.gelu default), final LayerNorm,
  lm_head without bias; GPT-2 initialisation: normal(0.02) everywhere, normal(0.02 / sqrt(2 * layers)) for `out`
  and `mlp_out`, zero biases, unit LayerNorm scales.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import common


def onecycle_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, peak: float, pct_start: float, final_div: float
) -> torch.optim.lr_scheduler.OneCycleLR:
    """torch's OneCycleLR on optax.cosine_onecycle_schedule(total_steps, peak, pct_start, final_div)'s curve: the one
    the torch arms train with and benchmarks/checks.py compares step by step."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=peak,
        anneal_strategy="cos",
        div_factor=25,  # optax's default
        final_div_factor=final_div,
        cycle_momentum=False,  # optax's Adam keeps β1 fixed
        **common.onecycle_torch_arguments(total_steps, pct_start),
    )


def parameter_average(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """torch's AveragedModel keeping jaxdl's moving average of `model`'s parameters (optim.ema_decay; None when
    0): from the initial parameters, after update t by rate 1 - min(decay, (1 + t) / (10 + t))."""
    if not decay:
        return None

    def move(average: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        return average + (1 - min(decay, (1 + float(updates)) / (10 + float(updates)))) * (current - average)

    averaged = torch.optim.swa_utils.AveragedModel(model, avg_fn=move)
    averaged.update_parameters(model)  # its first call copies: the initial parameters, so that update t is its t-th
    return averaged


TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]; flax divides by it


def lecun_normal_(weight: torch.Tensor) -> None:
    """Flax's default kernel init: variance_scaling(1, fan_in, truncated_normal)."""
    fan_in = weight[0].numel()  # (out, in, kh, kw) or (out, in)
    std = math.sqrt(1.0 / fan_in) / TRUNCATED_NORMAL_STD
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class CNN(nn.Module):
    def __init__(self, features=(16, 32), dense: int = 128, num_classes: int = 10, size: int = 28):
        super().__init__()
        channels = (1, *features)
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in itertools.pairwise(channels))
        side = size // 2 ** len(features)
        self.hidden = nn.Linear(features[-1] * side * side, dense)
        self.out = nn.Linear(dense, num_classes)
        for layer in (*self.convs, self.hidden, self.out):
            lecun_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 1, 28, 28) floats in [0, 1]
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return self.out(F.relu(self.hidden(x.flatten(1))))


class Block(nn.Module):
    def __init__(self, width: int, num_heads: int, residual_std: float, mlp_ratio: int = 4):
        super().__init__()
        self.num_heads = num_heads
        self.attn_norm = nn.LayerNorm(width, eps=1e-6)
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.attn_out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp_in = nn.Linear(width, mlp_ratio * width)
        self.mlp_out = nn.Linear(mlp_ratio * width, width)
        for layer in (self.query, self.key, self.value, self.mlp_in):
            nn.init.normal_(layer.weight, std=0.02)
        for layer in (self.attn_out, self.mlp_out):
            nn.init.normal_(layer.weight, std=residual_std)
        for layer in (self.query, self.key, self.value, self.attn_out, self.mlp_in, self.mlp_out):
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        h = self.attn_norm(x)
        heads = lambda y: y.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)
        q, k, v = heads(self.query(h)), heads(self.key(h)), heads(self.value(h))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_out(y.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, context: int, num_layers: int = 4, num_heads: int = 4, width: int = 128):
        super().__init__()
        self.token_embed = nn.Embedding(vocab_size, width)
        self.position_embed = nn.Embedding(context, width)
        residual_std = 0.02 / math.sqrt(2 * num_layers)
        self.blocks = nn.ModuleList(Block(width, num_heads, residual_std) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(width, eps=1e-6)
        self.lm_head = nn.Linear(width, vocab_size, bias=False)
        for weight in (self.token_embed.weight, self.position_embed.weight, self.lm_head.weight):
            nn.init.normal_(weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embed(tokens) + self.position_embed(positions)[None]
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.final_norm(x))

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """jaxdl's optim.no_decay ("*bias", "*scale", "*embed*"): decay only the Linear weights."""
        decay = [p for n, p in self.named_parameters() if n.endswith("weight") and "norm" not in n and "embed" not in n]
        ids = {id(p) for p in decay}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
