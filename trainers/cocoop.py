"""CoCoOp: CoOp's context shifted per image by a small meta-network (``TRAINER.COCOOP``).

Zhou et al., "Conditional Prompt Learning for Vision-Language Models" (CVPR 2022). For an image with
normalised feature ``f`` (from the frozen, vanilla image tower) the context of every class prompt is
``ctx + meta_net(f)`` - the same bias added to each context token - so each image gets its own text
classifier: ``B`` text passes of all classes per batch (hence batch size 1 in the official configs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from engine.engine import TRAINER_REGISTRY
from prompting.deep import PromptPlan
from prompting.model import PromptedCLIP
from prompting.text import init_context

from .coop import ContextTrainer, CoOpCLIP, context_length_from_init

__all__ = ["CoCoOp", "CoCoOpCLIP", "CoCoOpPromptLearner"]


class CoCoOpPromptLearner(nn.Module):
    """Context ``ctx`` (n_ctx, width) and ``meta_net``: Linear(E, E//16) - ReLU - Linear(E//16, width).

    ``E`` is the image feature size (embed_dim). ``forward(image_features)`` returns the per-image
    context (B, n_ctx, width).
    """

    learns_text = True

    def __init__(self, clip_model: nn.Module, n_ctx: int, ctx_init: str) -> None:
        super().__init__()
        n_ctx = context_length_from_init(ctx_init, n_ctx)
        ctx, self.prompt_prefix = init_context(clip_model, n_ctx, ctx_init)
        print(f'Initial context: "{self.prompt_prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(ctx)
        vis_dim, ctx_dim = clip_model.embed_dim, clip_model.text_width
        self.meta_net = nn.Sequential(
            OrderedDict(
                [
                    ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("linear2", nn.Linear(vis_dim // 16, ctx_dim)),
                ]
            )
        )

    def forward(self, image_features: Tensor) -> Tensor:
        bias = self.meta_net(image_features.to(self.ctx.dtype))  # (B, width)
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)  # (B, n_ctx, width)


class CoCoOpCLIP(CoOpCLIP):
    """Class prompts ``[SOS, ctx + meta_net(f_b), name, ., EOT]`` re-encoded for every image ``b``."""

    def __init__(self, clip_model: nn.Module, prompt_learner: nn.Module, classnames: Sequence[str]) -> None:
        super().__init__(clip_model, prompt_learner, classnames, class_token_position="end")

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, C): image ``b`` against the class features built from its own context."""
        image = self.encode_image(images, PromptPlan())
        contexts = self.prompt_learner(image)
        text = torch.stack([self.encode_class_prompts(ctx) for ctx in contexts])  # (B, C, E)
        return self.clip.logit_scale.exp().to(image.dtype) * torch.einsum("be,bce->bc", image, text)


@TRAINER_REGISTRY.register()
class CoCoOp(ContextTrainer):
    """Conditional Context Optimization: cross-entropy over per-image conditioned class prompts."""

    CFG_NAME = "COCOOP"
    # tests/test_learning.py's 36 steps of batch 4: the config's rate is for 10 epochs of batch 1.
    LEARNING_TEST_OPTS = ("OPTIM.LR", "0.02")

    def build_clip_model(self, clip_model: nn.Module, classnames: list[str]) -> PromptedCLIP:
        c = self.method_cfg
        learner = CoCoOpPromptLearner(clip_model, c.N_CTX, c.CTX_INIT)
        return CoCoOpCLIP(clip_model, learner, classnames)
