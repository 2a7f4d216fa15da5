"""Engine lifecycle on CPU with a tiny registered trainer and a generated image-folder dataset.

Covers: training writes Dassl's checkpoint layout and log lines; checkpoints load with
``weights_only=True``; an interrupted run resumed from its checkpoint ends with exactly the weights and
learning rates of an uninterrupted run; best_val model selection; trainable-only checkpoints.
The toy dataset and trainers are registered only while a test module that needs them runs
(``toys_registered``), so tests that iterate over every registered trainer or dataset never see them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from engine.config import get_cfg_default
from engine.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from engine.engine import TRAINER_REGISTRY, TrainerBase, TrainerX, build_trainer
from engine.metrics import compute_accuracy
from engine.optim import build_lr_scheduler, build_optimizer
from engine.utils import set_random_seed

CLASSNAMES = ["red", "green", "blue"]
IMAGE_SIZE = 8
SPLIT_SIZES = {"train": 4, "val": 2, "test": 3}


def make_image_folder(root: Path) -> Path:
    """``root/toy/<split>/<class>/<i>.png``: noisy images whose dominant colour is the class."""
    rng = np.random.default_rng(0)
    for split, n in SPLIT_SIZES.items():
        for label, name in enumerate(CLASSNAMES):
            folder = root / "toy" / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 90, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
                pixels[..., label] += 160
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


class EngineToyImages(DatasetBase):
    """Three colour classes in train/val/test folders (no few-shot sampling, no subsampling)."""

    dataset_dir = "toy"

    def __init__(self, cfg) -> None:
        root = os.path.join(cfg.DATASET.ROOT, self.dataset_dir)
        splits = {}
        for split in SPLIT_SIZES:
            items = []
            for label, name in enumerate(CLASSNAMES):
                folder = os.path.join(root, split, name)
                for fname in sorted(os.listdir(folder)):
                    items.append(Datum(impath=os.path.join(folder, fname), label=label, classname=name))
            splits[split] = items
        super().__init__(train_x=splits["train"], val=splits["val"], test=splits["test"])


class EngineToyTrainer(TrainerX):
    """A linear classifier on flattened pixels; steps the scheduler once per epoch like CoOp/MaPLe/BMIP."""

    trainable_only = False

    def build_model(self) -> None:
        self.model = self.make_model().to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched, trainable_only=self.trainable_only)
        self.epoch_lrs: list[float] = []

    def make_model(self) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * IMAGE_SIZE * IMAGE_SIZE, self.num_classes))

    def before_epoch(self) -> None:
        self.epoch_lrs.append(self.get_current_lr())

    def forward_backward(self, batch):
        image, label, _domain = self.parse_batch_train(batch)  # Dassl's TrainerX returns the domain too
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}


class EngineToyFrozenTrainer(EngineToyTrainer):
    """A frozen random feature layer under a trainable head; checkpoints keep the head only."""

    trainable_only = True

    def make_model(self) -> nn.Module:
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * IMAGE_SIZE * IMAGE_SIZE, 16), nn.Linear(16, self.num_classes))
        model[1].requires_grad_(False)
        return model


TOYS = ((DATASET_REGISTRY, EngineToyImages), (TRAINER_REGISTRY, EngineToyTrainer), (TRAINER_REGISTRY, EngineToyFrozenTrainer))


def register_toys() -> None:
    for registry, cls in TOYS:
        registry.register(cls)


@contextmanager
def toys_registered() -> Iterator[None]:
    register_toys()
    try:
        yield
    finally:
        for registry, cls in TOYS:
            registry.unregister(cls.__name__)


@pytest.fixture(scope="module", autouse=True)
def _toys():
    with toys_registered():
        yield


def toy_opts(root: Path, output_dir: Path, **overrides) -> list[str]:
    """KEY VALUE pairs for a tiny CPU run (shared with test_train_cli)."""
    opts = {
        "DATASET.NAME": "EngineToyImages",
        "DATASET.ROOT": str(root),
        "OUTPUT_DIR": str(output_dir),
        "INPUT.SIZE": f"({IMAGE_SIZE}, {IMAGE_SIZE})",
        "INPUT.INTERPOLATION": "bicubic",
        "INPUT.TRANSFORMS": "['random_resized_crop', 'random_flip', 'normalize']",
        "DATALOADER.NUM_WORKERS": "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE": "4",
        "DATALOADER.TEST.BATCH_SIZE": "8",
        "OPTIM.NAME": "sgd",
        "OPTIM.LR": "0.1",
        "OPTIM.MAX_EPOCH": "4",
        "OPTIM.LR_SCHEDULER": "cosine",
        "OPTIM.WARMUP_EPOCH": "1",
        "OPTIM.WARMUP_TYPE": "constant",
        "OPTIM.WARMUP_CONS_LR": "1e-5",
        "TRAIN.CHECKPOINT_FREQ": "1",
        "TRAIN.PRINT_FREQ": "2",
        "TEST.PER_CLASS_RESULT": "True",
    }
    opts.update(overrides)
    return [item for kv in opts.items() for item in kv]


def toy_cfg(root: Path, output_dir: Path, trainer: str = "EngineToyTrainer", **overrides):
    cfg = get_cfg_default()
    cfg.merge_from_list(toy_opts(root, output_dir, **overrides))
    cfg.TRAINER.NAME = trainer
    cfg.freeze()
    return cfg


def fresh_trainer(cfg, seed: int = 1):
    """What a new process does: seed, then build (dataset before model)."""
    set_random_seed(seed)
    return build_trainer(cfg)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"))


class Interrupt(Exception):
    pass


def interrupt_after(trainer, epochs_done: int) -> None:
    """Make ``trainer`` die right after finishing (and checkpointing) epoch ``epochs_done``."""
    original = trainer.after_epoch

    def after_epoch() -> None:
        original()
        if trainer.epoch + 1 == epochs_done:
            raise Interrupt

    trainer.after_epoch = after_epoch


def weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_training_writes_dassl_checkpoint_layout(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    trainer = fresh_trainer(toy_cfg(data_root, out))
    trainer.train()
    logged = capsys.readouterr().out

    model_dir = out / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["checkpoint"] + [f"model.pth.tar-{e}" for e in range(1, 5)]
    assert (model_dir / "checkpoint").read_text() == "model.pth.tar-4\n"
    ckpt = torch.load(model_dir / "model.pth.tar-4", weights_only=True)
    assert set(ckpt) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result", "rng_state"}
    assert ckpt["epoch"] == 4 and ckpt["val_result"] is None
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(ckpt["state_dict"][k], v)
    assert list(ckpt["scheduler"]["successor_state"]) and "optimizer" not in ckpt["scheduler"]
    assert any(f.name.startswith("events.out.tfevents") for f in (out / "tensorboard").iterdir())

    assert "No checkpoint found, train from scratch" in logged
    assert "epoch [1/4] batch [2/3]" in logged and " lr 1.0000e-05 eta " in logged
    assert "Finish training\nDeploy the last-epoch model\nEvaluate on the *test* set\n=> result\n" in logged
    assert "* total: 9\n" in logged and "=> per-class result\n* class: 0 (red)\ttotal: 3\t" in logged
    assert "\nElapsed: 0:00:" in logged
    # The schedule of the run: constant warmup epoch, then cosine from step 0 over MAX_EPOCH.
    expected = [1e-5] + [0.1 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(3)]
    assert trainer.epoch_lrs == pytest.approx(expected, rel=1e-6)


# BMIP's schedule: Adam 0.002, 10 epochs, one constant warmup epoch at 1e-5.
BMIP_OPTS = {"OPTIM.NAME": "adam", "OPTIM.LR": "0.002", "OPTIM.MAX_EPOCH": "10", "TEST.NO_TEST": "True"}
BMIP_LRS = [1e-5, 0.002, 0.0019511, 0.001809, 0.0015878, 0.001309, 0.001, 0.00069098, 0.00041221, 0.00019098]


@pytest.fixture(scope="module")
def uninterrupted_bmip_run(data_root, tmp_path_factory):
    trainer = fresh_trainer(toy_cfg(data_root, tmp_path_factory.mktemp("full"), **BMIP_OPTS))
    trainer.train()
    return trainer


@pytest.mark.parametrize("epochs_done", [1, 2])
def test_resume_after_interruption_matches_uninterrupted_run(
    data_root, tmp_path, epochs_done, uninterrupted_bmip_run, capsys
):
    cfg = toy_cfg(data_root, tmp_path / "cut", **BMIP_OPTS)
    first = fresh_trainer(cfg)
    interrupt_after(first, epochs_done)
    with pytest.raises(Interrupt):
        first.train()
    second = fresh_trainer(cfg)
    second.train()

    assert f"Previous epoch: {epochs_done}" in capsys.readouterr().out
    assert second.start_epoch == epochs_done
    for k, v in weights(uninterrupted_bmip_run).items():
        assert torch.equal(second.model.state_dict()[k], v), k
    assert uninterrupted_bmip_run.epoch_lrs == pytest.approx(BMIP_LRS, rel=1e-4)
    assert first.epoch_lrs + second.epoch_lrs == pytest.approx(BMIP_LRS, rel=1e-4)


def test_best_val_saves_model_best_and_deploys_it(data_root, tmp_path, capsys):
    out = tmp_path / "best"
    trainer = fresh_trainer(toy_cfg(data_root, out, **{"TEST.FINAL_MODEL": "best_val", "TRAIN.CHECKPOINT_FREQ": "0"}))
    trainer.train()
    logged = capsys.readouterr().out

    assert logged.count("Evaluate on the *val* set") == 4
    best = torch.load(out / "model" / "model-best.pth.tar", weights_only=True)
    assert best["val_result"] == pytest.approx(trainer.best_result)
    assert 1 <= best["epoch"] <= 4
    assert (out / "model" / "model.pth.tar-4").exists()
    assert not (out / "model" / "model.pth.tar-2").exists()
    assert "Deploy the model with the best val performance" in logged
    assert f"model-best.pth.tar to model (epoch={best['epoch']}, val_result={best['val_result']:.1f})" in logged


def test_resume_keeps_best_val_result(data_root, tmp_path):
    cfg = toy_cfg(data_root, tmp_path / "b", **{"TEST.FINAL_MODEL": "best_val", "TEST.NO_TEST": "False"})
    first = fresh_trainer(cfg)
    interrupt_after(first, 3)
    with pytest.raises(Interrupt):
        first.train()
    second = fresh_trainer(cfg)
    second.before_train()
    assert second.start_epoch == 3
    assert second.best_result == pytest.approx(first.best_result)


def test_trainable_only_checkpoints_hold_only_trainable_tensors(data_root, tmp_path):
    out = tmp_path / "frozen"
    cfg = toy_cfg(data_root, out, trainer="EngineToyFrozenTrainer", **{"OPTIM.MAX_EPOCH": "2"})
    trainer = fresh_trainer(cfg)
    trainer.train()
    ckpt = torch.load(out / "model" / "model.pth.tar-2", weights_only=True)
    assert sorted(ckpt["state_dict"]) == ["2.bias", "2.weight"]

    other = fresh_trainer(cfg, seed=5)
    frozen_before = other.model[1].weight.clone()
    other.load_model(str(out), epoch=2)
    assert torch.equal(other.model[2].weight, trainer.model[2].weight)
    assert torch.equal(other.model[1].weight, frozen_before)

    ckpt["state_dict"]["9.weight"] = torch.zeros(1)
    torch.save(ckpt, out / "model" / "model.pth.tar-2")
    with pytest.raises(KeyError, match="9.weight"):
        other.load_model(str(out), epoch=2)


def test_load_model_errors_and_missing_val_result(data_root, tmp_path, capsys):
    trainer = fresh_trainer(toy_cfg(data_root, tmp_path / "x", **{"OPTIM.MAX_EPOCH": "1"}))
    with pytest.raises(FileNotFoundError, match="model-best.pth.tar"):
        trainer.load_model(str(tmp_path / "x"))
    trainer.train()
    trainer.load_model(str(tmp_path / "x"), epoch=1)
    assert "(epoch=1, val_result=n/a)" in capsys.readouterr().out
    trainer.load_model("")
    assert "load_model() is skipped" in capsys.readouterr().out



def test_device_choice(data_root, tmp_path):
    assert fresh_trainer(toy_cfg(data_root, tmp_path, **{"DEVICE": "cpu"})).device == torch.device("cpu")
    with pytest.raises(ValueError, match='DEVICE "gpu7"'):
        fresh_trainer(toy_cfg(data_root, tmp_path, **{"DEVICE": "gpu7"}))


def test_writer_is_a_no_op_without_tensorboard(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    trainer = TrainerBase()
    trainer.init_writer(str(tmp_path))
    trainer.write_scalar("train/loss", 1.0, 0)
    trainer.close_writer()
    assert "tensorboard is not installed" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
