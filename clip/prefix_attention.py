"""Prefix attention: finishing a block's fused attention after a probe, without recomputing it.

A probe (clip/probes.py) that needs the attention the rows ``[:stop]`` pay to the few keys ``[stop:]``
runs the fused kernel over the keys ``[:stop]`` alone and keeps its output and row log-sum-exp
(:class:`PrefixAttention`). After a hook replaced the rows ``[stop:]``, the block's pass extends that
output by the new keys with an exact log-sum-exp merge (:func:`prefixed_attention`) instead of attending
over the whole sequence again. In training the merge runs inside an autograd function whose backward
is the fused kernel's backward of the whole attention (exact: it needs only the output and the row
log-sum-exp of the whole attention, which the merge produces).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor


class Projection(NamedTuple):
    """Per-head queries, keys and values (each (N, heads, L, head_dim)) of a block's ``ln_1``-ed input."""

    q: Tensor
    k: Tensor
    v: Tensor


class PrefixAttention:
    """A probe's fused attention of *all* rows of its input over the keys ``[:stop]`` alone, with the row
    log-sum-exp, plus the projections of the rows ``[:stop]``.

    Enough to finish the block's attention after rows ``[stop:]`` were replaced, without recomputing
    the attention among the rows ``[:stop]``: their output is extended by the new keys (an exact
    log-sum-exp merge) and the few replaced rows are recomputed. The block's pass writes its attention
    output into this object's buffer, so a prefix serves one block pass (:meth:`take_output`).
    """

    def __init__(self, stop: int, projection: Projection, out: Tensor, lse: Tensor) -> None:
        self.stop = stop
        self.q, self.k, self.v = (t[:, :, :stop] for t in projection)  # (N, heads, stop, head_dim)
        self.lse = lse  # (N, heads, L), at least fp32
        self._out: Optional[Tensor] = out  # (N, heads, L, head_dim)

    def take_output(self) -> Tensor:
        """The output buffer, handed out once (the block's pass overwrites it)."""
        if self._out is None:
            raise RuntimeError(
                "this PrefixAttention was already consumed by a block pass; probe the block input again"
            )
        out, self._out = self._out, None
        return out


class PrefixedProjection(NamedTuple):
    """Projection of a sequence given as a probe's :class:`PrefixAttention` of its unchanged first rows
    plus the :class:`Projection` of the rows ``[prefix.stop:]``."""

    prefix: PrefixAttention
    suffix: Projection


def _few_key_scores(q: Tensor, k: Tensor, compute: torch.dtype) -> Tensor:
    """``q k^T / sqrt(head_dim)`` (N, heads, R, C) for few keys ``k`` (N, heads, C, head_dim), in ``compute``.

    ``q`` is usually a strided per-head view of a projection (N, R, heads * head_dim in memory), which a
    batched matmul would first copy; instead all heads are done at once against a block-diagonal key
    matrix (heads times the needed multiplications, but for C = 2 keys far cheaper than the copy).
    """
    n, heads, rows, head_dim = q.shape
    cols = k.shape[2]
    block_diag = torch.diag_embed(k.to(compute).permute(0, 2, 3, 1))  # (N, C, d, heads, heads)
    block_diag = block_diag.permute(0, 3, 2, 1, 4).reshape(n, heads * head_dim, cols * heads)
    scores = q.to(compute).transpose(1, 2).reshape(n, rows, heads * head_dim) @ block_diag
    return scores.view(n, rows, cols, heads).permute(0, 3, 1, 2) / math.sqrt(head_dim)


