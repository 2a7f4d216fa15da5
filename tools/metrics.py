"""The numbers behind every table: harmonic mean, mean +- std over seeds, and the two averaging rules.

The paper averages its open-world Table 1 as the arithmetic mean of the per-dataset HMs
(``mean_of_hms``), while the base-to-new literature (and the paper's Table 4 CLIP row) takes the
harmonic mean of the averaged base and new accuracies (``hm_of_means``). Both are provided and every
table says which one it shows. The std is numpy's population std (ddof 0), as in Dassl's
``parse_test_res.py``, so our "+-" values are comparable with the official logs' summaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Stat", "harmonic_mean", "summarize", "mean_of_hms", "hm_of_means", "STD_DDOF"]

STD_DDOF = 0
"""Degrees of freedom of the std over seeds: 0 = population std, like Dassl's ``np.std``."""


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2*base*new / (base + new); 0 when both accuracies are 0."""
    for name, value in (("base", base), ("new", new)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} accuracy must be a finite number >= 0, got {value!r}")
    if base + new == 0:
        return 0.0
    return 2.0 * base * new / (base + new)


@dataclass(frozen=True)
class Stat:
    """Mean and spread of one quantity over ``n`` seeds."""

    mean: float
    std: float
    n: int

    def format(self, digits: int = 2, with_std: bool = True) -> str:
        if not with_std:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} +- {self.std:.{digits}f}"


def summarize(values: Sequence[float], ci95: bool = False) -> Stat:
    """Mean and population std (ddof 0) of per-seed values; ``ci95`` gives 1.96*std/sqrt(n) instead."""
    if len(values) == 0:
        raise ValueError("cannot summarize an empty list of values")
    arr = np.asarray(values, dtype=float)
    std = float(np.std(arr, ddof=STD_DDOF))
    if ci95:
        std = 1.96 * std / math.sqrt(len(arr))
    return Stat(mean=float(np.mean(arr)), std=std, n=len(arr))


def mean_of_hms(hms: Sequence[float]) -> float:
    """Table 1's "Average": the arithmetic mean of the per-dataset harmonic means."""
    if len(hms) == 0:
        raise ValueError("mean_of_hms needs at least one dataset")
    return float(np.mean(np.asarray(hms, dtype=float)))


def hm_of_means(bases: Sequence[float], news: Sequence[float]) -> float:
    """Base-to-new convention: the harmonic mean of the dataset-averaged base and new accuracies."""
    if len(bases) == 0 or len(bases) != len(news):
        raise ValueError(
            f"hm_of_means needs equally many base and new values, got {len(bases)} and {len(news)}"
        )
    return harmonic_mean(float(np.mean(bases)), float(np.mean(news)))
