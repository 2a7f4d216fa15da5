"""Dassl's ``dassl.optim``."""

from .lr_scheduler import AVAI_SCHEDS, ConstantWarmupScheduler, LinearWarmupScheduler, build_lr_scheduler
from .optimizer import AVAI_OPTIMS, build_optimizer

__all__ = [
    "AVAI_OPTIMS",
    "AVAI_SCHEDS",
    "build_optimizer",
    "build_lr_scheduler",
    "ConstantWarmupScheduler",
    "LinearWarmupScheduler",
]
