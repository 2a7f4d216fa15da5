"""Deep prompt placement: which blocks of which tower get prompt tokens, and the hook that writes them.

Conventions of the whole family (methods_spec section 0.1):

* text prompt tokens *replace* positions ``1..m`` of the class sequences (right after SOS);
* vision prompt tokens are *appended* after the patch tokens at the input (no positional embedding) and
  deep prompts *replace* the last ``m`` positions;
* "prompt depth J": block 0 sees the input prompts, blocks ``1..J-1`` get fresh tokens before they run,
  blocks ``J..`` carry whatever the slots hold.

A prompt learner describes one forward pass as a :class:`PromptPlan`. Per block it gives a
:class:`LayerPrompt` whose ``resolve`` returns the tokens for the slots: a fixed tensor, or a function of the
tokens about to enter the block (BMIP's attention-gated mix, see :mod:`prompting.interaction`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional, Protocol, Union

import torch
from torch import Tensor

from clip import BlockInput, Hook, PrefixedProjection, Projection, ResidualAttentionBlock

__all__ = [
    "FixedPrompt",
    "LayerPrompt",
    "ProjectionMap",
    "PromptPlan",
    "Residual",
    "SlotView",
    "deep_blocks",
    "prompt_hook",
]

TEXT = "text"
VISION = "vision"


@dataclass(frozen=True)
class SlotView:
    """Where the prompt slots are in the sequence a hook sees, plus what a gate may need to know."""

    tower: str  # "text" or "vision"
    start: int  # first slot position
    stop: int  # one past the last slot position
    eot_indices: Optional[Tensor] = None  # text tower: EOT position of every class sequence


# MMA: (block input, block) -> tensor added to the block's output.
Residual = Callable[[Tensor, ResidualAttentionBlock], Tensor]
# LoRA: (block input, block) -> the block's (adapted) queries, keys and values of that input.
ProjectionMap = Callable[[Tensor, ResidualAttentionBlock], Projection]


class LayerPrompt(Protocol):
    """Tokens for the prompt slots of one block: (m, D) shared or (N, m, D) per sequence."""

    def resolve(self, x: Tensor, block: ResidualAttentionBlock, slots: SlotView) -> Tensor: ...

    @property
    def n_slots(self) -> int: ...


@dataclass
class FixedPrompt:
    """Slot tokens that do not depend on the sequence (VPT, IVLP, MaPLe, the ablations)."""

    tokens: Tensor

    @property
    def n_slots(self) -> int:
        return self.tokens.shape[-2]

    def resolve(self, x: Tensor, block: ResidualAttentionBlock, slots: SlotView) -> Tensor:
        return self.tokens


@dataclass
class PromptPlan:
    """Everything one forward pass inserts into the two towers.

    ``text_ctx`` is None for methods that do not learn text (VPT: fixed hand-written prompts);
    ``vision_input`` is None when the image tower gets no prompts (CoOp-like, language-only IVLP).
    """

    text_ctx: Optional[Tensor] = None
    vision_input: Optional[Tensor] = None
    text_layers: dict[int, LayerPrompt] = field(default_factory=dict)
    vision_layers: dict[int, LayerPrompt] = field(default_factory=dict)
    # Optional maps applied to the towers' output features before normalisation (CoPrompt's adapters).
    text_head: Optional[Callable[[Tensor], Tensor]] = None
    image_head: Optional[Callable[[Tensor], Tensor]] = None
    # Per block: residuals added after the block (MMA's adapters) and adapted projections (LoRA).
    text_residuals: dict[int, Residual] = field(default_factory=dict)
    vision_residuals: dict[int, Residual] = field(default_factory=dict)
    text_projections: dict[int, ProjectionMap] = field(default_factory=dict)
    vision_projections: dict[int, ProjectionMap] = field(default_factory=dict)
    # Per block: K tokens right after the first token (SOS / CLS), inserted before the first of these
    # blocks (the sequence grows by K; that layer must be a FixedPrompt) and written into those K slots
    # before the later ones (MMRL; MMRL_BMIP's gated mix).
    text_front: dict[int, LayerPrompt] = field(default_factory=dict)
    vision_front: dict[int, LayerPrompt] = field(default_factory=dict)


def deep_blocks(depth: int, n_blocks: int, offset: int = 0) -> range:
    """Blocks that receive fresh deep prompts for prompt depth ``depth``: ``1 .. depth-1-offset``.

    ``offset`` = 1 reproduces BMIP's released text tower (one prompted block fewer than the vision tower).
    """
    if depth < 0 or depth > n_blocks:
        raise ValueError(f"prompt depth must be in [0, {n_blocks}] for a {n_blocks}-block tower, got {depth}")
    return range(1, max(depth - offset, 1))


def _replace_slots(x: Tensor, tokens: Tensor, start: int, stop: int) -> Tensor:
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(0).expand(x.shape[0], -1, -1)
    elif tokens.shape[0] != x.shape[0]:
        raise ValueError(f"per-sequence prompts have batch {tokens.shape[0]}, the tower sees {x.shape[0]}")
    if tokens.shape[1] != stop - start or tokens.shape[2] != x.shape[2]:
        raise ValueError(
            f"prompt tokens of shape {tuple(tokens.shape)} do not fit slots {start}..{stop - 1} "
            f"of width {x.shape[2]}"
        )
    return torch.cat([x[:, :start], tokens.to(x.dtype), x[:, stop:]], dim=1)


def prompt_hook(
    layers: dict[int, LayerPrompt],
    tower: str,
    eot_indices: Optional[Tensor] = None,
    reuse_projections: bool = False,
    residuals: Optional[dict[int, Residual]] = None,
    projections: Optional[dict[int, ProjectionMap]] = None,
    front: Optional[dict[int, LayerPrompt]] = None,
) -> Optional[Hook]:
    """The CLIP hook that writes ``layers[index]`` into the prompt slots before block ``index``.

    Text slots are positions ``1..m``; vision slots are the last ``m`` positions (``m`` = the layer's
    token count, so a layer may use more slots than the input context, as the Joint ablation does).
    With ``reuse_projections``, a layer that probed the block's attention (BMIP's gate) hands the probe's
    queries/keys/values to the block, re-projecting only the replaced slot rows: the block then skips a
    second projection of the whole sequence (exact up to rounding: the projection is row-wise). A probe
    that fused the attention of the rows before the slots (``attention_to_suffix``, in evaluation and for
    a detached probe in training) hands that over too, and the block only extends it by the slot keys.
    ``residuals[index]`` (MMA's adapters) maps the block input (after the slots are written) to a tensor
    added to the block's output; ``projections[index]`` (LoRA) gives the block's adapted queries, keys
    and values of that input (a probe's projection is then not reused for the block's own pass).
    ``front[index]`` (MMRL) are ``K`` tokens right after the first token: the first block listed inserts
    them (the sequence grows; a :class:`FixedPrompt`, as no slots exist yet for a gate to probe), the later
    ones resolve them on slots ``1..K`` like any layer (MMRL_BMIP's gated mix; text EOT positions shifted
    by ``K``). They cannot share the text tower with slot prompts (both would claim the positions after SOS).
    Returns None when there is nothing to insert, so the tower runs unhooked.
    """
    if tower not in (TEXT, VISION):
        raise ValueError(f"tower must be {TEXT!r} or {VISION!r}, got {tower!r}")
    residuals = residuals or {}
    projections = projections or {}
    front = front or {}
    if not (layers or residuals or projections or front):
        return None
    if front and layers and tower == TEXT:
        raise ValueError("text slot prompts and front tokens (MMRL) would both occupy the positions after SOS")
    first_front = min(front, default=None)
    if first_front is not None and not isinstance(front[first_front], FixedPrompt):
        raise ValueError(
            f"the first front layer (block {first_front}) inserts its tokens, so it must be a FixedPrompt: "
            f"there are no slots yet whose attention a gate could read, got {type(front[first_front]).__name__}"
        )

    def write_slots(
        layer: LayerPrompt, x: Tensor, block: ResidualAttentionBlock, slots: SlotView
    ) -> Union[Tensor, BlockInput]:
        start, stop = slots.start, slots.stop
        if not reuse_projections:
            return _replace_slots(x, layer.resolve(x, block, slots), start, stop)
        with block.memoize_projection() as memo:
            tokens = layer.resolve(x, block, slots)
        replaced = _replace_slots(x, tokens, start, stop)
        probed = memo.get(id(x))
        if probed is None or probed.x is not x:
            return replaced
        prefix = probed.prefix
        if prefix is not None and prefix.stop <= start:  # the probed rows before the slots are unchanged
            return BlockInput(replaced, PrefixedProjection(prefix, block.project(replaced[:, prefix.stop :])))
        return BlockInput(replaced, block.project_rows(probed.projection, replaced, start, stop))

    def write_front(index: int, x: Tensor, block: ResidualAttentionBlock) -> Union[Tensor, BlockInput]:
        layer = front[index]
        k = layer.n_slots
        if index == first_front:
            tokens = layer.tokens.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
            return torch.cat([x[:, :1], tokens, x[:, 1:]], dim=1)
        eot = None if eot_indices is None else eot_indices + k
        return write_slots(layer, x, block, SlotView(tower, 1, 1 + k, eot))

    def slot_view(layer: LayerPrompt, x: Tensor) -> SlotView:
        m = layer.n_slots
        start, stop = (1, 1 + m) if tower == TEXT else (x.shape[1] - m, x.shape[1])
        return SlotView(tower, start, stop, eot_indices)

    def hook(index: int, x: Tensor, block: ResidualAttentionBlock) -> Union[Tensor, BlockInput, None]:
        layer, residual, project = layers.get(index), residuals.get(index), projections.get(index)
        written = write_front(index, x, block) if index in front else None
        if layer is not None:
            if written is not None:  # the slot layer changes more rows: the front's projection is stale
                x = written.x if isinstance(written, BlockInput) else written
            written = write_slots(layer, x, block, slot_view(layer, x))
        if residual is None and project is None:
            return written
        if isinstance(written, BlockInput):
            tokens, projection = written.x, written.projection
        else:
            tokens, projection = (x if written is None else written), None
        if project is not None:
            projection = project(tokens, block)
        return BlockInput(tokens, projection, None if residual is None else residual(tokens, block))

    return hook
