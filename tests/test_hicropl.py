"""HiCroPL: the release's parameter counts at ViT-B/16, the write-back step against the float64 maths, what
trains under each MAPPING, the shared initial draws, the evaluation drift, model selection on ties, option errors.

The counts were obtained independently of this implementation: the release's ``CrossModalPromptLearner``
(github.com/zzeoZheng/HiCroPL, trainers/hicropl.py) was run in a scratch folder on its own CLIP built with
random weights at ViT-B/16 shapes (CLIP loading, the GPT classifier and ``.cuda()`` stubbed out), counting
the parameters it marks trainable (everything in the prompt learner except the frozen image encoder).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import clip
import train
import trainers  # noqa: F401  (registers the trainers)
from engine.engine import build_trainer
from prompting.hicropl import HiCroPLPrompts, resolve_hicropl_options
from tests.references.hicropl import mapped
from trainers.hicropl import HiCroPL

ROOT = Path(__file__).resolve().parents[1]
B2N = "configs/trainers/HiCroPL/vit_b16_c2_ep50_batch32_16ctx.yaml"
PROMPTS = ("ctx", "cross_prompts_text", "cross_prompts_visual")


@pytest.fixture(scope="module")
def vit_b16_meta() -> torch.nn.Module:
    with torch.device("meta"):
        return clip.build_clip("random:ViT-B/16")


def _count(module: torch.nn.Module, prompts_only: bool = False) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if not prompts_only or n.startswith(PROMPTS))


def test_official_parameter_counts_vit_b16(vit_b16_meta):
    b2n = HiCroPLPrompts(vit_b16_meta, resolve_hicropl_options("released", n_ctx=16, depth=12, cross_layer=6))
    assert _count(b2n) == 33_431_040  # the release's count, base-to-new / few-shot configs
    # Of these only the prompts get a gradient in the release (write-back): 16 * (12 * 512 + 12 * 768).
    assert _count(b2n, prompts_only=True) == 245_760
    xd = HiCroPLPrompts(vit_b16_meta, resolve_hicropl_options("released", n_ctx=2, depth=6, cross_layer=5))
    assert _count(xd) == 20_316_416  # the release's count, cross-dataset config


def _learner(preset: str, **kw) -> HiCroPLPrompts:
    torch.manual_seed(0)
    options = resolve_hicropl_options(preset, n_ctx=3, depth=5, cross_layer=2, **kw)
    return HiCroPLPrompts(clip.build_clip("random:tiny", seed=0), options).double()


def test_write_back_step_equals_the_mapping_and_touches_only_the_mapped_layers():
    learner = _learner("released")
    params = {f"prompt_learner.{n}": p.detach().clone() for n, p in learner.named_parameters()}
    vision_low, text_high = mapped(params, 2)
    learner.advance()
    text, vision = learner.text_prompts(), list(learner.cross_prompts_visual)
    for ours, expected in zip([*vision[:2], *text[2:]], [*vision_low, *text_high]):
        assert torch.allclose(ours, expected, atol=1e-12, rtol=0)
    unchanged = {"ctx", "cross_prompts_text.0", "cross_prompts_visual.2", "cross_prompts_visual.4"}
    for name in unchanged:
        assert torch.equal(dict(learner.named_parameters())[name], params[f"prompt_learner.{name}"]), name
    assert not torch.equal(vision[0], params["prompt_learner.cross_prompts_visual.0"])
    # the plan reads the tensors as they are (no mapping in the graph)
    plan = learner()
    assert plan.vision_input is learner.cross_prompts_visual[0] and plan.text_ctx is learner.ctx


def test_shared_initial_draws():
    released, paper = _learner("released"), _learner("paper")
    for learner, shared in ((released, True), (paper, False)):
        same = [torch.equal(p, learner.cross_prompts_visual[0]) for p in learner.cross_prompts_visual]
        assert all(same) is shared and any(same[1:]) is shared
        assert torch.equal(learner.text_proxy_token[0], learner.text_proxy_token[1]) is shared
        # equal values, independent tensors (the release on a GPU)
        assert released.cross_prompts_visual[0].data_ptr() != released.cross_prompts_visual[1].data_ptr()


def _build_trainer(tmp_path: Path, *opts: str):
    argv = [
        "--root", str(tmp_path / "data"), "--trainer", "HiCroPL", "--seed", "1", "--output-dir", str(tmp_path / "out"),
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"), "--config-file", str(ROOT / B2N),
        "MODEL.BACKBONE.NAME", "random:tiny", "DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", "base",
        "DATALOADER.NUM_WORKERS", "0", "TRAINER.HICROPL.N_CTX", "2", "TRAINER.HICROPL.PROMPT_DEPTH", "4",
        "TRAINER.HICROPL.CROSS_LAYER", "2", *opts,
    ]  # fmt: skip
    cfg = train.setup_cfg(train.build_parser().parse_args(argv))
    train.set_seeds(cfg)
    return build_trainer(cfg)


@pytest.fixture(scope="module")
def trainers_by_mapping(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One small trainer per MAPPING (the released preset and the paper preset), shared by the tests below."""
    root = tmp_path_factory.mktemp("hicropl")
    return {
        "write_back": _build_trainer(root / "released"),
        "graph": _build_trainer(root / "paper", "TRAINER.HICROPL.PRESET", "paper"),
    }


