"""Zero-shot CLIP: classify with text features of hand-written prompts, nothing trained.

* ``ZeroshotCLIP``: one template per dataset (CoOp's ``CUSTOM_TEMPLATES``), the "CLIP" row of every
  base-to-new table.
* ``ZeroshotCLIP2``: the mean of normalised features over CLIP's 7 selected ImageNet templates plus the
  dataset's own template (not for ImageNet).

Both are evaluation-only: ``python train.py --trainer ZeroshotCLIP --eval-only ...``. No model is
registered, so ``--model-dir`` is not needed and nothing is saved.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import clip
from engine.engine import TRAINER_REGISTRY, TrainerX

from .base import load_frozen_clip
from .templates import dataset_template, ensemble_templates, fill

__all__ = ["ZeroshotCLIP", "ZeroshotCLIP2", "template_text_features"]

# The official zero-shot trainers run CLIP as released (fp16 weights on GPU); on CPU it runs in fp32.
ZERO_SHOT_PREC = "fp16"


@torch.no_grad()
def template_text_features(
    clip_model: nn.Module, templates: Sequence[str], classnames: Sequence[str]
) -> Tensor:
    """Class features (C, embed_dim), fp32: per template encode and normalise, average, renormalise.

    With one template this is simply its normalised features.
    """
    if not templates:
        raise ValueError("template_text_features needs at least one template")
    device = clip_model.token_embedding.weight.device
    mean = None
    for template in templates:
        token_ids = clip.tokenize(fill(template, list(classnames))).to(device)
        features = F.normalize(clip_model.encode_text(token_ids).float(), dim=-1)
        mean = features if mean is None else mean + features
    return F.normalize(mean / len(templates), dim=-1)


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(TrainerX):
    """Zero-shot CLIP with the dataset's hand-written template."""

    ZERO_SHOT = True  # evaluation only (tests/test_all_trainers.py)
    SCRIPTS_DIR = "scripts/zsclip"

    def templates(self) -> list[str]:
        return [dataset_template(self.cfg.DATASET.NAME)]

    def build_model(self) -> None:
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        self.clip_model = load_frozen_clip(cfg, ZERO_SHOT_PREC, self.device).eval()
        templates = self.templates()
        print(f"Prompts: {len(templates)} template(s), e.g. {fill(templates[0], classnames[:1])[0]!r}")
        self.text_features = template_text_features(self.clip_model, templates, classnames)

    def train(self) -> None:  # type: ignore[override]
        raise RuntimeError(
            f"{type(self).__name__} has nothing to train: run train.py with --eval-only "
            "(or scripts/zsclip/zeroshot.sh)"
        )

    def model_inference(self, input: Tensor) -> Tensor:
        image = F.normalize(self.clip_model.encode_image(input).float(), dim=-1)
        return self.clip_model.logit_scale.exp().float() * image @ self.text_features.t()


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """Zero-shot CLIP with the prompt ensemble (7 selected ImageNet templates + the dataset's own)."""

    def templates(self) -> list[str]:
        return ensemble_templates(self.cfg.DATASET.NAME)
