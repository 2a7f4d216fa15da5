"""Dassl's ``dassl.data.transforms``."""

from .transforms import INTERPOLATION_MODES, SUPPORTED_CHOICES, build_transform

__all__ = ["INTERPOLATION_MODES", "SUPPORTED_CHOICES", "build_transform"]
