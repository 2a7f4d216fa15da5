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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

import train
from engine.config import get_cfg_default
from engine.utils import Registry
from tests.dassl_compat import compat_row
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


@compat_row("a repository's own `train.py` (CoOp, KgCoOp shape) via `python -m tools.dassl_run REPO/train.py`",
            'yes',
            "its `extend_cfg` keys with their YAML types (bool `CTX_INIT`, `W`, `LOSS`), its `CoOp` (our name) trains, saves the official layout; its CoCoOp's `meta_net.half()` meets OpenAI's fp16 `build_model`")
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


@compat_row("Dassl's `tools/train.py` via `tools.dassl_run --import FILE`",
            'yes',
            "the imported file's trainer and `extend_cfg` keys, trained and evaluated")
def test_dassl_tools_train_py_with_an_imported_trainer_file(data_root, clip_cache, tmp_path):
    """Dassl's generic entry point imports no trainer: ``--import`` brings the file and its extend_cfg."""
    args = client_args(data_root, tmp_path / "out", "CoOp", "coop.yaml")
    at = args.index("DATASET.SUBSAMPLE_CLASSES")
    del args[at : at + 2]  # a key of the CoOp family, not of Dassl
    out = dassl_run("--import", "datasets", "--import", str(CLIENTS / "trainers" / "coop.py"),
                    str(CLIENTS / "tools" / "train.py"), *args, cache=clip_cache)
    assert "CTX_INIT=True W=8.0 LOSS.NAME='prograd'" in out
    assert "* accuracy:" in out


@compat_row('our `train.py` with `--import FILE` (files of a `trainers` package)',
            'yes',
            "the file's `CoOp` takes the name over, its keys win over ours; a file's relative import (`from .coop import`) finds its own package's module, not ours")
def test_our_train_py_takes_a_file_of_the_same_name_and_its_keys(data_root, clip_cache, tmp_path):
    """Files of a trainers package import inside it: prograd.py's ``from .coop import`` finds the fixture's
    coop.py, not ours (whose package has the same name)."""
    out = dassl_run("--import", str(CLIENTS / "trainers" / "coop.py"), "--import",
                    str(CLIENTS / "trainers" / "prograd.py"), "train.py",
                    *[a for a in client_args(data_root, tmp_path / "out", "CoOp", "coop.yaml") if a != "--no-env-info"],
                    cache=clip_cache)
    assert 'takes the name "CoOp" in the TRAINER registry from the built-in trainers.coop.CoOp' in out
    assert "CTX_INIT=True W=8.0 LOSS.NAME='prograd'" in out and "* accuracy:" in out


@compat_row('our `train.py` with `--import REPO` (a folder or its `train.py`)',
            'yes',
            "the repository's `extend_cfg` (keys that live only in its train.py) and the trainers its train.py imports; without it the keys are unknown")
def test_import_a_repository_folder_registers_its_train_py_keys_and_trainers(data_root, clip_cache, tmp_path):
    """``--import REPO`` through our train.py: the repository's extend_cfg (LOSS.T lives only there and in
    no file of ours) and the trainers its train.py imports, here ProGrad with its relative import."""
    args = [a for a in client_args(data_root, tmp_path / "out", "ProGrad", "prograd.yaml") if a != "--no-env-info"]
    out = dassl_run("--import", str(CLIENTS), "train.py", *args, cache=clip_cache)
    assert "xe_loss" in out and "kl_loss" in out and "* accuracy:" in out
    with pytest.raises(AssertionError, match="Non-existent config key: LOSS"):  # without it: not our keys
        dassl_run("train.py", *args, cache=clip_cache)


@compat_row("a ProGrad trainer file (calls `prograd_backward_and_update`, which ProGrad's and KgCoOp's Dassl forks add)",
            'yes',
            "the file's real training step (CE and KD losses, the engine's gradient projection) trains and evaluates")
