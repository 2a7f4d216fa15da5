"""Shared trainer of the deep-prompt family (VPT, IVLP, MaPLe, BMIP and methods built on them).

A method only says which prompt learner it uses (:meth:`DeepPromptTrainer.build_prompt_learner`), its
config namespace (``CFG_NAME``) and the name its model is registered under (``MODEL_NAME``, the official
checkpoint folder). This class does the rest the official trainers repeat: load the frozen CLIP at the
configured precision, wrap it in :class:`~prompting.model.PromptedCLIP`, log the trainable tensors, build
optimizer and scheduler, cross-entropy training with the per-epoch LR step, and checkpoints that hold only
the trainable tensors (so a base-trained checkpoint loads for any label space).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import clip
from engine.engine import TrainerX
from engine.optim import build_lr_scheduler, build_optimizer
from engine.utils import load_pretrained_weights
from prompting.model import PromptedCLIP

__all__ = ["DeepPromptTrainer", "load_frozen_clip"]


def load_frozen_clip(cfg: Any, prec: str, device: torch.device) -> nn.Module:
    """The configured CLIP backbone on ``device`` at precision ``prec`` (fp32 on CPU: no fp16 kernels)."""
    clip_model = clip.build_clip(cfg.MODEL.BACKBONE.NAME)
    if device.type != "cuda" and prec == "fp16":
        print("Note: PREC fp16 runs the frozen CLIP in fp32 on CPU")
        prec = "fp32"
    return clip.to_precision(clip_model, prec).to(device)


class DeepPromptTrainer(TrainerX):
    """TrainerX for a :class:`PromptedCLIP`; subclasses implement :meth:`build_prompt_learner`."""

    CFG_NAME = ""  # config namespace under TRAINER (e.g. "MAPLE")
    MODEL_NAME = "prompt_learner"  # registered model name = checkpoint folder

    @property
    def method_cfg(self) -> Any:
        return self.cfg.TRAINER[self.CFG_NAME]

    def check_cfg(self, cfg: Any) -> None:
        prec = cfg.TRAINER[self.CFG_NAME].PREC
        if prec not in clip.PRECISIONS:
            raise ValueError(f"TRAINER.{self.CFG_NAME}.PREC must be one of {clip.PRECISIONS}, got {prec!r}")

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def build_model(self) -> None:
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        prec = self.method_cfg.PREC
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_frozen_clip(cfg, prec, self.device)
        print(f"Building {type(self).__name__} prompt learner")
        learner = self.build_prompt_learner(clip_model).to(self.device)
        self.model = PromptedCLIP(clip_model, learner, classnames)
        enabled = sorted(name for name, p in self.model.named_parameters() if p.requires_grad)
        print(f"Parameters to be updated: {enabled}")
        print(f"Number of trainable parameters (all used by the forward pass): {self.model.count_trainable():,}")
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(self.model, cfg.MODEL.INIT_WEIGHTS)
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.MODEL_NAME, self.model, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler("cuda") if prec == "amp" and self.device.type == "cuda" else None

    def model_state_dict(self, name: str) -> OrderedDict:
        """Checkpoints hold the trainable tensors only (class buffers and frozen CLIP are rebuilt)."""
        return OrderedDict(self._models[name].trainable_state_dict())

    def compute_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the current label space (methods with extra terms override this)."""
        return F.cross_entropy(self.model(images), labels)

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        images, labels = self.parse_batch_train(batch)
        self.optim.zero_grad()
        if self.scaler is not None:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = self.compute_loss(images, labels)
            self.detect_anomaly(loss)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            loss = self.compute_loss(images, labels)
            self.model_backward(loss)
            self.optim.step()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}
