"""Plot what BMIP's gates learned: the mixing weight of every prompted block, vision and text, per epoch.

    python -m tools.plot_gates RUN_DIR [--out PREFIX] [--attention A] [--gate-act sigmoid|none]

BMIP mixes a block's own prompt with the other modality's projected prompt as ``w * own + (1 - w) * foreign``
with ``w = act(gate(a))``: ``gate`` is the block's Linear(1, 1), ``a`` the attention the block's other
tokens pay to the prompt slot (prompting/interaction.py). The tool reads the gate parameters from every
checkpoint of the run (``<model name>/model.pth.tar-<epoch>``; ``model-best.pth.tar`` when it is the only
one) and draws ``w`` at the attention value ``--attention`` (default 0). With the released options the
text gates see exactly 0 (the SOS row cannot see the slots under the causal mask), so there the plotted
``w`` is the applied one; vision slots receive attention of the order of 1/tokens, so ``a = 0`` is a
close reading unless a gate's weight grew large. ``w`` near 1 keeps the block's own prompt, near 0 takes
the other modality's.

Output: ``PREFIX.png`` and ``PREFIX.pdf`` (default ``RUN_DIR/gates``): left, ``w`` per block over the
saved epochs; right, ``w`` per block at the last saved epoch. One line per epoch needs a checkpoint per
epoch: train with ``TRAIN.CHECKPOINT_FREQ 1`` (the default 0 keeps only the last epoch). The gate
activation is read from the run's ``log.txt`` (``BMIP options: ...``); ``--gate-act`` overrides it.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["GateHistory", "find_gate_checkpoints", "gate_weight", "main", "plot_gates", "read_gate_history"]

SIDES = ("vision", "text")
_GATE_KEY = re.compile(r"(?:^|\.)gates_([vt])\.(\d+)\.(weight|bias)$")
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


def gate_weight(weight: float, bias: float, attention: float, activation: str) -> float:
    """The mixing weight ``w`` of the own prompt that a gate gives for attention ``attention``."""
    z = weight * attention + bias
    if activation == "sigmoid":
        return 1.0 / (1.0 + math.exp(-z))
    if activation == "none":
        return z
    raise ValueError(f"gate activation must be 'sigmoid' or 'none', got {activation!r}")


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
            f"No checkpoint (model.pth.tar-<epoch> or {_BEST}) under {run_dir}; is it the OUTPUT_DIR of a BMIP run?"
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


def plot_gates(history: GateHistory, out_prefix: str, attention: float = 0.0, activation: str = "sigmoid") -> list[str]:
    """Draw the two panels per side and write ``out_prefix``.png and .pdf; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = history.epochs
    last = epochs[-1]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), squeeze=False, constrained_layout=True)
    for row, side in enumerate(SIDES):
        per_epoch = history.params[side]
        n_gates = len(per_epoch.get(last, []))
        over, final = axes[row]
        cmap = plt.get_cmap("viridis", max(n_gates, 2))
        for k in range(n_gates):
            values = [gate_weight(*per_epoch[e][k], attention, activation) for e in epochs]
            over.plot(epochs, values, marker="o", color=cmap(k), label=f"block {k + 1}")
        final_values = [gate_weight(w, b, attention, activation) for w, b in per_epoch.get(last, [])]
        final.bar([k + 1 for k in range(n_gates)], final_values, color=[cmap(k) for k in range(n_gates)])
        over.set_title(f"{side} tower: w over training")
        over.set_xlabel("epoch")
        over.xaxis.set_major_locator(MaxNLocator(integer=True))
        over.set_ylabel(f"w (own prompt), attention={attention:g}")
        final.set_title(f"{side} tower: w at epoch {last}")
        final.set_xlabel("block")
        final.set_ylabel("w (own prompt)")
        if n_gates:
            final.set_xticks(range(1, n_gates + 1))
            over.legend(fontsize="small", ncol=2)
        else:
            for ax in (over, final):
                ax.text(0.5, 0.5, "no gates", ha="center", va="center", transform=ax.transAxes)
        if activation == "sigmoid":
            for ax in (over, final):
                ax.set_ylim(0, 1)
    fig.suptitle(f"BMIP gates ({activation}): {history.model_dir}", fontsize="medium")
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
    parser.add_argument("--attention", type=float, default=0.0, help="attention value the gates are read at")
    parser.add_argument("--gate-act", choices=("sigmoid", "none"), help="override the activation from log.txt")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="read checkpoints that pickle objects (only files you trust)"
    )
    args = parser.parse_args(argv)
    activation = args.gate_act or gate_activation_from_log(args.run_dir) or "sigmoid"
    history = read_gate_history(args.run_dir, allow_pickle=args.allow_pickle)
    written = plot_gates(history, args.out or os.path.join(args.run_dir, "gates"), args.attention, activation)
    print(f"Gates of {history.model_dir} (epochs {history.epochs}, activation {activation}):")
    for side in SIDES:
        final = history.params[side][history.epochs[-1]]
        values = ", ".join(f"{gate_weight(w, b, args.attention, activation):.3f}" for w, b in final)
        print(f"  {side}: w per block 1..{len(final)} = [{values}]")
    print("Wrote " + " and ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
