"""Independent float64 references of the prompt trainers, checked by tests/test_trainer_exactness.py.

Every module of this package may define ``REFERENCES: dict[str, Reference | Sequence[Reference]]``,
keyed by the trainer's registered name; :func:`all_references` collects them (a trainer named in two
modules is an error). A reference is written from the method's maths - plain tensor operations on the
frozen CLIP weights (:mod:`tests.references.clip_math`) and the trainable tensors handed to it - never
by calling the project's prompting/ or trainers/ code (data such as template lists may be looked up).

How to add one for a new trainer: create ``tests/references/<name>.py`` with a function
``compute(case: Case) -> Expected`` and ``REFERENCES = {"<TrainerName>": Reference(compute, "<config>")}``;
:class:`Case`, :class:`Expected` and :class:`Reference` say what the test feeds in and compares
(docs/PERFORMANCE.md, "Exactness").
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from torch import Tensor

__all__ = ["Case", "Expected", "Reference", "all_references"]


@dataclass(frozen=True)
class Case:
    """What a reference is given: one float64 training step of a real trainer, taken apart.

    ``clip``: the frozen CLIP's state dict (names of clip/model.py, e.g. ``visual.conv1.weight``), float64.
    ``params``: every trainable tensor under its ``trainer.model.named_parameters()`` name (e.g.
    ``prompt_learner.ctx``), float64 leaves with ``requires_grad``: build the loss from these, the test
    differentiates it with respect to them. ``classnames``: the label space, in order. ``batch``:
    ``{"img": (N, 3, H, W) or a list of K views (DATALOADER.K_TRANSFORMS > 1), "label": (N,)}``, float64
    images. ``cfg``: the trainer's final config (after its own adjustments). ``trainer``: for lookups
    that are not maths only (a file path, a template list); never call it to compute anything.
    """

    trainer_name: str
    cfg: Any
    clip: dict[str, Tensor]
    params: dict[str, Tensor]
    classnames: list[str]
    batch: dict[str, Any]
    trainer: Any

    @property
    def images(self) -> Tensor:
        """The (first) view of the batch: what the logits are computed on."""
        img = self.batch["img"]
        return img[0] if isinstance(img, (list, tuple)) else img

    @property
    def labels(self) -> Tensor:
        return self.batch["label"]


@dataclass
class Expected:
    """What a reference returns.

    ``logits``: (N, C), what ``trainer.model(case.images)`` returns in training mode. ``loss``: the
    scalar ``trainer.compute_loss(*trainer.parse_batch_train(case.batch))``; it must be a function of
    ``case.params`` (the test takes its gradients). ``terms``: the loss terms by the names the trainer
    records in ``trainer.loss_terms`` (same keys exactly; leave empty for a trainer that records none).
    """

    logits: Tensor
    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """One exactness case of a trainer: a config to build it from and the function that recomputes it.

    ``compute(case) -> Expected`` is called right after ``random.seed(SEED)``, ``numpy.random.seed(SEED)``
    and ``torch.manual_seed(SEED)``, exactly as the trainer's ``compute_loss`` is, so a trainer that draws
    random numbers (CoPrompt's description index) is matched by drawing the same way. ``config_file``
    is relative to the repository root; ``opts`` are ``KEY VALUE`` overrides applied after the test's own
    (tiny random CLIP, Digits base classes, ``TRAINER.<CFG_NAME>.PREC fp64``). ``name`` tells several
    cases of one trainer apart (test id ``<trainer>-<name>``).
    """

    compute: Callable[[Case], Expected]
    config_file: str
    opts: tuple[str, ...] = ()
    name: str = "default"


def all_references() -> dict[str, list[Reference]]:
    """Trainer name -> its references, from every module of this package."""
    found: dict[str, list[Reference]] = {}
    owner: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        table: dict[str, Union[Reference, Sequence[Reference]]] = getattr(module, "REFERENCES", {})
        for trainer, refs in table.items():
            if trainer in owner:
                raise ValueError(
                    f"trainer {trainer!r} has references in both {owner[trainer]} and {info.name}"
                )
            owner[trainer] = info.name
            found[trainer] = [refs] if isinstance(refs, Reference) else list(refs)
    return found
