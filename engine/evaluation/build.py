"""``build_evaluator``: look up ``cfg.TEST.EVALUATOR`` in the registry."""

from __future__ import annotations

from typing import Any

from engine.utils import check_availability

from .evaluator import EVALUATOR_REGISTRY, EvaluatorBase


def build_evaluator(cfg: Any, **kwargs: Any) -> EvaluatorBase:
    """Instantiate the configured evaluator; an unknown name lists the known ones."""
    check_availability(cfg.TEST.EVALUATOR, EVALUATOR_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading evaluator: {cfg.TEST.EVALUATOR}")
    return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, **kwargs)
