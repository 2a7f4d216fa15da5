"""The MaPLe repository's construction of OpenAI's CLIP replayed as bare draws on torch's global generator.

That repository (and BMIP's, built on it) builds CLIP from scratch in ``clip.build_model`` (every module
initialised from the global generator, then the pretrained weights loaded over it). Our CLIP is built on
the meta device (no draws), so :func:`draw_openai_clip` advances the generator as theirs does and hands back
the values that outlive the loaded weights: BMIP's gates (prompting/release_draws.py) and, for the IVLP/VPT
designs, the prompts inside CLIP (clip/compound.py).

The repository hard-codes ViT-B/16's widths (512 text, 768 vision) in a few draws of its trainers; the
replay uses the backbone's widths, so it is the repository's draw order at any width.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch import Tensor, nn

__all__ = ["draw_openai_clip"]

PROMPT_STD = 0.02  # the repository's nn.init.normal_(std=0.02) for every prompt


def _block(width: int, gates: bool) -> list[nn.Linear]:
    """One residual block as the releases construct it; BMIP's blocks end with two Linear(1, 1) gates.

    The head count does not change what ``nn.MultiheadAttention`` draws (its weights are width x width), so one
    head stands for the release's ``width // 64``, which is 0 on backbones narrower than 64 (tests' shapes).
    """
    nn.MultiheadAttention(width, 1)
    nn.LayerNorm(width)
    nn.Sequential(
        OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("c_proj", nn.Linear(width * 4, width))])
    )
    return [nn.Linear(1, 1), nn.Linear(1, 1)] if gates else []


def draw_openai_clip(
    clip_model: nn.Module, gates: bool = False, design: Optional[Mapping[str, Any]] = None
) -> dict[str, Any]:
    """Advance torch's global generator as constructing OpenAI's ViT CLIP of ``clip_model``'s shape does.

    Module order: the image tower (patch conv, class and position embeddings, blocks, projection), the text
    blocks, the token embedding, then ``initialize_parameters`` (embeddings, the text blocks' weights, the
    text projection). With ``gates`` (BMIP) returns each tower's per-block ``[learnable_linear1,
    learnable_linear2]`` under ``"vision"`` / ``"text"``; the weights themselves are dropped block by block.
    With ``design`` (the repository's IVLP/VPT ``design_details``) its CLIP also draws the prompts it holds:
    ``visual.VPT`` right after the patch conv (when ``vision_depth`` > 0) and each ``VPT_shallow`` at the end
    of blocks ``1 .. depth-1``; they come back under ``"prompts"``, by parameter name.
    """
    v_width, t_width = clip_model.vision_width, clip_model.text_width
    patch = clip_model.visual.conv1.weight.shape[-1]
    n_patches = clip_model.visual.positional_embedding.shape[0]
    out: dict[str, Any] = {"vision": [], "text": [], "prompts": {}}
    prompts: dict[str, Tensor] = out["prompts"]
    v_depth, v_ctx = (design["vision_depth"], design["vision_ctx"]) if design else (0, 0)
    t_depth, t_ctx = (design["language_depth"], design["language_ctx"]) if design else (0, 0)
    with torch.device("cpu"):
        nn.Conv2d(3, v_width, kernel_size=patch, stride=patch, bias=False)
        if v_depth > 0:
            prompts["visual.VPT"] = nn.init.normal_(torch.empty(v_ctx, v_width), std=PROMPT_STD)
        torch.randn(v_width)
        torch.randn(n_patches, v_width)
        for i in range(clip_model.vision_layers):
            out["vision"].append(_block(v_width, gates))
            if 0 < i < v_depth:
                prompts[f"visual.transformer.resblocks.{i}.VPT_shallow"] = nn.init.normal_(
                    torch.empty(v_ctx, v_width), std=PROMPT_STD)
        torch.randn(v_width, clip_model.embed_dim)
        for i in range(clip_model.text_layers):
            out["text"].append(_block(t_width, gates))
            if 0 < i < t_depth:
                prompts[f"transformer.resblocks.{i}.VPT_shallow"] = nn.init.normal_(
                    torch.empty(t_ctx, t_width), std=PROMPT_STD)
        vocab, context = clip_model.token_embedding.weight.shape[0], clip_model.positional_embedding.shape[0]
        token = nn.Embedding(vocab, t_width)
        nn.init.normal_(token.weight, std=0.02)
        del token
        nn.init.normal_(torch.empty(context, t_width), std=0.01)
        proj_std, attn_std, fc_std = (
            (t_width**-0.5) * ((2 * clip_model.text_layers) ** -0.5),
            t_width**-0.5,
            (2 * t_width) ** -0.5,
        )
        for _ in range(clip_model.text_layers):
            nn.init.normal_(torch.empty(3 * t_width, t_width), std=attn_std)
            nn.init.normal_(torch.empty(t_width, t_width), std=proj_std)
            nn.init.normal_(torch.empty(4 * t_width, t_width), std=fc_std)
            nn.init.normal_(torch.empty(t_width, 4 * t_width), std=proj_std)
        nn.init.normal_(torch.empty(t_width, clip_model.embed_dim), std=t_width**-0.5)
    return out
