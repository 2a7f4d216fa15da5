"""Dassl's ``dassl.evaluation``."""

from .build import build_evaluator
from .evaluator import EVALUATOR_REGISTRY, Classification, EvaluatorBase

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "Classification", "EvaluatorBase"]
