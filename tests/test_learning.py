"""Every registered prompt trainer really learns: on the toy CLIP's benchmark a short training beats zero-shot.

With random weights (every other trainer test) accuracy is noise, so a method that silently stopped learning
(a gate without gradient, prompts that never reach a block, a wrong label space) would pass them all. Here
each trainer of ``TRAINER_REGISTRY`` (zero-shot ones excluded by their ``ZERO_SHOT`` flag) trains through its
own ``base2new_train.sh`` on ToyShapes' base classes with ``toy:clip`` (4 shots, batches of 4, 2 epochs, flip
only: the configs' random resized crops cut a 32-pixel shape out of the picture) and must beat zero-shot
CLIP's base accuracy by ``MARGIN`` points. A trainer whose config's budget is far from 2 epochs declares
``LEARNING_TEST_OPTS`` (``KEY VALUE`` overrides after ``SMOKE_TEST_OPTS``): CoCoOp, CLIPLoRA and
MultiModalAdapter take a larger learning rate. The same run with ``OPTIM.LR 0`` (the prompts never move) must not:
that it fails the assertion is what shows the assertion can fail.

ToyShapes' images are taken at dusk (datasets/toy_shapes.py), a light that shifts every colour one step
along the hue circle, so the zero-shot prompt "a photo of a {}." points at the wrong colour; the learned
prompts have to find what the toy CLIP was pretrained on. Measured numbers and the spread over seeds:
docs/TOY_CLIP.md ("Learning tests"). Marked ``learning``: about 10-20 s per trainer on one core
(``-m "not learning"`` leaves them out).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from test_all_trainers import run_script

import trainers  # noqa: F401  (registers the trainers)
from engine.engine import TRAINER_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
LEARN_OPTS = [
    "MODEL.BACKBONE.NAME", "toy:clip",
    "DATASET.NUM_SHOTS", "4",
    "OPTIM.MAX_EPOCH", "2",
    "OPTIM.WARMUP_EPOCH", "0",
    "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
    "DATALOADER.NUM_WORKERS", "0",
    "INPUT.TRANSFORMS", "['random_flip', 'normalize']",
]  # fmt: skip
MARGIN = 15.0  # points above zero-shot; see docs/TOY_CLIP.md for the measured gains and their spread
ACCURACY = re.compile(r"^\* accuracy: ([\d.]+)%$", re.MULTILINE)
PROMPT_TRAINERS = [n for n in TRAINER_REGISTRY.registered_names() if not getattr(TRAINER_REGISTRY.get(n), "ZERO_SHOT", False)]
FROZEN_CHECKED = ["CoOp", "VPT", "BMIP"]  # text-only, vision-only, both towers

pytestmark = pytest.mark.learning


def base_accuracy(name: str, data: Path, out: Path, *extra: str) -> float:
    """Base-class test accuracy (%) that ``<scripts>/base2new_train.sh toy_shapes 1`` reports for ``name``."""
    cls = TRAINER_REGISTRY.get(name)
    scripts = ROOT / getattr(cls, "SCRIPTS_DIR", f"scripts/{name.lower()}")
    opts = [*LEARN_OPTS, *getattr(cls, "SMOKE_TEST_OPTS", ()), *getattr(cls, "LEARNING_TEST_OPTS", ()), *extra]
    env = {"DATA": str(data), "OUTPUT": str(out), "PYTHON": sys.executable, "TRAINER": name, "OMP_NUM_THREADS": "1"}
    output = run_script(scripts / "base2new_train.sh", ["toy_shapes", "1", *opts], env)
    logs = sorted(out.glob(f"base2new/train_base/toy_shapes/shots_*/{name}/*/seed1+overrides-*/log.txt"))
    assert len(logs) == 1, f"expected one training log for {name} under {out}, found {logs}\n{output[-2000:]}"
    found = ACCURACY.findall(logs[0].read_text())
    assert found, f"no accuracy line in {logs[0]}"
    return float(found[-1])


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("toy_data")


@pytest.fixture(scope="session")
def zero_shot_base(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    return base_accuracy("ZeroshotCLIP", toy_data, tmp_path_factory.mktemp("zs"))


@pytest.mark.parametrize("name", PROMPT_TRAINERS)
def test_short_training_beats_zero_shot(name: str, toy_data: Path, zero_shot_base: float, tmp_path: Path) -> None:
    trained = base_accuracy(name, toy_data, tmp_path)
    assert trained > zero_shot_base + MARGIN, f"{name}: {trained:.1f}% vs zero-shot {zero_shot_base:.1f}%"


@pytest.mark.parametrize("name", FROZEN_CHECKED)
def test_frozen_prompts_fail_the_learning_assertion(
    name: str, toy_data: Path, zero_shot_base: float, tmp_path: Path
) -> None:
    frozen = base_accuracy(name, toy_data, tmp_path, "OPTIM.LR", "0.0")
    assert not frozen > zero_shot_base + MARGIN, f"{name} with OPTIM.LR 0: {frozen:.1f}% vs zero-shot {zero_shot_base:.1f}%"
