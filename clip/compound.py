"""The MaPLe repository's calling convention for CLIP's towers, on this CLIP.

The MaPLe repository (and IVLP/VPT, which share its ``clip``) builds CLIP with
``clip.build_model(state_dict, design_details)`` and, for MaPLe, calls the towers with its deep
("compound") prompts: ``visual(image, shared_ctx, deeper_prompts)`` and ``transformer([x, deeper_prompts,
counter])``. From block 1 on, block ``i`` replaces the prompt tokens of the previous block by
``deeper_prompts[i-1]``: after the CLS token in the text tower, at the end of the sequence in the image
tower. Their blocks cast those prompts (and ``shared_ctx``) to fp16 before joining them to the tokens,
so an fp32 tower sees them rounded to fp16; this module does the same, so a MaPLe-style file gets the
logits the repository's own CLIP gives. Only a model built for the MaPLe design gets these towers
(subclasses of ours that also take MaPLe's calls); every other CLIP is untouched. IVLP and VPT keep learnable prompts inside CLIP's blocks,
which this CLIP does not build: ``build_model`` refuses those designs in one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from .model import CLIP, Transformer, VisionTransformer

# Designs whose towers are this CLIP's own (MaPLe's prompts come in through the call convention).
PLAIN_DESIGNS = ("CoOp", "CoCoOp", "MaPLe")


def check_design_details(design_details: Optional[Mapping[str, Any]]) -> None:
    """Accept the MaPLe repository's ``design_details`` for the designs this CLIP builds as they do."""
    if design_details is None:
        return
    trainer = design_details.get("trainer")
    if trainer not in PLAIN_DESIGNS:
        raise ValueError(
            f"clip.build_model: design_details trainer {trainer!r} puts learnable prompts inside CLIP's blocks, "
            f"which this CLIP does not build (supported: {', '.join(PLAIN_DESIGNS)}); run the repository's own "
            "train.py through python -m tools.dassl_run, whose clip builds it"
        )


def use_compound_prompt_calls(model: CLIP, design_details: Optional[Mapping[str, Any]]) -> CLIP:
    """For the MaPLe design, let the towers take MaPLe's calls (other designs keep plain towers)."""
    if design_details is not None and design_details.get("trainer") == "MaPLe":
        model.transformer.__class__ = CompoundPromptTransformer
        if isinstance(model.visual, VisionTransformer):
            model.visual.__class__ = CompoundPromptVisionTransformer
    return model


class CompoundPromptTransformer(Transformer):
    """A text tower that also takes MaPLe's ``[x, deeper_prompts, counter]`` (returned in kind)."""

    def forward(self, x: Any, hook: Any = None, batch_first: Optional[bool] = None) -> Any:
        if isinstance(x, list):
            tokens, deeper, counter = x
            return [super().forward(tokens, compound_prompt_hook(deeper, text=True), batch_first), deeper, counter]
        return super().forward(x, hook, batch_first)


class CompoundPromptVisionTransformer(VisionTransformer):
    """An image tower that also takes MaPLe's ``visual(image, shared_ctx, deeper_prompts)``."""

    def forward_tokens(self, x: Tensor, prompts: Optional[Tensor] = None, hook: Any = None) -> tuple[Tensor, Tensor]:
        if isinstance(hook, (list, tuple)):
            prompts = None if prompts is None else prompts.half()  # as MaPLe's tower joins them
            hook = compound_prompt_hook(hook, text=False)
        return super().forward_tokens(x, prompts, hook)


def compound_prompt_hook(deeper: Sequence[Tensor], text: bool):
    """The tower hook that puts ``deeper[i-1]`` in place of the prompt tokens before block ``i`` (i >= 1)."""

    def hook(index: int, x: Tensor, block: Any) -> Optional[Tensor]:
        if index == 0 or index - 1 >= len(deeper):
            return None
        ctx = deeper[index - 1].half().to(x.dtype).expand(x.shape[0], -1, -1)
        n = ctx.shape[1]
        if text:
            return torch.cat([x[:, :1], ctx, x[:, 1 + n :]], dim=1)
        return torch.cat([x[:, :-n], ctx], dim=1)

    return hook
