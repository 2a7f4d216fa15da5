"""BMIP's shared vision prompt under the optimiser (TRAINER.BMIP.SHARED_VISION_PROMPT, docs/BMIP.md).

The release makes one Parameter per prompted vision block out of rows of ``ctx_v``. On CPU they stay
views of one storage ("aliased"): each is its own optimiser entry, so one step applies one Adam/SGD
update per alias, each with its own moments and its own weight decay, to the same numbers. Moving the
model to a GPU gives every alias its own storage ("copies"): per-block prompts that start equal and
are trained apart. "tied" (paper preset) is one tensor with one update.

Each mode is run for several float64 optimiser steps and compared with a reference written here from
the update rules of Adam and SGD (L2 weight decay, momentum); the per-block gradients the reference
needs come from a "copies" model set to the reference's values (the forward pass itself is proven
exact in test_trainer_exactness.py).
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

import clip
from engine.config import get_cfg_default
from engine.optim import build_optimizer
from prompting.bmip import BMIPPrompts, resolve_bmip_options
from prompting.model import PromptedCLIP

CLASSES = ["cat", "dog", "sea lion"]
DEPTH = 4  # 3 prompted vision blocks, so 3 aliases / copies
TOL = 1e-12
STEPS = 3
OPTIMS = {
    "adam": dict(NAME="adam", LR=0.01, WEIGHT_DECAY=0.5, ADAM_BETA1=0.9, ADAM_BETA2=0.999),
    "sgd": dict(NAME="sgd", LR=0.5, WEIGHT_DECAY=0.5, MOMENTUM=0.9),
}


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    return clip.build_clip("random:tiny", seed=0).double()


def _model(backbone: torch.nn.Module, mode: str) -> PromptedCLIP:
    torch.manual_seed(0)
    options = resolve_bmip_options("released", depth=DEPTH, shared_vision_prompt=mode)
    model = PromptedCLIP(backbone, BMIPPrompts(backbone, options), CLASSES).double()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for name, p in model.prompt_learner.named_parameters():
            if "compound_prompts_visual" not in name:  # aliases keep ctx_v's values
                p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        _set_shared(model, 0.02 * torch.randn(2, backbone.vision_width, generator=gen, dtype=torch.float64))
    return model.train()


def _set_shared(model: PromptedCLIP, value: torch.Tensor) -> None:
    """Give the shared vision prompt ``value`` (every copy too: they start equal)."""
    learner = model.prompt_learner
    with torch.no_grad():
        if hasattr(learner, "ctx_v"):
            learner.ctx_v.copy_(value)
        for p in getattr(learner, "compound_prompts_visual", []):
            p.copy_(value)


def _loss(model: PromptedCLIP) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(2, 3, 224, 224, generator=gen, dtype=torch.float64)
    return F.cross_entropy(model(images), torch.tensor([0, 2]))


def _optim_cfg(name: str):  # noqa: ANN202
    cfg = get_cfg_default().OPTIM.clone()
    cfg.merge_from_list([x for kv in OPTIMS[name].items() for x in kv])
    return cfg


# ---- the reference: update rules written out ---------------------------------------------------------------
def _update(name: str, p: torch.Tensor, g: torch.Tensor, state: dict) -> torch.Tensor:
    """One Adam or SGD step of ``p`` with gradient ``g`` (L2 weight decay on the current value)."""
    c = OPTIMS[name]
    g = g + c["WEIGHT_DECAY"] * p
    t = state["t"] = state.get("t", 0) + 1
    if name == "sgd":
        state["buf"] = g if t == 1 else c["MOMENTUM"] * state["buf"] + g
        return p - c["LR"] * state["buf"]
    b1, b2 = c["ADAM_BETA1"], c["ADAM_BETA2"]
    state["m"] = b1 * state.get("m", 0) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0) + (1 - b2) * g * g
    m_hat, v_hat = state["m"] / (1 - b1**t), state["v"] / (1 - b2**t)
    return p - c["LR"] * m_hat / (v_hat.sqrt() + 1e-8)


def _block_gradients(oracle: PromptedCLIP, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gradients of the loss for every tensor of a "copies" model set to ``values``."""
    with torch.no_grad():
        for name, p in oracle.prompt_learner.named_parameters():
            p.copy_(values[name])
    oracle.zero_grad()
    _loss(oracle).backward()
    return {name: p.grad.clone() for name, p in oracle.prompt_learner.named_parameters()}


def _reference_step(mode: str, optim: str, values: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], state: dict) -> None:
    """Advance ``values`` (names of the copies model) by one step of ``mode``'s semantics."""
    blocks = [name for name in values if name.startswith("compound_prompts_visual.")]
    for name in values:
        if name not in blocks:
            values[name] = _update(optim, values[name], grads[name], state.setdefault(name, {}))
    if mode == "copies":  # independent tensors
        for name in blocks:
            values[name] = _update(optim, values[name], grads[name], state.setdefault(name, {}))
    elif mode == "tied":  # one tensor, the sum of the blocks' gradients
        shared = _update(optim, values[blocks[0]], sum(grads[b] for b in blocks), state.setdefault("tied", {}))
        values.update(dict.fromkeys(blocks, shared))
    else:  # aliased: one update per alias, in block order, each reading the value the previous left
        shared = values[blocks[0]]
        for name in blocks:
            shared = _update(optim, shared, grads[name], state.setdefault(name, {}))
        values.update(dict.fromkeys(blocks, shared))


