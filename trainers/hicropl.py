"""HiCroPL trainer (``TRAINER.HICROPL``): prompts from :mod:`prompting.hicropl`, features anchored on the frozen CLIP.

As released (docs/METHODS.md, HiCroPL), the features the logits use in training and evaluation are
averaged with the frozen CLIP's, and the loss pulls those averaged features back towards them:

    f = norm(norm(f_prompted) + z)      z = frozen CLIP image features of the same images (normalised)
    g = norm(norm(g_prompted) + t)      t = per class, the normalised mean of the normalised frozen
                                            features of its LLM descriptions (CoPrompt's files)
    loss = CE(exp(s) f g^T, y) + LAMBD * [(1 - mean cos(g, t)) + (1 - mean cos(f, z))]

Descriptions come from ``TRAINER.HICROPL.DESCRIPTION_FILE`` or ``<DESCRIPTIONS_DIR>/<stem>_prompt.json``
(default: the project's datasets/descriptions). With ``MAPPING write_back`` (released) the prompt learner's
in-place step (:meth:`~prompting.hicropl.HiCroPLPrompts.advance`) runs before every training step and
every evaluation batch, and the class features are recomputed per batch because the prompts change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.engine import TRAINER_REGISTRY
from prompting.hicropl import HiCroPLOptions, HiCroPLPrompts, resolve_hicropl_options
from prompting.model import PromptedCLIP
from prompting.teachers import description_features, frozen_image_features, load_descriptions

from .base import DeepPromptTrainer
from .coprompt import description_file

__all__ = ["AnchoredCLIP", "HiCroPL", "hicropl_options_from_cfg"]

NODE = "TRAINER.HICROPL"


def hicropl_options_from_cfg(cfg: Any) -> HiCroPLOptions:
    """Resolve ``TRAINER.HICROPL`` against its ``PRESET`` (set keys win)."""
    h = cfg.TRAINER.HICROPL
    return resolve_hicropl_options(
        h.PRESET, n_ctx=h.N_CTX, depth=h.PROMPT_DEPTH, cross_layer=h.CROSS_LAYER, ctx_init=h.CTX_INIT,
        mapping=h.MAPPING, shared_init=h.SHARED_INIT,
    )  # fmt: skip


class AnchoredCLIP(PromptedCLIP):
    """A :class:`PromptedCLIP` whose normalised features are averaged with the frozen CLIP's (module docstring)."""

    def __init__(
        self,
        clip_model: nn.Module,
        prompt_learner: nn.Module,
        classnames: Sequence[str],
        descriptions: Callable[[], str],
    ) -> None:
        """``descriptions()`` gives the path of the class-description file of the current dataset."""
        self._anchor: Optional[Tensor] = None
        self.descriptions = descriptions
        super().__init__(clip_model, prompt_learner, classnames)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        super().set_classnames(classnames)
        self._anchor = None

    def class_anchors(self) -> Tensor:
        """t (C, D): per class, the normalised mean of its normalised description features; computed on
        first use for the current label space (at the model's precision and device)."""
        if self._anchor is None:
            path = self.descriptions()
            texts = load_descriptions(path, self.classnames, node=NODE)
            print(f"Encoding {len(texts[0])} descriptions x {len(texts)} classes from {path}")
            bank = description_features(self.clip, texts, source=path)
            self._anchor = F.normalize(bank.mean(dim=0), dim=-1)
        return self._anchor

    def anchored_features(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(f, g, z, t): the anchored image and class features and the frozen ones they are anchored on."""
        image, text = super().features(images)
        frozen, anchors = frozen_image_features(self.clip, images), self.class_anchors()
        return F.normalize(image + frozen, dim=-1), F.normalize(text + anchors, dim=-1), frozen, anchors

    def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.anchored_features(images)[:2]


@TRAINER_REGISTRY.register()
class HiCroPL(DeepPromptTrainer):
    """Hierarchical cross-modal prompts (bi-directional, split at ``CROSS_LAYER``), anchored on the frozen CLIP."""

    CFG_NAME = "HICROPL"
    MODEL_NAME = "VLPromptLearner"

    def __init__(self, cfg: Any) -> None:
        self.loss_terms: dict[str, float] = {}
        super().__init__(cfg)

    def check_cfg(self, cfg: Any) -> None:
        super().check_cfg(cfg)
        teacher = cfg.TRAINER.HICROPL.TEACHER_NAME
        if teacher and teacher != cfg.MODEL.BACKBONE.NAME:
            raise ValueError(
                f"TRAINER.HICROPL.TEACHER_NAME {teacher!r}: the frozen image features come from the backbone "
                f"{cfg.MODEL.BACKBONE.NAME!r} itself; set it to '' or to MODEL.BACKBONE.NAME (the released "
                "configs use ViT-B/16 for both; the release's default ViT-L/14 gives 768-d features, which "
                "cannot be added to ViT-B/16's 512-d ones)"
            )

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        options = hicropl_options_from_cfg(self.cfg)
        print(f"HiCroPL options: {options}")
        return HiCroPLPrompts(clip_model, options)

    def build_custom_clip(self, clip_model: nn.Module, classnames: list[str]) -> PromptedCLIP:
        print("Building HiCroPL prompt learner")
        learner = self.build_prompt_learner(clip_model)
        model = AnchoredCLIP(clip_model, learner, classnames, self.description_file)
        # Written-back prompts change before every evaluation batch: no class features to reuse.
        model.cache_text = learner.options.mapping != "write_back"
        return model

    def description_file(self) -> str:
        return description_file(self.method_cfg, self.cfg.DATASET.NAME, node=NODE)

    @property
    def writes_back(self) -> bool:
        return self.model.prompt_learner.options.mapping == "write_back"

    def before_train(self) -> None:
        super().before_train()
        self.model.class_anchors()  # a missing or inconsistent description file fails before the first step

    def compute_loss(self, images: Tensor, labels: Tensor) -> Tensor:
        image, text, frozen, anchors = self.model.anchored_features(images)
        ce = F.cross_entropy(self.model.logits(image, text), labels)
        text_term = 1.0 - F.cosine_similarity(text, anchors, dim=1, eps=1e-7).mean()
        image_term = 1.0 - F.cosine_similarity(image, frozen, dim=1, eps=1e-7).mean()
        self.loss_terms = {
            "loss_ce": ce.item(),
            "loss_text": text_term.item(),
            "loss_image": image_term.item(),
        }
        return ce + self.method_cfg.LAMBD * (text_term + image_term)

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        if self.writes_back:
            self.model.prompt_learner.advance()
        summary = super().forward_backward(batch)
        summary.update(self.loss_terms)
        return summary

    def after_epoch(self) -> None:
        """The engine's epoch end, except that a val result equal to the best so far also replaces
        model-best (the release's Dassl keeps the later epoch on a tie; the engine, like stock Dassl, the earlier)."""
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            self.best_result = math.nextafter(self.best_result, -math.inf)
        super().after_epoch()

    @torch.no_grad()
    def model_inference(self, input: Tensor) -> Tensor:
        if self.writes_back:
            self.model.prompt_learner.advance()
        return super().model_inference(input)
