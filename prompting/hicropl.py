"""HiCroPL: hierarchical cross-modal prompt learning (Zheng et al., ICCV 2025).

Deep prompts in both towers over blocks ``0..L-1`` (``L`` = prompt depth), split at ``k`` (``CROSS_LAYER``):

* text -> vision in blocks ``0..k-1``: a layer-specific knowledge proxy (LKP) pools each layer's text
  prompts into one token (a learnable query attending to them), and the knowledge mapper refines every
  vision prompt of those layers by attending to all ``k`` text proxies (the multi-scale fusion);
* vision -> text in blocks ``k..L-1``: the same with the roles swapped (vision proxies, text prompts refined).

How the refined prompts reach the towers is the release's main departure (docs/METHODS.md, HiCroPL), one
field of :class:`HiCroPLOptions`:

``mapping = "write_back"`` (released) - the mapped prompts are copied into the prompt tensors in place,
without gradient, before every forward pass (training steps and every evaluation batch); the towers then
read the prompt tensors, so the mapper, the LKPs and the proxy tokens never receive a gradient and stay at
their random initialisation. :meth:`HiCroPLPrompts.advance` is that in-place step; the trainer calls it.

``mapping = "graph"`` (paper) - the towers read the mapped prompts and everything is trained end to end.

``shared_init`` (released True) starts every layer's vision prompt from one draw and every proxy token of a
direction from one N(0, 1) draw (the release wraps one tensor in several Parameters; moved to a GPU they
become independent copies); False draws each independently.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from clip import QuickGELU

from .deep import FixedPrompt, PromptPlan, deep_blocks
from .learners import _require_vit, normal_prompts
from .text import init_context

__all__ = ["HICROPL_PRESETS", "MAPPINGS", "HiCroPLOptions", "HiCroPLPrompts", "KnowledgeMapper", "ProxyPooling",
           "resolve_hicropl_options"]  # fmt: skip

MAPPINGS = ("write_back", "graph")
N_HEADS = 8  # the release's head count of the mapper and of the LKPs


@dataclass(frozen=True)
class HiCroPLOptions:
    """Resolved HiCroPL behaviour (every field set)."""

    n_ctx: int = 16
    depth: int = 12
    cross_layer: int = 6
    ctx_init: str = "a photo of a"
    mapping: str = "write_back"
    shared_init: bool = True

    def __post_init__(self) -> None:
        if self.mapping not in MAPPINGS:
            raise ValueError(f"TRAINER.HICROPL.MAPPING must be one of {MAPPINGS}, got {self.mapping!r}")
        if self.n_ctx < 1:
            raise ValueError(f"TRAINER.HICROPL.N_CTX must be >= 1, got {self.n_ctx}")
        if not 1 <= self.cross_layer < self.depth:
            raise ValueError(
                f"TRAINER.HICROPL.CROSS_LAYER must be in [1, PROMPT_DEPTH - 1] = [1, {self.depth - 1}] (both "
                f"directions need a layer), got {self.cross_layer}"
            )


HICROPL_PRESETS: dict[str, dict[str, Any]] = {
    "released": dict(mapping="write_back", shared_init=True),
    "paper": dict(mapping="graph", shared_init=False),
}


def resolve_hicropl_options(preset: str, **explicit: Any) -> HiCroPLOptions:
    """Options of ``preset`` with every non-None value of ``explicit`` overriding it."""
    if preset not in HICROPL_PRESETS:
        raise ValueError(f"TRAINER.HICROPL.PRESET must be one of {sorted(HICROPL_PRESETS)}, got {preset!r}")
    unknown = set(explicit) - {f.name for f in fields(HiCroPLOptions)}
    if unknown:
        raise ValueError(f"unknown HiCroPL options {sorted(unknown)}")
    values = {**HICROPL_PRESETS[preset], **{k: v for k, v in explicit.items() if v is not None}}
    return replace(HiCroPLOptions(), **values)


def _check_heads(width: int) -> None:
    if width % N_HEADS:
        raise ValueError(
            f"HiCroPL's attention uses {N_HEADS} heads: tower width {width} is not divisible by it"
        )


class ProxyPooling(nn.Module):
    """LKP: one query token attends to a layer's prompts (pre-norm, shared LayerNorm), then a LayerNorm."""

    def __init__(self, width: int) -> None:
        super().__init__()
        _check_heads(width)
        self.attn = nn.MultiheadAttention(width, N_HEADS)
        self.ln_1 = nn.LayerNorm(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, query: Tensor, prompts: Tensor) -> Tensor:
        """(1, D) proxy token of ``prompts`` (n, D)."""
        keys = self.ln_1(prompts)
        query = query + self.attn(self.ln_1(query), keys, keys, need_weights=False)[0]
        return self.ln_2(query)


class KnowledgeMapper(nn.Module):
    """Cross-attention of prompts (queries, width ``width``) to the other tower's proxies (``source_width``):
    project both to ``width``, a pre-norm attention residual and a pre-norm QuickGELU MLP residual."""

    def __init__(self, width: int, source_width: int) -> None:
        super().__init__()
        _check_heads(width)
        self.attn = nn.MultiheadAttention(width, N_HEADS)
        self.linear_q = nn.Linear(width, width)
        self.linear_k = nn.Linear(source_width, width)
        self.linear_v = nn.Linear(source_width, width)
        self.ln_1 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(4 * width, width)),
        ]))  # fmt: skip
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, prompts: Tensor, proxies: Tensor) -> Tensor:
        """Refined ``prompts`` (m, width) given ``proxies`` (p, source_width)."""
        q = self.linear_q(prompts)
        k, v = self.ln_1(self.linear_k(proxies)), self.ln_1(self.linear_v(proxies))
        q = q + self.attn(self.ln_1(q), k, v, need_weights=False)[0]
        return q + self.ffn(self.ln_2(q))


