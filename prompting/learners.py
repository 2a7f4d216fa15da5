"""Prompt learners of the deep-prompt family: the modules that own the trainable tensors.

A learner's ``forward()`` takes no input (prompts do not depend on the images) and returns a
:class:`~prompting.deep.PromptPlan`. Attributes read by :class:`~prompting.model.PromptedCLIP`:
``prompt_prefix`` (the text the class prompts start with), ``n_ctx`` (how many positions after SOS the
input context replaces), ``learns_text`` (False: the text side is CLIP's fixed prompt, VPT) and, optionally,
``template`` (a ``"{}"`` class template that replaces the ``prompt_prefix`` form; CLIP-LoRA).

Only tensors that the forward pass uses are created, so the trainable parameter count is the count of
parameters that influence the output.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from .deep import FixedPrompt, PromptPlan, deep_blocks
from .text import CONTEXT_STD, init_context

__all__ = ["CoupledPrompts", "IndependentPrompts", "coupling", "normal_prompts"]


def normal_prompts(count: int, n_tokens: int, width: int) -> nn.ParameterList:
    """``count`` learnable (n_tokens, width) prompt sets drawn from N(0, 0.02^2)."""
    params = nn.ParameterList()
    for _ in range(count):
        p = torch.empty(n_tokens, width)
        nn.init.normal_(p, std=CONTEXT_STD)
        params.append(nn.Parameter(p))
    return params


def coupling(in_width: int, out_width: int, hidden: int = 0) -> nn.Module:
    """A cross-modal projection head: Linear, or a 2-layer GELU MLP when ``hidden`` > 0 (MaPLe-dagger)."""
    if hidden < 0:
        raise ValueError(f"coupling hidden width must be >= 0, got {hidden}")
    if hidden == 0:
        return nn.Linear(in_width, out_width)
    return nn.Sequential(nn.Linear(in_width, hidden), nn.GELU(), nn.Linear(hidden, out_width))


def _require_vit(clip_model: nn.Module, method: str) -> None:
    if getattr(clip_model, "vision_layers", 0) < 1:
        raise ValueError(f"{method} prompts the image transformer: it needs a ViT backbone, not a ResNet")


class IndependentPrompts(nn.Module):
    """Independent deep prompts per tower, no coupling: IVLP, language-only deep prompting and VPT.

    Text: input context ``ctx`` (n_t, d_t) from ``ctx_init`` at positions 1..n_t, and a fresh
    N(0, 0.02^2) set for each block ``1..depth_text-1``. ``depth_text`` = 0 means no text learning (VPT:
    the class prompts are the fixed ``"<ctx_init> <class>."``). Vision: ``vision_ctx`` (n_v, d_v) appended
    after the patches, fresh sets replacing the last n_v tokens in blocks ``1..depth_vision-1``;
    ``depth_vision`` = 0 or ``n_ctx_vision`` = 0 leaves the image tower untouched (language-only).
    """

    def __init__(
        self,
        clip_model: nn.Module,
        *,
        n_ctx_text: int,
        depth_text: int,
        n_ctx_vision: int,
        depth_vision: int,
        ctx_init: str = "a photo of a",
    ) -> None:
        super().__init__()
        self.learns_text = depth_text > 0 and n_ctx_text > 0
        self.text_blocks = deep_blocks(depth_text, clip_model.text_layers) if self.learns_text else range(0)
        self.ctx: Optional[nn.Parameter] = None
        if self.learns_text:
            ctx, self.prompt_prefix = init_context(clip_model, n_ctx_text, ctx_init)
            self.ctx = nn.Parameter(ctx)
            self.n_ctx = n_ctx_text
            self.text_prompts = normal_prompts(len(self.text_blocks), n_ctx_text, clip_model.text_width)
        else:
            self.prompt_prefix = ctx_init.replace("_", " ").strip()
            self.n_ctx = 0
        self.vision_ctx: Optional[nn.Parameter] = None
        self.vision_blocks = range(0)
        if depth_vision > 0 and n_ctx_vision > 0:
            _require_vit(clip_model, "deep vision prompting")
            self.vision_blocks = deep_blocks(depth_vision, clip_model.vision_layers)
            self.vision_ctx = normal_prompts(1, n_ctx_vision, clip_model.vision_width)[0]
            self.vision_prompts = normal_prompts(len(self.vision_blocks), n_ctx_vision, clip_model.vision_width)

    def forward(self) -> PromptPlan:
        plan = PromptPlan(text_ctx=self.ctx, vision_input=self.vision_ctx)
        if self.learns_text:
            plan.text_layers = {b: FixedPrompt(p) for b, p in zip(self.text_blocks, self.text_prompts)}
        if self.vision_ctx is not None:
            plan.vision_layers = {b: FixedPrompt(p) for b, p in zip(self.vision_blocks, self.vision_prompts)}
        return plan


class CoupledPrompts(nn.Module):
    """MaPLe: deep text prompts, and vision prompts that are per-layer projections of them (one-way).

    ``ctx`` (n, d_t) from ``ctx_init``; ``proj`` maps it to the input vision prompt; for blocks
    ``1..depth-1`` a text prompt ``compound_prompts_text[j]`` (N(0, 0.02^2)) and its own head
    ``compound_prompt_projections[j]`` (clones of one initialisation, as released) giving the vision prompt.
    ``coupling_hidden`` > 0 turns every head into a 512-h-768 GELU MLP (MaPLe-dagger, parameter-matched).
    """

    def __init__(
        self,
        clip_model: nn.Module,
        *,
        n_ctx: int,
        depth: int,
        ctx_init: str = "a photo of a",
        coupling_hidden: int = 0,
    ) -> None:
        super().__init__()
        _require_vit(clip_model, "MaPLe")
        if depth < 1:
            raise ValueError(f"MaPLe prompt depth must be >= 1, got {depth}")
        self.learns_text = True
        d_t, d_v = clip_model.text_width, clip_model.vision_width
        ctx, self.prompt_prefix = init_context(clip_model, n_ctx, ctx_init)
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(ctx)
        self.proj = coupling(d_t, d_v, coupling_hidden)
        self.blocks = deep_blocks(depth, min(clip_model.text_layers, clip_model.vision_layers))
        self.compound_prompts_text = normal_prompts(len(self.blocks), n_ctx, d_t)
        head = coupling(d_t, d_v, coupling_hidden)
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(head) for _ in self.blocks])

    def forward(self) -> PromptPlan:
        text, vision = {}, {}
        for block, prompt, head in zip(self.blocks, self.compound_prompts_text, self.compound_prompt_projections):
            text[block] = FixedPrompt(prompt)
            vision[block] = FixedPrompt(head(prompt))
        return PromptPlan(text_ctx=self.ctx, vision_input=self.proj(self.ctx), text_layers=text, vision_layers=vision)

