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

:class:`MMRLBMIPRepresentations` (``MMRL_BMIP``) adds BMIP's bi-directional gated mix of the tokens
(docs/METHODS.md, "MMRL + BMIP").

The class features ``t`` come from the hand-written class prompt with the text-side tokens; the image
features are ``f`` (CLS through the frozen ``proj``) and ``f_r``. Logits use the fixed scale 100:
``z = 100 f t^T``, ``z_r = 100 f_r t^T``, fused ``alpha z + (1 - alpha) z_r``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clip import at_least_fp32

from .bmip import BMIPOptions, CrossModalHeads
from .deep import FixedPrompt, LayerPrompt, PromptPlan
from .interaction import GateMonitor, SlotAttention, gate_scalars
from .model import PromptedCLIP
from .text import CONTEXT_STD

__all__ = ["MMRL_HEADS", "MMRLBMIPRepresentations", "MMRLCLIP", "MMRLRepresentations"]

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

    def own_tokens(self, i: int) -> tuple[Tensor, Tensor]:
        """(vision (K, d_v), text (K, d_t)) tokens of representation layer ``i`` (0-based in REP_LAYERS)."""
        r = self.compound_rep_tokens
        return self.compound_rep_tokens_r2vproj[i](r), self.compound_rep_tokens_r2tproj[i](r)

    def layer_prompts(self, i: int) -> tuple[LayerPrompt, LayerPrompt]:
        """(vision, text) tokens written before representation layer ``i``: MMRL's own projections."""
        vision, text = self.own_tokens(i)
        return FixedPrompt(vision), FixedPrompt(text)

    def forward(self) -> PromptPlan:
        plan = PromptPlan()
        for i, block in enumerate(self.blocks):
            plan.vision_front[block], plan.text_front[block] = self.layer_prompts(i)
        return plan


class MMRLBMIPRepresentations(CrossModalHeads, MMRLRepresentations):
    """MMRL's tensors (drawn first, as MMRL draws them) plus BMIP's cross-modal heads and gates.

    Representation layer 0 inserts MMRL's own tokens (no slots exist yet for a gate to probe); before
    each later layer i the K slots after CLS / SOS become BMIP's gated mix of that layer's tokens:
    vision ``w_v * F_v^i(R) + (1 - w_v) * G_v(F_t^i(R))``, text ``w_t * F_t^i(R) + (1 - w_t) * G_l(F_v^i(R))``,
    ``w = act(gate(A))`` with ``A`` the attention the tower's other tokens pay to the K slots.

    Tensors added: BMIP's heads G_v / G_l (:class:`~prompting.bmip.CrossModalHeads`, per layer k) and
    ``gates_v[k]`` / ``gates_t[k]`` Linear(1, 1); k = i - 1.
    Of ``options`` only the gate's settings apply (activation, attention query / reduction / detach,
    sharing of the heads); CONNECT_METHOD must be BMIP's gate ("None").
    """

    def __init__(self, clip_model: nn.Module, options: BMIPOptions, **mmrl: Any) -> None:
        super().__init__(clip_model, **mmrl)
        if options.connect_method != "None":
            raise ValueError(
                "MMRL_BMIP mixes the representation tokens through BMIP's gates: TRAINER.BMIP.CONNECT_METHOD "
                f"must be 'None', got {options.connect_method!r}"
            )
        n_gated = len(self.blocks) - 1
        if n_gated < 1:
            raise ValueError(
                "MMRL_BMIP needs at least two TRAINER.MMRL.REP_LAYERS (the first inserts the tokens, the gates "
                f"mix them before the later ones), got {[b + 1 for b in self.blocks]}"
            )
        self.options = options
        self.add_cross_modal_heads(clip_model.text_width, clip_model.vision_width, n_gated, n_gated)
        self.gates_v = nn.ModuleList([nn.Linear(1, 1) for _ in range(n_gated)])
        self.gates_t = nn.ModuleList([nn.Linear(1, 1) for _ in range(n_gated)])
        self.attention = SlotAttention(
            text_query=options.text_attn_query, reduce=options.attn_reduce, detach=options.detach_attn
        )
        # Set by the trainer for the training steps of an epoch: records every applied mixing weight.
        self.gate_monitor: Optional[GateMonitor] = None

    @property
    def gated(self) -> bool:
        return True

    def gate_scalars(self, monitor: Optional[GateMonitor] = None) -> dict[str, float]:
        """TensorBoard scalars of every gate (tags by 0-based block) and, from ``monitor``, the applied weights."""
        blocks = self.blocks[1:]
        return gate_scalars((("vision", blocks, self.gates_v), ("text", blocks, self.gates_t)), monitor)

    def layer_prompts(self, i: int) -> tuple[LayerPrompt, LayerPrompt]:
        if i == 0:
            return super().layer_prompts(0)
        vision, text = self.own_tokens(i)
        k, block = i - 1, self.blocks[i]
        return (
            self.gated_mix(vision, self.to_vision(k)(text), self.gates_v[k], "vision", block),
            self.gated_mix(text, self.to_text(k)(vision), self.gates_t[k], "text", block),
        )


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
