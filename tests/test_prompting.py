"""Shared prompt blocks: class prompts, prompt placement per block, parameter counts, frozen CLIP, checkpoints."""

from __future__ import annotations

import pytest
import torch

import clip
from prompting.bmip import BMIPPrompts, resolve_bmip_options
from prompting.deep import deep_blocks
from prompting.learners import CoupledPrompts, IndependentPrompts
from prompting.model import PromptedCLIP, distinct_parameters
from prompting.text import assemble_prompts, init_context, tokenize_class_prompts

CLASSES = ["zero", "one", "two"]


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return clip.build_clip("random:tiny")


@pytest.fixture(scope="module")
def vit_b16_meta() -> torch.nn.Module:
    """Real ViT-B/16 modules on the meta device: exact shapes, no memory, built in milliseconds."""
    with torch.device("meta"):
        return clip.build_clip("random:ViT-B/16")


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


# ---- class prompts ---------------------------------------------------------------------------------------
def test_word_init_keeps_whole_phrase_and_splits_buffers_exactly(tiny):
    ctx, prefix = init_context(tiny, 2, "a photo of a")
    assert prefix == "a photo of a"
    words = tiny.token_embedding(clip.tokenize(["a photo of a"]))[0, 1:3]
    assert torch.equal(ctx, words)
    prompts = tokenize_class_prompts(tiny, ["big_dog", "cat"], prefix, n_slots=2)
    assert prompts.prefix.shape == (2, 1, tiny.text_width)
    assert prompts.suffix.shape == (2, 77 - 3, tiny.text_width)
    full = tiny.token_embedding(clip.tokenize(["a photo of a big dog.", "a photo of a cat."]))
    assert torch.equal(assemble_prompts(prompts.prefix, ctx, prompts.suffix), full)
    assert prompts.eot_indices.tolist() == clip.tokenize(["a photo of a big dog.", "a photo of a cat."]).argmax(-1).tolist()


def test_random_init_uses_placeholder_prefix(tiny):
    ctx, prefix = init_context(tiny, 6, "a photo of a")  # more tokens than the phrase has -> random
    assert prefix == "X X X X X X" and ctx.shape == (6, tiny.text_width)
    assert 0.01 < ctx.std().item() < 0.03
    _, joint_prefix = init_context(tiny, 3, "", prefix_tokens=6)
    assert joint_prefix == "X X X X X X"


def test_class_prompt_errors_name_the_problem(tiny):
    with pytest.raises(ValueError, match="at least one class"):
        tokenize_class_prompts(tiny, [], "a photo", 2)
    with pytest.raises(ValueError, match=">= 1"):
        init_context(tiny, 0, "a photo of a")
    with pytest.raises(ValueError, match=r"prompt depth must be in \[0, 12\]"):
        deep_blocks(13, 12)


# ---- placement per block --------------------------------------------------------------------------------
def _record_block_inputs(tower: torch.nn.Module) -> tuple[list, list]:
    """Input of every block and output of every block of a tower, filled during a forward pass."""
    inputs, outputs = [], []
    for block in tower.resblocks:
        block.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach().clone()))
        block.register_forward_hook(lambda mod, args, out: outputs.append(out.detach().clone()))
    return inputs, outputs


def _changed_positions(model: PromptedCLIP, images: torch.Tensor) -> tuple[dict, dict]:
    """Per tower and block index: sequence positions whose tokens were replaced before the block ran."""
    towers = {"text": model.clip.transformer, "vision": model.clip.visual.transformer}
    handles = {name: _record_block_inputs(t) for name, t in towers.items()}
    with torch.no_grad():
        model.train()
        model(images)
    result = {}
    for name, (inputs, outputs) in handles.items():
        changed = {}
        for k in range(1, len(inputs)):
            diff = (inputs[k] != outputs[k - 1]).any(dim=-1).any(dim=0)
            if diff.any():
                changed[k] = diff.nonzero().flatten().tolist()
        result[name] = changed
    for tower in towers.values():
        for block in tower.resblocks:
            block._forward_pre_hooks.clear()
            block._forward_hooks.clear()
    return result["text"], result["vision"]


