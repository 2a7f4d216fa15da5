"""Dassl's ``RandAugment(n, m)``: n operations drawn with python ``random``, all at magnitude m/30.

Same operation list and magnitude ranges as Dassl (16 ops, TPU EfficientNet ranges); CoPrompt trains
with it. Unlike Dassl, ``SolarizeAdd`` works on NumPy >= 1.24 (Dassl used the removed ``np.int``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

__all__ = ["RandAugment"]

_CUTOUT_FILL = (125, 123, 114)


def _signed(v: float) -> float:
    """Geometric ops apply the magnitude in a random direction."""
    return -v if random.random() > 0.5 else v


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coeffs)


def _shear_x(img: Image.Image, v: float) -> Image.Image:
    return _affine(img, (1, _signed(v), 0, 0, 1, 0))


def _shear_y(img: Image.Image, v: float) -> Image.Image:
    return _affine(img, (1, 0, 0, _signed(v), 1, 0))


def _translate_x_abs(img: Image.Image, v: float) -> Image.Image:
    return _affine(img, (1, 0, _signed(v), 0, 1, 0))


def _translate_y_abs(img: Image.Image, v: float) -> Image.Image:
    return _affine(img, (1, 0, 0, 0, 1, _signed(v)))


def _rotate(img: Image.Image, v: float) -> Image.Image:
    return img.rotate(_signed(v))


def _solarize_add(img: Image.Image, v: float, threshold: int = 128) -> Image.Image:
    shifted = np.clip(np.asarray(img).astype(np.int64) + int(v), 0, 255).astype(np.uint8)
    return ImageOps.solarize(Image.fromarray(shifted), threshold)


def _cutout_abs(img: Image.Image, v: float) -> Image.Image:
    """Paint a gray square of side ``v`` pixels at a random position."""
    w, h = img.size
    x0 = int(max(0.0, random.uniform(0, w) - v / 2.0))
    y0 = int(max(0.0, random.uniform(0, h) - v / 2.0))
    out = img.copy()
    ImageDraw.Draw(out).rectangle((x0, y0, min(w, x0 + v), min(h, y0 + v)), _CUTOUT_FILL)
    return out


_OPS: list[tuple[Callable[[Image.Image, float], Image.Image], float, float]] = [
    (lambda img, _: ImageOps.autocontrast(img), 0, 1),
    (lambda img, _: ImageOps.equalize(img), 0, 1),
    (lambda img, _: ImageOps.invert(img), 0, 1),
    (_rotate, 0, 30),
    (lambda img, v: ImageOps.posterize(img, int(v)), 4, 8),
    (lambda img, v: ImageOps.solarize(img, v), 0, 256),
    (_solarize_add, 0, 110),
    (lambda img, v: ImageEnhance.Color(img).enhance(v), 0.1, 1.9),
    (lambda img, v: ImageEnhance.Contrast(img).enhance(v), 0.1, 1.9),
    (lambda img, v: ImageEnhance.Brightness(img).enhance(v), 0.1, 1.9),
    (lambda img, v: ImageEnhance.Sharpness(img).enhance(v), 0.1, 1.9),
    (_shear_x, 0.0, 0.3),
    (_shear_y, 0.0, 0.3),
    (_cutout_abs, 0, 40),
    (_translate_x_abs, 0.0, 100),
    (_translate_y_abs, 0.0, 100),
]


class RandAugment:
    """Apply ``n`` operations chosen with replacement, each at magnitude ``m`` on a 0..30 scale."""

    def __init__(self, n: int = 2, m: int = 10) -> None:
        if not 0 <= m <= 30:
            raise ValueError(f"RandAugment magnitude must be in [0, 30] (INPUT.RANDAUGMENT_M), got {m}")
        self.n = n
        self.m = m

    def __call__(self, img: Image.Image) -> Image.Image:
        for op, low, high in random.choices(_OPS, k=self.n):
            img = op(img, (self.m / 30) * (high - low) + low)
        return img
