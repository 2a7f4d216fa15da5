"""Reference of MMA (CVPR 2024) and of MMA + BMIP: residual adapters on the higher blocks of both towers.

For each adapted layer l (1-based, block l-1) and tower, with ``x`` the tokens entering the block::

    out = block(x) + s * up_l(shared_l(down_l(LN1(x))))        down = ReLU(Linear), shared = ReLU(Linear)

``shared_l`` is one module for both towers. The release's gradient-scale layers leave this forward
unchanged and divide the adapters' parameter gradients by ``s``; written here as a reparametrisation:
every adapter parameter ``p`` enters as ``p_eff = p / s + (p - p / s)`` with the bracket's value detached
(value ``p``, derivative ``1 / s``). MMA's class prompts are ``"<TEXT_CTX_INIT> <class>."``; MMA + BMIP runs
BMIP's gated prompts (restated from tests/references/bmip.py's helpers) with the same adapters, an adapter
reading the block input after BMIP wrote its slots.
"""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from . import Case, Expected, Reference
from . import clip_math as cm
from .bmip import _gated, _linear, mode_of

Residual = cm.AfterBlock


def adapters(case: Case, prefix: str) -> tuple[Residual, Residual]:
    """(text, vision) residual functions of MMA's adapters whose parameters are ``<prefix>.*``."""
    c, w = case.cfg.TRAINER.MMADAPTER, case.clip
    s = float(c.ADAPTER_SCALE)

    def param(name: str) -> Tensor:
        p = case.params[f"{prefix}.{name}"]
        return p / s + (p - p / s).detach() if c.GRAD_RESCALE else p

    def residual(tower_params: str, tower: str) -> Residual:
        def f(i: int, x: Tensor) -> Optional[Tensor]:
            layer = i + 1
            if not c.ADAPTER_START <= layer <= c.ADAPTER_END:
                return None
            h = cm.layer_norm(w, f"{tower}.resblocks.{i}.ln_1", x)
            h = F.relu(
                h @ param(f"{tower_params}.{layer}.down.0.weight").t()
                + param(f"{tower_params}.{layer}.down.0.bias")
            )
            h = F.relu(
                h @ param(f"shared_adapter.{layer}.0.weight").t() + param(f"shared_adapter.{layer}.0.bias")
            )
            return s * (
                h @ param(f"{tower_params}.{layer}.up.weight").t() + param(f"{tower_params}.{layer}.up.bias")
            )

        return f

    return residual("text_adapter", "transformer"), residual("visual_adapter", "visual.transformer")


def mma(case: Case) -> Expected:
    w, c = case.clip, case.cfg.TRAINER.MMADAPTER
    prefix = c.TEXT_CTX_INIT.strip()
    texts = [
        f"{prefix} {name.replace('_', ' ')}." if prefix else f"{name.replace('_', ' ')}."
        for name in case.classnames
    ]
    x, eot = cm.class_prompt_embeddings(w, texts)
    text_res, vision_res = adapters(case, "prompt_learner")
    text = cm.text_features(w, x, eot, None, text_res)
    image = cm.image_features(w, case.images, None, None, vision_res)
    logits = cm.logits(w, image, text)
    return Expected(logits, F.cross_entropy(logits, case.labels))


def mma_bmip(case: Case) -> Expected:
    """BMIP's gated prompts (released preset: text stops one block earlier, SOS query, shared tensors)."""
    w, b, mode = case.clip, case.cfg.TRAINER.BMIP, mode_of(case.cfg)
    pre = "prompt_learner.prompts"
    p = case.params
    n_vision, n_text = b.PROMPT_DEPTH - 1, b.PROMPT_DEPTH - 1 - mode.text_offset
    assert mode.share_visual and mode.share_text and not mode.own_first, (
        "this reference covers the released sharing"
    )
    texts = [p[f"{pre}.compound_prompts_text.{k}"] for k in range(n_vision)]

    def own_v(k: int) -> Tensor:  # the release's per-block copies (or aliases) of the shared ctx_v, if any
        per_block = f"{pre}.compound_prompts_visual.{k}"
        return p[per_block] if per_block in p else p[f"{pre}.ctx_v"]

    x, eot = cm.prompted_classes(w, b.CTX_INIT, case.classnames, p[f"{pre}.ctx_t"])

    def gate(tower: str, k: int) -> tuple[Tensor, Tensor]:
        return p[f"{pre}.gates_{tower}.{k}.weight"], p[f"{pre}.gates_{tower}.{k}.bias"]

    def text_hook(i: int, t: Tensor) -> Tensor:
        if not 1 <= i <= n_text:
            return t
        foreign = _linear(p, f"{pre}.single_layer_v", own_v(i - 1))
        return _gated(w, "transformer", i, t, texts[i - 1], foreign, gate("t", i - 1), mode, eot)

    def vision_hook(i: int, v: Tensor) -> Tensor:
        if not 1 <= i <= n_vision:
            return v
        foreign = _linear(p, f"{pre}.single_layer_t", texts[i - 1])
        return _gated(w, "visual.transformer", i, v, own_v(i - 1), foreign, gate("v", i - 1), mode, eot)

    text_res, vision_res = adapters(case, "prompt_learner")
    first = _linear(p, f"{pre}.proj_t", p[f"{pre}.ctx_t"])
    text = cm.text_features(w, x, eot, text_hook, text_res)
    image = cm.image_features(w, case.images, first, vision_hook, vision_res)
    logits = cm.logits(w, image, text)
    return Expected(logits, F.cross_entropy(logits, case.labels))


REFERENCES = {
    "MultiModalAdapter": [
        Reference(mma, "configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml", name="released"),
        Reference(
            mma,
            "configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml",
            opts=("TRAINER.MMADAPTER.GRAD_RESCALE", "False", "TRAINER.MMADAPTER.ADAPTER_START", "1"),
            name="true_gradient_all_blocks",
        ),
    ],
    "MMA_BMIP": Reference(mma_bmip, "configs/trainers/MMA_BMIP/vit_b16_ep5.yaml", name="released"),
}
