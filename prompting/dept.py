"""DePT's Channel Adjusted Transfer (CAT) head, attachable to any prompted CLIP (docs/METHODS.md, DePT).

Zhang et al., "DePT: Decoupled Prompt Tuning" (CVPR 2024). Beside the host's image-text matching (ITM)
head (cosine logits ``s``), a second head sees the raw (unnormalised) features of the same forward:
channel-wise affine maps ``a_I``, ``a_T`` (scale 1, shift 0 at init) and a linear classifier ``L`` over
the classes it was trained on. Training: ``L`` classifies both ``a_I(f_b)`` and ``a_T(g_{y_b})`` as
``y_b``. Test, for a class the head knows: ``(1 - w) s + w L(a_I(f))`` (``w`` = ``TRAINER.DEPT.WEIGHT``;
``L(a_I(f))`` alone without test-time fusion); for any other class: ``s``.

:func:`attach_cat_head` turns a built :class:`~prompting.model.PromptedCLIP` (or subclass) into its DePT
variant in place: its class becomes ``DePT<Host>``, a subclass adding :class:`DePTModel`'s behaviour.
The head's classes and dataset travel in checkpoints (``dept_head.meta``), so a base-trained head is
found again, by class name, in a new or all-classes label space.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clip import at_least_fp32

__all__ = [
    "ALL_CLASSES_HEADS",
    "IMAGENET_VARIANTS",
    "CATHead",
    "DePTModel",
    "FiLM",
    "attach_cat_head",
]

# TRAINER.DEPT.ALL_CLASSES_HEAD: how a label space mixing the head's classes with others is scored.
ALL_CLASSES_HEADS = ("per_class", "similarity", "oracle")
IMAGENET_VARIANTS = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")
META_KEY = "dept_head.meta"


class FiLM(nn.Module):
    """Channel-wise ``scale * x + shift`` (scale 1, shift 0 at init); ``shift`` optional."""

    def __init__(self, dim: int, shift: bool = True) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim)) if shift else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.scale * x
        return x if self.shift is None else x + self.shift


class CATHead(nn.Module):
    """FiLM maps per modality (``film=False``: identity) and a linear classifier over ``classnames``."""

    def __init__(self, dim: int, classnames: Sequence[str], dataset: str, film: bool = True) -> None:
        super().__init__()
        self.classnames = list(classnames)
        self.dataset = dataset
        self.has_film = film
        self.film_image = FiLM(dim) if film else nn.Identity()
        self.film_text = FiLM(dim) if film else nn.Identity()
        self.linear = nn.Linear(dim, len(self.classnames))

    def image_logits(self, image: Tensor) -> Tensor:
        """Head logits (N, H) of raw image features (N, D)."""
        return self.linear(self.film_image(image))

    def train_logits(self, image: Tensor, text: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (2B, H) of ``[a_T(g_y); a_I(f)]`` and their labels ``[y; y]`` (text rows first, as released)."""
        rows = torch.cat([self.film_text(text[labels]), self.film_image(image)])
        return self.linear(rows), torch.cat([labels, labels])

    def meta(self) -> Tensor:
        """The head's classes and dataset as a uint8 tensor (a checkpoint holds tensors only)."""
        text = json.dumps({"classnames": self.classnames, "dataset": self.dataset, "film": self.has_film})
        return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)

    @staticmethod
    def read_meta(meta: Tensor) -> dict[str, Any]:
        return json.loads(bytes(meta.tolist()).decode("utf-8"))


def _recording(head: Optional[Callable[[Tensor], Tensor]], store: dict[str, Tensor], key: str) -> Callable:
    def record(features: Tensor) -> Tensor:
        if head is not None:
            features = head(features)
        store[key] = at_least_fp32(features)
        return features

    return record


