"""Attention probes: the attention probabilities a block would compute, recomputed on demand.

The blocks run fused attention, which never materialises probabilities; methods that gate on them
(BMIP) ask the block through these probes. A probe keeps, within :meth:`AttentionProbes.memoize_projection`,
the projection it computed (and the fused prefix attention, clip/prefix_attention.py) so that the block's
own pass can reuse them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor

from .prefix_attention import PrefixAttention, Projection, few_key_probs, fused_prefix

QueryRows = Union[None, slice, Tensor, list[int]]


class Probed(NamedTuple):
    """What :meth:`ResidualAttentionBlock.memoize_projection` keeps of a probed input ``x``."""

    x: Tensor
    projection: Projection
    prefix: Optional[PrefixAttention] = None


class AttentionProbes:
    """Probe methods of :class:`clip.blocks.ResidualAttentionBlock` (which provides ``project``,
    ``causal`` and ``parameters``)."""

    causal: bool
    _memo: Optional[dict[int, Probed]] = None

    @contextmanager
    def memoize_projection(self) -> Iterator[dict[int, Probed]]:
        """Within the block, the probes (:meth:`attention_probs`, :meth:`attention_to_suffix`) keep what
        they computed of each input.

        Yields the memo (``id(x) ->`` :class:`Probed`) so the caller can reuse a probe's projection (and
        fused prefix attention) for the block's own pass; outside the block nothing is kept.
        """
        self._memo = {}
        try:
            yield self._memo
        finally:
            self._memo = None

    def _probed(self, x: Tensor) -> Probed:
        held = None if self._memo is None else self._memo.get(id(x))
        if held is None or held.x is not x:
            held = Probed(x, self.project(x))
            if self._memo is not None:
                self._memo[id(x)] = held
        return held

    def _may_fuse_prefix(self, x: Tensor, differentiable: bool) -> bool:
        """The fused prefix serves a memoised, non-causal probe whose result needs no gradient (the kernel's
        log-sum-exp is not differentiable): in evaluation, or a probe its caller detaches (BMIP's gates)."""
        if self._memo is None or self.causal:
            return False
        return not differentiable or not torch.is_grad_enabled() or not (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )

    def attention_to_suffix(self, x: Tensor, start: int, differentiable: bool = True) -> Tensor:
        """Head-averaged probabilities (N, start, L - start) the rows ``[:start]`` of ``x`` pay to the
        keys ``[start:]``, normalised over all keys: :meth:`attention_probs` ``(x, slice(0, start))[..., start:]``.

        Memoised and gradient-free (evaluation, or ``differentiable=False``: the caller detaches the
        result), the rows' normaliser over the keys ``[:start]`` comes from a fused attention of that
        prefix (:class:`PrefixAttention`, kept in the memo), which the block's own pass extends instead of
        recomputing: only (start, L - start) scores are materialised. With ``differentiable=False`` the
        result carries no gradient; the projection kept in the memo still does (the block pass needs it).
        """
        if x.dim() != 3 or not 0 < start < x.shape[1]:
            raise ValueError(
                f"attention_to_suffix expects x (N, L, D) and 0 < start < L, got {tuple(x.shape)} and {start}"
            )
        held = self._probed(x) if self._may_fuse_prefix(x, differentiable) else None
        prefix = None
        if held is not None:
            prefix = (
                held.prefix
                if held.prefix is not None and held.prefix.stop == start
                else fused_prefix(held.projection, start)
            )
        if prefix is None:
            return self.attention_probs(x, slice(0, start))[:, :, start:]
        self._memo[id(x)] = held._replace(prefix=prefix)
        with torch.no_grad():
            probs, _ = few_key_probs(prefix.q, held.projection.k[:, :, start:], prefix.lse[:, :, :start])
        return probs.mean(dim=1).to(x.dtype)

    def attention_probs(self, x: Tensor, query_rows: QueryRows = None) -> Tensor:
        """Head-averaged softmax attention (N, Q, L) this block would compute on ``x`` (N, L, D).

        ``query_rows`` picks query positions: None (all), a slice, or an index tensor/list. The block's
        own ``ln_1``, projections and (text tower) causal mask are applied; scores and softmax run in at
        least fp32 (fp64 models stay fp64) and the result is returned in ``x.dtype``.
        """
        if x.dim() != 3:
            raise ValueError(f"attention_probs expects x of shape (N, L, D), got {tuple(x.shape)}")
        length = x.shape[1]
        positions = torch.arange(length, device=x.device)
        if isinstance(query_rows, list):
            query_rows = torch.as_tensor(query_rows, dtype=torch.long, device=x.device)
        q, k, _ = self._probed(x).projection
        if query_rows is not None:
            positions = positions[query_rows]
            q = q[:, :, query_rows]  # a view for slices, a gather for index tensors
        compute = torch.promote_types(x.dtype, torch.float32)
        # Scale the (Q, d) queries rather than the (Q, L) scores, and give the batched matmul contiguous
        # operands: the probe runs once per gated block, so its cost shows in BMIP's step time.
        q = (q.to(compute) / math.sqrt(q.shape[-1])).contiguous()
        scores = q @ k.to(compute).transpose(-2, -1).contiguous()
        if self.causal:
            above = positions[:, None] < torch.arange(length, device=x.device)[None, :]
            scores = scores.masked_fill(above, float("-inf"))
        return scores.softmax(dim=-1).mean(dim=1).to(x.dtype)
