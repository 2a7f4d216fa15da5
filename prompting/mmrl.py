"""MMRL, multi-modal representation learning (Guo & Gu, CVPR 2025): a shared representation space projected
into the higher blocks of both towers, with a representation-specific image head.

Tensors (K = N_REP_TOKENS, d_r = REP_DIM, layers = REP_LAYERS, 1-based; released 5 tokens, 512, 6..12):

* ``compound_rep_tokens`` R (K, d_r) ~ N(0, 0.02^2), the shared space;
* per layer i: ``compound_rep_tokens_r2vproj[i]`` Linear(d_r, d_v) and ``compound_rep_tokens_r2tproj[i]``
  Linear(d_r, d_t) (clones of one initialisation, as released); before the first layer the projected
  tokens are *inserted* right after CLS / SOS (the sequences grow by K; text features are read at
  ``EOT + K``), before the later layers they replace those K positions;
* ``proj_rep`` (d_v, embed_dim) ~ N(0, d_v^-1) (the release's random init): the image head of the
  representation tokens, ``f_r = mean_k LN_post(x_k) @ proj_rep`` over their last-block outputs.

The class features ``t`` come from the hand-written class prompt with the text-side tokens; the image
features are ``f`` (CLS through the frozen ``proj``) and ``f_r``. Logits use the fixed scale 100:
``z = 100 f t^T``, ``z_r = 100 f_r t^T``, fused ``alpha z + (1 - alpha) z_r``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clip import at_least_fp32

from .deep import PromptPlan
from .model import PromptedCLIP
from .text import CONTEXT_STD

__all__ = ["MMRL_HEADS", "MMRLCLIP", "MMRLRepresentations"]

MMRL_HEADS = ("fusion", "cls", "rep")


class MMRLRepresentations(nn.Module):
    """MMRL's trainable tensors; the plan inserts the projected tokens into both towers."""

    def __init__(
        self,
        clip_model: nn.Module,
        *,
        template: str = "a photo of a {}.",
        n_tokens: int = 5,
        rep_dim: int = 512,
        layers: Sequence[int] = (6, 7, 8, 9, 10, 11, 12),
    ) -> None:
        super().__init__()
        n_blocks = min(clip_model.text_layers, clip_model.vision_layers)
        if clip_model.vision_layers < 1:
            raise ValueError(
                "MMRL inserts tokens into the image transformer: it needs a ViT backbone, not a ResNet"
            )
        layers = [int(layer) for layer in layers]
        if not layers or layers != sorted(set(layers)) or not 1 <= layers[0] <= layers[-1] <= n_blocks:
            raise ValueError(
                f"TRAINER.MMRL.REP_LAYERS must be increasing 1-based block numbers in 1..{n_blocks}, got {layers}"
            )
        if n_tokens < 1 or rep_dim < 1:
            raise ValueError(
                f"TRAINER.MMRL needs N_REP_TOKENS >= 1 and REP_DIM >= 1, got {n_tokens}, {rep_dim}"
            )
        self.class_template, self.prompt_prefix, self.n_ctx, self.learns_text = template, "", 0, True
        self.blocks = [layer - 1 for layer in layers]
        self.compound_rep_tokens = nn.Parameter(torch.empty(n_tokens, rep_dim).normal_(std=CONTEXT_STD))
        to_vision, to_text = (
            nn.Linear(rep_dim, clip_model.vision_width),
            nn.Linear(rep_dim, clip_model.text_width),
        )
        self.compound_rep_tokens_r2vproj = nn.ModuleList([copy.deepcopy(to_vision) for _ in layers])
        self.compound_rep_tokens_r2tproj = nn.ModuleList([copy.deepcopy(to_text) for _ in layers])
        width = clip_model.vision_width
        self.proj_rep = nn.Parameter(width**-0.5 * torch.randn(width, clip_model.embed_dim))

    @property
    def n_tokens(self) -> int:
        return self.compound_rep_tokens.shape[0]

    def forward(self) -> PromptPlan:
        plan = PromptPlan()
        r = self.compound_rep_tokens
        for block, to_v, to_t in zip(
            self.blocks, self.compound_rep_tokens_r2vproj, self.compound_rep_tokens_r2tproj
        ):
            plan.vision_front[block] = to_v(r)
            plan.text_front[block] = to_t(r)
        return plan


class MMRLCLIP(PromptedCLIP):
    """The frozen CLIP with MMRL's tokens; ``forward`` gives the logits of ``head`` (training: fusion)."""

    def __init__(
        self,
        clip_model: nn.Module,
        learner: MMRLRepresentations,
        classnames: Sequence[str],
        alpha: float = 0.7,
    ) -> None:
        super().__init__(clip_model, learner, classnames, fixed_logit_scale=100.0)
        self.alpha = alpha
        self.head = "fusion"  # the evaluation head (the trainer sets it per label space)

    def outputs(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised (f (N, E), f_r (N, E), t (C, E))."""
        plan = self.prompt_learner()
        text = self.text_features(plan)
        features, tokens = self.clip.encode_image_tokens(images, plan.vision_input, self.vision_hook(plan))
        k = self.prompt_learner.n_tokens
        rep = self.clip.visual.ln_post(tokens[:, 1 : 1 + k]).mean(dim=1) @ self.prompt_learner.proj_rep.to(
            tokens.dtype
        )
        return F.normalize(at_least_fp32(features), dim=-1), F.normalize(at_least_fp32(rep), dim=-1), text

    def head_logits(self, outputs: tuple[Tensor, Tensor, Tensor], head: Optional[str] = None) -> Tensor:
        image, rep, text = outputs
        head = head or ("fusion" if self.training else self.head)
        if head not in MMRL_HEADS:
            raise ValueError(f"MMRL head must be one of {MMRL_HEADS}, got {head!r}")
        if head == "cls":
            return self.logits(image, text)
        if head == "rep":
            return self.logits(rep, text)
        return self.alpha * self.logits(image, text) + (1 - self.alpha) * self.logits(rep, text)

    def forward(self, images: Tensor) -> Tensor:
        return self.head_logits(self.outputs(images))
