"""MMRL (``MMRL``, ``TRAINER.MMRL``): shared representation tokens in both towers' higher blocks (docs/METHODS.md).

Loss per step (the release's ``MMRL_Loss``), with ``f``, ``f_r``, ``t`` from :class:`prompting.mmrl.MMRLCLIP`
and the frozen CLIP's ``f_zs`` (image tower without tokens) and ``t_zs`` (the same hand-written prompt)::

    ALPHA * CE(100 f t^T) + (1 - ALPHA) * CE(100 f_r t^T) + REG_WEIGHT * [(1 - mean cos(f, f_zs)) + (1 - mean cos(t, t_zs))]

Evaluation head (``TEST_HEAD``): ``fusion`` (default, the open-world choice: the same head for every label
space, the one training optimises), ``cls`` or ``rep``; ``by_label_space`` is the release: fused logits
when the evaluated classes are the training classes (``TASK`` B2N: base; FS: always; CD: ImageNet) and the
CLS head otherwise - a choice that needs to know whether a test class was seen in training.

``DATASET_TABLE True`` (released) replaces REG_WEIGHT (and EuroSAT's REP_DIM) per dataset, logging each value.
"""

from __future__ import annotations

from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from engine.engine import TRAINER_REGISTRY
from prompting.mmrl import MMRL_HEADS, MMRLCLIP, MMRLRepresentations
from prompting.teachers import frozen_image_features, template_features

from .base import DeepPromptTrainer
from .templates import dataset_template

__all__ = ["DATASET_SETTINGS", "MMRL", "evaluation_head"]

# The release's per-dataset overrides (trainers/config.py of yunncheng/MMRL), keyed by DATASET.NAME.
DATASET_SETTINGS: dict[str, dict[str, float]] = {
    "StanfordCars": {"REG_WEIGHT": 7.0},
    "FGVCAircraft": {"REG_WEIGHT": 6.0},
    "SUN397": {"REG_WEIGHT": 6.0},
    "DescribableTextures": {"REG_WEIGHT": 6.0},
    "Food101": {"REG_WEIGHT": 5.0},
    "OxfordFlowers": {"REG_WEIGHT": 4.0},
    "UCF101": {"REG_WEIGHT": 3.0},
    "ImageNet": {"REG_WEIGHT": 0.5},
    "Caltech101": {"REG_WEIGHT": 0.5},
    "OxfordPets": {"REG_WEIGHT": 0.2},
    "EuroSAT": {"REP_DIM": 2048, "REG_WEIGHT": 0.01},
}
TASKS = ("B2N", "CD", "FS")
TEST_HEADS = (*MMRL_HEADS, "by_label_space")


def evaluation_head(test_head: str, task: str, subsample: str, dataset: str) -> str:
    """The head evaluation uses; ``by_label_space`` follows the release's rule (module docstring)."""
    if test_head not in TEST_HEADS:
        raise ValueError(f"TRAINER.MMRL.TEST_HEAD must be one of {TEST_HEADS}, got {test_head!r}")
    if task not in TASKS:
        raise ValueError(f"TRAINER.MMRL.TASK must be one of {TASKS}, got {task!r}")
    if test_head != "by_label_space":
        return test_head
    seen = {"B2N": subsample == "base", "FS": True, "CD": dataset == "ImageNet"}[task]
    return "fusion" if seen else "cls"


@TRAINER_REGISTRY.register()
class MMRL(DeepPromptTrainer):
    """Representation tokens R projected into blocks REP_LAYERS of both towers; fused CLS/representation heads."""

    CFG_NAME = "MMRL"
    MODEL_NAME = "MultiModalRepresentationLearner"

    def setting(self, key: str) -> Any:
        """``TRAINER.MMRL.<key>``, replaced by the release's per-dataset value when ``DATASET_TABLE``."""
        c = self.method_cfg
        table = DATASET_SETTINGS.get(self.cfg.DATASET.NAME, {}) if c.DATASET_TABLE else {}
        return table.get(key, c[key])

    def build_representations(self, clip_model: nn.Module, **mmrl: Any) -> MMRLRepresentations:
        """The learner of the representation tokens (``MMRL_BMIP`` adds BMIP's gates)."""
        return MMRLRepresentations(clip_model, **mmrl)

    def build_custom_clip(self, clip_model: nn.Module, classnames: list[str]) -> MMRLCLIP:
        c = self.method_cfg
        for key in ("REG_WEIGHT", "REP_DIM"):
            if self.setting(key) != c[key]:
                print(f"MMRL per-dataset setting ({self.cfg.DATASET.NAME}): {key} = {self.setting(key)}")
        learner = self.build_representations(
            clip_model,
            template=dataset_template(self.cfg.DATASET.NAME),
            n_tokens=c.N_REP_TOKENS,
            rep_dim=self.setting("REP_DIM"),
            layers=c.REP_LAYERS,
        )
        model = MMRLCLIP(clip_model, learner, classnames, alpha=c.ALPHA)
        model.head = evaluation_head(
            c.TEST_HEAD, c.TASK, self.cfg.DATASET.SUBSAMPLE_CLASSES, self.cfg.DATASET.NAME
        )
        print(f"MMRL evaluation head: {model.head} (TEST_HEAD {c.TEST_HEAD})")
        self._teacher: Optional[tuple[tuple[str, ...], Tensor]] = None
        self.loss_terms: dict[str, float] = {}
        return model

    def teacher_text_features(self) -> Tensor:
        """Normalised frozen features (C, D) of the hand-written class prompts of the current label space."""
        classes = tuple(self.model.classnames)
        if self._teacher is None or self._teacher[0] != classes:
            features = template_features(self.model.clip, [self.model.prompt_learner.class_template], classes)
            self._teacher = (classes, F.normalize(features, dim=-1))
        return self._teacher[1]

    def compute_loss(self, images: Tensor, labels: Tensor) -> Tensor:
        c = self.method_cfg
        image, rep, text = outputs = self.model.outputs(images)
        reg = self.setting("REG_WEIGHT")
        terms = {
            "loss_ce": c.ALPHA * F.cross_entropy(self.model.head_logits(outputs, "cls"), labels),
            "loss_ce_rep": (1 - c.ALPHA) * F.cross_entropy(self.model.head_logits(outputs, "rep"), labels),
            "loss_image": reg * (1 - (image * frozen_image_features(self.model.clip, images)).sum(-1).mean()),
            "loss_text": reg * (1 - (text * self.teacher_text_features()).sum(-1).mean()),
        }
        self.loss_terms = {k: v.item() for k, v in terms.items()}
        return sum(terms.values())

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        summary = super().forward_backward(batch)
        summary.update(self.loss_terms)
        return summary
