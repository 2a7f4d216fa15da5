"""CLIP towers: prompt hooks, appended vision prompts, attention probabilities, trimming, precision."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

import clip
from clip.factory import _TEXT_DEFAULTS, ARCHS
from clip.model import CLIP


@pytest.fixture(scope="module")
def tiny() -> CLIP:
    return clip.build_clip("random:tiny", seed=0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def token_ids() -> torch.Tensor:
    return clip.tokenize(["a photo of a cat.", "a rather long description of an aeroplane in the sky"])


class Recorder:
    """Hook that optionally replaces tokens at chosen blocks and records what every block receives."""

    def __init__(self, replace: dict[int, tuple[slice, torch.Tensor]] | None = None) -> None:
        self.replace = replace or {}
        self.seen: list[torch.Tensor] = []

    def __call__(self, index: int, x: torch.Tensor, block: clip.ResidualAttentionBlock) -> torch.Tensor | None:
        out = None
        if index in self.replace:
            positions, tokens = self.replace[index]
            out = x.clone()
            out[:, positions] = tokens.to(x.dtype)
        self.seen.append((x if out is None else out).detach().clone())
        return out


def test_tiny_shapes_and_contract(tiny: CLIP, images: torch.Tensor, token_ids: torch.Tensor) -> None:
    assert not tiny.training and tiny.dtype == torch.float32
    assert (tiny.vision_layers, tiny.text_layers) == (12, 12)
    assert tiny.visual.input_resolution == 224 and tiny.context_length == 77 and tiny.vocab_size == 49408
    assert all(p.requires_grad for p in tiny.parameters())
    with torch.no_grad():
        assert tiny.encode_image(images).shape == (2, tiny.embed_dim)
        assert tiny.encode_text(token_ids).shape == (2, tiny.embed_dim)
        logits_per_image, logits_per_text = tiny(images, token_ids)
    assert torch.equal(logits_per_image, logits_per_text.t())


def test_random_weights_are_seeded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    state = torch.random.get_rng_state()
    with caplog.at_level(logging.INFO, logger="clip.factory"):
        a = clip.build_clip("random:tiny", seed=5)
    assert torch.equal(state, torch.random.get_rng_state()), "building must not disturb the global RNG"
    assert "RANDOM" in caplog.text
    b = clip.build_clip("random:tiny", seed=5)
    c = clip.build_clip("random:tiny", seed=6)
    assert torch.equal(a.text_projection, b.text_projection)
    assert not torch.equal(a.text_projection, c.text_projection)
    with pytest.raises(ValueError, match="ViT-H/14"):
        clip.build_clip("random:ViT-H/14")


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_round_trips_through_shape_inference(arch: str) -> None:
    with torch.device("meta"):
        reference = CLIP(**ARCHS[arch], **_TEXT_DEFAULTS)
    rebuilt = clip.build_model(reference.state_dict())
    ref_shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == ref_shapes
    assert rebuilt.image_resolution == reference.image_resolution
    assert rebuilt.vision_layers == reference.vision_layers and rebuilt.text_layers == reference.text_layers
    heads = [b.attn.n_head for b in rebuilt.transformer.resblocks]
    assert heads == [b.attn.n_head for b in reference.transformer.resblocks]


def test_text_hook_replaces_slots_and_respects_causality(tiny: CLIP, token_ids: torch.Tensor) -> None:
    base, hooked = Recorder(), Recorder({1: (slice(1, 3), torch.full((2, tiny.text_width), 0.5))})
    with torch.no_grad():
        plain = tiny.encode_text(token_ids, hook=base)
        changed = tiny.encode_text(token_ids, hook=hooked)
    assert len(base.seen) == len(hooked.seen) == tiny.text_layers
    assert torch.equal(base.seen[0], hooked.seen[0])
    assert torch.all(hooked.seen[1][:, 1:3] == 0.5)
    assert torch.equal(base.seen[1][:, 3:], hooked.seen[1][:, 3:])
    assert torch.equal(base.seen[1][:, 0], hooked.seen[1][:, 0])
    for before, after in zip(base.seen[2:], hooked.seen[2:]):
        assert torch.allclose(before[:, 0], after[:, 0], atol=1e-6), "SOT cannot attend to later tokens"
        assert (before[:, 1:] - after[:, 1:]).abs().amax(dim=-1).min() > 0, "every later position changes"
    assert not torch.allclose(plain, changed)
    assert torch.allclose(plain, tiny.encode_text(token_ids))


def test_vision_prompts_are_appended_and_replaceable(tiny: CLIP, images: torch.Tensor) -> None:
    n, width = 3, tiny.vision_width
    prompts = torch.randn(n, width)
    base = Recorder()
    hooked = Recorder({4: (slice(-n, None), torch.zeros(n, width))})
    with torch.no_grad():
        tiny.encode_image(images, prompts=prompts, hook=base)
        tiny.encode_image(images, prompts=prompts, hook=hooked)
        per_image = tiny.encode_image(images, prompts=prompts.expand(2, n, width))
        shared = tiny.encode_image(images, prompts=prompts)
        no_prompts = tiny.encode_image(images)
    assert base.seen[0].shape == (2, 1 + 49 + n, width)
    expected = tiny.visual.ln_pre(torch.cat([torch.zeros(2, 50, width), prompts.expand(2, n, width)], 1))
    assert torch.allclose(base.seen[0][:, -n:], expected[:, -n:], atol=1e-6), "no positional embedding on prompts"
    for index in range(4):
        assert torch.equal(base.seen[index], hooked.seen[index])
    assert torch.equal(base.seen[4][:, :-n], hooked.seen[4][:, :-n])
    assert torch.all(hooked.seen[4][:, -n:] == 0)
    for before, after in zip(base.seen[5:], hooked.seen[5:]):
        assert (before - after).abs().amax(dim=-1).min() > 0, "without a mask every token sees the prompts"
    assert torch.allclose(per_image, shared) and not torch.allclose(shared, no_prompts)
    with pytest.raises(ValueError, match=r"\(n, 192\)"):
        tiny.encode_image(images, prompts=torch.randn(n, width + 1))


def _reference_probs(block: clip.ResidualAttentionBlock, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """Head-averaged weights from PyTorch's own multi-head attention (sequence-first layout)."""
    length = x.shape[1]
    mask = torch.full((length, length), float("-inf")).triu(1) if causal else None
    h = block.ln_1(x).transpose(0, 1)
    _, weights = F.multi_head_attention_forward(
        h, h, h, x.shape[-1], block.attn.n_head, block.attn.in_proj_weight, block.attn.in_proj_bias,
        None, None, False, 0.0, block.attn.out_proj.weight, block.attn.out_proj.bias,
        training=False, need_weights=True, attn_mask=mask, average_attn_weights=True,
    )
    return weights


