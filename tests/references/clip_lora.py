"""Reference of CLIP-LoRA (CVPRW 2024): low-rank updates of q, k, v in every block of both towers.

In an adapted block, with ``h = LN1(x)``: ``p = h W_p^T + b_p + (alpha / sqrt(r)) * drop_p(h) A_p^T B_p^T`` for
p in q, k, v (each its own dropout, training only), then the usual attention, output projection and MLP.
Logits are ``100 * cos`` (the release's fixed scale). The class prompt is the release's one template
``"a photo of a {}."`` (``TEMPLATE coop``: CoOp's per-dataset one, Digits ``"a photo of the digit {}."``). The text sequences are cut after the last EOT (exact
under the causal mask) so that the dropout draws have the shapes the trainer draws them with; the draws
happen in the order text blocks 0..11 then vision blocks 0..11, q then k then v.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import Case, Expected, Reference
from . import clip_math as cm

RELEASE_TEMPLATE = "a photo of a {}."  # every dataset file of the release sets this one template
COOP_DIGITS_TEMPLATE = "a photo of the digit {}."  # trainers/templates.py's Digits entry, restated


def lora_block(case: Case, tower: str, i: int, x: Tensor, causal: bool, tower_params: str) -> Tensor:
    """One residual block with the LoRA updates of ``prompt_learner.<tower_params>.<i>.*`` on q, k, v."""
    c, w, p = case.cfg.TRAINER.CLIP_LORA, case.clip, case.params
    name = f"{tower}.resblocks.{i}"
    h = cm.layer_norm(w, f"{name}.ln_1", x)
    q, k, v = (h @ w[f"{name}.attn.in_proj_weight"].t() + w[f"{name}.attn.in_proj_bias"]).chunk(3, dim=-1)
    scaling = c.ALPHA / math.sqrt(c.R) if c.RANK_SCALING == "sqrt_rank" else c.ALPHA / c.R
    adapted = {"q": q, "k": k, "v": v}
    for proj in c.PARAMS:
        a = p[f"prompt_learner.{tower_params}.{i}.{proj}.w_lora_A"]
        b = p[f"prompt_learner.{tower_params}.{i}.{proj}.w_lora_B"]
        dropped = F.dropout(h, c.DROPOUT_RATE, training=True) if c.DROPOUT_RATE > 0 else h
        adapted[proj] = adapted[proj] + scaling * (dropped @ a.t() @ b.t())
    n, length, d = q.shape
    heads = d // 64

    def split(t: Tensor) -> Tensor:
        return t.reshape(n, length, heads, d // heads).transpose(1, 2)

    scores = split(adapted["q"]) @ split(adapted["k"]).transpose(-1, -2) / math.sqrt(d // heads)
    if causal:
        scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    attended = (scores.softmax(dim=-1) @ split(adapted["v"])).transpose(1, 2).reshape(n, length, d)
    x = x + attended @ w[f"{name}.attn.out_proj.weight"].t() + w[f"{name}.attn.out_proj.bias"]
    m = cm.layer_norm(w, f"{name}.ln_2", x) @ w[f"{name}.mlp.c_fc.weight"].t() + w[f"{name}.mlp.c_fc.bias"]
    m = m * torch.sigmoid(1.702 * m)
    return x + m @ w[f"{name}.mlp.c_proj.weight"].t() + w[f"{name}.mlp.c_proj.bias"]


def clip_lora(case: Case) -> Expected:
    w = case.clip
    assert case.cfg.TRAINER.CLIP_LORA.ENCODER == "both" and case.cfg.TRAINER.CLIP_LORA.POSITION == "all"
    chosen = case.cfg.TRAINER.CLIP_LORA.TEMPLATE
    assert chosen in ("coop", RELEASE_TEMPLATE), chosen
    template = COOP_DIGITS_TEMPLATE if chosen == "coop" else RELEASE_TEMPLATE
    x, eot = cm.class_prompt_embeddings(w, [template.format(n.replace("_", " ")) for n in case.classnames])
    x = (x + w["positional_embedding"])[:, : int(eot.max()) + 1]
    for i in range(cm.n_blocks(w, "transformer")):
        x = lora_block(case, "transformer", i, x, True, "text_lora")
    text = cm.layer_norm(w, "ln_final", x)[torch.arange(x.shape[0]), eot] @ w["text_projection"]

    weight = w["visual.conv1.weight"]
    patches = F.conv2d(case.images, weight, stride=weight.shape[-1]).flatten(2).transpose(1, 2)
    cls = w["visual.class_embedding"].expand(case.images.shape[0], 1, -1)
    v = cm.layer_norm(w, "visual.ln_pre", torch.cat([cls, patches], dim=1) + w["visual.positional_embedding"])
    for i in range(cm.n_blocks(w, "visual.transformer")):
        v = lora_block(case, "visual.transformer", i, v, False, "vision_lora")
    image = cm.layer_norm(w, "visual.ln_post", v[:, 0]) @ w["visual.proj"]

    logits = (
        case.cfg.TRAINER.CLIP_LORA.LOGIT_SCALE * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
    )
    return Expected(logits, F.cross_entropy(logits, case.labels))


REFERENCES = {
    "CLIPLoRA": [
        Reference(clip_lora, "configs/trainers/CLIPLoRA/vit_b16.yaml", name="released_with_dropout"),
        Reference(
            clip_lora,
            "configs/trainers/CLIPLoRA/vit_b16.yaml",
            opts=(
                "TRAINER.CLIP_LORA.DROPOUT_RATE",
                "0.0",
                "TRAINER.CLIP_LORA.RANK_SCALING",
                "rank",
                "TRAINER.CLIP_LORA.PARAMS",
                "['q', 'v']",
                "TRAINER.CLIP_LORA.R",
                "3",
                "TRAINER.CLIP_LORA.TEMPLATE",
                "coop",
            ),
            name="no_dropout_rank_scaling_qv_r3_coop_template",
        ),  # fmt: skip
    ],
}
