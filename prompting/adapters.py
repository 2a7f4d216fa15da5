"""CoPrompt's residual feature adapters, as a wrapper around any prompt learner.

``f <- (1 - r) * f + r * A(f)`` on the towers' output features before normalisation, with
``A = ReLU(Linear(ReLU(Linear(f))))`` (bottleneck ``D / reduction``, no biases) and the released ratios
0.1 (image) and 0.2 (text), in training and at test. The wrapper keeps the inner learner's prompts
unchanged and only adds the heads to its :class:`~prompting.deep.PromptPlan`, so the same adapters sit on
MaPLe's prompts (CoPrompt) and on BMIP's (CoPrompt_BMIP); being inside the prompt learner, they are
trained, counted and checkpointed with it.
"""

from __future__ import annotations

from torch import Tensor, nn

from clip import at_least_fp32

from .deep import PromptPlan

__all__ = ["AdaptedPrompts", "FeatureAdapter"]


class FeatureAdapter(nn.Module):
    """Bottleneck MLP ``D -> D/reduction -> D``, ReLU after both layers, no biases (CoPrompt's ``Adapter``)."""

    def __init__(self, width: int, reduction: int = 4) -> None:
        super().__init__()
        if reduction < 1 or width % reduction:
            raise ValueError(f"adapter reduction must divide the feature width {width}, got {reduction}")
        self.fc = nn.Sequential(
            nn.Linear(width, width // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(width // reduction, width, bias=False),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class AdaptedPrompts(nn.Module):
    """``prompts`` (any learner) plus residual adapters on the image and text features."""

    def __init__(
        self,
        prompts: nn.Module,
        embed_dim: int,
        image_ratio: float = 0.1,
        text_ratio: float = 0.2,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        self.prompts = prompts
        self.adapter_image = FeatureAdapter(embed_dim, reduction)
        self.adapter_text = FeatureAdapter(embed_dim, reduction)
        self.image_ratio = image_ratio
        self.text_ratio = text_ratio
        self.prompt_prefix = prompts.prompt_prefix
        self.n_ctx = prompts.n_ctx
        self.learns_text = prompts.learns_text

    def adapt_image(self, features: Tensor) -> Tensor:
        x = at_least_fp32(features)
        return (1 - self.image_ratio) * x + self.image_ratio * self.adapter_image(x)

    def adapt_text(self, features: Tensor) -> Tensor:
        x = at_least_fp32(features)
        return (1 - self.text_ratio) * x + self.text_ratio * self.adapter_text(x)

    def forward(self) -> PromptPlan:
        plan = self.prompts()
        plan.image_head = self.adapt_image
        plan.text_head = self.adapt_text
        return plan
