"""Real Dassl clients: the fixture files in tests/dassl_clients (written like CoOp, CoCoOp, KgCoOp, ProGrad
and Dassl's tools/train.py) run unmodified through ``python -m tools.dassl_run``, and checkpoints cross
both ways between this engine and Dassl's checkpoint layout.

"Real Dassl" cannot be installed (not on PyPI), so its readers are reproduced here from Dassl's documented
behaviour (engine_and_data_spec; Dassl.pytorch's ``resume_from_checkpoint`` and ``_BaseWarmupScheduler``):
``torch.load``, a strict ``load_state_dict`` of the registered model, ``optimizer.load_state_dict``, and a
scheduler whose ``load_state_dict`` copies every key of the saved dict onto itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

import train
from engine.config import get_cfg_default
from engine.utils import Registry
from tools.convert_official import main as convert_main

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = ROOT / "tests" / "dassl_clients"
DIGITS = str(ROOT / "configs" / "datasets" / "digits.yaml")
SMALL = ["INPUT.SIZE", "(32, 32)", "DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", "base"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clip_cache")


def dassl_run(*argv: str, cache: Path) -> str:
    """``python -m tools.dassl_run ARGV`` from the project root; returns stdout (fails on a non-zero status)."""
    env = {**os.environ, "CLIP_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "tools.dassl_run", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def client_args(data_root: Path, out: Path, trainer: str, config: str, *flags: str, opts: tuple = ()) -> list[str]:
    return ["--root", str(data_root), "--trainer", trainer, "--seed", "1", "--backbone", "random:micro",
            "--dataset-config-file", DIGITS, "--config-file", str(CLIENTS / "configs" / config),
            "--output-dir", str(out), "--no-env-info", *flags, *SMALL, *opts]


# ------------------------------------------------------------------------ unmodified client files


def test_repository_train_py_runs_its_coop_and_fp16_cocoop(data_root, clip_cache, tmp_path):
    """The repository's own train.py, trainers (named like ours), keys and YAML types, unmodified."""
    script = str(CLIENTS / "train.py")
    coop = dassl_run(script, *client_args(data_root, tmp_path / "coop", "CoOp", "coop.yaml"), cache=clip_cache)
    assert "CTX_INIT=True W=8.0 LOSS.NAME='prograd'" in coop  # its own keys, bool CTX_INIT from its YAML
    assert "epoch [1/1] batch [1/1]" in coop and "* accuracy:" in coop and "Finish training" in coop
    saved = torch.load(tmp_path / "coop" / "prompt_learner" / "model.pth.tar-1", weights_only=True)
    assert set(saved["state_dict"]) == {"ctx", "token_prefix", "token_suffix"}
    assert saved["state_dict"]["ctx"].shape[0] == 4  # "a photo of a": CTX_INIT True took its meaning

    cocoop = dassl_run(script, *client_args(data_root, tmp_path / "cocoop", "CoCoOp", "cocoop.yaml"),
                       cache=clip_cache)
    assert "CLIP dtype: torch.float16, meta_net dtype: fp16" in cocoop  # OpenAI's fp16 build_model
    assert "* accuracy:" in cocoop


def test_dassl_tools_train_py_with_an_imported_trainer_file(data_root, clip_cache, tmp_path):
    """Dassl's generic entry point imports no trainer: ``--import`` brings the file and its extend_cfg."""
    args = client_args(data_root, tmp_path / "out", "CoOp", "coop.yaml")
    at = args.index("DATASET.SUBSAMPLE_CLASSES")
    del args[at : at + 2]  # a key of the CoOp family, not of Dassl
    out = dassl_run("--import", "datasets", "--import", str(CLIENTS / "trainers" / "coop.py"),
                    str(CLIENTS / "tools" / "train.py"), *args, cache=clip_cache)
    assert "CTX_INIT=True W=8.0 LOSS.NAME='prograd'" in out
    assert "* accuracy:" in out


def test_our_train_py_takes_a_file_of_the_same_name_and_its_keys(data_root, clip_cache, tmp_path):
    out = dassl_run("--import", str(CLIENTS / "trainers" / "coop.py"), "train.py",
                    *[a for a in client_args(data_root, tmp_path / "out", "CoOp", "coop.yaml") if a != "--no-env-info"],
                    cache=clip_cache)
    assert 'takes the name "CoOp" in the TRAINER registry from the built-in trainers.coop.CoOp' in out
    assert "CTX_INIT=True W=8.0 LOSS.NAME='prograd'" in out and "* accuracy:" in out


# ------------------------------------------------------------------------ config and registry rules


