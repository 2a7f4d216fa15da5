"""References of PromptSRC and PromptSRC_BMIP: prompts regularised by the frozen CLIP.

With ``f``/``g`` the normalised prompted image/class features, ``f0`` the normalised frozen image
features, ``g0`` the normalised mean over the templates of the frozen raw class features, and
``s = exp(logit_scale) f g^T`` (``s0`` from ``f0``, ``g0``):
``loss = CE(s, y) + a * mean|g - g0| + b * mean|f - f0| + c * sum KL(softmax s0 || softmax s) / (N C)``.
The template lists are data (trainers/templates.py), looked up by ``TEACHER_TEMPLATES``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from trainers.promptsrc import TEACHER_TEMPLATE_SETS

from . import Case, Expected, Reference
from . import clip_math as cm
from .bmip import bmip_features
from .deep import ivlp_features


def self_regularised(case: Case, image: Tensor, text: Tensor) -> Expected:
    w, c = case.clip, case.cfg.TRAINER.PROMPTSRC
    templates = TEACHER_TEMPLATE_SETS[c.TEACHER_TEMPLATES]()
    names = [n.replace("_", " ") for n in case.classnames]
    raw = cm.encode_texts(w, [t.format(n) for t in templates for n in names])
    g0 = F.normalize(raw.reshape(len(templates), len(names), -1).mean(dim=0), dim=-1)
    f0 = F.normalize(cm.image_features(w, case.images), dim=-1)
    f, g = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    scale = w["logit_scale"].exp()
    s, s0 = scale * f @ g.t(), scale * f0 @ g0.t()
    p0 = s0.softmax(dim=1)
    terms = {
        "loss_ce": F.cross_entropy(s, case.labels),
        "loss_text": c.TEXT_LOSS_WEIGHT * (g - g0).abs().mean(),
        "loss_image": c.IMAGE_LOSS_WEIGHT * (f - f0).abs().mean(),
        "loss_kl": c.KL_LOSS_WEIGHT * (p0 * (p0.log() - s.log_softmax(dim=1))).sum() / s.numel(),
    }
    return Expected(s, sum(terms.values()), terms)


def promptsrc(case: Case) -> Expected:
    return self_regularised(case, *ivlp_features(case, case.cfg.TRAINER.PROMPTSRC))


def promptsrc_bmip(case: Case) -> Expected:
    c = case.cfg.TRAINER.PROMPTSRC
    return self_regularised(
        case, *bmip_features(case, "prompt_learner", c.N_CTX_TEXT, c.PROMPT_DEPTH, c.CTX_INIT)
    )


REFERENCES = {
    "PromptSRC": Reference(promptsrc, "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml"),
    "PromptSRC_BMIP": [
        Reference(promptsrc_bmip, "configs/trainers/PromptSRC_BMIP/vit_bitp_ctx4_ep20TT_adam_PromptSRC.yaml"),
        Reference(
            promptsrc_bmip,
            "configs/trainers/PromptSRC_BMIP/vit_bitp_ctx4_ep20TT_adam_PromptSRC.yaml",
            name="paper",
            opts=("TRAINER.BMIP.PRESET", "paper"),
        ),  # fmt: skip
    ],
}
