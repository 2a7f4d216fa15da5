"""MaPLe: deep text prompts coupled one-way into the vision tower (``TRAINER.MAPLE``).

``COUPLING_HIDDEN`` > 0 is MaPLe-dagger, the parameter-matched control of BMIP's Table 5 (docs/METHODS.md).
"""

from __future__ import annotations

from torch import nn

from engine.engine import TRAINER_REGISTRY
from prompting.learners import CoupledPrompts

from .base import DeepPromptTrainer


@TRAINER_REGISTRY.register()
class MaPLe(DeepPromptTrainer):
    """Vision prompt of block j = coupling_j(text prompt of block j), j = 0..PROMPT_DEPTH-1."""

    CFG_NAME = "MAPLE"
    MODEL_NAME = "MultiModalPromptLearner"

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        c = self.method_cfg
        return CoupledPrompts(
            clip_model,
            n_ctx=c.N_CTX,
            depth=c.PROMPT_DEPTH,
            ctx_init=c.CTX_INIT,
            coupling_hidden=c.COUPLING_HIDDEN,
        )
