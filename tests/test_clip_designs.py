"""``clip.build_model(state_dict, design_details)``: the MaPLe repository's second argument and its deep
("compound") prompt calling convention on this CLIP (clip/compound.py).

The reference below steps through the towers' blocks by hand in OpenAI's (L, N, D) layout, the way the
MaPLe repository's blocks do: from block 1 on, the previous block's prompt tokens are replaced by the next
deeper prompt, cast to fp16 first. (Checked by hand against the repository's own clip on the same
weights: equal to the last bit, fp32 towers from fp16-converted weights.)
"""

from __future__ import annotations

import pytest
import torch

import clip

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


def test_designs_with_prompts_inside_the_blocks_are_refused_in_one_line():
    state_dict = clip.build_clip("random:micro").state_dict()
    assert isinstance(clip.build_model(state_dict, {**MAPLE, "trainer": "CoOp"}), clip.model.CLIP)
    for trainer in ("IVLP", "VPT"):
        with pytest.raises(ValueError, match=rf"design_details trainer '{trainer}' .*tools\.dassl_run") as info:
            clip.build_model(state_dict, {**MAPLE, "trainer": trainer})
        assert "\n" not in str(info.value)
