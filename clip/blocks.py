"""Transformer blocks with per-block prompt hooks, parameter names as OpenAI's.

The towers know nothing about prompt methods. A method expresses itself through a *hook*:
``hook(index, x, block) -> Tensor | None`` is called before block ``index`` of a tower runs with the
batch-first token tensor ``x`` (N, L, D); a returned tensor replaces ``x``. Blocks run fused
``F.scaled_dot_product_attention``; the probes (clip/probes.py) recompute the head-averaged attention
probabilities on demand for methods (BMIP) that gate on them. A hook that probed a block and then replaced
a few rows may return a :class:`BlockInput` carrying the probe's projections with those rows re-projected,
so the block does not project the whole sequence a second time; the same :class:`BlockInput` carries an
adapted projection (LoRA) or a residual added after the block (MMA).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .prefix_attention import PrefixedProjection, Projection, prefixed_attention
from .probes import AttentionProbes, Probed


class BlockInput(NamedTuple):
    """What a hook may return instead of a tensor: the tokens, optionally their already computed (or
    adapted: LoRA) projection (a :class:`Projection`, or a :class:`PrefixedProjection` from a probe of
    non-causal attention), and optionally a ``residual`` added to the block's output (MMA's adapters,
    which read the block input and write after the block)."""

    x: Tensor
    projection: Union[Projection, PrefixedProjection, None]
    residual: Optional[Tensor] = None


Hook = Callable[[int, Tensor, "ResidualAttentionBlock"], Union[Tensor, BlockInput, None]]


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in (at least) fp32 and cast back, so fp16 towers stay numerically sane (OpenAI's choice)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float32, torch.float64):
            return super().forward(x)
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid GELU approximation the released CLIP weights were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention holding ``nn.MultiheadAttention``'s parameter names (batch-first, fused)."""

    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        if d_model % n_head != 0:
            raise ValueError(f"attention width {d_model} is not divisible by the number of heads {n_head}")
        self.n_head = n_head
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, t: Tensor) -> Tensor:
        n, length, d = t.shape
        return t.view(n, length, self.n_head, d // self.n_head).transpose(1, 2)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head queries, keys and values, each (N, heads, L, head_dim)."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def forward(
        self, x: Tensor, causal: bool, projection: Union[Projection, PrefixedProjection, None] = None
    ) -> Tensor:
        """Fused attention on ``x`` (already ``ln_1``-ed), or on ``projection`` when it is given."""
        n, length, _ = x.shape
        if isinstance(projection, PrefixedProjection):
            if causal:
                raise ValueError("a precomputed attention prefix is only valid for non-causal attention")
            return self.out_proj(prefixed_attention(projection).reshape(n, length, -1))
        q, k, v = self.qkv(x) if projection is None else projection
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, -1))


class ResidualAttentionBlock(AttentionProbes, nn.Module):
    """Pre-LN transformer block; ``causal`` selects the text tower's mask (built for any length).

    ``activation`` is the MLP's: QuickGELU (OpenAI's weights and open_clip's ``-quickgelu`` models) or
    ``nn.GELU`` (open_clip's other models); the module keeps OpenAI's name ``mlp.gelu`` either way."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        causal: bool = False,
        mlp_ratio: float = 4.0,
        activation: type[nn.Module] = QuickGELU,
    ) -> None:
        super().__init__()
        self.attn = Attention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        mlp_width = int(d_model * mlp_ratio)  # open_clip's rounding (ViT-g/bigG have fractional ratios)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(d_model, mlp_width))
        self.mlp.add_module("gelu", activation())
        self.mlp.add_module("c_proj", nn.Linear(mlp_width, d_model))
        self.ln_2 = LayerNorm(d_model)
        self.causal = causal
        self._memo: Optional[dict[int, Probed]] = None

    def forward(self, x: Tensor, projection: Union[Projection, PrefixedProjection, None] = None) -> Tensor:
        """``projection``, if given, must be that of this ``x`` (see :meth:`project_rows` and
        :meth:`attention_to_suffix`)."""
        if projection is None:
            x = x + self.attn(self.ln_1(x), self.causal)
        else:
            x = x + self.attn(x, self.causal, projection)
        return x + self.mlp(self.ln_2(x))

    def project(self, x: Tensor) -> Projection:
        """Queries, keys and values of ``x`` (N, L, D) as the attention of this block computes them."""
        return Projection(*self.attn.qkv(self.ln_1(x)))

    def project_rows(self, base: Projection, x: Tensor, start: int, stop: int) -> Projection:
        """Projection of ``x`` from ``base``, the projection of a sequence that differs from ``x`` only in
        rows ``start:stop``: only those rows are projected again (the projection is row-wise)."""
        rows = self.project(x[:, start:stop])
        return Projection(
            *(torch.cat([b[:, :, :start], r, b[:, :, stop:]], dim=2) for b, r in zip(base, rows))
        )


class Transformer(nn.Module):
    """A stack of blocks; the hook runs before every block and may replace the tokens.

    ``batch_first`` is the layout a plain call ``transformer(x)`` takes and returns: True (N, L, D), as
    set by ``build_clip``, or False (L, N, D), OpenAI's layout, as set by the OpenAI-API loaders
    (``clip.load``, ``clip.build_model``) so that code which permutes to LND around the call (CoOp's
    ``TextEncoder``) gives the right features. The towers pass ``batch_first=True`` explicitly, so the
    attribute concerns direct callers only; blocks and hooks always see batch-first tokens.
    """

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        causal: bool = False,
        batch_first: bool = True,
        mlp_ratio: float = 4.0,
        activation: type[nn.Module] = QuickGELU,
    ) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.batch_first = batch_first
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads, causal, mlp_ratio, activation) for _ in range(layers)]
        )

    def forward(self, x: Tensor, hook: Optional[Hook] = None, batch_first: Optional[bool] = None) -> Tensor:
        """Run the blocks on ``x`` laid out as ``batch_first`` says (None: the ``batch_first`` attribute)."""
        if not (self.batch_first if batch_first is None else batch_first):
            return self.forward(x.permute(1, 0, 2), hook, batch_first=True).permute(1, 0, 2)
        for index, block in enumerate(self.resblocks):
            replaced = None if hook is None else hook(index, x, block)
            if isinstance(replaced, BlockInput):
                x = block(replaced.x, replaced.projection)
                if replaced.residual is not None:
                    x = x + replaced.residual.to(x.dtype)
                continue
            if replaced is not None:
                x = replaced
            x = block(x)
        return x
