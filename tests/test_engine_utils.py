"""Engine building blocks: config strictness, logger, meters, checkpoints, evaluator, transforms, data."""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from sklearn.metrics import f1_score
from torchvision.transforms import CenterCrop, RandomResizedCrop, Resize
from yacs.config import CfgNode

from engine.config import clean_cfg, get_cfg_default
from engine.data import DatasetWrapper, build_data_loader
from engine.data.data_manager import seed_worker
from engine.data.datasets import Datum
from engine.data.samplers import build_sampler
from engine.data.transforms import build_transform
from engine.data.transforms.randaugment import _OPS, RandAugment
from engine.data.transforms.transforms import Cutout, InstanceNormalization
from engine.evaluation import build_evaluator
from engine.evaluation.evaluator import confusion_matrix, macro_f1_score
from engine.metrics import compute_accuracy
from engine.utils import (
    AverageMeter,
    MetricMeter,
    count_num_param,
    load_checkpoint,
    load_pretrained_weights,
    resume_from_checkpoint,
    save_checkpoint,
    setup_logger,
)
from engine.utils.logger import Logger

# ---------------------------------------------------------------- config


def test_get_cfg_default_returns_independent_copies():
    cfg = get_cfg_default()
    cfg.OPTIM.LR = 1.0
    assert get_cfg_default().OPTIM.LR == 0.0003


def test_yaml_values_are_coerced_and_checked(tmp_path):
    cfg = get_cfg_default()
    good = tmp_path / "good.yaml"
    good.write_text("OPTIM:\n  WARMUP_CONS_LR: 1e-5\n  STEPSIZE: [3, 6]\nINPUT:\n  SIZE: (32, 32)\n")
    cfg.merge_from_file(str(good))
    assert cfg.OPTIM.WARMUP_CONS_LR == 1e-5 and cfg.OPTIM.STEPSIZE == (3, 6) and cfg.INPUT.SIZE == (32, 32)

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("OPTIM:\n  LEARNING_RATE: 0.1\n")
    with pytest.raises(KeyError, match="Non-existent config key: OPTIM.LEARNING_RATE"):
        get_cfg_default().merge_from_file(str(unknown))
    with pytest.raises(ValueError, match="OPTIM.LR"):
        get_cfg_default().merge_from_list(["OPTIM.LR", "2"])


def test_clean_cfg_keeps_only_the_trainer_subtree():
    cfg = get_cfg_default()
    cfg.TRAINER.COOP = CfgNode({"N_CTX": 16})
    cfg.TRAINER.MAPLE = CfgNode({"N_CTX": 2})
    clean_cfg(cfg, "MaPLe")
    assert sorted(cfg.TRAINER.keys()) == ["MAPLE", "NAME"]


# ---------------------------------------------------------------- logger and meters


def test_logger_tees_flushes_and_keeps_previous_logs(tmp_path, capsys):
    logger = setup_logger(str(tmp_path))
    try:
        print("first line")
        # Flushed per line: readable before the logger is closed.
        assert (tmp_path / "log.txt").read_text() == "first line\n"
    finally:
        logger.close()
    assert sys.stdout is not logger
    assert "first line" in capsys.readouterr().out

    # A new run moves the previous log aside: log.txt is always the latest run, the older ones stay readable.
    for text in ("second", "third"):
        with setup_logger(str(tmp_path)):
            print(text)
    logs = sorted(p.name for p in tmp_path.iterdir())
    assert logs[0] == "log.txt" and len(logs) == 3
    assert all(name.startswith("log.txt-20") for name in logs[1:])
    older = sorted(logs[1:], key=lambda n: (tmp_path / n).stat().st_mtime_ns)
    assert [(tmp_path / n).read_text().splitlines()[-1] for n in older] == ["first line", "second"]
    assert (tmp_path / "log.txt").read_text() == f"The previous log of this folder is kept as {older[1]}\nthird\n"

    with setup_logger(str(tmp_path / "custom.log")):
        print("x")
    assert (tmp_path / "custom.log").read_text() == "x\n"
    assert setup_logger(None) is None


