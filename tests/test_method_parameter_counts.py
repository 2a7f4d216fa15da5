"""docs/METHODS.md's trainable parameter counts at ViT-B/16 and ViT-L/14 are what the trainers build.

Each registered trainer (zero-shot ones aside) is built from its own base-to-new config on Digits' 5 base
classes with the seeded random backbones ``random:ViT-B/16`` and ``random:ViT-L/14`` (the released shapes;
the counts depend on shapes only), and its ``count_trainable()`` is compared with the table row. Marked
``backbones`` (two full-size backbones and 44 trainer builds: minutes on a shared CPU).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from test_open_clip_trainers import base2new_config

import clip
import train
import trainers  # noqa: F401  (registers the trainers)
from engine.engine import TRAINER_REGISTRY, build_trainer

pytestmark = pytest.mark.backbones

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ("ViT-B/16", "ViT-L/14")
ROW = re.compile(r"^\| `(\w+)` \| ([\d,]+) \| ([\d,]+) \|", re.MULTILINE)


def documented() -> dict[str, tuple[int, int]]:
    text = (ROOT / "docs/METHODS.md").read_text().split("<!-- parameter counts: begin -->", 1)[1]
    text = text.split("<!-- parameter counts: end -->", 1)[0]
    return {m[1]: (int(m[2].replace(",", "")), int(m[3].replace(",", ""))) for m in ROW.finditer(text)}


def test_trainable_parameter_counts_at_vit_b16_and_vit_l14(tmp_path, monkeypatch):
    names = [  # the project's own trainers: tests of Dassl clients register theirs in the same process
        n
        for n in TRAINER_REGISTRY.registered_names()
        if Path(inspect.getfile(TRAINER_REGISTRY.get(n))).parent == ROOT / "trainers"
        and not getattr(TRAINER_REGISTRY.get(n), "ZERO_SHOT", False)
    ]
    counts: dict[str, list[int]] = {n: [] for n in names}
    build = clip.build_clip
    for backbone in BACKBONES:
        model = build(f"random:{backbone}")  # built once per shape: the trainers only read and freeze it
        monkeypatch.setattr(clip, "build_clip", lambda name, model=model, **kw: model.requires_grad_(False))  # noqa: ARG005
        for name in names:
            cls = TRAINER_REGISTRY.get(name)
            argv = [
                "--root", str(tmp_path / "data"), "--trainer", name, "--seed", "1",
                "--output-dir", str(tmp_path / name), "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
                "--config-file", str(base2new_config(name)), "MODEL.BACKBONE.NAME", f"random:{backbone}",
                "DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", "base", "DATALOADER.NUM_WORKERS", "0",
                *getattr(cls, "SMOKE_TEST_OPTS", ()),
            ]  # fmt: skip
            trainer = build_trainer(train.setup_cfg(train.build_parser().parse_args(argv)))
            counts[name].append(trainer.model.count_trainable())
            del trainer
    table = "\n".join(f"| `{n}` | {b16:,} | {l14:,} |" for n, (b16, l14) in counts.items())
    assert documented() == {n: tuple(c) for n, c in counts.items()}, f"docs/METHODS.md should read:\n{table}"
