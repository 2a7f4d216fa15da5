"""``build_transform``: Dassl's train/test pipelines built from ``INPUT.TRANSFORMS`` choices.

Train: Resize only when no crop is chosen; RandomResizedCrop with the configured interpolation and
scale; flips, jitter ... in Dassl's order. Test: resize the shorter edge to ``max(SIZE)`` and center
crop to ``SIZE`` whatever the choices (Dassl >= 0.5).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    GaussianBlur,
    InterpolationMode,
    Normalize,
    RandomApply,
    RandomCrop,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)

from .randaugment import RandAugment

__all__ = [
    "INTERPOLATION_MODES",
    "SUPPORTED_CHOICES",
    "build_transform",
    "Random2DTranslation",
    "InstanceNormalization",
    "Cutout",
    "GaussianNoise",
]

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

SUPPORTED_CHOICES = (
    "random_flip",
    "random_resized_crop",
    "normalize",
    "instance_norm",
    "random_crop",
    "random_translation",
    "center_crop",
    "cutout",
    "randaugment",
    "gaussian_noise",
    "colorjitter",
    "randomgrayscale",
    "gaussian_blur",
)


class Random2DTranslation:
    """With probability ``p``: enlarge by 1.125 and crop ``(height, width)`` at a random offset; else resize."""

    def __init__(self, height: int, width: int, p: float = 0.5, interpolation: Any = Image.BILINEAR) -> None:
        self.height = height
        self.width = width
        self.p = p
        self.interpolation = interpolation

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.uniform(0, 1) > self.p:
            return img.resize((self.width, self.height), self.interpolation)
        new_w, new_h = int(round(self.width * 1.125)), int(round(self.height * 1.125))
        enlarged = img.resize((new_w, new_h), self.interpolation)
        x1 = int(round(random.uniform(0, new_w - self.width)))
        y1 = int(round(random.uniform(0, new_h - self.height)))
        return enlarged.crop((x1, y1, x1 + self.width, y1 + self.height))


class InstanceNormalization:
    """Standardise each channel of one image tensor by its own mean and std."""

    def __init__(self, eps: float = 1e-8) -> None:
        self.eps = eps

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        flat = img.reshape(img.shape[0], -1)
        mean = flat.mean(1).view(-1, 1, 1)
        std = flat.std(1).view(-1, 1, 1)
        return (img - mean) / (std + self.eps)


class Cutout:
    """Zero ``n_holes`` squares of side ``length`` (clipped at the border) in a CHW tensor."""

    def __init__(self, n_holes: int = 1, length: int = 16) -> None:
        self.n_holes = n_holes
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[1], img.shape[2]
        mask = torch.ones(h, w, dtype=img.dtype)
        half = self.length // 2
        for _ in range(self.n_holes):
            y, x = np.random.randint(h), np.random.randint(w)
            mask[max(0, y - half) : min(h, y + half), max(0, x - half) : min(w, x + half)] = 0
        return img * mask


class GaussianNoise:
    """With probability ``p``, add N(mean, std) noise to a tensor image."""

    def __init__(self, mean: float = 0.0, std: float = 0.15, p: float = 0.5) -> None:
        self.mean = mean
        self.std = std
        self.p = p

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if random.uniform(0, 1) > self.p:
            return img
        return img + torch.randn(img.size()) * self.std + self.mean


def _check_choices(choices: Sequence[str]) -> None:
    for choice in choices:
        if choice not in SUPPORTED_CHOICES:
            raise ValueError(
                f'Unsupported transform "{choice}" in INPUT.TRANSFORMS; supported: {", ".join(SUPPORTED_CHOICES)}'
            )


def build_transform(cfg: Any, is_train: bool = True, choices: Sequence[str] | None = None) -> Compose | None:
    """Build the train or test pipeline; ``choices`` overrides ``INPUT.TRANSFORMS``.

    Returns None (no transform at all) when ``INPUT.NO_TRANSFORM`` is set.
    """
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    if choices is None:
        choices = cfg.INPUT.TRANSFORMS
    _check_choices(choices)
    if cfg.INPUT.INTERPOLATION not in INTERPOLATION_MODES:
        raise ValueError(
            f'Unsupported INPUT.INTERPOLATION "{cfg.INPUT.INTERPOLATION}"; supported: {", ".join(INTERPOLATION_MODES)}'
        )
    normalize = Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    build = _build_transform_train if is_train else _build_transform_test
    return build(cfg, choices, normalize)


def _build_transform_train(cfg: Any, choices: Sequence[str], normalize: Normalize) -> Compose:
    print("Building transform_train")
    inp = cfg.INPUT
    interp = INTERPOLATION_MODES[inp.INTERPOLATION]
    size = tuple(inp.SIZE)
    tfms: list[Any] = []
    if "random_crop" not in choices and "random_resized_crop" not in choices:
        print(f"+ resize to {size[0]}x{size[1]}")
        tfms.append(Resize(size, interpolation=interp))
    if "random_translation" in choices:
        print("+ random translation")
        tfms.append(Random2DTranslation(size[0], size[1]))
    if "random_crop" in choices:
        print(f"+ random crop (padding = {inp.CROP_PADDING})")
        tfms.append(RandomCrop(size, padding=inp.CROP_PADDING))
    if "random_resized_crop" in choices:
        print(f"+ random resized crop (size={size}, scale={tuple(inp.RRCROP_SCALE)})")
        tfms.append(RandomResizedCrop(size, scale=tuple(inp.RRCROP_SCALE), interpolation=interp))
    if "random_flip" in choices:
        print("+ random flip")
        tfms.append(RandomHorizontalFlip())
    if "randaugment" in choices:
        print(f"+ randaugment (n={inp.RANDAUGMENT_N}, m={inp.RANDAUGMENT_M})")
        tfms.append(RandAugment(inp.RANDAUGMENT_N, inp.RANDAUGMENT_M))
    if "colorjitter" in choices:
        print("+ color jitter")
        tfms.append(
            ColorJitter(
                brightness=inp.COLORJITTER_B,
                contrast=inp.COLORJITTER_C,
                saturation=inp.COLORJITTER_S,
                hue=inp.COLORJITTER_H,
            )
        )
    if "randomgrayscale" in choices:
        print("+ random gray scale")
        tfms.append(RandomGrayscale(p=inp.RGS_P))
    if "gaussian_blur" in choices:
        print(f"+ gaussian blur (kernel={inp.GB_K})")
        tfms.append(RandomApply([GaussianBlur(inp.GB_K)], p=inp.GB_P))
    print("+ to torch tensor of range [0, 1]")
    tfms.append(ToTensor())
    if "cutout" in choices:
        print(f"+ cutout (n_holes={inp.CUTOUT_N}, length={inp.CUTOUT_LEN})")
        tfms.append(Cutout(inp.CUTOUT_N, inp.CUTOUT_LEN))
    if "normalize" in choices:
        print(f"+ normalization (mean={list(inp.PIXEL_MEAN)}, std={list(inp.PIXEL_STD)})")
        tfms.append(normalize)
    if "gaussian_noise" in choices:
        print(f"+ gaussian noise (mean={inp.GN_MEAN}, std={inp.GN_STD})")
        tfms.append(GaussianNoise(inp.GN_MEAN, inp.GN_STD))
    if "instance_norm" in choices:
        print("+ instance normalization")
        tfms.append(InstanceNormalization())
    return Compose(tfms)


def _build_transform_test(cfg: Any, choices: Sequence[str], normalize: Normalize) -> Compose:
    print("Building transform_test")
    inp = cfg.INPUT
    size = tuple(inp.SIZE)
    print(f"+ resize the smaller edge to {max(size)}")
    print(f"+ {size[0]}x{size[1]} center crop")
    tfms: list[Any] = [
        Resize(max(size), interpolation=INTERPOLATION_MODES[inp.INTERPOLATION]),
        CenterCrop(size),
    ]
    print("+ to torch tensor of range [0, 1]")
    tfms.append(ToTensor())
    if "normalize" in choices:
        print(f"+ normalization (mean={list(inp.PIXEL_MEAN)}, std={list(inp.PIXEL_STD)})")
        tfms.append(normalize)
    if "instance_norm" in choices:
        print("+ instance normalization")
        tfms.append(InstanceNormalization())
    return Compose(tfms)