def test_meters():
    meter = AverageMeter()
    meter.update(torch.tensor(2.0))
    meter.update(4.0, n=3)
    assert (meter.val, meter.sum, meter.count, meter.avg) == (4.0, 14.0, 4, 3.5)
    ema = AverageMeter(ema=True)
    ema.update(1.0)
    ema.update(1.0)
    assert ema.avg == pytest.approx(0.19)

    metrics = MetricMeter()
    metrics.update({"loss": torch.tensor(1.0), "acc": 50.0})
    metrics.update({"loss": 3.0, "acc": 100.0})
    metrics.update(None)
    assert str(metrics) == "loss 3.0000 (2.0000) acc 100.0000 (75.0000)"
    with pytest.raises(TypeError, match="dict"):
        metrics.update([1.0])


# ---------------------------------------------------------------- checkpoints


def test_save_checkpoint_layout_and_atomicity(tmp_path, capsys):
    model = nn.Linear(2, 1)
    state = {"state_dict": OrderedDict((f"module.{k}", v) for k, v in model.state_dict().items()), "epoch": 3}
    save_checkpoint(state, str(tmp_path), is_best=True)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-3"]
    assert (tmp_path / "checkpoint").read_text() == "model.pth.tar-3\n"
    loaded = load_checkpoint(str(tmp_path / "model-best.pth.tar"))
    assert sorted(loaded["state_dict"]) == ["bias", "weight"]
    assert f"Checkpoint saved to {tmp_path / 'model.pth.tar-3'}" in capsys.readouterr().out

    save_checkpoint({"state_dict": model.state_dict(), "epoch": 4}, str(tmp_path), model_name="model-best.pth.tar")
    assert (tmp_path / "checkpoint").read_text() == "model-best.pth.tar\n"


def test_load_checkpoint_refuses_pickled_objects_unless_allowed(tmp_path):
    path = tmp_path / "dassl.pth.tar"
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    torch.save({"state_dict": {}, "scheduler": {"successor": scheduler}}, path)
    # A scheduler object is one of the types real Dassl pickles: read without the flag, as an inert stand-in.
    for allow in (False, True):
        successor = load_checkpoint(str(path), allow_pickle=allow)["scheduler"]["successor"]
        assert successor.cls_path == "torch.optim.lr_scheduler.StepLR" and not isinstance(successor, type(scheduler))
    torch.save({"state_dict": {}, "extra": collections.deque([1])}, path)  # no Dassl checkpoint holds a deque
    with pytest.raises(pickle.UnpicklingError, match=r"dassl\.pth\.tar.*deque.*allow_pickle=True"):
        load_checkpoint(str(path))
    extra = load_checkpoint(str(path), allow_pickle=True)["extra"]
    assert extra.cls_path == "collections.deque" and extra.elements == [1]  # its items kept as data
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError):
        load_checkpoint(None)


def test_resume_from_checkpoint_restores_weights_optimizer_and_epoch(tmp_path):
    model = nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 7, "optimizer": optimizer.state_dict()}, str(tmp_path))

    other = nn.Linear(2, 1)
    other_opt = torch.optim.Adam(other.parameters(), lr=0.1)
    assert resume_from_checkpoint(str(tmp_path), other, other_opt) == 7
    assert torch.equal(other.weight, model.weight)
    assert other_opt.state_dict()["state"][0]["step"] == 1
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        resume_from_checkpoint(str(tmp_path / "none"), other)


def test_load_pretrained_weights_keeps_matching_keys(tmp_path, capsys):
    source = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 4))
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "w.pth")
    target = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 5))
    load_pretrained_weights(target, str(tmp_path / "w.pth"))
    assert torch.equal(target[0].weight, source[0].weight)
    assert "['1.weight', '1.bias']" in capsys.readouterr().out
    assert count_num_param(target) == 6 + 3 + 15 + 5
    assert count_num_param(params=[{"params": [target[0].weight]}, target[0].bias]) == 9


# ---------------------------------------------------------------- metrics and evaluator


def test_compute_accuracy_topk():
    output = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05]])
    top1, top2 = compute_accuracy((output,), torch.tensor([1, 1]), topk=(1, 2))
    assert top1.shape == (1,) and top1.item() == 50.0 and top2.item() == 100.0


