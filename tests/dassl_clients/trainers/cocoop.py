"""A CoCoOp trainer file as third-party repositories write it (test fixture; see ../README.md)."""

from collections import OrderedDict

import torch
import torch.nn as nn
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from torch.nn import functional as F

from clip import clip
from clip.model import convert_weights  # noqa: F401  (imported as CoOp's zsclip.py does)

from .coop import TextEncoder, load_clip_to_cpu


class PromptLearner(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        n_ctx = cfg.TRAINER.COCOOP.N_CTX
        dtype = clip_model.dtype
        ctx_dim = clip_model.ln_final.weight.shape[0]
        vis_dim = clip_model.visual.output_dim
        ctx_vectors = torch.empty(n_ctx, ctx_dim, dtype=dtype)
        nn.init.normal_(ctx_vectors, std=0.02)
        self.ctx = nn.Parameter(ctx_vectors)
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, ctx_dim)),
        ]))
        if cfg.TRAINER.COCOOP.PREC == "fp16":
            self.meta_net.half()
        prompts = [" ".join(["X"] * n_ctx) + " " + name.replace("_", " ") + "." for name in classnames]
        tokenized_prompts = torch.cat([clip.tokenize(p) for p in prompts])
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)
        self.register_buffer("token_prefix", embedding[:, :1, :])
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :, :])
        self.n_cls = len(classnames)
        self.tokenized_prompts = tokenized_prompts

    def forward(self, im_features):
        ctx_shifted = self.ctx.unsqueeze(0) + self.meta_net(im_features).unsqueeze(1)
        prompts = []
        for ctx_i in ctx_shifted:
            ctx_i = ctx_i.unsqueeze(0).expand(self.n_cls, -1, -1)
            prompts.append(torch.cat([self.token_prefix, ctx_i, self.token_suffix], dim=1))
        return torch.stack(prompts)


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = PromptLearner(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def forward(self, image):
        image_features = self.image_encoder(image.type(self.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        logits = []
        for pts_i, imf_i in zip(self.prompt_learner(image_features), image_features):
            text_features = self.text_encoder(pts_i, self.tokenized_prompts)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            logits.append(self.logit_scale.exp() * imf_i @ text_features.t())
        return torch.stack(logits)


@TRAINER_REGISTRY.register()
class CoCoOp(TrainerX):
    def build_model(self):
        cfg = self.cfg
        clip_model = load_clip_to_cpu(cfg)
        if cfg.TRAINER.COCOOP.PREC in ("fp32", "amp"):
            clip_model.float()
        print(f"CLIP dtype: {clip_model.dtype}, meta_net dtype: "
              f"{'fp16' if cfg.TRAINER.COCOOP.PREC == 'fp16' else 'fp32'}")
        self.model = CustomCLIP(cfg, self.dm.dataset.classnames, clip_model)
        for name, param in self.model.named_parameters():
            if "prompt_learner" not in name:
                param.requires_grad_(False)
        self.model.to(self.device)
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label, domain = self.parse_batch_train(batch)  # Dassl's TrainerX: with the domain
        assert domain.shape == label.shape
        loss = F.cross_entropy(self.model(image).float(), label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}
