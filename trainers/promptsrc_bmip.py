"""PromptSRC + BMIP (``PromptSRC_BMIP``): PromptSRC with BMIP's prompt learner instead of IVLP's.

Everything else - frozen teachers, losses, Gaussian prompt aggregation, checkpoints - is PromptSRC's
(this class only chooses the prompt learner). As released by BMIP (methods_spec 9.2):

* prompt count ``TRAINER.PROMPTSRC.N_CTX_TEXT`` (for both towers) and depth ``TRAINER.PROMPTSRC.PROMPT_DEPTH``;
  ``N_CTX_VISION`` and ``PROMPT_DEPTH_VISION/TEXT`` do not apply (set ``PROMPT_DEPTH`` to change the depth);
* ``TRAINER.PROMPTSRC.CONNECT_METHOD`` selects the interaction ("None" = BMIP's gate);
* every other BMIP behaviour from ``TRAINER.BMIP.*`` / ``SHARE.*`` (preset ``released`` by default);
* the released configs average the teacher text over all 80 templates (``TEACHER_TEMPLATES imagenet80``).
"""

from __future__ import annotations

from torch import nn

from engine.engine import TRAINER_REGISTRY

from .bmip import build_bmip_prompts
from .promptsrc import PromptSRC

__all__ = ["PromptSRC_BMIP"]


@TRAINER_REGISTRY.register()
class PromptSRC_BMIP(PromptSRC):  # noqa: N801  (the release's trainer name)
    """PromptSRC whose prompts interact through BMIP's attention-gated bi-directional mix."""

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        c = self.method_cfg
        return build_bmip_prompts(
            clip_model, self.cfg,
            N_CTX=c.N_CTX_TEXT, PROMPT_DEPTH=c.PROMPT_DEPTH, CTX_INIT=c.CTX_INIT, CONNECT_METHOD=c.CONNECT_METHOD,
        )  # fmt: skip