def test_macro_f1_matches_sklearn_over_true_labels():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, size=200)
    y_pred = rng.integers(0, 7, size=200)
    expected = f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))
    assert macro_f1_score(y_true, y_pred) == pytest.approx(expected)
    cmat = confusion_matrix(y_true, y_pred)
    assert cmat.shape == (7, 7) and np.allclose(cmat[:5].sum(1), 1.0)


def test_classification_evaluator_prints_dassl_format(tmp_path, capsys):
    cfg = get_cfg_default()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.TEST.PER_CLASS_RESULT = True
    cfg.TEST.COMPUTE_CMAT = True
    evaluator = build_evaluator(cfg, lab2cname={0: "cat", 1: "dog"})
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])
    evaluator.process(logits, torch.tensor([0, 0, 1, 1]))
    results = evaluator.evaluate()
    assert list(results)[0] == "accuracy" and results["accuracy"] == 75.0
    assert results["perclass_accuracy"] == 75.0
    out = capsys.readouterr().out
    assert (
        "=> result\n* total: 4\n* correct: 3\n* accuracy: 75.0%\n* error: 25.0%\n* macro_f1: 73.3%\n"
        "=> per-class result\n* class: 0 (cat)\ttotal: 2\tcorrect: 1\tacc: 50.0%\n"
        "* class: 1 (dog)\ttotal: 2\tcorrect: 2\tacc: 100.0%\n* average: 75.0%\n"
    ) in out
    assert torch.load(tmp_path / "cmat.pt", weights_only=True).tolist() == [[0.5, 0.5], [0.0, 1.0]]
    evaluator.reset()
    with pytest.raises(ValueError, match="no sample"):
        evaluator.evaluate()


# ---------------------------------------------------------------- transforms and data


@pytest.fixture()
def image_cfg():
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (16, 16)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


@pytest.fixture()
def images(tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20, 30, 3), i * 40, dtype=np.uint8)).save(path)
        paths.append(Datum(impath=str(path), label=i % 2, classname=str(i % 2)))
    return paths


def test_train_and_test_pipelines_follow_dassl(image_cfg):
    train = build_transform(image_cfg, is_train=True)
    assert not any(isinstance(t, Resize) for t in train.transforms)
    rrc = next(t for t in train.transforms if isinstance(t, RandomResizedCrop))
    assert rrc.scale == (0.08, 1.0) and rrc.interpolation.value == "bicubic"
    test = build_transform(image_cfg, is_train=False)
    assert isinstance(test.transforms[0], Resize) and test.transforms[0].size == 16
    assert isinstance(test.transforms[1], CenterCrop)
    out = test(Image.new("RGB", (30, 20)))
    assert out.shape == (3, 16, 16)


def test_transform_choice_errors(image_cfg):
    with pytest.raises(ValueError, match=r'"imagenet_policy".*random_resized_crop'):
        build_transform(image_cfg, choices=["imagenet_policy"])
    image_cfg.INPUT.INTERPOLATION = "lanczos"
    with pytest.raises(ValueError, match="lanczos"):
        build_transform(image_cfg)
    image_cfg.INPUT.NO_TRANSFORM = True
    assert build_transform(image_cfg) is None


def test_every_supported_transform_runs(image_cfg):
    choices = ["random_translation", "random_crop", "random_flip", "randaugment", "colorjitter", "randomgrayscale",
               "gaussian_blur", "cutout", "normalize", "gaussian_noise", "instance_norm"]
    image_cfg.INPUT.GB_K = 3
    out = build_transform(image_cfg, choices=choices)(Image.new("RGB", (30, 20), (200, 10, 10)))
    assert out.shape == (3, 16, 16) and torch.isfinite(out).all()


