"""MMRL + BMIP (``MMRL_BMIP``): MMRL with BMIP's gated mix of its representation tokens (no official code).

Everything of MMRL - tokens, heads, loss, per-dataset table, evaluation head, configs' schedule - stays
(``TRAINER.MMRL.*``, ``PREC`` included); this class only chooses the learner
(:class:`prompting.mmrl.MMRLBMIPRepresentations`, design in docs/METHODS.md "MMRL + BMIP"). Of
``TRAINER.BMIP.*`` / ``SHARE.*`` the gate's settings apply (``PRESET``, ``GATE_ACT``, ``TEXT_ATTN_QUERY``,
``ATTN_REDUCE``, ``DETACH_ATTN``; ``SHARE.*`` one or per-layer cross-modal heads); ``CONNECT_METHOD`` must
stay "None". The keys about BMIP's own prompts do not apply: token count and layers are MMRL's
(``N_CTX``, ``PROMPT_DEPTH``, ``CTX_INIT`` are ignored), and setting one of ``NOT_APPLICABLE`` is an error.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from engine.engine import TRAINER_REGISTRY
from prompting.mmrl import MMRLBMIPRepresentations

from .bmip import bmip_options_from_cfg
from .mmrl import MMRL

__all__ = ["MMRL_BMIP", "NOT_APPLICABLE"]

# TRAINER.BMIP keys (default None) that describe BMIP's own prompt slots, which MMRL_BMIP does not have.
NOT_APPLICABLE = ("TEXT_DEPTH_OFFSET", "FIRST_VISION_PROMPT", "ADD_MODE", "SHARED_VISION_PROMPT")


@TRAINER_REGISTRY.register()
class MMRL_BMIP(MMRL):  # noqa: N801  (named like PromptSRC_BMIP)
    """MMRL whose representation tokens interact through BMIP's attention-gated bi-directional mix."""

    def build_representations(self, clip_model: nn.Module, **mmrl: Any) -> MMRLBMIPRepresentations:
        b = self.cfg.TRAINER.BMIP
        set_keys = [f"TRAINER.BMIP.{key} = {b[key]!r}" for key in NOT_APPLICABLE if b[key] is not None]
        if set_keys:
            raise ValueError(
                f"MMRL_BMIP has no BMIP prompt slots, so these keys do not apply: {', '.join(set_keys)}"
            )
        o = bmip_options_from_cfg(self.cfg)
        print(
            f"MMRL_BMIP gates: act {o.gate_act}, text query {o.text_attn_query}, reduce {o.attn_reduce}, "
            f"detach {o.detach_attn}; one G_v {o.share_text}, one G_l {o.share_visual}"
        )
        return MMRLBMIPRepresentations(clip_model, o, **mmrl)
