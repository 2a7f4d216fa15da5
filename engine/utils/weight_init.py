"""Dassl's ``init_network_weights``: the layer initialisation its CNN backbones and heads call."""

from __future__ import annotations

from torch import nn

__all__ = ["init_network_weights"]

_CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def init_network_weights(model: nn.Module, init_type: str = "normal", gain: float = 0.02) -> None:
    """Conv/linear weights by ``init_type`` (``normal`` N(0, gain), ``xavier``, ``kaiming``, ``orthogonal``)
    with zero biases; norm layers with affine weights get weight 1, bias 0."""
    initialisers = {
        "normal": lambda w: nn.init.normal_(w, 0.0, gain),
        "xavier": lambda w: nn.init.xavier_normal_(w, gain=gain),
        "kaiming": lambda w: nn.init.kaiming_normal_(w, a=0, mode="fan_in"),
        "orthogonal": lambda w: nn.init.orthogonal_(w, gain=gain),
    }
    if init_type not in initialisers:
        raise ValueError(f"init_network_weights: unknown init_type {init_type!r}; expected one of {list(initialisers)}")
    for module in model.modules():
        if isinstance(module, _CONV_LINEAR):
            initialisers[init_type](module.weight.data)
            if module.bias is not None:
                nn.init.constant_(module.bias.data, 0.0)
        elif isinstance(module, _NORMS) and module.weight is not None:
            nn.init.constant_(module.weight.data, 1.0)
            nn.init.constant_(module.bias.data, 0.0)
