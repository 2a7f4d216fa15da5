"""Dassl's ``dassl.modeling``, the part its generic trainers use: backbone and head registries and ``SimpleNet``.

Backbones are torchvision's ResNets (``resnet18/34/50/101``) with the classifier removed; with
``MODEL.BACKBONE.PRETRAINED`` they load torchvision's ImageNet weights (a download on first use; Dassl
downloaded its own copies of the same weights). The head is Dassl's ``mlp``. Dassl's other backbones
(CNN digit nets, AlexNet, VGG, WideResNet, EfficientNet ...) are not provided: an unknown name lists
the known ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.utils import Registry, check_availability

__all__ = [
    "BACKBONE_REGISTRY",
    "HEAD_REGISTRY",
    "Backbone",
    "SimpleNet",
    "build_backbone",
    "build_head",
]

BACKBONE_REGISTRY = Registry("BACKBONE")
HEAD_REGISTRY = Registry("HEAD")


class Backbone(nn.Module):
    """A feature extractor: ``forward(x)`` returns (N, ``out_features``)."""

    _out_features: int

    @property
    def out_features(self) -> int:
        return self._out_features


class TorchvisionResNet(Backbone):
    """A torchvision ResNet up to its global average pool."""

    def __init__(self, arch: str, pretrained: bool) -> None:
        super().__init__()
        import torchvision

        weights = "DEFAULT" if pretrained else None
        try:
            net = getattr(torchvision.models, arch)(weights=weights)
        except (OSError, RuntimeError) as e:  # offline, or a damaged download
            raise OSError(
                f"MODEL.BACKBONE.NAME {arch}: torchvision could not provide its pretrained weights ({e}); "
                "set MODEL.BACKBONE.PRETRAINED False to start from random weights"
            ) from e
        self._out_features = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _register_resnet(arch: str) -> None:
    def build(verbose: bool = True, pretrained: bool = True, **kwargs: Any) -> Backbone:
        return TorchvisionResNet(arch, pretrained)

    build.__name__ = build.__qualname__ = arch
    BACKBONE_REGISTRY.register(build)


for _arch in ("resnet18", "resnet34", "resnet50", "resnet101"):
    _register_resnet(_arch)


def build_backbone(name: str, verbose: bool = True, **kwargs: Any) -> Backbone:
    check_availability(name, BACKBONE_REGISTRY.registered_names())
    if verbose:
        print(f"Backbone: {name}")
    return BACKBONE_REGISTRY.get(name)(verbose=verbose, **kwargs)


_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}


@HEAD_REGISTRY.register()
def mlp(
    in_features: int = 2048,
    hidden_layers: Any = (),
    activation: str = "relu",
    bn: bool = True,
    dropout: float = 0.0,
    **kwargs: Any,
) -> nn.Module:
    """Dassl's MLP head: Linear [-> BatchNorm] -> activation [-> Dropout] per hidden layer; ``out_features`` set."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f'MODEL.HEAD.ACTIVATION "{activation}" is not one of {sorted(_ACTIVATIONS)}')
    hidden = [hidden_layers] if isinstance(hidden_layers, int) else list(hidden_layers)
    if not hidden:
        raise ValueError("MODEL.HEAD.HIDDEN_LAYERS must list at least one layer width for the mlp head")
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers.append(nn.Linear(width, size))
        if bn:
            layers.append(nn.BatchNorm1d(size))
        layers.append(_ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    head = nn.Sequential(*layers)
    head.out_features = width
    return head


def build_head(name: str, verbose: bool = True, **kwargs: Any) -> nn.Module:
    check_availability(name, HEAD_REGISTRY.registered_names())
    if verbose:
        print(f"Head: {name}")
    return HEAD_REGISTRY.get(name)(**kwargs)


class SimpleNet(nn.Module):
    """Dassl's ``SimpleNet``: backbone [+ head] + linear classifier (``num_classes`` > 0)."""

    def __init__(self, cfg: Any, model_cfg: Any, num_classes: int, **kwargs: Any) -> None:
        super().__init__()
        self.backbone = build_backbone(
            model_cfg.BACKBONE.NAME, verbose=cfg.VERBOSE, pretrained=model_cfg.BACKBONE.PRETRAINED, **kwargs
        )
        fdim = self.backbone.out_features
        self.head = None
        if model_cfg.HEAD.NAME and model_cfg.HEAD.HIDDEN_LAYERS:
            self.head = build_head(
                model_cfg.HEAD.NAME,
                verbose=cfg.VERBOSE,
                in_features=fdim,
                hidden_layers=model_cfg.HEAD.HIDDEN_LAYERS,
                activation=model_cfg.HEAD.ACTIVATION,
                bn=model_cfg.HEAD.BN,
                dropout=model_cfg.HEAD.DROPOUT,
                **kwargs,
            )
            fdim = self.head.out_features
        self.classifier = nn.Linear(fdim, num_classes) if num_classes > 0 else None
        self._fdim = fdim

    @property
    def fdim(self) -> int:
        return self._fdim

    def forward(self, x: torch.Tensor, return_feature: bool = False) -> Any:
        f = self.backbone(x)
        if self.head is not None:
            f = self.head(f)
        if self.classifier is None:
            return f
        y = self.classifier(f)
        return (y, f) if return_feature else y
