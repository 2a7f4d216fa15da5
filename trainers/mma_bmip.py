"""MMA + BMIP (``MMA_BMIP``): MMA's adapters around BMIP's prompt learner (no official code; docs/METHODS.md).

The adapters, their options and the optimisation are MMA's (``TRAINER.MMADAPTER``, config
``MMA_BMIP/vit_b16_ep5``); the prompts, their interaction and every BMIP behaviour come from
``TRAINER.BMIP.*`` / ``SHARE.*`` (preset ``released``). The class prompts are BMIP's learnable context
(MMA's ``TEXT_CTX_INIT`` does not apply); an adapted block adds its adapter's output after BMIP has written
that block's prompt slots, so the adapters read the mixed prompts too.
"""

from __future__ import annotations

from torch import nn

from engine.engine import TRAINER_REGISTRY

from .bmip import build_bmip_prompts
from .mma import MultiModalAdapter, build_mma

__all__ = ["MMA_BMIP"]


@TRAINER_REGISTRY.register()
class MMA_BMIP(MultiModalAdapter):  # noqa: N801  (named like PromptSRC_BMIP)
    """MultiModalAdapter whose frozen text prompts are replaced by BMIP's bi-directional prompts."""

    SCRIPTS_DIR = "scripts/mma_bmip"
    LEARNING_TEST_OPTS = ()  # BMIP's prompts learn at MMA's own rate (tests/test_learning.py)

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        return build_mma(clip_model, self.method_cfg, prompts=build_bmip_prompts(clip_model, self.cfg))
