"""VPT: deep vision prompts, fixed hand-written text (``TRAINER.VPT``; MaPLe repository's baseline)."""

from __future__ import annotations

from torch import nn

from engine.engine import TRAINER_REGISTRY
from prompting.learners import IndependentPrompts

from .base import DeepPromptTrainer


@TRAINER_REGISTRY.register()
class VPT(DeepPromptTrainer):
    """N_CTX_VISION tokens appended after the patches and replaced in blocks 1..PROMPT_DEPTH_VISION-1.

    The text side is CLIP's ``"<CTX_INIT> <class>."`` (the release hard-codes "a photo of a", our
    default), encoded once per label space.
    """

    CFG_NAME = "VPT"
    MODEL_NAME = "prompt_learner"

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        c = self.method_cfg
        if c.PROMPT_DEPTH_VISION < 1:
            raise ValueError(f"TRAINER.VPT.PROMPT_DEPTH_VISION must be >= 1, got {c.PROMPT_DEPTH_VISION}")
        return IndependentPrompts(
            clip_model,
            n_ctx_text=0,
            depth_text=0,
            n_ctx_vision=c.N_CTX_VISION,
            depth_vision=c.PROMPT_DEPTH_VISION,
            ctx_init=c.CTX_INIT,
        )
