"""CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024): low-rank updates of the attention projections of both towers.

For each adapted block and each chosen projection ``p`` in ``q, k, v`` (released: all three, every block of
both towers, rank 2)::

    p(x) = W_p h + b_p + scaling * B_p A_p dropout(h),      h = ln_1(x),  scaling = alpha / sqrt(r)

``A_p`` (r, width) starts Kaiming-uniform (a = sqrt 5, nn.Linear's default), ``B_p`` (width, r) at zero, so
training starts from CLIP. Each projection has its own dropout (p = 0.25 released) on its LoRA input, in
training only. ``scaling`` is the release's ``alpha / sqrt(r)``; ``rank_scaling="rank"`` gives the LoRA
paper's ``alpha / r``.

Why not ``peft``: our attention keeps OpenAI's packed ``in_proj_weight`` (one (3 * width, width)
``nn.Parameter``, so OpenAI state dicts load unchanged). ``peft``'s LoRA wraps ``nn.Linear`` modules; the
only way it reaches a bare parameter (``target_parameters``) is one rank-r update of the whole packed
matrix, which is neither three independent rank-r updates of q, k and v nor able to apply dropout to the
LoRA input. So the update is expressed here through the towers' hook: before an adapted block runs, the
hook hands the block its adapted queries, keys and values (:class:`clip.BlockInput`). The output
projection (the release's optional ``o``) sits inside the block after attention, where no hook reaches:
it is not supported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Optional

import torch
from torch import Tensor, nn

from clip import Projection, ResidualAttentionBlock

from .deep import PromptPlan

__all__ = ["LORA_PROJECTIONS", "LoRAPrompts", "LowRankUpdate", "lora_scaling"]

LORA_PROJECTIONS = ("q", "k", "v")
ENCODERS = ("text", "vision", "both")
RANK_SCALINGS = ("sqrt_rank", "rank")


def lora_scaling(alpha: float, rank: int, rule: str = "sqrt_rank") -> float:
    """``alpha / sqrt(rank)`` (the release) or ``alpha / rank`` (the LoRA paper)."""
    if rule not in RANK_SCALINGS:
        raise ValueError(f"TRAINER.CLIP_LORA.RANK_SCALING must be one of {RANK_SCALINGS}, got {rule!r}")
    return alpha / math.sqrt(rank) if rule == "sqrt_rank" else alpha / rank


class LowRankUpdate(nn.Module):
    """``scaling * B A dropout(h)`` for one projection of width ``width``."""

    def __init__(self, width: int, rank: int, scaling: float, dropout: float) -> None:
        super().__init__()
        self.w_lora_A = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(rank, width), a=math.sqrt(5)))
        self.w_lora_B = nn.Parameter(torch.zeros(width, rank))
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: Tensor) -> Tensor:
        return (self.dropout(h) @ self.w_lora_A.t() @ self.w_lora_B.t()) * self.scaling


class LoRAPrompts(nn.Module):
    """LoRA updates of ``projections`` in the blocks ``blocks(n)`` of each tower of ``n`` blocks named by
    ``encoder`` (all blocks when None; the towers differ in depth on ViT-L/14: 24 image, 12 text blocks).

    Not a prompt learner: the class prompts stay the hand-written ``template`` (``"{}"`` = class name)
    and the plan carries only the blocks' adapted projections. Parameters
    ``text_lora[b][p]`` / ``vision_lora[b][p]`` (b = 0-based block, p in q/k/v).
    """

    def __init__(
        self,
        clip_model: nn.Module,
        *,
        template: str = "a photo of a {}.",
        encoder: str = "both",
        blocks: Optional[Callable[[int], list[int]]] = None,
        projections: tuple[str, ...] = LORA_PROJECTIONS,
        rank: int = 2,
        alpha: float = 1.0,
        dropout: float = 0.25,
        rank_scaling: str = "sqrt_rank",
    ) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"TRAINER.CLIP_LORA.ENCODER must be one of {ENCODERS}, got {encoder!r}")
        unknown = [p for p in projections if p not in LORA_PROJECTIONS]
        if unknown or not projections:
            raise ValueError(
                f"TRAINER.CLIP_LORA.PARAMS must be a non-empty subset of {LORA_PROJECTIONS}, got {list(projections)}"
                " (the output projection 'o' is not supported, prompting/lora.py says why)"
            )
        if rank < 1 or not 0 <= dropout < 1:
            raise ValueError(
                f"TRAINER.CLIP_LORA needs R >= 1 and 0 <= DROPOUT_RATE < 1, got {rank}, {dropout}"
            )
        if "{}" not in template:
            raise ValueError(
                f"TRAINER.CLIP_LORA.TEMPLATE must contain '{{}}' for the class name (or be 'coop'), got {template!r}"
            )
        scaling = lora_scaling(alpha, rank, rank_scaling)
        self.class_template = template
        self.prompt_prefix, self.n_ctx, self.learns_text = "", 0, encoder in ("text", "both")
        self.projections = tuple(projections)

        def tower(width: int, n_blocks: int, name: str) -> nn.ModuleDict:
            chosen = list(range(n_blocks)) if blocks is None else list(blocks(n_blocks))
            bad = [b for b in chosen if not 0 <= b < n_blocks]
            if bad:
                raise ValueError(f"CLIP-LoRA blocks {bad} do not exist in the {n_blocks}-block {name} tower")
            return nn.ModuleDict(
                {
                    str(b): nn.ModuleDict(
                        {p: LowRankUpdate(width, rank, scaling, dropout) for p in projections}
                    )
                    for b in chosen
                }
            )

        if encoder in ("text", "both"):
            self.text_lora = tower(clip_model.text_width, clip_model.text_layers, "text")
        if encoder in ("vision", "both"):
            if clip_model.vision_layers < 1:
                raise ValueError("CLIP-LoRA on the vision encoder needs a ViT backbone, not a ResNet")
            self.vision_lora = tower(clip_model.vision_width, clip_model.vision_layers, "vision")

    def project(self, updates: nn.ModuleDict, x: Tensor, block: ResidualAttentionBlock) -> Projection:
        """The block's queries, keys and values of ``x`` with the low-rank updates added."""
        h = block.ln_1(x)
        q, k, v = block.attn.qkv(h)
        heads = block.attn._heads
        adapted = {"q": q, "k": k, "v": v}
        for name, update in updates.items():
            adapted[name] = adapted[name] + heads(update(h.to(update.w_lora_A.dtype)).to(h.dtype))
        return Projection(adapted["q"], adapted["k"], adapted["v"])

    def forward(self) -> PromptPlan:
        plan = PromptPlan()
        for attr, target in (("text_lora", plan.text_projections), ("vision_lora", plan.vision_projections)):
            for block, updates in getattr(self, attr, {}).items():
                target[int(block)] = partial(self.project, updates)
        return plan
