"""OpenAI-semantics ``tokenize`` / ``encode`` on :class:`clip.simple_tokenizer.SimpleTokenizer` (open_clip's
byte-level BPE, which ships the vocabulary file, with OpenAI's special-token names)."""

from __future__ import annotations

from functools import lru_cache
from typing import Union

import torch

from .simple_tokenizer import SimpleTokenizer


@lru_cache(maxsize=1)
def _tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def encode(text: str) -> list[int]:
    """BPE ids of ``text`` without start/end tokens (e.g. to measure class-name lengths)."""
    return _tokenizer().encode(text)


def tokenize(texts: Union[str, list[str]], context_length: int = 77, truncate: bool = False) -> torch.LongTensor:
    """(N, context_length) ids: SOT, BPE ids, EOT, zero padding. EOT is the largest id in the vocabulary,
    so ``ids.argmax(-1)`` is its position.

    A text longer than ``context_length`` raises ``RuntimeError`` unless ``truncate``; truncation keeps
    EOT as the last token.
    """
    if isinstance(texts, str):
        texts = [texts]
    tok = _tokenizer()
    sot, eot = tok.sot_token_id, tok.eot_token_id
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [sot, *tok.encode(text), eot]
        if len(ids) > context_length:
            if not truncate:
                raise RuntimeError(
                    f"input {text!r} is {len(ids)} tokens long, more than the context length {context_length}"
                )
            ids = ids[:context_length]
            ids[-1] = eot
        result[row, : len(ids)] = torch.tensor(ids)
    return result