class DePTModel:
    """Mixin over a :class:`PromptedCLIP` class: the CAT head ``dept_head`` beside the host's ITM head.

    ``features`` also keeps the raw features of its forward (``dept_raw``: image, and text unless the
    text side came from the evaluation cache) and the normalised ones (``dept_features``). In training
    ``forward`` returns the host's logits; in evaluation the fused logits, keeping the host's in
    ``dept_similarity`` (the ``oracle`` evaluation needs both).
    """

    dept_head: CATHead
    dept_weight: float
    dept_fusion: bool
    dept_mode: str
    dept_dataset: str
    dept_cross_dataset: bool

    def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        plan = self.prompt_learner()
        raw: dict[str, Tensor] = {}
        plan.text_head = _recording(plan.text_head, raw, "text")
        plan.image_head = _recording(plan.image_head, raw, "image")
        text = self.text_features(plan)
        image = self.encode_image(images, plan)
        self.dept_raw = (raw["image"], raw.get("text"))
        self.dept_features = (image, text)
        return image, text

    def forward(self, images: Tensor) -> Tensor:
        image, text = self.features(images)
        similarity = self.logits(image, text)
        if self.training:
            return similarity
        self.dept_similarity = similarity
        columns = self.dept_columns
        known = (columns >= 0).nonzero().flatten()
        if self.dept_mode == "similarity" or known.numel() == 0:
            return similarity
        head = self.dept_head.image_logits(self.dept_raw[0])[:, columns[known]]
        fused = (1.0 - self.dept_weight) * similarity[:, known] + self.dept_weight * head if self.dept_fusion else head
        return similarity.index_copy(1, known, fused.to(similarity.dtype))

    def cat_loss(self, labels: Tensor) -> Tensor:
        """Cross-entropy of the CAT head on the last training forward's raw features."""
        image, text = self.dept_raw
        if text is None:
            raise RuntimeError("DePT needs the prompted text features of the training forward (none were computed)")
        if self.classnames != self.dept_head.classnames:
            raise ValueError(
                f"the DePT head was built for {len(self.dept_head.classnames)} classes, training runs on "
                f"{len(self.classnames)} others: the head trains on the label space it was built for"
            )
        logits, targets = self.dept_head.train_logits(image, text, labels)
        return F.cross_entropy(logits, targets)

    # ---- which classes of the label space the head knows ------------------------------------------
    def head_applies(self) -> bool:
        """Official rule: on the head's own dataset, or an ImageNet variant of an ImageNet-trained head;
        ``TRAINER.DEPT.CROSS_DATASET_HEAD`` also allows other datasets (by class name)."""
        source = self.dept_head.dataset
        return (
            self.dept_cross_dataset
            or self.dept_dataset == source
            or (source == "ImageNet" and self.dept_dataset in IMAGENET_VARIANTS)
        )

    def update_dept_columns(self) -> None:
        """``dept_columns[c]``: the head row of class ``c`` of the label space, or -1."""
        rows = {name: i for i, name in enumerate(self.dept_head.classnames)} if self.head_applies() else {}
        columns = torch.tensor([rows.get(name, -1) for name in self.classnames], dtype=torch.long)
        self.register_buffer("dept_columns", columns.to(self.token_ids.device), persistent=False)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        super().set_classnames(classnames)  # type: ignore[misc]
        if hasattr(self, "dept_head"):
            self.update_dept_columns()

    # ---- checkpoints ------------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, Tensor]:
        state = super().trainable_state_dict()  # type: ignore[misc]
        state[META_KEY] = self.dept_head.meta()
        return state

    def resize_dept_head(self, state_dict: Mapping[str, Any]) -> None:
        """Rebuild the head for the classes a checkpoint's head was trained on (before loading it)."""
        meta = state_dict.get(META_KEY)
        if meta is None:
            raise ValueError(f"checkpoint has no {META_KEY}: it was not saved by a DePT trainer")
        info = CATHead.read_meta(meta)
        old = self.dept_head
        weight = old.linear.weight
        head = CATHead(weight.shape[1], info["classnames"], info["dataset"], info["film"])
        self.dept_head = head.to(device=weight.device, dtype=weight.dtype)
        self.update_dept_columns()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        state = dict(state_dict)
        state.pop(META_KEY, None)
        return super().load_state_dict(state, strict=strict, assign=assign)  # type: ignore[misc]


_DEPT_CLASSES: dict[type, type] = {}


def attach_cat_head(
    model: nn.Module,
    head: CATHead,
    *,
    weight: float,
    fusion: bool,
    mode: str,
    dataset: str,
    cross_dataset: bool,
) -> nn.Module:
    """Make ``model`` (a PromptedCLIP instance) its DePT variant with ``head``; returns the same object."""
    if mode not in ALL_CLASSES_HEADS:
        raise ValueError(f"TRAINER.DEPT.ALL_CLASSES_HEAD must be one of {ALL_CLASSES_HEADS}, got {mode!r}")
    host = type(model)
    if host not in _DEPT_CLASSES:
        _DEPT_CLASSES[host] = type(f"DePT{host.__name__}", (DePTModel, host), {"__doc__": DePTModel.__doc__})
    model.__class__ = _DEPT_CLASSES[host]
    model.dept_head = head
    model.dept_weight = weight
    model.dept_fusion = fusion
    model.dept_mode = mode
    model.dept_dataset = dataset
    model.dept_cross_dataset = cross_dataset
    model.update_dept_columns()
    return model
