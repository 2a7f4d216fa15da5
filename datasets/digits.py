"""Digits: a real, tiny dataset that needs no download (scikit-learn's bundled 8x8 handwritten digits).

On first use the 1,797 images are written as upscaled PNGs under ``DATASET.ROOT/digits/images/<name>/`` with
class names a CLIP text tower can read ("zero" ... "nine"), and a fixed 50/20/30 per-class split is saved as
``split_Digits.json``. The split comes from a private RNG seeded with ``SPLIT_SEED``, so it is the same on
every machine and does not disturb the python ``random`` state that few-shot sampling uses. After that the
dataset behaves like every benchmark: few-shot caches, base (zero..four) / new (five..nine) / all.
"""

from __future__ import annotations

import os
import random
from typing import Any

from engine.data.datasets import DATASET_REGISTRY, Datum

from .common import BenchmarkDataset, ExpectedSizes, folder_written_atomically, stratified_split

CLASSNAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SIZE = 32
SPLIT_SEED = 0
DEFAULT_ROOT = "./data"


@DATASET_REGISTRY.register()
class Digits(BenchmarkDataset):
    dataset_dir = "digits"
    expected = ExpectedSizes(train=898, val=359, test=540, classes=10)
    image_subdir = "images"
    split_filename = "split_Digits.json"
    created_on_first_use = True
    layout = """\
digits/                           (created on first use from scikit-learn's load_digits)
    images/<zero..nine>/<name>_<nnnn>.png
    split_Digits.json
"""

    def resolve_root(self, cfg: Any) -> str:
        """Any writable folder will do (``DEFAULT_ROOT`` when unset); the images are written there once."""
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT or DEFAULT_ROOT))
        image_dir = os.path.join(root, type(self).dataset_dir, self.image_subdir)
        if not os.path.isdir(image_dir):
            write_digit_images(image_dir)
        return root

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        """Per class (sorted file names), a fixed shuffle, then 50% train, 20% val, 30% test."""
        groups = {}
        for label, name in enumerate(CLASSNAMES):
            class_dir = self.require(os.path.join(self.image_dir, name), "class folder", is_dir=True)
            groups[class_dir] = [
                Datum(impath=os.path.join(class_dir, im), label=label, classname=name)
                for im in sorted(os.listdir(class_dir))
            ]
        return stratified_split(groups, 0.5, 0.2, SPLIT_SEED)


def write_digit_images(image_dir: str) -> None:
    """Render scikit-learn's digits as dark-on-white ``IMAGE_SIZE`` PNGs into ``image_dir``.

    Images are written to a temporary sibling folder and moved into place at the end, so an interrupted
    run leaves nothing half-written and concurrent runs cannot mix their files.
    """
    import numpy as np
    from PIL import Image

    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "The Digits dataset is built from scikit-learn's load_digits: pip install scikit-learn"
        ) from e

    digits = load_digits()
    with folder_written_atomically(image_dir) as tmp_dir:
        for name in CLASSNAMES:
            os.mkdir(os.path.join(tmp_dir, name))
        for i, (pixels, target) in enumerate(zip(digits.images, digits.target)):
            gray = (255 - pixels * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(gray).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
            name = CLASSNAMES[int(target)]
            image.save(os.path.join(tmp_dir, name, f"{name}_{i:04d}.png"))
        print(f"Writing {len(digits.images)} digit images to {image_dir}")


def train_indices(targets: Any) -> list[int]:
    """Indices into ``load_digits()`` of the images :meth:`Digits.create_split` puts in train.

    The same rule on the same order (a class's files sort by their global index), so that the toy CLIP's
    pretraining (tools/pretrain_toy_clip.py) sees no Digits val or test image.
    """
    rng = random.Random(SPLIT_SEED)
    chosen = []
    for label in range(len(CLASSNAMES)):
        indices = [i for i, t in enumerate(targets) if int(t) == label]
        rng.shuffle(indices)
        chosen.extend(indices[: round(len(indices) * 0.5)])
    return sorted(chosen)