def test_attention_probs_text_side(tiny: CLIP, token_ids: torch.Tensor) -> None:
    block = tiny.transformer.resblocks[3]
    x = torch.randn(2, 20, tiny.text_width)
    with torch.no_grad():
        probs = block.attention_probs(x)
        assert probs.shape == (2, 20, 20)
        assert torch.allclose(probs.sum(-1), torch.ones(2, 20), atol=1e-6)
        assert torch.all(probs.triu(1) == 0) and torch.all(probs.diagonal(dim1=1, dim2=2) > 0)
        assert torch.allclose(probs, _reference_probs(block, x, causal=True), atol=1e-6)
        rows = torch.tensor([0, 7, 19])
        assert torch.allclose(block.attention_probs(x, rows), probs[:, rows], atol=1e-7)
        assert torch.allclose(block.attention_probs(x, [0, 7, 19]), probs[:, rows], atol=1e-7)
        assert torch.allclose(block.attention_probs(x, slice(5, 9)), probs[:, 5:9], atol=1e-7)


def test_attention_probs_vision_side(tiny: CLIP) -> None:
    block = tiny.visual.transformer.resblocks[0]
    x = torch.randn(2, 53, tiny.vision_width)
    with torch.no_grad():
        probs = block.attention_probs(x, query_rows=slice(-3, None))
        full = block.attention_probs(x)
    assert probs.shape == (2, 3, 53)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 3), atol=1e-6)
    assert probs[:, :, 1:].gt(0).all(), "vision attention is unmasked"
    assert torch.allclose(full, _reference_probs(block, x, causal=False), atol=1e-6)


def test_attention_probs_from_a_hook_match_block_input(tiny: CLIP, images: torch.Tensor) -> None:
    captured: list[torch.Tensor] = []

    def probe(index: int, x: torch.Tensor, block: clip.ResidualAttentionBlock) -> None:
        if index == 2:
            captured.append(block.attention_probs(x, query_rows=slice(0, 1)))

    with torch.no_grad():
        tiny.encode_image(images, hook=probe)
    assert len(captured) == 1 and captured[0].shape == (2, 1, 50)


