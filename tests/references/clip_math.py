"""CLIP's two towers written out as plain tensor maths on a state dict, for the exactness references.

Independent of clip/model.py on purpose: explicit softmax attention with an explicit causal mask, the
full 77-token text sequence (no trimming), no fused kernels, no hooks objects. Prompt methods enter
through ``before_block(i, x) -> x``, called with the tokens about to enter block ``i`` (batch-first
(N, L, D)); it returns the tokens block ``i`` runs on. Head counts follow OpenAI's rule (width // 64).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

import clip as clip_pkg

__all__ = [
    "BeforeBlock",
    "attention_probs",
    "block",
    "class_prompt_embeddings",
    "deep_text",
    "deep_vision",
    "encode_texts",
    "image_features",
    "logits",
    "n_blocks",
    "prompted_classes",
    "replace_rows",
    "text_features",
    "token_embeddings",
]

BeforeBlock = Optional[Callable[[int, Tensor], Tensor]]
# ``after(i, block input)``: a tensor added to block i's output, or None (MMA's adapters).
AfterBlock = Optional[Callable[[int, Tensor], Optional[Tensor]]]
SOS, EOT = 49406, 49407


def layer_norm(w: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    """CLIP's LayerNorm ``name`` (eps 1e-5) applied to ``x``."""
    return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-5)


def n_blocks(w: dict[str, Tensor], tower: str) -> int:
    """Number of blocks of ``tower`` ("transformer" = text, "visual.transformer" = image)."""
    prefix = f"{tower}.resblocks."
    return len({k[len(prefix) :].split(".")[0] for k in w if k.startswith(prefix)})


