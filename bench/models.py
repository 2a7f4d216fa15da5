"""Build the model a registered trainer trains, without a dataset: what the benchmark times.

The trainer's own ``build_prompt_learner`` (``build_clip_model`` for CoOp/CoCoOp, ``build_custom_clip`` for
trainers without a separate learner, MMRL and MMRL_BMIP) runs on the project's
default config (``train.py``'s ``extend_cfg``) with ``--opts`` merged, so the benchmark measures exactly
the model ``train.py`` would build. Extra loss terms of PromptSRC/CoPrompt (frozen teachers) are not
part of the timed step: the bench times the prompted model with cross-entropy (HiCroPL: without its
frozen-feature anchoring and, under ``MAPPING write_back``, without the in-place mapping step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import clip
import trainers  # noqa: F401  (registers the trainers)
from engine.config import get_cfg_default
from engine.engine import TRAINER_REGISTRY
from prompting.model import PromptedCLIP
from trainers.base import DeepPromptTrainer
from trainers.coop import ContextTrainer

__all__ = ["EUROSAT_CLASSES", "bench_cfg", "build_prompted", "class_names"]

# EuroSAT's class names as the datasets module renames them (datasets/eurosat.py NEW_CNAMES).
EUROSAT_CLASSES = [
    "Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Industrial Buildings",
    "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River", "Sea or Lake",
]


def class_names(count: int) -> list[str]:
    """``count`` class names: EuroSAT's, cycled (same token lengths as the real label space)."""
    if count < 1:
        raise ValueError(f"the number of classes must be >= 1, got {count}")
    return [EUROSAT_CLASSES[i % len(EUROSAT_CLASSES)] for i in range(count)]


def bench_cfg(backbone: str, opts: Sequence[str]) -> Any:
    """The default config of ``train.py`` with the backbone set and ``opts`` (KEY VALUE ...) merged."""
    from train import extend_cfg  # train.py lives at the repository root, as the project runs from there

    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.MODEL.BACKBONE.NAME = backbone
    if len(opts) % 2:
        raise ValueError(f"--opts takes KEY VALUE pairs, got an odd number of items: {list(opts)}")
    cfg.merge_from_list(list(opts))
    return cfg


def build_prompted(trainer: str, cfg: Any, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
    """The prompted model trainer ``trainer`` builds, on the shared frozen ``clip_model``."""
    if trainer not in TRAINER_REGISTRY:
        raise ValueError(f"unknown trainer {trainer!r}; registered: {TRAINER_REGISTRY.registered_names()}")
    cls = TRAINER_REGISTRY.get(trainer)
    if not issubclass(cls, DeepPromptTrainer):
        raise ValueError(f"trainer {trainer!r} has no prompt learner to benchmark (zero-shot CLIP trains nothing)")
    shell = cls.__new__(cls)  # only the config is needed to build the model; no dataset, no optimiser
    shell.cfg = cfg
    if isinstance(shell, ContextTrainer):
        model = shell.build_clip_model(clip_model, list(classnames))
    elif type(shell).build_prompt_learner is DeepPromptTrainer.build_prompt_learner:
        model = shell.build_custom_clip(clip_model, list(classnames))  # no separate learner (MMRL, MMRL_BMIP)
    else:
        model = PromptedCLIP(clip_model, shell.build_prompt_learner(clip_model), list(classnames))
    return model.to(next(clip_model.parameters()).device)


def build_backbone(name: str, device: torch.device) -> nn.Module:
    """The frozen CLIP shared by every trainer of a run (fp32 weights; mixed precision is autocast)."""
    return clip.build_clip(name, seed=0).to(device).requires_grad_(False)
