"""MMA, the multi-modal adapter (``MultiModalAdapter``, ``TRAINER.MMADAPTER``; docs/METHODS.md).

Frozen CLIP with the hand-written class prompts ``"<TEXT_CTX_INIT> <class>."``; residual adapters on the
higher blocks of both towers, coupled by a shared projection (:mod:`prompting.mma`); cross-entropy. The
checkpoint folder is the release's ``adapter_learner``. ``MMA_BMIP`` (trainers/mma_bmip.py) wraps BMIP's
prompt learner in the same adapters.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

from engine.engine import TRAINER_REGISTRY
from prompting.mma import MultiModalAdapters

from .base import DeepPromptTrainer

__all__ = ["MultiModalAdapter", "build_mma"]


def build_mma(clip_model: nn.Module, c: Any, prompts: Optional[nn.Module] = None) -> MultiModalAdapters:
    """MMA's adapters from ``TRAINER.MMADAPTER`` (``c``), around ``prompts`` when given."""
    return MultiModalAdapters(
        clip_model,
        start=c.ADAPTER_START,
        end=c.ADAPTER_END,
        dim=c.ADAPTER_DIM,
        scale=c.ADAPTER_SCALE,
        grad_rescale=c.GRAD_RESCALE,
        ctx_init=c.TEXT_CTX_INIT,
        prompts=prompts,
    )


@TRAINER_REGISTRY.register()
class MultiModalAdapter(DeepPromptTrainer):
    """MMA: adapters on blocks ADAPTER_START..ADAPTER_END of both towers, shared middle projection."""

    CFG_NAME = "MMADAPTER"
    MODEL_NAME = "adapter_learner"
    INIT_WEIGHTS_INTO_LEARNER = True  # the release loads MODEL.INIT_WEIGHTS into the adapter learner
    SCRIPTS_DIR = "scripts/mma"
    # tests/test_learning.py's 2 epochs: adapters scaled by 0.001 barely move at the 5-epoch rate.
    LEARNING_TEST_OPTS = ("OPTIM.LR", "0.05")

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        return build_mma(clip_model, self.method_cfg)
