"""ToyShapes: rendered coloured shapes, the benchmark of the toy CLIP (``toy:clip``, docs/TOY_CLIP.md).

Each class is a colour-shape composition ("red circle", 6 colours x 6 shapes = 36 classes). Images are
32x32 renderings of a large shape near the centre with a random size, offset and small rotation, colour
jitter and a background (plain, noisy, striped, checkered), taken at dusk (``DUSK_*``: every colour shifted
one hue, so the zero-shot prompt names the wrong class); ``tools/pretrain_toy_clip.py`` pretrains the toy
CLIP on the same renderer, in daylight and at dusk, with captions that name the light. Labels put the compositions whose colour and shape indices have an even sum first, so the
base half and the new half both contain every colour and every shape, in compositions the other half
never shows (Dassl's base = the first half of the labels).

``ToyShapes`` is built on first use under ``DATASET.ROOT/toy_shapes/`` (40 train, 10 val, 30 test images per
class, from a private seeded RNG: the same bytes on every machine). ``ToyShapesShifted`` is its
domain-shifted test set for domain generalisation (same 36 classes): striped-filled shapes with an outline
on dark noisy backgrounds, a rendering the pretraining data shows only rarely.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from engine.data.datasets import DATASET_REGISTRY, DatasetBase, Datum

from .common import BenchmarkDataset, ExpectedSizes, LayoutChecks, folder_written_atomically

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 50),
    "blue": (40, 70, 215),
    "yellow": (235, 210, 40),
    "purple": (135, 45, 175),
    "orange": (240, 125, 25),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
BACKGROUNDS = ("plain", "noisy", "striped", "checkered")
IMAGE_SIZE = 32
_SUPERSAMPLE = 4  # shapes are drawn at 4x and downsampled (anti-aliased edges)
SPLIT_SEED = 0
PER_CLASS = {"train": 40, "val": 10, "test": 30}
SHIFTED_PER_CLASS = 30
# Dusk: the light the benchmark's images are taken in. It dims and tints the whole picture and shifts every
# colour one step along the hue circle, so a dusk red circle looks like a dim orange one: the zero-shot
# prompt "a photo of a {}." points at the wrong class and "a dusk photo of a {}." (what the toy CLIP was
# pretrained on) at the right one, which is what prompt learning has to find.
DUSK_HUE = {"red": "orange", "orange": "yellow", "yellow": "green", "green": "blue", "blue": "purple", "purple": "red"}
DUSK_DIM = 0.7
DUSK_LIGHT = np.array((60.0, 70.0, 130.0))
DEFAULT_ROOT = "./data"


def compositions() -> list[tuple[str, str]]:
    """(colour, shape) in label order: even index sums (the base half) first, then odd ones."""
    pairs = [(c, s) for ci, c in enumerate(COLOURS) for si, s in enumerate(SHAPES)]
    return sorted(pairs, key=lambda p: (_parity(p), 0))  # stable: colour-major within each half


def _parity(pair: tuple[str, str]) -> int:
    return (list(COLOURS).index(pair[0]) + SHAPES.index(pair[1])) % 2


CLASSNAMES = tuple(f"{c} {s}" for c, s in compositions())


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape of circumradius ``r`` rotated by ``angle`` radians."""
    if shape == "square":
        pts = [(math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif shape == "diamond":
        pts = [(k * math.pi / 2, r) for k in range(4)]
    elif shape == "triangle":
        pts = [(-math.pi / 2 + k * 2 * math.pi / 3, r) for k in range(3)]
    elif shape == "star":
        pts = [(-math.pi / 2 + k * math.pi / 5, r if k % 2 == 0 else 0.42 * r) for k in range(10)]
    elif shape == "cross":
        a, b = 0.34 * r, r
        corners = [(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b),
                   (-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a), (-a, b)]  # fmt: skip
        return [(cx + x * math.cos(angle) - y * math.sin(angle), cy + x * math.sin(angle) + y * math.cos(angle))
                for x, y in corners]  # fmt: skip
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return [(cx + rr * math.cos(t + angle), cy + rr * math.sin(t + angle)) for t, rr in pts]


def _background(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A float (size, size, 3) background in [0, 255] of low saturation, so colour names the shape."""
    base = rng.uniform(60, 230)
    tint = rng.uniform(-12, 12, size=3)
    img = np.full((size, size, 3), base) + tint
    yy, xx = np.mgrid[0:size, 0:size] / (size / IMAGE_SIZE)
    if kind == "noisy":
        img += rng.normal(0, 25, size=(size, size, 1))
    elif kind == "striped":
        period, theta = rng.uniform(4, 8), rng.uniform(0, math.pi)
        phase = (xx * math.cos(theta) + yy * math.sin(theta)) / period
        img += np.where((phase % 1.0) < 0.5, 35.0, -35.0)[..., None]
    elif kind == "checkered":
        cell = int(rng.integers(3, 7))
        img += np.where(((xx // cell) + (yy // cell)) % 2 == 0, 30.0, -30.0)[..., None]
    elif kind != "plain":
        raise ValueError(f"unknown background {kind!r}; expected one of {BACKGROUNDS}")
    return img


def render(
    colour: str,
    shape: str,
    rng: np.random.Generator,
    background: str | None = None,
    shifted: bool = False,
    dusk: bool = False,
) -> np.ndarray:
    """One uint8 (32, 32, 3) image of a ``colour`` ``shape``, large and near the centre (freely framed
    shapes were not resolved by the toy CLIP's features); ``shifted`` = the domain-shifted rendering,
    ``dusk`` = in dusk light (``DUSK_*``)."""
    from PIL import Image, ImageDraw, ImageFilter

    s = IMAGE_SIZE * _SUPERSAMPLE
    if shifted:
        canvas = rng.uniform(15, 60) + rng.normal(0, 18, size=(s, s, 1)) + np.zeros((s, s, 3))
    else:
        canvas = _background(background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], rng, s)
    r = rng.uniform(0.34, 0.44) * s  # large, near the centre, barely rotated: what a ViT pretrained for minutes learns
    cx, cy = s / 2 + rng.uniform(-0.06, 0.06) * s, s / 2 + rng.uniform(-0.06, 0.06) * s
    angle = rng.uniform(-0.15, 0.15)
    rgb = np.clip(np.array(COLOURS[DUSK_HUE[colour] if dusk else colour]) + rng.uniform(-20, 20, size=3), 0, 255)
    mask_img = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask_img)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=255)
    mask = np.asarray(mask_img, dtype=np.float64)[..., None] / 255.0
    if shifted:  # stripes of the colour and white inside the shape, the outline in the colour
        yy, xx = np.mgrid[0:s, 0:s]
        stripes = (((xx + yy) // (2 * _SUPERSAMPLE)) % 2 == 0)[..., None]
        fill = np.where(stripes, rgb, 245.0)
        inner = np.asarray(mask_img.filter(ImageFilter.MinFilter(2 * _SUPERSAMPLE + 1)))[..., None]
        fill = np.where(inner > 127, fill, rgb)
        canvas = canvas * (1 - mask) + fill * mask
    else:
        canvas = canvas * (1 - mask) + rgb * mask
    if dusk:
        canvas = DUSK_DIM * canvas + (1 - DUSK_DIM) * DUSK_LIGHT
    small = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).resize(
        (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX
    )
    return np.asarray(small)


def _folder(classname: str) -> str:
    return classname.replace(" ", "_")


def write_images(image_dir: str, per_class: int, seed: int, shifted: bool) -> None:
    """Render ``per_class`` PNGs of every class into ``image_dir/<colour>_<shape>/``, atomically.

    One ``numpy`` generator seeded with ``seed`` draws every image in class order, so the files are the
    same on every machine; they are written to a temporary sibling and moved into place at the end.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    with folder_written_atomically(image_dir) as tmp_dir:
        for colour, shape in compositions():
            name = _folder(f"{colour} {shape}")
            os.mkdir(os.path.join(tmp_dir, name))
            for i in range(per_class):
                pixels = render(colour, shape, rng, shifted=shifted, dusk=not shifted)
                Image.fromarray(pixels).save(os.path.join(tmp_dir, name, f"{name}_{i:03d}.png"))
        print(f"Writing {per_class * len(CLASSNAMES)} ToyShapes images to {image_dir}")


def _root(cfg: Any) -> str:
    return os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT or DEFAULT_ROOT))


@DATASET_REGISTRY.register()
class ToyShapes(BenchmarkDataset):
    dataset_dir = "toy_shapes"
    expected = ExpectedSizes(
        train=PER_CLASS["train"] * len(CLASSNAMES),
        val=PER_CLASS["val"] * len(CLASSNAMES),
        test=PER_CLASS["test"] * len(CLASSNAMES),
        classes=len(CLASSNAMES),
    )
    image_subdir = "images"
    split_filename = "split_ToyShapes.json"
    created_on_first_use = True
    layout = """\
toy_shapes/                       (rendered on first use, datasets/toy_shapes.py)
    images/<colour>_<shape>/<colour>_<shape>_<nnn>.png
    split_ToyShapes.json
"""

    def resolve_root(self, cfg: Any) -> str:
        """Any writable folder will do (``DEFAULT_ROOT`` when unset); the images are rendered there once."""
        root = _root(cfg)
        image_dir = os.path.join(root, type(self).dataset_dir, self.image_subdir)
        if not os.path.isdir(image_dir):
            write_images(image_dir, sum(PER_CLASS.values()), SPLIT_SEED, shifted=False)
        return root

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        """Per class, the first 40 images (in file order) train, the next 10 val, the last 30 test."""
        train, val, test = [], [], []
        n_train, n_val = PER_CLASS["train"], PER_CLASS["val"]
        for label, name in enumerate(CLASSNAMES):
            class_dir = self.require(os.path.join(self.image_dir, _folder(name)), "class folder", is_dir=True)
            images = sorted(os.listdir(class_dir))
            for part, ims in ((train, images[:n_train]), (val, images[n_train : n_train + n_val]),
                              (test, images[n_train + n_val :])):  # fmt: skip
                part.extend(Datum(impath=os.path.join(class_dir, im), label=label, classname=name) for im in ims)
        return train, val, test


@DATASET_REGISTRY.register()
class ToyShapesShifted(LayoutChecks, DatasetBase):
    """Test-only, like the ImageNet variants: ``train_x`` = ``test`` (it only defines the label space)."""

    dataset_dir = "toy_shapes_shifted"
    expected = ExpectedSizes(train=None, val=None, test=SHIFTED_PER_CLASS * len(CLASSNAMES), classes=len(CLASSNAMES))
    created_on_first_use = True
    layout = """\
toy_shapes_shifted/               (rendered on first use, datasets/toy_shapes.py)
    images/<colour>_<shape>/<colour>_<shape>_<nnn>.png
"""

    def __init__(self, cfg: Any) -> None:
        self.root = _root(cfg)
        self.dataset_dir = os.path.join(self.root, type(self).dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, "images")
        if not os.path.isdir(self.image_dir):
            write_images(self.image_dir, SHIFTED_PER_CLASS, SPLIT_SEED + 1, shifted=True)
        data = []
        for label, name in enumerate(CLASSNAMES):
            class_dir = self.require(os.path.join(self.image_dir, _folder(name)), "class folder", is_dir=True)
            data.extend(Datum(impath=os.path.join(class_dir, im), label=label, classname=name)
                        for im in sorted(os.listdir(class_dir)))  # fmt: skip
        super().__init__(train_x=data, test=data)
