"""Plot what BMIP's gates did: the mixing weight of every prompted block and slot, vision and text, per epoch.

    python -m tools.plot_gates RUN_DIR [--out PREFIX] [--source auto|tensorboard|checkpoints]
                                       [--attention A] [--gate-act sigmoid|none]

BMIP mixes a block's own prompt with the other modality's projected prompt as ``w * own + (1 - w) * foreign``
with ``w = act(gate(a))``: ``gate`` is the block's Linear(1, 1), ``a`` the attention the block's other
tokens pay to the prompt slot (prompting/interaction.py). ``w`` near 1 keeps the block's own prompt, near
0 takes the other modality's. Two sources, ``--source auto`` (default) takes the first that exists:

* ``tensorboard``: the scalars ``gates/<tower>/block<b>/slot<i>`` the trainers write after every epoch
  (``RUN_DIR/tensorboard``; trainers/base.py; at the epoch's last iteration, ``train/epoch`` names the epoch) - the ``w`` the forward passes really applied, per slot,
  averaged over the epoch's training steps. Every epoch is there, whatever ``TRAIN.CHECKPOINT_FREQ``.
* ``checkpoints``: the gate parameters of every checkpoint (``<model name>/model.pth.tar-<epoch>``;
  ``model-best.pth.tar`` when it is the only one), with ``w`` drawn at the attention value ``--attention``
  (default 0) for all slots. With the released options the text gates see exactly 0 (the SOS row cannot
  see the slots under the causal mask), so there this is the applied ``w``; vision slots receive
  attention of the order of 1/tokens, so ``a = 0`` is a close reading unless a gate's weight grew large.
  One point per epoch needs a checkpoint per epoch (``TRAIN.CHECKPOINT_FREQ 1``). This is the way for
  runs without TensorBoard events (tensorboard not installed, or runs older than the gate scalars).

Output: ``PREFIX.png`` and ``PREFIX.pdf`` (default ``RUN_DIR/gates``): left, ``w`` per block (and slot)
over the epochs; right, ``w`` per block at the last epoch. The gate activation (which fixes the y range,
and ``w`` for checkpoints) is read from the run's ``log.txt`` (``BMIP options: ...``); ``--gate-act``
overrides it.

Only matplotlib, tensorboard (for the events) and, for checkpoints, torch are imported, each when needed.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "GateCurves",
    "GateHistory",
    "curves_from_checkpoints",
    "find_gate_checkpoints",
    "gate_weight",
    "main",
    "draw_gates",
    "plot_gates",
    "read_gate_curves",
    "slot_style",
    "read_gate_history",
    "read_scalars",
    "read_tensorboard_curves",
]

SIDES = ("vision", "text")
SOURCES = ("auto", "tensorboard", "checkpoints")
TENSORBOARD_DIR = "tensorboard"  # the engine's writer folder under OUTPUT_DIR
EPOCH_TAG = "train/epoch"  # engine.engine.trainer.EPOCH_TAG (not imported: this tool needs no torch)
_GATE_KEY = re.compile(r"(?:^|\.)gates_([vt])\.(\d+)\.(weight|bias)$")
_SLOT_TAG = re.compile(r"^gates/(vision|text)/block(\d+)/slot(\d+)$")  # prompting.interaction.GATE_TAG
_CHECKPOINT = re.compile(r"^model\.pth\.tar-(\d+)$")
_BEST = "model-best.pth.tar"
_GATE_ACT_IN_LOG = re.compile(r"BMIP options: .*gate_act='(\w+)'")


@dataclass
class GateHistory:
    """Gate parameters per saved epoch: ``params[side][epoch] = [(weight, bias) of gate k, ...]``.

    Gate ``k`` serves block ``k + 1`` (``prompting.deep.deep_blocks`` starts the deep prompts at block 1).
    """

    model_dir: str
    params: dict[str, dict[int, list[tuple[float, float]]]]

    @property
    def epochs(self) -> list[int]:
        return sorted({e for side in self.params.values() for e in side})


@dataclass
class GateCurves:
    """What the figure shows: ``values[side][epoch][block]`` = ``w`` per slot (one entry: all slots)."""

    source: str  # where the values come from, for the title and the printout
    ylabel: str
    values: dict[str, dict[int, dict[int, list[float]]]]

    @property
    def epochs(self) -> list[int]:
        return sorted({e for side in self.values.values() for e in side})


def gate_weight(weight: float, bias: float, attention: float, activation: str) -> float:
    """The mixing weight ``w`` of the own prompt that a gate gives for attention ``attention``."""
    z = weight * attention + bias
    if activation == "sigmoid":
        return 1.0 / (1.0 + math.exp(-z))
    if activation == "none":
        return z
    raise ValueError(f"gate activation must be 'sigmoid' or 'none', got {activation!r}")


# ---- checkpoints -------------------------------------------------------------------------------------
def _gates_of(state_dict: dict) -> dict[str, list[tuple[float, float]]]:
    found: dict[str, dict[int, dict[str, float]]] = {"vision": {}, "text": {}}
    for key, tensor in state_dict.items():
        match = _GATE_KEY.search(key)
        if match:
            side = "vision" if match.group(1) == "v" else "text"
            found[side].setdefault(int(match.group(2)), {})[match.group(3)] = float(tensor.float().reshape(-1)[0])
    return {
        side: [(gates[k]["weight"], gates[k]["bias"]) for k in sorted(gates)] for side, gates in found.items()
    }


def find_gate_checkpoints(run_dir: str) -> tuple[str, dict[int, str]]:
    """The model folder of ``run_dir`` holding gate checkpoints and its ``{epoch: path}``.

    Epoch numbers are the checkpoint's (1-based). ``model-best.pth.tar`` is used only when no numbered
    checkpoint exists; its epoch is read from the file.
    """
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"Run directory {run_dir} does not exist")
    candidates = {}
    for folder, _, files in os.walk(run_dir):
        numbered = {int(m.group(1)): os.path.join(folder, f) for f in files if (m := _CHECKPOINT.match(f))}
        if numbered:
            candidates[folder] = numbered
        elif _BEST in files:
            candidates[folder] = {0: os.path.join(folder, _BEST)}
    if not candidates:
        raise FileNotFoundError(
            f"{run_dir} has no gate scalars ({TENSORBOARD_DIR}/) and no checkpoint (model.pth.tar-<epoch> or {_BEST}): "
            "pass the OUTPUT_DIR of a BMIP-family training run (an eval-only run saves neither)"
        )
    if len(candidates) > 1:
        raise ValueError(
            f"Several model folders with checkpoints under {run_dir}: {sorted(candidates)}; pass one run's OUTPUT_DIR"
        )
    return next(iter(candidates.items()))


def read_gate_history(run_dir: str, allow_pickle: bool = False) -> GateHistory:
    """Gate (weight, bias) pairs of every checkpoint of the run."""
    from engine.utils import load_checkpoint

    model_dir, paths = find_gate_checkpoints(run_dir)
    params: dict[str, dict[int, list[tuple[float, float]]]] = {side: {} for side in SIDES}
    for epoch, path in sorted(paths.items()):
        checkpoint = load_checkpoint(path, allow_pickle=allow_pickle)
        epoch = epoch or int(checkpoint.get("epoch", 0))
        gates = _gates_of(checkpoint.get("state_dict", checkpoint))
        if not gates["vision"] and not gates["text"]:
            raise ValueError(
                f"{path} holds no BMIP gate parameters (keys '...gates_v.<k>.weight/bias'): only BMIP runs with "
                "CONNECT_METHOD 'None' (the gated mix) have gates"
            )
        for side in SIDES:
            params[side][epoch] = gates[side]
    return GateHistory(model_dir=model_dir, params=params)


def curves_from_checkpoints(history: GateHistory, attention: float, activation: str) -> GateCurves:
    """``w`` of every gate of every checkpoint at attention ``attention`` (gate ``k`` -> block ``k + 1``)."""
    values = {
        side: {
            epoch: {k + 1: [gate_weight(w, b, attention, activation)] for k, (w, b) in enumerate(gates)}
            for epoch, gates in per_epoch.items()
        }
        for side, per_epoch in history.params.items()
    }
    return GateCurves(f"checkpoints of {history.model_dir}", f"w (own prompt) at attention={attention:g}", values)


# ---- tensorboard ---------------------------------------------------------------------------------------
def read_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]] | None:
    """Every scalar of ``RUN_DIR/tensorboard`` as ``{tag: [(step, value), ...]}``; None without that folder."""
    directory = os.path.join(run_dir, TENSORBOARD_DIR)
    if not os.path.isdir(directory):
        return None
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(directory, size_guidance={SCALARS: 0})  # 0: keep every event
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def read_tensorboard_curves(run_dir: str) -> GateCurves | None:
    """The applied ``w`` per epoch, block and slot from ``RUN_DIR/tensorboard``; None without gate scalars.

    A resumed run appends event files; for an epoch logged twice the later value wins.
    """
    directory = os.path.join(run_dir, TENSORBOARD_DIR)
    scalars = read_scalars(run_dir)
    if scalars is None:
        return None
    # Steps are iterations; the engine's epoch tag says which epoch ends at each step. Runs older than
    # that tag wrote the gates at the 1-based epoch number.
    epoch_of = {step: int(value) for step, value in scalars[EPOCH_TAG]} if EPOCH_TAG in scalars else None
    found: dict[str, dict[int, dict[int, dict[int, float]]]] = {side: {} for side in SIDES}
    for tag, events in scalars.items():
        match = _SLOT_TAG.match(tag)
        if match is None:
            continue
        side, block, slot = match.group(1), int(match.group(2)), int(match.group(3))
        for step, value in events:
            epoch = step if epoch_of is None else epoch_of.get(step)
            if epoch is None:
                raise ValueError(f"{directory}: gate scalar {tag} at step {step} has no {EPOCH_TAG} value")
            found[side].setdefault(epoch, {}).setdefault(block, {})[slot] = value
    if not any(found.values()):
        return None
    values = {
        side: {
            epoch: {block: [slots[i] for i in sorted(slots)] for block, slots in sorted(blocks.items())}
            for epoch, blocks in per_epoch.items()
        }
        for side, per_epoch in found.items()
    }
    return GateCurves(
        f"TensorBoard events in {directory}", "w (own prompt) applied, mean over the epoch's steps", values
    )


def read_gate_curves(
    run_dir: str,
    source: str = "auto",
    attention: float = 0.0,
    activation: str = "sigmoid",
    allow_pickle: bool = False,
) -> GateCurves:
    """The curves of ``source``; ``auto`` reads the TensorBoard scalars and falls back to the checkpoints."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"Run directory {run_dir} does not exist")
    if source != "checkpoints":
        try:
            curves = read_tensorboard_curves(run_dir)
        except ImportError as error:
            if source == "tensorboard":
                raise ImportError(
                    "--source tensorboard needs the tensorboard package (pip install tensorboard)"
                ) from error
            print("Note: tensorboard is not installed; reading the gates from the checkpoints")
            curves = None
        if curves is not None:
            return curves
        if source == "tensorboard":
            raise FileNotFoundError(
                f"No gate scalars (gates/<tower>/block<b>/slot<i>) in {os.path.join(run_dir, TENSORBOARD_DIR)}; "
                "use --source checkpoints for runs without them"
            )
    history = read_gate_history(run_dir, allow_pickle=allow_pickle)
    return curves_from_checkpoints(history, attention, activation)


