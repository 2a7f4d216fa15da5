"""References of CoOp and CoCoOp: learnable context words in the class prompt, frozen towers.

CoOp: the class prompt is ``[SOS] ctx name . [EOT]`` (``end``), ``[SOS] ctx[:n//2] name ctx[n//2:] . [EOT]``
(``middle``) or ``[SOS] name ctx . [EOT]`` (``front``), one context for all classes or one per class
(CSC); loss = CE(exp(s) cos(f, g_c), y). CoCoOp: the context of image ``b`` is ``ctx + meta(f_b)``,
``meta = Linear-ReLU-Linear`` on the normalised frozen image feature, and image ``b`` is scored
against class features built from its own context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import clip as clip_pkg

from . import Case, Expected, Reference
from . import clip_math as cm


def _sequence(w: dict[str, Tensor], ctx: Tensor, name: str, position: str) -> tuple[Tensor, int]:
    """One class prompt built token by token, (77, width), and its EOT position."""
    emb = w["token_embedding.weight"]
    words = emb[torch.tensor(clip_pkg.encode(name.replace("_", " ")))]
    half = ctx.shape[0] // 2
    middle = {"end": [ctx, words], "middle": [ctx[:half], words, ctx[half:]], "front": [words, ctx]}[position]
    period = emb[torch.tensor(clip_pkg.encode("."))]
    rows = [emb[cm.SOS][None], *middle, period, emb[cm.EOT][None]]
    eot = sum(r.shape[0] for r in rows) - 1
    pad = emb[0][None].expand(77 - eot - 1, -1)
    return torch.cat([*rows, pad]), eot


def _class_features(w: dict[str, Tensor], ctx: Tensor, classnames: list[str], position: str) -> Tensor:
    seqs = [
        _sequence(w, ctx[c] if ctx.dim() == 3 else ctx, name, position) for c, name in enumerate(classnames)
    ]
    x = torch.stack([s for s, _ in seqs])
    return cm.text_features(w, x, torch.tensor([e for _, e in seqs]))


def coop(case: Case) -> Expected:
    w, ctx = case.clip, case.params["prompt_learner.ctx"]
    text = _class_features(w, ctx, case.classnames, case.cfg.TRAINER.COOP.CLASS_TOKEN_POSITION)
    logits = cm.logits(w, cm.image_features(w, case.images), text)
    return Expected(logits, F.cross_entropy(logits, case.labels))


def cocoop(case: Case) -> Expected:
    w, p = case.clip, case.params
    image = F.normalize(cm.image_features(w, case.images), dim=-1)
    hidden = torch.relu(
        image @ p["prompt_learner.meta_net.linear1.weight"].t() + p["prompt_learner.meta_net.linear1.bias"]
    )
    shift = (
        hidden @ p["prompt_learner.meta_net.linear2.weight"].t() + p["prompt_learner.meta_net.linear2.bias"]
    )
    rows = []
    for b in range(image.shape[0]):
        text = F.normalize(
            _class_features(w, p["prompt_learner.ctx"] + shift[b], case.classnames, "end"), dim=-1
        )
        rows.append(w["logit_scale"].exp() * text @ image[b])
    logits = torch.stack(rows)
    return Expected(logits, F.cross_entropy(logits, case.labels))


REFERENCES = {
    "CoOp": [
        Reference(coop, "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml", name="init_end"),
        Reference(
            coop,
            "configs/trainers/CoOp/vit_b16.yaml",
            name="csc_middle",
            opts=(
                "TRAINER.COOP.N_CTX",
                "4",
                "TRAINER.COOP.CSC",
                "True",
                "TRAINER.COOP.CLASS_TOKEN_POSITION",
                "middle",
            ),
        ),
        Reference(
            coop,
            "configs/trainers/CoOp/vit_b16.yaml",
            name="front",
            opts=("TRAINER.COOP.CLASS_TOKEN_POSITION", "front"),
        ),
    ],
    "CoCoOp": Reference(cocoop, "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"),
}
