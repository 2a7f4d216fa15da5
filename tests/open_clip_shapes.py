"""Small random open_clip models of real families, saved as checkpoint files (no download, no weights).

Each shape is an open_clip config (``vision_cfg`` / ``text_cfg`` as open_clip's own, patch size, activation
and head rule of the family kept) registered in open_clip's model registry under a ``-test`` name, built by
``open_clip.create_model(name, pretrained=None)`` and saved with every parameter perturbed (biases and
LayerNorms non-trivial), so that ``open_clip:<name>/<file>`` loads it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import open_clip
import torch


def _vit(patch: int, image: int, width: int, layers: int, head_width: int = 64) -> dict[str, Any]:
    return dict(image_size=image, layers=layers, width=width, patch_size=patch, head_width=head_width)


def _text(width: int, heads: int, layers: int) -> dict[str, Any]:
    return dict(context_length=77, vocab_size=49408, width=width, heads=heads, layers=layers)


# name -> (open_clip family it shrinks, config); depths small for the equality tests.
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "ViT-B-32-test": (
        "ViT-B-32",
        dict(embed_dim=48, vision_cfg=_vit(32, 64, 128, 2), text_cfg=_text(64, 2, 2)),
    ),
    "ViT-B-16-test": (
        "ViT-B-16",
        dict(embed_dim=48, vision_cfg=_vit(16, 64, 128, 2), text_cfg=_text(64, 2, 2)),
    ),
    "ViT-B-16-quickgelu-test": (
        "ViT-B-16-quickgelu",
        dict(embed_dim=48, quick_gelu=True, vision_cfg=_vit(16, 64, 128, 2), text_cfg=_text(64, 2, 2)),
    ),
    # ViT-L/14: patch 14, image and text widths and embed_dim all different, as in the real model.
    "ViT-L-14-test": (
        "ViT-L-14",
        dict(embed_dim=40, vision_cfg=_vit(14, 56, 96, 2, 32), text_cfg=_text(64, 2, 2)),
    ),
    # ViT-g/bigG-style fractional MLP ratio and 88-wide heads; ResNet (RN50 family) tower.
    "ViT-g-14-test": (
        "ViT-g-14",
        dict(
            embed_dim=32,
            vision_cfg={**_vit(14, 28, 88, 2, 44), "mlp_ratio": 4.3637},
            text_cfg=_text(64, 2, 2),
        ),
    ),
    "RN50-test": (
        "RN50",
        dict(
            embed_dim=32,
            vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=16),
            text_cfg=_text(64, 2, 2),
        ),
    ),
}


# 12 blocks per tower (the paper configs' prompt depths 9 and 12), small images: train.py sizes the inputs
# from the model's config.
TRAINER_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "ViT-B-16-deep-test": (
        "ViT-B-16",
        dict(embed_dim=48, vision_cfg=_vit(16, 64, 64, 12, 32), text_cfg=_text(64, 2, 12)),
    ),
    "ViT-B-16-quickgelu-deep-test": (
        "ViT-B-16-quickgelu",
        dict(embed_dim=48, quick_gelu=True, vision_cfg=_vit(16, 64, 64, 12, 32), text_cfg=_text(64, 2, 12)),
    ),
    # ViT-L/14: 24 image blocks, 12 text blocks, patch 14, three different widths (image 48, text 64, embed 40).
    "ViT-L-14-deep-test": (
        "ViT-L-14",
        dict(embed_dim=40, vision_cfg=_vit(14, 56, 48, 24, 16), text_cfg=_text(64, 2, 12)),
    ),
}


def register(folder: Path, shapes: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """Write the shapes' configs into ``folder`` and add it to open_clip's model registry."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (_, cfg) in shapes.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)


def save_random(name: str, path: Path, seed: int = 0) -> torch.nn.Module:
    """open_clip's own random model ``name`` (registered), perturbed, saved to ``path``; returned in eval mode."""
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    torch.save(copy.deepcopy(model.state_dict()), path)
    return model.eval()
