"""BMIP training flow end to end on Digits with random:tiny: scripts, model-best, early stopping, the release's quirk."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import train
from tools import layout

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "MODEL.BACKBONE.NAME", "random:tiny",
    "DATASET.NUM_SHOTS", "1",
    "DATALOADER.NUM_WORKERS", "0",
    "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
    "DATALOADER.TEST.BATCH_SIZE", "100",
]  # fmt: skip
ACCURACY = re.compile(r"^\* accuracy: [\d.]+%$", re.MULTILINE)
BEST = "MultiModalPromptLearner/model-best.pth.tar"


@pytest.fixture(autouse=True)
def _no_env_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs skip torch's environment report (it shells out for ~5 s of CPU per run)."""
    monkeypatch.setattr(train, "collect_env_info", lambda: "(skipped in tests)")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("digits")


def _script(name: str, args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/bmip" / name), *args],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def test_base2new_scripts_train_select_on_val_and_test_new_and_all(data_root: Path, tmp_path: Path) -> None:
    env = {"DATA": str(data_root), "OUTPUT": str(tmp_path), "PYTHON": sys.executable}
    args = ["digits", "1", *TINY, "OPTIM.MAX_EPOCH", "2"]
    _script("base2new_train.sh", args, env)
    common = layout.place(Path("digits/shots_1/BMIP/BMIP_ctx2_dp9_lr2/seed1"), args[2:])
    train_dir = tmp_path / "base2new/train_base" / common
    log = (train_dir / "log.txt").read_text()
    assert "Finish training" in log.splitlines()
    assert "Evaluate on the *val* set" in log  # best_val validates although TEST.NO_TEST_EARLY is True
    assert (train_dir / BEST).is_file() and (train_dir / "MultiModalPromptLearner/model.pth.tar-2").is_file()
    assert "Deploy the model with the best val performance" in log and ACCURACY.search(log)
    # released: one prompt per vision block, 8 equal copies of the shared one (the release on a GPU)
    assert "Number of trainable parameters (all used by the forward pass): 79,646" in log

    _script("base2new_test.sh", args, env)
    for sub, n_classes in (("new", 5), ("all", 10)):
        log = (tmp_path / f"base2new/test_{sub}" / common / "log.txt").read_text()
        assert re.search(rf"# classes\s+{n_classes}\b", log)
        assert ACCURACY.search(log)


def _run(data_root: Path, out: Path, *extra: str) -> None:
    train.main([
        "--root", str(data_root), "--seed", "1", "--trainer", "BMIP",
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
        "--config-file", str(ROOT / "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml"),
        "--output-dir", str(out), *extra,
    ])  # fmt: skip


def test_early_stopping_really_stops_and_leaves_loadable_checkpoints(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "train"
    _run(
        data_root, out, *TINY, "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "4",
        "OPTIM.LR", "1e-12", "OPTIM.WARMUP_CONS_LR", "1e-12",  # frozen val accuracy: no improvement
        "TRAIN.PATIENT_COUNT", "1", "TRAINER.BMIP.EARLY_STOP_MIN_EPOCH", "2", "TEST.NO_TEST", "True",
    )  # fmt: skip
    log = (out / "log.txt").read_text()
    assert "Early stopping after epoch 2/4" in log
    assert "epoch [3/4]" not in log and "Finish training" in log.splitlines()
    folder = out / "MultiModalPromptLearner"
    assert sorted(p.name for p in folder.glob("model*")) == ["model-best.pth.tar", "model.pth.tar-2"]

    test_dir = tmp_path / "test_new"
    _run(data_root, test_dir, "--eval-only", "--best", "--model-dir", str(out), *TINY,
         "DATASET.SUBSAMPLE_CLASSES", "new")  # fmt: skip
    log = (test_dir / "log.txt").read_text()
    assert f"{out}/{BEST}" in log and ACCURACY.search(log)


def test_released_gating_on_no_test_early_reproduces_the_missing_model_best(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "quirk"
    with pytest.raises(FileNotFoundError, match="model-best.pth.tar"):
        _run(data_root, out, *TINY, "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "1",
             "TRAINER.BMIP.VAL_REQUIRES_NO_TEST_EARLY", "True")  # fmt: skip
    assert "Evaluate on the *val* set" not in (out / "log.txt").read_text()
