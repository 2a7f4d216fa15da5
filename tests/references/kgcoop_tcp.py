"""References of KgCoOp and TCP, written from the papers' equations (no project code).

KgCoOp (CVPR'23, Eq. 3-4): CoOp's class prompt ``[SOS] ctx name . [EOT]``, logits exp(s) cos(f, g_c);
loss = CE + W * (1 - mean_c cos(g_c, h_c)), h_c = frozen CLIP feature of the dataset's hand-written
prompt for class c.

TCP (CVPR'24, Eq. 4-7): the same loss; the class prompt is ``[SOS] ctx <template with name> [EOT]`` and
before text block L its context rows become ``mix * T(h_c) + (1 - mix) * rows``, with the Textual
Knowledge Embedding T(h) = W2 QuickGELU(W1 h + b1) + b2 reshaped to (n, width).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainers.templates import KGCOOP_TEMPLATES, TCP_PROMPT_TEMPLATES, TCP_TEACHER_TEMPLATES

from . import Case, Expected, Reference
from . import clip_math as cm


def _handcrafted(w: dict[str, Tensor], template: str, classnames: list[str]) -> Tensor:
    return F.normalize(cm.encode_texts(w, [template.format(n.replace("_", " ")) for n in classnames]), dim=-1)


def _kg_expected(case: Case, text: Tensor, handcrafted: Tensor, weight: float) -> Expected:
    logits = cm.logits(case.clip, cm.image_features(case.clip, case.images), text)
    ce = F.cross_entropy(logits, case.labels)
    cos = (F.normalize(text, dim=-1) * handcrafted).sum(dim=-1)
    kg = weight * (1.0 - cos.mean())
    return Expected(logits, ce + kg, {"loss_ce": ce, "loss_kg": kg})


def kgcoop(case: Case) -> Expected:
    w, c = case.clip, case.cfg.TRAINER.KGCOOP
    x, eot = cm.prompted_classes(w, c.CTX_INIT, case.classnames, case.params["prompt_learner.ctx"])
    handcrafted = _handcrafted(w, KGCOOP_TEMPLATES[case.cfg.DATASET.NAME], case.classnames)
    return _kg_expected(case, cm.text_features(w, x, eot), handcrafted, c.W)


def tcp(case: Case) -> Expected:
    w, p, c = case.clip, case.params, case.cfg.TRAINER.TCP
    ctx = p["prompt_learner.ctx"]
    n, width = ctx.shape
    template = TCP_PROMPT_TEMPLATES[case.cfg.DATASET.NAME]
    texts = [" ".join(["X"] * n) + " " + template.format(name.replace("_", " ")) for name in case.classnames]
    x, eot = cm.class_prompt_embeddings(w, texts)
    x = cm.replace_rows(x, 1, ctx)
    handcrafted = _handcrafted(w, TCP_TEACHER_TEMPLATES[case.cfg.DATASET.NAME], case.classnames)
    hidden = handcrafted @ p["prompt_learner.meta_net.linear1.weight"].t() + p["prompt_learner.meta_net.linear1.bias"]
    hidden = hidden * torch.sigmoid(1.702 * hidden)
    tokens = hidden @ p["prompt_learner.meta_net.linear2.weight"].t() + p["prompt_learner.meta_net.linear2.bias"]
    tokens = tokens.reshape(len(case.classnames), n, width)

    def before_block(i: int, seq: Tensor) -> Tensor:
        if i != c.CLASS_LAYER:
            return seq
        return cm.replace_rows(seq, 1, c.MIX * tokens + (1.0 - c.MIX) * seq[:, 1 : 1 + n])

    return _kg_expected(case, cm.text_features(w, x, eot, before_block), handcrafted, c.W)


REFERENCES = {
    "KgCoOp": [
        Reference(kgcoop, "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml", name="released"),
        Reference(
            kgcoop, "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml", name="w2_ctx2",
            opts=("TRAINER.KGCOOP.W", "2.0", "TRAINER.KGCOOP.CTX_INIT", "a photo"),
        ),  # fmt: skip
    ],
    "TCP": [
        Reference(tcp, "configs/trainers/TCP/vit_b16_ep50_ctxv1.yaml", name="released"),
        Reference(
            tcp, "configs/trainers/TCP/vit_b16_ep50_ctxv1.yaml", name="mix_half_layer3",
            opts=("TRAINER.TCP.MIX", "0.5", "TRAINER.TCP.CLASS_LAYER", "3", "TRAINER.TCP.N_CTX", "2"),
        ),  # fmt: skip
    ],
}
