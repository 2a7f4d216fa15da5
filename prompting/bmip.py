"""BMIP: bi-directional, attention-gated modality interaction of deep prompts (IJCAI 2025).

One implementation; each behaviour in which the released code and the paper differ is a field of
:class:`BMIPOptions` (config ``TRAINER.BMIP.*`` / ``SHARE.*``), grouped into two presets:

``released`` - what `LAMDASZ-ML/BMIP` does (the default of the configs that reproduce the paper's tables)
``paper``    - the method as section 4 of the paper describes it, without the release's defects.

Precedence: the preset fills every option left unset (``None``); an explicitly set option always wins.
See docs/BMIP.md for which discrepancy each option reproduces or fixes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .deep import FixedPrompt, LayerPrompt, PromptPlan, deep_blocks
from .interaction import (
    ATTN_REDUCE,
    TEXT_QUERIES,
    GatedMix,
    GateMonitor,
    SlotAttention,
    combine_add,
    combine_attention,
    combine_joint,
    gate_scalars,
    validate_gate_activation,
)
from .learners import _require_vit, normal_prompts
from .text import init_context

__all__ = ["BMIPOptions", "BMIPPrompts", "CONNECT_METHODS", "PRESETS", "resolve_bmip_options"]

# Interaction per prompted layer, named as the official ``CONNECT_METHOD`` values: "None" is BMIP's gate,
# the others are the aggregation ablations of the paper's Table 5 (official trainer ``BITP``).
CONNECT_METHODS = ("None", "add", "atten", "joint")
ADD_MODES = ("sum", "lists")
FIRST_VISION_PROMPTS = ("proj_text", "own", "combine")
# With a shared vision prompt (SHARE_PARAMETER_VISUAL), what the optimiser sees (docs/BMIP.md, "Shared
# vision prompt"): "tied" one tensor, one update per step; "aliased" one tensor plus one Parameter per
# prompted block viewing its storage, each its own optimiser entry (the release as it runs on CPU);
# "copies" one independent tensor per block, all starting from the same values (the release on a GPU:
# moving the model to the device gives every alias its own storage).
SHARED_VISION_PROMPTS = ("tied", "aliased", "copies")


@dataclass(frozen=True)
class BMIPOptions:
    """Resolved BMIP behaviour (every field set)."""

    n_ctx: int = 2
    depth: int = 9
    ctx_init: str = "a photo of a"
    connect_method: str = "None"
    text_attn_query: str = "sos"
    attn_reduce: str = "batch_mean"
    text_depth_offset: int = 1
    first_vision_prompt: str = "proj_text"
    gate_act: str = "sigmoid"
    detach_attn: bool = True
    share_visual: bool = True
    share_text: bool = True
    add_mode: str = "lists"
    shared_vision_prompt: str = "copies"

    def __post_init__(self) -> None:
        checks = {
            "connect_method": (self.connect_method, CONNECT_METHODS),
            "text_attn_query": (self.text_attn_query, TEXT_QUERIES),
            "attn_reduce": (self.attn_reduce, ATTN_REDUCE),
            "first_vision_prompt": (self.first_vision_prompt, FIRST_VISION_PROMPTS),
            "add_mode": (self.add_mode, ADD_MODES),
            "shared_vision_prompt": (self.shared_vision_prompt, SHARED_VISION_PROMPTS),
        }
        for name, (value, choices) in checks.items():
            if value not in choices:
                raise ValueError(f"TRAINER.BMIP.{name.upper()} must be one of {choices}, got {value!r}")
        validate_gate_activation(self.gate_act)
        if self.text_depth_offset not in (0, 1):
            raise ValueError(f"TRAINER.BMIP.TEXT_DEPTH_OFFSET must be 0 or 1, got {self.text_depth_offset}")
        if self.n_ctx < 1 or self.depth < 1:
            raise ValueError(f"BMIP needs N_CTX >= 1 and PROMPT_DEPTH >= 1, got {self.n_ctx} and {self.depth}")
        if self.connect_method == "None" and self.first_vision_prompt == "combine":
            raise ValueError(
                "TRAINER.BMIP.FIRST_VISION_PROMPT 'combine' needs an ablation CONNECT_METHOD (add/atten/joint): "
                "the gated mix has no attention to read before block 0"
            )
        if self.connect_method == "joint" and self.first_vision_prompt != "combine":
            raise ValueError(
                "CONNECT_METHOD 'joint' uses 2*N_CTX vision slots, so FIRST_VISION_PROMPT must be 'combine', "
                f"got {self.first_vision_prompt!r}"
            )


# Per preset: option values, and the layer-0 vision prompt per interaction (gated vs. ablations).
PRESETS: dict[str, dict[str, Any]] = {
    "released": dict(
        text_attn_query="sos", attn_reduce="batch_mean", text_depth_offset=1, gate_act="sigmoid",
        detach_attn=True, share_visual=True, share_text=True, add_mode="lists", shared_vision_prompt="copies",
        first_vision_prompt={"None": "proj_text", "ablation": "combine"},
    ),
    "paper": dict(
        text_attn_query="mean_valid", attn_reduce="per_sample", text_depth_offset=0, gate_act="sigmoid",
        detach_attn=True, share_visual=False, share_text=False, add_mode="sum", shared_vision_prompt="tied",
        first_vision_prompt={"None": "own", "ablation": "combine"},
    ),
}


def resolve_bmip_options(preset: str, **explicit: Any) -> BMIPOptions:
    """Options of ``preset`` with every non-None value of ``explicit`` overriding it."""
    if preset not in PRESETS:
        raise ValueError(f"TRAINER.BMIP.PRESET must be one of {sorted(PRESETS)}, got {preset!r}")
    known = {f.name for f in fields(BMIPOptions)}
    unknown = set(explicit) - known
    if unknown:
        raise ValueError(f"unknown BMIP options {sorted(unknown)}; known: {sorted(known)}")
    values = dict(PRESETS[preset])
    method = explicit.get("connect_method") or "None"
    values["first_vision_prompt"] = values["first_vision_prompt"]["None" if method == "None" else "ablation"]
    values.update({k: v for k, v in explicit.items() if v is not None})
    return replace(BMIPOptions(), **values)


def _clones(module: nn.Module, count: int) -> nn.ModuleList:
    """``count`` deep copies of one initialisation (the released per-layer heads all start identical)."""
    return nn.ModuleList([copy.deepcopy(module) for _ in range(count)])


class CrossModalHeads:
    """BMIP's cross-modal heads and gated mix, for every learner that mixes the two towers' tokens the BMIP
    way (:class:`BMIPPrompts`, MMRL_BMIP's :class:`~prompting.mmrl.MMRLBMIPRepresentations`).

    The heads keep the release's attribute names, so checkpoints keep their keys: G_v (text -> vision)
    ``single_layer_t`` with ``share_text``, else ``compound_prompt_projections_t[k]``; G_l (vision ->
    text) ``single_layer_v`` with ``share_visual``, else ``compound_prompt_projections_v[k]``. The module
    provides ``options``, ``attention`` (its :class:`SlotAttention`) and ``gate_monitor``.
    """

    options: BMIPOptions
    attention: SlotAttention
    gate_monitor: Optional[GateMonitor]

    def add_cross_modal_heads(self, d_t: int, d_v: int, n_to_vision: int, n_to_text: int) -> None:
        """Create G_v then G_l (this order draws the release's initialisation); per-layer heads are clones."""
        if self.options.share_text:
            self.single_layer_t = nn.Linear(d_t, d_v)
        else:
            self.compound_prompt_projections_t = _clones(nn.Linear(d_t, d_v), n_to_vision)
        if self.options.share_visual:
            self.single_layer_v = nn.Linear(d_v, d_t)
        else:
            self.compound_prompt_projections_v = _clones(nn.Linear(d_v, d_t), n_to_text)

    def to_vision(self, k: int) -> nn.Linear:
        """G_v of layer ``k``: text tokens into the vision width."""
        return self.single_layer_t if self.options.share_text else self.compound_prompt_projections_t[k]

    def to_text(self, k: int) -> nn.Linear:
        """G_l of layer ``k``: vision tokens into the text width."""
        return self.single_layer_v if self.options.share_visual else self.compound_prompt_projections_v[k]

    def gated_mix(self, own: Tensor, foreign: Tensor, gate: nn.Linear, tower: str, block: int) -> GatedMix:
        """``w * own + (1 - w) * foreign`` with ``w`` from ``gate``, recorded by the gate monitor if one is set."""
        monitor = self.gate_monitor
        record = None if monitor is None else monitor.recorder(tower, block)
        return GatedMix(own, foreign, gate, self.attention, self.options.gate_act, on_weights=record)


class BMIPPrompts(CrossModalHeads, nn.Module):
    """BMIP's prompt learner and per-layer interaction.

    Tensors (n = N_CTX, J = PROMPT_DEPTH, d_t / d_v the tower widths; only those the options use exist):

    * ``ctx_t`` (n, d_t) text input context from ``ctx_init``; ``proj_t`` Linear d_t->d_v (layer-0 vision
      prompt ``proj_t(ctx_t)``, as MaPLe);
    * ``compound_prompts_text[k]`` (n, d_t), k = 0..J-2: own text prompt of block k+1, N(0, 0.02^2);
    * vision own prompts: with ``share_visual`` one N(0, 0.02^2) draw, held as ``shared_vision_prompt``
      says: ``tied`` one tensor ``ctx_v``; ``aliased`` ``ctx_v`` plus ``compound_prompts_visual[k]``,
      Parameters viewing its storage (one optimiser entry each); ``copies`` independent
      ``compound_prompts_visual[k]`` starting equal. Without sharing, ``compound_prompts_visual[k]``
      U(+-sqrt(6/(48+d_v))) per block. ``ctx_v`` is also the own layer-0 vision prompt
      (``first_vision_prompt`` own/combine);
    * F_v (text->vision): ``single_layer_t`` or per-layer ``compound_prompt_projections_t[k]``;
      F_l (vision->text): ``single_layer_v`` or ``compound_prompt_projections_v[k]``;
    * gates ``gates_v[k]`` / ``gates_t[k]``: Linear(1, 1) per prompted block (CONNECT_METHOD "None").

    Block b >= 1 of the vision tower mixes own ``P~_{b-1}`` with foreign ``F_v(P_{b-1})``; block b of the
    text tower mixes own ``P_{b-1}`` with foreign ``F_l(P~_{b-1})``; text stops ``text_depth_offset``
    blocks earlier than vision (released: 1).
    """

    def __init__(self, clip_model: nn.Module, options: BMIPOptions, skip_zero_probe: bool = True) -> None:
        super().__init__()
        _require_vit(clip_model, "BMIP")
        self.options = o = options
        self.learns_text = True
        d_t, d_v = clip_model.text_width, clip_model.vision_width
        n, joint = o.n_ctx, o.connect_method == "joint"
        n_blocks = min(clip_model.text_layers, clip_model.vision_layers)
        ctx, self.prompt_prefix = init_context(clip_model, n, o.ctx_init, prefix_tokens=2 * n if joint else n)
        self.n_ctx = n
        self.ctx_t = nn.Parameter(ctx)

        # Which blocks get which list entry. Released "add" concatenates the own and foreign lists
        # (BITP code): blocks 1..J-1 take own prompts, the remaining blocks the projected foreign ones.
        self.lists_mode = o.connect_method == "add" and o.add_mode == "lists"
        n_own = len(deep_blocks(o.depth, n_blocks))
        if self.lists_mode:
            n_foreign_v = n_foreign_t = min(n_own, n_blocks - 1 - n_own)
            self.vision_blocks = range(1, 1 + n_own + n_foreign_v)
            self.text_blocks = range(1, 1 + n_own + n_foreign_t)
        else:
            self.vision_blocks = deep_blocks(o.depth, n_blocks)
            self.text_blocks = deep_blocks(o.depth, n_blocks, offset=o.text_depth_offset)
            n_foreign_v, n_foreign_t = len(self.vision_blocks), len(self.text_blocks)

        if o.first_vision_prompt in ("proj_text", "combine"):
            self.proj_t = nn.Linear(d_t, d_v)
        self.compound_prompts_text = normal_prompts(n_own, n, d_t)
        self.shared_mode = o.shared_vision_prompt if o.share_visual else None
        if o.share_visual or o.first_vision_prompt in ("own", "combine"):
            ctx_v = normal_prompts(1, n, d_v)[0]  # the same draw in every mode
            if self.shared_mode != "copies" or o.first_vision_prompt != "proj_text":
                self.ctx_v = ctx_v
            if self.shared_mode == "aliased":  # one Parameter per block over ctx_v's storage
                self.compound_prompts_visual = nn.ParameterList([nn.Parameter(ctx_v.detach()) for _ in range(n_own)])
            elif self.shared_mode == "copies":
                self.compound_prompts_visual = nn.ParameterList(
                    [nn.Parameter(ctx_v.detach().clone()) for _ in range(n_own)]
                )
        if self.shared_mode is not None:
            self._register_load_state_dict_pre_hook(BMIPPrompts._adapt_shared_vision, with_module=True)
        if self.shared_mode == "aliased":
            self._register_state_dict_hook(BMIPPrompts._drop_aliases)
        if not o.share_visual:
            bound = math.sqrt(6.0 / (3 * 16 + d_v))  # the release's VPT-style bound, patch size fixed at 16
            self.compound_prompts_visual = nn.ParameterList(
                [nn.Parameter(torch.empty(n, d_v).uniform_(-bound, bound)) for _ in range(n_own)]
            )
        self.add_cross_modal_heads(d_t, d_v, n_foreign_v, n_foreign_t)
        if o.connect_method == "None":
            self.gates_v = nn.ModuleList([nn.Linear(1, 1) for _ in self.vision_blocks])
            self.gates_t = nn.ModuleList([nn.Linear(1, 1) for _ in self.text_blocks])
        self.attention = SlotAttention(
            text_query=o.text_attn_query, reduce=o.attn_reduce, detach=o.detach_attn,
            skip_zero_probe=skip_zero_probe,
        )
        # Set by the trainer for the training steps of an epoch: records every applied mixing weight.
        self.gate_monitor: Optional[GateMonitor] = None
        # Parameter (= optimiser) order of the release, created above in the order that fixes the initial
        # values: ctx_t, ctx_v, then proj_t, vision prompts, F_l, text prompts, F_v, vision and text gates.
        release_order = (
            "proj_t", "compound_prompts_visual", "single_layer_v", "compound_prompt_projections_v",
            "compound_prompts_text", "single_layer_t", "compound_prompt_projections_t", "gates_v", "gates_t",
        )  # fmt: skip
        self._modules = {
            **{name: self._modules[name] for name in release_order if name in self._modules},
            **{name: m for name, m in self._modules.items() if name not in release_order},
        }

    @property
    def gated(self) -> bool:
        """Whether the layers mix through gates (CONNECT_METHOD "None"), i.e. there are weights to log."""
        return hasattr(self, "gates_v")

    def gate_scalars(self, monitor: Optional[GateMonitor] = None) -> dict[str, float]:
        """TensorBoard scalars of every gate and, from ``monitor``, the applied weights
        (:func:`~prompting.interaction.gate_scalars`); none without gates."""
        if not self.gated:
            return {}
        return gate_scalars(
            (("vision", self.vision_blocks, self.gates_v), ("text", self.text_blocks, self.gates_t)), monitor
        )

    # ---- shared vision prompt: aliases and checkpoints ---------------------------------------------
    def _alias_keys(self, prefix: str) -> list[str]:
        return [f"{prefix}compound_prompts_visual.{k}" for k in range(len(self.compound_prompts_text))]

    def _apply(self, fn: Any, recurse: bool = True) -> BMIPPrompts:
        """Device/dtype moves give every Parameter its own storage; re-tie the aliases to ``ctx_v``."""
        result = super()._apply(fn, recurse)
        if self.shared_mode == "aliased":
            for alias in self.compound_prompts_visual:
                alias.data = self.ctx_v.data
        return result

    @staticmethod
    def _drop_aliases(module: BMIPPrompts, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        """Aliased checkpoints hold ``ctx_v`` once (the aliases are views of it): the same file as tied."""
        for key in module._alias_keys(prefix):
            state_dict.pop(key, None)

    @staticmethod
    def _adapt_shared_vision(module: BMIPPrompts, state_dict: dict, prefix: str, *args: Any) -> None:
        """Load a shared vision prompt saved in any of the three modes into this one.

        One tensor (tied/aliased checkpoint) into copies: every block starts from it. Per-block copies
        into one tensor: only if all copies are equal (never trained apart), else an error that names
        the option; a release checkpoint trained on a GPU holds trained, distinct copies.
        """
        ctx_key, keys = f"{prefix}ctx_v", module._alias_keys(prefix)
        copies = [state_dict[k] for k in keys if k in state_dict]
        if module.shared_mode == "copies":
            if not copies and ctx_key in state_dict:
                state_dict.update(dict.fromkeys(keys, state_dict[ctx_key]))
            if not hasattr(module, "ctx_v"):
                state_dict.pop(ctx_key, None)  # the release's ctx_v, unused by its forward here
            return
        if copies:
            if len(copies) != len(keys) or any(not torch.equal(c, copies[0]) for c in copies):
                raise ValueError(
                    "this checkpoint holds a separately trained shared vision prompt per block (as the release "
                    "trains on a GPU); load it with TRAINER.BMIP.SHARED_VISION_PROMPT copies, not "
                    f"{module.shared_mode!r}"
                )
            state_dict[ctx_key] = copies[0]
            for key in keys:
                del state_dict[key]
        if module.shared_mode == "aliased" and ctx_key in state_dict:
            state_dict.update(dict.fromkeys(keys, state_dict[ctx_key]))

    # ---- prompt lists ---------------------------------------------------------------------------
    def own_vision(self, k: int) -> Tensor:
        """P~_k: block k+1's own vision prompt (the shared ``ctx_v`` when tied)."""
        return self.compound_prompts_visual[k] if hasattr(self, "compound_prompts_visual") else self.ctx_v

    def foreign_vision(self, k: int) -> Tensor:
        """F_v(P_k): text prompt k projected into the vision tower."""
        return self.to_vision(k)(self.compound_prompts_text[k])

    def foreign_text(self, k: int) -> Tensor:
        """F_l(P~_k): vision prompt k projected into the text tower."""
        return self.to_text(k)(self.own_vision(k))

    def first_vision_prompt(self) -> Tensor:
        mode = self.options.first_vision_prompt
        if mode == "proj_text":
            return self.proj_t(self.ctx_t)
        if mode == "own":
            return self.ctx_v
        return self._combine(self.ctx_v, self.proj_t(self.ctx_t), foreign_first=True)

    def _combine(self, own: Tensor, foreign: Tensor, foreign_first: bool) -> Tensor:
        method = self.options.connect_method
        if method == "add":
            return combine_add(own, foreign)
        if method == "atten":
            return combine_attention(own, foreign)
        return combine_joint(own, foreign, foreign_first=foreign_first)

    def _layer(
        self, own: Tensor, foreign: Tensor, gates: Optional[nn.ModuleList], i: int, block: int, text: bool
    ) -> LayerPrompt:
        if gates is not None:
            return self.gated_mix(own, foreign, gates[i], "text" if text else "vision", block)
        # Released Joint: text slots hold [foreign; own], vision slots [own; foreign].
        return FixedPrompt(self._combine(own, foreign, foreign_first=text))

    def forward(self) -> PromptPlan:
        plan = PromptPlan(text_ctx=self.ctx_t, vision_input=self.first_vision_prompt())
        n_own = len(self.compound_prompts_text)
        if self.lists_mode:
            for i, block in enumerate(self.vision_blocks):
                tokens = self.own_vision(i) if i < n_own else self.foreign_vision(i - n_own)
                plan.vision_layers[block] = FixedPrompt(tokens)
            for i, block in enumerate(self.text_blocks):
                tokens = self.compound_prompts_text[i] if i < n_own else self.foreign_text(i - n_own)
                plan.text_layers[block] = FixedPrompt(tokens)
            return plan
        gates_v = getattr(self, "gates_v", None)
        gates_t = getattr(self, "gates_t", None)
        for i, block in enumerate(self.vision_blocks):
            plan.vision_layers[block] = self._layer(
                self.own_vision(i), self.foreign_vision(i), gates_v, i, block, text=False
            )
        for i, block in enumerate(self.text_blocks):
            own = self.compound_prompts_text[i]
            plan.text_layers[block] = self._layer(own, self.foreign_text(i), gates_t, i, block, text=True)
        return plan
