"""``RELEASE_DRAWS``: a seed gives MaPLe's and BMIP's released initial prompts (prompting/release_draws.py).

The reference below restates the releases' construction as bare draws on torch's global generator, in order:
OpenAI's CLIP (patch conv, class and position embeddings, image blocks, projection, text blocks with
BMIP's two Linear(1, 1) gates at the end of every block, token embedding, then ``initialize_parameters``),
then the release's prompt learner. ``nn.Linear`` draws its weight and bias from U(+-1/sqrt(fan_in));
``nn.MultiheadAttention`` draws its output projection, then its packed input projection (Xavier).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import train
from engine.engine import build_trainer

ROOT = Path(__file__).resolve().parents[1]


def uniform(*shape: int, bound: float) -> torch.Tensor:
    return torch.empty(shape).uniform_(-bound, bound)


def normal(*shape: int, std: float = 1.0) -> torch.Tensor:
    return torch.empty(shape).normal_(0.0, std)


def linear(fan_in: int, fan_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    return uniform(fan_out, fan_in, bound=fan_in**-0.5), uniform(fan_out, bound=fan_in**-0.5)


def release_block(width: int, gates: bool) -> list:
    linear(width, width)  # attention output projection
    uniform(3 * width, width, bound=math.sqrt(6 / (4 * width)))  # packed q/k/v (Xavier)
    linear(width, 4 * width), linear(4 * width, width)
    return [linear(1, 1), linear(1, 1)] if gates else []


def release_clip(clip_model, gates: bool) -> dict[str, list]:
    v, t, patch = clip_model.vision_width, clip_model.text_width, clip_model.visual.conv1.weight.shape[-1]
    uniform(v, 3, patch, patch, bound=(3 * patch * patch) ** -0.5)
    normal(v), normal(clip_model.visual.positional_embedding.shape[0], v)
    blocks = {"vision": [release_block(v, gates) for _ in range(clip_model.vision_layers)]}
    normal(v, clip_model.embed_dim)
    blocks["text"] = [release_block(t, gates) for _ in range(clip_model.text_layers)]
    vocab, context = clip_model.token_embedding.weight.shape[0], clip_model.positional_embedding.shape[0]
    normal(vocab, t), normal(vocab, t), normal(context, t)  # Embedding's own init, then initialize_parameters
    for _ in range(clip_model.text_layers):
        normal(3 * t, t), normal(t, t), normal(4 * t, t), normal(t, 4 * t)
    normal(t, clip_model.embed_dim)
    return blocks


def trainer_for(name: str, config: str, tmp_path: Path, *opts: str):
    argv = [
        "--root", str(tmp_path / "data"), "--trainer", name, "--seed", "1", "--output-dir", str(tmp_path / "out"),
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
        "--config-file", str(ROOT / f"configs/trainers/{config}.yaml"),
        "MODEL.BACKBONE.NAME", "random:tiny", "DATASET.NUM_SHOTS", "1", "DATALOADER.NUM_WORKERS", "0",
        f"TRAINER.{name.upper()}.PREC", "fp32", *opts,
    ]  # fmt: skip
    cfg = train.setup_cfg(train.build_parser().parse_args(argv))
    train.set_seeds(cfg)
    trainer = build_trainer(cfg)
    torch_seed = cfg.MODEL.INIT_SEED if cfg.MODEL.INIT_SEED >= 0 else cfg.SEED
    return trainer, torch_seed


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.detach().float(), b.float(), rtol=0, atol=1e-12)


def test_maple_release_draws(tmp_path):
    trainer, seed = trainer_for("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx", tmp_path)
    assert trainer.cfg.TRAINER.MAPLE.RELEASE_DRAWS  # on in the official config
    learner = trainer.model.prompt_learner
    clip_model = trainer.model.clip
    torch.manual_seed(seed)
    release_clip(clip_model, gates=False)
    d_t, d_v = clip_model.text_width, clip_model.vision_width
    proj = linear(d_t, d_v)  # CTX_INIT given: no context draw
    texts = [normal(2, d_t, std=0.02) for _ in range(8)]
    head = linear(d_t, d_v)
    assert close(learner.proj.weight, proj[0]) and close(learner.proj.bias, proj[1])
    assert all(close(ours, ref) for ours, ref in zip(learner.compound_prompts_text, texts, strict=True))
    assert all(close(h.weight, head[0]) and close(h.bias, head[1]) for h in learner.compound_prompt_projections)
    off, _ = trainer_for("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx", tmp_path, "TRAINER.MAPLE.RELEASE_DRAWS", "False")
    assert not close(off.model.prompt_learner.proj.weight, proj[0])  # our own construction draws first


def test_bmip_release_draws(tmp_path):
    trainer, seed = trainer_for("BMIP", "BMIP/BMIP_ctx2_dp9_lr2", tmp_path)
    assert trainer.cfg.TRAINER.BMIP.RELEASE_DRAWS and seed == 48  # released config; the release seeds torch with 48
    learner = trainer.model.prompt_learner
    clip_model = trainer.model.clip
    torch.manual_seed(seed)
    gates = release_clip(clip_model, gates=True)
    d_t, d_v = clip_model.text_width, clip_model.vision_width
    proj_t = linear(d_t, d_v)
    linear(d_v, d_t)  # proj_v
    ctx_v = normal(clip_model.positional_embedding.shape[0], d_v, std=0.02)
    single_v = linear(d_v, d_t)
    linear(2 * d_v, d_v)  # exchange layer
    texts = [normal(2, d_t, std=0.02) for _ in range(8)]
    single_t = linear(d_t, d_v)
    linear(2 * d_t, d_t)
    after = torch.get_rng_state()
    pairs = [(learner.proj_t, proj_t), (learner.single_layer_v, single_v), (learner.single_layer_t, single_t)]
    for tower, ours, blocks, which in (
        ("vision", learner.gates_v, learner.vision_blocks, 0), ("text", learner.gates_t, learner.text_blocks, 1)
    ):
        pairs += [(gate, gates[tower][block][which]) for gate, block in zip(ours, blocks, strict=True)]
    for module, (weight, bias) in pairs:
        assert close(module.weight, weight) and close(module.bias, bias)
    assert all(close(p, ctx_v[:2]) for p in learner.compound_prompts_visual)
    assert all(close(ours, ref) for ours, ref in zip(learner.compound_prompts_text, texts, strict=True))
    # The generator stands where the release's construction leaves it (the data order then follows).
    trainer_for("BMIP", "BMIP/BMIP_ctx2_dp9_lr2", tmp_path)
    assert torch.equal(torch.get_rng_state(), after)
    off, _ = trainer_for("BMIP", "BMIP/BMIP_ctx2_dp9_lr2", tmp_path, "TRAINER.BMIP.RELEASE_DRAWS", "False")
    assert not close(off.model.prompt_learner.single_layer_t.weight, single_t[0])


def test_bmip_release_draws_need_the_released_layout(tmp_path):
    with pytest.raises(ValueError, match="RELEASE_DRAWS reproduces the released BMIP"):
        trainer_for("BMIP", "BMIP/BMIP_ctx2_dp9_lr2_paper", tmp_path, "TRAINER.BMIP.RELEASE_DRAWS", "True")
