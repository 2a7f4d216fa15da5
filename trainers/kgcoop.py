"""KgCoOp: CoOp pulled towards the hand-crafted class features (``TRAINER.KGCOOP``).

Yao, Zhang, Xu, "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization" (CVPR 2023).
The model is CoOp's (one learnable context, class name at ``CLASS_TOKEN_POSITION``); the loss adds a
knowledge-guided term between the learned class features ``g_c`` and the frozen CLIP's features ``h_c``
of the dataset's hand-written template (both normalised), over the C classes of the label space:

    CE(logits, y) + W * (1 - 1/C sum_c cos(g_c, h_c))        (cosine with eps 1e-7, as released)

:class:`KnowledgeGuidedTrainer` holds what KgCoOp and TCP (trainers/tcp.py) share: the hand-crafted
features of each label space (a non-persistent buffer ``handcrafted`` of the model, rebuilt with the
classes, never saved) and this loss. docs/METHODS.md lists the release's quirks and our options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from engine.engine import TRAINER_REGISTRY
from prompting.model import PromptedCLIP
from prompting.teachers import template_features

from .coop import CLASS_TOKEN_POSITIONS, ContextTrainer, CoOpCLIP, CoOpPromptLearner
from .templates import KGCOOP_TEMPLATES, method_template

__all__ = ["KG_COSINE_EPS", "HandcraftedFeatures", "KgCoOp", "KgCoOpCLIP", "KnowledgeGuidedTrainer", "kg_loss"]

KG_COSINE_EPS = 1e-7  # the release's CosineSimilarity(eps=1e-07)


def kg_loss(text: Tensor, handcrafted: Tensor, eps: float = KG_COSINE_EPS) -> Tensor:
    """1 - mean over classes of cos(learned class feature, hand-crafted class feature), inputs (C, D)."""
    return 1.0 - F.cosine_similarity(text, handcrafted, dim=1, eps=eps).mean()


class HandcraftedFeatures:
    """Mixin for a :class:`PromptedCLIP`: ``handcrafted`` (C, D) = normalised frozen features of
    ``teacher_template`` for the current classes, rebuilt whenever the label space changes."""

    teacher_template: str
    clip: nn.Module

    def set_classnames(self, classnames: Sequence[str]) -> None:
        features = F.normalize(template_features(self.clip, [self.teacher_template], classnames), dim=-1)
        self.register_buffer("handcrafted", features, persistent=False)
        super().set_classnames(classnames)  # type: ignore[misc]


class KgCoOpCLIP(HandcraftedFeatures, CoOpCLIP):
    """CoOp's model plus the hand-crafted class features of its label space."""

    def __init__(
        self,
        clip_model: nn.Module,
        prompt_learner: nn.Module,
        classnames: Sequence[str],
        teacher_template: str,
        class_token_position: str = "end",
    ) -> None:
        self.teacher_template = teacher_template
        super().__init__(clip_model, prompt_learner, classnames, class_token_position)


class KnowledgeGuidedTrainer(ContextTrainer):
    """CE + ``W`` * :func:`kg_loss` against the model's ``handcrafted`` features (KgCoOp, TCP).

    ``TEMPLATES`` is the method's per-dataset template table (``TEMPLATE`` in the config overrides it).
    """

    TEMPLATES: dict[str, str] = KGCOOP_TEMPLATES
    TEMPLATES_NAME = "KGCOOP_TEMPLATES"

    def teacher_template(self) -> str:
        return method_template(
            self.TEMPLATES, self.TEMPLATES_NAME, self.cfg.DATASET.NAME, self.method_cfg.TEMPLATE,
            f"TRAINER.{self.CFG_NAME}.TEMPLATE",
        )  # fmt: skip

    def build_model(self) -> None:
        super().build_model()
        self.loss_terms: dict[str, float] = {}

    def compute_loss(self, images: Tensor, labels: Tensor) -> Tensor:
        image, text = self.model.features(images)
        loss_ce = F.cross_entropy(self.model.logits(image, text), labels)
        loss_kg = self.method_cfg.W * kg_loss(text, self.model.handcrafted)
        self.loss_terms = {"loss_ce": loss_ce.item(), "loss_kg": loss_kg.item()}
        return loss_ce + loss_kg

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        summary = super().forward_backward(batch)
        summary.update(self.loss_terms)
        return summary


@TRAINER_REGISTRY.register()
class KgCoOp(KnowledgeGuidedTrainer):
    """Knowledge-guided Context Optimization: CoOp + ``W`` * (1 - mean cosine to the hand-crafted features)."""

    CFG_NAME = "KGCOOP"

    def check_cfg(self, cfg: Any) -> None:
        super().check_cfg(cfg)
        position = cfg.TRAINER.KGCOOP.CLASS_TOKEN_POSITION
        if position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f"TRAINER.KGCOOP.CLASS_TOKEN_POSITION must be one of {CLASS_TOKEN_POSITIONS}, got {position!r}")

    def build_clip_model(self, clip_model: nn.Module, classnames: list[str]) -> PromptedCLIP:
        c = self.method_cfg
        learner = CoOpPromptLearner(clip_model, len(classnames), c.N_CTX, c.CTX_INIT, c.CSC)
        template = self.teacher_template()
        print(f"Hand-crafted template (knowledge-guided target): {template!r}")
        return KgCoOpCLIP(clip_model, learner, classnames, template, c.CLASS_TOKEN_POSITION)
