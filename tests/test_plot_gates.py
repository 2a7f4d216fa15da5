"""BMIP gate logging and ``tools/plot_gates.py``.

The gate monitor on a tiny CLIP, then a real (short) BMIP run (Digits, random:tiny, 2 epochs, a checkpoint
per epoch): its TensorBoard gate scalars, and the plot tool reading them or, as fallback, the checkpoints.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

import clip
import train
from prompting.bmip import BMIPPrompts, resolve_bmip_options
from prompting.interaction import GatedMix, GateMonitor
from prompting.model import PromptedCLIP
from tools import plot_gates

ROOT = Path(__file__).resolve().parents[1]
DEPTH = 4
CLASSES = ["zero", "one", "two"]


# ---- the monitor -------------------------------------------------------------------------------------
def test_monitor_averages_per_slot_over_sequences_then_passes() -> None:
    monitor = GateMonitor()
    monitor.record("vision", 2, torch.tensor([0.2, 0.4]))
    monitor.record("vision", 2, torch.tensor([[0.0, 1.0], [1.0, 1.0]]))  # per_sample: (N, m) -> (0.5, 1.0)
    monitor.record("text", 1, torch.tensor([0.7, 0.1], dtype=torch.float64))
    assert monitor.means() == {
        ("text", 1): pytest.approx([0.7, 0.1]),
        ("vision", 2): pytest.approx([0.35, 0.7]),
    }


@pytest.mark.parametrize("preset", ["released", "paper"])
def test_monitor_records_exactly_the_weights_the_gates_applied(monkeypatch, preset: str) -> None:
    tiny = clip.build_clip("random:tiny")
    torch.manual_seed(0)
    learner = BMIPPrompts(tiny, resolve_bmip_options(preset, depth=DEPTH))
    model = PromptedCLIP(tiny, learner, CLASSES)
    with torch.no_grad():  # gates that read the attention, so vision w differs from act(bias)
        for gate in learner.gates_v:
            gate.weight.fill_(40.0)
    applied: dict[tuple[str, int], list[torch.Tensor]] = {}
    original = GatedMix.resolve

    def resolve(self, x, block, slots):
        applied.setdefault((slots.tower, self.block), []).append(self.weights(x, block, slots).detach())
        return original(self, x, block, slots)

    def layer(self, own, foreign, gates, i, block, text):  # tag each mix with its block for `resolve`
        mix = original_layer(self, own, foreign, gates, i, block, text)
        mix.block = block
        return mix

    original_layer = BMIPPrompts._layer
    monkeypatch.setattr(GatedMix, "resolve", resolve)
    monkeypatch.setattr(BMIPPrompts, "_layer", layer)
    learner.gate_monitor = monitor = GateMonitor()
    for seed in (1, 2):
        model(torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(seed)))
    means = monitor.means()
    assert sorted(means) == sorted(applied)
    assert {block for tower, block in means if tower == "vision"} == set(learner.vision_blocks)
    assert {block for tower, block in means if tower == "text"} == set(learner.text_blocks)
    for key, values in applied.items():
        assert len(values) == 2  # one text and one image pass per forward
        expected = torch.stack([w.reshape(-1, w.shape[-1]).mean(0) for w in values]).mean(0)
        assert means[key] == pytest.approx(expected.tolist(), abs=1e-6), key
    vision = torch.tensor([means[("vision", b)] for b in learner.vision_blocks])
    biases = torch.stack([torch.sigmoid(g.bias) for g in learner.gates_v]).detach()
    assert not torch.allclose(vision, biases.expand_as(vision), atol=1e-3), "vision w should follow attention"
    scalars = learner.gate_scalars(monitor)
    assert scalars["gates/vision/block1/weight"] == pytest.approx(40.0)
    assert scalars["gates/text/block1/slot1"] == pytest.approx(means[("text", 1)][1])
    assert len(scalars) == 2 * (len(learner.vision_blocks) + len(learner.text_blocks)) + 2 * len(means)


def test_released_text_weights_are_the_sigmoid_of_the_bias() -> None:
    tiny = clip.build_clip("random:tiny")
    learner = BMIPPrompts(tiny, resolve_bmip_options("released", depth=DEPTH))
    learner.gate_monitor = monitor = GateMonitor()
    PromptedCLIP(tiny, learner, CLASSES)(torch.randn(1, 3, 224, 224))
    for block, gate in zip(learner.text_blocks, learner.gates_t):
        assert monitor.means()[("text", block)] == pytest.approx([torch.sigmoid(gate.bias).item()] * 2)


# ---- a real run --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bmip_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bmip_run")
    collect = train.collect_env_info
    train.collect_env_info = lambda: "(skipped in tests)"
    try:
        train.main([
            "--root", str(tmp_path_factory.mktemp("data")), "--trainer", "BMIP", "--seed", "1",
            "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
            "--config-file", str(ROOT / "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml"),
            "--output-dir", str(out),
            "MODEL.BACKBONE.NAME", "random:tiny", "TRAINER.BMIP.PREC", "fp32", "TRAINER.BMIP.PROMPT_DEPTH", str(DEPTH),
            "DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", "base", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "1", "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.05",
            "TRAIN.CHECKPOINT_FREQ", "1", "TEST.NO_TEST", "True",
        ])  # fmt: skip
    finally:
        train.collect_env_info = collect
    return out


def _scalars(run: Path) -> dict[str, dict[int, float]]:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={SCALARS: 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def _gates_by_epoch(run: Path) -> dict[str, dict[int, float]]:
    scalars = _scalars(run)
    epoch_of = scalars["train/epoch"]
    return {tag: {int(epoch_of[s]): v for s, v in by_step.items()} for tag, by_step in scalars.items()
            if tag.startswith("gates/")}  # fmt: skip


def test_training_logs_every_gate_per_block_slot_and_epoch(bmip_run: Path) -> None:
    scalars = _scalars(bmip_run)
    gate_tags = {tag for tag in scalars if tag.startswith("gates/")}
    # Released options: vision gates for blocks 1..DEPTH-1, text one block fewer; N_CTX 2 slots each.
    expected = {
        f"gates/{tower}/block{b}/{leaf}"
        for tower, n_blocks in (("vision", DEPTH - 1), ("text", DEPTH - 2))
        for b in range(1, n_blocks + 1)
        for leaf in ("slot0", "slot1", "weight", "bias")
    }
    assert gate_tags == expected
    steps = sorted(scalars["train/epoch"])
    assert [scalars["train/epoch"][s] for s in steps] == [1, 2]  # 1-based epochs at their last iteration
    assert all(sorted(scalars[tag]) == steps for tag in gate_tags), "one value per epoch"
    scalars = _gates_by_epoch(bmip_run)
    state = torch.load(bmip_run / "MultiModalPromptLearner" / "model.pth.tar-2", weights_only=True)["state_dict"]
    for k in range(DEPTH - 1):
        assert scalars[f"gates/vision/block{k + 1}/weight"][2] == pytest.approx(
            state[f"prompt_learner.gates_v.{k}.weight"].item()
        )
        assert scalars[f"gates/vision/block{k + 1}/bias"][2] == pytest.approx(
            state[f"prompt_learner.gates_v.{k}.bias"].item()
        )
    slots = [v for tag in gate_tags if "/slot" in tag for v in scalars[tag].values()]
    assert all(0.0 < v < 1.0 for v in slots)
    assert scalars["gates/text/block1/slot0"][1] != scalars["gates/text/block1/slot0"][2], "gates should move"


def test_plot_reads_the_tensorboard_scalars(bmip_run: Path, tmp_path: Path, capsys) -> None:
    prefix = tmp_path / "figs" / "gates"
    assert plot_gates.main([str(bmip_run), "--out", str(prefix)]) == 0
    image = matplotlib.image.imread(f"{prefix}.png")
    assert image.ndim == 3 and image.shape[0] > 500 and image.shape[1] > 800
    assert Path(f"{prefix}.pdf").read_bytes().startswith(b"%PDF")
    out = capsys.readouterr().out
    assert "TensorBoard events" in out and "activation sigmoid" in out  # activation read from log.txt
    scalars = _gates_by_epoch(bmip_run)
    curves = plot_gates.read_gate_curves(str(bmip_run))
    assert curves.epochs == [1, 2]
    assert curves.values["vision"][2][3] == pytest.approx(
        [scalars["gates/vision/block3/slot0"][2], scalars["gates/vision/block3/slot1"][2]]
    )
    text = scalars["gates/text/block2/slot0"][2], scalars["gates/text/block2/slot1"][2]
    assert f"text block 2: {text[0]:.3f}, {text[1]:.3f}" in out


def test_plot_falls_back_to_the_checkpoints(bmip_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(bmip_run, run, ignore=shutil.ignore_patterns("tensorboard"))
    history = plot_gates.read_gate_history(str(run))
    assert history.epochs == [1, 2]
    assert [len(history.params["vision"][e]) for e in (1, 2)] == [DEPTH - 1] * 2
    assert [len(history.params["text"][e]) for e in (1, 2)] == [DEPTH - 2] * 2
    assert history.params["text"][1] != history.params["text"][2], "training should move the gates"
    with pytest.raises(FileNotFoundError, match="No gate scalars"):
        plot_gates.read_gate_curves(str(run), source="tensorboard")
    assert plot_gates.main([str(run), "--out", str(tmp_path / "gates")]) == 0
    out = capsys.readouterr().out
    assert "checkpoints of" in out
    expected = ", ".join(f"{1 / (1 + math.exp(-b)):.3f}" for _, b in history.params["text"][2][:1])
    assert f"text block 1: {expected}" in out
    # The checkpoint source can also be forced on a run that has the scalars.
    forced = plot_gates.read_gate_curves(str(bmip_run), source="checkpoints", attention=0.5)
    weight, bias = history.params["vision"][2][0]
    assert forced.values["vision"][2][1] == pytest.approx([1 / (1 + math.exp(-(0.5 * weight + bias)))])


def test_gate_weight_and_clear_errors(tmp_path: Path) -> None:
    assert plot_gates.gate_weight(2.0, -1.0, 0.5, "sigmoid") == pytest.approx(0.5)
    assert plot_gates.gate_weight(2.0, -1.0, 1.0, "none") == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="has no gate scalars .* and no checkpoint"):
        plot_gates.read_gate_curves(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_gates.read_gate_curves(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="source must be one of"):
        plot_gates.read_gate_curves(str(tmp_path), source="events")
    model_dir = tmp_path / "MaPLeRun" / "MultiModalPromptLearner"
    model_dir.mkdir(parents=True)
    torch.save({"state_dict": {"prompt_learner.ctx": torch.zeros(2, 4)}, "epoch": 1}, model_dir / "model.pth.tar-1")
    with pytest.raises(ValueError, match=r"model\.pth\.tar-1 holds no BMIP gate parameters"):
        plot_gates.read_gate_history(str(tmp_path / "MaPLeRun"))


def test_cli_on_a_folder_without_gates_prints_one_line(tmp_path: Path) -> None:
    """A non-BMIP run and an eval-only folder: one ``plot_gates: error`` line naming the folder, exit 1."""
    maple = tmp_path / "maple" / "MultiModalPromptLearner"
    maple.mkdir(parents=True)
    torch.save({"state_dict": {"prompt_learner.ctx": torch.zeros(2, 4)}, "epoch": 1}, maple / "model.pth.tar-1")
    eval_only = tmp_path / "eval_only"
    eval_only.mkdir()
    (eval_only / "log.txt").write_text("Evaluate on the *test* set\n")
    for folder, what in ((tmp_path / "maple", "holds no BMIP gate parameters"), (eval_only, "has no gate scalars")):
        proc = subprocess.run(
            [sys.executable, "-m", "tools.plot_gates", str(folder)], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("plot_gates: error: ") and what in lines[0], proc.stderr
        assert str(folder) in lines[0] and "Traceback" not in proc.stderr


def test_figure_keeps_legends_off_the_curves_and_slots_apart(bmip_run: Path) -> None:
    import matplotlib.pyplot as plt

    fig = plot_gates.draw_gates(plot_gates.read_gate_curves(str(bmip_run)))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    try:
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:  # beside the plotting area, never over it
                assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
        over, final = fig.axes[0], fig.axes[1]
        block = over.get_lines()[0].get_color()
        styles = {(line.get_linestyle(), line.get_marker()) for line in over.get_lines() if line.get_color() == block}
        assert len(styles) == 2  # the two slots of a block look different
        assert {t.get_text() for t in over.get_legend().get_texts()} >= {"slot 0", "slot 1"}
        bars = sorted(final.patches, key=lambda bar: bar.get_x())
        assert len({bar.get_hatch() for bar in bars}) == 2
        for left, right in zip(bars, bars[1:]):
            assert left.get_x() + left.get_width() < right.get_x()  # no two bars touch
    finally:
        plt.close(fig)


def test_legend_of_many_blocks_and_slots_stays_inside_the_figure() -> None:
    import matplotlib.pyplot as plt

    blocks = range(1, 9)
    values = {side: {e: {b: [0.1 * s + 0.01 * e for s in range(4)] for b in blocks} for e in (1, 2, 3)}
              for side in plot_gates.SIDES}
    fig = plot_gates.draw_gates(plot_gates.GateCurves("synthetic", "w", values))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    try:
        page = fig.get_window_extent(renderer)
        for ax in fig.axes[::2]:
            legend = ax.get_legend()
            texts = [t.get_text() for t in legend.get_texts()]
            assert texts == [f"block {b}" for b in blocks] + [f"slot {s}" for s in range(4)]
            box = legend.get_window_extent(renderer)
            assert page.y0 <= box.y0 and box.y1 <= page.y1 and box.x1 <= page.x1  # nothing cut off
    finally:
        plt.close(fig)


def test_resumed_run_replaces_the_redone_epochs_events(tmp_path: Path) -> None:
    """Interrupted after epoch 1's checkpoint with epoch 2's events written: the resumed run purges them."""
    run = tmp_path / "run"
    argv = [
        "--root", str(tmp_path / "data"), "--trainer", "BMIP", "--seed", "1",
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
        "--config-file", str(ROOT / "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml"), "--output-dir", str(run),
        "MODEL.BACKBONE.NAME", "random:tiny", "TRAINER.BMIP.PREC", "fp32", "TRAINER.BMIP.PROMPT_DEPTH", str(DEPTH),
        "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1",
        "TEST.NO_TEST", "True",
    ]  # fmt: skip
    collect = train.collect_env_info
    train.collect_env_info = lambda: "(skipped in tests)"
    try:
        train.main(argv)
        model_dir = run / "MultiModalPromptLearner"
        (model_dir / "model.pth.tar-2").unlink()  # as if killed after epoch 2's scalars, before its checkpoint
        (model_dir / "checkpoint").write_text("model.pth.tar-1\n")
        train.main(argv)
    finally:
        train.collect_env_info = collect
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={SCALARS: 0})
    events.Reload()
    per_epoch = 2  # 10 images in batches of 4, the last partial batch dropped
    for tag in events.Tags()["scalars"]:
        steps = [e.step for e in events.Scalars(tag)]
        assert len(steps) == len(set(steps)), f"{tag}: duplicate steps {steps}"
    assert [(e.step, e.value) for e in events.Scalars("train/epoch")] == [(per_epoch - 1, 1), (2 * per_epoch - 1, 2)]
    assert [e.step for e in events.Scalars("train/lr")] == list(range(2 * per_epoch))
    assert plot_gates.read_gate_curves(str(run)).epochs == [1, 2]
    resumed = "".join(p.read_text() for p in sorted(run.iterdir()) if p.name.startswith("log.txt"))
    assert "will resume training" in resumed and f"from step {per_epoch} on are replaced" in resumed