def test_trimming_is_exact_in_fp64(token_ids: torch.Tensor) -> None:
    model = clip.build_clip("random:tiny", seed=2).double()
    lengths: list[int] = []

    def length_hook(index: int, x: torch.Tensor, block: clip.ResidualAttentionBlock) -> None:
        lengths.append(x.shape[1])

    with torch.no_grad():
        embedded = model.token_embedding(token_ids)
        eot = token_ids.argmax(-1)
        trimmed = model.encode_text_embeddings(embedded, eot, hook=length_hook, trim=True)
        full = model.encode_text_embeddings(embedded, eot, trim=False)
        plain = model.encode_text(token_ids)
    assert set(lengths) == {int(eot.max()) + 1} and int(eot.max()) + 1 < 77
    assert (trimmed - full).abs().max() < 1e-12
    assert torch.equal(trimmed, plain)


def test_text_embeddings_validate_input(tiny: CLIP) -> None:
    with pytest.raises(ValueError, match="text embeddings"):
        tiny.encode_text_embeddings(torch.zeros(2, 77, tiny.text_width + 1), torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="eot_indices"):
        tiny.encode_text_embeddings(torch.zeros(2, 77, tiny.text_width), torch.tensor([3]))


def test_text_embeddings_carry_gradients_to_prompts(tiny: CLIP, token_ids: torch.Tensor) -> None:
    ctx = torch.zeros(2, tiny.text_width, requires_grad=True)
    embedded = tiny.token_embedding(token_ids).detach()
    x = torch.cat([embedded[:, :1], ctx.expand(2, -1, -1), embedded[:, 3:]], dim=1)
    tiny.encode_text_embeddings(x, token_ids.argmax(-1)).sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0


def test_precision(images: torch.Tensor, token_ids: torch.Tensor) -> None:
    model = clip.build_clip("random:tiny", seed=0)
    images, token_ids = images[:1], token_ids[:1]
    with torch.no_grad():
        reference = model.encode_image(images)
        clip.to_precision(model, "fp16")
        assert model.dtype == torch.float16
        assert model.ln_final.weight.dtype == torch.float32 and model.logit_scale.dtype == torch.float32
        assert model.text_projection.dtype == torch.float16
        assert model.visual.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float16
        half = model.encode_image(images)
        assert half.dtype == torch.float16 and model.encode_text(token_ids).dtype == torch.float16
        assert torch.allclose(half.float(), reference, atol=2e-2)
        clip.to_precision(model, "amp")
        assert all(p.dtype == torch.float32 for p in model.parameters())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model.encode_image(images)
        assert autocast.dtype == torch.bfloat16
        assert torch.allclose(autocast.float(), reference, atol=1e-1)
    with pytest.raises(ValueError, match="bf16"):
        clip.to_precision(model, "bf16")


def test_openai_import_path() -> None:
    from clip import clip as openai_style

    assert openai_style.build_model is clip.build_model and openai_style._download is clip._download
    assert openai_style.tokenize("a cat").shape == (1, 77)


def test_resnet_refuses_prompts() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        rn = CLIP(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=8,
                  vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
                  transformer_heads=1, transformer_layers=1).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert rn.encode_image(images).shape == (1, 32)
    assert rn.vision_layers == 0 and rn.vision_stage_layers == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="ModifiedResNet"):
        rn.encode_image(images, prompts=torch.zeros(2, 8))


def test_clip_model_keeps_every_public_name_of_before_the_split():
    """clip/model.py was split into blocks, probes, prefix attention and towers; code written against
    ``clip.model`` (OpenAI's ``convert_weights``, Dassl clients, other branches) keeps importing from it."""
    import clip.model

    names = ["CLIP", "PRECISIONS", "Attention", "AttentionPool2d", "BlockInput", "Bottleneck", "Hook",
             "LayerNorm", "ModifiedResNet", "PrefixAttention", "PrefixedProjection", "Probed", "Projection",
             "QueryRows", "QuickGELU", "ResidualAttentionBlock", "Transformer", "VisionTransformer",
             "at_least_fp32", "convert_weights", "to_precision"]  # fmt: skip
    missing = [n for n in names if not hasattr(clip.model, n)]
    assert not missing
    assert clip.model.ResidualAttentionBlock.attention_probs is clip.probes.AttentionProbes.attention_probs
