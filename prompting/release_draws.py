"""The releases' random draws at model construction, so that a seed gives their initial prompt tensors.

The MaPLe and BMIP releases build OpenAI's CLIP from scratch (``clip.build_model``: every module initialised
from torch's global generator, then the pretrained weights loaded over it) *before* their prompt learner
draws; BMIP's CLIP also holds two ``Linear(1, 1)`` gates per block that the checkpoint does not have, so
their random values are the gates training starts from. Our CLIP is built on the meta device (no draws),
so with the same seed our prompt tensors differ. ``TRAINER.<MAPLE|BMIP>.RELEASE_DRAWS`` replays the
releases' construction on the global generator (:func:`draw_openai_clip`, which lives in
clip/release_draws.py; BMIP's learner draws too, :func:`draw_bmip_learner`, whose order differs from our
learner's) and takes the values that matter.

The releases hard-code ViT-B/16's widths (512 text, 768 vision) in a few draws; the replay uses the
backbone's widths, so it is the release's draw order at any width and exactly the release at ViT-B/16.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clip.release_draws import draw_openai_clip  # the CLIP construction's replay lives with the CLIP

__all__ = ["draw_openai_clip", "draw_bmip_learner"]


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
