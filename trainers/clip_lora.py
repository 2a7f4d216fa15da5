"""CLIP-LoRA (``CLIPLoRA``, ``TRAINER.CLIP_LORA``): low-rank updates of both towers' attention (docs/METHODS.md).

The release (github.com/MaxZanella/CLIP-LoRA) trains ``N_ITERS * NUM_SHOTS`` iterations of AdamW with a
cosine schedule stepped every iteration, on one class prompt for every dataset (``"a photo of a {}."``:
each of the release's dataset files sets that template; ``TEMPLATE coop`` uses CoOp's per-dataset one from
``trainers/templates.py`` instead) and a fixed logit scale of 100, then evaluates the final model. Here the iteration budget fixes the number of epochs (``ceil(total / batches per epoch)``, the last
epoch cut at the budget); ``N_ITERS 0`` trains ``OPTIM.MAX_EPOCH`` epochs with the engine's per-epoch
schedule instead. The final model is saved both as ``model.pth.tar-<epoch>`` and as ``model-best.pth.tar``
(no selection happens: it is the final model), so the scripts load it whatever epoch count the budget gave.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
from torch import nn

from engine.engine import TRAINER_REGISTRY
from prompting.lora import LoRAPrompts
from prompting.model import PromptedCLIP

from .base import DeepPromptTrainer
from .templates import dataset_template

__all__ = ["CLIPLoRA", "lora_blocks"]

_BEST_FILE = "model-best.pth.tar"


def lora_blocks(position: str, n_blocks: int) -> list[int]:
    """The release's block sets (``INDEX_POSITIONS_*``, written for 12-block towers) for ``n_blocks``."""
    half = n_blocks // 2
    positions = {
        "all": range(n_blocks),
        "bottom": range(0, 4),
        "mid": range(4, 8),
        "up": range(n_blocks - 4, n_blocks),
        "half-up": range(half, n_blocks),
        "half-bottom": range(half),
        "top3": range(n_blocks - 3, n_blocks),
    }
    if position not in positions:
        raise ValueError(f"TRAINER.CLIP_LORA.POSITION must be one of {sorted(positions)}, got {position!r}")
    blocks = [b for b in positions[position] if b < n_blocks]
    if not blocks:
        raise ValueError(
            f"TRAINER.CLIP_LORA.POSITION {position!r} selects no block of a {n_blocks}-block tower"
        )
    return blocks


class _Budget:
    """The first ``limit`` batches of a loader (the last epoch of an iteration budget)."""

    def __init__(self, loader: Any, limit: int) -> None:
        self.loader, self.limit = loader, limit

    def __len__(self) -> int:
        return min(self.limit, len(self.loader))

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), len(self))


@TRAINER_REGISTRY.register()
class CLIPLoRA(DeepPromptTrainer):
    """LoRA on the q/k/v projections of the chosen blocks of the chosen towers; cross-entropy at scale 100."""

    CFG_NAME = "CLIP_LORA"
    MODEL_NAME = "lora"
    SCRIPTS_DIR = "scripts/clip_lora"
    # A smoke run of two iterations (the release's budget is 500 per shot).
    SMOKE_TEST_OPTS = ("TRAINER.CLIP_LORA.N_ITERS", "2")
    # tests/test_learning.py: 36 iterations (the others' 2 epochs) need a larger step than 500 per shot do.
    LEARNING_TEST_OPTS = ("TRAINER.CLIP_LORA.N_ITERS", "9", "OPTIM.LR", "0.01")

    def build_custom_clip(self, clip_model: nn.Module, classnames: list[str]) -> PromptedCLIP:
        c = self.method_cfg
        if c.ENCODER in ("vision", "both") and clip_model.vision_layers < 1:
            raise ValueError("TRAINER.CLIP_LORA.ENCODER vision/both needs a ViT backbone, not a ResNet")
        learner = LoRAPrompts(
            clip_model,
            template=self.class_template(),
            encoder=c.ENCODER,
            blocks=partial(lora_blocks, c.POSITION),  # per tower depth, as the release's two tables
            projections=tuple(c.PARAMS),
            rank=c.R,
            alpha=c.ALPHA,
            dropout=c.DROPOUT_RATE,
            rank_scaling=c.RANK_SCALING,
        )
        print(
            f"Building CLIP-LoRA: encoder {c.ENCODER}, position {c.POSITION}, params {list(c.PARAMS)}, r {c.R}, "
            f"class prompt {learner.class_template!r}"
        )
        return PromptedCLIP(clip_model, learner, classnames, fixed_logit_scale=c.LOGIT_SCALE or None)

    def class_template(self) -> str:
        """``TRAINER.CLIP_LORA.TEMPLATE``: a template with ``{}``, or ``coop`` for CoOp's per-dataset one."""
        template = self.method_cfg.TEMPLATE
        return dataset_template(self.cfg.DATASET.NAME) if template == "coop" else template

    # ---- the release's iteration budget ------------------------------------------------------------
    @property
    def total_iters(self) -> int:
        return self.method_cfg.N_ITERS * self.cfg.DATASET.NUM_SHOTS

    def build_model(self) -> None:
        super().build_model()
        if self.method_cfg.N_ITERS <= 0:
            return
        if self.cfg.DATASET.NUM_SHOTS < 1:
            raise ValueError(
                "TRAINER.CLIP_LORA.N_ITERS counts iterations per shot: set DATASET.NUM_SHOTS >= 1"
            )
        per_epoch = len(self.train_loader_x)
        self.max_epoch = math.ceil(self.total_iters / per_epoch)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optim, T_max=self.total_iters, eta_min=self.method_cfg.ETA_MIN
        )
        self._scheds[self.MODEL_NAME] = self.sched
        print(
            f"CLIP-LoRA budget: {self.method_cfg.N_ITERS} x {self.cfg.DATASET.NUM_SHOTS} shots = {self.total_iters} "
            f"iterations = {self.max_epoch} epochs of {per_epoch} batches (OPTIM.MAX_EPOCH is not used)"
        )

    def before_epoch(self) -> None:
        super().before_epoch()
        if self.method_cfg.N_ITERS > 0:
            loader = getattr(self.train_loader_x, "loader", self.train_loader_x)
            done = self.epoch * len(loader)
            self.train_loader_x = _Budget(loader, self.total_iters - done)

    def update_lr(self, names: Any = None) -> None:
        if self.method_cfg.N_ITERS <= 0:
            super().update_lr(names)  # per epoch; with a budget the schedule steps every iteration instead

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        summary = super().forward_backward(batch)
        if self.method_cfg.N_ITERS > 0:
            self.sched.step()
        return summary

    def after_epoch(self) -> None:
        super().after_epoch()
        if (self.epoch + 1) == self.max_epoch:
            self.save_model(self.epoch, self.output_dir, model_name=_BEST_FILE)
