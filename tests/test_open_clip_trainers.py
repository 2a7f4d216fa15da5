"""Every registered trainer runs unchanged on open_clip backbones of three shapes (tests/open_clip_shapes.py).

GELU and QuickGELU ViT-B/16-style models and a ViT-L/14-shaped one (24 image blocks, patch 14, image width,
text width and embedding all different, heads not width // 64), each a random open_clip model saved to a
file and named ``open_clip:<model>/<file>``: each trainer's own base-to-new config (the one its
``base2new_train.sh`` uses) builds on Digits and takes one training step that moves its trainable
parameters; zero-shot trainers classify a batch. Widths, heads and depths come from the model alone.
Marked ``backbones`` (about two minutes on one core).
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip_shapes import TRAINER_SHAPES, register, save_random
from test_all_trainers import ACCURACY, SMOKE_OPTS, argv, flag, lib_env, run_script  # noqa: F401  (lib_env: fixture)

import train
import trainers  # noqa: F401  (registers the trainers)
from engine.engine import TRAINER_REGISTRY, build_trainer
from tools import layout

pytestmark = pytest.mark.backbones

ROOT = Path(__file__).resolve().parents[1]
SETUP = re.compile(
    r'lib_setup[ \t]+"?(?:\$\{TRAINER:-)?(\w+)\}?"?[ \t]+(\S+)[ \t]+\S+(?:[ \t]+(\w[\w.+-]*))?'
)


def base2new_config(name: str) -> Path:
    """The trainer config its base2new_train.sh uses by default (the last ``lib_setup`` line: the general case)."""
    cls = TRAINER_REGISTRY.get(name)
    script = ROOT / getattr(cls, "SCRIPTS_DIR", f"scripts/{name.lower()}") / "base2new_train.sh"
    trainer, cfg, cfg_dir = SETUP.findall(script.read_text())[-1]
    return ROOT / "configs/trainers" / (cfg_dir or trainer) / f"{cfg}.yaml"


@pytest.fixture(scope="module")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("open_clip_trainers")
    register(folder / "configs", TRAINER_SHAPES)
    names = {}
    for name in TRAINER_SHAPES:
        save_random(name, folder / f"{name}.pt")
        names[name] = f"open_clip:{name}/{folder / f'{name}.pt'}"
    return names


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("digits")


@pytest.mark.parametrize("shape", sorted(TRAINER_SHAPES))
@pytest.mark.parametrize("name", TRAINER_REGISTRY.registered_names())
def test_trainer_steps_on_open_clip_backbone(name, shape, backbones, digits_root, tmp_path):
    cls = TRAINER_REGISTRY.get(name)
    argv = [
        "--root", str(digits_root), "--trainer", name, "--seed", "1", "--output-dir", str(tmp_path),
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
        "--config-file", str(base2new_config(name)),
        "MODEL.BACKBONE.NAME", backbones[shape], "DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", "base",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "2", "OPTIM.MAX_EPOCH", "1",
        *getattr(cls, "SMOKE_TEST_OPTS", ()),
    ]  # fmt: skip
    cfg = train.setup_cfg(train.build_parser().parse_args(argv))
    train.set_seeds(cfg)
    trainer = build_trainer(cfg)
    batch = next(iter(trainer.train_loader_x))
    if getattr(cls, "ZERO_SHOT", False):
        with torch.no_grad():
            logits = trainer.model_inference(batch["img"])
        assert logits.shape == (batch["img"].shape[0], 5) and torch.isfinite(logits).all()
        return
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable, f"{name} has no trainable parameters"
    trainer.batch_idx, trainer.num_batches, trainer.epoch = 0, 2, 0
    trainer.model.train()
    summary = trainer.forward_backward(batch)
    assert math.isfinite(summary["loss"])
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(after[n], before) for n, before in trainable.items()), f"{name} did not train"


def test_bmip_base2new_script_runs_on_an_open_clip_vit_b32_file(tmp_path):
    """The issue's done-when command, on a full-size ViT-B-32 with open_clip's random weights saved to a file."""
    torch.manual_seed(0)
    path = tmp_path / "vit_b32.pt"
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), path)
    smoke = [
        o for pair in zip(SMOKE_OPTS[::2], SMOKE_OPTS[1::2]) if pair[0] != "MODEL.BACKBONE.NAME" for o in pair
    ]
    env = {"DATA": str(tmp_path / "data"), "OUTPUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    run_script(ROOT / "scripts/bmip/base2new_train.sh",
               ["digits", "1", "MODEL.BACKBONE.NAME", f"open_clip:ViT-B-32/{path}", *smoke], env)  # fmt: skip
    folder = tmp_path / "out/base2new/train_base/digits/shots_1/BMIP/BMIP_ctx2_dp9_lr2/seed1"
    log = (layout.place(folder, ["MODEL.BACKBONE.NAME", f"open_clip:ViT-B-32/{path}", *smoke]) / "log.txt").read_text()
    assert "Loaded open_clip backbone" in log or f"open_clip:ViT-B-32/{path}" in log
    assert "Finish training" in log.splitlines() and ACCURACY.search(log)


def test_backbone_switch_of_every_script(lib_env):  # noqa: F811
    """BACKBONE=<name> runs any method's script on that CLIP, in its own output folder; an explicit
    MODEL.BACKBONE.NAME argument still wins (it comes later)."""
    out = Path(lib_env["OUTPUT"])
    env = {**lib_env, "BACKBONE": "ViT-L/14"}
    run_script(ROOT / "scripts/maple/base2new_train.sh", ["digits", "1"], env)
    args = argv(out / "base2new/train_base/digits/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx@ViT-L-14/seed1")
    assert flag(args, "MODEL.BACKBONE.NAME") == "ViT-L/14"
    run_script(ROOT / "scripts/maple/base2new_test.sh", ["digits", "1"], env)
    test_args = argv(
        out / "base2new/test_new/digits/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx@ViT-L-14/seed1"
    )
    assert flag(test_args, "MODEL.BACKBONE.NAME") == "ViT-L/14" and flag(test_args, "--model-dir").endswith(
        "@ViT-L-14/seed1"
    )
    env["BACKBONE"] = "open_clip:ViT-L-14/datacomp_xl_s13b_b90k"
    run_script(ROOT / "scripts/coop/xd_train.sh", ["imagenet", "1", "MODEL.BACKBONE.NAME", "RN50"], env)
    args = argv(layout.place(
        out / "imagenet/CoOp/vit_b16_ep50_ctxv1@open_clip-ViT-L-14-datacomp_xl_s13b_b90k_16shots/seed1",
        ["MODEL.BACKBONE.NAME", "RN50"],
    ))  # fmt: skip
    assert args[-2:] == ["MODEL.BACKBONE.NAME", "RN50"]
