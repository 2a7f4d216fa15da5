"""The trainer registry and ``build_trainer``."""

from __future__ import annotations

from typing import Any

from engine.utils import Registry, check_availability

__all__ = ["TRAINER_REGISTRY", "build_trainer"]

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg: Any) -> Any:
    """Instantiate ``cfg.TRAINER.NAME``; an unknown name lists the registered trainers."""
    check_availability(cfg.TRAINER.NAME, TRAINER_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading trainer: {cfg.TRAINER.NAME}")
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
