"""References of VPT, IVLP and MaPLe: deep prompts written into the towers block by block.

Text prompts replace positions ``1..n`` of ``"<CTX_INIT> <class>."`` (block 0: the context ``ctx``;
blocks ``1..J-1``: fresh per-block prompts); vision prompts are appended after the patches and replace
the last ``n`` tokens in blocks ``1..J-1``. MaPLe's vision prompts are linear images of the text prompts
(``proj`` for the input, ``compound_prompt_projections[k]`` for block ``k+1``). Loss: cross-entropy.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from . import Case, Expected, Reference
from . import clip_math as cm


def _linear(p: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    return x @ p[f"{name}.weight"].t() + p[f"{name}.bias"]


def _indexed(p: dict[str, Tensor], name: str) -> list[Tensor]:
    out, k = [], 0
    while f"{name}.{k}" in p:
        out.append(p[f"{name}.{k}"])
        k += 1
    return out


def _cross_entropy(case: Case, image: Tensor, text: Tensor) -> Expected:
    logits = cm.logits(case.clip, image, text)
    return Expected(logits, F.cross_entropy(logits, case.labels))


def vpt(case: Case) -> Expected:
    w, p, c = case.clip, case.params, case.cfg.TRAINER.VPT
    text = cm.encode_texts(w, [f"{c.CTX_INIT} {n.replace('_', ' ')}." for n in case.classnames])
    deep = dict(enumerate(_indexed(p, "prompt_learner.vision_prompts"), start=1))
    image = cm.image_features(w, case.images, p["prompt_learner.vision_ctx"], cm.deep_vision(deep))
    return _cross_entropy(case, image, text)


def ivlp_features(case: Case, c) -> tuple[Tensor, Tensor]:  # noqa: ANN001
    """Prompted (image, text) raw features of IVLP's learner (also PromptSRC's)."""
    w, p = case.clip, case.params
    x, eot = cm.prompted_classes(w, c.CTX_INIT, case.classnames, p["prompt_learner.ctx"])
    text = cm.text_features(
        w, x, eot, cm.deep_text(dict(enumerate(_indexed(p, "prompt_learner.text_prompts"), 1)))
    )
    deep = dict(enumerate(_indexed(p, "prompt_learner.vision_prompts"), start=1))
    image = cm.image_features(w, case.images, p["prompt_learner.vision_ctx"], cm.deep_vision(deep))
    return image, text


def ivlp(case: Case) -> Expected:
    return _cross_entropy(case, *ivlp_features(case, case.cfg.TRAINER.IVLP))


def maple_features(case: Case, prefix: str, ctx_init: str) -> tuple[Tensor, Tensor]:
    """Prompted (image, text) raw features of MaPLe's coupled prompts under ``prefix`` (also CoPrompt's)."""
    w, p = case.clip, case.params
    ctx = p[f"{prefix}.ctx"]
    texts = _indexed(p, f"{prefix}.compound_prompts_text")
    vision = {k + 1: _linear(p, f"{prefix}.compound_prompt_projections.{k}", t) for k, t in enumerate(texts)}
    x, eot = cm.prompted_classes(w, ctx_init, case.classnames, ctx)
    text = cm.text_features(w, x, eot, cm.deep_text(dict(enumerate(texts, start=1))))
    image = cm.image_features(w, case.images, _linear(p, f"{prefix}.proj", ctx), cm.deep_vision(vision))
    return image, text


def maple(case: Case) -> Expected:
    return _cross_entropy(case, *maple_features(case, "prompt_learner", case.cfg.TRAINER.MAPLE.CTX_INIT))


REFERENCES = {
    "VPT": Reference(vpt, "configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml"),
    "IVLP": [
        Reference(ivlp, "configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml", name="2+2ctx"),
        Reference(ivlp, "configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml", name="4+4ctx"),
    ],
    "MaPLe": Reference(maple, "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"),
}
