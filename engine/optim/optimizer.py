"""``build_optimizer``: Dassl's optimizer choices and its staged learning rate."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

__all__ = ["AVAI_OPTIMS", "build_optimizer"]

AVAI_OPTIMS = ("adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw")


def build_optimizer(model: nn.Module | Iterable[Any], optim_cfg: Any, param_groups: Any = None) -> torch.optim.Optimizer:
    """Build ``optim_cfg.NAME`` over a module's parameters, an iterable of parameters, or ``param_groups``.

    Frozen parameters may be passed (MaPLe/BMIP pass the whole CLIP): they never get a gradient, so
    the optimizer skips them. ``radam`` is ``torch.optim.RAdam`` (Dassl shipped its own copy).
    """
    name = optim_cfg.NAME
    if name not in AVAI_OPTIMS:
        raise ValueError(f'Unknown optimizer OPTIM.NAME "{name}"; supported: {", ".join(AVAI_OPTIMS)}')
    lr = optim_cfg.LR
    weight_decay = optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    eps = optim_cfg.EPS

    if param_groups is not None and optim_cfg.STAGED_LR:
        warnings.warn("OPTIM.STAGED_LR is ignored because param_groups were given; bind staged LRs in them yourself", stacklevel=2)
    if param_groups is None:
        param_groups = _default_param_groups(model, optim_cfg)

    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)
    if name == "amsgrad":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, amsgrad=True)
    if name == "sgd":
        return torch.optim.SGD(
            param_groups,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=weight_decay,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=weight_decay, alpha=optim_cfg.RMSPROP_ALPHA
        )
    if name == "radam":
        return torch.optim.RAdam(param_groups, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


def _default_param_groups(model: nn.Module | Iterable[Any], optim_cfg: Any) -> Any:
    if not optim_cfg.STAGED_LR:
        return model.parameters() if isinstance(model, nn.Module) else model
    if not isinstance(model, nn.Module):
        raise TypeError("OPTIM.STAGED_LR needs an nn.Module (its top-level children form the stages)")
    if isinstance(model, nn.DataParallel):
        model = model.module
    new_layers = optim_cfg.NEW_LAYERS
    if isinstance(new_layers, str):
        new_layers = [new_layers]
    if not new_layers:
        warnings.warn("OPTIM.STAGED_LR is set but OPTIM.NEW_LAYERS is empty: every layer gets LR * BASE_LR_MULT", stacklevel=2)
    children = dict(model.named_children())
    unknown = [n for n in new_layers if n not in children]
    if unknown:
        raise ValueError(f"OPTIM.NEW_LAYERS names {unknown}, which are not children of the model: {list(children)}")
    base_params, new_params = [], []
    for child_name, module in children.items():
        (new_params if child_name in new_layers else base_params).extend(module.parameters())
    return [
        {"params": base_params, "lr": optim_cfg.LR * optim_cfg.BASE_LR_MULT},
        {"params": new_params},
    ]
