"""The trainers' build hooks: one ``build_model`` for the whole prompt family (CoOp/CoCoOp only choose
their model through ``build_custom_clip``), and ``MODEL.INIT_WEIGHTS`` loaded where the official
trainers load it (CoOp/CoCoOp: into the prompt learner; the MaPLe family: into the whole model)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from test_promptsrc import build, digits_root  # noqa: F401  (digits_root is a fixture)

import trainers  # noqa: F401  (registers the trainers)
from engine.engine import TRAINER_REGISTRY
from trainers.base import DeepPromptTrainer
from trainers.cocoop import CoCoOp
from trainers.coop import CoOp, CoOpCLIP

TEXT_WIDTH = 128  # random:tiny


def test_build_model_has_one_implementation():
    family = [TRAINER_REGISTRY.get(n) for n in TRAINER_REGISTRY.registered_names()]
    family = [cls for cls in family if issubclass(cls, DeepPromptTrainer)]
    assert CoOp in family and CoCoOp in family
    for cls in family:
        owners = [k for k in cls.__mro__ if "build_model" in vars(k) and issubclass(k, DeepPromptTrainer)]
        assert owners[-1] is DeepPromptTrainer, cls
        for owner in owners[:-1]:  # overrides may only extend it (PromptSRC adds GPA after super())
            assert "super().build_model()" in inspect.getsource(owner.build_model), owner
    assert "build_model" not in vars(CoOp) and "build_model" not in vars(CoCoOp)


@pytest.mark.parametrize(
    "trainer, config, n_ctx, loaded_key",
    [
        ("CoOp", "CoOp/vit_b16_ctxv1.yaml", 4, "ctx"),  # CTX_INIT "a photo of a": 4 tokens
        ("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", 2, "prompt_learner.ctx"),
    ],
)
def test_init_weights_load_where_the_official_trainers_load_them(
    digits_root, tmp_path: Path, trainer, config, n_ctx, loaded_key  # noqa: F811
):
    # Both key styles in one file, different values: which one lands shows where the file was loaded.
    values = {"ctx": torch.full((n_ctx, TEXT_WIDTH), 0.25), "prompt_learner.ctx": torch.full((n_ctx, TEXT_WIDTH), -0.5)}
    weights = tmp_path / "init.pth"
    torch.save({"state_dict": values}, weights)
    namespace = {"CoOp": "COOP", "MaPLe": "MAPLE"}[trainer]
    built = build(
        trainer, config, digits_root, tmp_path / "run", f"TRAINER.{namespace}.PREC", "fp32",
        "MODEL.INIT_WEIGHTS", str(weights),
    )  # fmt: skip
    assert isinstance(built.model, CoOpCLIP) == (trainer == "CoOp")
    assert torch.equal(built.model.prompt_learner.ctx, values[loaded_key])
