"""One clean CLIP (OpenAI architecture) with per-block prompt hooks; see docs/CLIP.md."""

from .factory import ARCHS, build_clip, build_model, load, openai_layout
from .model import (
    CLIP,
    PRECISIONS,
    BlockInput,
    Hook,
    LayerNorm,
    ModifiedResNet,
    PrefixAttention,
    PrefixedProjection,
    Probed,
    Projection,
    QuickGELU,
    ResidualAttentionBlock,
    Transformer,
    VisionTransformer,
    to_precision,
)
from .pretrained import (
    _MODELS,
    CACHE_ENV_VAR,
    _download,
    available_models,
    default_cache_dir,
    read_state_dict,
)
from .tokenizer import encode, tokenize
from .transform import OPENAI_MEAN, OPENAI_STD, image_transform

__all__ = [
    "ARCHS",
    "BlockInput",
    "CACHE_ENV_VAR",
    "CLIP",
    "Hook",
    "LayerNorm",
    "ModifiedResNet",
    "PrefixAttention",
    "PrefixedProjection",
    "Probed",
    "OPENAI_MEAN",
    "OPENAI_STD",
    "PRECISIONS",
    "Projection",
    "QuickGELU",
    "ResidualAttentionBlock",
    "Transformer",
    "VisionTransformer",
    "_MODELS",
    "_download",
    "available_models",
    "build_clip",
    "build_model",
    "default_cache_dir",
    "encode",
    "image_transform",
    "load",
    "openai_layout",
    "read_state_dict",
    "to_precision",
    "tokenize",
]
