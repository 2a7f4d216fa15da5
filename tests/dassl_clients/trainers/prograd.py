"""A ProGrad trainer file as the ProGrad and KgCoOp repositories lay it out (test fixture; see ../README.md).

Its training step calls ``prograd_backward_and_update``, which those repositories add to their fork of
Dassl's trainer; it reuses the CoOp file's modules through a relative import, as packaged trainers do.
"""

import torch
import torch.nn as nn
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from torch.nn import functional as F
from torch.nn.modules.loss import _Loss

from clip import clip

from .coop import CustomCLIP, load_clip_to_cpu

TEMPLATE = "a photo of a {}."


class ProGradLoss(_Loss):
    """Cross-entropy on the labels and the distillation term towards zero-shot CLIP, kept apart."""

    def __init__(self, T):
        super().__init__()
        self.T = T

    def forward(self, logits, zero_shot_logits, label):
        xe_loss = F.cross_entropy(logits, label)
        teacher = F.softmax(zero_shot_logits / self.T, dim=-1)
        student = F.log_softmax(logits / self.T, dim=-1)
        kl_loss = -(teacher * student).sum(-1).mean() * self.T * self.T
        return xe_loss, kl_loss


class ZeroshotCLIP(nn.Module):
    """Hand-crafted prompts on the frozen CLIP: the general knowledge ProGrad keeps the prompt aligned with."""

    def __init__(self, classnames, clip_model):
        super().__init__()
        prompts = torch.cat([clip.tokenize(TEMPLATE.format(c.replace("_", " "))) for c in classnames])
        with torch.no_grad():
            text_features = clip_model.encode_text(prompts)
        self.register_buffer("text_features", text_features / text_features.norm(dim=-1, keepdim=True))
        self.clip_model = clip_model

    def forward(self, image):
        image_features = self.clip_model.encode_image(image.type(self.clip_model.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        return self.clip_model.logit_scale.exp() * image_features @ self.text_features.t()


@TRAINER_REGISTRY.register()
class ProGrad(TrainerX):
    def check_cfg(self, cfg):
        assert cfg.TRAINER.COOP.PREC in ["fp16", "fp32", "amp"]

    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        clip_model = load_clip_to_cpu(cfg)
        if cfg.TRAINER.COOP.PREC == "fp32" or cfg.TRAINER.COOP.PREC == "amp":
            clip_model.float()
        self.model = CustomCLIP(cfg, classnames, clip_model)
        self.zs_clip = ZeroshotCLIP(classnames, clip_model)
        for name, param in self.model.named_parameters():
            if "prompt_learner" not in name:
                param.requires_grad_(False)
        self.model.to(self.device)
        self.zs_clip.to(self.device)
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)
        self.criterion = ProGradLoss(T=cfg.LOSS.T)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        with torch.no_grad():
            zs_clip_output = self.zs_clip(image)
        xe_loss, kl_loss = self.criterion(output, zs_clip_output.detach(), label)
        self.prograd_backward_and_update(xe_loss, kl_loss, self.cfg.LOSS.LAMBDA)
        summary = {"xe_loss": xe_loss.item(), "kl_loss": kl_loss.item(),
                   "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)
