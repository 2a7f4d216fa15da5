"""DePT as a plug-in: ``<Host>_DePT`` = any deep-prompt trainer plus DePT's CAT head (``TRAINER.DEPT``).

:class:`DePTTrainer` goes in front of a host trainer class; the host keeps its prompts, its loss and its
configuration namespace, and DePT adds (prompting/dept.py):

* the CAT head on the host's raw features, trained at ``OPTIM.LR * TRAINER.DEPT.LR_MULT`` (the
  release's staged learning rate, 6.5x);
* in the loss, the host's image-text cross-entropy ``CE_itm`` is re-weighted and the head's added:
  ``host_loss - w CE_itm + w CE_cat`` = ``(1 - w) CE_itm + w CE_cat + <host's other terms>`` (as the
  released KgCoOp+DePT does with its KG term), ``w`` = ``TRAINER.DEPT.WEIGHT``;
* in evaluation, fused logits for the classes the head knows (by name), the host's for the others;
  ``ALL_CLASSES_HEAD oracle`` instead gives every test image whose true class the head does not know
  the host's logits (the release's base/new-aware evaluation, which the open-world protocol forbids).

Registered: CoOp, KgCoOp, MaPLe, PromptSRC and BMIP with DePT. Another host is three lines
(``class X_DePT(DePTTrainer, X)`` registered), provided its model is a PromptedCLIP that computes the
prompted text features in training (not VPT: its text side is fixed) and its loss includes
``CE(model.logits(*model.features(x)), y)``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from engine.engine import TRAINER_REGISTRY
from engine.utils.torchtools import load_checkpoint
from prompting.dept import ALL_CLASSES_HEADS, CATHead, attach_cat_head
from prompting.model import PromptedCLIP

from .bmip import BMIP
from .coop import CoOp
from .kgcoop import KgCoOp
from .maple import MaPLe
from .promptsrc import PromptSRC

__all__ = ["BMIP_DePT", "CoOp_DePT", "DePTTrainer", "KgCoOp_DePT", "MaPLe_DePT", "PromptSRC_DePT"]

_BEST_FILE = "model-best.pth.tar"


class DePTTrainer:
    """Mixin in front of a :class:`~trainers.base.DeepPromptTrainer` subclass (module docstring)."""

    cfg: Any
    model: Any
    MODEL_NAME: str

    def check_cfg(self, cfg: Any) -> None:
        super().check_cfg(cfg)  # type: ignore[misc]
        d = cfg.TRAINER.DEPT
        if d.ALL_CLASSES_HEAD not in ALL_CLASSES_HEADS:
            raise ValueError(f"TRAINER.DEPT.ALL_CLASSES_HEAD must be one of {ALL_CLASSES_HEADS}, got {d.ALL_CLASSES_HEAD!r}")
        if not 0.0 <= d.WEIGHT <= 1.0:
            raise ValueError(f"TRAINER.DEPT.WEIGHT must be in [0, 1], got {d.WEIGHT}")

    def build_custom_clip(self, clip_model: nn.Module, classnames: list[str]) -> PromptedCLIP:
        model = super().build_custom_clip(clip_model, classnames)  # type: ignore[misc]
        d, dataset = self.cfg.TRAINER.DEPT, self.cfg.DATASET.NAME
        head = CATHead(clip_model.embed_dim, classnames, dataset, film=d.FILM)
        print(f"DePT: CAT head over {len(classnames)} classes of {dataset} (weight {d.WEIGHT}, LR x{d.LR_MULT})")
        return attach_cat_head(
            model, head, weight=d.WEIGHT, fusion=d.TEST_TIME_FUSION, mode=d.ALL_CLASSES_HEAD,
            dataset=dataset, cross_dataset=d.CROSS_DATASET_HEAD,
        )  # fmt: skip

    def param_groups(self) -> Any:
        head = list(self.model.dept_head.parameters())
        return [
            {"params": list(self.model.prompt_learner.parameters())},
            {"params": head, "lr": self.cfg.OPTIM.LR * self.cfg.TRAINER.DEPT.LR_MULT},
        ]

    def build_model(self) -> None:
        super().build_model()  # type: ignore[misc]
        self._test_labels: Optional[Tensor] = None

    # ---- training ---------------------------------------------------------------------------------
    def compute_loss(self, images: Tensor, labels: Tensor) -> Tensor:
        loss = super().compute_loss(images, labels)  # type: ignore[misc]
        w = self.cfg.TRAINER.DEPT.WEIGHT
        itm = F.cross_entropy(self.model.logits(*self.model.dept_features), labels)
        cat = self.model.cat_loss(labels)
        terms = dict(getattr(self, "loss_terms", {}) or {})
        terms["loss_ce"] = (1.0 - w) * itm.item()
        terms["loss_cat"] = w * cat.item()
        self.loss_terms = terms
        return loss - w * itm + w * cat

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        summary = super().forward_backward(batch)  # type: ignore[misc]
        summary.update(self.loss_terms)
        return summary

    # ---- evaluation -------------------------------------------------------------------------------
    def parse_batch_test(self, batch: dict[str, Any]) -> Any:
        inputs, labels = super().parse_batch_test(batch)  # type: ignore[misc]
        self._test_labels = labels
        return inputs, labels

    def model_inference(self, input: Tensor) -> Tensor:
        """Fused logits; under ``oracle``, the host's for images of a class the head does not know."""
        logits = super().model_inference(input)  # type: ignore[misc]
        if self.cfg.TRAINER.DEPT.ALL_CLASSES_HEAD != "oracle" or self._test_labels is None:
            return logits
        unknown = self.model.dept_columns[self._test_labels] < 0
        return self.model.dept_similarity.where(unknown.unsqueeze(1), logits)

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Size the head for the classes of the checkpoint's head, then load as usual."""
        if directory:
            model_file = _BEST_FILE if epoch is None else f"model.pth.tar-{epoch}"
            path = os.path.join(directory, self.MODEL_NAME, model_file)
            if os.path.exists(path):  # otherwise the engine raises its own clear error
                self.model.resize_dept_head(load_checkpoint(path)["state_dict"])
                if hasattr(self, "build_gpa"):  # PromptSRC's aggregator holds one slot per trainable value
                    self.build_gpa()
        super().load_model(directory, epoch)  # type: ignore[misc]


@TRAINER_REGISTRY.register()
class CoOp_DePT(DePTTrainer, CoOp):  # noqa: N801  (host_plugin, like PromptSRC_BMIP)
    """CoOp + DePT (the release's ExtrasLinearProbeCoOp)."""


@TRAINER_REGISTRY.register()
class KgCoOp_DePT(DePTTrainer, KgCoOp):  # noqa: N801
    """KgCoOp + DePT (the release's ExtrasLinearProbeKgCoOp)."""


@TRAINER_REGISTRY.register()
class MaPLe_DePT(DePTTrainer, MaPLe):  # noqa: N801
    """MaPLe + DePT (the release's ExtrasLinearProbeMaPLe)."""


@TRAINER_REGISTRY.register()
class PromptSRC_DePT(DePTTrainer, PromptSRC):  # noqa: N801
    """PromptSRC + DePT (the paper's best row; its code is not in the release)."""


@TRAINER_REGISTRY.register()
class BMIP_DePT(DePTTrainer, BMIP):  # noqa: N801
    """BMIP + DePT (new: no repository has it)."""
