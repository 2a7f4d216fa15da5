"""``clip.build_model(state_dict, design_details)``: the MaPLe repository's second argument, its deep
("compound") prompt calling convention on this CLIP, and its IVLP/VPT designs whose prompts live inside
CLIP (clip/compound.py).

MaPLe: the reference below steps through the towers' blocks by hand in OpenAI's (L, N, D) layout, the
way the MaPLe repository's blocks do: from block 1 on, the previous block's prompt tokens are replaced by
the next deeper prompt, cast to fp16 first. (Checked by hand against the repository's own clip on the
same weights: equal to the last bit, fp32 towers from fp16-converted weights.)

IVLP/VPT: the reference is tests/references/clip_math.py (explicit attention, full 77 tokens, float64),
fed the prompts read from the model's state dict under the repository's parameter names and rounded to
fp16 as its blocks join them; their initial values are the repository's construction draws, restated with
tests/test_release_draws.py's helpers. (Checked by hand against the repository's own clip/model.py on the
same fp16-converted random weights, fp32 towers: for a seed, the same parameter names in the same order,
the same initial prompts and generator state after ``build_model``; image features and the trainer file's
text path equal to the last bit; ``encode_text``, which trims here after the last EOT, within 2e-6; VPT gradients within one
fp16 ulp, the gradient reaching the halved prompts being fp16 in both.)
"""

from __future__ import annotations

import pytest
import torch

import clip
from tests.references import clip_math
from tests.test_release_draws import normal, release_block, uniform

MAPLE = {"trainer": "MaPLe", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
         "maple_length": 2}


@pytest.fixture(scope="module")
def model():
    return clip.build_model(clip.build_clip("random:micro").state_dict(), MAPLE).eval()


def by_hand(blocks, x_lnd: torch.Tensor, deeper: list[torch.Tensor], text: bool) -> torch.Tensor:
    """MaPLe's blocks in (L, N, D): before block i >= 1, swap in deeper[i-1] (fp16-rounded)."""
    for index, block in enumerate(blocks):
        if 1 <= index <= len(deeper):
            ctx = deeper[index - 1].half().float().unsqueeze(1).expand(-1, x_lnd.shape[1], -1)
            n = ctx.shape[0]
            x_lnd = torch.cat([x_lnd[:1], ctx, x_lnd[1 + n :]]) if text else torch.cat([x_lnd[:-n], ctx])
        x_lnd = block(x_lnd.permute(1, 0, 2)).permute(1, 0, 2)
    return x_lnd


def test_maple_text_convention_replaces_prompts_after_cls(model):
    torch.manual_seed(0)
    width = model.transformer.width
    deeper = [torch.randn(2, width) for _ in range(2)]
    x = torch.randn(77, 3, width)  # OpenAI's layout, as MaPLe's TextEncoder passes it
    with torch.no_grad():
        out, prompts, counter = model.transformer([x, deeper, 0])
        torch.testing.assert_close(out, by_hand(model.transformer.resblocks, x, deeper, text=True), rtol=0, atol=1e-6)
        assert prompts is deeper and counter == 0
        assert not torch.allclose(out, model.transformer(x))  # the prompts took effect


def test_maple_vision_convention_appends_shared_and_deeper_prompts(model):
    torch.manual_seed(1)
    visual = model.visual
    shared, deeper = torch.randn(2, visual.width), [torch.randn(2, visual.width) for _ in range(2)]
    image = torch.randn(2, 3, visual.input_resolution, visual.input_resolution)
    with torch.no_grad():
        features = visual(image, shared, deeper)
        tokens = visual.embed(image, shared.half().float()).permute(1, 0, 2)
        x = by_hand(visual.transformer.resblocks, tokens, deeper, text=False).permute(1, 0, 2)
        torch.testing.assert_close(features, visual.ln_post(x[:, 0, :]) @ visual.proj, rtol=0, atol=1e-6)


IVLP = {"trainer": "IVLP", "vision_depth": 3, "vision_ctx": 2, "language_depth": 4, "language_ctx": 3}
VPT = {"trainer": "VPT", "vision_depth": 5, "vision_ctx": 4, "language_depth": 0, "language_ctx": 0}


def prompt_names(design: dict) -> set[str]:
    """The names the repository's clip gives the design's prompts (blocks 1 .. depth-1 hold VPT_shallow)."""
    names = {f"visual.transformer.resblocks.{i}.VPT_shallow" for i in range(1, design["vision_depth"])}
    names |= {f"transformer.resblocks.{i}.VPT_shallow" for i in range(1, design["language_depth"])}
    return names | ({"visual.VPT"} if design["vision_depth"] > 0 else set())


