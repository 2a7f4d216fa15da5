"""``build_sampler``: the samplers CoOp/MaPLe/BMIP-style configs name.

Only ``RandomSampler`` (torch's, drawing from the global torch RNG, as in Dassl) and
``SequentialSampler`` are provided; Dassl's domain/class samplers are used by none of the methods here.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

from torch.utils.data import RandomSampler, Sampler, SequentialSampler

__all__ = ["SUPPORTED_SAMPLERS", "build_sampler"]

SUPPORTED_SAMPLERS = ("RandomSampler", "SequentialSampler")


def build_sampler(
    sampler_type: str,
    cfg: Any = None,
    data_source: Sized | None = None,
    batch_size: int = 32,
    n_domain: int = 0,
    n_ins: int = 16,
) -> Sampler:
    """Return the sampler named ``sampler_type``; the other arguments exist for Dassl signature parity."""
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    raise ValueError(f'Unknown sampler "{sampler_type}"; supported: {", ".join(SUPPORTED_SAMPLERS)}')