def _same_draws(first: Tensor, count: int) -> nn.ParameterList:
    return nn.ParameterList([nn.Parameter(first.clone()) for _ in range(count)])


class HiCroPLPrompts(nn.Module):
    """HiCroPL's prompt learner. Attribute names follow the release, so its checkpoints keep their keys
    (``ctx``, ``cross_prompts_text`` without its first entry, which is ``ctx``, ``cross_prompts_visual``,
    ``text2visual_net``, ``visual2text_net``, ``attn_pooling_{text,visual}_nets``, ``{text,visual}_proxy_token``)."""

    def __init__(self, clip_model: nn.Module, options: HiCroPLOptions) -> None:
        super().__init__()
        _require_vit(clip_model, "HiCroPL")
        self.options = o = options
        self.learns_text = True
        d_t, d_v = clip_model.text_width, clip_model.vision_width
        self.blocks = deep_blocks(o.depth, min(clip_model.text_layers, clip_model.vision_layers))
        ctx, self.prompt_prefix = init_context(clip_model, o.n_ctx, o.ctx_init)
        self.n_ctx = o.n_ctx
        self.ctx = nn.Parameter(ctx)
        self.cross_prompts_text = normal_prompts(o.depth - 1, o.n_ctx, d_t)
        if o.shared_init:
            self.cross_prompts_visual = _same_draws(normal_prompts(1, o.n_ctx, d_v)[0].data, o.depth)
        else:
            self.cross_prompts_visual = normal_prompts(o.depth, o.n_ctx, d_v)
        self.text2visual_net = KnowledgeMapper(d_v, d_t)
        self.visual2text_net = KnowledgeMapper(d_t, d_v)
        k, rest = o.cross_layer, o.depth - o.cross_layer
        # Per-layer LKPs are clones of one initialisation, as released.
        text_pool, vision_pool = ProxyPooling(d_t), ProxyPooling(d_v)
        self.attn_pooling_text_nets = nn.ModuleList([copy.deepcopy(text_pool) for _ in range(k)])
        self.attn_pooling_visual_nets = nn.ModuleList([copy.deepcopy(vision_pool) for _ in range(rest)])
        if o.shared_init:
            self.text_proxy_token = _same_draws(torch.randn(1, d_t), k)
            self.visual_proxy_token = _same_draws(torch.randn(1, d_v), rest)
        else:
            self.text_proxy_token = nn.ParameterList([nn.Parameter(torch.randn(1, d_t)) for _ in range(k)])
            self.visual_proxy_token = nn.ParameterList(
                [nn.Parameter(torch.randn(1, d_v)) for _ in range(rest)]
            )

    def text_prompts(self) -> list[Tensor]:
        """The text prompt tensors of layers ``0..L-1`` (layer 0 is the input context)."""
        return [self.ctx, *self.cross_prompts_text]

    def mapped(self) -> tuple[Tensor, Tensor]:
        """(vision prompts of layers ``0..k-1`` (k, n, d_v), text prompts of layers ``k..L-1`` (L-k, n, d_t))
        refined by the other tower's proxies, from the current prompt tensors."""
        k, n = self.options.cross_layer, self.n_ctx
        text, vision = self.text_prompts(), list(self.cross_prompts_visual)
        text_proxies = torch.cat(
            [pool(q, p) for pool, q, p in zip(self.attn_pooling_text_nets, self.text_proxy_token, text[:k])]
        )
        low = torch.cat(vision[:k])
        vision_low = self.text2visual_net(low, text_proxies).view(k, n, -1)
        vision_proxies = torch.cat(
            [
                pool(q, p)
                for pool, q, p in zip(self.attn_pooling_visual_nets, self.visual_proxy_token, vision[k:])
            ]
        )
        text_high = self.visual2text_net(torch.cat(text[k:]), vision_proxies).view(len(text) - k, n, -1)
        return vision_low, text_high

    @torch.no_grad()
    def advance(self) -> None:
        """The released in-place step: overwrite the prompt tensors with their mapped values (no gradient)."""
        k = self.options.cross_layer
        vision_low, text_high = self.mapped()
        for target, value in zip(self.cross_prompts_visual[:k], vision_low):
            target.copy_(value)
        for target, value in zip(self.text_prompts()[k:], text_high):
            target.copy_(value)

    def layer_prompts(self) -> tuple[list[Tensor], list[Tensor]]:
        """(text, vision) prompts of layers ``0..L-1`` as the towers read them."""
        text, vision = self.text_prompts(), list(self.cross_prompts_visual)
        if self.options.mapping == "graph":
            k = self.options.cross_layer
            vision_low, text_high = self.mapped()
            vision[:k] = list(vision_low)
            text[k:] = list(text_high)
        return text, vision

    def forward(self) -> PromptPlan:
        text, vision = self.layer_prompts()
        return PromptPlan(
            text_ctx=text[0],
            vision_input=vision[0],
            text_layers={b: FixedPrompt(text[b]) for b in self.blocks},
            vision_layers={b: FixedPrompt(vision[b]) for b in self.blocks},
        )
