"""Dassl's semi-supervised baseline, entropy minimisation, as a trainer file written against Dassl's API
(test fixture; this engine does not ship ``dassl.engine.ssl``): the default ``build_model`` (``SimpleNet``),
``TrainerXU``'s paired batches, ``TRAINER.ENTMIN.LMDA`` from Dassl's default config."""

import torch
from dassl.engine import TRAINER_REGISTRY, TrainerXU
from dassl.metrics import compute_accuracy
from torch.nn import functional as F


@TRAINER_REGISTRY.register()
class EntMin(TrainerXU):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.lmda = cfg.TRAINER.ENTMIN.LMDA

    def forward_backward(self, batch_x, batch_u):
        input_x, label_x, input_u = self.parse_batch_train(batch_x, batch_u)
        output_x = self.model(input_x)
        loss_x = F.cross_entropy(output_x, label_x)
        probs_u = F.softmax(self.model(input_u), 1)
        loss_u = (-probs_u * torch.log(probs_u + 1e-5)).sum(1).mean()
        loss = loss_x + loss_u * self.lmda
        self.model_backward_and_update(loss)
        summary = {"loss_x": loss_x.item(), "acc_x": compute_accuracy(output_x, label_x)[0].item(),
                   "loss_u": loss_u.item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary
