"""Reference of HiCroPL: hierarchical cross-modal prompts, features anchored on the frozen CLIP.

Prompts of layers ``0..L-1``: text ``T_0 = ctx``, ``T_j = cross_prompts_text[j-1]``; vision
``V_j = cross_prompts_visual[j]``; split at ``k`` = CROSS_LAYER. Proxies (LKP ``i``, query ``q_i``):
``P_i = LN2(q_i + MHA(LN1 q_i, LN1 S_i, LN1 S_i))`` of the source prompts ``S_i``. Mapper ``M`` (prompts X,
proxies P): ``Q = X Wq + bq``; ``K = LN1(P Wk + bk)``, ``V = LN1(P Wv + bv)``; ``Q += MHA(LN1 Q, K, V)``;
``M = Q + FFN(LN2 Q)`` (QuickGELU). ``V'_{0..k-1} = M_t2v(V_{0..k-1}, [P^t_0..P^t_{k-1}])``,
``T'_{k..L-1} = M_v2t(T_{k..L-1}, [P^v_k..P^v_{L-1}])`` (every prompt attends to every proxy of its phase).

``MAPPING graph``: the towers read ``V'``/``T'`` for those layers. ``MAPPING write_back``: the towers read
the prompt tensors themselves (the trainer overwrote them with ``V'``/``T'`` before the step; that step is
checked against :func:`mapped` in tests/test_hicropl.py), so the mapper gets no gradient.

Features: ``f = norm(norm(f_p) + z)``, ``g = norm(norm(g_p) + t)``; ``z`` = normalised frozen image
features, ``t`` = per class the normalised mean of the normalised frozen features of its descriptions.
``loss = CE(exp(s) f g^T, y) + LAMBD [(1 - mean_c g.t) + (1 - mean_n f.z)]``. nn.MultiheadAttention's
maths is written out (8 heads, packed in-projection, unbatched (L, E) inputs).
"""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from torch import Tensor

import clip as clip_pkg

from . import Case, Expected, Reference
from . import clip_math as cm
from .deep import _indexed, _linear

PREFIX = "prompt_learner"
HEADS = 8


def _mha(p: dict[str, Tensor], name: str, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    wq, wk, wv = p[f"{name}.in_proj_weight"].chunk(3)
    bq, bk, bv = p[f"{name}.in_proj_bias"].chunk(3)
    d = q.shape[-1]
    split = lambda x: x.reshape(x.shape[0], HEADS, d // HEADS).transpose(0, 1)  # noqa: E731
    qh, kh, vh = split(q @ wq.t() + bq), split(k @ wk.t() + bk), split(v @ wv.t() + bv)
    probs = (qh @ kh.transpose(-1, -2) / math.sqrt(d // HEADS)).softmax(dim=-1)
    out = (probs @ vh).transpose(0, 1).reshape(q.shape[0], d)
    return _linear(p, f"{name}.out_proj", out)


def _proxy(p: dict[str, Tensor], name: str, query: Tensor, prompts: Tensor) -> Tensor:
    s = cm.layer_norm(p, f"{name}.ln_1", prompts)
    query = query + _mha(p, f"{name}.attn", cm.layer_norm(p, f"{name}.ln_1", query), s, s)
    return cm.layer_norm(p, f"{name}.ln_2", query)


def _mapper(p: dict[str, Tensor], name: str, prompts: Tensor, proxies: Tensor) -> Tensor:
    q = _linear(p, f"{name}.linear_q", prompts)
    k = cm.layer_norm(p, f"{name}.ln_1", _linear(p, f"{name}.linear_k", proxies))
    v = cm.layer_norm(p, f"{name}.ln_1", _linear(p, f"{name}.linear_v", proxies))
    q = q + _mha(p, f"{name}.attn", cm.layer_norm(p, f"{name}.ln_1", q), k, v)
    h = _linear(p, f"{name}.ffn.c_fc", cm.layer_norm(p, f"{name}.ln_2", q))
    return q + _linear(p, f"{name}.ffn.c_proj", h * torch.sigmoid(1.702 * h))


def layer_prompts(p: dict[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """(text, vision) prompt tensors of layers 0..L-1 as stored."""
    return [p[f"{PREFIX}.ctx"], *_indexed(p, f"{PREFIX}.cross_prompts_text")], _indexed(
        p, f"{PREFIX}.cross_prompts_visual"
    )


def mapped(p: dict[str, Tensor], k: int) -> tuple[list[Tensor], list[Tensor]]:
    """(V'_0..V'_{k-1}, T'_k..T'_{L-1}) from the prompt learner's tensors ``p`` (names with the prefix)."""
    text, vision = layer_prompts(p)
    n = text[0].shape[0]
    text_proxies = torch.cat(
        [
            _proxy(p, f"{PREFIX}.attn_pooling_text_nets.{i}", p[f"{PREFIX}.text_proxy_token.{i}"], text[i])
            for i in range(k)
        ]
    )
    vision_proxies = torch.cat(
        [
            _proxy(
                p,
                f"{PREFIX}.attn_pooling_visual_nets.{j}",
                p[f"{PREFIX}.visual_proxy_token.{j}"],
                vision[k + j],
            )
            for j in range(len(vision) - k)
        ]
    )
    vision_low = _mapper(p, f"{PREFIX}.text2visual_net", torch.cat(vision[:k]), text_proxies)
    text_high = _mapper(p, f"{PREFIX}.visual2text_net", torch.cat(text[k:]), vision_proxies)
    return list(vision_low.split(n)), list(text_high.split(n))


def _phrase(ctx_init: str, n_ctx: int) -> str:
    """The prompt prefix: CTX_INIT when it has at least N_CTX tokens, else N_CTX "X"."""
    n_words = int((clip_pkg.tokenize([ctx_init]) == cm.EOT).nonzero()[0, 1]) - 1
    return ctx_init if n_ctx <= n_words else " ".join(["X"] * n_ctx)


def hicropl(case: Case) -> Expected:
    w, p, c = case.clip, case.params, case.cfg.TRAINER.HICROPL
    mapping = c.MAPPING or {"released": "write_back", "paper": "graph"}[c.PRESET]
    text, vision = layer_prompts(p)
    if mapping == "graph":
        vision_low, text_high = mapped(p, c.CROSS_LAYER)
        vision = vision_low + vision[c.CROSS_LAYER :]
        text = text[: c.CROSS_LAYER] + text_high
    x, eot = cm.prompted_classes(w, _phrase(c.CTX_INIT, c.N_CTX), case.classnames, text[0])
    g_p = cm.text_features(w, x, eot, cm.deep_text(dict(enumerate(text[1:], start=1))))
    f_p = cm.image_features(w, case.images, vision[0], cm.deep_vision(dict(enumerate(vision[1:], start=1))))
    z = F.normalize(cm.image_features(w, case.images), dim=-1)
    with open(case.trainer.description_file(), encoding="utf-8") as handle:
        table = json.load(handle)
    sentences = [table[name.replace("_", " ")] for name in case.classnames]
    t = torch.stack(
        [F.normalize(F.normalize(cm.encode_texts(w, s), dim=-1).mean(dim=0), dim=0) for s in sentences]
    )
    f = F.normalize(F.normalize(f_p, dim=-1) + z, dim=-1)
    g = F.normalize(F.normalize(g_p, dim=-1) + t, dim=-1)
    logits = w["logit_scale"].exp() * f @ g.t()
    ce = F.cross_entropy(logits, case.labels)
    text_term = 1 - (g * t).sum(dim=-1).mean()
    image_term = 1 - (f * z).sum(dim=-1).mean()
    terms = {"loss_ce": ce, "loss_text": text_term, "loss_image": image_term}
    return Expected(logits, ce + c.LAMBD * (text_term + image_term), terms)


REFERENCES = {
    "HiCroPL": [
        Reference(hicropl, "configs/trainers/HiCroPL/vit_b16_c2_ep50_batch32_16ctx.yaml", name="released"),
        Reference(
            hicropl,
            "configs/trainers/HiCroPL/vit_b16_c2_ep5_batch32_2ctx_cross_datasets.yaml",
            ("TRAINER.HICROPL.PRESET", "paper"),
            name="paper",
        ),
    ],
}
