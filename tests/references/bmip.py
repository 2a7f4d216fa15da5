"""Reference of BMIP (IJCAI 2025): deep prompts of both towers mixed through attention-driven gates.

Prompt lists (k = 0 .. J-2 for block k+1): text own ``P_k`` (``compound_prompts_text``), vision own
``Q_k`` (one shared ``ctx_v`` or ``compound_prompts_visual[k]``), ``F_v`` text->vision and ``F_l``
vision->text linear maps (one shared or one per block). Before prompted block ``b`` of a tower, with
``x`` the tokens entering it: ``A`` = the head-averaged attention ``x``'s non-prompt rows pay to each
prompt slot (vision: mean over CLS and patches; text: the SOS row (released) or the mean over the rows
after the slots up to each class's EOT (paper)), averaged over the tower's batch (released) or kept per
sequence (paper), without gradient; ``w = sigmoid(g_b * A + h_b)`` per slot and the slots become
``w * own + (1 - w) * foreign``. Vision own/foreign: ``Q_k`` / ``F_v(P_k)``; text: ``P_k`` / ``F_l(Q_k)``.
The text tower stops one block earlier than the vision tower in the release. Vision input prompt:
``proj_t(ctx_t)`` (released) or ``ctx_v`` (paper). The two presets are restated here from docs/BMIP.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import Case, Expected, Reference
from . import clip_math as cm


@dataclass(frozen=True)
class Mode:
    text_query: str  # "sos" | "mean_valid"
    per_sample: bool
    text_offset: int
    own_first: bool  # vision input prompt ctx_v instead of proj_t(ctx_t)
    share_visual: bool
    share_text: bool


PRESETS = {
    "released": Mode("sos", False, 1, False, True, True),
    "paper": Mode("mean_valid", True, 0, True, False, False),
}


def mode_of(cfg) -> Mode:  # noqa: ANN001
    """The preset with the explicitly set keys of the config applied (only those these cases use)."""
    b, m = cfg.TRAINER.BMIP, PRESETS[cfg.TRAINER.BMIP.PRESET]
    share_v = m.share_visual if cfg.SHARE.SHARE_PARAMETER_VISUAL is None else cfg.SHARE.SHARE_PARAMETER_VISUAL
    share_t = m.share_text if cfg.SHARE.SHARE_PARAMETER_TEXT is None else cfg.SHARE.SHARE_PARAMETER_TEXT
    query = m.text_query if b.TEXT_ATTN_QUERY is None else b.TEXT_ATTN_QUERY
    per_sample = m.per_sample if b.ATTN_REDUCE is None else b.ATTN_REDUCE == "per_sample"
    offset = m.text_offset if b.TEXT_DEPTH_OFFSET is None else b.TEXT_DEPTH_OFFSET
    return Mode(query, per_sample, offset, m.own_first, share_v, share_t)


def _linear(p: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    return x @ p[f"{name}.weight"].t() + p[f"{name}.bias"]


def _gated(
    w: dict[str, Tensor], tower: str, i: int, x: Tensor, own: Tensor, foreign: Tensor, gate: tuple[Tensor, Tensor],
    mode: Mode, eot: Tensor,
) -> Tensor:  # fmt: skip
    """Block ``i``'s input with its prompt slots replaced by the gated mix."""
    m, length = own.shape[0], x.shape[1]
    probs = cm.attention_probs(w, f"{tower}.resblocks.{i}", x, causal=tower == "transformer").mean(dim=1)
    if tower != "transformer":
        start = length - m
        attn = probs[:, :start, start:].mean(dim=1)  # (N, m)
    elif mode.text_query == "sos":
        start = 1
        attn = probs[:, 0, 1 : 1 + m]
    else:
        start = 1
        rows = torch.arange(length)
        valid = ((rows[None, :] > m) & (rows[None, :] <= eot[:, None])).to(probs.dtype)  # (N, L)
        attn = (probs[:, :, 1 : 1 + m] * valid[:, :, None]).sum(dim=1) / valid.sum(dim=1, keepdim=True)
    attn = attn.detach()
    if not mode.per_sample:
        attn = attn.mean(dim=0)
    weight = torch.sigmoid(gate[0].reshape(()) * attn + gate[1].reshape(()))[..., None]
    return cm.replace_rows(x, start, weight * own + (1 - weight) * foreign)