def test_ivlp_prompts_replace_text_positions_and_last_vision_tokens(tiny):
    learner = IndependentPrompts(tiny, n_ctx_text=2, depth_text=9, n_ctx_vision=3, depth_vision=12)
    model = PromptedCLIP(tiny, learner, CLASSES)
    text, vision = _changed_positions(model, _images())
    assert text == {k: [1, 2] for k in range(1, 9)}
    n_tokens = (224 // 32) ** 2 + 1 + 3
    assert vision == {k: [n_tokens - 3, n_tokens - 2, n_tokens - 1] for k in range(1, 12)}


def test_language_only_and_vpt_leave_the_other_tower_alone(tiny):
    lang = PromptedCLIP(tiny, IndependentPrompts(tiny, n_ctx_text=4, depth_text=12, n_ctx_vision=0, depth_vision=0), CLASSES)
    text, vision = _changed_positions(lang, _images())
    assert text == {k: [1, 2, 3, 4] for k in range(1, 12)} and vision == {}
    vpt = PromptedCLIP(tiny, IndependentPrompts(tiny, n_ctx_text=0, depth_text=0, n_ctx_vision=8, depth_vision=1), CLASSES)
    text, vision = _changed_positions(vpt, _images())
    assert text == {} and vision == {}  # depth 1 = input prompts only
    assert torch.equal(vpt.token_ids, clip.tokenize([f"a photo of a {c}." for c in CLASSES]))


def test_maple_vision_prompts_are_projections_of_the_text_prompts(tiny):
    learner = CoupledPrompts(tiny, n_ctx=2, depth=9)
    model = PromptedCLIP(tiny, learner, CLASSES)
    text, vision = _changed_positions(model, _images())
    assert sorted(text) == sorted(vision) == list(range(1, 9))
    plan = learner()
    for block, layer in plan.vision_layers.items():
        head = learner.compound_prompt_projections[block - 1]
        assert torch.equal(layer.tokens, head(learner.compound_prompts_text[block - 1]))
    assert torch.equal(plan.vision_input, learner.proj(learner.ctx))
    heads = learner.compound_prompt_projections
    assert all(torch.equal(h.weight, heads[0].weight) for h in heads)  # clones of one init, as released


# ---- parameter counts (random:ViT-B/16) ------------------------------------------------------------------
def _count(module: torch.nn.Module) -> int:
    """Parameters of distinct storage (an aliased prompt's views count once)."""
    return sum(p.numel() for p in distinct_parameters(module.parameters()))


@pytest.mark.parametrize(
    ("name", "build", "expected"),
    [
        ("MaPLe n2 J9", lambda m: CoupledPrompts(m, n_ctx=2, depth=9), 3_555_072),
        ("MaPLe n8 J9", lambda m: CoupledPrompts(m, n_ctx=8, depth=9), 3_582_720),
        ("MaPLe-dagger h581", lambda m: CoupledPrompts(m, n_ctx=2, depth=9, coupling_hidden=581), 6_714_477),
        ("VPT 8 tokens depth 12", lambda m: IndependentPrompts(m, n_ctx_text=0, depth_text=0, n_ctx_vision=8, depth_vision=12), 73_728),
        ("IVLP 2+2 depth 12", lambda m: IndependentPrompts(m, n_ctx_text=2, depth_text=12, n_ctx_vision=2, depth_vision=12), 30_720),
        ("language-only 4 depth 12", lambda m: IndependentPrompts(m, n_ctx_text=4, depth_text=12, n_ctx_vision=0, depth_vision=0), 24_576),
        ("IVLP 4+4 depth 9", lambda m: IndependentPrompts(m, n_ctx_text=4, depth_text=9, n_ctx_vision=4, depth_vision=9), 46_080),
        # released on a GPU: 8 per-block copies of the shared vision prompt (docs/BMIP.md)
        ("BMIP released (shared)", lambda m: BMIPPrompts(m, resolve_bmip_options("released")), 1_203_230),
        (
            "BMIP released, tied shared prompt",
            lambda m: BMIPPrompts(m, resolve_bmip_options("released", shared_vision_prompt="tied")),
            1_192_478,
        ),
        (
            "BMIP released, aliased shared prompt (aliases count once)",
            lambda m: BMIPPrompts(m, resolve_bmip_options("released", shared_vision_prompt="aliased")),
            1_192_478,
        ),
        (
            "BMIP per-layer, released depths",
            lambda m: BMIPPrompts(m, resolve_bmip_options("released", share_visual=False, share_text=False)),
            6_323_486,
        ),
        (
            "BMIP per-layer, equal depths",
            lambda m: BMIPPrompts(
                m, resolve_bmip_options("released", share_visual=False, share_text=False, text_depth_offset=0)
            ),
            6_717_216,
        ),
    ],
)
def test_parameter_counts_vit_b16(vit_b16_meta, name, build, expected):
    assert _count(build(vit_b16_meta)) == expected, name


# ---- training state -------------------------------------------------------------------------------------
def test_train_step_updates_prompts_only_and_every_trainable_tensor_is_used(tiny):
    model = PromptedCLIP(tiny, CoupledPrompts(tiny, n_ctx=2, depth=9), CLASSES)
    frozen = {k: v.clone() for k, v in model.clip.state_dict().items()}
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    optim = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.1)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(_images()), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert all(p.grad is not None for p in model.prompt_learner.parameters())
    optim.step()
    assert all(torch.equal(v, model.clip.state_dict()[k]) for k, v in frozen.items())
    after = model.trainable_state_dict()
    assert set(after) == set(before) and all(k.startswith("prompt_learner.") for k in after)
    assert all(not torch.equal(before[k], after[k]) for k in after)
    assert model.count_trainable() == sum(v.numel() for v in after.values())


