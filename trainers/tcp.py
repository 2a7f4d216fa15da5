"""TCP: class-aware textual prompts generated from the hand-crafted class features (``TRAINER.TCP``).

Yao, Zhang, Xu, "TCP: Textual-based Class-aware Prompt tuning for Visual-Language Model" (CVPR 2024).
On KgCoOp's recipe (one learnable context ``ctx`` at the input, the knowledge-guided loss of
trainers/kgcoop.py) TCP adds a Textual Knowledge Embedding: a meta-net

    t_c = Linear(D/4 -> n*d) . QuickGELU . Linear(D -> D/4) (h_c)     reshaped to (n, d)

of the normalised hand-crafted class feature ``h_c`` (D = CLIP's embedding width, d the text width,
n = ``N_CTX``) whose tokens enter the text tower before block ``CLASS_LAYER`` in the context slots
1..n of class c's sequence, mixed as ``MIX * t_c + (1 - MIX) * x`` with the tokens ``x`` already there
(released: block 8, MIX 1 = replaced). ``h_c`` exists for any class, so new classes get their own
class-aware prompts at test time. Class prompts follow the per-dataset ``TCP_PROMPT_TEMPLATES``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import clip
from engine.engine import TRAINER_REGISTRY
from prompting.deep import PromptPlan, SlotView
from prompting.model import PromptedCLIP
from prompting.text import init_context

from .kgcoop import HandcraftedFeatures, KnowledgeGuidedTrainer
from .templates import TCP_PROMPT_TEMPLATES, TCP_TEACHER_TEMPLATES, method_template

__all__ = ["ClassAwarePrompt", "TCP", "TCPCLIP", "TCPPromptLearner"]


@dataclass
class ClassAwarePrompt:
    """Per-class slot tokens (C, n, d) mixed into what the slots hold: ``mix * tokens + (1 - mix) * x``."""

    tokens: Tensor
    mix: float

    @property
    def n_slots(self) -> int:
        return self.tokens.shape[-2]

    def resolve(self, x: Tensor, block: nn.Module, slots: SlotView) -> Tensor:
        if self.mix == 1.0:
            return self.tokens
        return self.mix * self.tokens + (1.0 - self.mix) * x[:, slots.start : slots.stop]


class TCPPromptLearner(nn.Module):
    """The input context ``ctx`` (n, d) and the meta-net mapping class knowledge to n class-aware tokens.

    ``handcrafted`` (C, D) is set by :class:`TCPCLIP` for every label space (a non-persistent buffer).
    """

    learns_text = True

    def __init__(
        self,
        clip_model: nn.Module,
        *,
        n_ctx: int,
        ctx_init: str,
        class_template: str,
        class_layer: int,
        mix: float,
        reduction: int,
    ) -> None:
        super().__init__()
        if not 0 <= class_layer < clip_model.text_layers:
            raise ValueError(
                f"TRAINER.TCP.CLASS_LAYER must be a text block index in [0, {clip_model.text_layers - 1}], "
                f"got {class_layer}"
            )
        if reduction < 1 or clip_model.embed_dim // reduction < 1:
            raise ValueError(f"TRAINER.TCP.META_REDUCTION must be in [1, {clip_model.embed_dim}], got {reduction}")
        ctx, self.prompt_prefix = init_context(clip_model, n_ctx, ctx_init)
        self.ctx = nn.Parameter(ctx)
        self.n_ctx = n_ctx
        self.class_template = class_template
        self.class_layer = class_layer
        self.mix = mix
        self.text_width = clip_model.text_width
        dim, hidden = clip_model.embed_dim, clip_model.embed_dim // reduction
        self.meta_net = nn.Sequential(
            OrderedDict(
                [
                    ("linear1", nn.Linear(dim, hidden)),
                    ("relu", clip.QuickGELU()),  # the release's name for its QuickGELU
                    ("linear2", nn.Linear(hidden, n_ctx * clip_model.text_width)),
                ]
            )
        )
        self.register_buffer("handcrafted", None, persistent=False)

    def class_tokens(self) -> Tensor:
        """Class-aware tokens (C, n, d) of the current label space."""
        if self.handcrafted is None:
            raise RuntimeError("TCPPromptLearner has no class features: it runs inside a TCPCLIP")
        weight = self.meta_net[0].weight
        tokens = self.meta_net(self.handcrafted.to(weight.dtype))
        return tokens.reshape(tokens.shape[0], self.n_ctx, self.text_width)

    def forward(self) -> PromptPlan:
        layer = ClassAwarePrompt(self.class_tokens(), self.mix)
        return PromptPlan(text_ctx=self.ctx, text_layers={self.class_layer: layer})


class TCPCLIP(HandcraftedFeatures, PromptedCLIP):
    """:class:`PromptedCLIP` whose learner reads the hand-crafted features of the current label space."""

    def __init__(
        self, clip_model: nn.Module, prompt_learner: TCPPromptLearner, classnames: Sequence[str], teacher_template: str
    ) -> None:
        self.teacher_template = teacher_template
        super().__init__(clip_model, prompt_learner, classnames)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        super().set_classnames(classnames)
        self.prompt_learner.register_buffer("handcrafted", self.handcrafted, persistent=False)


@TRAINER_REGISTRY.register()
class TCP(KnowledgeGuidedTrainer):
    """Textual-based Class-aware Prompt tuning: KgCoOp + class-aware tokens injected into the text tower."""

    CFG_NAME = "TCP"
    TEMPLATES = TCP_TEACHER_TEMPLATES
    TEMPLATES_NAME = "TCP_TEACHER_TEMPLATES"

    def build_clip_model(self, clip_model: nn.Module, classnames: list[str]) -> PromptedCLIP:
        c = self.method_cfg
        class_template = method_template(
            TCP_PROMPT_TEMPLATES, "TCP_PROMPT_TEMPLATES", self.cfg.DATASET.NAME, c.PROMPT_TEMPLATE,
            "TRAINER.TCP.PROMPT_TEMPLATE",
        )  # fmt: skip
        learner = TCPPromptLearner(
            clip_model, n_ctx=c.N_CTX, ctx_init=c.CTX_INIT, class_template=class_template,
            class_layer=c.CLASS_LAYER, mix=c.MIX, reduction=c.META_REDUCTION,
        )  # fmt: skip
        template = self.teacher_template()
        print(f"Class prompts: {learner.prompt_prefix!r} + {class_template!r}; class knowledge: {template!r}")
        return TCPCLIP(clip_model, learner, classnames, template)

    def build_model(self) -> None:
        """As the shared trainer, with Adam's eps set to ``TRAINER.TCP.ADAM_EPS`` (the release edits
        Dassl's optimizer to eps 1e-3 because Adam on its fp16 meta-net gave NaN losses)."""
        super().build_model()
        if isinstance(self.optim, (torch.optim.Adam, torch.optim.AdamW)):
            for group in self.optim.param_groups:
                group["eps"] = self.method_cfg.ADAM_EPS