def test_prograd_trainer_file_runs_its_training_step(data_root, clip_cache, tmp_path):
    """ProGrad's file calls the fork-added ``prograd_backward_and_update``; its CoOp modules come in by a
    relative import from the repository's trainers package."""
    out = tmp_path / "prograd"
    log = dassl_run(str(CLIENTS / "train.py"), *client_args(data_root, out, "ProGrad", "prograd.yaml"),
                    cache=clip_cache)
    assert "epoch [1/1] batch [1/1]" in log and "xe_loss" in log and "kl_loss" in log and "* accuracy:" in log
    ctx = torch.load(out / "prompt_learner" / "model.pth.tar-1", weights_only=True)["state_dict"]["ctx"]
    assert ctx.dtype == torch.float16 and torch.isfinite(ctx).all()


@compat_row('`prograd_backward_and_update` itself',
            'yes',
            'per parameter tensor, the CE gradient loses `lambda_` times its component along a conflicting KD gradient; a non-conflicting one is kept')
def test_prograd_step_removes_the_conflicting_component_per_tensor():
    """ProGrad's rule: where the task gradient g points against the knowledge gradient h, the step uses
    g - lambda (g.h)/|h|^2 h; elsewhere g itself (each parameter tensor on its own)."""
    from engine.engine import TrainerBase

    trainer = TrainerBase()
    model = nn.ParameterDict({"w": nn.Parameter(torch.zeros(2)), "u": nn.Parameter(torch.zeros(2)),
                              "frozen": nn.Parameter(torch.zeros(2), requires_grad=False)})
    trainer.register_model("prompt", model, torch.optim.SGD(model.parameters(), lr=1.0), None)

    def losses():
        w, u = model["w"], model["u"]
        task = w @ torch.tensor([1.0, 1.0]) + u @ torch.tensor([1.0, 0.0])
        knowledge = w @ torch.tensor([-2.0, 0.0]) + u @ torch.tensor([1.0, 1.0]) + model["frozen"].sum()
        return task, knowledge

    trainer.prograd_backward_and_update(*losses(), lambda_=0.5)
    # w: g=(1,1), h=(-2,0), g.h=-2 < 0 -> g - 0.5 * (-2/4) * h = (0.5, 1); u: g.h = 1 > 0 -> g = (1, 0).
    torch.testing.assert_close(model["w"].detach(), torch.tensor([-0.5, -1.0]))
    torch.testing.assert_close(model["u"].detach(), torch.tensor([-1.0, 0.0]))
    trainer.prograd_backward_and_update(*losses())  # lambda 1 removes the whole conflicting component
    torch.testing.assert_close(model["w"].detach(), torch.tensor([-0.5, -2.0]))


@compat_row('a MaPLe-family trainer file (`clip.build_model(state_dict, design_details)`, deep prompts through '
            'the towers\' calls) via our `train.py --import FILE`',
            'yes',
            "the file's CLIP is built with its design_details and its deep prompts train; the convention's "
            "logits are checked in `test_clip_designs.py`")
def test_maple_family_file_through_our_train_py(data_root, clip_cache, tmp_path):
    args = [a for a in client_args(data_root, tmp_path / "out", "MaPLe", "maple.yaml") if a != "--no-env-info"]
    out = dassl_run("--import", str(CLIENTS / "trainers" / "maple.py"), "train.py", *args, cache=clip_cache)
    assert "epoch [1/1] batch [1/1]" in out and "* accuracy:" in out
    saved = torch.load(tmp_path / "out" / "MultiModalPromptLearner" / "model.pth.tar-1", weights_only=True)
    assert "prompt_learner.compound_prompts_text.1" in saved["state_dict"]  # PROMPT_DEPTH 3: two deeper prompts


@compat_row("an IVLP-design trainer file (`clip.build_model` with design_details `IVLP`/`VPT`: the prompts live "
            "inside CLIP's towers and blocks, switched on by name) via our `train.py --import FILE`",
            'yes',
            "CLIP's `VPT`/`VPT_shallow` prompts (the repository's names) and the file's text context train, the "
            "frozen weights stay; its `load_model` reads the checkpoint back; logits checked in `test_clip_designs.py`")
