"""References of the DePT combinations, written from the DePT paper's equations (no project code).

DePT (CVPR'24, Eq. 5-8) on a host with raw prompted features f (image) and g_c (class c): the
Channel Adjusted Transfer head maps them channel-wise, a_I(f) = s_I * f + b_I and a_T(g) = s_T * g + b_T,
and a linear classifier L classifies both a_T(g_y) and a_I(f) as y. The loss is the host's with its
image-text cross-entropy weighted: (1 - w) CE_itm + w CE_cat + (the host's other terms).
A new host needs only ``<host>_features(case) -> (raw image, raw text)`` and its other loss terms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from trainers.templates import KGCOOP_TEMPLATES, promptsrc_templates

from . import Case, Expected, Reference
from . import clip_math as cm
from .bmip import bmip_features
from .deep import ivlp_features, maple_features

Features = Callable[[Case], tuple[Tensor, Tensor]]
OtherTerms = Callable[[Case, Tensor, Tensor], dict[str, Tensor]]


def _no_terms(case: Case, image: Tensor, text: Tensor) -> dict[str, Tensor]:
    return {}


def _cat_cross_entropy(case: Case, image: Tensor, text: Tensor) -> Tensor:
    p, y = case.params, case.labels

    def film(name: str, x: Tensor) -> Tensor:
        return p[f"dept_head.film_{name}.scale"] * x + p[f"dept_head.film_{name}.shift"]

    rows = torch.cat([film("text", text[y]), film("image", image)])
    logits = rows @ p["dept_head.linear.weight"].t() + p["dept_head.linear.bias"]
    return F.cross_entropy(logits, torch.cat([y, y]))


def dept(features: Features, other_terms: OtherTerms = _no_terms) -> Callable[[Case], Expected]:
    """The DePT reference over a host given by its raw features and its loss terms besides CE."""

    def compute(case: Case) -> Expected:
        w = case.cfg.TRAINER.DEPT.WEIGHT
        image, text = features(case)
        logits = cm.logits(case.clip, image, text)
        terms = other_terms(case, image, text)
        terms["loss_ce"] = (1.0 - w) * F.cross_entropy(logits, case.labels)
        terms["loss_cat"] = w * _cat_cross_entropy(case, image, text)
        return Expected(logits, sum(terms.values()), terms)

    return compute


def bmip_host_features(case: Case) -> tuple[Tensor, Tensor]:
    b = case.cfg.TRAINER.BMIP
    return bmip_features(case, "prompt_learner", b.N_CTX, b.PROMPT_DEPTH, b.CTX_INIT)


def coop_features(case: Case) -> tuple[Tensor, Tensor]:
    """CoOp, class token at the end, random init: ``"X .. X <class>."`` with the X rows = ctx."""
    w, c, ctx = case.clip, case.cfg.TRAINER.COOP, case.params["prompt_learner.ctx"]
    phrase = c.CTX_INIT or " ".join(["X"] * ctx.shape[0])
    x, eot = cm.prompted_classes(w, phrase, case.classnames, ctx)
    return cm.image_features(w, case.images), cm.text_features(w, x, eot)


def kgcoop_features(case: Case) -> tuple[Tensor, Tensor]:
    w, c = case.clip, case.cfg.TRAINER.KGCOOP
    x, eot = cm.prompted_classes(w, c.CTX_INIT, case.classnames, case.params["prompt_learner.ctx"])
    return cm.image_features(w, case.images), cm.text_features(w, x, eot)


def kg_term(case: Case, image: Tensor, text: Tensor) -> dict[str, Tensor]:
    """KgCoOp's W * (1 - mean_c cos(g_c, h_c)), h_c = the dataset's hand-written prompt, frozen."""
    template = KGCOOP_TEMPLATES[case.cfg.DATASET.NAME]
    h = F.normalize(cm.encode_texts(case.clip, [template.format(n.replace("_", " ")) for n in case.classnames]), dim=-1)
    cos = (F.normalize(text, dim=-1) * h).sum(dim=-1)
    return {"loss_kg": case.cfg.TRAINER.KGCOOP.W * (1.0 - cos.mean())}


def promptsrc_terms(case: Case, image: Tensor, text: Tensor) -> dict[str, Tensor]:
    """PromptSRC (ICCV'23, Eq. 3-6): L1 to frozen text (template mean) and image features, KL to frozen logits."""
    w, c = case.clip, case.cfg.TRAINER.PROMPTSRC
    names = [n.replace("_", " ") for n in case.classnames]
    templates = promptsrc_templates()
    bank = cm.encode_texts(w, [t.format(n) for t in templates for n in names]).view(len(templates), len(names), -1)
    with torch.no_grad():
        zs_text = F.normalize(bank.mean(dim=0), dim=-1)
        zs_image = F.normalize(cm.image_features(w, case.images), dim=-1)
    f, g = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    s = w["logit_scale"].exp() * f @ g.t()
    s_zs = w["logit_scale"].exp() * zs_image @ zs_text.t()
    kl = (s_zs.softmax(dim=1) * (s_zs.log_softmax(dim=1) - s.log_softmax(dim=1))).sum() / s.numel()
    return {
        "loss_text": c.TEXT_LOSS_WEIGHT * (g - zs_text).abs().mean(),
        "loss_image": c.IMAGE_LOSS_WEIGHT * (f - zs_image).abs().mean(),
        "loss_kl": c.KL_LOSS_WEIGHT * kl,
    }


REFERENCES = {
    "CoOp_DePT": Reference(dept(coop_features), "configs/trainers/CoOp_DePT/vit_b16_ep10_bs4_lr35.yaml"),
    "KgCoOp_DePT": Reference(
        dept(kgcoop_features, kg_term), "configs/trainers/KgCoOp_DePT/vit_b16_ep10_ctxv1_bs4_lr35.yaml"
    ),
    "MaPLe_DePT": [
        Reference(
            dept(lambda case: maple_features(case, "prompt_learner", case.cfg.TRAINER.MAPLE.CTX_INIT)),
            "configs/trainers/MaPLe_DePT/vit_b16_c2_ep10_batch4_2ctx.yaml",
            name="released",
        ),
        Reference(
            dept(lambda case: maple_features(case, "prompt_learner", case.cfg.TRAINER.MAPLE.CTX_INIT)),
            "configs/trainers/MaPLe_DePT/vit_b16_c2_ep10_batch4_2ctx.yaml",
            name="weight_0.3",
            opts=("TRAINER.DEPT.WEIGHT", "0.3"),
        ),
    ],
    "PromptSRC_DePT": Reference(
        dept(lambda case: ivlp_features(case, case.cfg.TRAINER.PROMPTSRC), promptsrc_terms),
        "configs/trainers/PromptSRC_DePT/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    ),
    "BMIP_DePT": [
        Reference(dept(bmip_host_features), "configs/trainers/BMIP_DePT/BMIP_ctx2_dp9_lr2.yaml", name="released"),
        Reference(
            dept(bmip_host_features), "configs/trainers/BMIP_DePT/BMIP_ctx2_dp9_lr2.yaml", name="paper_preset",
            opts=("TRAINER.BMIP.PRESET", "paper", "SHARE.SHARE_PARAMETER_VISUAL", "False"),
        ),  # fmt: skip
    ],
}
