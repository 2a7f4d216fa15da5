"""CoOp and CoCoOp specifics: context shapes and init, class-token positions, meta-net conditioning,
frozen CLIP after a step, checkpoints of trainable tensors only, official parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import clip
from trainers.cocoop import CoCoOpCLIP, CoCoOpPromptLearner
from trainers.coop import CoOpCLIP, CoOpPromptLearner, class_token_order, context_length_from_init

CLASSNAMES = ["cat", "golden_retriever", "sea anemone hermit crab"]  # names of 1, 2 and >2 tokens


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return clip.build_clip("random:tiny")


def coop(tiny, n_ctx=4, ctx_init="", csc=False, position="end", classnames=CLASSNAMES) -> CoOpCLIP:
    torch.manual_seed(0)
    learner = CoOpPromptLearner(tiny, len(classnames), n_ctx, ctx_init, csc)
    return CoOpCLIP(tiny, learner, classnames, position)


def name_embeddings(tiny, name: str) -> torch.Tensor:
    ids = clip.tokenize([name.replace("_", " ")])
    n = int(ids.argmax(-1)) - 1
    return tiny.token_embedding(ids)[0, 1 : 1 + n].detach()


def test_context_length_follows_init_words():
    assert context_length_from_init("a photo of a", 16) == 4
    assert context_length_from_init("a_photo", 16) == 2
    assert context_length_from_init("", 16) == 16


def test_unified_and_class_specific_context_shapes(tiny):
    width = tiny.text_width
    assert coop(tiny, n_ctx=16).prompt_learner.ctx.shape == (16, width)
    csc = coop(tiny, n_ctx=8, csc=True).prompt_learner
    assert csc.ctx.shape == (len(CLASSNAMES), 8, width)
    assert csc.prompt_prefix == "X X X X X X X X"
    assert 0.015 < csc.ctx.std().item() < 0.025  # N(0, 0.02^2)
    # Official behaviour: a word init always gives a unified context, n_ctx = number of words.
    learner = coop(tiny, n_ctx=16, ctx_init="a photo of a", csc=True).prompt_learner
    assert learner.ctx.shape == (4, width) and learner.n_ctx == 4
    assert learner.prompt_prefix == "a photo of a"
    torch.testing.assert_close(learner.ctx.detach(), name_embeddings(tiny, "a photo of a"))


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("csc", [False, True])
def test_class_token_positions(tiny, position, csc):
    model = coop(tiny, n_ctx=4, csc=csc, position=position)
    ctx = model.prompt_learner.ctx.detach()
    prompts = model.class_prompts(model.prompt_learner.ctx).detach()
    assert prompts.shape == (len(CLASSNAMES), 77, tiny.text_width)
    period = name_embeddings(tiny, ".")[0]
    for c, name in enumerate(CLASSNAMES):
        ctx_c = ctx[c] if csc else ctx
        name_emb = name_embeddings(tiny, name)
        n_name = name_emb.shape[0]
        expected = {
            "end": [ctx_c, name_emb],
            "middle": [ctx_c[:2], name_emb, ctx_c[2:]],
            "front": [name_emb, ctx_c],
        }[position]
        torch.testing.assert_close(prompts[c, 1 : 1 + 4 + n_name], torch.cat(expected))
        torch.testing.assert_close(prompts[c, 1 + 4 + n_name], period)
        assert int(model.eot_indices[c]) == 1 + 4 + n_name + 1


def test_class_token_order_rejects_unknown_position():
    with pytest.raises(ValueError, match="CLASS_TOKEN_POSITION"):
        class_token_order("start", 4, [1], 77)


def test_word_initialised_coop_equals_zero_shot_prompt(tiny):
    """Before training, CoOp with CTX_INIT "a photo of a" is CLIP on "a photo of a {class}."."""
    model = coop(tiny, ctx_init="a photo of a").eval()
    with torch.no_grad():
        text = model.encode_class_prompts(model.prompt_learner.ctx)
        reference = tiny.encode_text(
            clip.tokenize([f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES])
        )
    torch.testing.assert_close(text, F.normalize(reference, dim=-1), atol=1e-5, rtol=1e-5)


def test_csc_context_refuses_other_label_space(tiny):
    model = coop(tiny, n_ctx=4, csc=True)
    with pytest.raises(ValueError, match="CSC"):
        model.set_classnames(["cat", "dog"])
    other = coop(tiny, n_ctx=4, csc=True, classnames=["cat", "dog"])
    with pytest.raises(ValueError, match="label space"):
        other.load_state_dict(model.trainable_state_dict())


def cocoop(tiny, classnames=CLASSNAMES) -> CoCoOpCLIP:
    torch.manual_seed(0)
    return CoCoOpCLIP(tiny, CoCoOpPromptLearner(tiny, 16, "a photo of a"), classnames)


def test_cocoop_meta_net_shapes_and_per_image_bias(tiny):
    learner = cocoop(tiny).prompt_learner
    e, w = tiny.embed_dim, tiny.text_width
    assert learner.ctx.shape == (4, w)
    assert learner.meta_net.linear1.weight.shape == (e // 16, e)
    assert learner.meta_net.linear2.weight.shape == (w, e // 16)
    features = F.normalize(torch.randn(3, e), dim=-1)
    contexts = learner(features)
    assert contexts.shape == (3, 4, w)
    bias = contexts - learner.ctx.unsqueeze(0)
    # the same bias on every context token, different per image
    torch.testing.assert_close(bias, bias[:, :1].expand_as(bias))
    assert not torch.allclose(bias[0], bias[1])
    torch.testing.assert_close(bias[:, 0], learner.meta_net(features))


def test_cocoop_logits_are_conditioned_per_image(tiny):
    model = cocoop(tiny).eval()
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = model(images)
        assert logits.shape == (2, len(CLASSNAMES))
        # each row depends only on its own image (no batch coupling)
        torch.testing.assert_close(logits[1:], model(images[1:]), atol=1e-4, rtol=1e-4)
        # with the meta-net's output forced to zero CoCoOp is CoOp with the same context
        model.prompt_learner.meta_net.linear2.weight.zero_()
        model.prompt_learner.meta_net.linear2.bias.zero_()
        plain = coop(tiny, ctx_init="a photo of a").eval()
        plain.prompt_learner.ctx.copy_(model.prompt_learner.ctx)
        torch.testing.assert_close(model(images), plain(images), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("build", ["coop_csc_front", "cocoop"])
def test_training_step_updates_prompts_only(tiny, build):
    model = coop(tiny, n_ctx=4, csc=True, position="front") if build == "coop_csc_front" else cocoop(tiny)
    frozen = {k: v.clone() for k, v in model.clip.state_dict().items()}
    learned = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    optim = torch.optim.SGD(model.prompt_learner.parameters(), lr=1.0)
    model.train()
    assert not model.clip.training  # the frozen CLIP stays in eval mode
    loss = F.cross_entropy(model(torch.randn(2, 3, 224, 224)), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is None for p in model.clip.parameters())
    optim.step()
    for k, v in model.clip.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    changed = [k for k, v in model.trainable_state_dict().items() if not torch.equal(v, learned[k])]
    assert sorted(changed) == sorted(learned)  # every trainable tensor received a gradient


def test_checkpoint_holds_trainable_tensors_and_loads_for_new_classes(tiny):
    base = cocoop(tiny)
    state = base.trainable_state_dict()
    assert sorted(state) == sorted(
        ["prompt_learner.ctx"]
        + [f"prompt_learner.meta_net.linear{i}.{p}" for i in (1, 2) for p in ("weight", "bias")]
    )
    new = cocoop(tiny, classnames=["dog", "sea_urchin"])
    new.load_state_dict(state)
    torch.testing.assert_close(new.prompt_learner.ctx, base.prompt_learner.ctx)
    assert new.token_prefix.shape[0] == 2 and new.token_order.shape[0] == 2
    assert "token_prefix" not in new.state_dict()


def test_official_parameter_counts_vit_b16():
    """methods_spec: CoOp 8,192 (16 ctx) / 2,048 ("a photo of a"); CoCoOp 35,360."""
    model = clip.build_clip("random:ViT-B/16")
    names = ["cat", "dog"]
    assert CoOpCLIP(model, CoOpPromptLearner(model, 2, 16, "", False), names).count_trainable() == 8192
    assert (
        CoOpCLIP(model, CoOpPromptLearner(model, 2, 16, "a photo of a", False), names).count_trainable()
        == 2048
    )
    assert CoCoOpCLIP(model, CoCoOpPromptLearner(model, 4, "a photo of a"), names).count_trainable() == 35360
