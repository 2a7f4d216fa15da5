"""Reference of MMRL (CVPR 2025), and of MMRL + BMIP (:func:`mmrl_bmip`): shared representation tokens in both towers.

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
from .bmip import mode_of

TEMPLATE = "a photo of the digit {}."  # trainers/templates.py's Digits entry, restated


def _front(tokens: dict[int, Tensor], first: int):  # noqa: ANN202
    def before(i: int, x: Tensor) -> Tensor:
        if i not in tokens:
            return x
        t = tokens[i].expand(x.shape[0], -1, -1)
        rest = x[:, 1:] if i == first else x[:, 1 + t.shape[1] :]
        return torch.cat([x[:, :1], t, rest], dim=1)

    return before


def _projected(case: Case, kind: str) -> list[Tensor]:
    """Per representation layer j: ``W^j R + b^j`` of projection ``kind`` ("r2v" / "r2t")."""
    p, pre = case.params, "prompt_learner"
    r = p[f"{pre}.compound_rep_tokens"]
    return [
        r @ p[f"{pre}.compound_rep_tokens_{kind}proj.{j}.weight"].t() + p[f"{pre}.compound_rep_tokens_{kind}proj.{j}.bias"]
        for j in range(len(case.cfg.TRAINER.MMRL.REP_LAYERS))
    ]


def mmrl_expected(case: Case, text_before: cm.BeforeBlock, vision_before: cm.BeforeBlock) -> Expected:
    """MMRL's heads and loss, with the towers' token writes given per block."""
    w, p, c = case.clip, case.params, case.cfg.TRAINER.MMRL
    k = c.N_REP_TOKENS
    texts = [TEMPLATE.format(n.replace("_", " ")) for n in case.classnames]
    x, eot = cm.class_prompt_embeddings(w, texts)
    text = cm.text_features(w, x, eot + k, text_before)

    weight = w["visual.conv1.weight"]
    patches = F.conv2d(case.images, weight, stride=weight.shape[-1]).flatten(2).transpose(1, 2)
    cls = w["visual.class_embedding"].expand(case.images.shape[0], 1, -1)
    v = cm.layer_norm(w, "visual.ln_pre", torch.cat([cls, patches], dim=1) + w["visual.positional_embedding"])
    for i in range(cm.n_blocks(w, "visual.transformer")):
        v = cm.block(w, f"visual.transformer.resblocks.{i}", vision_before(i, v), False)
    image = cm.layer_norm(w, "visual.ln_post", v[:, 0]) @ w["visual.proj"]
    rep = cm.layer_norm(w, "visual.ln_post", v[:, 1 : 1 + k]).mean(dim=1) @ p["prompt_learner.proj_rep"]

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


def mmrl(case: Case) -> Expected:
    blocks = [layer - 1 for layer in case.cfg.TRAINER.MMRL.REP_LAYERS]
    text_tokens = dict(zip(blocks, _projected(case, "r2t")))
    vision_tokens = dict(zip(blocks, _projected(case, "r2v")))
    return mmrl_expected(case, _front(text_tokens, blocks[0]), _front(vision_tokens, blocks[0]))


def mmrl_bmip(case: Case) -> Expected:
    """MMRL + BMIP: before every representation layer after the first, the K slots after CLS / SOS become
    ``w * own + (1 - w) * foreign``; vision own ``W_v^j R + b``, foreign ``G_v(W_t^j R + b)``; text own
    ``W_t^j R + b``, foreign ``G_l(W_v^j R + b)``; ``w = act(g A + h)`` per slot, ``A`` the head-averaged
    attention the block's other rows pay to slot s: vision the mean over CLS and patches; text the SOS row
    (released; 0 under the causal mask), the EOT row (now at EOT + K) or the mean over the rows after the
    slots up to EOT + K; averaged over the tower's batch (released) or per sequence."""
    w, p, cfg = case.clip, case.params, case.cfg
    b, mode = cfg.TRAINER.BMIP, mode_of(cfg)
    act = b.GATE_ACT or "sigmoid"  # both presets: sigmoid, attention detached
    detach = True if b.DETACH_ATTN is None else b.DETACH_ATTN
    k = cfg.TRAINER.MMRL.N_REP_TOKENS
    blocks = [layer - 1 for layer in cfg.TRAINER.MMRL.REP_LAYERS]
    own_t, own_v = _projected(case, "r2t"), _projected(case, "r2v")
    pre = "prompt_learner"

    def head(shared: str, per_layer: str, share: bool, j: int, x: Tensor) -> Tensor:
        name = f"{pre}.{shared}" if share else f"{pre}.{per_layer}.{j - 1}"
        return x @ p[f"{name}.weight"].t() + p[f"{name}.bias"]

    def mixed(tower: str, i: int, x: Tensor, own: Tensor, foreign: Tensor, gate: str, eot: Tensor) -> Tensor:
        j = blocks.index(i)
        text = tower == "transformer"
        probs = cm.attention_probs(w, f"{tower}.resblocks.{i}", x, causal=text).mean(dim=1)  # (N, L, L)
        cols = probs[:, :, 1 : 1 + k]
        if not text:
            others = [r for r in range(x.shape[1]) if not 1 <= r <= k]
            attn = cols[:, others].mean(dim=1)
        elif mode.text_query == "sos":
            attn = cols[:, 0]
        elif mode.text_query == "eot":
            attn = cols[torch.arange(x.shape[0]), eot + k]
        else:
            rows = torch.arange(x.shape[1])
            valid = ((rows[None, :] > k) & (rows[None, :] <= (eot + k)[:, None])).to(x.dtype)
            attn = (cols * valid[:, :, None]).sum(dim=1) / valid.sum(dim=1, keepdim=True)
        if detach:
            attn = attn.detach()
        if not mode.per_sample:
            attn = attn.mean(dim=0)
        g, h = p[f"{pre}.{gate}.{j - 1}.weight"].reshape(()), p[f"{pre}.{gate}.{j - 1}.bias"].reshape(())
        weight = g * attn + h
        weight = (torch.sigmoid(weight) if act == "sigmoid" else weight)[..., None]
        return cm.replace_rows(x, 1, weight * own + (1 - weight) * foreign)

    _, eot = cm.class_prompt_embeddings(w, [TEMPLATE.format(n.replace("_", " ")) for n in case.classnames])

    def tower_before(tower: str, own: list[Tensor], other: list[Tensor], head_names: tuple[str, str, bool],
                     gate: str) -> cm.BeforeBlock:  # fmt: skip
        """The first layer inserts ``own[0]``; each later one mixes ``own[j]`` with the head of ``other[j]``."""

        def before(i: int, x: Tensor) -> Tensor:
            if i == blocks[0]:
                return torch.cat([x[:, :1], own[0].expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
            if i not in blocks:
                return x
            j = blocks.index(i)
            return mixed(tower, i, x, own[j], head(*head_names, j, other[j]), gate, eot)

        return before

    text_before = tower_before(
        "transformer", own_t, own_v, ("single_layer_v", "compound_prompt_projections_v", mode.share_visual), "gates_t"
    )
    vision_before = tower_before(
        "visual.transformer", own_v, own_t, ("single_layer_t", "compound_prompt_projections_t", mode.share_text),
        "gates_v",
    )  # fmt: skip
    return mmrl_expected(case, text_before, vision_before)


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
    "MMRL_BMIP": [
        Reference(mmrl_bmip, "configs/trainers/MMRL_BMIP/vit_b16.yaml", name="released"),
        Reference(
            mmrl_bmip,
            "configs/trainers/MMRL_BMIP/vit_b16.yaml",
            opts=(
                "TRAINER.MMRL.REP_LAYERS", "[3, 5, 12]", "TRAINER.MMRL.N_REP_TOKENS", "2",
                "TRAINER.BMIP.TEXT_ATTN_QUERY", "mean_valid", "TRAINER.BMIP.ATTN_REDUCE", "per_sample",
                "SHARE.SHARE_PARAMETER_VISUAL", "False", "SHARE.SHARE_PARAMETER_TEXT", "False",
            ),
            name="mean_valid_per_sample_per_layer_heads",
        ),
        Reference(
            mmrl_bmip,
            "configs/trainers/MMRL_BMIP/vit_b16.yaml",
            opts=(
                "TRAINER.BMIP.TEXT_ATTN_QUERY", "eot", "TRAINER.BMIP.GATE_ACT", "none",
                "TRAINER.BMIP.DETACH_ATTN", "False",
            ),
            name="eot_linear_gate_attention_gradient",
        ),
    ],  # fmt: skip
}
