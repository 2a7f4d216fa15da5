"""An IVLP trainer file as the MaPLe repository lays out its independentVL.py (test fixture; see
../README.md): CLIP built with ``clip.build_model(state_dict, design_details)`` for the ``IVLP`` design,
whose deep prompts (``VPT``, ``VPT_shallow``) live inside CLIP's towers and are switched on by name
(``"VPT" in name``); the file itself learns only the text prompts of the first block. Widths come from
the CLIP, so it runs on the small random backbones."""

import os.path as osp

import torch
import torch.nn as nn
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_checkpoint
from torch.nn import functional as F

from clip import clip


def load_clip_to_cpu(cfg):
    ivlp = cfg.TRAINER.IVLP
    model_path = clip._download(clip._MODELS[cfg.MODEL.BACKBONE.NAME])
    try:  # a TorchScript archive, else a plain state dict
        state_dict = torch.jit.load(model_path, map_location="cpu").state_dict()
    except RuntimeError:
        state_dict = torch.load(model_path, map_location="cpu")
    design_details = {"trainer": "IVLP", "vision_depth": ivlp.PROMPT_DEPTH_VISION, "vision_ctx": ivlp.N_CTX_VISION,
                      "language_depth": ivlp.PROMPT_DEPTH_TEXT, "language_ctx": ivlp.N_CTX_TEXT}
    return clip.build_model(state_dict, design_details)


class TextEncoder(nn.Module):
    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        x = (prompts + self.positional_embedding.type(self.dtype)).permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x).permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        eot = tokenized_prompts.argmax(dim=-1)
        return x[torch.arange(x.shape[0]), eot] @ self.text_projection


class VLPromptLearner(nn.Module):
    """Text prompts of block 0 (the deeper ones and all vision prompts are CLIP's own parameters)."""

    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        ivlp = cfg.TRAINER.IVLP
        assert ivlp.PROMPT_DEPTH_TEXT >= 1, "IVLP learns text prompts: PROMPT_DEPTH_TEXT must be >= 1"
        n_ctx, ctx_init, dtype = ivlp.N_CTX_TEXT, ivlp.CTX_INIT, clip_model.dtype
        assert cfg.INPUT.SIZE[0] == clip_model.visual.input_resolution, "INPUT.SIZE must be CLIP's resolution"
        if ctx_init and n_ctx <= 4:
            prefix = ctx_init.replace("_", " ")
            with torch.no_grad():
                init = clip_model.token_embedding(clip.tokenize(prefix)).type(dtype)
            ctx_vectors = init[0, 1 : 1 + n_ctx, :]
        else:
            prefix = " ".join(["X"] * n_ctx)
            ctx_vectors = nn.init.normal_(torch.empty(n_ctx, clip_model.ln_final.weight.shape[0], dtype=dtype),
                                          std=0.02)
        print(f'IVLP: initial text context "{prefix}", {n_ctx} text and {ivlp.N_CTX_VISION} vision tokens')
        self.ctx = nn.Parameter(ctx_vectors)
        texts = [f"{prefix} {name.replace('_', ' ')}." for name in classnames]
        tokenized_prompts = torch.cat([clip.tokenize(t) for t in texts])
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)
        self.register_buffer("token_prefix", embedding[:, :1, :])  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :, :])  # class name, EOS
        self.n_cls = len(classnames)
        self.tokenized_prompts = tokenized_prompts

    def forward(self):
        ctx = self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = VLPromptLearner(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def forward(self, image, label=None):
        text_features = self.text_encoder(self.prompt_learner(), self.tokenized_prompts)
        image_features = self.image_encoder(image.type(self.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = self.logit_scale.exp() * image_features @ text_features.t()
        if self.prompt_learner.training:
            return F.cross_entropy(logits, label), logits
        return logits


@TRAINER_REGISTRY.register()
class IVLP(TrainerX):
    def check_cfg(self, cfg):
        assert cfg.TRAINER.IVLP.PREC in ["fp16", "fp32", "amp"]

    def build_model(self):
        cfg = self.cfg
        clip_model = load_clip_to_cpu(cfg)
        if cfg.TRAINER.IVLP.PREC in ("fp32", "amp"):
            clip_model.float()
        self.model = CustomCLIP(cfg, self.dm.dataset.classnames, clip_model)
        for name, param in self.model.named_parameters():  # the prompt learner, and CLIP's own prompts
            param.requires_grad_("prompt_learner" in name or "VPT" in name)
        enabled = sorted(name for name, param in self.model.named_parameters() if param.requires_grad)
        print(f"Parameters to be updated: {enabled}")
        self.model.to(self.device)
        self.optim = build_optimizer(self.model, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("VLPromptLearner", self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        loss, output = self.model(image, label)
        self.optim.zero_grad()
        loss.backward()
        self.optim.step()
        summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def load_model(self, directory, epoch=None):
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            path = osp.join(directory, name, model_file)
            if not osp.exists(path):
                raise FileNotFoundError(f'Model not found at "{path}"')
            state_dict = load_checkpoint(path)["state_dict"]
            for key in ("prompt_learner.token_prefix", "prompt_learner.token_suffix"):
                state_dict.pop(key, None)  # computed from the current class names
            print(f'Loading weights to {name} from "{path}"')
            self._models[name].load_state_dict(state_dict, strict=False)
