"""The three speed optimisations leave outputs unchanged (float64, difference below 1e-12).

Plain-CLIP trimming is covered in test_clip_model.py; here each optimisation is switched off and on in
*prompted* models (deep text prompts, BMIP gates that read the trimmed sequences, per-batch evaluation)
and logits plus prompt gradients are compared. The switches are the ones bench/ uses for its "before".
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import clip
from clip.model import Attention
from prompting.bmip import BMIPPrompts, resolve_bmip_options
from prompting.learners import CoupledPrompts, IndependentPrompts
from prompting.model import PromptedCLIP

CLASSES = ["cat", "sea lion", "annual crop land", "permanent crop land", "x"]
TOL = 1e-12

LEARNERS: dict[str, Callable[[torch.nn.Module], torch.nn.Module]] = {
    "maple": lambda m: CoupledPrompts(m, n_ctx=2, depth=9),
    "ivlp": lambda m: IndependentPrompts(m, n_ctx_text=2, depth_text=9, n_ctx_vision=2, depth_vision=9),
    "bmip_released": lambda m: BMIPPrompts(m, resolve_bmip_options("released")),
    "bmip_paper": lambda m: BMIPPrompts(m, resolve_bmip_options("paper")),
    "bmip_eot": lambda m: BMIPPrompts(m, resolve_bmip_options("paper", text_attn_query="eot")),
}


def _model(name: str, seed: int = 0) -> PromptedCLIP:
    backbone = clip.build_clip("random:tiny", seed=seed)
    torch.manual_seed(seed)
    model = PromptedCLIP(backbone, LEARNERS[name](backbone), CLASSES).double()
    with torch.no_grad():  # move prompts off their init so gates and projections are not symmetric
        for param in model.prompt_learner.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _logits_and_grads(model: PromptedCLIP, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.train()
    model.zero_grad()
    logits = model(images)
    (logits.square().sum() + logits[:, 0].sum()).backward()
    grads = [p.grad.clone() for p in model.prompt_learner.parameters() if p.grad is not None]
    return logits.detach(), grads


def _assert_close(
    a: tuple[torch.Tensor, list[torch.Tensor]], b: tuple[torch.Tensor, list[torch.Tensor]]
) -> None:
    assert (a[0] - b[0]).abs().max() < TOL
    assert len(a[1]) == len(b[1]) > 0
    for ga, gb in zip(a[1], b[1]):
        assert (ga - gb).abs().max() < TOL * max(1.0, gb.abs().max().item())


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_text_trimming_is_exact_with_deep_prompts_and_gates(name):
    model = _model(name)
    images = _images(2, 1)
    lengths: list[int] = []
    model.clip.transformer.resblocks[0].register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1]))
    trimmed = _logits_and_grads(model, images)
    model.clip.trim_text = False
    full = _logits_and_grads(model, images)
    longest = int(model.eot_indices.max()) + 1
    assert lengths == [longest, 77] and longest < 20
    _assert_close(trimmed, full)


@pytest.mark.parametrize("name", ["maple", "bmip_released", "bmip_paper"])
def test_cached_class_features_equal_per_batch_recompute(name):
    model = _model(name)
    batches = [_images(2, seed) for seed in (1, 2, 3)]
    model.eval()
    encodes = []
    original = model.encode_text
    model.encode_text = lambda plan: encodes.append(1) or original(plan)
    with torch.no_grad():
        cached = [model(b) for b in batches]
        assert len(encodes) == 1
        model.cache_text = False
        model.clip.trim_text = False  # the official evaluation: untrimmed text tower for every batch
        recomputed = [model(b) for b in batches]
    assert len(encodes) == 1 + len(batches)
    for c, r in zip(cached, recomputed):
        assert (c - r).abs().max() < TOL


def _count_full_projections(model: PromptedCLIP, images: torch.Tensor) -> int:
    """How many vision blocks project a whole token sequence (probes included) in one forward pass."""
    length = images.shape[-1] // 32 * (images.shape[-1] // 32) + 1 + model.prompt_learner.n_ctx
    count = 0
    original = Attention.qkv

    def qkv(attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nonlocal count
        count += int(x.shape[1] == length and x.shape[2] == model.clip.vision_width)
        return original(attn, x)

    Attention.qkv = qkv
    try:
        with torch.no_grad():
            model(images)
    finally:
        Attention.qkv = original
    return count


@pytest.mark.parametrize("name", ["bmip_released", "bmip_paper"])
def test_gate_probe_projections_are_reused_exactly(name):
    model = _model(name)
    images = _images(3, 4)
    reused = _logits_and_grads(model, images)
    reused_projections = _count_full_projections(model, images)
    model.reuse_probe_projections = False
    fresh = _logits_and_grads(model, images)
    fresh_projections = _count_full_projections(model, images)
    _assert_close(reused, fresh)
    probed_blocks = len(model.prompt_learner.vision_blocks)
    vision_blocks = model.clip.vision_layers
    # Unfused, the probe projects each gated block's input once more; reused, only the slot rows are.
    assert fresh_projections == vision_blocks + probed_blocks
    assert reused_projections == vision_blocks


def test_block_accepts_spliced_projection_exactly():
    block = clip.ResidualAttentionBlock(64, 4).double()
    x = torch.randn(3, 10, 64, dtype=torch.float64)
    y = x.clone()
    y[:, 7:] = torch.randn(3, 3, 64, dtype=torch.float64)
    spliced = block.project_rows(block.project(x), y, 7, 10)
    assert (block(y, spliced) - block(y)).abs().max() < TOL
    with block.memoize_projection() as memo:
        block.attention_probs(x, slice(0, 7))
        block.attention_probs(x, slice(0, 1))
        assert list(memo) == [id(x)]
    block.attention_probs(y)
    assert list(memo) == [id(x)]  # outside the scope nothing is memoised


def test_fused_prefix_probe_and_block_pass_are_exact():
    block = clip.ResidualAttentionBlock(64, 4).double()
    x = torch.randn(3, 10, 64, dtype=torch.float64)
    y = x.clone()
    y[:, 7:] = torch.randn(3, 3, 64, dtype=torch.float64)
    expected = block.attention_probs(x, slice(0, 7))[:, :, 7:]
    with torch.no_grad(), block.memoize_projection() as memo:
        probs = block.attention_to_suffix(x, 7)
        probed = memo[id(x)]
    assert probed.prefix is not None and probed.prefix.stop == 7
    assert probs.shape == (3, 7, 3) and (probs - expected).abs().max() < TOL
    prefixed = clip.PrefixedProjection(probed.prefix, block.project(y[:, 7:]))
    with torch.no_grad():
        assert (block(y, prefixed) - block(y)).abs().max() < TOL
    with pytest.raises(ValueError, match="only valid for non-causal"):
        block.attn(y, True, prefixed)
    with pytest.raises(RuntimeError, match="already consumed by a block pass"):
        block(y, prefixed)  # the first pass wrote its output into the prefix's buffer


def test_probe_needing_gradients_keeps_explicit_scores():
    block = clip.ResidualAttentionBlock(64, 4).double()
    x = torch.randn(2, 9, 64, dtype=torch.float64, requires_grad=True)
    with block.memoize_projection() as memo:
        probs = block.attention_to_suffix(x, 6)
        assert memo[id(x)].prefix is None  # the fused kernel's log-sum-exp has no gradient
    probs.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="0 < start < L"):
        block.attention_to_suffix(x, 9)


def test_detached_probe_in_training_fuses_the_prefix_and_keeps_every_gradient():
    # With gradients, a probe whose result is detached still fuses the prefix; the block's pass then
    # merges inside an autograd function whose backward is the whole attention's flash backward.
    block = clip.ResidualAttentionBlock(64, 4).double()
    x = torch.randn(3, 10, 64, dtype=torch.float64, requires_grad=True)
    new_rows = torch.randn(3, 3, 64, dtype=torch.float64, requires_grad=True)
    expected = block.attention_probs(x, slice(0, 7))[:, :, 7:]
    with block.memoize_projection() as memo:
        probs = block.attention_to_suffix(x, 7, differentiable=False)
        probed = memo[id(x)]
    assert probed.prefix is not None and not probs.requires_grad
    assert (probs - expected.detach()).abs().max() < TOL
    y = torch.cat([x[:, :7], new_rows], dim=1)
    prefixed = clip.PrefixedProjection(probed.prefix, block.project(y[:, 7:]))
    weights = torch.randn(3, 10, 64, dtype=torch.float64)
    fused = block(y, prefixed)
    fused_grads = torch.autograd.grad((fused * weights).sum(), [x, new_rows, *block.parameters()], allow_unused=True)
    plain = block(y)
    plain_grads = torch.autograd.grad((plain * weights).sum(), [x, new_rows, *block.parameters()], allow_unused=True)
    assert (fused - plain).abs().max() < TOL
    for a, b in zip(fused_grads, plain_grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert (a - b).abs().max() < TOL * max(1.0, b.abs().max().item())
    assert fused_grads[0].abs().sum() > 0 and fused_grads[1].abs().sum() > 0


def _count_fused_prefixes(monkeypatch) -> list[bool]:
    fused: list[bool] = []
    original = clip.probes.fused_prefix

    def counting(*args):
        result = original(*args)
        fused.append(result is not None)
        return result

    monkeypatch.setattr(clip.probes, "fused_prefix", counting)
    return fused


@pytest.mark.parametrize("name", ["bmip_released", "bmip_paper"])
def test_gate_probe_in_training_fuses_the_prefix_with_exact_gradients(name, monkeypatch):
    model = _model(name)
    images = _images(3, 6)
    fused = _count_fused_prefixes(monkeypatch)
    fast = _logits_and_grads(model, images)
    assert fused == [True] * len(model.prompt_learner.vision_blocks)
    model.reuse_probe_projections = False
    _assert_close(fast, _logits_and_grads(model, images))
    assert len(fused) == len(model.prompt_learner.vision_blocks)  # without reuse nothing is fused


def test_probe_whose_gradient_is_wanted_keeps_explicit_scores_in_training(monkeypatch):
    backbone = clip.build_clip("random:tiny", seed=0)
    torch.manual_seed(0)
    learner = BMIPPrompts(backbone, resolve_bmip_options("paper", detach_attn=False))
    model = PromptedCLIP(backbone, learner, CLASSES).double()
    images = _images(2, 7)
    fused = _count_fused_prefixes(monkeypatch)
    reused = _logits_and_grads(model, images)
    assert fused == []  # the probe's own gradient needs explicit scores
    model.reuse_probe_projections = False
    _assert_close(reused, _logits_and_grads(model, images))


@pytest.mark.parametrize("name", ["bmip_released", "bmip_paper"])
def test_gate_probe_in_evaluation_extends_the_fused_prefix_exactly(name, monkeypatch):
    model = _model(name).eval()
    images = _images(3, 5)
    fused = _count_fused_prefixes(monkeypatch)
    with torch.no_grad():
        fast = model(images)
        model.reuse_probe_projections = False
        reference = model(images)
    assert fused == [True] * len(model.prompt_learner.vision_blocks)
    assert (fast - reference).abs().max() < TOL
