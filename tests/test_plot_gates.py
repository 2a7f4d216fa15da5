"""``tools/plot_gates.py`` on a real (short) BMIP run: Digits, random:tiny, 2 epochs, a checkpoint per epoch."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import pytest
import torch

import train
from tools import plot_gates

ROOT = Path(__file__).resolve().parents[1]
DEPTH = 4


@pytest.fixture(scope="module")
def bmip_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bmip_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: OpenMP spinning costs far more than it gains
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
        torch.set_num_threads(threads)
    return out


def test_history_holds_every_gate_of_every_epoch(bmip_run: Path) -> None:
    history = plot_gates.read_gate_history(str(bmip_run))
    assert history.epochs == [1, 2]
    # Released options: vision gates for blocks 1..DEPTH-1, text one block fewer.
    assert [len(history.params["vision"][e]) for e in (1, 2)] == [DEPTH - 1] * 2
    assert [len(history.params["text"][e]) for e in (1, 2)] == [DEPTH - 2] * 2
    state = torch.load(Path(history.model_dir) / "model.pth.tar-2", weights_only=True)["state_dict"]
    weight, bias = history.params["text"][2][0]
    assert weight == pytest.approx(state["prompt_learner.gates_t.0.weight"].item())
    assert bias == pytest.approx(state["prompt_learner.gates_t.0.bias"].item())
    assert history.params["text"][1] != history.params["text"][2], "training should move the gates"


def test_png_and_pdf_are_written_and_values_printed(bmip_run: Path, tmp_path: Path, capsys) -> None:
    prefix = tmp_path / "figs" / "gates"
    assert plot_gates.main([str(bmip_run), "--out", str(prefix)]) == 0
    image = matplotlib.image.imread(f"{prefix}.png")
    assert image.ndim == 3 and image.shape[0] > 500 and image.shape[1] > 800
    assert Path(f"{prefix}.pdf").read_bytes().startswith(b"%PDF")
    out = capsys.readouterr().out
    assert "activation sigmoid" in out  # read from the run's log.txt
    history = plot_gates.read_gate_history(str(bmip_run))
    expected = ", ".join(f"{1 / (1 + math.exp(-b)):.3f}" for _, b in history.params["text"][2])
    assert f"text: w per block 1..{DEPTH - 2} = [{expected}]" in out


def test_gate_weight_and_clear_errors(tmp_path: Path) -> None:
    assert plot_gates.gate_weight(2.0, -1.0, 0.5, "sigmoid") == pytest.approx(0.5)
    assert plot_gates.gate_weight(2.0, -1.0, 1.0, "none") == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        plot_gates.read_gate_history(str(tmp_path))
    model_dir = tmp_path / "MaPLeRun" / "MultiModalPromptLearner"
    model_dir.mkdir(parents=True)
    torch.save({"state_dict": {"prompt_learner.ctx": torch.zeros(2, 4)}, "epoch": 1}, model_dir / "model.pth.tar-1")
    with pytest.raises(ValueError, match=r"model\.pth\.tar-1 holds no BMIP gate parameters"):
        plot_gates.read_gate_history(str(tmp_path / "MaPLeRun"))
