"""Interrupted runs, determinism and safe checkpoint loading, with a real trainer (CoOp) on Digits.

The interruption test starts ``python train.py`` as a process, kills it with SIGKILL at exact places
(through the ``ENGINE_KILL_AT`` crash points of ``engine.utils.crash``: mid-epoch and mid-checkpoint-write),
damages a checkpoint, restarts it with the same command, and checks that the final weights, log lines and
test accuracy equal those of an uninterrupted run. The CLIP is a micro model (2+2 blocks, 32x32 input)
saved as a checkpoint file, so every run is a normal ``MODEL.BACKBONE.NAME <path>`` run that takes seconds.
See docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import train
from clip.model import CLIP
from engine.engine import build_trainer
from engine.optim import ConstantWarmupScheduler
from engine.utils import PickledObject, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MICRO_CLIP = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
                  context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                  transformer_layers=2)
EPOCHS = 3
CKPT_DIR = "prompt_learner"


def write_micro_clip(path: Path) -> Path:
    """An OpenAI-layout state dict of a micro CLIP (1 head of width 64 per block), usable as a backbone path."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(CLIP(**MICRO_CLIP).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def micro_clip(tmp_path_factory) -> Path:
    return write_micro_clip(tmp_path_factory.mktemp("clip") / "micro-clip.pt")


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(autouse=True)
def fast_env_info(monkeypatch):
    """torch's environment report runs for seconds; in-process runs do not need it."""
    monkeypatch.setattr(train, "collect_env_info", lambda: "env info")


def coop_argv(root: Path, out: Path, backbone: Path, *opts: str, seed: int = 1) -> list[str]:
    """A complete CoOp run on 2-shot Digits base classes: 3 epochs of 2 batches, a checkpoint per epoch."""
    return [
        "--root", str(root), "--trainer", "CoOp", "--output-dir", str(out), "--seed", str(seed),
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
        "--config-file", str(ROOT / "configs/trainers/CoOp/vit_b16.yaml"),
        "MODEL.BACKBONE.NAME", str(backbone), "INPUT.SIZE", "(32, 32)",
        "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base",
        "OPTIM.MAX_EPOCH", str(EPOCHS), "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.PRINT_FREQ", "1",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "64",
        "TRAINER.COOP.N_CTX", "4", *opts,
    ]


def final_state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / CKPT_DIR / f"model.pth.tar-{EPOCHS}", weights_only=True)["state_dict"]


def logs(out: Path) -> list[str]:
    """Every log of the output folder, oldest first (a restart moves log.txt to log.txt-<time>)."""
    paths = sorted(out.glob("log.txt*"), key=lambda p: (p.name == "log.txt", p.stat().st_mtime_ns))
    return [p.read_text() for p in paths]


def training_lines(log: str) -> list[tuple[str, str]]:
    """(``epoch [e/E] batch [b/B]``, its loss and lr) for every logged step (timings differ between runs)."""
    return re.findall(r"^(epoch \[\d+/\d+\] batch \[\d+/\d+\]) time .* (loss .* lr \S+) eta", log, re.M)


def accuracy(log: str) -> str:
    return re.findall(r"^\* accuracy: (.*)%$", log, re.M)[-1]


@pytest.fixture(scope="module")
def reference(digits_root, micro_clip, tmp_path_factory) -> Path:
    """An uninterrupted run (in process)."""
    out = tmp_path_factory.mktemp("reference")
    assert train.run(coop_argv(digits_root, out, micro_clip)) == 0
    return out


