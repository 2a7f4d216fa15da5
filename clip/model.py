"""OpenAI CLIP architecture (ViT and ModifiedResNet towers) with per-block prompt hooks.

The towers know nothing about prompt methods. A method expresses itself through a *hook*:
``hook(index, x, block) -> Tensor | None`` is called before block ``index`` of a tower runs with the
batch-first token tensor ``x`` (N, L, D); a returned tensor replaces ``x``. Blocks run fused
``F.scaled_dot_product_attention``; ``ResidualAttentionBlock.attention_probs`` recomputes the
head-averaged attention probabilities on demand for methods (BMIP) that gate on them. A hook that probed a
block and then replaced a few rows may return a :class:`BlockInput` carrying the probe's projections with
those rows re-projected, so the block does not project the whole sequence a second time; the same
:class:`BlockInput` carries an adapted projection (LoRA) or a residual added after the block (MMA).

Parameter and buffer names are OpenAI's exactly, so OpenAI and open_clip state dicts load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

QueryRows = Union[None, slice, Tensor, list[int]]


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


class Probed(NamedTuple):
    """What :meth:`ResidualAttentionBlock.memoize_projection` keeps of a probed input ``x``."""

    x: Tensor
    projection: Projection
    prefix: Optional[PrefixAttention] = None


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
            return self.out_proj(_prefixed_attention(projection).reshape(n, length, -1))
        q, k, v = self.qkv(x) if projection is None else projection
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, -1))


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


def _few_key_probs(q: Tensor, k: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    """Probabilities (N, heads, R, C) that queries ``q`` pay to the few keys ``k``, normalised over those
    keys and the other keys their row log-sum-exp ``lse`` (from the kernel) summarises; and the total row
    log-sum-exp (N, heads, R). Both in at least fp32."""
    scores = _few_key_scores(q, k, torch.promote_types(q.dtype, torch.float32))
    total = torch.logaddexp(lse.to(scores.dtype), scores.logsumexp(dim=-1))
    return torch.exp(scores - total.unsqueeze(-1)), total


def _cpu_flash(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """CPU flash attention: output and row log-sum-exp (it reads strided per-head views without copies)."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)


def _extend_into(dest: Tensor, out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor) -> None:
    """Write into ``dest`` (which may be ``out``) the attention output of queries ``q`` whose attention
    over some keys is (``out``, ``lse``), extended by the few keys ``k``/values ``v``: the exact
    log-sum-exp merge, in place, one pass per extra key. Temporaries of the output's size are avoided on
    purpose: at batch 100 each one costs more in page faults than in arithmetic."""
    probs, total = _few_key_probs(q, k, lse)  # (N, heads, rows, few), (N, heads, rows)
    torch.mul(out, torch.exp(lse.to(total.dtype) - total).unsqueeze(-1).to(dest.dtype), out=dest)
    weights = probs.to(dest.dtype)
    v = v.to(dest.dtype)
    for j in range(k.shape[2]):
        dest.addcmul_(weights[..., j : j + 1], v[:, :, j : j + 1])


def _prefixed_attention(projection: PrefixedProjection) -> Tensor:
    """Attention output (N, L, heads, head_dim) of a :class:`PrefixedProjection`, written into the
    prefix's buffer: rows ``[:stop]`` extend their fused output by the new keys ``[stop:]``; the few new
    rows attend to the keys ``[:stop]`` through the fused kernel and are extended the same way."""
    prefix, (q_s, k_s, v_s) = projection
    result = prefix.take_output()  # (N, heads, L, head_dim), laid out as (N, L, heads, head_dim)
    stop = prefix.stop
    head = result[:, :, :stop]
    _extend_into(head, head, prefix.lse[:, :, :stop], prefix.q, k_s, v_s)
    tail_out, tail_lse = _cpu_flash(q_s, prefix.k, prefix.v)
    _extend_into(result[:, :, stop:], tail_out, tail_lse, q_s, k_s, v_s)
    return result.transpose(1, 2)


