"""IVLP: independent deep prompts in both towers, no coupling (``TRAINER.IVLP``).

Language-only deep prompting is IVLP with ``PROMPT_DEPTH_VISION 0`` (or ``N_CTX_VISION 0``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from engine.engine import TRAINER_REGISTRY
from prompting.learners import IndependentPrompts

from .base import DeepPromptTrainer

__all__ = ["IVLP", "build_independent_prompts"]


def build_independent_prompts(clip_model: nn.Module, c: Any, namespace: str) -> IndependentPrompts:
    """IVLP's learner from the keys ``N_CTX_TEXT/VISION``, ``PROMPT_DEPTH_TEXT/VISION``, ``CTX_INIT`` of
    ``TRAINER.<namespace>`` (``c``); IVLP and PromptSRC share them."""
    if c.PROMPT_DEPTH_TEXT < 1 or c.N_CTX_TEXT < 1:
        raise ValueError(
            f"TRAINER.{namespace} needs PROMPT_DEPTH_TEXT >= 1 and N_CTX_TEXT >= 1 (use VPT for vision-only), "
            f"got {c.PROMPT_DEPTH_TEXT} and {c.N_CTX_TEXT}"
        )
    return IndependentPrompts(
        clip_model,
        n_ctx_text=c.N_CTX_TEXT,
        depth_text=c.PROMPT_DEPTH_TEXT,
        n_ctx_vision=c.N_CTX_VISION,
        depth_vision=c.PROMPT_DEPTH_VISION,
        ctx_init=c.CTX_INIT,
    )


@TRAINER_REGISTRY.register()
class IVLP(DeepPromptTrainer):
    """Text context from CTX_INIT plus fresh text/vision prompt sets per block, each tower on its own."""

    CFG_NAME = "IVLP"
    MODEL_NAME = "VLPromptLearner"

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        return build_independent_prompts(clip_model, self.method_cfg, self.CFG_NAME)
