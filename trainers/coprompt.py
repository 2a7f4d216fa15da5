"""CoPrompt: MaPLe prompts + residual adapters + consistency with the frozen CLIP (``TRAINER.CoPrompt``).

Training step (methods_spec section 8), two augmented views ``x1``, ``x2`` of each image
(``DATALOADER.K_TRANSFORMS 2``):

    f, g = prompted + adapted features of x1 and of the class prompts (normalised)
    t    = description features of one random description index k for every class (frozen CLIP)
    z    = frozen CLIP image features of x2 (no prompts, no adapters)
    loss = CE(100 f g^T, y) + W * [(1 - mean cos(g, t)) + (1 - mean cos(f, z))]     (DISTILL cosine)
                            or W * [MSE(g, t) + MSE(f, z)]                           (DISTILL mse)

The descriptions (``{class name: [sentence, ...]}``, the same count per class) are read for exactly the
classes of the current label space from ``TRAINER.CoPrompt.DESCRIPTION_FILE`` or, when empty, from
``<DESCRIPTIONS_DIR>/<dataset stem>_prompt.json`` (CoPrompt's file names; DESCRIPTIONS_DIR defaults to
the project's ``datasets/descriptions``). Per-dataset settings: with ``DATASET_TABLE True`` (released) the
table below replaces N_CTX, PROMPT_DEPTH, TRAINER.W and, for Food101, OPTIM.MAX_EPOCH, after every other
config source, as the release does; each replaced value is printed.

``CoPrompt_BMIP`` (trainers/coprompt_bmip.py) swaps only the prompt core (:meth:`CoPrompt.build_core`).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode as CN

from engine.engine import TRAINER_REGISTRY
from prompting.adapters import AdaptedPrompts
from prompting.learners import CoupledPrompts
from prompting.teachers import (
    description_features,
    description_path,
    frozen_image_features,
    load_descriptions,
)

from .base import DeepPromptTrainer

__all__ = [
    "DATASET_SETTINGS", "DEFAULT_DESCRIPTIONS_DIR", "CoPrompt", "DatasetSettings", "apply_dataset_table",
    "description_file",
]  # fmt: skip

DEFAULT_DESCRIPTIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets", "descriptions")
DISTILL_CHOICES = ("cosine", "mse")


def description_file(method_cfg: Any, dataset_name: str, node: str = "TRAINER.CoPrompt") -> str:
    """The class-description file of a method's config node ``node``: its ``DESCRIPTION_FILE`` if set, else
    ``<DESCRIPTIONS_DIR or datasets/descriptions>/<dataset stem>_prompt.json``."""
    if method_cfg.DESCRIPTION_FILE:
        return os.path.expanduser(method_cfg.DESCRIPTION_FILE)
    directory = os.path.expanduser(method_cfg.DESCRIPTIONS_DIR) if method_cfg.DESCRIPTIONS_DIR else DEFAULT_DESCRIPTIONS_DIR
    return description_path(directory, dataset_name, node)


@dataclass(frozen=True)
class DatasetSettings:
    prompt_depth: int
    n_ctx: int
    w: float
    max_epoch: Optional[int] = None


# The release's per-dataset table (CoPrompt trainers/constants.py), keyed by DATASET.NAME.
DATASET_SETTINGS: dict[str, DatasetSettings] = {
    "ImageNet": DatasetSettings(12, 4, 8.0),
    "Caltech101": DatasetSettings(12, 4, 4.0),
    "OxfordPets": DatasetSettings(12, 2, 0.1),
    "StanfordCars": DatasetSettings(12, 4, 4.0),
    "OxfordFlowers": DatasetSettings(9, 4, 8.0),
    "Food101": DatasetSettings(9, 4, 0.5, max_epoch=5),
    "FGVCAircraft": DatasetSettings(9, 4, 2.0),
    "SUN397": DatasetSettings(12, 4, 8.0),
    "DescribableTextures": DatasetSettings(12, 2, 8.0),
    "EuroSAT": DatasetSettings(12, 2, 0.1),
    "UCF101": DatasetSettings(12, 4, 2.0),
}


def apply_dataset_table(cfg: CN) -> CN:
    """``cfg`` with the dataset's table row applied (when ``TRAINER.CoPrompt.DATASET_TABLE``), frozen."""
    row = DATASET_SETTINGS.get(cfg.DATASET.NAME)
    if not cfg.TRAINER.CoPrompt.DATASET_TABLE or row is None:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    changes = [
        ("TRAINER.CoPrompt.PROMPT_DEPTH", row.prompt_depth),
        ("TRAINER.CoPrompt.N_CTX", row.n_ctx),
        ("TRAINER.W", row.w),
    ]
    if row.max_epoch is not None:
        changes.append(("OPTIM.MAX_EPOCH", row.max_epoch))
    for key, value in changes:
        *path, leaf = key.split(".")
        node = cfg
        for part in path:
            node = node[part]
        if node[leaf] != value:
            print(
                f"CoPrompt per-dataset setting for {cfg.DATASET.NAME}: {key} {node[leaf]} -> {value} "
                "(TRAINER.CoPrompt.DATASET_TABLE False keeps the configured value)"
            )
        node[leaf] = value
    cfg.freeze()
    return cfg