def launch(argv: list[str], kill_at: str = "") -> subprocess.CompletedProcess:
    """``python train.py ARGV`` as its own process; ``kill_at`` sets ENGINE_KILL_AT.

    torch's environment report (seconds of CPU per start) is replaced by a stub before the script runs, and
    the child uses this process's intra-op thread count (results are bit-identical only at equal counts).
    """
    code = (
        f"import runpy, sys, torch; torch.set_num_threads({torch.get_num_threads()}); "
        "sys.path.insert(0, '.'); import engine.utils; "
        "engine.utils.collect_env_info = lambda: 'env info'; "
        f"sys.argv = ['train.py', *{argv!r}]; runpy.run_path('train.py', run_name='__main__')"
    )
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_KILL_AT"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    if kill_at:
        env["ENGINE_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def counted_as_finished(out: Path) -> dict[str, object]:
    """What each tool that reads a run folder concludes about ``out`` (a training run of the scripts' kind)."""
    from tools import parse_test_res, results, sweep
    from tools.plan import Job, Step

    step = Step("base", "CoOp", "digits", 1, ("false",), out / "log.txt", parse_test_res.TRAIN_END)
    done = subprocess.run(["bash", "-c", 'source scripts/lib.sh && lib_done "$1" train', "lib", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    collected = results.collect([Job("run", (step,))])
    # A step that is not finished would be run (its command fails) and the sweep would report it failed.
    outcome = sweep.run_serial([Job("run", (step,))], out.parent / "sweep-logs")[0]
    return {
        "scripts skip it": done.returncode == 0,
        "parse_test_res": parse_test_res.parse_log(out / "log.txt").get("accuracy"),
        "tables": (collected.value("base", "CoOp", "digits", 1), collected.missing),
        "sweep": outcome.status,
    }


def test_killed_run_restarted_with_the_same_command_ends_like_an_uninterrupted_one(
    reference, digits_root, micro_clip, tmp_path
):
    out = tmp_path / "run"
    argv = coop_argv(digits_root, out, micro_clip)
    ckpts = out / CKPT_DIR

    # 1. Killed while writing its first checkpoint: the folder holds only that save's temporary file.
    done = launch(argv, kill_at="checkpoint-temp-written:1")
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    left = [p.name for p in ckpts.iterdir()]
    assert len(left) == 1 and re.fullmatch(r"\.model\.pth\.tar-1\.tmp-\d+", left[0]), left

    # 2. Restarted: the temporary file is removed, training starts from scratch; killed after the first step
    # of epoch 3 (steps 1-4 were epochs 1-2, both checkpointed).
    done = launch(argv, kill_at="train-step:5")
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    log = (out / "log.txt").read_text()
    assert f'Removed 1 temporary file(s) of an interrupted checkpoint save in "{ckpts}"' in log
    assert f'No complete checkpoint in "{out}" (killed before its first save?), train from scratch' in log
    assert (ckpts / "checkpoint").read_text() == "model.pth.tar-2\n"
    assert log.endswith(f"Checkpoint saved to {ckpts / 'model.pth.tar-2'}\n")

    # 3. Restarted, then killed while writing the epoch-3 checkpoint: its temporary file is complete, not renamed.
    done = launch(argv, kill_at="checkpoint-temp-written:1")
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not (ckpts / "model.pth.tar-3").exists()
    assert len(list(ckpts.glob(".model.pth.tar-3.tmp-*"))) == 1
    assert (ckpts / "checkpoint").read_text() == "model.pth.tar-2\n"
    assert not counted_as_finished(out)["scripts skip it"]

    # 4. The checkpoint named by the pointer is damaged (e.g. a copy cut short): the restart reports it by
    # name and continues from the previous complete one.
    damaged = ckpts / "model.pth.tar-2"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    done = launch(argv)
    assert done.returncode == 0, done.stderr[-2000:]
    log = logs(out)[-1]
    assert len(logs(out)) == 4 and log == (out / "log.txt").read_text()
    # (after the colon: torch's own first sentence, which depends on where the file was cut)
    warning = re.escape(f'Warning: Checkpoint "{damaged}" is unreadable (truncated or corrupt?): ')
    assert re.search(f"^{warning}.+\\. Trying the next checkpoint$", log, re.M)
    assert f'Loading checkpoint from "{ckpts / "model.pth.tar-1"}"' in log and "Previous epoch: 1" in log
    assert not list(ckpts.glob(".*.tmp-*"))

    expected, got = final_state(reference), final_state(out)
    assert expected.keys() == got.keys() == {"ctx", "token_prefix", "token_suffix"}  # the official CoOp layout
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert accuracy(log) == accuracy((reference / "log.txt").read_text())
    # Every step, including those redone after a kill, logged the loss and lr of the uninterrupted run.
    expected_lines = dict(training_lines((reference / "log.txt").read_text()))
    logged = training_lines("\n".join(logs(out)))
    assert len(expected_lines) == 2 * EPOCHS and {step for step, _ in logged} == set(expected_lines)
    assert [(step, expected_lines[step]) for step, _ in logged] == logged

    # The resumed run is a finished run for every tool that reads run folders.
    acc = float(accuracy(log))
    assert counted_as_finished(out) == {
        "scripts skip it": True, "parse_test_res": acc, "tables": (acc, []), "sweep": "complete",
    }


def test_same_seed_and_config_give_bit_identical_results(reference, digits_root, micro_clip, tmp_path):
    """The second run reads the few-shot cache the first one wrote, and still matches bit for bit."""
    assert (digits_root / "digits" / "split_fewshot" / "shot_2-seed_1.pkl").is_file()
    again = tmp_path / "again"
    assert train.run(coop_argv(digits_root, again, micro_clip)) == 0
    for epoch in range(1, EPOCHS + 1):
        a = torch.load(reference / CKPT_DIR / f"model.pth.tar-{epoch}", weights_only=True)
        b = torch.load(again / CKPT_DIR / f"model.pth.tar-{epoch}", weights_only=True)
        assert torch.equal(a["state_dict"]["ctx"], b["state_dict"]["ctx"])
        assert torch.equal(a["rng_state"]["torch"], b["rng_state"]["torch"])
    assert training_lines((again / "log.txt").read_text()) == training_lines((reference / "log.txt").read_text())
    assert accuracy((again / "log.txt").read_text()) == accuracy((reference / "log.txt").read_text())



def build(argv: list[str]):
    """What train.py does before training: config, seeds, trainer."""
    cfg = train.setup_cfg(train.build_parser().parse_args(argv))
    train.set_seeds(cfg)
    return build_trainer(cfg)


def test_init_seed_moves_the_initialisation_but_not_the_few_shot_split(digits_root, micro_clip, tmp_path):
    """BMIP's scheme: SEED picks the few-shot images, MODEL.INIT_SEED the initial prompts."""
    def trainer(init_seed: int):
        return build(coop_argv(digits_root, tmp_path, micro_clip, "MODEL.INIT_SEED", str(init_seed)))

    a, b, c = trainer(7), trainer(8), trainer(7)

    def images(t) -> list[str]:
        return [d.impath for d in t.dm.dataset.train_x]

    assert images(a) == images(b) == images(c)
    ctx = [t.model.prompt_learner.ctx.detach() for t in (a, b, c)]
    assert torch.equal(ctx[0], ctx[2]) and not torch.equal(ctx[0], ctx[1])


# ------------------------------------------------------------------------------------------ safe loading


def test_our_checkpoints_hold_only_tensors_and_plain_values(reference):
    ckpt = torch.load(reference / CKPT_DIR / "model.pth.tar-2", weights_only=True)
    assert sorted(ckpt) == ["epoch", "optimizer", "rng_state", "scheduler", "state_dict", "val_result"]
    assert ckpt["epoch"] == 2 and isinstance(ckpt["scheduler"]["successor_state"], dict)


def dassl_checkpoint(path: Path, canary: Path, monkeypatch) -> dict[str, torch.Tensor]:
    """A checkpoint shaped like one of real Dassl: its scheduler state holds a Dassl scheduler object and
    the torch successor scheduler (with its optimizer) as pickled objects. One object's pickle would
    run ``exec`` when fully unpickled (it would create ``canary``)."""
    dassl = types.ModuleType("dassl.optim.lr_scheduler")

    class ConstantWarmupScheduler:  # the class path is what matters: dassl.optim.lr_scheduler.<name>
        def __init__(self) -> None:
            self.warmup_epoch = 1

    ConstantWarmupScheduler.__module__ = dassl.__name__
    ConstantWarmupScheduler.__qualname__ = "ConstantWarmupScheduler"
    dassl.ConstantWarmupScheduler = ConstantWarmupScheduler

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(canary)!r}, 'w').close()",)

    for name in ("dassl", "dassl.optim", "dassl.optim.lr_scheduler"):
        monkeypatch.setitem(sys.modules, name, dassl)
    ctx = nn.Parameter(torch.randn(4, 64))
    optimizer = torch.optim.SGD([ctx], lr=0.002)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    optimizer.step()
    successor.step()
    state_dict = OrderedDict([("prompt_learner.ctx", ctx.detach().clone())])
    torch.save({
        "state_dict": state_dict,
        "epoch": 2,
        "optimizer": optimizer.state_dict(),
        "scheduler": {"successor": successor, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": 1,
                      "base_lrs": [0.002], "_last_lr": [0.002], "owner": ConstantWarmupScheduler(),
                      "payload": Payload()},
        "val_result": 71.5,
    }, path)
    for name in ("dassl", "dassl.optim", "dassl.optim.lr_scheduler"):
        monkeypatch.delitem(sys.modules, name)
    return state_dict


def test_dassl_pickles_load_only_through_the_explicit_tensor_only_option(tmp_path, monkeypatch):
    path, canary = tmp_path / "model-best.pth.tar", tmp_path / "canary"
    state_dict = dassl_checkpoint(path, canary, monkeypatch)

    with pytest.raises(pickle.UnpicklingError) as info:
        load_checkpoint(str(path))
    # The scheduler objects of real Dassl are allowed; the payload, which no Dassl file holds, is not.
    assert str(info.value).startswith(f'"{path}" holds a pickled Python object (') and "exec) that neither" in str(info.value)
    assert "pass --allow-pickle" in str(info.value) and not canary.exists()

    ckpt = load_checkpoint(str(path), allow_pickle=True)
    assert not canary.exists(), "the tensor-only reader executed code from the file"
    assert torch.equal(ckpt["state_dict"]["prompt_learner.ctx"], state_dict["prompt_learner.ctx"])
    assert (ckpt["epoch"], ckpt["val_result"]) == (2, 71.5)
    assert isinstance(ckpt["optimizer"]["state"], dict)
    scheduler = ckpt["scheduler"]
    assert scheduler["owner"].cls_path == "dassl.optim.lr_scheduler.ConstantWarmupScheduler"
    assert scheduler["payload"].cls_path == "builtins.exec"
    successor = scheduler["successor"]
    assert isinstance(successor, PickledObject)
    assert successor.cls_path == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert successor.state["optimizer"].cls_path == "torch.optim.sgd.SGD"

    # The data of the legacy scheduler is enough to restore our warmup scheduler in place.
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.002)
    ours = ConstantWarmupScheduler(optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS), 1, 1e-5)
    ours.load_state_dict({k: v for k, v in scheduler.items() if k not in ("owner", "payload")})
    assert ours.successor.last_epoch == 1 and ours.successor.T_max == EPOCHS
