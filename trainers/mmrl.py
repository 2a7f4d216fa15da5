"""MMRL (``MMRL``, ``TRAINER.MMRL``): shared representation tokens in both towers' higher blocks (docs/METHODS.md).

Loss per step (the release's ``MMRL_Loss``), with ``f``, ``f_r``, ``t`` from :class:`prompting.mmrl.MMRLCLIP`
and the frozen CLIP's ``f_zs`` (image tower without tokens) and ``t_zs`` (the same hand-written prompt)::

    ALPHA * CE(100 f t^T) + (1 - ALPHA) * CE(100 f_r t^T) + REG_WEIGHT * [(1 - mean cos(f, f_zs)) + (1 - mean cos(t, t_zs))]

Evaluation head (``TEST_HEAD``): ``fusion`` (default, the open-world choice: the same head for every label
space, the one training optimises), ``cls`` or ``rep``; ``by_label_space`` is the release: fused logits
when the evaluated classes are the training classes (``TASK`` B2N: base; FS: always; CD: ImageNet) and the
CLS head otherwise - a choice that needs to know whether a test class was seen in training.

``DATASET_TABLE True`` (released) sets REG_WEIGHT (and EuroSAT's REP_DIM) per dataset: train.py merges the
table after the config files and before the command line (:meth:`MMRL.dataset_opts`), so a command-line value
wins over it as in the release, whose cross-dataset scripts pass REG_WEIGHT 0.2 and the source's REP_DIM 512.

Evaluating a trained model (``load_model``) takes the shape keys ``N_REP_TOKENS`` and ``REP_DIM`` from the
checkpoint and rebuilds the learner when the config says otherwise (logged), so a cross-dataset evaluation
on EuroSAT, whose table row says REP_DIM 2048, loads the 512-wide ImageNet model. ``REP_LAYERS``' block
numbers are not in the checkpoint: their count is checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode as CN

from engine.engine import TRAINER_REGISTRY
from engine.utils.torchtools import CheckpointMismatchError, load_checkpoint
from prompting.mmrl import MMRL_HEADS, MMRLCLIP, MMRLRepresentations
from prompting.teachers import frozen_image_features, template_features

from .base import DeepPromptTrainer
from .templates import dataset_template

__all__ = ["DATASET_SETTINGS", "MMRL", "evaluation_head", "trained_shapes"]

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


def trained_shapes(state: Mapping[str, Tensor]) -> dict[str, int]:
    """``N_REP_TOKENS``, ``REP_DIM`` and the number of representation layers of an MMRL checkpoint."""
    tokens = state["prompt_learner.compound_rep_tokens"]
    prefix = "prompt_learner.compound_rep_tokens_r2vproj."
    layers = sum(1 for k in state if k.startswith(prefix) and k.endswith(".weight"))
    return {"N_REP_TOKENS": tokens.shape[0], "REP_DIM": tokens.shape[1], "layers": layers}


@TRAINER_REGISTRY.register()
class MMRL(DeepPromptTrainer):
    """Representation tokens R projected into blocks REP_LAYERS of both towers; fused CLS/representation heads."""

    CFG_NAME = "MMRL"
    MODEL_NAME = "MultiModalRepresentationLearner"

    @classmethod
    def dataset_opts(cls, cfg: CN) -> list[Any]:
        """The release's per-dataset ``KEY VALUE`` pairs (train.py merges them before the command line)."""
        if not cfg.TRAINER.MMRL.DATASET_TABLE:
            return []
        row = DATASET_SETTINGS.get(cfg.DATASET.NAME, {})
        return [item for key, value in row.items() for item in (f"TRAINER.MMRL.{key}", value)]

    def shape(self, key: str) -> int:
        """``TRAINER.MMRL.<key>``, or the loaded checkpoint's value of that shape key."""
        return getattr(self, "_trained_shapes", {}).get(key, self.method_cfg[key])

    def log_dataset_table(self) -> None:
        c = self.method_cfg
        for key, value in DATASET_SETTINGS.get(self.cfg.DATASET.NAME, {}).items() if c.DATASET_TABLE else ():
            if c[key] == value:
                print(f"MMRL per-dataset setting ({self.cfg.DATASET.NAME}): {key} = {value}")
            else:
                print(
                    f"MMRL {key} = {c[key]} from the command line, over the per-dataset table's {value} "
                    "(the release merges the command line last)"
                )

    def build_representations(self, clip_model: nn.Module, **mmrl: Any) -> MMRLRepresentations:
        """The learner of the representation tokens (``MMRL_BMIP`` adds BMIP's gates)."""
        return MMRLRepresentations(clip_model, **mmrl)

    def build_custom_clip(self, clip_model: nn.Module, classnames: list[str]) -> MMRLCLIP:
        c = self.method_cfg
        self.log_dataset_table()
        learner = self.build_representations(
            clip_model,
            template=dataset_template(self.cfg.DATASET.NAME),
            n_tokens=self.shape("N_REP_TOKENS"),
            rep_dim=self.shape("REP_DIM"),
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

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Load a trained model with the shapes it was trained with (module docstring)."""
        path = self.model_path(directory, self.MODEL_NAME, epoch) if directory else ""
        if path and os.path.isfile(path):
            self.adopt_trained_shapes(load_checkpoint(path)["state_dict"], path)
        super().load_model(directory, epoch)

    def adopt_trained_shapes(self, state: Mapping[str, Tensor], source: str) -> None:
        """Rebuild the model when the checkpoint's shape keys differ from the configured ones."""
        trained = trained_shapes(state)
        learner = self.model.prompt_learner
        if trained["layers"] != len(learner.blocks):
            raise CheckpointMismatchError(
                f'"{source}" has {trained["layers"]} representation layers, TRAINER.MMRL.REP_LAYERS lists '
                f"{len(learner.blocks)}: evaluate with the REP_LAYERS it was trained with"
            )
        built = {"N_REP_TOKENS": learner.n_tokens, "REP_DIM": learner.compound_rep_tokens.shape[1]}
        shapes = {key: trained[key] for key in built}
        print(f"MMRL shape keys from the trained model ({source}): {shapes}")
        if shapes == built:
            return
        print(f"MMRL: the config's {built} gives way to the trained model's {shapes}; rebuilding the learner")
        self._trained_shapes = shapes
        self.model = self.build_custom_clip(self.model.clip, list(self.model.classnames)).to(self.device)
        if self.method_cfg.PREC == "fp64":
            self.model.double()
        self._models[self.MODEL_NAME] = self.model

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
        reg = c.REG_WEIGHT
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