def test_bool_ctx_init_of_kgcoop_yamls_merges_into_our_string_key(tmp_path):
    cfg = get_cfg_default()
    train.extend_cfg(cfg)
    yaml = tmp_path / "kgcoop.yaml"
    yaml.write_text("TRAINER:\n  COOP:\n    CTX_INIT: True\n  COCOOP:\n    CTX_INIT: False\n")
    cfg.merge_from_file(str(yaml))
    assert (cfg.TRAINER.COOP.CTX_INIT, cfg.TRAINER.COCOOP.CTX_INIT) == ("a photo of a", "")
    cfg.merge_from_list(["TRAINER.COOP.CTX_INIT", "False"])
    assert cfg.TRAINER.COOP.CTX_INIT == ""
    with pytest.raises(ValueError, match="Type mismatch"):  # other keys stay strict
        cfg.merge_from_list(["TRAINER.COOP.N_CTX", "'four'"])


def test_outside_registrations_take_built_in_names_but_not_each_others():
    registry = Registry("TOY")

    def make(name: str, module: str) -> type:
        return type(name, (), {"__module__": module})

    with registry.builtins():
        registry.register(make("CoOp", "ours"))
    assert registry.is_builtin("CoOp")
    theirs = make("CoOp", "theirs")
    registry.register(theirs)
    assert registry.get("CoOp") is theirs and not registry.is_builtin("CoOp")
    with pytest.raises(KeyError, match=r'"CoOp" was already registered .*by theirs\.CoOp.*force=True'):
        registry.register(make("CoOp", "third"))
    first = make("ZeroshotCLIP", "theirs")  # an outside file imported before the built-ins also wins
    registry.register(first)
    with registry.builtins():
        registry.register(make("ZeroshotCLIP", "ours"))
    assert registry.get("ZeroshotCLIP") is first


# ------------------------------------------------------------------------ checkpoints both ways


class DasslWarmup(CosineAnnealingLR):
    """Dassl's warmup scheduler as far as checkpoints go: it holds its successor as an attribute, saves
    its ``__dict__`` without the optimizer and loads by copying every saved key onto itself."""

    def __init__(self, optimizer, successor, warmup_epoch: int, cons_lr: float):
        self.successor, self.warmup_epoch, self.cons_lr = successor, warmup_epoch, cons_lr
        super().__init__(optimizer, T_max=1)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)

    def state_dict(self):
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)


class OfficialPromptLearner(nn.Module):
    """The official CoOp's registered model: ``ctx`` and the class buffers."""

    def __init__(self, saved: dict[str, torch.Tensor]):
        super().__init__()
        self.ctx = nn.Parameter(torch.zeros_like(saved["ctx"]))
        self.register_buffer("token_prefix", torch.zeros_like(saved["token_prefix"]))
        self.register_buffer("token_suffix", torch.zeros_like(saved["token_suffix"]))


