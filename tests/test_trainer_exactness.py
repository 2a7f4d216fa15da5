"""Every registered prompt trainer equals an independent float64 reference of its maths (< 1e-12).

Parametrised over ``TRAINER_REGISTRY`` (zero-shot trainers, which train nothing, excepted): a trainer is
checked the moment it is registered, and fails here until ``tests/references/`` holds a reference for it
(the convention is in tests/references/__init__.py). Per reference, the real trainer is built with
``PREC fp64`` on Digits' base classes with the tiny random CLIP; the test then checks that every
floating tensor of the model is float64, moves the trainable tensors off their initial values (so
zero-initialised gates and identical clones do not hide mistakes), and compares the training-mode
logits, the loss of ``compute_loss``, its recorded terms and the gradient of every trainable tensor with
what the reference computes from the same weights and batch.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import train
import trainers  # noqa: F401  (registers the trainers)
from engine.engine import TRAINER_REGISTRY, build_trainer
from tests.references import Case, Reference, all_references

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-12
SEED = 7
N_IMAGES = 3
BASE_OPTS = [
    "MODEL.BACKBONE.NAME", "random:tiny", "DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", "base",
    "DATALOADER.NUM_WORKERS", "0", "TEST.NO_TEST", "True",
]  # fmt: skip
REFERENCES = all_references()
PROMPT_TRAINERS = [
    name
    for name in TRAINER_REGISTRY.registered_names()
    if not getattr(TRAINER_REGISTRY.get(name), "ZERO_SHOT", False)
]
CASES = [(name, ref) for name in PROMPT_TRAINERS for ref in REFERENCES.get(name, [])]


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("digits")


def build_fp64_trainer(name: str, ref: Reference, root: Path, out: Path):  # noqa: ANN201
    cls = TRAINER_REGISTRY.get(name)
    prec = [f"TRAINER.{cls.CFG_NAME}.PREC", "fp64"] if getattr(cls, "CFG_NAME", "") else []
    argv = [
        "--root", str(root), "--trainer", name, "--seed", "1", "--output-dir", str(out),
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
        "--config-file", str(ROOT / ref.config_file), *BASE_OPTS, *prec, *ref.opts,
    ]  # fmt: skip
    cfg = train.setup_cfg(train.build_parser().parse_args(argv))
    train.set_seeds(cfg)
    return build_trainer(cfg)


def seed_all() -> None:
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)


def make_batch(cfg, n_classes: int) -> dict:  # noqa: ANN001
    gen = torch.Generator().manual_seed(SEED)
    h, w = cfg.INPUT.SIZE
    views = [
        torch.randn(N_IMAGES, 3, h, w, generator=gen, dtype=torch.float64)
        for _ in range(cfg.DATALOADER.K_TRANSFORMS)
    ]
    labels = torch.arange(N_IMAGES) % n_classes
    return {"img": views[0] if len(views) == 1 else views, "label": labels}


def assert_close(name: str, ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert ours.shape == reference.shape, (
        f"{name}: shape {tuple(ours.shape)} vs reference {tuple(reference.shape)}"
    )
    assert ours.dtype == torch.float64, f"{name} is {ours.dtype}, not float64"
    scale = max(1.0, reference.abs().max().item()) if reference.numel() else 1.0
    error = (ours - reference).abs().max().item() if reference.numel() else 0.0
    assert error < TOL * scale, f"{name}: max difference {error:.3e} (scale {scale:.3g})"


@pytest.mark.parametrize("name", PROMPT_TRAINERS)
def test_every_prompt_trainer_has_a_float64_reference(name: str) -> None:
    assert REFERENCES.get(name), (
        f"trainer {name} has no float64 reference: add REFERENCES[{name!r}] to a module in tests/references/ "
        "(see tests/references/__init__.py)"
    )


@pytest.mark.parametrize(("name", "ref"), CASES, ids=[f"{n}-{r.name}" for n, r in CASES])
def test_trainer_equals_its_float64_reference(
    name: str, ref: Reference, digits_root: Path, tmp_path: Path
) -> None:
    trainer = build_fp64_trainer(name, ref, digits_root, tmp_path)
    model = trainer.model
    not_fp64 = [
        n
        for n, t in [*model.named_parameters(), *model.named_buffers()]
        if t.is_floating_point() and t.dtype != torch.float64
    ]
    assert not not_fp64, f"PREC fp64 left these tensors in another dtype: {not_fp64[:5]}"
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, f"{name} has no trainable tensors"
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for p in trainable.values():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    batch = make_batch(trainer.cfg, len(model.classnames))

    model.train()
    seed_all()
    inputs, labels = trainer.parse_batch_train(batch)
    with torch.no_grad():
        logits = model(inputs[0] if isinstance(inputs, (list, tuple)) else inputs)
    model.zero_grad()
    seed_all()
    loss = trainer.compute_loss(inputs, labels)
    loss.backward()
    terms = dict(getattr(trainer, "loss_terms", {}))

    case = Case(
        trainer_name=name,
        cfg=trainer.cfg,
        clip={k: v.detach().clone() for k, v in model.clip.state_dict().items()},
        params={n: p.detach().clone().requires_grad_(True) for n, p in trainable.items()},
        classnames=list(model.classnames),
        batch=batch,
        trainer=trainer,
    )
    seed_all()
    expected = ref.compute(case)

    assert_close("logits", logits, expected.logits.detach())
    assert_close("loss", loss.detach(), expected.loss.detach())
    assert set(terms) == set(expected.terms), (
        f"loss terms {sorted(terms)} vs reference {sorted(expected.terms)}"
    )
    for key, value in expected.terms.items():
        assert abs(terms[key] - value.item()) < TOL * max(1.0, abs(value.item())), (
            f"{key}: {terms[key]} vs {value.item()}"
        )
    grads = torch.autograd.grad(expected.loss, list(case.params.values()), allow_unused=True)
    for (pname, param), grad in zip(trainable.items(), grads):
        ours = param.grad if param.grad is not None else torch.zeros_like(param)
        assert_close(f"grad of {pname}", ours, grad if grad is not None else torch.zeros_like(param))
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "the reference loss depends on no tensor"