def test_checkpoint_for_another_label_space(tiny):
    learner = IndependentPrompts(tiny, n_ctx_text=2, depth_text=9, n_ctx_vision=2, depth_vision=9)
    base = PromptedCLIP(tiny, learner, ["zero", "one"])
    with torch.no_grad():
        for p in base.prompt_learner.parameters():
            p.add_(0.1)
    saved = base.trainable_state_dict()
    assert not any("token_" in k or k.startswith("clip.") for k in saved)
    other = PromptedCLIP(tiny, IndependentPrompts(tiny, n_ctx_text=2, depth_text=9, n_ctx_vision=2, depth_vision=9), CLASSES)
    other.load_state_dict(saved)
    assert all(torch.equal(v, other.trainable_state_dict()[k]) for k, v in saved.items())
    assert other.token_prefix.shape[0] == 3
    other.eval()
    with torch.no_grad():
        assert other(_images()).shape == (2, 3)
    with pytest.raises(RuntimeError, match="missing"):
        PromptedCLIP(tiny, CoupledPrompts(tiny, n_ctx=2, depth=9), CLASSES).load_state_dict(saved)


def test_eval_reuses_text_features_until_training_or_new_classes(tiny, monkeypatch):
    model = PromptedCLIP(tiny, CoupledPrompts(tiny, n_ctx=2, depth=3), CLASSES)
    calls = []
    original = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda plan: calls.append(1) or original(plan))
    model.eval()
    with torch.no_grad():
        first = model(_images(2, 1))
        model(_images(3, 2))
    assert len(calls) == 1
    model.train()
    model(_images(2, 1))
    model(_images(2, 1))
    assert len(calls) == 3  # recomputed at every training step
    model.eval()
    with torch.no_grad():
        again = model(_images(2, 1))
        model.set_classnames(["zero", "one"])
        assert model(_images(2, 1)).shape == (2, 2)
    assert len(calls) == 5
    assert torch.allclose(first, again)


def test_resnet_backbone_is_refused_with_a_clear_message():
    with torch.device("meta"):
        rn50 = clip.build_clip("random:RN50")
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        CoupledPrompts(rn50, n_ctx=2, depth=9)
