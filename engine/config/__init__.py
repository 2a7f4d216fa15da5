"""Dassl's ``dassl.config``: the yacs defaults tree and helpers around it."""

from __future__ import annotations

from yacs.config import CfgNode

from .defaults import _C as cfg_default

__all__ = ["get_cfg_default", "clean_cfg"]


def get_cfg_default() -> CfgNode:
    """Return a fresh copy of the defaults, so callers may extend and merge freely."""
    return cfg_default.clone()


def clean_cfg(cfg: CfgNode, trainer: str) -> None:
    """Drop every ``TRAINER`` subtree except ``NAME`` and the one of ``trainer`` (case-insensitive).

    Keeps a printed config short; like Dassl, the caller decides whether to use it.
    """
    for key in list(cfg.TRAINER.keys()):
        if key == "NAME" or key.upper() == trainer.upper():
            continue
        cfg.TRAINER.pop(key)