def dassl_resume(fdir: Path, model: nn.Module, optimizer, scheduler) -> int:
    """Dassl's resume_from_checkpoint: the pointer file, torch.load, strict loads."""
    name = (fdir / "checkpoint").read_text().splitlines()[0].strip()
    checkpoint = torch.load(fdir / name, map_location="cpu")
    model.load_state_dict(checkpoint["state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    return checkpoint["epoch"]


def coop_argv(data_root: Path, out: Path, *extra: str, epochs: int = 2) -> list[str]:
    """Our CoOp (cocoop.yaml holds no key of the fixture's CoOp) with a warmup, 2 epochs."""
    return ["--root", str(data_root), "--trainer", "CoOp", "--seed", "1", "--backbone", "random:micro",
            "--dataset-config-file", DIGITS, "--config-file", str(CLIENTS / "configs" / "cocoop.yaml"),
            "--output-dir", str(out), *extra, *SMALL, "TRAINER.COOP.PREC", "fp32", "TRAINER.COOP.N_CTX", "4",
            "OPTIM.MAX_EPOCH", str(epochs), "TEST.NO_TEST", "True"]


@pytest.fixture()
def quiet_env(monkeypatch, clip_cache):
    monkeypatch.setattr(train, "collect_env_info", lambda: "env info")
    monkeypatch.setenv("CLIP_CACHE_DIR", str(clip_cache))


def test_engine_checkpoints_resume_in_dassl_and_load_in_the_official_coop(data_root, clip_cache, quiet_env, tmp_path):
    out = tmp_path / "ours"
    assert train.run(coop_argv(data_root, out)) == 0
    fdir = out / "prompt_learner"
    saved = torch.load(fdir / "model.pth.tar-2", weights_only=True)
    assert set(saved["state_dict"]) == {"ctx", "token_prefix", "token_suffix"}  # the official CoOp's keys

    # Dassl resumes it: the strict load fits, and its scheduler keeps a working successor.
    model = OfficialPromptLearner(saved["state_dict"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    scheduler = DasslWarmup(optimizer, CosineAnnealingLR(optimizer, T_max=2), warmup_epoch=1, cons_lr=1e-5)
    assert dassl_resume(fdir, model, optimizer, scheduler) == 2
    assert torch.equal(model.ctx.detach(), saved["state_dict"]["ctx"])
    assert scheduler.last_epoch == saved["scheduler"]["last_epoch"] and scheduler.cons_lr == 1e-5
    assert isinstance(scheduler.successor, CosineAnnealingLR)
    scheduler.step()  # earlier engine files put a dict under "successor": this step raised AttributeError
    legacy = {**saved["scheduler"], "successor": saved["scheduler"]["successor_state"]}
    scheduler.load_state_dict(legacy)
    with pytest.raises(AttributeError):
        scheduler.step()

    # The official coop.py's load_model (through the launcher) loads ctx, not nothing.
    evaluated = dassl_run(str(CLIENTS / "train.py"),
                          *client_args(data_root, tmp_path / "eval", "CoOp", "coop.yaml", "--eval-only", "--model-dir",
                                       str(out), "--load-epoch", "2", opts=("TRAINER.COOP.CTX_INIT", "False")),
                          cache=clip_cache)
    assert "Loaded keys: ['ctx']" in evaluated and "* accuracy:" in evaluated


def write_dassl_file(path: Path, state_dict: dict, monkeypatch, epoch: int = 1) -> None:
    """A checkpoint as real Dassl writes it: the scheduler and its successor pickled as objects."""
    module = ModuleType("dassl.optim.lr_scheduler")

    class ConstantWarmupScheduler:
        pass

    ConstantWarmupScheduler.__module__ = module.__name__
    ConstantWarmupScheduler.__qualname__ = "ConstantWarmupScheduler"
    module.ConstantWarmupScheduler = ConstantWarmupScheduler
    for name in ("dassl", "dassl.optim", "dassl.optim.lr_scheduler"):
        monkeypatch.setitem(sys.modules, name, module)
    ctx = nn.Parameter(state_dict["ctx"].clone())
    optimizer = torch.optim.SGD([ctx], lr=0.002, momentum=0.9)
    successor = CosineAnnealingLR(optimizer, T_max=2)
    owner = ConstantWarmupScheduler()
    owner.__dict__.update({"successor": successor, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": epoch,
                           "base_lrs": [0.002], "_last_lr": [0.002]})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state_dict, "epoch": epoch, "optimizer": optimizer.state_dict(),
                "scheduler": owner.__dict__ | {"successor": successor}, "val_result": None}, path)
    (path.parent / "checkpoint").write_text(path.name + "\n")
    for name in ("dassl", "dassl.optim", "dassl.optim.lr_scheduler"):
        monkeypatch.delitem(sys.modules, name)


def test_dassl_files_evaluate_and_resume_with_allow_pickle_and_convert(data_root, quiet_env, tmp_path, monkeypatch,
                                                                       capsys):
    out = tmp_path / "ours"
    assert train.run(coop_argv(data_root, out, epochs=1)) == 0
    ours = torch.load(out / "prompt_learner" / "model.pth.tar-1", weights_only=True)["state_dict"]
    official = OrderedDict((k, v.half() if k != "ctx" else v + 1.0) for k, v in ours.items())
    dassl_dir = tmp_path / "dassl"
    write_dassl_file(dassl_dir / "prompt_learner" / "model.pth.tar-1", official, monkeypatch)
    capsys.readouterr()

    evaluate = coop_argv(data_root, tmp_path / "eval", "--eval-only", "--model-dir", str(dassl_dir), "--load-epoch", "1")
    assert train.run(evaluate) == 1
    assert "pass --allow-pickle to train.py" in capsys.readouterr().err
    assert train.run(["--allow-pickle", *evaluate]) == 0
    assert "* accuracy:" in capsys.readouterr().out

    # Resume training from it (epoch 1 of 2), then the official ctx + 1.0 has moved on from there.
    resumed = tmp_path / "resumed"
    write_dassl_file(resumed / "prompt_learner" / "model.pth.tar-1", official, monkeypatch)
    assert train.run(["--allow-pickle", *coop_argv(data_root, resumed)]) == 0
    logged = capsys.readouterr().out
    assert "Loaded scheduler" in logged and "epoch [2/2]" in logged and "epoch [1/2]" not in logged
    final = torch.load(resumed / "prompt_learner" / "model.pth.tar-2", weights_only=True)["state_dict"]["ctx"]
    assert not torch.equal(final, official["ctx"]) and torch.allclose(final, official["ctx"], atol=0.1)

    # Converted once, the file needs no --allow-pickle.
    converted = tmp_path / "converted"
    assert convert_main(["--method", "CoOp", "--allow-pickle", str(dassl_dir / "prompt_learner" / "model.pth.tar-1"),
                         "--output-dir", str(converted)]) == 0
    assert set(torch.load(converted / "prompt_learner" / "model.pth.tar-1", weights_only=True)["state_dict"]) == {
        "prompt_learner.ctx"}
    evaluate[evaluate.index(str(dassl_dir))] = str(converted)
    assert train.run(evaluate) == 0


# ------------------------------------------------------------------------ Dassl's generic trainer surface


def test_trainer_xu_pairs_labelled_and_unlabelled_batches(data_root, quiet_env, tmp_path, capsys):
    """A semi-supervised trainer in Dassl's shape: TrainerXU, 3-value parse_batch_train, COUNT_ITER."""
    import datasets  # noqa: F401  (Digits)
    from engine.data.datasets import DATASET_REGISTRY
    from engine.engine import TRAINER_REGISTRY, TrainerXU, build_trainer

    digits = DATASET_REGISTRY.get("Digits")

    class DigitsUnlabelled(digits):
        """Digits whose test images also serve, without labels, as train_u."""

        def __init__(self, cfg):
            super().__init__(cfg)
            self._train_u = self._test[:6]

    class ToyXU(TrainerXU):
        def build_model(self):
            self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, self.num_classes)).to(self.device)
            self.optim = torch.optim.SGD(self.model.parameters(), lr=0.01)
            self.register_model("model", self.model, self.optim, None)
            self.seen: list[tuple[int, int]] = []

        def forward_backward(self, batch_x, batch_u):
            image_x, label, image_u = self.parse_batch_train(batch_x, batch_u)
            self.seen.append((image_x.shape[0], image_u.shape[0]))
            entropy = softmax_entropy(self.model(image_u))
            loss = torch.nn.functional.cross_entropy(self.model(image_x), label) + 0.1 * entropy
            self.model_backward_and_update(loss)
            return {"loss": loss.item()}

    DATASET_REGISTRY.register(DigitsUnlabelled)
    TRAINER_REGISTRY.register(ToyXU)
    try:
        cfg = get_cfg_default()
        train.extend_cfg(cfg)
        cfg.merge_from_list(["DATASET.NAME", "DigitsUnlabelled", "DATASET.ROOT", str(data_root), "TRAINER.NAME",
                             "ToyXU", "OUTPUT_DIR", str(tmp_path), "INPUT.SIZE", (32, 32), "DATASET.NUM_SHOTS", 2,
                             "DATALOADER.TRAIN_X.BATCH_SIZE", 4, "DATALOADER.NUM_WORKERS", 0, "OPTIM.MAX_EPOCH", 1,
                             "TRAIN.COUNT_ITER", "train_u", "TEST.NO_TEST", True])
        trainer = build_trainer(cfg)
        trainer.train()
        # COUNT_ITER train_u: the unlabelled loader (6 images in batches of 4, the last one dropped) sets
        # the epoch length, not the 5 labelled batches (20 images); each step gets one batch of each.
        assert len(trainer.train_loader_x) == 5 and trainer.num_batches == len(trainer.train_loader_u) == 1
        assert trainer.seen == [(4, 4)]
        assert "epoch [1/1] batch [1/1]" in capsys.readouterr().out
    finally:
        DATASET_REGISTRY.unregister("DigitsUnlabelled")
        TRAINER_REGISTRY.unregister("ToyXU")


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    probs = logits.softmax(-1)
    return -(probs * probs.clamp_min(1e-8).log()).sum(-1).mean()


