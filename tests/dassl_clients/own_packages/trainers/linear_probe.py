import torch
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from torch import nn
from torch.nn import functional as F

from clip import clip


def load_clip_to_cpu(cfg):
    url = clip._MODELS[cfg.MODEL.BACKBONE.NAME]
    model_path = clip._download(url)
    state_dict = torch.load(model_path, map_location="cpu")
    return clip.build_model(state_dict)


@TRAINER_REGISTRY.register()
class LinearProbe(TrainerX):
    def build_model(self):
        cfg = self.cfg
        clip_model = load_clip_to_cpu(cfg)
        print(f"Backbone {cfg.MODEL.BACKBONE.NAME}: {clip_model.num_tensors} tensors, embed_dim {clip_model.embed_dim}")
        self.image_encoder = clip_model.visual.to(self.device)
        for param in self.image_encoder.parameters():
            param.requires_grad_(False)
        self.model = nn.Linear(clip_model.embed_dim, self.num_classes).to(self.device)
        self.optim = build_optimizer(self.model, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("head", self.model, self.optim, self.sched)

    def model_inference(self, image):
        with torch.no_grad():
            features = self.image_encoder(image)
        return self.model(features)

    def forward_backward(self, batch):
        image, label = batch["img"].to(self.device), batch["label"].to(self.device)
        output = self.model_inference(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
