"""CoPrompt + BMIP (``CoPrompt_BMIP``): CoPrompt with BMIP's prompt learner instead of MaPLe's.

No official code exists; this is the composition of methods_spec 9.3: adapters, frozen teacher,
descriptions, two views, loss, per-dataset table and optimiser are CoPrompt's (this class only chooses
the prompt core). Prompt count and depth come from ``TRAINER.CoPrompt.N_CTX`` / ``PROMPT_DEPTH`` (so the
per-dataset table applies); every BMIP behaviour - interaction (``CONNECT_METHOD``), text depth offset,
text gate query, sharing - from ``TRAINER.BMIP.*`` / ``SHARE.*`` (preset ``released`` by default).
"""

from __future__ import annotations

from torch import nn

from engine.engine import TRAINER_REGISTRY

from .bmip import build_bmip_prompts
from .coprompt import CoPrompt

__all__ = ["CoPrompt_BMIP"]


@TRAINER_REGISTRY.register()
class CoPrompt_BMIP(CoPrompt):  # noqa: N801  (named like the release's PromptSRC_BMIP)
    """CoPrompt whose prompts interact through BMIP's attention-gated bi-directional mix."""

    def build_core(self, clip_model: nn.Module) -> nn.Module:
        c = self.method_cfg
        return build_bmip_prompts(clip_model, self.cfg, N_CTX=c.N_CTX, PROMPT_DEPTH=c.PROMPT_DEPTH, CTX_INIT=c.CTX_INIT)