def test_ivlp_design_file_trains_the_prompts_inside_clip_through_our_train_py(data_root, clip_cache, tmp_path):
    out_dir = tmp_path / "out"
    file = str(CLIENTS / "trainers" / "independentVL.py")
    args = [a for a in client_args(data_root, out_dir, "IVLP", "ivlp.yaml") if a != "--no-env-info"]
    out = dassl_run("--import", file, "train.py", *args, cache=clip_cache)
    prompts = ["image_encoder.VPT", "image_encoder.transformer.resblocks.1.VPT_shallow", "prompt_learner.ctx",
               "text_encoder.transformer.resblocks.1.VPT_shallow"]
    assert f"Parameters to be updated: {prompts}" in out  # the file's "VPT" in name filter found CLIP's prompts
    assert "epoch [2/2] batch [1/1]" in out and "* accuracy:" in out
    saved = [torch.load(out_dir / "VLPromptLearner" / f"model.pth.tar-{epoch}", weights_only=True)["state_dict"]
             for epoch in (1, 2)]
    for name in prompts:  # they had gradients and moved in the second epoch
        assert saved[0][name].dtype == torch.float32 and not torch.equal(saved[0][name], saved[1][name]), name
    frozen = "image_encoder.transformer.resblocks.1.attn.in_proj_weight"
    assert torch.equal(saved[0][frozen], saved[1][frozen])
    accuracy = out.rsplit("* accuracy:", 1)[1].split("\n")[0]
    flags = ("--eval-only", "--model-dir", str(out_dir), "--load-epoch", "2")
    args = [a for a in client_args(data_root, tmp_path / "eval", "IVLP", "ivlp.yaml", *flags) if a != "--no-env-info"]
    again = dassl_run("--import", file, "train.py", *args, cache=clip_cache)
    assert 'Loading weights to VLPromptLearner from' in again and again.rsplit("* accuracy:", 1)[1].split("\n")[0] == accuracy


@compat_row('a repository with its own `datasets/` and `clip/` via `tools.dassl_run`',
            'yes',
            'our `Digits` reader and `random:micro` (in its `clip._MODELS`/`_download`, read by its own `build_model`) reach its train.py')
def test_repository_with_its_own_datasets_and_clip_reaches_our_names(data_root, clip_cache, tmp_path):
    """Its ``datasets`` package hides ours and its ``clip`` knows only OpenAI's names: the launcher registers
    our readers (Digits) and answers ``random:micro`` in its ``clip._MODELS``/``_download``, unmodified."""
    out = dassl_run(str(CLIENTS / "own_packages" / "train.py"), "--root", str(data_root), "--output-dir",
                    str(tmp_path / "out"), "--trainer", "LinearProbe", "--backbone", "random:micro",
                    "--dataset-config-file", DIGITS, "INPUT.SIZE", "(32, 32)", "DATASET.NUM_SHOTS", "2",
                    "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0", cache=clip_cache)
    assert "Backbone random:micro: 62 tensors, embed_dim 64" in out  # its own build_model read our weights
    assert "# classes  10" in out and "* accuracy:" in out  # our Digits, through its train.py


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


class _RealDasslWarmup(LRScheduler):
    """Real Dassl's warmup scheduler as it pickles: an ``LRScheduler`` holding its successor, with the
    default ``state_dict`` (every attribute but its own optimizer, so the successor goes in as an object,
    with the successor's optimizer and that one's ``defaultdict`` state)."""

    def __init__(self, optimizer, successor, warmup_epoch: int):
        self.successor, self.warmup_epoch = successor, warmup_epoch
        super().__init__(optimizer)

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)


class ConstantWarmupScheduler(_RealDasslWarmup):
    def __init__(self, optimizer, successor, warmup_epoch: int, cons_lr: float):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch)

    def get_lr(self):
        return self.successor.get_last_lr() if self.last_epoch >= self.warmup_epoch else [self.cons_lr] * len(
            self.base_lrs)