def gate_activation_from_log(run_dir: str) -> str | None:
    """The ``gate_act`` the BMIP trainer printed into ``log.txt``, if any."""
    log = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(log):
        return None
    with open(log, errors="replace") as f:
        for line in f:
            match = _GATE_ACT_IN_LOG.search(line)
            if match:
                return match.group(1)
    return None


# ---- figure --------------------------------------------------------------------------------------------
_SLOT_LINES = ("-", "--", ":", "-.")
_SLOT_MARKERS = ("o", "s", "^", "D")
_SLOT_HATCHES = ("", "////", "....", "xxxx")
_BAR_GAP = 0.15  # fraction of a slot's width left empty on each side, so neighbouring bars never touch


# Rows of an x-small legend that fit beside one of the figure's axes (3.5 inches tall).
_LEGEND_ROWS = 14


def slot_style(slot: int) -> dict[str, str]:
    """Line style, marker and bar hatch of one slot: a block's slots share its colour, not its look."""
    return {
        "linestyle": _SLOT_LINES[slot % len(_SLOT_LINES)],
        "marker": _SLOT_MARKERS[slot % len(_SLOT_MARKERS)],
        "hatch": _SLOT_HATCHES[slot % len(_SLOT_HATCHES)],
    }


def draw_gates(curves: GateCurves, activation: str = "sigmoid"):
    """The figure: per side, ``w`` over the epochs (legend outside the axes) and ``w`` at the last epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    epochs = curves.epochs
    last = epochs[-1]
    fig, axes = plt.subplots(2, 2, figsize=(13, 7), squeeze=False, constrained_layout=True)
    for row, side in enumerate(SIDES):
        per_epoch = curves.values[side]
        final_blocks = per_epoch.get(last, {})
        blocks = sorted(final_blocks)
        over, final = axes[row]
        cmap = plt.get_cmap("viridis", max(len(blocks), 2))
        for i, block in enumerate(blocks):
            n_slots = len(final_blocks[block])
            shown = [e for e in epochs if block in per_epoch.get(e, {})]
            width = 0.8 / n_slots
            for slot in range(n_slots):
                style = slot_style(slot)
                over.plot(
                    shown, [per_epoch[e][block][slot] for e in shown], marker=style["marker"], markersize=4,
                    color=cmap(i), linestyle=style["linestyle"],
                )  # fmt: skip
                final.bar(
                    block - 0.4 + width * (slot + 0.5), final_blocks[block][slot], width=width * (1 - 2 * _BAR_GAP),
                    color=cmap(i), hatch=style["hatch"], edgecolor="black", linewidth=0.5,
                    label=f"slot {slot}" if i == 0 and n_slots > 1 else None,
                )  # fmt: skip
        over.set_title(f"{side} tower: w over training")
        over.set_xlabel("epoch")
        over.xaxis.set_major_locator(MaxNLocator(integer=True))
        over.set_ylabel(curves.ylabel, fontsize="small")
        final.set_title(f"{side} tower: w at epoch {last}")
        final.set_xlabel("block (bars: slots)")
        final.set_ylabel("w (own prompt)")
        if blocks:
            final.set_xticks(blocks)
            # Beside the axes, never over the curves: one entry per block (its colour) and one per slot (its
            # look), not one per curve, so 8 blocks x 4 slots need 12 entries, not 32.
            n_slots = max(len(slots) for slots in final_blocks.values())
            handles = [Line2D([], [], color=cmap(i), label=f"block {block}") for i, block in enumerate(blocks)]
            if n_slots > 1:
                handles += [
                    Line2D([], [], color="black", linestyle=slot_style(slot)["linestyle"],
                           marker=slot_style(slot)["marker"], markersize=4, label=f"slot {slot}")
                    for slot in range(n_slots)
                ]  # fmt: skip
            over.legend(handles=handles, fontsize="x-small", ncol=1 + len(handles) // _LEGEND_ROWS,
                        loc="upper left", bbox_to_anchor=(1.01, 1.0))
            if final.get_legend_handles_labels()[0]:
                final.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            for ax in (over, final):
                ax.text(0.5, 0.5, "no gates", ha="center", va="center", transform=ax.transAxes)
        if activation == "sigmoid":
            for ax in (over, final):
                ax.set_ylim(0, 1)
    fig.suptitle(f"BMIP gates ({activation}): {curves.source}", fontsize="medium")
    return fig


def plot_gates(curves: GateCurves, out_prefix: str, activation: str = "sigmoid") -> list[str]:
    """Draw the figure (``draw_gates``) and write ``out_prefix``.png and .pdf; returns the written paths."""
    import matplotlib.pyplot as plt

    fig = draw_gates(curves, activation)
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
    written = []
    for ext in ("png", "pdf"):
        path = f"{out_prefix}.{ext}"
        fig.savefig(path, dpi=150)
        written.append(path)
    plt.close(fig)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="OUTPUT_DIR of a BMIP run")
    parser.add_argument("--out", default="", help="output path without extension (default RUN_DIR/gates)")
    parser.add_argument("--source", choices=SOURCES, default="auto", help="where the gate values come from")
    parser.add_argument(
        "--attention", type=float, default=0.0, help="checkpoints only: the attention value the gates are read at"
    )
    parser.add_argument("--gate-act", choices=("sigmoid", "none"), help="override the activation from log.txt")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="read checkpoints that pickle objects (only files you trust)"
    )
    args = parser.parse_args(argv)
    activation = args.gate_act or gate_activation_from_log(args.run_dir) or "sigmoid"
    try:
        curves = read_gate_curves(args.run_dir, args.source, args.attention, activation, args.allow_pickle)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"plot_gates: error: {error}", file=sys.stderr)
        return 1
    written = plot_gates(curves, args.out or os.path.join(args.run_dir, "gates"), activation)
    last = curves.epochs[-1]
    print(f"Gates from {curves.source} (epochs {curves.epochs}, activation {activation}), w at epoch {last}:")
    for side in SIDES:
        for block, slots in sorted(curves.values[side].get(last, {}).items()):
            print(f"  {side} block {block}: " + ", ".join(f"{w:.3f}" for w in slots))
    print("Wrote " + " and ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