@pytest.fixture(scope="module")
def tiny_state_dict():
    return clip.build_clip("random:tiny").state_dict()


@pytest.mark.parametrize("design", [IVLP, VPT], ids=["IVLP", "VPT"])
def test_block_prompt_designs_register_prompts_where_the_repository_does(design, tiny_state_dict, monkeypatch):
    monkeypatch.setenv("CLIP_OPENAI_FP16", "1")  # the launcher's switch: weights fp16, prompts stay fp32
    torch.manual_seed(0)
    model = clip.build_model(tiny_state_dict, design)
    prompts = {name: p for name, p in model.named_parameters() if "VPT" in name}  # the trainer files' filter
    assert set(prompts) == prompt_names(design)
    assert model.visual.conv1.weight.dtype == torch.float16
    for name, p in prompts.items():
        tower = model.visual if name.startswith("visual.") else model
        ctx = design["vision_ctx"] if name.startswith("visual.") else design["language_ctx"]
        assert p.shape == (ctx, tower.transformer.width) and p.dtype == torch.float32, name
    order = [name for name, _ in model.named_parameters()]  # the repository's (optimizer states index by it)
    assert order.index("visual.VPT") + 1 == order.index("visual.class_embedding")
    for name in prompts:
        if name.endswith(".VPT_shallow"):
            assert order[order.index(name) + 1] == name.replace("VPT_shallow", "attn.in_proj_weight")
    values = torch.cat([p.detach().flatten() for p in prompts.values()])
    assert abs(values.std().item() - 0.02) < 0.003 and abs(values.mean().item()) < 0.003  # normal(0, 0.02)
    # A state dict holding the prompts (a saved model of this design) gives them back; keys as saved.
    again = clip.build_model(model.state_dict(), design)
    assert set(again.state_dict()) == set(model.state_dict())
    for name, p in again.named_parameters():
        if "VPT" in name:
            assert torch.equal(p, prompts[name])


def repository_ivlp_clip(clip_model, design: dict) -> dict[str, torch.Tensor]:
    """The repository's IVLP/VPT CLIP construction as bare draws (tests/test_release_draws.py's helpers): the
    image tower draws ``VPT`` right after the patch conv, each prompted block its ``VPT_shallow`` after its
    own weights; then the text blocks likewise, the embeddings and ``initialize_parameters``."""
    v, t, patch = clip_model.vision_width, clip_model.text_width, clip_model.visual.conv1.weight.shape[-1]
    prompts = {}
    uniform(v, 3, patch, patch, bound=(3 * patch * patch) ** -0.5)
    if design["vision_depth"] > 0:
        prompts["visual.VPT"] = normal(design["vision_ctx"], v, std=0.02)
    normal(v), normal(clip_model.visual.positional_embedding.shape[0], v)
    for i in range(clip_model.vision_layers):
        release_block(v, gates=False)
        if 0 < i < design["vision_depth"]:
            prompts[f"visual.transformer.resblocks.{i}.VPT_shallow"] = normal(design["vision_ctx"], v, std=0.02)
    normal(v, clip_model.embed_dim)
    for i in range(clip_model.text_layers):
        release_block(t, gates=False)
        if 0 < i < design["language_depth"]:
            prompts[f"transformer.resblocks.{i}.VPT_shallow"] = normal(design["language_ctx"], t, std=0.02)
    vocab, context = clip_model.token_embedding.weight.shape[0], clip_model.positional_embedding.shape[0]
    normal(vocab, t), normal(vocab, t), normal(context, t)
    for _ in range(clip_model.text_layers):
        normal(3 * t, t), normal(t, t), normal(4 * t, t), normal(t, 4 * t)
    normal(t, clip_model.embed_dim)
    return prompts


@pytest.mark.parametrize("design", [IVLP, VPT], ids=["IVLP", "VPT"])
def test_block_prompts_are_the_repository_draws_for_a_seed(design, tiny_state_dict):
    """With a ViT, ``build_model`` replays the repository's CLIP construction: a seed gives its prompts and
    leaves the global generator where its ``build_model`` does (a trainer file's next draws match too)."""
    torch.manual_seed(3)
    model = clip.build_model(tiny_state_dict, design)
    after = torch.rand(4)
    torch.manual_seed(3)
    expected = repository_ivlp_clip(model, design)
    assert torch.equal(after, torch.rand(4))
    got = {name: p for name, p in model.named_parameters() if "VPT" in name}
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert torch.equal(got[name].detach(), value), name


