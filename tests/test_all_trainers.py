"""Every registered trainer trains and evaluates on Digits through its own scripts; scripts/lib.sh itself.

``test_trainer_through_base2new_scripts`` is parametrised over ``TRAINER_REGISTRY.registered_names()``, so a
trainer is tested the moment it is registered: ``<SCRIPTS_DIR>/base2new_train.sh digits 1 ...`` (train on
the base classes, final test on them), then ``base2new_test.sh digits 1 ...`` (new classes and all classes
from the base-trained checkpoint), on CPU with the ``random:tiny`` CLIP, 1 shot, 1 epoch, no workers,
evaluating on the few-shot validation split (``TEST.SPLIT val``) to keep it cheap.

Conventions a trainer class may declare (optional class attributes):

* ``SCRIPTS_DIR: str`` - its scripts' folder relative to the repository root; default
  ``scripts/<name in lower case>``.
* ``ZERO_SHOT: bool`` - True when there is nothing to train: ``base2new_train.sh`` then evaluates the base
  classes with ``--eval-only`` and no checkpoint is expected.
* ``SMOKE_TEST_OPTS: tuple[str, ...]`` - extra ``KEY VALUE`` config overrides this test must pass (e.g. a
  description file); paths are relative to the repository root, where the scripts run.

The scripts get ``TRAINER=<name>`` in their environment; only scripts shared by several trainers read it
(``scripts/zsclip/`` serves ZeroshotCLIP and ZeroshotCLIP2).

The ``test_lib_*`` tests run the scripts with a stand-in interpreter (``PYTHON``) that records its
arguments, to check the command lines, the output layout and skip-if-done without running train.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import trainers  # noqa: F401  (registers the trainers)
from engine.engine import TRAINER_REGISTRY
from tools import layout

ROOT = Path(__file__).resolve().parents[1]
SMOKE_OPTS = [
    "MODEL.BACKBONE.NAME", "random:tiny",
    "DATASET.NUM_SHOTS", "1",
    "OPTIM.MAX_EPOCH", "1",
    "DATALOADER.NUM_WORKERS", "0",
    "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
    "DATALOADER.TEST.BATCH_SIZE", "100",
    "TEST.SPLIT", "val",  # the few-shot val set (1 image per class): the same code path, 50x fewer images
]  # fmt: skip
ACCURACY = re.compile(r"^\* accuracy: [\d.]+%$", re.MULTILINE)


def run_script(
    script: Path, args: list[str], env: dict[str, str], timeout: int = 1200, cwd: Path = ROOT
) -> str:
    result = subprocess.run(
        ["bash", str(script), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"{script} {' '.join(args)} failed ({result.returncode}):\n{output[-4000:]}"
    )
    return output


def only_dir(pattern: str, base: Path) -> Path:
    found = sorted(base.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} under {base}, found {found}"
    return found[0]


def smoke_setup(name: str, data: Path, output: Path) -> tuple[Path, list[str], dict[str, str], bool]:
    """A trainer's scripts folder, smoke-test overrides, script environment and ZERO_SHOT flag."""
    cls = TRAINER_REGISTRY.get(name)
    scripts = ROOT / getattr(cls, "SCRIPTS_DIR", f"scripts/{name.lower()}")
    env = {
        "DATA": str(data),
        "OUTPUT": str(output),
        "PYTHON": sys.executable,
        "TRAINER": name,
        "OMP_NUM_THREADS": "1",  # tiny models: threads only contend on a shared CPU
    }
    return scripts, [*SMOKE_OPTS, *getattr(cls, "SMOKE_TEST_OPTS", ())], env, getattr(cls, "ZERO_SHOT", False)


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root for all trainers (Digits writes its images there on first use)."""
    return tmp_path_factory.mktemp("data")


@pytest.mark.parametrize("name", TRAINER_REGISTRY.registered_names())
def test_trainer_through_base2new_scripts(name: str, digits_root: Path, tmp_path: Path) -> None:
    scripts, opts, env, zero_shot = smoke_setup(name, digits_root, tmp_path)
    run_script(scripts / "base2new_train.sh", ["digits", "1", *opts], env)
    common = f"digits/shots_1/{name}/*/seed1+overrides-*"  # the smoke overrides place the run apart
    train_dir = only_dir(f"base2new/train_base/{common}", tmp_path)
    train_log = (train_dir / "log.txt").read_text()
    assert f"Loading trainer: {name}" in train_log
    assert re.search(r"# classes\s+5\b", train_log)
    assert ACCURACY.search(train_log), train_log[-2000:]
    if not zero_shot:
        assert "Finish training" in train_log.splitlines()
        checkpoint = only_dir("*/model.pth.tar-1", train_dir)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        assert state, "the checkpoint holds no tensors"
        frozen = [k for k in state if k.endswith(("token_embedding.weight", "visual.conv1.weight"))]
        assert not frozen, f"checkpoint holds frozen CLIP weights: {frozen}"

    run_script(scripts / "base2new_test.sh", ["digits", "1", *opts], env)
    for sub, n_classes in (("new", 5), ("all", 10)):
        log = (only_dir(f"base2new/test_{sub}/{common}", tmp_path) / "log.txt").read_text()
        assert re.search(rf"# classes\s+{n_classes}\b", log), f"test_{sub}: wrong label space"
        assert ACCURACY.search(log), log[-2000:]
        if not zero_shot:
            loaded = re.search(r"Load \S*(model\.pth\.tar-1|model-best\.pth\.tar)", log)
            assert loaded, f"test_{sub} did not load the trained checkpoint"


def test_every_trainer_module_is_imported_by_the_package() -> None:
    """A trainer module missing from trainers/__init__.py would register nothing and go untested."""
    defining = {
        p.stem for p in (ROOT / "trainers").glob("*.py") if "@TRAINER_REGISTRY.register" in p.read_text()
    }
    assert defining, "no trainer modules found"
    missing = sorted(m for m in defining if f"trainers.{m}" not in sys.modules)
    assert not missing, f"add these modules to trainers/__init__.py: {missing}"


# ---------------------------------------------------------------------------------------- scripts/lib.sh
FAKE_PYTHON = """#!/usr/bin/env bash
# Stand-in for python: records train.py's arguments and writes a finished log into --output-dir.
out=""; prev=""
for a in "$@"; do [ "$prev" = "--output-dir" ] && out="$a"; prev="$a"; done
mkdir -p "$out"
printf '%s\\n' "$@" > "$out/argv.txt"
printf 'Finish training\\n* accuracy: 50.0%%\\nElapsed: 0:00:01\\n' > "$out/log.txt"
"""


@pytest.fixture
def lib_env(tmp_path: Path) -> dict[str, str]:
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return {"DATA": "/data/root", "OUTPUT": str(tmp_path / "out"), "PYTHON": str(fake)}


def argv(run_dir: Path) -> list[str]:
    return (run_dir / "argv.txt").read_text().splitlines()


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_lib_base2new_layout_passthrough_and_skip(lib_env: dict[str, str]) -> None:
    out = Path(lib_env["OUTPUT"])
    overrides = ["OPTIM.MAX_EPOCH", "3"]
    run_script(ROOT / "scripts/coop/base2new_train.sh", ["digits", "1", *overrides], lib_env)
    # a run with overrides is placed apart from the default run's folder (seed1)
    plain_dir = out / "base2new/train_base/digits/shots_16/CoOp/vit_b16_ctxv1/seed1"
    train_dir = layout.place(plain_dir, overrides)
    assert train_dir.name.startswith("seed1+overrides-") and not plain_dir.exists()
    args = argv(train_dir)
    assert args[0] == "train.py" and "--eval-only" not in args
    assert flag(args, "--root") == "/data/root" and flag(args, "--seed") == "1"
    assert flag(args, "--trainer") == "CoOp"
    assert flag(args, "--dataset-config-file") == "configs/datasets/digits.yaml"
    assert flag(args, "--config-file") == "configs/trainers/CoOp/vit_b16_ctxv1.yaml"
    # the script's overrides first, the caller's last (so they win)
    assert args[-6:] == [
        "DATASET.NUM_SHOTS",
        "16",
        "DATASET.SUBSAMPLE_CLASSES",
        "base",
        "OPTIM.MAX_EPOCH",
        "3",
    ]

    (train_dir / "argv.txt").unlink()
    skipped = run_script(ROOT / "scripts/coop/base2new_train.sh", ["digits", "1", *overrides], lib_env)
    assert "Skip this job" in skipped and not (train_dir / "argv.txt").exists()
    run_script(ROOT / "scripts/coop/base2new_train.sh", ["digits", "1", *overrides], {**lib_env, "FORCE": "1"})
    assert (train_dir / "argv.txt").exists()
    # `Finish training` without the final evaluation (say a test image failed to load) is not finished.
    (train_dir / "log.txt").write_text("Finish training\nDeploy the last-epoch model\nEvaluate on the *test* set\n")
    (train_dir / "argv.txt").unlink()
    ran = run_script(ROOT / "scripts/coop/base2new_train.sh", ["digits", "1", *overrides], lib_env)
    assert "Skip this job" not in ran and (train_dir / "argv.txt").exists()
    # the default run is not the smoke run: it trains into its own folder
    ran = run_script(ROOT / "scripts/coop/base2new_train.sh", ["digits", "1"], lib_env)
    assert "Skip this job" not in ran and (plain_dir / "argv.txt").exists()

    run_script(ROOT / "scripts/coop/base2new_test.sh", ["digits", "1", *overrides], lib_env)
    for sub in ("new", "all"):
        args = argv(layout.place(out / f"base2new/test_{sub}/digits/shots_16/CoOp/vit_b16_ctxv1/seed1", overrides))
        assert "--eval-only" in args and flag(args, "--model-dir") == str(train_dir)
        assert flag(args, "--load-epoch") == "3"  # the caller's OPTIM.MAX_EPOCH
        assert args[-4:-2] == ["DATASET.SUBSAMPLE_CLASSES", sub]


def test_lib_relative_paths_are_taken_from_the_caller(lib_env: dict[str, str], tmp_path: Path) -> None:
    env = {**lib_env, "DATA": "my_data", "OUTPUT": "my_out"}
    run_script(ROOT / "scripts/cocoop/xd_train.sh", ["imagenet", "1"], env, cwd=tmp_path)
    args = argv(tmp_path / "my_out/imagenet/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1_16shots/seed1")
    assert flag(args, "--root") == str(tmp_path / "my_data")


def test_lib_load_epoch_defaults_and_env(lib_env: dict[str, str]) -> None:
    out = Path(lib_env["OUTPUT"])
    run_script(ROOT / "scripts/cocoop/base2new_train.sh", ["eurosat", "2"], lib_env)
    run_script(ROOT / "scripts/cocoop/base2new_test.sh", ["eurosat", "2"], {**lib_env, "SUBS": "new"})
    test_dir = out / "base2new/test_new/eurosat/shots_16/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1/seed2"
    assert flag(argv(test_dir), "--load-epoch") == "10"
    assert not (out / "base2new/test_all").exists()
    run_script(
        ROOT / "scripts/cocoop/base2new_test.sh", ["eurosat", "2"], {**lib_env, "LOADEP": "7", "FORCE": "1"}
    )
    assert flag(argv(test_dir), "--load-epoch") == "7"
    # BMIP evaluates model-best (LOADEP "best"), also when the training epochs are overridden.
    bmip_args = ["eurosat", "2", "OPTIM.MAX_EPOCH", "3"]
    run_script(ROOT / "scripts/bmip/base2new_train.sh", bmip_args, lib_env)
    run_script(ROOT / "scripts/bmip/base2new_test.sh", bmip_args, {**lib_env, "SUBS": "new"})
    bmip_test = argv(layout.place(out / "base2new/test_new/eurosat/shots_16/BMIP/BMIP_ctx2_dp9_lr2/seed2", bmip_args[2:]))
    assert "--best" in bmip_test and "--load-epoch" not in bmip_test


def test_lib_cross_dataset_fewshot_and_zeroshot_layouts(lib_env: dict[str, str]) -> None:
    out = Path(lib_env["OUTPUT"])
    run_script(ROOT / "scripts/coop/xd_train.sh", ["imagenet", "1"], lib_env)
    model_dir = out / "imagenet/CoOp/vit_b16_ep50_ctxv1_16shots/seed1"
    assert flag(argv(model_dir), "--config-file") == "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml"
    for script in ("xd_test.sh", "dg_test.sh"):
        run_script(ROOT / "scripts/coop" / script, ["imagenet_sketch", "1"], {**lib_env, "FORCE": "1"})
        args = argv(out / "evaluation/CoOp/vit_b16_ep50_ctxv1_16shots/imagenet_sketch/seed1")
        assert flag(args, "--model-dir") == str(model_dir) and flag(args, "--load-epoch") == "50"

    for dataset, shots, cfg in (("dtd", "1", "vit_b16_ep50"), ("dtd", "4", "vit_b16_ep100"),
                                ("dtd", "16", "vit_b16"), ("imagenet", "16", "vit_b16_ep50")):  # fmt: skip
        run_script(ROOT / "scripts/coop/fewshot.sh", [dataset, "3", shots], lib_env)
        args = argv(out / f"fewshot/{dataset}/shots_{shots}/CoOp/{cfg}/seed3")
        assert args[-2:] == ["DATASET.NUM_SHOTS", shots]

    run_script(ROOT / "scripts/zsclip/zeroshot.sh", ["eurosat"], {**lib_env, "TRAINER": "ZeroshotCLIP2"})
    args = argv(out / "zeroshot/ZeroshotCLIP2/vit_b16/eurosat")
    assert flag(args, "--trainer") == "ZeroshotCLIP2" and "--eval-only" in args and "--model-dir" not in args
    assert flag(args, "--config-file") == "configs/trainers/ZeroshotCLIP/vit_b16.yaml"


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("coop/base2new_train.sh", ["digits"], "usage: base2new_train <dataset> <seed>"),
        ("coop/base2new_train.sh", ["digits", "1", "OPTIM.LR"], "KEY VALUE pairs"),
        ("coop/base2new_train.sh", ["nope", "1"], "configs/datasets/nope.yaml not found"),
        ("coop/base2new_test.sh", ["digits", "1"], "no trained model at"),
        ("coop/fewshot.sh", ["digits", "1"], "usage: fewshot <dataset> <seed> <shots>"),
    ],
)
def test_lib_errors(lib_env: dict[str, str], script: str, args: list[str], message: str) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), *args],
        cwd=ROOT,
        env={**os.environ, **lib_env},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_lib_rejects_a_missing_trainer_config(lib_env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/coop/base2new_train.sh"), "digits", "1"],
        cwd=ROOT,
        env={**os.environ, **lib_env, "CFG": "no_such_cfg"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "configs/trainers/CoOp/no_such_cfg.yaml not found" in result.stderr