def _fused_prefix(projection: Projection, stop: int) -> Optional[PrefixAttention]:
    """:class:`PrefixAttention` from the fused kernel, where one returns the log-sum-exp (CPU flash
    attention); None elsewhere (the probe then computes its scores explicitly)."""
    if projection.q.device.type != "cpu":
        return None
    q, k, v = projection
    return PrefixAttention(stop, projection, *_cpu_flash(q, k[:, :, :stop], v[:, :, :stop]))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block; ``causal`` selects the text tower's mask (built for any length)."""

    def __init__(self, d_model: int, n_head: int, causal: bool = False) -> None:
        super().__init__()
        self.attn = Attention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(d_model, d_model * 4))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(d_model * 4, d_model))
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

    def _may_fuse_prefix(self, x: Tensor) -> bool:
        """The fused prefix serves only a memoised, non-causal probe that needs no gradient: the kernel's
        log-sum-exp is not differentiable (training keeps the explicit scores; its probe is detached)."""
        if self._memo is None or self.causal:
            return False
        return not torch.is_grad_enabled() or not (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )

    def attention_to_suffix(self, x: Tensor, start: int) -> Tensor:
        """Head-averaged probabilities (N, start, L - start) the rows ``[:start]`` of ``x`` pay to the
        keys ``[start:]``, normalised over all keys: :meth:`attention_probs` ``(x, slice(0, start))[..., start:]``.

        Memoised and gradient-free (evaluation), the rows' normaliser over the keys ``[:start]`` comes
        from a fused attention of that prefix (:class:`PrefixAttention`, kept in the memo), which the
        block's own pass extends instead of recomputing: only (start, L - start) scores are materialised.
        """
        if x.dim() != 3 or not 0 < start < x.shape[1]:
            raise ValueError(
                f"attention_to_suffix expects x (N, L, D) and 0 < start < L, got {tuple(x.shape)} and {start}"
            )
        held = self._probed(x) if self._may_fuse_prefix(x) else None
        prefix = None
        if held is not None:
            prefix = (
                held.prefix
                if held.prefix is not None and held.prefix.stop == start
                else _fused_prefix(held.projection, start)
            )
        if prefix is None:
            return self.attention_probs(x, slice(0, start))[:, :, start:]
        self._memo[id(x)] = held._replace(prefix=prefix)
        probs, _ = _few_key_probs(prefix.q, held.projection.k[:, :, start:], prefix.lse[:, :, :start])
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


class Transformer(nn.Module):
    """A stack of blocks; the hook runs before every block and may replace the tokens.

    ``batch_first`` is the layout a plain call ``transformer(x)`` takes and returns: True (N, L, D), as
    set by ``build_clip``, or False (L, N, D), OpenAI's layout, as set by the OpenAI-API loaders
    (``clip.load``, ``clip.build_model``) so that code which permutes to LND around the call (CoOp's
    ``TextEncoder``) gives the right features. The towers pass ``batch_first=True`` explicitly, so the
    attribute concerns direct callers only; blocks and hooks always see batch-first tokens.
    """

    def __init__(
        self, width: int, layers: int, heads: int, causal: bool = False, batch_first: bool = True
    ) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.batch_first = batch_first
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads, causal=causal) for _ in range(layers)]
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