def _observed(model: PromptedCLIP) -> dict[str, torch.Tensor]:
    """The model's tensors under the copies model's names (the shared prompt once per block)."""
    learner = model.prompt_learner
    values = {n: p.detach().clone() for n, p in learner.named_parameters() if n != "ctx_v"}
    if not hasattr(learner, "compound_prompts_visual"):
        values.update({f"compound_prompts_visual.{k}": learner.ctx_v.detach().clone() for k in range(DEPTH - 1)})
    return values


@pytest.mark.parametrize("optim", sorted(OPTIMS))
@pytest.mark.parametrize("mode", ["tied", "aliased", "copies"])
def test_optimiser_steps_follow_the_mode_semantics(backbone, mode, optim):
    model = _model(backbone, mode)
    oracle = _model(backbone, "copies")
    optimizer = build_optimizer(model.prompt_learner, _optim_cfg(optim))
    learner = model.prompt_learner
    if mode == "aliased":  # the release's layout: ctx_v, then one optimiser entry per block over its storage
        params = optimizer.param_groups[0]["params"]
        names = {id(p): n for n, p in learner.named_parameters()}
        order = [names[id(p)].split(".")[0] for p in params]
        assert list(dict.fromkeys(order)) == [
            "ctx_t", "ctx_v", "proj_t", "compound_prompts_visual", "single_layer_v", "compound_prompts_text",
            "single_layer_t", "gates_v", "gates_t",
        ]  # fmt: skip
        first = order.index("compound_prompts_visual")
        assert all(a is b for a, b in zip(params[first : first + DEPTH - 1], learner.compound_prompts_visual))
        assert all(p.data_ptr() == learner.ctx_v.data_ptr() for p in learner.compound_prompts_visual)
    values, state = _observed(model), {}
    for _ in range(STEPS):
        grads = _block_gradients(oracle, values)
        optimizer.zero_grad()
        _loss(model).backward()
        optimizer.step()
        _reference_step(mode, optim, values, grads, state)
        observed = _observed(model)
        for name, expected in values.items():
            error = (observed[name] - expected).abs().max().item()
            assert error < TOL * max(1.0, expected.abs().max().item()), f"{mode}/{optim}: {name} off by {error:.2e}"
    if mode == "aliased":
        assert learner.ctx_v.grad is None  # as released: the storage moves only through its aliases


def test_aliased_moves_the_shared_prompt_further_than_tied(backbone):
    """One Adam step: each alias adds its own lr-sized step to the same numbers (the release on CPU)."""
    moved = {}
    for mode in ("tied", "aliased"):
        model = _model(backbone, mode)
        before = model.prompt_learner.ctx_v.detach().clone()
        optimizer = build_optimizer(model.prompt_learner, _optim_cfg("adam"))
        _loss(model).backward()
        optimizer.step()
        moved[mode] = (model.prompt_learner.ctx_v.detach() - before).abs().sum().item()
    assert moved["aliased"] > 1.2 * moved["tied"]


@pytest.mark.parametrize("mode", ["tied", "aliased", "copies"])
def test_checkpoint_round_trip_resumes_bit_identically(backbone, mode):
    model = _model(backbone, mode)
    optimizer = build_optimizer(model.prompt_learner, _optim_cfg("adam"))
    for _ in range(2):
        optimizer.zero_grad()
        _loss(model).backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save({"model": model.trainable_state_dict(), "optim": optimizer.state_dict()}, buffer)
    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    if mode != "copies":  # aliases are views of ctx_v: the file holds it once, like a tied one
        assert not any("compound_prompts_visual" in k for k in saved["model"])
    resumed = _model(backbone, mode)
    resumed.load_state_dict(saved["model"])
    resumed_optim = build_optimizer(resumed.prompt_learner, _optim_cfg("adam"))
    resumed_optim.load_state_dict(saved["optim"])
    if mode == "aliased":
        learner = resumed.prompt_learner
        assert all(p.data_ptr() == learner.ctx_v.data_ptr() for p in learner.compound_prompts_visual)
    for m, o in ((model, optimizer), (resumed, resumed_optim)):
        o.zero_grad()
        _loss(m).backward()
        o.step()
    for (name, a), b in zip(model.prompt_learner.named_parameters(), resumed.prompt_learner.parameters()):
        assert torch.equal(a, b), name


def test_aliases_survive_dtype_and_device_moves_and_count_once():
    tiny = clip.build_clip("random:tiny")
    learner = BMIPPrompts(tiny, resolve_bmip_options("released", shared_vision_prompt="aliased"))
    model = PromptedCLIP(tiny, learner, CLASSES).double().to("cpu")
    assert learner.ctx_v.dtype == torch.float64
    assert all(p.data_ptr() == learner.ctx_v.data_ptr() for p in learner.compound_prompts_visual)
    tied = PromptedCLIP(tiny, BMIPPrompts(tiny, resolve_bmip_options("released", shared_vision_prompt="tied")), CLASSES)
    assert model.count_trainable() == tied.count_trainable()
    with pytest.raises(ValueError, match="SHARED_VISION_PROMPT must be one of"):
        resolve_bmip_options("released", shared_vision_prompt="shared")


def test_a_one_tensor_checkpoint_starts_every_copy(backbone):
    """Checkpoints of tied/aliased runs (one ctx_v) load into the released copies: every block starts from it."""
    tied = _model(backbone, "tied")
    copies = _model(backbone, "copies")
    copies.load_state_dict(tied.trainable_state_dict())
    for p in copies.prompt_learner.compound_prompts_visual:
        assert torch.equal(p, tied.prompt_learner.ctx_v)
    assert not hasattr(copies.prompt_learner, "ctx_v")  # released layer 0 is proj_t(ctx_t)
