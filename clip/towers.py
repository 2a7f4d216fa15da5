"""CLIP's image towers: the ViT (hookable, takes vision prompts) and the ModifiedResNet (no hook points)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import Hook, LayerNorm, QuickGELU, Transformer


class VisionTransformer(nn.Module):
    """ViT image tower. Optional prompts are appended after the patch tokens (no positional embedding)."""

    def __init__(
        self,
        input_resolution: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        output_dim: int,
        mlp_ratio: float = 4.0,
        activation: type[nn.Module] = QuickGELU,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        grid = input_resolution // patch_size
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid**2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio=mlp_ratio, activation=activation)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    @property
    def width(self) -> int:
        return self.conv1.out_channels

    def embed(self, x: Tensor, prompts: Optional[Tensor] = None) -> Tensor:
        """Token sequence entering block 0: [CLS, patches..., prompts...] after ``ln_pre``."""
        x = self.conv1(x)
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        if prompts is not None:
            x = torch.cat([x, self._expand_prompts(prompts, x)], dim=1)
        return self.ln_pre(x)

    def _expand_prompts(self, prompts: Tensor, x: Tensor) -> Tensor:
        width = x.shape[-1]
        if prompts.dim() == 2 and prompts.shape[1] == width:
            prompts = prompts.unsqueeze(0).expand(x.shape[0], -1, -1)
        elif not (prompts.dim() == 3 and prompts.shape[0] == x.shape[0] and prompts.shape[2] == width):
            raise ValueError(
                f"vision prompts must be (n, {width}) or ({x.shape[0]}, n, {width}), got {tuple(prompts.shape)}"
            )
        return prompts.to(x.dtype)

    def forward(self, x: Tensor, prompts: Optional[Tensor] = None, hook: Optional[Hook] = None) -> Tensor:
        return self.forward_tokens(x, prompts, hook)[0]

    def forward_tokens(
        self, x: Tensor, prompts: Optional[Tensor] = None, hook: Optional[Hook] = None
    ) -> tuple[Tensor, Tensor]:
        """Features (N, output_dim) and the last block's output tokens (N, L, width), before ``ln_post``
        (MMRL reads its representation tokens there)."""
        x = self.transformer(self.embed(x, prompts), hook, batch_first=True)
        return self.ln_post(x[:, 0, :]) @ self.proj.to(x.dtype), x


class Bottleneck(nn.Module):
    """ResNet bottleneck with anti-aliased (avg-pool) striding, as in CLIP's ModifiedResNet."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample: Optional[nn.Sequential] = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential()
            self.downsample.add_module("-1", nn.AvgPool2d(stride))
            self.downsample.add_module("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False))
            self.downsample.add_module("1", nn.BatchNorm2d(planes * self.expansion))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """QKV attention pooling: the mean token (plus positional embedding) queries the feature map."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        n, length, d = x.shape
        heads = self.num_heads

        def split(t: Tensor) -> Tensor:
            return t.view(n, t.shape[1], heads, d // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.q_proj(x[:, :1])), split(self.k_proj(x)), split(self.v_proj(x))
        )
        return self.c_proj(out.transpose(1, 2).reshape(n, d))


class ModifiedResNet(nn.Module):
    """CLIP's ResNet image tower (3-conv stem, avg-pool striding, attention pooling). Has no hook points."""

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        output_dim: int,
        heads: int,
        input_resolution: int = 224,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed_dim = width * 32
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, prompts: Optional[Tensor] = None, hook: Optional[Hook] = None) -> Tensor:
        """``hook`` is accepted for a uniform signature and ignored (no token blocks); prompts are refused."""
        if prompts is not None:
            raise ValueError("ModifiedResNet image towers cannot take vision prompts; use a ViT backbone")
        x = x.to(self.conv1.weight.dtype)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.avgpool(F.relu(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)
