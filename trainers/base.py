"""Shared trainer of the deep-prompt family (VPT, IVLP, MaPLe, BMIP and methods built on them).

A method only says which prompt learner it uses (:meth:`DeepPromptTrainer.build_prompt_learner`), its
config namespace (``CFG_NAME``) and the name its model is registered under (``MODEL_NAME``, the official
checkpoint folder); a method whose model is not a plain :class:`~prompting.model.PromptedCLIP` (CoOp,
CoCoOp) overrides :meth:`DeepPromptTrainer.build_custom_clip` instead. This class does the rest the
official trainers repeat: load the frozen CLIP at the configured precision, build the model, log the
trainable tensors, build optimizer and scheduler, cross-entropy training with the per-epoch LR step, and
checkpoints that hold only the trainable tensors (so a base-trained checkpoint loads for any label space).

Learners with BMIP gates (BMIP, its combinations, MMRL_BMIP) get their gates logged to TensorBoard after every training epoch (step = the
1-based epoch, as in checkpoint names): ``gates/<tower>/block<b>/slot<i>`` is the mixing weight ``w`` of
the own prompt that the forward passes applied, averaged over the epoch's training steps (``w``
depends on the attention of each batch), and ``.../weight`` / ``.../bias`` the gate's parameters.

Precision (``TRAINER.<X>.PREC``, docs/PERFORMANCE.md): ``fp16`` halves the frozen towers (CUDA only),
``fp32`` runs everything in fp32, ``amp`` runs the training forward under fp16 autocast with a
``GradScaler`` (CUDA only, as released), ``amp_bf16`` under bf16 autocast without a scaler (CUDA and
CPU). Trainable tensors are fp32 in each of these. ``fp64`` makes the whole model - frozen towers,
prompts, teachers, adapters, GPA sum, loss - float64: it exists so that every trainer can be proven
equal to an independent float64 reference (tests/test_trainer_exactness.py), not for training speed. ``MODEL.COMPILE`` wraps the frozen towers' encoders
in ``torch.compile`` (:func:`compile_towers`).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import clip
from engine.engine import TrainerX
from engine.optim import build_lr_scheduler, build_optimizer
from engine.utils import load_pretrained_weights
from prompting.interaction import GatedLearner, GateMonitor
from prompting.model import PromptedCLIP

__all__ = [
    "AUTOCAST_DTYPES",
    "COMPILED_ENCODERS",
    "DeepPromptTrainer",
    "autocast_dtype",
    "compile_towers",
    "load_frozen_clip",
]

# The autocast dtype of each mixed-precision ``PREC`` (frozen weights and trainable tensors stay fp32).
AUTOCAST_DTYPES = {"amp": torch.float16, "amp_bf16": torch.bfloat16}

# The CLIP methods every tower pass goes through (``encode_text`` calls ``encode_text_embeddings``).
COMPILED_ENCODERS = ("encode_image", "encode_text_embeddings")


def autocast_dtype(prec: str, device: torch.device, key: str = "PREC") -> torch.dtype | None:
    """The dtype the training forward autocasts to under ``prec`` on ``device``; None = no autocast.

    ``amp`` autocasts on CUDA only: the released trainers create the ``GradScaler`` and autocast only
    there, so on CPU ``amp`` trains in fp32. ``amp_bf16`` autocasts on CUDA and CPU (bf16 has fp32's
    exponent range, so it needs no loss scaling); a GPU without bf16 support is refused.
    """
    dtype = AUTOCAST_DTYPES.get(prec)
    if dtype is torch.float16 and device.type != "cuda":
        return None
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{key} {prec!r} needs a GPU with bfloat16 support; use amp (fp16) or fp32 on this GPU")
    return dtype


def compile_towers(clip_model: nn.Module) -> nn.Module:
    """Replace ``clip_model``'s :data:`COMPILED_ENCODERS` by ``torch.compile``'d versions (``MODEL.COMPILE``).

    The compiled functions are instance attributes: parameters, state dicts and checkpoints are those
    of the plain model, and every caller (prompted models, frozen teachers, zero-shot) goes through
    them. Compilation itself happens lazily on the first call; prompt hooks are plain Python and are
    traced (or graph-broken) like any other code.
    """
    compile_fn = getattr(torch, "compile", None)
    if compile_fn is None:
        raise RuntimeError(
            f"MODEL.COMPILE is True but torch {torch.__version__} has no torch.compile (needs torch >= 2.0); "
            "set MODEL.COMPILE False"
        )
    for name in COMPILED_ENCODERS:
        try:
            setattr(clip_model, name, compile_fn(getattr(clip_model, name)))
        except RuntimeError as error:  # e.g. a Python version that TorchDynamo does not support
            raise RuntimeError(
                f"MODEL.COMPILE is True but torch.compile is unavailable here ({error}); set MODEL.COMPILE False"
            ) from error
    print(f"Compiling the frozen CLIP towers with torch.compile: {', '.join(COMPILED_ENCODERS)}")
    return clip_model


def load_frozen_clip(cfg: Any, prec: str, device: torch.device) -> nn.Module:
    """The configured CLIP backbone on ``device`` at precision ``prec`` (fp32 on CPU: no fp16 kernels),
    its towers compiled when ``MODEL.COMPILE`` is set."""
    clip_model = clip.build_clip(cfg.MODEL.BACKBONE.NAME)
    if device.type != "cuda" and prec == "fp16":
        print("Note: PREC fp16 runs the frozen CLIP in fp32 on CPU")
        prec = "fp32"
    clip_model = clip.to_precision(clip_model, prec).to(device)
    return compile_towers(clip_model) if cfg.MODEL.COMPILE else clip_model


class DeepPromptTrainer(TrainerX):
    """TrainerX for a :class:`PromptedCLIP`; subclasses implement :meth:`build_prompt_learner`."""

    CFG_NAME = ""  # config namespace under TRAINER (e.g. "MAPLE")
    MODEL_NAME = "prompt_learner"  # registered model name = checkpoint folder
    # Where MODEL.INIT_WEIGHTS is loaded: the whole model (MaPLe family, keys "prompt_learner.*") or,
    # as the official CoOp/CoCoOp do, the prompt learner alone (keys without the prefix).
    INIT_WEIGHTS_INTO_LEARNER = False

    @property
    def method_cfg(self) -> Any:
        return self.cfg.TRAINER[self.CFG_NAME]

    def check_cfg(self, cfg: Any) -> None:
        prec = cfg.TRAINER[self.CFG_NAME].PREC
        if prec not in clip.PRECISIONS:
            raise ValueError(f"TRAINER.{self.CFG_NAME}.PREC must be one of {clip.PRECISIONS}, got {prec!r}")

    def build_prompt_learner(self, clip_model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def build_custom_clip(self, clip_model: nn.Module, classnames: list[str]) -> PromptedCLIP:
        """The model to train around the frozen ``clip_model`` (the official trainers' ``CustomCLIP``);
        :meth:`build_model` moves it to the device. Needs only ``self.cfg``."""
        print(f"Building {type(self).__name__} prompt learner")
        return PromptedCLIP(clip_model, self.build_prompt_learner(clip_model), classnames)

    def param_groups(self) -> Any:
        """The optimizer's parameter groups; None = the prompt learner's parameters at ``OPTIM.LR``
        (DePT adds its head at a multiple of it)."""
        return None

    def build_model(self) -> None:
        cfg = self.cfg
        prec = self.method_cfg.PREC
        self.autocast_dtype = autocast_dtype(prec, self.device, key=f"TRAINER.{self.CFG_NAME}.PREC")
        if prec == "amp" and self.autocast_dtype is None:
            print("Note: PREC amp trains in fp32 on CPU (fp16 autocast is CUDA only, as released)")
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_frozen_clip(cfg, prec, self.device)
        self.model = self.build_custom_clip(clip_model, self.dm.dataset.classnames).to(self.device)
        if prec == "fp64":  # the learners create their tensors in fp32; fp64 means every tensor
            self.model.double()
        enabled = sorted(name for name, p in self.model.named_parameters() if p.requires_grad)
        print(f"Parameters to be updated: {enabled}")
        print(f"Number of trainable parameters (all used by the forward pass): {self.model.count_trainable():,}")
        if cfg.MODEL.INIT_WEIGHTS:
            target = self.model.prompt_learner if self.INIT_WEIGHTS_INTO_LEARNER else self.model
            load_pretrained_weights(target, cfg.MODEL.INIT_WEIGHTS)
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM, self.param_groups())
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.MODEL_NAME, self.model, self.optim, self.sched)
        # fp16 autocast needs loss scaling (small gradients underflow in fp16); bf16 does not.
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype is torch.float16 else None

    def model_state_dict(self, name: str) -> OrderedDict:
        """Checkpoints hold the trainable tensors only (class buffers and frozen CLIP are rebuilt)."""
        return OrderedDict(self._models[name].trainable_state_dict())

    def parse_batch_train(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) on the device: the official prompt trainers drop Dassl's domain too."""
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def compute_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the current label space (methods with extra terms override this)."""
        return F.cross_entropy(self.model(images), labels)

    def run_epoch(self) -> None:
        """The engine's epoch, with the gates of a gated learner monitored and logged (module docstring)."""
        gated = next((m for m in self.model.modules() if isinstance(m, GatedLearner) and m.gated), None)
        if gated is None or not self.writes_scalars:
            super().run_epoch()
            return
        gated.gate_monitor = monitor = GateMonitor()
        try:
            super().run_epoch()
        finally:
            gated.gate_monitor = None
        for tag, value in gated.gate_scalars(monitor).items():
            self.write_scalar(tag, value, self.epoch_end_step())

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of the training forward: autocast at ``PREC``'s dtype, or a no-op.

        Evaluation does not autocast under either ``amp`` choice (the released ``amp`` trainers
        evaluate without autocast too).
        """
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        images, labels = self.parse_batch_train(batch)
        self.optim.zero_grad()
        with self.autocast():
            loss = self.compute_loss(images, labels)
        if self.scaler is not None:
            self.detect_anomaly(loss)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            self.model_backward(loss)
            self.optim.step()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}
