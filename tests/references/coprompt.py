"""References of CoPrompt and CoPrompt_BMIP: adapted prompts kept consistent with the frozen CLIP.

Features of view 1 pass residual adapters before normalisation, ``f <- (1 - r) f + r relu(B relu(A f))``
(image r = IMAGE_ADAPTER_RATIO, text r = TEXT_ADAPTER_RATIO); ``t`` = the normalised frozen features of
description ``k`` of every class (``k`` drawn with ``random.randint(0, K-1)``), ``z`` = the normalised
frozen features of view 2. ``loss = CE(s, y) + W [(1 - mean cos(g, t)) + (1 - mean cos(f, z))]``
(``DISTILL cosine``) or ``W [MSE(g, t) + MSE(f, z)]`` (``mse``). The description file is read here as
JSON (its path is a lookup on the trainer).
"""

from __future__ import annotations

import json
import random

import torch.nn.functional as F
from torch import Tensor

from . import Case, Expected, Reference
from . import clip_math as cm
from .bmip import bmip_features
from .deep import maple_features


def _adapt(p: dict[str, Tensor], name: str, x: Tensor, ratio: float) -> Tensor:
    h = (x @ p[f"prompt_learner.{name}.fc.0.weight"].t()).relu()
    return (1 - ratio) * x + ratio * (h @ p[f"prompt_learner.{name}.fc.2.weight"].t()).relu()


def consistency(case: Case, image: Tensor, text: Tensor) -> Expected:
    w, p, c = case.clip, case.params, case.cfg.TRAINER.CoPrompt
    f = F.normalize(_adapt(p, "adapter_image", image, c.IMAGE_ADAPTER_RATIO), dim=-1)
    g = F.normalize(_adapt(p, "adapter_text", text, c.TEXT_ADAPTER_RATIO), dim=-1)
    s = w["logit_scale"].exp() * f @ g.t()
    with open(case.trainer.description_file(), encoding="utf-8") as handle:
        table = json.load(handle)
    sentences = [table[name.replace("_", " ")] for name in case.classnames]
    k = random.randint(0, len(sentences[0]) - 1)
    t = F.normalize(cm.encode_texts(w, [per_class[k] for per_class in sentences]), dim=-1)
    views = case.batch["img"]
    z = F.normalize(cm.image_features(w, views[-1] if isinstance(views, list) else views), dim=-1)
    if case.cfg.TRAINER.DISTILL == "cosine":
        text_term = 1 - (g * t).sum(dim=-1).mean()
        image_term = 1 - (f * z).sum(dim=-1).mean()
    else:
        text_term, image_term = (g - t).square().mean(), (f - z).square().mean()
    terms = {"loss_ce": F.cross_entropy(s, case.labels), "loss_text": text_term, "loss_image": image_term}
    return Expected(s, terms["loss_ce"] + case.cfg.TRAINER.W * (text_term + image_term), terms)


def coprompt(case: Case) -> Expected:
    return consistency(
        case, *maple_features(case, "prompt_learner.prompts", case.cfg.TRAINER.CoPrompt.CTX_INIT)
    )


def coprompt_bmip(case: Case) -> Expected:
    c = case.cfg.TRAINER.CoPrompt
    return consistency(
        case, *bmip_features(case, "prompt_learner.prompts", c.N_CTX, c.PROMPT_DEPTH, c.CTX_INIT)
    )


CONFIG = "configs/trainers/CoPrompt/coprompt.yaml"
REFERENCES = {
    "CoPrompt": [
        Reference(coprompt, CONFIG, name="cosine"),
        Reference(coprompt, CONFIG, name="mse", opts=("TRAINER.DISTILL", "mse")),
    ],
    "CoPrompt_BMIP": [
        Reference(coprompt_bmip, "configs/trainers/CoPrompt_BMIP/coprompt_bmip.yaml", name="released"),
        Reference(
            coprompt_bmip,
            "configs/trainers/CoPrompt_BMIP/coprompt_bmip.yaml",
            name="paper",
            opts=("TRAINER.BMIP.PRESET", "paper"),
        ),  # fmt: skip
    ],
}