class LinearWarmupScheduler(_RealDasslWarmup):
    def __init__(self, optimizer, successor, warmup_epoch: int, min_lr: float):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        if self.last_epoch == 0:
            return [self.min_lr] * len(self.base_lrs)
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


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


@compat_row("our CoOp checkpoint -> real Dassl's resume and the official `coop.py`'s `load_model`",
            'yes',
            "Dassl's strict loads fit, its warmup scheduler keeps a working successor; the official `load_model` loads `ctx`")
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_engine_checkpoints_resume_in_dassl_and_load_in_the_official_coop(data_root, clip_cache, quiet_env, tmp_path):
    out = tmp_path / "ours"
    assert train.run(coop_argv(data_root, out)) == 0
    fdir = out / "prompt_learner"
    saved = torch.load(fdir / "model.pth.tar-2", weights_only=True)
    assert set(saved["state_dict"]) == {"ctx", "token_prefix", "token_suffix"}  # the official CoOp's keys

    # Dassl resumes it: the strict load fits, and its scheduler keeps a working successor.
    model = OfficialPromptLearner(saved["state_dict"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    scheduler = ConstantWarmupScheduler(optimizer, CosineAnnealingLR(optimizer, T_max=2), warmup_epoch=1, cons_lr=1e-5)
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


def write_dassl_file(path: Path, state_dict: dict, dtype: torch.dtype = torch.float32, warmup: str = "constant",
                     extra: object = None) -> None:
    """A checkpoint as real Dassl's save_model writes it for the official CoOp: the prompt learner's
    parameters in ``dtype`` after one epoch of SGD with momentum under a warm-up scheduler (Dassl's
    build_lr_scheduler with a cosine successor that counts the warm-up epoch), the optimizer's and scheduler's
    ``state_dict()``."""
    with pytest.MonkeyPatch.context() as patch:
        module = ModuleType("dassl.optim.lr_scheduler")
        for cls in (ConstantWarmupScheduler, LinearWarmupScheduler):
            patch.setattr(cls, "__module__", module.__name__)
            setattr(module, cls.__name__, cls)
        for name in ("dassl", "dassl.optim", "dassl.optim.lr_scheduler"):
            patch.setitem(sys.modules, name, module)
        _write_dassl_file(path, state_dict, dtype, warmup, extra)


def _write_dassl_file(path: Path, state_dict: dict, dtype: torch.dtype, warmup: str, extra: object) -> None:
    ctx = nn.Parameter(state_dict["ctx"].to(dtype))
    optimizer = torch.optim.SGD([ctx], lr=0.002, momentum=0.9)
    successor = CosineAnnealingLR(optimizer, T_max=2)
    successor.last_epoch = 1  # Dassl's OPTIM.WARMUP_RECOUNT False: the cosine counts the warm-up epoch
    if warmup == "constant":
        scheduler = ConstantWarmupScheduler(optimizer, successor, warmup_epoch=1, cons_lr=1e-5)
    else:
        scheduler = LinearWarmupScheduler(optimizer, successor, warmup_epoch=1, min_lr=1e-5)
    ctx.grad = torch.full_like(ctx, 1e-3)
    optimizer.step()  # the momentum buffer: a per-parameter entry in the optimizer's defaultdict
    scheduler.step()
    saved = {**state_dict, "ctx": ctx.detach()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": saved, "epoch": 1, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "val_result": None, **({"extra": extra} if extra else {})},
               path)
    (path.parent / "checkpoint").write_text(path.name + "\n")


class NotDassl:
    """An object no Dassl checkpoint holds (the safe loader must refuse the file)."""


@pytest.mark.parametrize(("dtype", "warmup"), [(torch.float32, "constant"), (torch.float16, "linear")])
@compat_row('a real-Dassl CoOp checkpoint with warm-up (pickled successor, optimizer, `defaultdict`) -> our `--eval-only`, resume, `tools.convert_official`',
            'yes, no flag',
            "exactly the types a Dassl checkpoint holds load as inert data (fp32 constant and fp16 linear warm-up); resume continues the file's successor; the converted file is plain fp32")
def test_dassl_warmup_checkpoints_evaluate_resume_and_convert_safely(data_root, quiet_env, tmp_path, capsys, dtype,
                                                                      warmup):
    out = tmp_path / "ours"
    assert train.run(coop_argv(data_root, out, epochs=1)) == 0
    ours = torch.load(out / "prompt_learner" / "model.pth.tar-1", weights_only=True)["state_dict"]
    official = OrderedDict((k, v.half() if k != "ctx" else v + 1.0) for k, v in ours.items())
    dassl_dir = tmp_path / "dassl"
    dassl_file = dassl_dir / "prompt_learner" / "model.pth.tar-1"
    write_dassl_file(dassl_file, official, dtype, warmup)
    written = torch.load(dassl_file, weights_only=False)
    assert isinstance(written["scheduler"]["successor"], CosineAnnealingLR)  # an object, as real Dassl's
    assert type(written["scheduler"]["successor"].optimizer.state).__name__ == "defaultdict"
    assert written["state_dict"]["ctx"].dtype == dtype
    capsys.readouterr()

    # Evaluation, no flag: only the types a Dassl checkpoint holds are rebuilt, as inert stand-ins.
    evaluate = coop_argv(data_root, tmp_path / "eval", "--eval-only", "--model-dir", str(dassl_dir), "--load-epoch", "1")
    assert train.run(evaluate) == 0
    assert "* accuracy:" in capsys.readouterr().out

    # Resume training from it (epoch 1 of 2): the successor's schedule state arrives, ctx moves on.
    resumed = tmp_path / "resumed"
    write_dassl_file(resumed / "prompt_learner" / "model.pth.tar-1", official, dtype, warmup)
    assert train.run(coop_argv(data_root, resumed)) == 0
    logged = capsys.readouterr().out
    assert "Loaded scheduler" in logged and "epoch [2/2]" in logged and "epoch [1/2]" not in logged
    final = torch.load(resumed / "prompt_learner" / "model.pth.tar-2", weights_only=True)
    assert final["scheduler"]["successor_state"]["last_epoch"] == 2  # the file's successor went on (ours: 1)
    start = written["state_dict"]["ctx"].float()
    assert not torch.equal(final["state_dict"]["ctx"], start)
    assert torch.allclose(final["state_dict"]["ctx"], start, atol=0.1)

    # Converted once (no flag needed), the file is plain and loads as ours.
    converted = tmp_path / "converted"
    assert convert_main(["--method", "CoOp", str(dassl_file), "--output-dir", str(converted)]) == 0
    plain = torch.load(converted / "prompt_learner" / "model.pth.tar-1", weights_only=True)["state_dict"]
    assert set(plain) == {"prompt_learner.ctx"} and plain["prompt_learner.ctx"].dtype == torch.float32
    assert torch.equal(plain["prompt_learner.ctx"], start)
    evaluate[evaluate.index(str(dassl_dir))] = str(converted)
    evaluate[evaluate.index(str(tmp_path / "eval"))] = str(tmp_path / "eval_converted")  # one run per folder
    assert train.run(evaluate) == 0


@compat_row('a checkpoint holding other pickled objects',
            'with `--allow-pickle`',
            'refused with one line naming the class, `--allow-pickle` and what it risks; with the flag it evaluates')
def test_a_checkpoint_with_other_objects_needs_allow_pickle(data_root, quiet_env, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ours"
    assert train.run(coop_argv(data_root, out, epochs=1)) == 0
    ours = torch.load(out / "prompt_learner" / "model.pth.tar-1", weights_only=True)["state_dict"]
    foreign = tmp_path / "foreign"
    write_dassl_file(foreign / "prompt_learner" / "model.pth.tar-1", ours, extra=NotDassl())
    capsys.readouterr()
    evaluate = coop_argv(data_root, tmp_path / "eval", "--eval-only", "--model-dir", str(foreign), "--load-epoch", "1")
    assert train.run(evaluate) == 1
    refused = capsys.readouterr().err
    assert f"({NotDassl.__module__}.NotDassl)" in refused and "could run code" in refused
    assert "pass --allow-pickle" in refused and "inert placeholder" in refused
    assert train.run(["--allow-pickle", *evaluate]) == 0
    assert "* accuracy:" in capsys.readouterr().out


# ------------------------------------------------------------------------ Dassl's generic trainer surface


@compat_row('a `TrainerXU` subclass (labelled + unlabelled loaders)',
            'yes',
            'one batch of each per step, `TRAIN.COUNT_ITER train_u` sets the epoch length')
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


@contextmanager
def dassl_trainer_file(dataset: type, file_name: str, trainer: str) -> Iterator[None]:
    """Dassl's names installed, ``dataset`` registered and the fixture trainer file ``file_name`` (registering
    ``trainer``) imported, as a repository's ``train.py --import`` would; all of it undone afterwards."""
    from engine import dassl_alias
    from engine.data.datasets import DATASET_REGISTRY
    from engine.engine import TRAINER_REGISTRY
    from tools.dassl_run import import_file

    assert dassl_alias.install()
    DATASET_REGISTRY.register(dataset)
    try:
        import_file(str(CLIENTS / "trainers" / file_name))
        yield
    finally:
        DATASET_REGISTRY.unregister(dataset.__name__)
        if trainer in TRAINER_REGISTRY:
            TRAINER_REGISTRY.unregister(trainer)
        dassl_alias.uninstall()


def digits_simplenet_cfg(dataset: str, trainer: str, data_root: Path, out: Path, *opts: object):
    """The default config set up for one quick epoch of ``trainer`` on Dassl's ``SimpleNet`` (an untrained
    ResNet-18) over 2-shot, 32-pixel digits of ``dataset``; ``opts`` (KEY VALUE ...) merged last."""
    cfg = get_cfg_default()
    cfg.merge_from_list(["DATASET.NAME", dataset, "DATASET.ROOT", str(data_root), "TRAINER.NAME", trainer,
                         "OUTPUT_DIR", str(out), "INPUT.SIZE", (32, 32), "DATASET.NUM_SHOTS", 2,
                         "DATALOADER.TRAIN_X.BATCH_SIZE", 4, "DATALOADER.NUM_WORKERS", 0, "OPTIM.MAX_EPOCH", 1,
                         "OPTIM.NAME", "sgd", "MODEL.BACKBONE.NAME", "resnet18", "MODEL.BACKBONE.PRETRAINED", False,
                         "INPUT.TRANSFORMS", ["normalize"], "TEST.NO_TEST", True, *opts])
    return cfg


@compat_row("Dassl's `EntMin` (semi-supervised) as a trainer file, with `init_network_weights` and "
            "`dassl.engine.trainer.SimpleNet` importable",
            'yes',
            "the file's `TrainerXU` step on the default `SimpleNet` (a torchvision ResNet) with Dassl's "
            "`TRAINER.ENTMIN.LMDA`: both losses logged, one epoch trained")
def test_dassl_entmin_file_trains_on_labelled_and_unlabelled_digits(data_root, quiet_env, tmp_path, capsys):
    import datasets  # noqa: F401  (Digits)
    from engine.data.datasets import DATASET_REGISTRY
    from engine.engine import build_trainer
    from engine.utils import init_network_weights

    class DigitsUnlabelled(DATASET_REGISTRY.get("Digits")):
        def __init__(self, cfg):
            super().__init__(cfg)
            self._train_u = self._test[:8]

    with dassl_trainer_file(DigitsUnlabelled, "entmin.py", "EntMin"):
        from dassl.engine.trainer import SimpleNet  # where Dassl's CrossGrad imports it from
        from dassl.utils import init_network_weights as dassl_init

        assert dassl_init is init_network_weights
        cfg = digits_simplenet_cfg("DigitsUnlabelled", "EntMin", data_root, tmp_path,
                                   "DATALOADER.TRAIN_U.BATCH_SIZE", 4)
        trainer = build_trainer(cfg)
        assert isinstance(trainer.model, SimpleNet) and trainer.lmda == 1e-3
        init_network_weights(trainer.model.classifier, init_type="kaiming")
        trainer.train()
        logged = capsys.readouterr().out
        assert "epoch [1/1]" in logged and "loss_x" in logged and "loss_u" in logged


@compat_row("Dassl's `DomainMix` (domain generalisation) as a trainer file, reading `batch['domain']`",
            'yes',
            "the file's cross-domain mixing with Dassl's `TRAINER.DOMAINMIX` keys (type, Beta alpha/beta): every "
            "image mixed with a partner of another source domain, one epoch trained")
def test_dassl_domainmix_file_mixes_across_source_domains(data_root, quiet_env, tmp_path, capsys):
    import datasets  # noqa: F401  (Digits)
    from engine.data.datasets import DATASET_REGISTRY
    from engine.data.datasets.base_dataset import Datum
    from engine.engine import TRAINER_REGISTRY, build_trainer

    class DigitsTwoDomains(DATASET_REGISTRY.get("Digits")):
        """Digits with its training images split into two source domains (by position)."""

        def __init__(self, cfg):
            super().__init__(cfg)
            self._train_x = [Datum(d.impath, d.label, i % 2, d.classname) for i, d in enumerate(self._train_x)]

    with dassl_trainer_file(DigitsTwoDomains, "domainmix.py", "DomainMix"):
        cls = TRAINER_REGISTRY.get("DomainMix")
        partners: list[tuple[torch.Tensor, torch.Tensor]] = []  # (domains of the batch, partner of each image)
        original = cls.domain_mix

        def recording(self, x, target, domain):
            mixed, target_a, target_b, lam = original(self, x, target, domain)
            mixed_in = (mixed - lam * x) / (1 - lam)  # x[perm]: which image each one was mixed with
            partner = torch.cdist(mixed_in.flatten(1), x.flatten(1)).argmin(dim=1)
            assert torch.equal(target_b, target[partner]) and torch.equal(target_a, target)
            partners.append((domain.clone(), partner))
            return mixed, target_a, target_b, lam

        cls.domain_mix = recording
        cfg = digits_simplenet_cfg("DigitsTwoDomains", "DomainMix", data_root, tmp_path)
        assert (cfg.TRAINER.DOMAINMIX.TYPE, cfg.TRAINER.DOMAINMIX.ALPHA, cfg.TRAINER.DOMAINMIX.BETA) == (
            "crossdomain", 1.0, 1.0)  # Dassl's defaults
        trainer = build_trainer(cfg)
        trainer.train()
        assert "epoch [1/1]" in capsys.readouterr().out and partners
        for domain, partner in partners:
            if len(set(domain.tolist())) > 1:  # crossdomain: every partner comes from another source domain
                assert (domain[partner] != domain).all()
        assert any(len(set(domain.tolist())) > 1 for domain, _ in partners)


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    probs = logits.softmax(-1)
    return -(probs * probs.clamp_min(1e-8).log()).sum(-1).mean()


@compat_row("Dassl's `Vanilla` with the default `build_model` (`SimpleNet`) through Dassl's `tools/train.py`",
            'yes, torchvision ResNets',
            '`resnet18` backbone, `mlp` head, trains, evaluates, saves')
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


def test_compat_table_in_the_docs_is_the_generated_one():
    """docs/DASSL_COMPAT.md's table is what tools/dassl_compat_table.py writes from the @compat_row tests."""
    from tools import dassl_compat_table as table

    rows = table.collect_rows()
    assert len(rows) >= 13 and all(row[3].startswith("`test_dassl_") for row in rows)
    assert table.main(["--check"]) == 0, "run python -m tools.dassl_compat_table"
