"""The releases' random draws at model construction, so that a seed gives their initial prompt tensors.

The MaPLe and BMIP releases build OpenAI's CLIP from scratch (``clip.build_model``: every module initialised
from torch's global generator, then the pretrained weights loaded over it) *before* their prompt learner
draws; BMIP's CLIP also holds two ``Linear(1, 1)`` gates per block that the checkpoint does not have, so
their random values are the gates training starts from. Our CLIP is built on the meta device (no draws),
so with the same seed our prompt tensors differ. ``TRAINER.<MAPLE|BMIP>.RELEASE_DRAWS`` replays the
releases' construction on the global generator (:func:`draw_openai_clip`; BMIP's learner draws too,
:func:`draw_bmip_learner`, whose order differs from our learner's) and takes the values that matter.

The releases hard-code ViT-B/16's widths (512 text, 768 vision) in a few draws; the replay uses the
backbone's widths, so it is the release's draw order at any width and exactly the release at ViT-B/16.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

__all__ = ["draw_openai_clip", "draw_bmip_learner"]


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


def draw_openai_clip(clip_model: nn.Module, gates: bool = False) -> dict[str, list[list[nn.Linear]]]:
    """Advance torch's global generator as constructing OpenAI's ViT CLIP of ``clip_model``'s shape does.

    Module order: the image tower (patch conv, class and position embeddings, blocks, projection), the text
    blocks, the token embedding, then ``initialize_parameters`` (embeddings, the text blocks' weights, the
    text projection). With ``gates`` (BMIP) returns each tower's per-block ``[learnable_linear1,
    learnable_linear2]``; the weights themselves are dropped block by block.
    """
    v_width, t_width = clip_model.vision_width, clip_model.text_width
    patch = clip_model.visual.conv1.weight.shape[-1]
    n_patches = clip_model.visual.positional_embedding.shape[0]
    out: dict[str, list[list[nn.Linear]]] = {"vision": [], "text": []}
    with torch.device("cpu"):
        nn.Conv2d(3, v_width, kernel_size=patch, stride=patch, bias=False)
        torch.randn(v_width)
        torch.randn(n_patches, v_width)
        for _ in range(clip_model.vision_layers):
            out["vision"].append(_block(v_width, gates))
        torch.randn(v_width, clip_model.embed_dim)
        for _ in range(clip_model.text_layers):
            out["text"].append(_block(t_width, gates))
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


def draw_bmip_learner(
    clip_model: nn.Module, n_ctx: int, depth: int
) -> dict[str, Tensor | nn.Linear | list[Tensor]]:
    """The released BMIP learner's draws (``SHARE`` both True, ``CTX_INIT`` given), in its order.

    ``proj_t``, ``proj_v``, ``ctx_v`` (context length x vision width, N(0, 0.02^2); the first ``n_ctx`` rows
    are the shared vision prompt), G_l ``single_layer_v``, an unused exchange layer, the deep text prompts,
    G_v ``single_layer_t`` and a second unused exchange layer.
    """
    d_t, d_v = clip_model.text_width, clip_model.vision_width
    context = clip_model.positional_embedding.shape[0]
    with torch.device("cpu"):
        drawn: dict[str, Tensor | nn.Linear | list[Tensor]] = {"proj_t": nn.Linear(d_t, d_v)}
        nn.Linear(d_v, d_t)  # proj_v: never used by the released forward
        drawn["ctx_v"] = nn.init.normal_(torch.empty(context, d_v), std=0.02)[:n_ctx]
        drawn["single_layer_v"] = nn.Linear(d_v, d_t)
        nn.Linear(2 * d_v, d_v)  # exchange_layer_v: unused
        drawn["compound_prompts_text"] = [
            nn.init.normal_(torch.empty(n_ctx, d_t), std=0.02) for _ in range(depth - 1)
        ]
        drawn["single_layer_t"] = nn.Linear(d_t, d_v)
        nn.Linear(2 * d_t, d_t)  # exchange_layer_t: unused
    return drawn