def _batch(n_classes: int) -> dict:
    gen = torch.Generator().manual_seed(3)
    return {"img": torch.randn(4, 3, 224, 224, generator=gen), "label": torch.arange(4) % n_classes}


@pytest.mark.parametrize("mapping", ["write_back", "graph"])
def test_what_one_step_trains(mapping: str, trainers_by_mapping: dict):
    trainer = trainers_by_mapping[mapping]
    trainer.set_model_mode("train")
    learner = trainer.model.prompt_learner
    assert trainer.optim.defaults["eps"] == 1e-3  # the released configs' OPTIM.EPS reaches Adam
    before = {n: p.detach().clone() for n, p in learner.named_parameters()}
    trainer.batch_idx, trainer.num_batches = 0, 2
    summary = trainer.forward_backward(_batch(len(trainer.model.classnames)))
    assert set(summary) == {"loss", "loss_ce", "loss_text", "loss_image"}
    moved = {n for n, p in learner.named_parameters() if not torch.equal(p, before[n])}
    mapper = {
        n
        for n in before
        if n.startswith(("text2visual", "visual2text", "attn_pooling", "text_proxy", "visual_proxy"))
    }
    assert {"ctx", "cross_prompts_text.2", "cross_prompts_visual.0"} <= moved
    if mapping == "write_back":
        assert not moved & mapper  # the release's mapper never receives a gradient
        assert learner.text2visual_net.linear_q.weight.grad is None
    else:
        assert mapper <= moved


def test_written_back_prompts_drift_over_evaluation_batches(trainers_by_mapping: dict):
    trainer = trainers_by_mapping["write_back"]
    model, images = trainer.model, _batch(5)["img"]
    trainer.set_model_mode("eval")
    assert model.cache_text is False
    first, second = trainer.model_inference(images), trainer.model_inference(images)
    assert not torch.allclose(first, second)  # the release re-maps the prompts before every batch
    trainer = trainers_by_mapping["graph"]
    trainer.set_model_mode("eval")
    first, second = trainer.model_inference(images), trainer.model_inference(images)
    assert trainer.model.cache_text and torch.equal(first, second)


def test_a_val_tie_replaces_model_best(trainers_by_mapping: dict, monkeypatch: pytest.MonkeyPatch):
    trainer = trainers_by_mapping["write_back"]
    monkeypatch.setattr(trainer, "best_result", float("-inf"))
    saved = []
    monkeypatch.setattr(trainer, "test", lambda split=None: 50.0)
    monkeypatch.setattr(
        trainer, "save_model", lambda epoch, *a, **kw: saved.append((epoch, kw.get("model_name")))
    )
    for epoch in range(2):
        trainer.epoch = epoch
        trainer.after_epoch()
    assert saved == [(0, "model-best.pth.tar"), (1, "model-best.pth.tar")] and trainer.best_result == 50.0


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(cross_layer=5), r"CROSS_LAYER must be in .* = \[1, 4\]"),
        (dict(cross_layer=0), r"CROSS_LAYER must be in .* = \[1, 4\]"),
        (dict(mapping="both"), r"MAPPING must be one of"),
        (dict(n_ctx=0), r"N_CTX must be >= 1"),
    ],
)
def test_option_errors(kw: dict, message: str):
    with pytest.raises(ValueError, match=message):
        resolve_hicropl_options("released", depth=5, **kw)


def test_preset_and_teacher_errors():
    with pytest.raises(ValueError, match=r"PRESET must be one of"):
        resolve_hicropl_options("official")
    cfg = train.setup_cfg(train.build_parser().parse_args(["--config-file", str(ROOT / B2N)]))
    cfg.defrost()
    cfg.TRAINER.HICROPL.TEACHER_NAME = "ViT-L/14"
    with pytest.raises(ValueError, match=r"TEACHER_NAME 'ViT-L/14'.*backbone 'ViT-B/16'"):
        HiCroPL.check_cfg(HiCroPL.__new__(HiCroPL), cfg)
    cfg.TRAINER.HICROPL.TEACHER_NAME = "ViT-B/16"
    HiCroPL.check_cfg(HiCroPL.__new__(HiCroPL), cfg)  # the released configs' value is accepted