@TRAINER_REGISTRY.register()
class CoPrompt(DeepPromptTrainer):
    """MaPLe prompts with adapters, kept consistent with the frozen CLIP on perturbed inputs."""

    CFG_NAME = "CoPrompt"
    MODEL_NAME = "MultiModalPromptLearner"

    def __init__(self, cfg: Any) -> None:
        self._bank: Optional[tuple[tuple[str, ...], Tensor]] = None
        self.loss_terms: dict[str, float] = {}
        super().__init__(apply_dataset_table(cfg))

    def check_cfg(self, cfg: Any) -> None:
        super().check_cfg(cfg)
        if cfg.TRAINER.DISTILL not in DISTILL_CHOICES:
            raise ValueError(f"TRAINER.DISTILL must be one of {DISTILL_CHOICES}, got {cfg.TRAINER.DISTILL!r}")

    def build_core(self, clip_model: nn.Module) -> nn.Module:
        """The prompt learner the adapters sit on: MaPLe's coupled prompts."""
        c = self.method_cfg
        return CoupledPrompts(clip_model, n_ctx=c.N_CTX, depth=c.PROMPT_DEPTH, ctx_init=c.CTX_INIT)

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        c = self.method_cfg
        return AdaptedPrompts(
            self.build_core(clip_model),
            clip_model.embed_dim,
            image_ratio=c.IMAGE_ADAPTER_RATIO,
            text_ratio=c.TEXT_ADAPTER_RATIO,
            reduction=c.ADAPTER_REDUCTION,
        )

    # ---- frozen teacher ---------------------------------------------------------------------------
    def description_file(self) -> str:
        return description_file(self.method_cfg, self.cfg.DATASET.NAME)

    def description_bank(self) -> Tensor:
        """Frozen description features (K, C, D) of exactly the classes of the current label space."""
        classes = tuple(self.model.classnames)
        if self._bank is None or self._bank[0] != classes:
            path = self.description_file()
            descriptions = load_descriptions(path, classes)
            print(f"Encoding {len(descriptions[0])} descriptions x {len(classes)} classes from {path}")
            self._bank = (classes, description_features(self.model.clip, descriptions, source=path))
        return self._bank[1]

    def before_train(self) -> None:
        super().before_train()
        self.description_bank()  # a missing or inconsistent description file fails before the first step

    # ---- training -----------------------------------------------------------------------------------
    def parse_batch_train(self, batch: dict[str, Any]) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """Two augmented views (K_TRANSFORMS 2); with a single view both sides see the same image."""
        views = batch["img"]
        if isinstance(views, (list, tuple)):
            x1, x2 = views[0], views[-1]
        else:
            x1 = x2 = views
        return (x1.to(self.device), x2.to(self.device)), batch["label"].to(self.device)

    def compute_loss(self, images: tuple[Tensor, Tensor], labels: Tensor) -> Tensor:  # type: ignore[override]
        x1, x2 = images
        image, text = self.model.features(x1)
        logits = self.model.logits(image, text)
        bank = self.description_bank()
        target_text = F.normalize(bank[random.randint(0, bank.shape[0] - 1)], dim=-1)
        target_image = frozen_image_features(self.model.clip, x2)
        if self.cfg.TRAINER.DISTILL == "cosine":
            text_term = 1.0 - F.cosine_similarity(text, target_text, dim=1, eps=1e-7).mean()
            image_term = 1.0 - F.cosine_similarity(image, target_image, dim=1, eps=1e-7).mean()
        else:
            text_term = F.mse_loss(text, target_text)
            image_term = F.mse_loss(image, target_image)
        ce = F.cross_entropy(logits, labels)
        self.loss_terms = {"loss_ce": ce.item(), "loss_text": text_term.item(), "loss_image": image_term.item()}
        return ce + self.cfg.TRAINER.W * (text_term + image_term)

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        summary = super().forward_backward(batch)
        summary.update(self.loss_terms)
        return summary