def test_randaugment_ops_and_tensor_transforms():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 12, 3)).astype(np.uint8))
    for op, low, high in _OPS:
        assert op(img, (high + low) / 2).size == img.size
    assert RandAugment(3, 30)(img).size == img.size
    with pytest.raises(ValueError, match="RANDAUGMENT_M"):
        RandAugment(2, 31)
    ones = torch.ones(3, 8, 8)
    assert Cutout(1, 4)(ones).sum() < ones.sum()
    normed = InstanceNormalization()(torch.rand(3, 8, 8))
    assert torch.allclose(normed.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5)


def test_dataset_wrapper_items(image_cfg, images):
    image_cfg.DATALOADER.K_TRANSFORMS = 2
    image_cfg.DATALOADER.RETURN_IMG0 = True
    tfm = build_transform(image_cfg, is_train=True)
    item = DatasetWrapper(image_cfg, images, transform=[tfm, tfm], is_train=True)[3]
    assert item["index"] == 3 and item["label"] == 1 and item["impath"] == images[3].impath
    assert len(item["img"]) == 2 and len(item["img2"]) == 2 and item["img0"].shape == (3, 16, 16)
    assert DatasetWrapper(image_cfg, images, transform=tfm, is_train=False)[0]["img"].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="K_TRANSFORMS"):
        DatasetWrapper(image_cfg, images, transform=None, is_train=True)


def test_data_loader_drop_last_rule_and_errors(image_cfg, images):
    tfm = build_transform(image_cfg, is_train=False)
    train = build_data_loader(image_cfg, "RandomSampler", images, batch_size=2, tfm=tfm, is_train=True)
    assert len(train) == 2 and train.drop_last
    small = build_data_loader(image_cfg, "RandomSampler", images, batch_size=8, tfm=tfm, is_train=True)
    assert len(small) == 1 and not small.drop_last
    test = build_data_loader(image_cfg, "SequentialSampler", images, batch_size=2, tfm=tfm, is_train=False)
    batch = next(iter(test))
    assert batch["img"].shape == (2, 3, 16, 16) and batch["label"].tolist() == [0, 1]
    with pytest.raises(ValueError, match=r'"RandomDomainSampler".*RandomSampler, SequentialSampler'):
        build_sampler("RandomDomainSampler", data_source=images)
    with pytest.raises(ValueError, match="empty"):
        build_data_loader(image_cfg, "SequentialSampler", [], tfm=tfm)


def test_worker_numpy_seed_follows_torch_worker_seed():
    torch.manual_seed(11)
    seed_worker(0)
    drawn = np.random.rand(3)
    np.random.seed(11)
    assert np.array_equal(drawn, np.random.rand(3))


class _FakeTerminal:
    """Two streams (stdout, stderr) drawing on one terminal that understands ``\\r`` and ``\\n``."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current: list[str] = []
        self.col = 0

    def draw(self, text: str) -> None:
        assert "\x1b" not in text  # one bar: no cursor movement expected
        for ch in text:
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.lines.append("".join(self.current).rstrip())
                self.current, self.col = [], 0
            else:
                if self.col < len(self.current):
                    self.current[self.col] = ch
                else:
                    self.current.append(ch)
                self.col += 1

    def stream(self):
        terminal = self

        class Stream(io.StringIO):
            def write(self, text: str) -> int:
                terminal.draw(text)
                return len(text)

            def isatty(self) -> bool:
                return True

        return Stream()


def test_log_lines_never_leave_progress_bar_snapshots_on_a_terminal(tmp_path, monkeypatch):
    """Per-batch log lines printed while the bar shows: the terminal keeps only the log lines."""
    from engine.engine.trainer import _progress

    terminal = _FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal.stream())
    logger = Logger(str(tmp_path / "log.txt"), console=terminal.stream())
    bar = _progress(range(3), "epoch 1/1")
    try:
        for i in bar:
            bar.refresh()  # the bar is on screen when the line is printed
            logger.write(f"epoch [1/1] batch [{i + 1}/3] loss 0.5")
            logger.write("\n")
        bar.close()
    finally:
        logger.close()
    assert terminal.lines == [f"epoch [1/1] batch [{i + 1}/3] loss 0.5" for i in range(3)]
    assert "".join(terminal.current).strip() == ""  # the closed bar (leave=False) is cleared
    assert (tmp_path / "log.txt").read_text().splitlines() == terminal.lines
