"""Reference of MMRL (CVPR 2025): shared representation tokens projected into the higher blocks of both towers.

``R`` (K, d_r); before the first layer of REP_LAYERS (1-based) ``W_v^0 R + b`` is inserted after CLS and
``W_t^0 R + b`` after SOS (both sequences grow by K; the text feature is read at EOT + K); before the later
layers i those K positions become ``W_v^i R + b`` / ``W_t^i R + b``. Image features: ``f = LN_post(CLS) proj``
and ``f_r = mean_k LN_post(token_k) proj_rep``; class features ``t`` of the hand-written prompt (Digits:
``"a photo of the digit {}."``). Logits ``100 cos``; training output ``alpha z + (1 - alpha) z_r``; loss
``alpha CE(z) + (1 - alpha) CE(z_r) + lambda (1 - mean cos(f, f_zs)) + lambda (1 - mean cos(t, t_zs))`` with the
frozen CLIP's ``f_zs`` (no tokens) and ``t_zs`` (same prompt).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import Case, Expected, Reference
from . import clip_math as cm

TEMPLATE = "a photo of the digit {}."  # trainers/templates.py's Digits entry, restated


def _front(tokens: dict[int, Tensor], first: int):  # noqa: ANN202
    def before(i: int, x: Tensor) -> Tensor:
        if i not in tokens:
            return x
        t = tokens[i].expand(x.shape[0], -1, -1)
        rest = x[:, 1:] if i == first else x[:, 1 + t.shape[1] :]
        return torch.cat([x[:, :1], t, rest], dim=1)

    return before


def mmrl(case: Case) -> Expected:
    w, p, c = case.clip, case.params, case.cfg.TRAINER.MMRL
    pre = "prompt_learner"
    r = p[f"{pre}.compound_rep_tokens"]
    k = r.shape[0]
    blocks = [layer - 1 for layer in c.REP_LAYERS]

    def proj(kind: str, j: int) -> Tensor:
        return (
            r @ p[f"{pre}.compound_rep_tokens_{kind}proj.{j}.weight"].t()
            + p[f"{pre}.compound_rep_tokens_{kind}proj.{j}.bias"]
        )

    text_tokens = {b: proj("r2t", j) for j, b in enumerate(blocks)}
    vision_tokens = {b: proj("r2v", j) for j, b in enumerate(blocks)}
    texts = [TEMPLATE.format(n.replace("_", " ")) for n in case.classnames]
    x, eot = cm.class_prompt_embeddings(w, texts)
    text = cm.text_features(w, x, eot + k, _front(text_tokens, blocks[0]))

    weight = w["visual.conv1.weight"]
    patches = F.conv2d(case.images, weight, stride=weight.shape[-1]).flatten(2).transpose(1, 2)
    cls = w["visual.class_embedding"].expand(case.images.shape[0], 1, -1)
    v = cm.layer_norm(w, "visual.ln_pre", torch.cat([cls, patches], dim=1) + w["visual.positional_embedding"])
    before = _front(vision_tokens, blocks[0])
    for i in range(cm.n_blocks(w, "visual.transformer")):
        v = cm.block(w, f"visual.transformer.resblocks.{i}", before(i, v), False)
    image = cm.layer_norm(w, "visual.ln_post", v[:, 0]) @ w["visual.proj"]
    rep = cm.layer_norm(w, "visual.ln_post", v[:, 1 : 1 + k]).mean(dim=1) @ p[f"{pre}.proj_rep"]

    f, f_r, t = (F.normalize(a, dim=-1) for a in (image, rep, text))
    z, z_r = 100 * f @ t.t(), 100 * f_r @ t.t()
    f_zs = F.normalize(cm.image_features(w, case.images), dim=-1)
    t_zs = F.normalize(cm.encode_texts(w, texts), dim=-1)
    lam = c.REG_WEIGHT  # Digits is not in the per-dataset table
    terms = {
        "loss_ce": c.ALPHA * F.cross_entropy(z, case.labels),
        "loss_ce_rep": (1 - c.ALPHA) * F.cross_entropy(z_r, case.labels),
        "loss_image": lam * (1 - F.cosine_similarity(f, f_zs, dim=-1).mean()),
        "loss_text": lam * (1 - F.cosine_similarity(t, t_zs, dim=-1).mean()),
    }
    return Expected(c.ALPHA * z + (1 - c.ALPHA) * z_r, sum(terms.values()), terms)


REFERENCES = {
    "MMRL": [
        Reference(mmrl, "configs/trainers/MMRL/vit_b16.yaml", name="released"),
        Reference(
            mmrl,
            "configs/trainers/MMRL/vit_b16.yaml",
            opts=(
                "TRAINER.MMRL.REP_LAYERS",
                "[3, 5, 12]",
                "TRAINER.MMRL.N_REP_TOKENS",
                "2",
                "TRAINER.MMRL.ALPHA",
                "0.4",
                "TRAINER.MMRL.REG_WEIGHT",
                "3.0",
            ),
            name="other_layers_tokens_weights",
        ),  # fmt: skip
    ],
}
