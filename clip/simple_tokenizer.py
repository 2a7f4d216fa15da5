"""OpenAI's tokenizer module path, for code ported from CoOp: ``from clip.simple_tokenizer import
SimpleTokenizer as _Tokenizer``.

:class:`SimpleTokenizer` is open_clip's byte-level BPE tokenizer (which ships the vocabulary) with
OpenAI's names for the two special tokens: ``<|startoftext|>`` (id 49406) and ``<|endoftext|>`` (id
49407) in ``encoder``, ``decoder`` and the text pattern, so code that looks them up by name, or encodes
them literally, sees what OpenAI's tokenizer gives. ``encode``, ``decode``, ``bpe``, ``byte_encoder`` /
``byte_decoder`` and ``bpe_ranks`` are open_clip's, which behave as OpenAI's.
"""

from __future__ import annotations

from typing import Optional

import regex
from open_clip.tokenizer import SimpleTokenizer as _OpenCLIPTokenizer
from open_clip.tokenizer import basic_clean, bytes_to_unicode, default_bpe, get_pairs, whitespace_clean

__all__ = [
    "EOT_TOKEN",
    "SOT_TOKEN",
    "SimpleTokenizer",
    "basic_clean",
    "bytes_to_unicode",
    "default_bpe",
    "get_pairs",
    "whitespace_clean",
]

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"


class SimpleTokenizer(_OpenCLIPTokenizer):
    """OpenAI's ``SimpleTokenizer(bpe_path)``: ``encode(text) -> ids``, ``decode(ids) -> text``, and the
    ``encoder`` (token -> id) / ``decoder`` (id -> token) dicts."""

    def __init__(self, bpe_path: Optional[str] = None) -> None:
        super().__init__(bpe_path or default_bpe())
        own_names = [self.decoder[self.sot_token_id], self.decoder[self.eot_token_id]]
        for old, new in zip(own_names, (SOT_TOKEN, EOT_TOKEN)):
            token_id = self.encoder.pop(old)
            self.encoder[new] = token_id
            self.decoder[token_id] = new
            self.cache.pop(old, None)
            self.cache[new] = new
        # The pattern starts with the special tokens so they stay whole; swap in OpenAI's (escaped: '|').
        own_prefix = "|".join(own_names) + "|"
        if not self.pat.pattern.startswith(own_prefix):
            raise RuntimeError(
                "open_clip's tokenizer pattern no longer starts with its special tokens "
                f"{own_names}; clip/simple_tokenizer.py needs updating for this open_clip version"
            )
        rest = self.pat.pattern[len(own_prefix) :]
        self.pat = regex.compile(f"{regex.escape(SOT_TOKEN)}|{regex.escape(EOT_TOKEN)}|{rest}", regex.IGNORECASE)
