"""``build_lr_scheduler``: step/multi-step/cosine schedules with Dassl's constant or linear warmup.

The warmup wrappers reproduce Dassl's per-epoch learning rates exactly (epoch 0 at the warmup LR;
after W warmup epochs the successor starts from its own step 0) without Dassl's two defects: they
pass no ``verbose`` argument to torch, and their ``state_dict`` holds only data (the successor's
state, not the successor object), so checkpoints load with ``weights_only=True`` and a resumed run
continues the real schedule instead of freezing the LR.

The successor's state is saved under ``successor_state``, never ``successor``: real Dassl's
``load_state_dict`` copies every key onto the scheduler, so a plain dict under ``successor`` would
replace its successor object and crash the next step; under another key real Dassl keeps its own
successor (which then starts from its initial state: real Dassl cannot restore it from any file).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR, StepLR

from engine.utils.torchtools import PickledObject

__all__ = [
    "AVAI_SCHEDS",
    "build_lr_scheduler",
    "ConstantWarmupScheduler",
    "LinearWarmupScheduler",
]

AVAI_SCHEDS = ("single_step", "multi_step", "cosine")


class _BaseWarmupScheduler(LRScheduler):
    """Runs its own warmup rule for ``warmup_epoch`` steps, then hands every step to ``successor``."""

    def __init__(self, optimizer: torch.optim.Optimizer, successor: LRScheduler, warmup_epoch: int, last_epoch: int = -1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def _warmup_lr(self) -> list[float]:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return self._warmup_lr()

    def step(self, epoch: int | None = None) -> None:
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Plain data only: the successor contributes its own state dict (module docstring)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor_state"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load into the existing successor; also accepts Dassl's legacy form holding the successor object.

        A legacy checkpoint read by ``load_checkpoint(allow_pickle=True)`` holds the successor as a
        ``PickledObject`` whose ``state`` is the successor's ``__dict__`` (its optimizer left out here).
        Files of earlier versions of this engine hold the successor's state dict under ``successor``.
        """
        state = dict(state_dict)
        successor_state = state.pop("successor_state", None)
        legacy = state.pop("successor", None)
        if successor_state is None:
            successor_state = legacy
        if isinstance(successor_state, LRScheduler):
            successor_state = successor_state.state_dict()
        elif isinstance(successor_state, PickledObject):
            successor_state = {k: v for k, v in successor_state.state.items() if k != "optimizer"}
        state.pop("verbose", None)
        self.__dict__.update(state)
        if successor_state is not None:
            self.successor.load_state_dict(successor_state)


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    """Warmup at a constant ``cons_lr``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        successor: LRScheduler,
        warmup_epoch: int,
        cons_lr: float,
        last_epoch: int = -1,
    ):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def _warmup_lr(self) -> list[float]:
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_BaseWarmupScheduler):
    """Warmup at ``min_lr`` for step 0, then ``base_lr * t / warmup_epoch``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        successor: LRScheduler,
        warmup_epoch: int,
        min_lr: float,
        last_epoch: int = -1,
    ):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def _warmup_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: Any) -> LRScheduler:
    """Build ``optim_cfg.LR_SCHEDULER``, wrapped in a warmup scheduler when ``WARMUP_EPOCH > 0``.

    The scheduler is meant to be stepped once per epoch (trainers call ``update_lr`` after the last
    batch); the engine never steps it itself.
    """
    name = optim_cfg.LR_SCHEDULER
    stepsize = optim_cfg.STEPSIZE
    max_epoch = optim_cfg.MAX_EPOCH
    if name not in AVAI_SCHEDS:
        raise ValueError(f'Unknown OPTIM.LR_SCHEDULER "{name}"; supported: {", ".join(AVAI_SCHEDS)}')

    if name == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if not isinstance(stepsize, int):
            raise TypeError(f"OPTIM.STEPSIZE for single_step must be an int, got {stepsize!r}")
        if stepsize <= 0:
            stepsize = max_epoch
        scheduler: LRScheduler = StepLR(optimizer, step_size=stepsize, gamma=optim_cfg.GAMMA)
    elif name == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise TypeError(f"OPTIM.STEPSIZE for multi_step must be a list of epochs, got {stepsize!r}")
        scheduler = MultiStepLR(optimizer, milestones=list(stepsize), gamma=optim_cfg.GAMMA)
    else:
        scheduler = CosineAnnealingLR(optimizer, T_max=float(max_epoch))

    if optim_cfg.WARMUP_EPOCH > 0:
        if not optim_cfg.WARMUP_RECOUNT:
            scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
        if optim_cfg.WARMUP_TYPE == "constant":
            scheduler = ConstantWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR)
        elif optim_cfg.WARMUP_TYPE == "linear":
            scheduler = LinearWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR)
        else:
            raise ValueError(
                f'Unknown OPTIM.WARMUP_TYPE "{optim_cfg.WARMUP_TYPE}"; supported: constant, linear'
            )
    return scheduler
