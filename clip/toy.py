"""The toy CLIP: a small CLIP of the real architecture pretrained by this project (docs/TOY_CLIP.md).

``toy:clip`` names the weights ``tools/pretrain_toy_clip.py`` writes into ``clip/weights/toy_clip.pt.gz`` (a
gzipped fp16 state dict, about 3 MB, shipped with the project): 12 blocks per tower, widths 64, ViT with
56-pixel patches (8 pixels of the 32-pixel images) on 224-pixel inputs (the 32-pixel ToyShapes and Digits images upscaled by the usual
pipeline, so every paper config runs with only ``MODEL.BACKBONE.NAME toy:clip`` changed).
"""

from __future__ import annotations

import gzip
import io
import logging
from pathlib import Path
from typing import Any

import torch

from .model import CLIP

logger = logging.getLogger(__name__)

TOY_PREFIX = "toy:"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# name -> (constructor arguments, weights file)
TOY_ARCH: dict[str, Any] = dict(
    embed_dim=64, image_resolution=224, vision_layers=12, vision_width=64, vision_patch_size=56,
    context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=12,
)  # fmt: skip
TOY_MODELS: dict[str, Path] = {"clip": WEIGHTS_DIR / "toy_clip.pt.gz"}


def new_toy_clip(seed: int) -> CLIP:
    """A randomly initialised toy CLIP (what pretraining starts from), in train mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIP(**TOY_ARCH)


def save_toy_clip(model: CLIP, path: Path) -> None:
    """Write ``model`` as a gzipped fp16 state dict; the same weights give the same bytes (gzip mtime 0)."""
    state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(buffer.getvalue())


def load_toy_clip(path: Path) -> CLIP:
    """The fp32 toy CLIP in eval mode from a file written by :func:`save_toy_clip`."""
    with gzip.open(path, "rb") as f:
        state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    with torch.device("meta"):
        model = CLIP(**TOY_ARCH)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


def build_toy_clip(name: str) -> CLIP:
    """The pretrained toy CLIP ``toy:<name>``; a clear error when the name or its file is unknown."""
    if name not in TOY_MODELS:
        raise ValueError(f"unknown toy CLIP {TOY_PREFIX}{name}; expected one of {[TOY_PREFIX + n for n in TOY_MODELS]}")
    path = TOY_MODELS[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"toy CLIP weights {path} are missing: rebuild them with python -m tools.pretrain_toy_clip"
        )
    model = load_toy_clip(path)
    logger.info("Loaded the toy CLIP %s%s from %s (a 64-wide model pretrained on rendered shapes)", TOY_PREFIX, name, path)
    return model
