"""Dassl's DomainMix baseline for domain generalisation, as a trainer file written against Dassl's API
(test fixture; this engine does not ship ``dassl.engine.dg``): each image is mixed with a partner from
another source domain (``crossdomain``) or any partner (``random``), with a weight drawn from
Beta(``ALPHA``, ``BETA``); ``TRAINER.DOMAINMIX`` comes from Dassl's default config."""

import torch
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from torch.nn import functional as F


@TRAINER_REGISTRY.register()
class DomainMix(TrainerX):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.mix_type = cfg.TRAINER.DOMAINMIX.TYPE
        self.alpha = cfg.TRAINER.DOMAINMIX.ALPHA
        self.beta = cfg.TRAINER.DOMAINMIX.BETA
        self.dist_beta = torch.distributions.Beta(self.alpha, self.beta)

    def forward_backward(self, batch):
        images, label_a, label_b, lam = self.parse_batch_train(batch)
        output = self.model(images)
        loss = lam * F.cross_entropy(output, label_a) + (1 - lam) * F.cross_entropy(output, label_b)
        self.model_backward_and_update(loss)
        summary = {"loss": loss.item(), "acc": compute_accuracy(output, label_a)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def parse_batch_train(self, batch):
        images = batch["img"].to(self.device)
        target = batch["label"].to(self.device)
        domain = batch["domain"].to(self.device)
        return self.domain_mix(images, target, domain)

    def domain_mix(self, x, target, domain):
        if self.alpha > 0:
            lam = self.dist_beta.rsample((1,)).to(x.device)
        else:
            lam = torch.tensor(1.0, device=x.device)
        perm = torch.randperm(x.size(0), dtype=torch.int64, device=x.device)
        if self.mix_type == "crossdomain":
            domains = torch.unique(domain)
            if len(domains) > 1:
                for d in domains:
                    count = int((domain == d).sum())
                    others = (domain != d).nonzero().squeeze(-1)
                    pick = torch.ones(others.shape[0]).multinomial(count, replacement=count > others.shape[0])
                    perm[domain == d] = others[pick]
        elif self.mix_type != "random":
            raise NotImplementedError(f"DomainMix type must be 'random' or 'crossdomain', got {self.mix_type}")
        mixed = lam * x + (1 - lam) * x[perm, :]
        return mixed, target, target[perm], lam