class VisionTransformer(nn.Module):
    """ViT image tower. Optional prompts are appended after the patch tokens (no positional embedding)."""

    def __init__(
        self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        grid = input_resolution // patch_size
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid**2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    @property
    def width(self) -> int:
        return self.conv1.out_channels

    def embed(self, x: Tensor, prompts: Optional[Tensor] = None) -> Tensor:
        """Token sequence entering block 0: [CLS, patches..., prompts...] after ``ln_pre``."""
        x = self.conv1(x)
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        if prompts is not None:
            x = torch.cat([x, self._expand_prompts(prompts, x)], dim=1)
        return self.ln_pre(x)

    def _expand_prompts(self, prompts: Tensor, x: Tensor) -> Tensor:
        width = x.shape[-1]
        if prompts.dim() == 2 and prompts.shape[1] == width:
            prompts = prompts.unsqueeze(0).expand(x.shape[0], -1, -1)
        elif not (prompts.dim() == 3 and prompts.shape[0] == x.shape[0] and prompts.shape[2] == width):
            raise ValueError(
                f"vision prompts must be (n, {width}) or ({x.shape[0]}, n, {width}), got {tuple(prompts.shape)}"
            )
        return prompts.to(x.dtype)

    def forward(self, x: Tensor, prompts: Optional[Tensor] = None, hook: Optional[Hook] = None) -> Tensor:
        return self.forward_tokens(x, prompts, hook)[0]

    def forward_tokens(
        self, x: Tensor, prompts: Optional[Tensor] = None, hook: Optional[Hook] = None
    ) -> tuple[Tensor, Tensor]:
        """Features (N, output_dim) and the last block's output tokens (N, L, width), before ``ln_post``
        (MMRL reads its representation tokens there)."""
        x = self.transformer(self.embed(x, prompts), hook, batch_first=True)
        return self.ln_post(x[:, 0, :]) @ self.proj.to(x.dtype), x


class Bottleneck(nn.Module):
    """ResNet bottleneck with anti-aliased (avg-pool) striding, as in CLIP's ModifiedResNet."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample: Optional[nn.Sequential] = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential()
            self.downsample.add_module("-1", nn.AvgPool2d(stride))
            self.downsample.add_module("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False))
            self.downsample.add_module("1", nn.BatchNorm2d(planes * self.expansion))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """QKV attention pooling: the mean token (plus positional embedding) queries the feature map."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        n, length, d = x.shape
        heads = self.num_heads

        def split(t: Tensor) -> Tensor:
            return t.view(n, t.shape[1], heads, d // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.q_proj(x[:, :1])), split(self.k_proj(x)), split(self.v_proj(x))
        )
        return self.c_proj(out.transpose(1, 2).reshape(n, d))


class ModifiedResNet(nn.Module):
    """CLIP's ResNet image tower (3-conv stem, avg-pool striding, attention pooling). Has no hook points."""

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        output_dim: int,
        heads: int,
        input_resolution: int = 224,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed_dim = width * 32
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, prompts: Optional[Tensor] = None, hook: Optional[Hook] = None) -> Tensor:
        """``hook`` is accepted for a uniform signature and ignored (no token blocks); prompts are refused."""
        if prompts is not None:
            raise ValueError("ModifiedResNet image towers cannot take vision prompts; use a ViT backbone")
        x = x.to(self.conv1.weight.dtype)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.avgpool(F.relu(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


class CLIP(nn.Module):
    """CLIP with OpenAI's constructor signature and parameter names; batch-first towers with hooks.

    ``vision_layers`` is the OpenAI argument: an int (ViT depth) or a 4-tuple (ResNet stage depths).
    After construction the attribute ``vision_layers`` is the number of hookable image blocks (0 for
    ResNet) and ``vision_stage_layers`` keeps the ResNet tuple.
    """

    def __init__(
        self,
        embed_dim: int,
        image_resolution: int,
        vision_layers: Union[int, tuple[int, int, int, int]],
        vision_width: int,
        vision_patch_size: Optional[int],
        context_length: int,
        vocab_size: int,
        transformer_width: int,
        transformer_heads: int,
        transformer_layers: int,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.text_width = transformer_width
        self.text_layers = transformer_layers
        self.vision_width = vision_width
        self.image_resolution = image_resolution
        self.visual: Union[VisionTransformer, ModifiedResNet]
        if isinstance(vision_layers, (tuple, list)):
            heads = vision_width * 32 // 64
            self.visual = ModifiedResNet(
                tuple(vision_layers), embed_dim, heads, image_resolution, vision_width
            )
            self.vision_layers = 0
            self.vision_stage_layers: Optional[tuple[int, ...]] = tuple(vision_layers)
        else:
            if vision_patch_size is None:
                raise ValueError("a ViT image tower needs vision_patch_size")
            heads = vision_width // 64
            self.visual = VisionTransformer(
                image_resolution, vision_patch_size, vision_width, vision_layers, heads, embed_dim
            )
            self.vision_layers = vision_layers
            self.vision_stage_layers = None
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, causal=True)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # Default of ``trim`` in the text encoders; False runs all 77 positions as the official code does
        # (the benchmark's "before", docs/PERFORMANCE.md).
        self.trim_text = True
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation (used only for random backbones; checkpoints overwrite it)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features**-0.5
            for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(proj.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for block in stage:
                    nn.init.zeros_(block.bn3.weight)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        attn_std = width**-0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the frozen towers (fp16 after ``to_precision(model, "fp16")``)."""
        return self.visual.conv1.weight.dtype

    def encode_image(
        self, images: Tensor, prompts: Optional[Tensor] = None, hook: Optional[Hook] = None
    ) -> Tensor:
        """Image features (N, embed_dim), not normalised; see ``VisionTransformer.forward`` for prompts."""
        return self.visual(images.to(self.dtype), prompts, hook)

    def encode_image_tokens(
        self, images: Tensor, prompts: Optional[Tensor] = None, hook: Optional[Hook] = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`encode_image` plus the last block's output tokens (ViT only)."""
        if not isinstance(self.visual, VisionTransformer):
            raise ValueError("encode_image_tokens needs a ViT image tower, not a ResNet")
        return self.visual.forward_tokens(images.to(self.dtype), prompts, hook)

    def encode_text(
        self, token_ids: Tensor, hook: Optional[Hook] = None, trim: Optional[bool] = None
    ) -> Tensor:
        """Text features (N, embed_dim) of tokenized texts; EOT is the largest id in each row."""
        x = self.token_embedding(token_ids)
        return self.encode_text_embeddings(x, token_ids.argmax(dim=-1), hook=hook, trim=trim)

    def encode_text_embeddings(
        self,
        x: Tensor,
        eot_indices: Tensor,
        hook: Optional[Hook] = None,
        trim: Optional[bool] = None,
        eot_offset: int = 0,
    ) -> Tensor:
        """Text features from embedded tokens ``x`` (N, L, width); positional embedding is added here.

        ``eot_offset``: how many tokens the hook inserts before every EOT (MMRL's representation tokens
        after SOS); the features are read at ``eot_indices + eot_offset``.

        ``trim`` cuts the sequence after the last EOT before the blocks: exact under the causal mask
        (no position attends to later ones), and the hook then sees the shorter sequence. None means
        the model's ``trim_text`` (True unless a benchmark switched it off).
        """
        if x.dim() != 3 or x.shape[-1] != self.text_width or x.shape[1] > self.context_length:
            raise ValueError(
                f"text embeddings must be (N, L<={self.context_length}, {self.text_width}), got {tuple(x.shape)}"
            )
        eot_indices = torch.as_tensor(eot_indices, device=x.device).long().reshape(-1)
        if eot_indices.shape[0] != x.shape[0]:
            raise ValueError(f"eot_indices has {eot_indices.shape[0]} entries for {x.shape[0]} sequences")
        x = x.to(self.dtype) + self.positional_embedding[: x.shape[1]].to(self.dtype)
        trim = self.trim_text if trim is None else trim
        if trim:
            x = x[:, : int(eot_indices.max()) + 1]
        x = self.ln_final(self.transformer(x, hook, batch_first=True))
        rows = torch.arange(x.shape[0], device=x.device)
        return x[rows, eot_indices + eot_offset] @ self.text_projection.to(x.dtype)

    def forward(self, images: Tensor, token_ids: Tensor) -> tuple[Tensor, Tensor]:
        """OpenAI's contrastive logits: (logits_per_image, logits_per_text)."""
        image_features = F.normalize(self.encode_image(images), dim=-1)
        text_features = F.normalize(self.encode_text(token_ids), dim=-1)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


PRECISIONS = ("fp16", "fp32", "amp", "amp_bf16", "fp64")


def at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in fp32 if it is fp16/bf16, else unchanged: features leave fp16 towers in fp32, while an
    fp64 model stays fp64 end to end (``PREC fp64``, the exactness tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def convert_weights(model: nn.Module) -> None:
    """OpenAI's ``clip.model.convert_weights``: halve, in place, what its released weights store in fp16.

    Conv/linear/attention weights and biases and the ``text_projection`` / ``proj`` matrices of any module
    tree (a CLIP or a part of one); LayerNorm/BatchNorm, embeddings and ``logit_scale`` stay as they are.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.half()
            if module.bias is not None:
                module.bias.data = module.bias.data.half()
        elif isinstance(module, Attention):
            module.in_proj_weight.data = module.in_proj_weight.data.half()
            module.in_proj_bias.data = module.in_proj_bias.data.half()
        for name in ("text_projection", "proj"):
            tensor = getattr(module, name, None)
            if isinstance(tensor, nn.Parameter):
                tensor.data = tensor.data.half()


def to_precision(model: CLIP, prec: str) -> CLIP:
    """Set the weight precision the configs' ``PREC`` asks for and return the model.

    ``fp16`` halves what OpenAI's released weights store in fp16 (:func:`convert_weights`: conv/linear/
    attention weights and the two projections); LayerNorm/BatchNorm, embeddings and ``logit_scale`` stay
    fp32 and are cast on use. ``fp32``, ``amp`` and ``amp_bf16`` keep fp32 weights (the two ``amp``
    choices mean the trainer wraps the training forward in fp16 / bf16 autocast,
    ``trainers.base.autocast_context``). ``fp64`` makes every floating tensor float64 (exactness checks
    against float64 references, not for training).
    """
    if prec not in PRECISIONS:
        raise ValueError(f"precision {prec!r} is not one of {PRECISIONS}")
    if prec == "fp64":
        return model.double()
    model.float()
    if prec == "fp16":
        convert_weights(model)
    return model
