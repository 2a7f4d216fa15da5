"""How the two modalities talk, per prompted layer.

Every interaction combines a block's *own* prompt (its modality's learnable tokens) with the *foreign*
prompt (the other modality's tokens mapped into this tower's width by a projection head):

* ``none`` (IVLP) - own only; ``one-way`` (MaPLe) - the vision tower takes the projected text prompt;
  both are plain :class:`~prompting.deep.FixedPrompt` tokens built by the learners.
* ``gated`` (BMIP) - :class:`GatedMix`: ``w * own + (1 - w) * foreign`` with
  ``w = act(L(A))``, ``A`` the attention the layer's other tokens pay to the prompt slots (read through
  ``block.attention_probs``) and ``L`` a per-layer 1x1 linear gate.
* the ablations of BMIP's Table 5 - :func:`combine_add` (elementwise sum), :func:`combine_attention`
  (similarity-weighted residual) and :func:`combine_joint` (concatenation: twice the slots).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Optional, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from clip import ResidualAttentionBlock

from .deep import SlotView

__all__ = [
    "ATTN_REDUCE",
    "GATE_ACTIVATIONS",
    "GATE_TAG",
    "TEXT_QUERIES",
    "GateMonitor",
    "GatedLearner",
    "GatedMix",
    "SlotAttention",
    "combine_add",
    "combine_attention",
    "combine_joint",
    "gate_scalars",
    "validate_gate_activation",
]

TEXT_QUERIES = ("sos", "eot", "mean_valid")
ATTN_REDUCE = ("batch_mean", "per_sample")
GATE_ACTIVATIONS = ("sigmoid", "none")
# TensorBoard tag of a gate scalar; ``leaf`` is ``slot<i>`` (applied w), ``weight`` or ``bias``.
# tools/plot_gates.py parses these tags.
GATE_TAG = "gates/{tower}/block{block}/{leaf}"


@dataclass
class SlotAttention:
    """Attention paid to each prompt slot by the other tokens of a block, as a gate input.

    The slots are wherever ``slots`` says: the end of the vision sequence (BMIP's deep prompts) or right
    after CLS / SOS (MMRL's representation tokens). Vision tower: mean over all non-slot query rows (CLS
    and patches), as released. Text tower, by
    ``text_query``: ``sos`` (query row 0, released; under the causal mask SOS cannot see the slots, so the
    value is exactly 0 and the probe is skipped unless ``skip_zero_probe`` is False), ``eot`` (the EOT row
    of each class) or ``mean_valid`` (mean over the rows after the slots up to each class's EOT).
    ``reduce``: ``batch_mean`` averages over the sequences of the tower's batch (released: one weight per
    slot shared by the whole image batch / all classes), ``per_sample`` keeps one weight per sequence.
    Returns (m,) or (N, m) in fp32 (fp64 for fp64 towers, so exactness checks are not limited by fp32).
    """

    text_query: str = "sos"
    reduce: str = "batch_mean"
    detach: bool = True
    skip_zero_probe: bool = True

    def __post_init__(self) -> None:
        if self.text_query not in TEXT_QUERIES:
            raise ValueError(f"text attention query must be one of {TEXT_QUERIES}, got {self.text_query!r}")
        if self.reduce not in ATTN_REDUCE:
            raise ValueError(f"attention reduction must be one of {ATTN_REDUCE}, got {self.reduce!r}")

    def __call__(self, x: Tensor, block: ResidualAttentionBlock, slots: SlotView) -> Tensor:
        n_seq, n_slots = x.shape[0], slots.stop - slots.start
        dtype = torch.promote_types(x.dtype, torch.float32)
        if slots.tower == "vision" and slots.stop == x.shape[1]:  # slots at the end: every row before them
            attn = block.attention_to_suffix(x, slots.start, differentiable=not self.detach)
            attn = attn.to(dtype).mean(dim=1)
        elif slots.tower == "vision":
            positions = torch.arange(x.shape[1], device=x.device)
            rows = positions[(positions < slots.start) | (positions >= slots.stop)]
            probs = block.attention_probs(x, query_rows=rows)[:, :, slots.start : slots.stop]
            attn = probs.to(dtype).mean(dim=1)
        elif self.text_query == "sos" and self.skip_zero_probe:
            attn = x.new_zeros(n_seq, n_slots, dtype=dtype)
        elif self.text_query == "sos":
            attn = block.attention_probs(x, query_rows=slice(0, 1))[:, 0, slots.start : slots.stop].to(dtype)
        else:
            attn = self._text_rows(x, block, slots)
        if self.detach:
            attn = attn.detach()
        return attn.mean(dim=0) if self.reduce == "batch_mean" else attn

    def _text_rows(self, x: Tensor, block: ResidualAttentionBlock, slots: SlotView) -> Tensor:
        if slots.eot_indices is None:
            raise ValueError(
                "text attention queries 'eot'/'mean_valid' need the EOT positions of the classes"
            )
        eot = slots.eot_indices.to(x.device)
        probs = block.attention_probs(x, query_rows=slice(slots.stop, x.shape[1]))
        probs = probs.to(torch.promote_types(probs.dtype, torch.float32))
        cols = probs[:, :, slots.start : slots.stop]  # (N, L - stop, m): query rows stop..L-1
        rows = torch.arange(slots.stop, x.shape[1], device=x.device)
        if self.text_query == "eot":
            return cols[torch.arange(x.shape[0], device=x.device), eot - slots.stop]
        valid = (rows[None, :] <= eot[:, None]).to(probs.dtype)  # (N, L - stop)
        return (cols * valid[..., None]).sum(dim=1) / valid.sum(dim=1, keepdim=True)


@dataclass
class GatedMix:
    """BMIP's aggregation for one block: ``w * own + (1 - w) * foreign``, ``w = act(gate(A))``."""

    own: Tensor  # (m, D)
    foreign: Tensor  # (m, D)
    gate: nn.Linear  # Linear(1, 1)
    attention: SlotAttention
    activation: str = "sigmoid"
    # Called with the detached weights of every resolve (GateMonitor.recorder): what was really applied.
    on_weights: Optional[Callable[[Tensor], None]] = None

    @property
    def n_slots(self) -> int:
        return self.own.shape[-2]

    def weights(self, x: Tensor, block: ResidualAttentionBlock, slots: SlotView) -> Tensor:
        """Mixing weight per slot, (m,) or (N, m)."""
        attn = self.attention(x, block, slots).to(self.gate.weight.dtype)
        w = self.gate(attn.unsqueeze(-1)).squeeze(-1)
        return torch.sigmoid(w) if self.activation == "sigmoid" else w

    def resolve(self, x: Tensor, block: ResidualAttentionBlock, slots: SlotView) -> Tensor:
        w = self.weights(x, block, slots)
        if self.on_weights is not None:
            self.on_weights(w.detach())
        w = w.unsqueeze(-1)
        return w * self.own + (1 - w) * self.foreign


class GateMonitor:
    """Mean of the mixing weights the gates applied, per (tower, block) and slot, over forward passes.

    ``w`` depends on the attention of each batch, so the gate parameters alone do not say what was
    mixed; the trainer attaches a monitor for one epoch of training steps and logs :meth:`means`.
    Each pass contributes the mean over its sequences (``per_sample`` gates give one ``w`` per
    sequence); sums stay on the tensors' device until :meth:`means`, so recording costs no sync.
    """

    def __init__(self) -> None:
        self._sums: dict[tuple[str, int], Tensor] = {}
        self._counts: dict[tuple[str, int], int] = {}

    def recorder(self, tower: str, block: int) -> Callable[[Tensor], None]:
        """The ``GatedMix.on_weights`` callback of ``tower``'s block ``block``."""
        return partial(self.record, tower, block)

    def record(self, tower: str, block: int, weights: Tensor) -> None:
        """Add one pass's weights, (m,) or (N, m)."""
        per_slot = weights.detach().float().reshape(-1, weights.shape[-1]).mean(dim=0)
        key = (tower, block)
        self._sums[key] = self._sums[key] + per_slot if key in self._sums else per_slot
        self._counts[key] = self._counts.get(key, 0) + 1

    def means(self) -> dict[tuple[str, int], list[float]]:
        """Per (tower, block): the mean weight of every slot over the recorded passes."""
        return {key: (total / self._counts[key]).tolist() for key, total in sorted(self._sums.items())}


@runtime_checkable
class GatedLearner(Protocol):
    """A prompt learner with BMIP gates, whose trainer monitors and logs them (trainers/base.py)."""

    gate_monitor: Optional[GateMonitor]

    @property
    def gated(self) -> bool: ...

    def gate_scalars(self, monitor: Optional[GateMonitor] = None) -> dict[str, float]: ...


def gate_scalars(
    towers: Iterable[tuple[str, Sequence[int], Sequence[nn.Linear]]], monitor: Optional[GateMonitor] = None
) -> dict[str, float]:
    """TensorBoard scalars (tags :data:`GATE_TAG`) of gated blocks: per ``(tower, blocks, gates)`` every
    gate's weight and bias and, from ``monitor``, the mean applied weight of every slot."""
    scalars: dict[str, float] = {}
    for tower, blocks, gates in towers:
        for block, gate in zip(blocks, gates):
            scalars[GATE_TAG.format(tower=tower, block=block, leaf="weight")] = gate.weight.item()
            scalars[GATE_TAG.format(tower=tower, block=block, leaf="bias")] = gate.bias.item()
    for (tower, block), means in (monitor.means() if monitor is not None else {}).items():
        for slot, value in enumerate(means):
            scalars[GATE_TAG.format(tower=tower, block=block, leaf=f"slot{slot}")] = value
    return scalars


def combine_add(own: Tensor, foreign: Tensor) -> Tensor:
    """Addition ablation as the paper states it: the projected foreign prompt added with unit weight."""
    return own + foreign


def combine_attention(own: Tensor, foreign: Tensor) -> Tensor:
    """Attention ablation as released: ``softmax(F @ own^T) @ F + own`` (no scaling, no parameters)."""
    return torch.softmax(foreign @ own.transpose(-2, -1), dim=-1) @ foreign + own


def combine_joint(own: Tensor, foreign: Tensor, foreign_first: bool) -> Tensor:
    """Joint ablation: both prompts side by side (twice the slots); order as released per tower."""
    parts = (foreign, own) if foreign_first else (own, foreign)
    return torch.cat(parts, dim=-2)


def validate_gate_activation(name: str) -> str:
    """Return ``name`` if it is a known gate activation, else raise naming the choices."""
    if name not in GATE_ACTIVATIONS:
        raise ValueError(f"gate activation must be one of {GATE_ACTIVATIONS}, got {name!r}")
    return name