def few_key_probs(q: Tensor, k: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    """Probabilities (N, heads, R, C) that queries ``q`` pay to the few keys ``k``, normalised over those
    keys and the other keys their row log-sum-exp ``lse`` (from the kernel) summarises; and the total row
    log-sum-exp (N, heads, R). Both in at least fp32."""
    scores = _few_key_scores(q, k, torch.promote_types(q.dtype, torch.float32))
    total = torch.logaddexp(lse.to(scores.dtype), scores.logsumexp(dim=-1))
    return torch.exp(scores - total.unsqueeze(-1)), total


def _cpu_flash(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """CPU flash attention: output and row log-sum-exp (it reads strided per-head views without copies)."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)


def _extend_into(dest: Tensor, out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Write into ``dest`` (which may be ``out``) the attention output of queries ``q`` whose attention
    over some keys is (``out``, ``lse``), extended by the few keys ``k``/values ``v``: the exact
    log-sum-exp merge, in place, one pass per extra key; returns the merged row log-sum-exp.
    Temporaries of the output's size are avoided on purpose: at batch 100 each one costs more in page
    faults than in arithmetic."""
    probs, total = few_key_probs(q, k, lse)  # (N, heads, rows, few), (N, heads, rows)
    torch.mul(out, torch.exp(lse.to(total.dtype) - total).unsqueeze(-1).to(dest.dtype), out=dest)
    weights = probs.to(dest.dtype)
    v = v.to(dest.dtype)
    for j in range(k.shape[2]):
        dest.addcmul_(weights[..., j : j + 1], v[:, :, j : j + 1])
    return total


def _merged_attention(prefix: PrefixAttention, q_p: Tensor, k_p: Tensor, v_p: Tensor, suffix: Projection):
    """Output (N, heads, L, head_dim) and row log-sum-exp (N, heads, L) of the whole attention, written
    into the prefix's buffer: rows ``[:stop]`` (queries ``q_p``) extend their fused output by the new keys;
    the new rows attend to the keys ``[:stop]`` (``k_p``, ``v_p``) through the fused kernel and are
    extended the same way."""
    q_s, k_s, v_s = suffix
    result = prefix.take_output()  # (N, heads, L, head_dim), laid out as (N, L, heads, head_dim)
    stop = prefix.stop
    head = result[:, :, :stop]
    head_lse = _extend_into(head, head, prefix.lse[:, :, :stop], q_p, k_s, v_s)
    tail_out, tail_lse = _cpu_flash(q_s, k_p, v_p)
    tail_lse = _extend_into(result[:, :, stop:], tail_out, tail_lse, q_s, k_s, v_s)
    return result, torch.cat([head_lse, tail_lse], dim=2)


class _PrefixedAttentionFunction(torch.autograd.Function):
    """The merge of :func:`_merged_attention` with the gradient of the whole attention.

    Forward reuses the probe's gradient-free prefix attention; backward is CPU flash attention's own
    backward over the whole sequence, given the merged output and log-sum-exp, so a training step pays for
    the attention among the rows ``[:stop]`` once (as an unprobed block does), not twice."""

    @staticmethod
    def forward(ctx, prefix, q_p, k_p, v_p, q_s, k_s, v_s):  # type: ignore[no-untyped-def]
        result, lse = _merged_attention(prefix, q_p, k_p, v_p, Projection(q_s, k_s, v_s))
        ctx.stop = prefix.stop
        ctx.save_for_backward(q_p, k_p, v_p, q_s, k_s, v_s, result, lse)
        return result

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[no-untyped-def]
        q_p, k_p, v_p, q_s, k_s, v_s, result, lse = ctx.saved_tensors
        q, k, v = (torch.cat(pair, dim=2) for pair in ((q_p, q_s), (k_p, k_s), (v_p, v_s)))
        grads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_out, q, k, v, result, lse, 0.0, False
        )
        stop = ctx.stop
        heads = tuple(g[:, :, :stop] for g in grads)
        tails = tuple(g[:, :, stop:] for g in grads)
        return (None, *heads, *tails)


def prefixed_attention(projection: PrefixedProjection) -> Tensor:
    """Attention output (N, L, heads, head_dim) of a :class:`PrefixedProjection`, written into the
    prefix's buffer (:func:`_merged_attention`); differentiable with respect to every projection."""
    prefix, suffix = projection
    inputs = (prefix.q, prefix.k, prefix.v, *suffix)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        result = _PrefixedAttentionFunction.apply(prefix, *inputs)
    else:
        result, _ = _merged_attention(prefix, prefix.q, prefix.k, prefix.v, suffix)
    return result.transpose(1, 2)


def fused_prefix(projection: Projection, stop: int) -> Optional[PrefixAttention]:
    """:class:`PrefixAttention` from the fused kernel, where one returns the log-sum-exp (CPU flash
    attention); None elsewhere (the probe then computes its scores explicitly). The kernel runs without
    gradient; the prefix keeps the (differentiable) projections for the block pass."""
    if projection.q.device.type != "cpu":
        return None
    q, k, v = (t.detach() for t in projection)
    return PrefixAttention(stop, projection, *_cpu_flash(q, k[:, :, :stop], v[:, :, :stop]))
