"""BMIP trainer (``TRAINER.BMIP`` + ``SHARE``): prompts from :mod:`prompting.bmip`, model selection on val.

Epoch end (replaces the release's ``after_epoch``, docs/BMIP.md "Training flow"):

* validation runs when ``TEST.FINAL_MODEL`` is ``best_val`` or early stopping is on
  (``TRAIN.EARLY_STOPPING`` and ``TRAIN.PATIENT_COUNT`` > 0), so ``model-best.pth.tar`` exists when
  ``after_train`` or ``base2new_test.sh`` load it;
* as released: the patience counter resets on any gain over the best val accuracy, model-best is saved
  for a gain of more than ``BEST_MIN_DELTA`` points, training may stop once ``EARLY_STOP_MIN_EPOCH``
  epochs ran and ``PATIENT_COUNT`` epochs in a row brought no gain;
* unlike the release, stopping really ends the epoch loop, and the stopped model is saved as
  ``model.pth.tar-<epoch>`` before ``after_train`` evaluates the selected model;
* ``VAL_REQUIRES_NO_TEST_EARLY True`` reproduces the release's gating on ``TEST.NO_TEST_EARLY``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.engine import TRAINER_REGISTRY
from prompting.bmip import BMIPOptions, BMIPPrompts, resolve_bmip_options
from prompting.release_draws import draw_bmip_learner, draw_openai_clip

from .base import DeepPromptTrainer

__all__ = ["BMIP", "bmip_options_from_cfg", "build_bmip_prompts", "load_release_draws"]

_BEST_FILE = "model-best.pth.tar"


def bmip_options_from_cfg(cfg: Any) -> BMIPOptions:
    """Resolve ``TRAINER.BMIP`` + ``SHARE`` against ``TRAINER.BMIP.PRESET`` (set keys win)."""
    b = cfg.TRAINER.BMIP
    return resolve_bmip_options(
        b.PRESET,
        n_ctx=b.N_CTX,
        depth=b.PROMPT_DEPTH,
        ctx_init=b.CTX_INIT,
        connect_method=b.CONNECT_METHOD,
        text_attn_query=b.TEXT_ATTN_QUERY,
        attn_reduce=b.ATTN_REDUCE,
        text_depth_offset=b.TEXT_DEPTH_OFFSET,
        first_vision_prompt=b.FIRST_VISION_PROMPT,
        gate_act=b.GATE_ACT,
        detach_attn=b.DETACH_ATTN,
        add_mode=b.ADD_MODE,
        shared_vision_prompt=b.SHARED_VISION_PROMPT,
        share_visual=cfg.SHARE.SHARE_PARAMETER_VISUAL,
        share_text=cfg.SHARE.SHARE_PARAMETER_TEXT,
    )


def build_bmip_prompts(clip_model: nn.Module, cfg: Any, **overrides: Any) -> BMIPPrompts:
    """BMIP's prompt learner from ``TRAINER.BMIP`` + ``SHARE``, with the ``TRAINER.BMIP`` keys in
    ``overrides`` replaced (the +BMIP combinations take prompt count and depth from their host's keys)."""
    if overrides:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.TRAINER.BMIP.update(overrides)
    options = bmip_options_from_cfg(cfg)
    print(f"BMIP options: {options}")
    return BMIPPrompts(clip_model, options)


class _EarlyStop(Exception):
    """Raised by ``after_epoch`` to leave the engine's epoch loop."""


@TRAINER_REGISTRY.register()
class BMIP(DeepPromptTrainer):
    """Bi-directional modality interaction prompts; behaviour options per docs/BMIP.md."""

    CFG_NAME = "BMIP"
    MODEL_NAME = "MultiModalPromptLearner"

    def __init__(self, cfg: Any) -> None:
        self.no_improvement = 0  # epochs in a row without a val gain (early stopping)
        super().__init__(cfg)

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        if not self.cfg.TRAINER.BMIP.RELEASE_DRAWS:
            return build_bmip_prompts(clip_model, self.cfg)
        state = torch.get_rng_state()
        learner = build_bmip_prompts(clip_model, self.cfg)
        torch.set_rng_state(state)  # the generator then moves exactly as the release's construction moves it
        load_release_draws(learner, clip_model)
        return learner

    # ---- model selection and early stopping ----------------------------------------------------------
    def _validates(self) -> bool:
        cfg = self.cfg
        early = cfg.TRAIN.EARLY_STOPPING and cfg.TRAIN.PATIENT_COUNT > 0
        if cfg.TRAINER.BMIP.VAL_REQUIRES_NO_TEST_EARLY:
            return not cfg.TEST.NO_TEST_EARLY and cfg.TRAIN.PATIENT_COUNT != -1
        best_val = cfg.TEST.FINAL_MODEL == "best_val" and not cfg.TEST.NO_TEST
        return best_val or early

    def after_epoch(self) -> None:
        cfg = self.cfg
        last_epoch = (self.epoch + 1) == self.max_epoch
        freq = cfg.TRAIN.CHECKPOINT_FREQ
        save = last_epoch or (freq > 0 and (self.epoch + 1) % freq == 0)
        stop = False
        if self._validates():
            result = self.test(split="val")
            if result > self.best_result:
                self.no_improvement = 0
            else:
                self.no_improvement += 1
            print(f"Epochs without val improvement: {self.no_improvement}")
            if result > self.best_result + cfg.TRAINER.BMIP.BEST_MIN_DELTA:
                self.best_result = result
                self.save_model(self.epoch, self.output_dir, val_result=result, model_name=_BEST_FILE)
            stop = (
                cfg.TRAIN.EARLY_STOPPING
                and cfg.TRAIN.PATIENT_COUNT > 0
                and self.no_improvement >= cfg.TRAIN.PATIENT_COUNT
                and self.epoch + 1 >= cfg.TRAINER.BMIP.EARLY_STOP_MIN_EPOCH
                and not last_epoch
            )
        if save or stop:
            self.save_model(self.epoch, self.output_dir)
        if stop:
            print(f"Early stopping after epoch {self.epoch + 1}/{self.max_epoch}")
            raise _EarlyStop

    def train(self) -> None:  # type: ignore[override]
        """The engine's loop; an early stop skips the remaining epochs and goes on with ``after_train``."""
        try:
            super().train()
        except _EarlyStop:
            self.after_train()


def load_release_draws(learner: BMIPPrompts, clip_model: nn.Module) -> None:
    """Give ``learner`` the released BMIP's initial values, drawn in its order (prompting/release_draws.py)."""
    o = learner.options
    released = (o.connect_method, o.share_text, o.share_visual, o.first_vision_prompt) == (
        "None",
        True,
        True,
        "proj_text",
    )
    if not released or learner.prompt_prefix.startswith("X"):
        raise ValueError(
            "TRAINER.BMIP.RELEASE_DRAWS reproduces the released BMIP's draws: it needs PRESET released's prompt "
            "layout (CONNECT_METHOD None, SHARE.* True, FIRST_VISION_PROMPT proj_text) and a CTX_INIT"
        )
    gates = draw_openai_clip(clip_model, gates=True)
    drawn = draw_bmip_learner(clip_model, o.n_ctx, o.depth)
    print("BMIP RELEASE_DRAWS: prompts, heads and gates drawn as the release's CLIP and learner draw them")
    with torch.no_grad():
        for name in ("proj_t", "single_layer_v", "single_layer_t"):
            getattr(learner, name).load_state_dict(drawn[name].state_dict())
        shared = [learner.ctx_v] if hasattr(learner, "ctx_v") else []
        for prompt in (*shared, *getattr(learner, "compound_prompts_visual", ())):
            prompt.copy_(drawn["ctx_v"])  # the shared vision prompt, one tensor or per-block copies
        for prompt, value in zip(learner.compound_prompts_text, drawn["compound_prompts_text"]):
            prompt.copy_(value)
        for ours, tower, blocks, which in (
            (learner.gates_v, "vision", learner.vision_blocks, 0),
            (learner.gates_t, "text", learner.text_blocks, 1),
        ):  # block b's learnable_linear1 (vision) / learnable_linear2 (text) gates the prompts entering it
            for gate, block in zip(ours, blocks):
                gate.load_state_dict(gates[tower][block][which].state_dict())
