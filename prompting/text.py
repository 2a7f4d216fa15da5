"""Class-prompt construction shared by every method that learns text context.

Two pieces, used by CoOp/CoCoOp (input context only) and by the deep-prompt family (IVLP, MaPLe, BMIP, ...):

* :func:`init_context` - the learnable context vectors, initialised from the words of ``CTX_INIT`` or
  randomly, plus the prompt prefix string the class prompts are tokenised with;
* :func:`tokenize_class_prompts` - tokenise ``"<prefix> <class name>."`` for every class and split the frozen
  word embeddings into the SOS row (``prefix``) and everything after the context slots (``suffix``).

The frozen pieces depend on the label space, so prompt learners keep them as *non-persistent* buffers:
checkpoints never contain them and loading a base-trained model for new or all classes simply rebuilds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import clip as clip_pkg

__all__ = ["ClassPrompts", "assemble_prompts", "init_context", "phrase_embedding", "tokenize_class_prompts"]

CONTEXT_STD = 0.02  # N(0, 0.02^2): the random context init of CoOp, MaPLe, IVLP, VPT and BMIP


def phrase_embedding(clip_model: nn.Module, phrase: str) -> Tensor:
    """Frozen word embeddings (n_tokens, width) of ``phrase`` without SOS/EOT, in fp32."""
    token_ids = clip_pkg.tokenize([phrase])
    n_tokens = int(token_ids.argmax(dim=-1)) - 1
    with torch.no_grad():
        embedding = clip_model.token_embedding(token_ids.to(clip_model.token_embedding.weight.device))
    return embedding[0, 1 : 1 + n_tokens].float().clone()


def init_context(
    clip_model: nn.Module, n_ctx: int, ctx_init: str, prefix_tokens: int = 0
) -> tuple[Tensor, str]:
    """Initial context vectors (n_ctx, text_width) fp32 and the prompt prefix string.

    ``prefix_tokens`` is how many positions after SOS the prefix must occupy (default ``n_ctx``; BMIP's
    Joint ablation writes 2*n_ctx slots in deep layers). With a non-empty ``ctx_init`` of at least that
    many tokens, the first ``n_ctx`` token embeddings are used and the *whole* phrase is the prefix
    (MaPLe/IVLP/BMIP: with n_ctx=2 and "a photo of a", "a photo" is learnable and "of a" stays frozen in
    the suffix). CoOp-style callers pass ``n_ctx`` = the phrase's token count. Otherwise the vectors are
    drawn from N(0, 0.02^2) and the prefix is ``"X X ... X"`` (``prefix_tokens`` times). The official
    MaPLe-family test is ``n_ctx <= 4``: the same rule for the released phrase "a photo of a" (4 tokens).
    """
    if n_ctx < 1:
        raise ValueError(f"the number of context tokens must be >= 1, got {n_ctx}")
    prefix_tokens = max(prefix_tokens, n_ctx)
    ctx_init = ctx_init.replace("_", " ").strip()
    if ctx_init:
        words = phrase_embedding(clip_model, ctx_init)
        if prefix_tokens <= words.shape[0]:
            return words[:n_ctx].clone(), ctx_init
    width = clip_model.token_embedding.weight.shape[1]
    ctx = torch.empty(n_ctx, width)
    nn.init.normal_(ctx, std=CONTEXT_STD)
    return ctx, " ".join(["X"] * prefix_tokens)


@dataclass
class ClassPrompts:
    """Tokenised class prompts of one label space and their frozen embedding pieces."""

    token_ids: Tensor  # (C, 77) long
    prefix: Tensor  # (C, 1, width): SOS
    suffix: Tensor  # (C, 77 - 1 - n_slots, width): frozen words after the context slots, EOT, padding
    eot_indices: Tensor  # (C,) long
    name_lens: list[int]  # token count of each class name (CoOp's middle/front class-token positions)


def tokenize_class_prompts(
    clip_model: nn.Module, classnames: list[str], prompt_prefix: str, n_slots: int, template: str = "{}."
) -> ClassPrompts:
    """Tokenise ``"<prompt_prefix> <template with the name>"`` per class (``"<prefix> <name>."`` by
    default; TCP's per-dataset templates otherwise) and split off SOS and the suffix after ``n_slots``.

    Learners without context (CLIP-LoRA, MMRL) pass their whole hand-written prompt as ``template``
    with an empty prefix.

    Class names have ``_`` replaced by spaces (as every official repository does). The embeddings are
    computed once under ``no_grad`` in the token embedding's dtype.
    """
    if not classnames:
        raise ValueError("tokenize_class_prompts needs at least one class name")
    names = [name.replace("_", " ") for name in classnames]
    name_lens = [int(clip_pkg.tokenize([name]).argmax(dim=-1)) - 1 for name in names]
    texts = [template.format(name) for name in names]
    prompts = [f"{prompt_prefix} {text}" if prompt_prefix else text for text in texts]
    token_ids = clip_pkg.tokenize(prompts)
    eot = token_ids.argmax(dim=-1)
    too_short = (eot <= n_slots).nonzero().flatten().tolist()
    if too_short:
        raise ValueError(
            f"class prompt {prompts[too_short[0]]!r} has fewer tokens than the {n_slots} context slots"
        )
    device = clip_model.token_embedding.weight.device
    with torch.no_grad():
        embedding = clip_model.token_embedding(token_ids.to(device))
    return ClassPrompts(
        token_ids=token_ids.to(device),
        prefix=embedding[:, :1].clone(),
        suffix=embedding[:, 1 + n_slots :].clone(),
        eot_indices=eot.to(device),
        name_lens=name_lens,
    )


def assemble_prompts(prefix: Tensor, ctx: Tensor, suffix: Tensor) -> Tensor:
    """``[SOS, ctx, suffix]`` (C, 77, width); ``ctx`` is (n, width) shared by all classes or (C, n, width)."""
    n_cls = prefix.shape[0]
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(n_cls, -1, -1)
    return torch.cat([prefix, ctx.to(prefix.dtype), suffix], dim=1)
