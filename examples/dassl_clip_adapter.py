"""A Dassl-style trainer file, kept exactly as one writes it for Dassl.pytorch and OpenAI's ``clip``.

It imports nothing from this project by name: only ``dassl.*`` and ``clip``. It runs here through the
Dassl alias (``engine/dassl_alias.py``); see docs/DASSL_COMPAT.md. The method is a residual feature
adapter on the frozen image features, classified against frozen zero-shot text features (the idea of
CLIP-Adapter, written from scratch as an example), and CLIP is loaded the way CoOp-family trainers do:
``clip._MODELS`` -> ``clip._download`` -> TorchScript or state dict -> ``clip.build_model``.
"""

import os.path as osp

import torch
import torch.nn as nn
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_checkpoint, load_pretrained_weights
from torch.nn import functional as F

from clip import clip

TEMPLATE = "a photo of a {}."
REDUCTION = 4  # hidden width of the adapter = feature width // REDUCTION
RATIO = 0.2  # share of the adapted feature in the residual mix


def load_clip_to_cpu(cfg):
    backbone_name = cfg.MODEL.BACKBONE.NAME
    url = clip._MODELS[backbone_name]
    model_path = clip._download(url)
    try:
        model = torch.jit.load(model_path, map_location="cpu").eval()
        state_dict = None
    except RuntimeError:
        state_dict = torch.load(model_path, map_location="cpu")
    return clip.build_model(state_dict or model.state_dict())


class Adapter(nn.Module):
    def __init__(self, width, reduction=REDUCTION):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(width, width // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(width // reduction, width, bias=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.fc(x)


class CustomCLIP(nn.Module):
    def __init__(self, classnames, clip_model):
        super().__init__()
        self.image_encoder = clip_model.visual
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype
        prompts = clip.tokenize([TEMPLATE.format(name.replace("_", " ")) for name in classnames])
        with torch.no_grad():
            text_features = clip_model.encode_text(prompts)
        self.register_buffer("text_features", F.normalize(text_features.float(), dim=-1))
        self.adapter = Adapter(text_features.shape[-1])

    def forward(self, image):
        features = self.image_encoder(image.type(self.dtype)).float()
        features = RATIO * self.adapter(features) + (1 - RATIO) * features
        features = F.normalize(features, dim=-1)
        return self.logit_scale.exp() * features @ self.text_features.t()


@TRAINER_REGISTRY.register()
class DasslClipAdapter(TrainerX):
    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames

        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip_to_cpu(cfg)

        print("Building custom CLIP")
        self.model = CustomCLIP(classnames, clip_model)

        print("Turning off gradients in both the image and the text encoder")
        for name, param in self.model.named_parameters():
            param.requires_grad_("adapter" in name)

        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(self.model.adapter, cfg.MODEL.INIT_WEIGHTS)

        self.model.to(self.device)
        self.optim = build_optimizer(self.model.adapter, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("adapter", self.model.adapter, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)

        loss_summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return loss_summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def load_model(self, directory, epoch=None):
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            model_path = osp.join(directory, name, model_file)
            if not osp.exists(model_path):
                raise FileNotFoundError(f'Model not found at "{model_path}"')
            checkpoint = load_checkpoint(model_path)
            print(f'Loading weights to {name} from "{model_path}" (epoch = {checkpoint["epoch"]})')
            self._models[name].load_state_dict(checkpoint["state_dict"], strict=False)
