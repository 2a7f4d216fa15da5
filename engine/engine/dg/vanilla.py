"""Dassl's ``Vanilla``: empirical risk minimisation of ``SimpleNet`` (the default ``build_model``)."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from engine.metrics import compute_accuracy

from ..build import TRAINER_REGISTRY
from ..trainer import TrainerX

__all__ = ["Vanilla"]


@TRAINER_REGISTRY.register()
class Vanilla(TrainerX):
    """Cross-entropy on the labelled source data; the LR steps once per epoch."""

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}

    def parse_batch_train(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["img"].to(self.device), batch["label"].to(self.device)