def test_dassl_vanilla_trains_simplenet_through_dassl_tools_train_py(data_root, clip_cache, tmp_path):
    """Dassl's own baseline: the default build_model (SimpleNet, a torchvision ResNet) under Vanilla."""
    out = dassl_run("--import", "datasets", str(CLIENTS / "tools" / "train.py"), "--root", str(data_root),
                    "--trainer", "Vanilla", "--seed", "1", "--backbone", "resnet18", "--dataset-config-file", DIGITS,
                    "--output-dir", str(tmp_path / "out"), "--no-env-info", "INPUT.SIZE", "(32, 32)",
                    "DATASET.NUM_SHOTS", "1", "MODEL.BACKBONE.PRETRAINED", "False", "MODEL.HEAD.NAME", "mlp",
                    "MODEL.HEAD.HIDDEN_LAYERS", "[32]", "OPTIM.NAME", "sgd", "OPTIM.MAX_EPOCH", "1",
                    "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "100", "INPUT.TRANSFORMS",
                    "['normalize']", cache=clip_cache)
    assert "Backbone: resnet18" in out and "Head: mlp" in out and "Checkpoint saved to" in out
    assert "epoch [1/1]" in out and "* accuracy:" in out
    saved = torch.load(tmp_path / "out" / "model" / "model.pth.tar-1", weights_only=True)["state_dict"]
    assert "classifier.weight" in saved and saved["classifier.weight"].shape == (10, 32)
