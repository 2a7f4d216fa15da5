"""MaPLe: deep text prompts coupled one-way into the vision tower (``TRAINER.MAPLE``).

``COUPLING_HIDDEN`` > 0 is MaPLe-dagger, the parameter-matched control of BMIP's Table 5 (docs/METHODS.md).
``RELEASE_DRAWS`` makes a seed give the release's initial prompts (prompting/release_draws.py).
"""

from __future__ import annotations

from torch import nn

from engine.engine import TRAINER_REGISTRY
from prompting.learners import CoupledPrompts
from prompting.release_draws import draw_openai_clip

from .base import DeepPromptTrainer


@TRAINER_REGISTRY.register()
class MaPLe(DeepPromptTrainer):
    """Vision prompt of block j = coupling_j(text prompt of block j), j = 0..PROMPT_DEPTH-1."""

    CFG_NAME = "MAPLE"
    MODEL_NAME = "MultiModalPromptLearner"

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        c = self.method_cfg
        if c.RELEASE_DRAWS:  # our learner then draws in the release's order (ctx, proj, prompts, heads)
            print("MaPLe RELEASE_DRAWS: the generator advanced as the release's CLIP construction does")
            draw_openai_clip(clip_model)
        return CoupledPrompts(
            clip_model,
            n_ctx=c.N_CTX,
            depth=c.PROMPT_DEPTH,
            ctx_init=c.CTX_INIT,
            coupling_hidden=c.COUPLING_HIDDEN,
        )