@pytest.mark.parametrize("design", [IVLP, VPT], ids=["IVLP", "VPT"])
def test_block_prompt_design_logits_match_the_reference(design, tiny_state_dict):
    """The trainer files' calls (``visual(image)``, ``transformer(x)`` in (L, N, D) on their prompted
    class embeddings) give the logits of the reference with the repository's block semantics."""
    torch.manual_seed(1)
    model = clip.build_model(tiny_state_dict, design).double()
    w = {k: v.detach() for k, v in model.state_dict().items()}
    rounded = {k: v.half().double() for k, v in w.items() if "VPT" in k}  # as the repository's blocks join them
    classnames = ["cat", "big dog", "traffic_light"]
    n_text = max(design["language_ctx"], 1)
    ctx = 0.02 * torch.randn(n_text, model.transformer.width, dtype=torch.float64)  # the file's block-0 prompts
    embedded, eot = clip_math.prompted_classes(w, " ".join(["X"] * n_text), classnames, ctx)
    image = torch.randn(2, 3, 224, 224, dtype=torch.float64)

    def expected(prompts: dict) -> torch.Tensor:
        text = clip_math.text_features(w, embedded, eot, clip_math.deep_text(
            {i: prompts[f"transformer.resblocks.{i}.VPT_shallow"] for i in range(1, design["language_depth"])}))
        vision = clip_math.image_features(w, image, prompts.get("visual.VPT"), clip_math.deep_vision(
            {i: prompts[f"visual.transformer.resblocks.{i}.VPT_shallow"] for i in range(1, design["vision_depth"])}))
        return clip_math.logits(w, vision, text)

    with torch.no_grad():
        x = (embedded + model.positional_embedding).permute(1, 0, 2)  # the file's TextEncoder
        x = model.ln_final(model.transformer(x).permute(1, 0, 2))
        text = x[torch.arange(len(classnames)), eot] @ model.text_projection
        logits = clip_math.logits(w, model.visual(image), text)
        torch.testing.assert_close(logits, expected(rounded), rtol=0, atol=1e-10)
        unrounded = {k: v for k, v in w.items() if "VPT" in k}
        assert not torch.allclose(logits, expected(unrounded), rtol=0, atol=1e-10)  # the fp16 rounding is theirs
        # encode_text / encode_image (a file's FixedEmbeddings, zero-shot calls) take the prompts too
        plain = clip.build_model(tiny_state_dict).double()
        tokens = clip.tokenize(classnames)
        assert not torch.allclose(model.encode_image(image), plain.encode_image(image))
        if design["language_depth"] > 1:
            assert not torch.allclose(model.encode_text(tokens), plain.encode_text(tokens))


def test_block_prompt_towers_still_run_a_callers_hook(tiny_state_dict):
    model = clip.build_model(tiny_state_dict, IVLP)
    seen = []
    width = model.visual.width

    def hook(index, x, block):
        seen.append((index, x[0, -IVLP["vision_ctx"]:].clone()))

    with torch.no_grad():
        model.encode_image(torch.randn(1, 3, 224, 224), hook=hook)
    assert [i for i, _ in seen] == list(range(12))
    prompt = model.visual.transformer.resblocks[1].VPT_shallow
    torch.testing.assert_close(seen[1][1], prompt.half().float().reshape(-1, width), rtol=0, atol=0)


def test_unknown_designs_are_refused_in_one_line_naming_the_supported_ones(tiny_state_dict):
    assert isinstance(clip.build_model(tiny_state_dict, {**MAPLE, "trainer": "CoOp"}), clip.model.CLIP)
    for trainer in ("IndependentVL", "vpt", None):
        with pytest.raises(ValueError, match=rf"trainer {trainer!r}; supported: CoOp, CoCoOp, MaPLe, IVLP, VPT$") as info:
            clip.build_model(tiny_state_dict, {**IVLP, "trainer": trainer})
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="lacks language_depth, language_ctx"):
        clip.build_model(tiny_state_dict, {"trainer": "VPT", "vision_depth": 2, "vision_ctx": 2})
    saved = clip.build_model(tiny_state_dict, IVLP).state_dict()
    with pytest.raises(ValueError, match=r"holds IVLP/VPT prompts .* but design 'CoOp' builds none"):
        clip.build_model(saved, {**MAPLE, "trainer": "CoOp"})
    with pytest.raises(ValueError, match=r"transformer.resblocks.3.VPT_shallow that design_details"):
        clip.build_model(saved, {**IVLP, "language_depth": 3})