def attention_probs(w: dict[str, Tensor], name: str, x: Tensor, causal: bool) -> Tensor:
    """Per-head softmax attention (N, heads, L, L) block ``name`` computes on its input ``x``."""
    h = layer_norm(w, f"{name}.ln_1", x)
    q, k, _ = (h @ w[f"{name}.attn.in_proj_weight"].t() + w[f"{name}.attn.in_proj_bias"]).chunk(3, dim=-1)
    n, length, d = q.shape
    heads = d // 64
    q = q.reshape(n, length, heads, d // heads).transpose(1, 2)
    k = k.reshape(n, length, heads, d // heads).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    if causal:
        future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(dim=-1)


def block(w: dict[str, Tensor], name: str, x: Tensor, causal: bool) -> Tensor:
    """One pre-LN residual block: x + Attn(LN1 x); x + MLP(LN2 x) with QuickGELU."""
    probs = attention_probs(w, name, x, causal)
    h = layer_norm(w, f"{name}.ln_1", x)
    _, _, v = (h @ w[f"{name}.attn.in_proj_weight"].t() + w[f"{name}.attn.in_proj_bias"]).chunk(3, dim=-1)
    n, length, d = v.shape
    heads = probs.shape[1]
    v = v.reshape(n, length, heads, d // heads).transpose(1, 2)
    attended = (probs @ v).transpose(1, 2).reshape(n, length, d)
    x = x + attended @ w[f"{name}.attn.out_proj.weight"].t() + w[f"{name}.attn.out_proj.bias"]
    h = layer_norm(w, f"{name}.ln_2", x) @ w[f"{name}.mlp.c_fc.weight"].t() + w[f"{name}.mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)
    return x + h @ w[f"{name}.mlp.c_proj.weight"].t() + w[f"{name}.mlp.c_proj.bias"]


def _run(
    w: dict[str, Tensor], tower: str, x: Tensor, causal: bool, before_block: BeforeBlock, after_block: AfterBlock = None
) -> Tensor:
    for i in range(n_blocks(w, tower)):
        if before_block is not None:
            x = before_block(i, x)
        extra = after_block(i, x) if after_block is not None else None
        x = block(w, f"{tower}.resblocks.{i}", x, causal)
        if extra is not None:
            x = x + extra
    return x


def token_embeddings(w: dict[str, Tensor], token_ids: Tensor) -> Tensor:
    """Word embeddings (N, 77, width) of token ids (N, 77)."""
    return w["token_embedding.weight"][token_ids]


def class_prompt_embeddings(w: dict[str, Tensor], texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Embedded tokenised ``texts`` (N, 77, width) and their EOT positions (N,)."""
    ids = clip_pkg.tokenize(list(texts))
    return token_embeddings(w, ids), (ids == EOT).nonzero()[:, 1]


def text_features(
    w: dict[str, Tensor], x: Tensor, eot: Tensor, before_block: BeforeBlock = None, after_block: AfterBlock = None
) -> Tensor:
    """Raw text features (N, embed_dim) of embedded sequences ``x`` (N, 77, width), EOT rows ``eot``."""
    x = x + w["positional_embedding"][: x.shape[1]]
    x = layer_norm(w, "ln_final", _run(w, "transformer", x, True, before_block, after_block))
    return x[torch.arange(x.shape[0]), eot] @ w["text_projection"]


def encode_texts(w: dict[str, Tensor], texts: Sequence[str]) -> Tensor:
    """Raw features of plain texts (no prompts), (N, embed_dim).

    The sequences are cut after the last EOT: under the causal mask no row attends to later rows, so
    this is the same maths and keeps the teachers' hundreds of template sentences cheap."""
    x, eot = class_prompt_embeddings(w, texts)
    return text_features(w, x[:, : int(eot.max()) + 1], eot)


def image_features(
    w: dict[str, Tensor],
    images: Tensor,
    prompts: Optional[Tensor] = None,
    before_block: BeforeBlock = None,
    after_block: AfterBlock = None,
) -> Tensor:
    """Raw ViT features (N, embed_dim); ``prompts`` (m, width) are appended after the patch tokens."""
    weight = w["visual.conv1.weight"]
    patches = F.conv2d(images, weight, stride=weight.shape[-1]).flatten(2).transpose(1, 2)
    cls = w["visual.class_embedding"].expand(images.shape[0], 1, -1)
    x = torch.cat([cls, patches], dim=1) + w["visual.positional_embedding"]
    if prompts is not None:
        x = torch.cat([x, prompts.expand(images.shape[0], -1, -1)], dim=1)
    x = _run(w, "visual.transformer", layer_norm(w, "visual.ln_pre", x), False, before_block, after_block)
    return layer_norm(w, "visual.ln_post", x[:, 0]) @ w["visual.proj"]


def logits(w: dict[str, Tensor], image: Tensor, text: Tensor) -> Tensor:
    """exp(logit_scale) * cosine similarity of raw features (N, E) and (C, E)."""
    return w["logit_scale"].exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()


def replace_rows(x: Tensor, start: int, tokens: Tensor) -> Tensor:
    """``x`` (N, L, D) with rows ``start .. start+m-1`` replaced by ``tokens`` (m, D) or (N, m, D)."""
    tokens = tokens.expand(x.shape[0], -1, -1) if tokens.dim() == 2 else tokens
    return torch.cat([x[:, :start], tokens, x[:, start + tokens.shape[1] :]], dim=1)


def deep_text(prompts: dict[int, Tensor]) -> BeforeBlock:
    """Text deep prompting: before block ``i`` positions ``1..m`` become ``prompts[i]``."""
    return lambda i, x: replace_rows(x, 1, prompts[i]) if i in prompts else x


def deep_vision(prompts: dict[int, Tensor]) -> BeforeBlock:
    """Vision deep prompting: before block ``i`` the last ``m`` positions become ``prompts[i]``."""
    return lambda i, x: replace_rows(x, x.shape[1] - prompts[i].shape[-2], prompts[i]) if i in prompts else x


def prompted_classes(
    w: dict[str, Tensor], phrase: str, classnames: Sequence[str], ctx: Tensor
) -> tuple[Tensor, Tensor]:
    """Embedded ``"<phrase> <class>."`` (C, 77, width) with positions ``1..n`` replaced by ``ctx`` (n, width)."""
    x, eot = class_prompt_embeddings(w, [f"{phrase} {name.replace('_', ' ')}." for name in classnames])
    return replace_rows(x, 1, ctx), eot
