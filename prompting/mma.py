"""MMA's multi-modal adapters (Yang et al., CVPR 2024), optionally around a prompt learner (MMA+BMIP).

For every layer ``l`` in ``start..end`` (1-based block numbers, as released) each tower gets a residual
adapter that reads the block input and is added to the block output::

    out_l = block_l(x) + s * up_l(shared_l(down_l(ln_1_l(x))))

``down_l`` = Linear(width, dim) + ReLU and ``up_l`` = Linear(dim, width) belong to one tower
(``text_adapter`` / ``visual_adapter``); ``shared_l`` = Linear(dim, dim) + ReLU is the *same* module in
both towers, the shared projection that couples them. ``ln_1_l`` is the frozen block's own first
LayerNorm. All Linear weights start Kaiming-normal (fan_out, ReLU gain), biases zero.

``grad_rescale`` (released: True) reproduces the release's gradient-scale layers: the forward pass is the
formula above, but the adapters' parameters receive their true gradient divided by ``s`` (the tokens'
gradient is unchanged). With ``s = 0.001`` this is a 1000x larger effective learning rate for the adapters,
so it changes results; False trains on the true gradient.

The towers' class prompts stay CLIP's hand-written ``"<ctx_init> <class>."`` unless a prompt learner is
wrapped (``prompts``): then its prompts and interaction run unchanged and the adapters are added to its
plan (MMA+BMIP).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .deep import PromptPlan

__all__ = ["MultiModalAdapters", "scale_gradient"]


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` on the way back."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """``x`` unchanged, its gradient multiplied by ``scale`` (the release's ``gradient_scale_layer``)."""
    return _ScaleGradient.apply(x, scale)


def _init(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return module


def _tower_adapter(width: int, dim: int) -> nn.Module:
    return _init(
        nn.Sequential(
            OrderedDict(
                [("down", nn.Sequential(nn.Linear(width, dim), nn.ReLU())), ("up", nn.Linear(dim, width))]
            )
        )
    )


class MultiModalAdapters(nn.Module):
    """MMA's adapters on blocks ``start..end`` of both towers, around ``prompts`` (or CLIP's fixed text).

    Parameters (ModuleDicts keyed by the 1-based layer number, as the release's lists are indexed):
    ``text_adapter[l]``, ``visual_adapter[l]`` (down/up per tower) and ``shared_adapter[l]``.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        *,
        start: int = 5,
        end: int = 12,
        dim: int = 32,
        scale: float = 0.001,
        grad_rescale: bool = True,
        ctx_init: str = "a photo of a",
        prompts: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        n_blocks = min(clip_model.text_layers, clip_model.vision_layers)
        if clip_model.vision_layers < 1:
            raise ValueError(
                "MMA adapts the image transformer's blocks: it needs a ViT backbone, not a ResNet"
            )
        if not 1 <= start <= end <= n_blocks:
            raise ValueError(
                f"TRAINER.MMADAPTER.ADAPTER_START/END must satisfy 1 <= START <= END <= {n_blocks} (1-based "
                f"blocks; the release's input-embedding adapter at 0 is not supported), got {start} and {end}"
            )
        if dim < 1 or scale <= 0:
            raise ValueError(
                f"TRAINER.MMADAPTER.ADAPTER_DIM must be >= 1 and ADAPTER_SCALE > 0, got {dim}, {scale}"
            )
        self.layers = range(start, end + 1)
        self.scale = float(scale)
        self.grad_rescale = grad_rescale
        keys = [str(layer) for layer in self.layers]
        self.text_adapter = nn.ModuleDict({k: _tower_adapter(clip_model.text_width, dim) for k in keys})
        self.visual_adapter = nn.ModuleDict({k: _tower_adapter(clip_model.vision_width, dim) for k in keys})
        self.shared_adapter = nn.ModuleDict(
            {k: _init(nn.Sequential(nn.Linear(dim, dim), nn.ReLU())) for k in keys}
        )
        self.prompts = prompts
        if prompts is None:
            self.prompt_prefix = ctx_init.replace("_", " ").strip()
            self.n_ctx = 0
        else:
            self.prompt_prefix, self.n_ctx = prompts.prompt_prefix, prompts.n_ctx
        self.learns_text = True

    def residual(self, tower: nn.ModuleDict, layer: int, x: Tensor, block: nn.Module) -> Tensor:
        """``s * up(shared(down(ln_1(x))))`` of ``layer``'s adapter in ``tower`` for block input ``x``."""
        if self.grad_rescale:
            x = scale_gradient(x, self.scale)
        adapter, key = tower[str(layer)], str(layer)
        h = block.ln_1(x).to(adapter.up.weight.dtype)
        y = adapter.up(self.shared_adapter[key](adapter.down(h))) * self.scale
        return scale_gradient(y, 1.0 / self.scale) if self.grad_rescale else y

    def forward(self) -> PromptPlan:
        plan = PromptPlan() if self.prompts is None else self.prompts()
        for layer in self.layers:
            plan.text_residuals[layer - 1] = partial(self.residual, self.text_adapter, layer)
            plan.vision_residuals[layer - 1] = partial(self.residual, self.visual_adapter, layer)
        return plan
