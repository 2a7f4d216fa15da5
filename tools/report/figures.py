"""The report's pictures (matplotlib, Agg): bars per dataset, base-vs-new scatter, training curves, gates.

Every PNG is written at a fixed pixel size (``SIZES`` inches times ``DPI``, no tight bounding box; fixed
margins, since constrained layout made drawing several times slower) and
carries a ``Series`` text chunk listing the legend's series (methods; seeds for training curves), read
from the drawn axes, so a reader (and the tests) can check a picture without looking at it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tools import plot_gates  # noqa: E402
from tools.parse_test_res import read_epoch_curves  # noqa: E402
from tools.report.compare import Row  # noqa: E402
from tools.report.runs import Run  # noqa: E402

__all__ = ["Picture", "SIZES", "DPI", "bars", "scatter", "training_curves", "epoch_curves", "gates"]

DPI = 100
SIZES = {"bars": (7.0, 3.6), "scatter": (5.5, 5.0), "curves": (10.0, 3.0), "gates": (13.0, 7.0)}
GATES_DPI = 60  # tools.plot_gates draws at 13 x 7 inches; 780 x 420 px keeps the PNG small
CURVE_KEYS = ("loss", "acc", "lr")
REFERENCE_LABEL = "reference"


@dataclass(frozen=True)
class Picture:
    """A written PNG: where, its caption, its size in pixels and the series it shows."""

    path: Path
    caption: str
    width: int
    height: int
    series: tuple[str, ...]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text.replace("+", "plus")).strip("_") or "x"


def _legend_series(fig) -> tuple[str, ...]:
    labels: list[str] = []
    for ax in fig.axes:
        for label in ax.get_legend_handles_labels()[1]:
            if label not in labels and label != REFERENCE_LABEL:
                labels.append(label)
    return tuple(labels)


def _save(fig, path: Path, caption: str, dpi: int = DPI) -> Picture:
    series = _legend_series(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Title": caption, "Series": "; ".join(series)})
    width, height = (round(v * dpi) for v in fig.get_size_inches())
    plt.close(fig)
    return Picture(path, caption, width, height, series)


def _colours(methods: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def bars(dataset: str, rows: Sequence[Row], methods: Sequence[str], out: Path) -> Picture:
    """One dataset: per metric, a bar per method (mean, seed std as error bar) and the reference marker."""
    metrics = list(dict.fromkeys(r.metric for r in rows))
    fig, ax = plt.subplots(figsize=SIZES["bars"])
    fig.subplots_adjust(left=0.08, right=0.76, bottom=0.1, top=0.9)
    colours = _colours(methods)
    width = 0.8 / max(len(methods), 1)
    shown_ref = False
    for i, method in enumerate(methods):
        mine = {r.metric: r for r in rows if r.method == method}
        xs = [k - 0.4 + width * (i + 0.5) for k, m in enumerate(metrics) if m in mine]
        if not xs:
            continue
        stats = [mine[m].entry.stat for m in metrics if m in mine]
        ax.bar(xs, [s.mean for s in stats], width * 0.9, yerr=[s.std for s in stats], capsize=3,
               color=colours[method], label=method)  # fmt: skip
        refs = [(x, mine[m].ref.mean) for x, m in zip(xs, [m for m in metrics if m in mine]) if mine[m].ref]
        if refs:
            ax.scatter(*zip(*refs), marker="D", s=28, color="black", zorder=3,
                       label=None if shown_ref else REFERENCE_LABEL)  # fmt: skip
            shown_ref = True
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    key = ", black diamond: reference" if shown_ref else " (no reference)"
    ax.set_title(f"{dataset}: mean over seeds (error bar: std){key}", fontsize="medium")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out / f"bars_{slug(dataset)}.png", f"{dataset}: ours per method beside the reference")


def scatter(rows: Sequence[Row], methods: Sequence[str], out: Path) -> Picture | None:
    """Base vs new accuracy, one series per method (a point per dataset, std as error bars)."""
    points: dict[str, list[tuple[Row, Row]]] = {}
    for base in (r for r in rows if r.metric == "Base"):
        new = next(
            (r for r in rows if r.metric == "New" and (r.method, r.dataset) == (base.method, base.dataset)),
            None,
        )
        if new is not None:
            points.setdefault(base.method, []).append((base, new))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=SIZES["scatter"])
    fig.subplots_adjust(left=0.12, right=0.96, bottom=0.1, top=0.92)
    colours = _colours(methods)
    shown_ref = False
    for method in (m for m in methods if m in points):
        pairs = points[method]
        ax.errorbar([b.entry.stat.mean for b, _ in pairs], [n.entry.stat.mean for _, n in pairs],
                    xerr=[b.entry.stat.std for b, _ in pairs], yerr=[n.entry.stat.std for _, n in pairs],
                    fmt="o", color=colours[method], capsize=2, label=method)  # fmt: skip
        for base, new in pairs:
            ax.annotate(base.dataset, (base.entry.stat.mean, new.entry.stat.mean), fontsize="xx-small",
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
        refs = [(b.ref.mean, n.ref.mean) for b, n in pairs if b.ref and n.ref]
        if refs:
            ax.scatter(*zip(*refs), marker="D", facecolors="none", edgecolors=colours[method],
                       label=None if shown_ref else REFERENCE_LABEL)  # fmt: skip
            shown_ref = True
    ax.plot([0, 100], [0, 100], color="grey", linewidth=0.5, linestyle=":")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("base accuracy (%)")
    ax.set_ylabel("new accuracy (%)")
    key = "; hollow: reference" if shown_ref else ""
    ax.set_title(f"Base vs new per method (a point per dataset{key})", fontsize="medium")
    ax.legend(fontsize="x-small", loc="lower right")
    return _save(fig, out / "base_vs_new.png", "Base vs new accuracy, one series per method")


def epoch_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    """Per-epoch loss, accuracy and learning rate: TensorBoard events where the run wrote them, else the log.

    From events, an epoch's loss or accuracy is the ``train/<name>`` scalar at the step the engine marks
    with ``train/epoch`` (the running mean over the whole epoch); its learning rate is ``train/lr`` at the
    epoch's first step (Dassl's trainers step the scheduler inside the last batch, so the last step
    already shows the next epoch's rate). The log gives the last printed batch line of each epoch.
    """
    scalars = plot_gates.read_scalars(str(run_dir))
    if scalars and plot_gates.EPOCH_TAG in scalars:
        ends = sorted((step, int(value)) for step, value in scalars[plot_gates.EPOCH_TAG])
        curves: dict[str, dict[int, float]] = {}
        for tag, events in scalars.items():
            if not tag.startswith("train/") or tag == plot_gates.EPOCH_TAG:
                continue
            values: dict[int, float] = {}
            for start, (end, epoch) in zip([-1] + [e for e, _ in ends], ends):
                inside = [(s, v) for s, v in events if start < s <= end]
                if inside:
                    values[epoch] = min(inside)[1] if tag == "train/lr" else max(inside)[1]
            if values:
                curves[tag[len("train/") :]] = values
        if curves:
            return curves
    return read_epoch_curves(run_dir / "log.txt")


def training_curves(
    method: str, dataset: str, paradigm: str, runs: Sequence[Run], out: Path
) -> Picture | None:
    """Loss, accuracy and learning rate per epoch of one row's training runs, one line per seed."""
    per_seed = {run.seed: epoch_curves(run.folder) for run in runs}
    keys = [k for k in CURVE_KEYS if any(k in c for c in per_seed.values())]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=SIZES["curves"], squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.9, bottom=0.16, top=0.82, wspace=0.3)
    for ax, key in zip(axes[0], keys):
        for seed, curves in sorted(per_seed.items()):
            if key in curves:
                epochs = sorted(curves[key])
                ax.plot(
                    epochs, [curves[key][e] for e in epochs], marker="o", markersize=3, label=f"seed{seed}"
                )
        ax.set_xlabel("epoch")
        ax.set_title({"loss": "training loss", "acc": "training accuracy (%)", "lr": "learning rate"}[key],
                     fontsize="medium")  # fmt: skip
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0][-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{method} on {dataset} ({paradigm} training)", fontsize="medium")
    name = f"curves_{slug(method)}_{slug(dataset)}_{slug(paradigm)}.png"
    return _save(fig, out / name, f"{method} on {dataset}: training curves, one line per seed")


def gates(method: str, dataset: str, run: Run, out: Path) -> Picture | None:
    """``tools.plot_gates``' figure of one BMIP-family run (the lowest seed); None without gate values."""
    activation = plot_gates.gate_activation_from_log(str(run.folder))
    if activation is None:  # not a BMIP-family trainer
        return None
    try:
        curves = plot_gates.read_gate_curves(str(run.folder), activation=activation)
    except (FileNotFoundError, ValueError, ImportError):
        return None
    fig = plot_gates.draw_gates(curves, activation)
    name = f"gates_{slug(method)}_{slug(dataset)}_seed{run.seed}.png"
    return _save(fig, out / name, f"{method} on {dataset}, seed {run.seed}: BMIP gates", dpi=GATES_DPI)