def bmip_features(case: Case, prefix: str, n_ctx: int, depth: int, ctx_init: str) -> tuple[Tensor, Tensor]:
    """Raw prompted (image, text) features of BMIP's gated prompts whose tensors are ``<prefix>.*``.

    A shared vision prompt is ``ctx_v``, or the per-block Parameters the release makes of it (aliases
    or copies, TRAINER.BMIP.SHARED_VISION_PROMPT), each then its own leaf here."""
    w, p, mode = case.clip, case.params, mode_of(case.cfg)
    n_vision = depth - 1
    n_text = depth - 1 - mode.text_offset
    texts = [p[f"{prefix}.compound_prompts_text.{k}"] for k in range(n_vision)]

    def own_v(k: int) -> Tensor:  # per block when not shared, and the release's aliases or copies
        per_block = f"{prefix}.compound_prompts_visual.{k}"
        return p[per_block] if per_block in p else p[f"{prefix}.ctx_v"]

    def f_v(k: int) -> Tensor:
        name = "single_layer_t" if mode.share_text else f"compound_prompt_projections_t.{k}"
        return _linear(p, f"{prefix}.{name}", texts[k])

    def f_l(k: int) -> Tensor:
        name = "single_layer_v" if mode.share_visual else f"compound_prompt_projections_v.{k}"
        return _linear(p, f"{prefix}.{name}", own_v(k))

    def gate(tower: str, k: int) -> tuple[Tensor, Tensor]:
        return p[f"{prefix}.gates_{tower}.{k}.weight"], p[f"{prefix}.gates_{tower}.{k}.bias"]

    x, eot = cm.prompted_classes(w, ctx_init, case.classnames, p[f"{prefix}.ctx_t"])

    def text_hook(i: int, t: Tensor) -> Tensor:
        if not 1 <= i <= n_text:
            return t
        return _gated(w, "transformer", i, t, texts[i - 1], f_l(i - 1), gate("t", i - 1), mode, eot)

    def vision_hook(i: int, v: Tensor) -> Tensor:
        if not 1 <= i <= n_vision:
            return v
        return _gated(w, "visual.transformer", i, v, own_v(i - 1), f_v(i - 1), gate("v", i - 1), mode, eot)

    first = p[f"{prefix}.ctx_v"] if mode.own_first else _linear(p, f"{prefix}.proj_t", p[f"{prefix}.ctx_t"])
    text = cm.text_features(w, x, eot, text_hook)
    image = cm.image_features(w, case.images, first, vision_hook)
    assert n_ctx == texts[0].shape[0]
    return image, text


def bmip(case: Case) -> Expected:
    b = case.cfg.TRAINER.BMIP
    image, text = bmip_features(case, "prompt_learner", b.N_CTX, b.PROMPT_DEPTH, b.CTX_INIT)
    logits = cm.logits(case.clip, image, text)
    return Expected(logits, F.cross_entropy(logits, case.labels))


REFERENCES = {
    "BMIP": [
        Reference(bmip, "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml", name="released"),
        Reference(
            bmip, "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml", name="released_aliased",
            opts=("TRAINER.BMIP.SHARED_VISION_PROMPT", "aliased"),
        ),  # fmt: skip
        Reference(
            bmip, "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml", name="released_tied",
            opts=("TRAINER.BMIP.SHARED_VISION_PROMPT", "tied"),
        ),  # fmt: skip
        Reference(bmip, "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2_paper.yaml", name="paper"),
        Reference(
            bmip,
            "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml",
            name="released_mean_valid_unshared_vision",
            opts=("TRAINER.BMIP.TEXT_ATTN_QUERY", "mean_valid", "SHARE.SHARE_PARAMETER_VISUAL", "False",
                  "TRAINER.BMIP.RELEASE_DRAWS", "False"),  # the release's draws need its shared layout
        ),  # fmt: skip
    ],
}
