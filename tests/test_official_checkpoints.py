"""Official MaPLe / BMIP checkpoints (whole CustomCLIP, fp16, pickled scheduler) load into our trainers."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import clip
import train
from engine.engine import build_trainer
from engine.utils import load_checkpoint
from prompting.bmip import BMIPPrompts, resolve_bmip_options
from tools import convert_official
from trainers.official import OfficialCheckpointError, convert_official_state_dict

ROOT = Path(__file__).resolve().parents[1]


def _official_frozen_clip(clip_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The frozen CLIP as the official CustomCLIP names it (image_encoder / text_encoder / logit_scale)."""
    state = {f"image_encoder.{k}": v for k, v in clip_model.visual.state_dict().items()}
    for name in ("transformer", "ln_final"):
        state.update({f"text_encoder.{name}.{k}": v for k, v in getattr(clip_model, name).state_dict().items()})
    state["text_encoder.positional_embedding"] = clip_model.positional_embedding
    state["text_encoder.text_projection"] = clip_model.text_projection
    state["logit_scale"] = clip_model.logit_scale
    return state


def _save_official(path: Path, state_dict: dict[str, torch.Tensor], params: list[torch.nn.Parameter]) -> None:
    """Dassl's layout: fp16 tensors, optimizer state, a pickled scheduler object (holding its optimizer)."""
    optimizer = torch.optim.SGD(params, lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
    half = OrderedDict((k, v.detach().clone().half()) for k, v in state_dict.items())
    torch.save({"state_dict": half, "epoch": 5, "optimizer": optimizer.state_dict(), "scheduler": scheduler,
                "val_result": None}, path)  # fmt: skip


def test_official_maple_checkpoint_gives_the_same_logits(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(train, "collect_env_info", lambda: "(skipped)")
    args = train.build_parser().parse_args([
        "--root", str(tmp_path / "data"), "--trainer", "MaPLe", "--seed", "1", "--output-dir", str(tmp_path / "run"),
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
        "--config-file", str(ROOT / "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"),
        "MODEL.BACKBONE.NAME", "random:tiny", "TRAINER.MAPLE.PREC", "fp32", "TRAINER.MAPLE.PROMPT_DEPTH", "3",
        "DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", "base", "DATALOADER.NUM_WORKERS", "0",
    ])  # fmt: skip
    trainer = build_trainer(train.setup_cfg(args))
    model = trainer.model.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in trainable:  # move away from the initialisation so that loading has something to show
            p.add_(torch.randn_like(p) * 0.05)
    ours = model.trainable_state_dict()
    official = {**_official_frozen_clip(model.clip), **ours,
                "prompt_learner.token_prefix": torch.randn(5, 1, 128),
                "prompt_learner.token_suffix": torch.randn(5, 72, 128)}  # fmt: skip
    source = tmp_path / "model.pth.tar-5"
    _save_official(source, official, trainable)
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in trainable:  # the reference: our weights rounded to fp16 as the file stores them
            p.copy_(p.half().float())
        reference = model(images)
        for p in trainable:  # forget them before loading
            p.add_(torch.randn_like(p))
        assert not torch.allclose(model(images), reference)

    # The scheduler object is one of the types a Dassl checkpoint holds: read without a flag, as inert data.
    assert load_checkpoint(str(source))["scheduler"].cls_path == "torch.optim.lr_scheduler.CosineAnnealingLR"
    out = tmp_path / "converted"
    assert convert_official.main([str(source), "--method", "MaPLe", "--output-dir", str(out)]) == 0
    written = torch.load(out / "MultiModalPromptLearner" / "model.pth.tar-5", weights_only=True)
    assert set(written["state_dict"]) == set(ours) and written["epoch"] == 5
    assert all(v.dtype == torch.float32 for v in written["state_dict"].values())

    trainer.load_model(str(out), epoch=5)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference, rtol=0, atol=1e-5)


def _bmip(seed: int, mode: str = "copies") -> BMIPPrompts:
    torch.manual_seed(seed)
    return BMIPPrompts(clip.build_clip("random:tiny"), resolve_bmip_options("released", depth=4, shared_vision_prompt=mode))


def test_official_bmip_layout_maps_gates_ctx_v_and_drops_unused_tensors() -> None:
    source = _bmip(0)
    n, depth, d_t, d_v = 2, 4, 128, 192
    with torch.no_grad():  # trained on a GPU, the release's per-block aliases have become distinct tensors
        for k, copy in enumerate(source.compound_prompts_visual):
            copy.add_(0.01 * (k + 1))
    ours = {f"prompt_learner.{k}": v for k, v in source.state_dict().items()}
    assert "prompt_learner.ctx_v" not in ours  # released layer 0 is proj_t(ctx_t): ctx_v is unused
    official = {k: v for k, v in ours.items() if ".gates_" not in k}
    # Release: ctx_v has 77 rows (only the first n used, and here not at all) next to the per-block copies ...
    official["prompt_learner.ctx_v"] = torch.randn(77, d_v)
    # ... unused heads, and both gates in all 12 blocks of both towers (only some are used).
    official["prompt_learner.proj_v.weight"] = torch.randn(d_t, d_v)
    official["prompt_learner.exchange_layer_v.weight"] = torch.randn(d_v, 2 * d_v)
    for tower, gates, which in (("image_encoder", "gates_v", "1"), ("text_encoder", "gates_t", "2")):
        for block in range(12):
            for other in ("1", "2"):
                for param in ("weight", "bias"):
                    key = f"{tower}.transformer.resblocks.{block}.learnable_linear{other}.{param}"
                    ours_key = f"prompt_learner.{gates}.{block - 1}.{param}"
                    used = other == which and ours_key in ours
                    official[key] = ours[ours_key] if used else torch.full((1, 1) if param == "weight" else (1,), 9.0)
    official["text_encoder.ln_final.weight"] = torch.ones(d_t)
    official = {k: v.half() for k, v in official.items()}

    converted = convert_official_state_dict(official, "BMIP")
    assert set(converted) == set(ours) | {"prompt_learner.ctx_v"}
    assert converted["prompt_learner.ctx_v"].shape == (n, d_v)
    learner_state = {k[len("prompt_learner."):]: v for k, v in converted.items()}
    target = _bmip(1)
    target.load_state_dict(learner_state, strict=True)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value.half().float(), rtol=0, atol=0)
    # One shared tensor cannot hold copies trained apart; equal copies (trained on CPU) load into it.
    with pytest.raises(ValueError, match="SHARED_VISION_PROMPT copies"):
        _bmip(1, "tied").load_state_dict(learner_state, strict=True)
    equal = {**learner_state, **{f"compound_prompts_visual.{k}": learner_state["ctx_v"] for k in range(depth - 1)}}
    for mode in ("tied", "aliased"):
        tied = _bmip(1, mode)
        tied.load_state_dict(equal, strict=True)
        torch.testing.assert_close(tied.ctx_v.detach(), learner_state["ctx_v"], rtol=0, atol=0)

    with pytest.raises(OfficialCheckpointError, match="not a BMIP checkpoint"):
        convert_official_state_dict({"prompt_learner.ctx": torch.zeros(2, 4)}, "BMIP")
    with pytest.raises(OfficialCheckpointError, match="unexpected tensor 'head.weight'"):
        convert_official_state_dict({**official, "head.weight": torch.zeros(1)}, "BMIP")
