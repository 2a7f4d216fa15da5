"""Import path of OpenAI's package (``from clip import clip``) used by CoOp-family trainers.

Names only: every object here is the one defined in ``clip.factory``, ``clip.pretrained`` and
``clip.tokenizer``, so code ported from CoOp/MaPLe needs no renaming.
"""

from .factory import build_model, load
from .pretrained import _MODELS, _download, available_models
from .tokenizer import encode, tokenize

__all__ = ["_MODELS", "_download", "available_models", "build_model", "encode", "load", "tokenize"]
