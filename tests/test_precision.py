"""Mixed precision and ``torch.compile`` of the shared trainer (trainers/base.py).

``PREC amp_bf16`` runs the training forward under bf16 autocast on every device (here: CPU) with fp32
trainable tensors and no loss scaler; ``amp`` keeps the released behaviour (fp16 autocast + GradScaler on
CUDA, fp32 on CPU). ``MODEL.COMPILE`` hands exactly the frozen towers' encoders to ``torch.compile``
(monkeypatched here: compiling on the test machine would take minutes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_promptsrc import build, digits_root  # noqa: F401  (digits_root is a fixture)

import clip
import trainers  # noqa: F401  (registers the trainers)
from engine.engine import TRAINER_REGISTRY
from trainers.base import COMPILED_ENCODERS, DeepPromptTrainer, autocast_dtype
from trainers.config import extend_trainer_cfg

CONFIGS = {
    "MaPLe": ("MAPLE", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"),
    "CoOp": ("COOP", "CoOp/vit_b16_ctxv1.yaml"),
}


def one_batch(trainer: DeepPromptTrainer) -> dict:
    return next(iter(trainer.train_loader_x))


def step(trainer: DeepPromptTrainer) -> dict[str, float]:
    """One training step with the engine's counters set as ``run_epoch`` sets them."""
    trainer.batch_idx, trainer.num_batches, trainer.epoch = 0, 2, 0
    trainer.model.train()
    return trainer.forward_backward(one_batch(trainer))


def block_output_dtypes(clip_model: torch.nn.Module) -> tuple[dict[str, torch.dtype], list]:
    """Record the dtype of the first block's MLP activations in each tower while the returned handles live.

    The MLP's matmuls are the bulk of a block's work; the residual stream itself stays in the dtype of
    the tower input (fp32 text embeddings), as autocast leaves additions alone.
    """
    seen: dict[str, torch.dtype] = {}
    handles = []
    for tower, transformer in (("image", clip_model.visual.transformer), ("text", clip_model.transformer)):
        def record(module, args, output, tower=tower):  # noqa: ANN001, ANN202
            seen[tower] = output.dtype

        handles.append(transformer.resblocks[0].mlp.c_fc.register_forward_hook(record))
    return seen, handles


@pytest.mark.parametrize("trainer_name", sorted(CONFIGS))
def test_amp_bf16_step_runs_in_bf16_with_fp32_trainable_tensors(digits_root, tmp_path: Path, trainer_name):  # noqa: F811
    namespace, config = CONFIGS[trainer_name]
    trainer = build(trainer_name, config, digits_root, tmp_path / "run", f"TRAINER.{namespace}.PREC", "amp_bf16")
    assert trainer.autocast_dtype is torch.bfloat16 and trainer.scaler is None
    assert all(p.dtype == torch.float32 for p in trainer.model.clip.parameters())  # frozen weights stay fp32
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    seen, handles = block_output_dtypes(trainer.model.clip)
    try:
        summary = step(trainer)
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {"image": torch.bfloat16, "text": torch.bfloat16}
    assert torch.isfinite(torch.tensor(summary["loss"]))
    after = dict(trainer.model.named_parameters())
    for name in trainable:
        assert after[name].dtype == torch.float32 and after[name].grad.dtype == torch.float32, name
    assert any(not torch.equal(after[name], before) for name, before in trainable.items())
    # Evaluation does not autocast (as the released amp trainers).
    seen, handles = block_output_dtypes(trainer.model.clip)
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model_inference(one_batch(trainer)["img"])
    for handle in handles:
        handle.remove()
    assert seen == {"image": torch.float32, "text": torch.float32} and logits.dtype == torch.float32


def test_amp_keeps_the_released_behaviour_on_cpu(digits_root, tmp_path: Path):  # noqa: F811
    trainer = build("MaPLe", CONFIGS["MaPLe"][1], digits_root, tmp_path / "run", "TRAINER.MAPLE.PREC", "amp")
    assert trainer.autocast_dtype is None and trainer.scaler is None
    seen, handles = block_output_dtypes(trainer.model.clip)
    step(trainer)
    for handle in handles:
        handle.remove()
    assert seen == {"image": torch.float32, "text": torch.float32}


