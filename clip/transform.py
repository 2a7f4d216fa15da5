"""CLIP's evaluation preprocessing (bicubic resize, center crop, CLIP mean/std)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _to_rgb(image: Any) -> Any:
    return image.convert("RGB")


def image_transform(n_px: int) -> Callable[[Any], torch.Tensor]:
    """The ``preprocess`` returned by ``clip.load``: PIL image -> normalised (3, n_px, n_px) tensor."""
    return Compose([
        Resize(n_px, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(n_px),
        _to_rgb,
        ToTensor(),
        Normalize(OPENAI_MEAN, OPENAI_STD),
    ])
