"""Optimizers and LR schedules: Dassl's exact per-epoch values, data-only state, exact resume."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn as nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from engine.config import get_cfg_default
from engine.optim import ConstantWarmupScheduler, build_lr_scheduler, build_optimizer

MAPLE = {"NAME": "sgd", "LR": 0.0035, "MAX_EPOCH": 5, "LR_SCHEDULER": "cosine", "WARMUP_EPOCH": 1,
         "WARMUP_TYPE": "constant", "WARMUP_CONS_LR": 1e-5}
BMIP = {**MAPLE, "NAME": "adam", "LR": 0.002, "MAX_EPOCH": 10}
MAPLE_LRS = [1e-05, 0.0035, 0.0031658, 0.0022908, 0.0012092]
BMIP_LRS = [1e-05, 0.002, 0.0019511, 0.0018090, 0.0015878, 0.0013090, 0.001, 0.00069098, 0.00041221, 0.00019098]


def optim_cfg(**values):
    cfg = get_cfg_default().OPTIM
    for k, v in values.items():
        setattr(cfg, k, v)
    return cfg


def build(cfg):
    param = nn.Parameter(torch.ones(3))
    optimizer = build_optimizer([param], cfg)
    return param, optimizer, build_lr_scheduler(optimizer, cfg)


def roundtrip(obj):
    """Save and load like a checkpoint, refusing pickled objects."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def epoch_lrs(cfg, resume_at: int | None = None) -> list[float]:
    """LR in effect during each epoch, stepping once per epoch; optionally restart from a checkpoint."""
    param, optimizer, scheduler = build(cfg)
    lrs = []
    for epoch in range(cfg.MAX_EPOCH):
        if epoch == resume_at:
            state = roundtrip({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
            param, optimizer, scheduler = build(cfg)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        lrs.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones_like(param)
        optimizer.step()
        scheduler.step()
    return lrs


def test_maple_and_bmip_schedules_match_dassl():
    assert epoch_lrs(optim_cfg(**MAPLE)) == pytest.approx(MAPLE_LRS, rel=1e-4)
    assert epoch_lrs(optim_cfg(**BMIP)) == pytest.approx(BMIP_LRS, rel=1e-4)


def test_linear_warmup_then_cosine_restarts_at_step_zero():
    lr = 0.01
    cfg = optim_cfg(**{**MAPLE, "LR": lr, "WARMUP_EPOCH": 2, "WARMUP_TYPE": "linear", "WARMUP_MIN_LR": 1e-5})
    expected = [1e-5, lr / 2] + [lr * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(3)]
    assert epoch_lrs(cfg) == pytest.approx(expected, rel=1e-6)


def test_warmup_without_recount_continues_the_successor():
    cfg = optim_cfg(**{**MAPLE, "WARMUP_RECOUNT": False})
    assert epoch_lrs(cfg)[:3] == pytest.approx([1e-5, 0.0035, 0.0025326], rel=1e-4)


def test_step_schedules():
    single = optim_cfg(NAME="sgd", LR=1.0, MAX_EPOCH=4, LR_SCHEDULER="single_step", STEPSIZE=(2,), GAMMA=0.5)
    assert epoch_lrs(single) == pytest.approx([1.0, 1.0, 0.5, 0.5])
    whole = optim_cfg(NAME="sgd", LR=1.0, MAX_EPOCH=4, LR_SCHEDULER="single_step", STEPSIZE=(-1,))
    assert epoch_lrs(whole) == pytest.approx([1.0] * 4)
    multi = optim_cfg(NAME="sgd", LR=1.0, MAX_EPOCH=5, LR_SCHEDULER="multi_step", STEPSIZE=(2, 3), GAMMA=0.1,
                      WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=0.01)
    assert epoch_lrs(multi) == pytest.approx([0.01, 1.0, 1.0, 0.1, 0.01])


@pytest.mark.parametrize(
    "values",
    [MAPLE, BMIP, {**MAPLE, "WARMUP_EPOCH": 2, "WARMUP_TYPE": "linear"},
     {"NAME": "sgd", "LR": 1.0, "MAX_EPOCH": 5, "LR_SCHEDULER": "multi_step", "STEPSIZE": (2, 4),
      "WARMUP_EPOCH": 1, "WARMUP_TYPE": "constant"}],
    ids=["maple", "bmip", "linear", "multistep"],
)
def test_resume_continues_the_exact_schedule(values):
    cfg = optim_cfg(**values)
    uninterrupted = epoch_lrs(cfg)
    for resume_at in range(1, cfg.MAX_EPOCH):
        assert epoch_lrs(cfg, resume_at=resume_at) == pytest.approx(uninterrupted, rel=1e-9), resume_at


def test_warmup_state_dict_is_data_only_and_accepts_dassl_legacy_form():
    _, optimizer, scheduler = build(optim_cfg(**MAPLE))
    state = scheduler.state_dict()
    assert isinstance(state["successor_state"], dict) and "optimizer" not in state
    assert "successor" not in state  # real Dassl would copy it over its successor object (lr_scheduler.py)
    # Dassl pickled the successor object itself; loading that form must still restore its counters.
    _, other_opt, legacy = build(optim_cfg(**MAPLE))
    other_opt.step()
    legacy.step()
    legacy.step()
    legacy_state = legacy.state_dict()
    del legacy_state["successor_state"]
    legacy_state["successor"] = legacy.successor
    scheduler.load_state_dict(legacy_state)
    assert isinstance(scheduler.successor, CosineAnnealingLR)
    assert scheduler.successor.last_epoch == legacy.successor.last_epoch == 1
    assert scheduler.successor.optimizer is optimizer


def test_scheduler_and_optimizer_errors_name_the_choices():
    with pytest.raises(ValueError, match="cosine"):
        build(optim_cfg(LR_SCHEDULER="poly"))
    with pytest.raises(ValueError, match='"exp".*constant, linear'):
        build(optim_cfg(LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="exp"))
    with pytest.raises(ValueError, match='"lion".*sgd'):
        build(optim_cfg(NAME="lion"))


@pytest.mark.parametrize(
    "name, cls, check",
    [
        ("sgd", torch.optim.SGD, {"momentum": 0.9, "dampening": 0, "nesterov": False}),
        ("adam", torch.optim.Adam, {"betas": (0.9, 0.999), "amsgrad": False}),
        ("amsgrad", torch.optim.Adam, {"amsgrad": True}),
        ("adamw", torch.optim.AdamW, {"weight_decay": 5e-4}),
        ("rmsprop", torch.optim.RMSprop, {"alpha": 0.99, "momentum": 0.9}),
        ("radam", torch.optim.RAdam, {"betas": (0.9, 0.999)}),
    ],
)
def test_optimizer_choices(name, cls, check):
    optimizer = build_optimizer(nn.Linear(2, 2), optim_cfg(NAME=name, LR=0.5))
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.5 and group["weight_decay"] == 5e-4
    for key, value in check.items():
        assert group[key] == value


def test_staged_lr_splits_top_level_children():
    model = nn.Sequential()
    model.add_module("backbone", nn.Linear(2, 2))
    model.add_module("head", nn.Linear(2, 1))
    optimizer = build_optimizer(model, optim_cfg(NAME="sgd", LR=1.0, STAGED_LR=True, NEW_LAYERS=("head",),
                                                 BASE_LR_MULT=0.1))
    base, new = optimizer.param_groups
    assert base["lr"] == pytest.approx(0.1) and new["lr"] == 1.0
    assert {id(p) for p in new["params"]} == {id(p) for p in model.head.parameters()}
    with pytest.raises(ValueError, match="neck"):
        build_optimizer(model, optim_cfg(NAME="sgd", STAGED_LR=True, NEW_LAYERS=("neck",)))


def test_frozen_parameters_are_accepted_and_left_unchanged():
    model = nn.Linear(2, 1)
    model.bias.requires_grad_(False)
    optimizer = build_optimizer(model, optim_cfg(NAME="adam", LR=0.1))
    bias = model.bias.detach().clone()
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    assert torch.equal(model.bias, bias)


def test_constant_warmup_is_a_real_scheduler_subclass():
    _, _, scheduler = build(optim_cfg(**MAPLE))
    assert isinstance(scheduler, ConstantWarmupScheduler)
    assert scheduler.get_last_lr() == [1e-5]