def test_autocast_dtype_per_precision_and_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("amp_bf16", cpu) is torch.bfloat16
    assert autocast_dtype("amp", cpu) is None
    assert autocast_dtype("amp", cuda) is torch.float16
    assert autocast_dtype("fp16", cuda) is None and autocast_dtype("fp32", cuda) is None


def test_unsupported_bf16_gpu_is_refused_naming_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    with pytest.raises(ValueError, match=r"TRAINER\.BMIP\.PREC 'amp_bf16' needs a GPU with bfloat16"):
        autocast_dtype("amp_bf16", torch.device("cuda"), key="TRAINER.BMIP.PREC")


def test_every_prompt_trainer_accepts_amp_bf16_and_names_the_key_for_bad_values():
    from engine.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    extend_trainer_cfg(cfg)
    assert "amp_bf16" in clip.PRECISIONS and cfg.MODEL.COMPILE is False
    family = [TRAINER_REGISTRY.get(n) for n in TRAINER_REGISTRY.registered_names()]
    family = [cls for cls in family if issubclass(cls, DeepPromptTrainer)]
    assert len(family) >= 8
    for cls in family:
        trainer = cls.__new__(cls)  # check_cfg reads only the config
        cfg.TRAINER[cls.CFG_NAME].PREC = "amp_bf16"
        trainer.check_cfg(cfg)
        cfg.TRAINER[cls.CFG_NAME].PREC = "bf16"
        with pytest.raises(ValueError, match=rf"TRAINER\.{cls.CFG_NAME}\.PREC must be one of .*amp_bf16.*'bf16'"):
            trainer.check_cfg(cfg)
        cfg.TRAINER[cls.CFG_NAME].PREC = "fp16"


class FakeCompile:
    """Stands in for ``torch.compile``: records what it was given and counts calls of the result."""

    def __init__(self) -> None:
        self.compiled: list = []
        self.calls: dict[str, int] = {}

    def __call__(self, fn):  # noqa: ANN001, ANN204
        self.compiled.append(fn)
        name = fn.__name__

        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args, **kwargs)

        return wrapped


@pytest.mark.parametrize("enabled", [True, False])
def test_compile_wraps_the_frozen_encoders_only_when_enabled(digits_root, tmp_path: Path, monkeypatch, enabled):  # noqa: F811
    fake = FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    trainer = build(
        "MaPLe", CONFIGS["MaPLe"][1], digits_root, tmp_path / "run", "TRAINER.MAPLE.PREC", "fp32",
        "MODEL.COMPILE", str(enabled),
    )  # fmt: skip
    clip_model = trainer.model.clip
    if not enabled:
        assert fake.compiled == [] and not any(name in vars(clip_model) for name in COMPILED_ENCODERS)
        return
    # Bound methods of the frozen CLIP, nothing else (not the prompt learner, not the whole model).
    assert [(fn.__self__, fn.__name__) for fn in fake.compiled] == [(clip_model, n) for n in COMPILED_ENCODERS]
    assert all(name in vars(clip_model) for name in COMPILED_ENCODERS)
    assert not any(k.startswith("encode") for k in clip_model.state_dict())
    step(trainer)
    assert fake.calls == {"encode_image": 1, "encode_text_embeddings": 1}


def test_compile_unavailable_gives_a_clear_error(monkeypatch):
    def unsupported(fn):  # noqa: ANN001, ANN202
        raise RuntimeError("Dynamo is not supported on this Python")

    from trainers.base import compile_towers

    monkeypatch.setattr(torch, "compile", unsupported)
    with pytest.raises(RuntimeError, match=r"MODEL.COMPILE is True but torch.compile is unavailable.*Dynamo"):
        compile_towers(clip.build_clip("random:tiny", seed=0))
    monkeypatch.delattr(torch, "compile")
    with pytest.raises(RuntimeError, match=r"has no torch.compile.*set MODEL.COMPILE False"):
        compile_towers(clip.build_clip("random:tiny", seed=0))
