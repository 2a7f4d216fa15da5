"""PromptSRC: IVLP prompts self-regulated by the frozen CLIP, averaged over epochs (``TRAINER.PROMPTSRC``).

Loss per step, B images, C classes (methods_spec section 7):

    CE(s_p, y) + TEXT_LOSS_WEIGHT * L1(g_p, g_zs) + IMAGE_LOSS_WEIGHT * L1(f_p, f_zs)
               + KL_LOSS_WEIGHT * KL(softmax(s_zs) || softmax(s_p)) summed / (B * C)

with ``g``/``f`` normalised class/image features (``p`` prompted, ``zs`` frozen CLIP without prompts),
``g_zs`` the raw text features averaged over a template list ("textual diversity", normalised after
averaging) and ``s = 100 * f g^T``. ``KL_LOSS_WEIGHT`` is fixed to 1 in the release. After every epoch
the trainable tensors join a Gaussian-weighted running sum (:mod:`prompting.gpa`); after the last epoch
the sum replaces them. The running sum is saved in every checkpoint, so resuming keeps the average
(the release loses it on resume).

``PromptSRC_BMIP`` (trainers/promptsrc_bmip.py) reuses everything here with BMIP's prompt learner.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.engine import TRAINER_REGISTRY
from prompting.gpa import GaussianPromptAggregator, gaussian_epoch_weights
from prompting.teachers import frozen_image_features, template_features

from .base import DeepPromptTrainer
from .ivlp import build_independent_prompts
from .templates import IMAGENET_TEMPLATES, promptsrc_templates

__all__ = ["TEACHER_TEMPLATE_SETS", "PromptSRC", "self_regularised_loss"]

# TRAINER.PROMPTSRC.TEACHER_TEMPLATES: the templates the frozen text features are averaged over.
TEACHER_TEMPLATE_SETS = {
    "promptsrc60": promptsrc_templates,  # PromptSRC's release
    "imagenet80": lambda: list(IMAGENET_TEMPLATES),  # BMIP's PromptSRC_BMIP (methods_spec 9.2)
}


def self_regularised_loss(
    logits: Tensor,
    labels: Tensor,
    text: Tensor,
    image: Tensor,
    zs_text: Tensor,
    zs_image: Tensor,
    zs_logits: Tensor,
    *,
    text_weight: float,
    image_weight: float,
    kl_weight: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PromptSRC's total loss and its weighted terms (``loss_ce``, ``loss_text``, ``loss_image``, ``loss_kl``)."""
    terms = {
        "loss_ce": F.cross_entropy(logits, labels),
        "loss_text": text_weight * F.l1_loss(text, zs_text, reduction="mean"),
        "loss_image": image_weight * F.l1_loss(image, zs_image, reduction="mean"),
        "loss_kl": kl_weight
        * F.kl_div(
            F.log_softmax(logits, dim=1), F.log_softmax(zs_logits, dim=1), reduction="sum", log_target=True
        )
        / logits.numel(),
    }
    return sum(terms.values()), terms


@TRAINER_REGISTRY.register()
class PromptSRC(DeepPromptTrainer):
    """IVLP prompts + L1 to frozen features + KL to frozen logits + Gaussian prompt aggregation."""

    CFG_NAME = "PROMPTSRC"
    MODEL_NAME = "VLPromptLearner"

    def check_cfg(self, cfg: Any) -> None:
        super().check_cfg(cfg)
        name = cfg.TRAINER.PROMPTSRC.TEACHER_TEMPLATES
        if name not in TEACHER_TEMPLATE_SETS:
            raise ValueError(
                f"TRAINER.PROMPTSRC.TEACHER_TEMPLATES must be one of {sorted(TEACHER_TEMPLATE_SETS)}, got {name!r}"
            )

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        return build_independent_prompts(clip_model, self.method_cfg, self.CFG_NAME)

    def build_model(self) -> None:
        super().build_model()
        weights = self.build_gpa()
        c = self.method_cfg
        shown = ", ".join(f"{e + 1}: {w:.3f}" for e, w in enumerate(weights) if w >= 5e-4)
        print(f"GPA epoch weights (mean {c.GPA_MEAN}, std {c.GPA_STD}; >= 0.0005 shown): {shown}")
        self._teacher: Optional[tuple[tuple[str, ...], Tensor]] = None
        self.loss_terms: dict[str, float] = {}

    def build_gpa(self) -> list[float]:
        """The Gaussian aggregator over the model's current trainable tensors (again after DePT resizes its head)."""
        c = self.method_cfg
        weights = gaussian_epoch_weights(c.GPA_MEAN, c.GPA_STD, self.cfg.OPTIM.MAX_EPOCH)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.model.gpa = GaussianPromptAggregator(trainable, weights)
        return weights

    def model_state_dict(self, name: str) -> OrderedDict:
        """Trainable tensors plus the GPA running sum, so a resumed run continues the same average."""
        state = super().model_state_dict(name)
        state.update(("gpa." + key, value) for key, value in self.model.gpa.state_dict().items())
        return state

    # ---- frozen teacher ---------------------------------------------------------------------------
    def teacher_text_features(self) -> Tensor:
        """Normalised template-averaged frozen class features (C, D) of the current label space."""
        classes = tuple(self.model.classnames)
        if self._teacher is None or self._teacher[0] != classes:
            templates = TEACHER_TEMPLATE_SETS[self.method_cfg.TEACHER_TEMPLATES]()
            print(f"Encoding the frozen teacher text features: {len(templates)} templates x {len(classes)} classes")
            features = template_features(self.model.clip, templates, classes)
            self._teacher = (classes, F.normalize(features, dim=-1))
        return self._teacher[1]

    # ---- training -----------------------------------------------------------------------------------
    def compute_loss(self, images: Tensor, labels: Tensor) -> Tensor:
        c = self.method_cfg
        image, text = self.model.features(images)
        zs_text = self.teacher_text_features()
        zs_image = frozen_image_features(self.model.clip, images)
        with torch.no_grad():
            zs_logits = self.model.logits(zs_image, zs_text)
        loss, terms = self_regularised_loss(
            self.model.logits(image, text), labels, text, image, zs_text, zs_image, zs_logits,
            text_weight=c.TEXT_LOSS_WEIGHT, image_weight=c.IMAGE_LOSS_WEIGHT, kl_weight=c.KL_LOSS_WEIGHT,
        )
        self.loss_terms = {k: v.item() for k, v in terms.items()}
        return loss

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        summary = super().forward_backward(batch)
        summary.update(self.loss_terms)
        return summary

    def after_epoch(self) -> None:
        """Add this epoch to the GPA sum; after the last epoch swap in the average, then checkpoint."""
        self.model.gpa.accumulate(self.epoch)
        if (self.epoch + 1) == self.max_epoch:
            print("Using GPA model for final inference...")
            self.model.gpa.apply()
            self.model.invalidate_text_cache()
        super().after_epoch()
