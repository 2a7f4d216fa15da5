"""Tiny stand-ins for every benchmark's published archives, in each archive's real internal layout.

Each builder returns a :class:`Fake`: the files its source publishes (archive name -> bytes, with the same
folder and file names inside as the real archive, four classes and four images per class), the tiny CoOp-format
split file that goes with them, and the sizes ``tools.check_data`` must then report. The tests serve the files
from a loopback HTTP server (or pass them with ``--archive``) and check the prepared folder with the readers.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.io import savemat

from datasets.common import ExpectedSizes

_buffer = io.BytesIO()
Image.new("RGB", (6, 5), (120, 40, 90)).save(_buffer, format="JPEG")
JPEG = _buffer.getvalue()

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]
IMAGENET_NAMES = ["tench", "goldfish", "great white shark", "tiger shark"]
PARTS = ("train", "train", "val", "test")  # the split of the four images of each class


@dataclass
class Fake:
    files: dict[str, bytes]  # published file name -> content
    split: dict | None  # CoOp-format split for the split file, or None (no split file)
    expected: ExpectedSizes


def tar(members: dict[str, bytes], gz: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _split(entries: list[tuple[str, int, str]]) -> tuple[dict, ExpectedSizes]:
    """Entries in class-major order, four per class, distributed over train/train/val/test."""
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for i, (path, label, name) in enumerate(entries):
        split[PARTS[i % 4]].append([path, label, name])
    sizes = ExpectedSizes(len(split["train"]), len(split["val"]), len(split["test"]), len({e[1] for e in entries}))
    return split, sizes


def _classes(names: list[str], rel: Callable[[int, str, int], str]) -> list[tuple[str, int, str]]:
    return [(rel(label, name, k), label, name) for label, name in enumerate(names) for k in range(1, 5)]


def caltech() -> Fake:
    folders = ["accordion", "airplanes", "anchor", "ant"]
    names = ["accordion", "airplane", "anchor", "ant"]
    entries = [(f"{f}/image_{k:04d}.jpg", label, names[label]) for label, f in enumerate(folders) for k in range(1, 5)]
    inner = {f"101_ObjectCategories/{p}": JPEG for p, _, _ in entries}
    inner["101_ObjectCategories/BACKGROUND_Google/image_0001.jpg"] = JPEG
    archive = zip_({
        "caltech-101/101_ObjectCategories.tar.gz": tar(inner),
        "caltech-101/Annotations.tar": tar({"Annotations/accordion/annotation_0001.mat": b"x"}, gz=False),
        "caltech-101/show_annotation.m": b"% matlab",
    })  # fmt: skip
    split, sizes = _split(entries)
    return Fake({"caltech-101.zip": archive}, split, sizes)


def pets() -> Fake:
    breeds = ["Abyssinian", "american_bulldog", "Bengal", "beagle"]
    entries = [(f"{b}_{k}.jpg", label, b.lower()) for label, b in enumerate(breeds) for k in range(1, 5)]
    split, sizes = _split(entries)
    return Fake({"images.tar.gz": tar({f"images/{p}": JPEG for p, _, _ in entries})}, split, sizes)


def cars() -> Fake:
    names = ["2012 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Acura TL Sedan", "2007 Acura TL Type-S"]
    entries = []
    for i, (label, name) in enumerate((lab, n) for lab, n in enumerate(names) for _ in range(4)):
        folder = "cars_test" if PARTS[i % 4] == "test" else "cars_train"
        entries.append((f"{folder}/{i + 1:05d}.jpg", label, name))
    members = {p: JPEG for p, _, _ in entries}
    split, sizes = _split(entries)
    return Fake(
        {
            "cars_train.tgz": tar({p: d for p, d in members.items() if p.startswith("cars_train/")}),
            "cars_test.tgz": tar({p: d for p, d in members.items() if p.startswith("cars_test/")}),
        },
        split,
        sizes,
    )


def flowers() -> Fake:
    names = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea"]
    entries = [(f"image_{label * 4 + k:05d}.jpg", label, n) for label, n in enumerate(names) for k in range(1, 5)]
    split, sizes = _split(entries)
    return Fake({"102flowers.tgz": tar({f"jpg/{p}": JPEG for p, _, _ in entries})}, split, sizes)


def food() -> Fake:
    folders = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio"]
    entries = _classes(folders, lambda label, f, k: f"{f}/{1000 + 10 * label + k}.jpg")
    members = {f"food-101/images/{p}": JPEG for p, _, _ in entries}
    members.update({"food-101/meta/classes.txt": "\n".join(folders).encode(), "food-101/README.txt": b"Food-101"})
    split, sizes = _split(entries)
    return Fake({"food-101.tar.gz": tar(members)}, split, sizes)


def fgvc() -> Fake:
    variants = ["707-320", "727-200", "737-200", "A300B4"]
    members = {"fgvc-aircraft-2013b/data/variants.txt": "\n".join(variants).encode() + b"\n"}
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label, variant in enumerate(variants):
        for k in range(4):
            image_id = f"{1000000 + 10 * label + k}"
            members[f"fgvc-aircraft-2013b/data/images/{image_id}.jpg"] = JPEG
            lists[PARTS[k]].append(f"{image_id} {variant}")
    for part, lines in lists.items():
        members[f"fgvc-aircraft-2013b/data/images_variant_{part}.txt"] = ("\n".join(lines) + "\n").encode()
    members["fgvc-aircraft-2013b/README.html"] = b"<html></html>"
    return Fake({"fgvc-aircraft-2013b.tar.gz": tar(members)}, None, ExpectedSizes(8, 4, 4, 4))


def sun() -> Fake:
    folders = ["a/abbey", "a/airport_terminal", "b/bakery/shop", "b/bamboo_forest"]
    entries = [
        (f"{f}/sun_a{label}{k}.jpg", label, " ".join(f.split("/")[1:][::-1]))
        for label, f in enumerate(folders)
        for k in range(1, 5)
    ]
    members = {f"SUN397/{p}": JPEG for p, _, _ in entries}
    members["SUN397/ClassName.txt"] = "".join(f"/{f}\n" for f in folders).encode()
    split, sizes = _split(entries)
    return Fake({"SUN397.tar.gz": tar(members)}, split, sizes)


def dtd() -> Fake:
    cats = ["banded", "blotchy", "braided", "bubbly"]
    entries = _classes(cats, lambda label, c, k: f"{c}/{c}_{k:04d}.jpg")
    members = {f"dtd/images/{p}": JPEG for p, _, _ in entries}
    members.update({"dtd/labels/train1.txt": b"banded/banded_0001.jpg\n", "dtd/imdb/imdb.mat": b"mat"})
    split, sizes = _split(entries)
    return Fake({"dtd-r1.0.1.tar.gz": tar(members)}, split, sizes)


def eurosat() -> Fake:
    folders = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway"]
    names = ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road"]
    entries = [(f"{f}/{f}_{k}.jpg", label, names[label]) for label, f in enumerate(folders) for k in range(1, 5)]
    split, sizes = _split(entries)
    return Fake({"EuroSAT.zip": zip_({f"2750/{p}": JPEG for p, _, _ in entries})}, split, sizes)


def ucf() -> Fake:
    actions = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling"]
    entries = []
    for label, action in enumerate(actions):
        renamed = "_".join(re.findall("[A-Z][^A-Z]*", action))
        entries += [(f"{renamed}/v_{action}_g0{k}_c01.jpg", label, renamed) for k in range(1, 5)]
    split, sizes = _split(entries)
    return Fake(
        {"UCF-101-midframes.zip": zip_({f"UCF-101-midframes/{p}": JPEG for p, _, _ in entries})}, split, sizes
    )


def classnames() -> bytes:
    return "".join(f"{w} {n}\n" for w, n in zip(WNIDS, IMAGENET_NAMES)).encode()


def imagenet() -> Fake:
    """ILSVRC2012: a train tar of per-wnid tars, a flat val tar, the devkit's meta.mat and ground truth."""
    train = tar(  # each per-wnid tar holds its images flat, as ILSVRC2012's do
        {f"{w}.tar": tar({f"{w}_{k}.JPEG": JPEG for k in range(1, 4)}, gz=False) for w in WNIDS}, gz=False
    )
    # meta.mat lists the 1000 leaves (num_children 0) and inner nodes; ILSVRC2012_IDs are 1-based
    ids = [1, 2, 3, 4, 5]
    wnids = [*WNIDS[::-1], "n00001740"]  # the IDs are not in sorted-wnid order; the last is an inner node
    synsets = np.zeros((len(ids),), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
    for i, (idx, wnid) in enumerate(zip(ids, wnids)):
        synsets[i] = (idx, wnid, wnid, 0 if i < 4 else 4)
    mat = io.BytesIO()
    savemat(mat, {"synsets": synsets})
    val_labels = [4, 3, 2, 1, 1, 2, 3, 4]  # ID 4 is WNIDS[0]
    devkit = tar({
        "ILSVRC2012_devkit_t12/data/meta.mat": mat.getvalue(),
        "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": "".join(f"{v}\n" for v in val_labels).encode(),
        "ILSVRC2012_devkit_t12/readme.txt": b"devkit",
    })  # fmt: skip
    val = tar({f"ILSVRC2012_val_{i:08d}.JPEG": JPEG for i in range(1, len(val_labels) + 1)}, gz=False)
    return Fake(
        {
            "ILSVRC2012_img_train.tar": train,
            "ILSVRC2012_img_val.tar": val,
            "ILSVRC2012_devkit_t12.tar.gz": devkit,
            "classnames.txt": classnames(),
        },
        None,
        ExpectedSizes(12, None, 8, 4),
    )


def _variant(archive: str, top: str, make_tar: bool, ext: str) -> Callable[[], Fake]:
    def build() -> Fake:
        members = {f"{top}/{w}/{k}{ext}": JPEG for w in WNIDS for k in range(1, 3)}
        if top.startswith("imagenet-"):
            members[f"{top}/README.txt"] = b"not a class"
        data = tar(members, gz=archive.endswith(".gz")) if make_tar else zip_(members)
        return Fake({archive: data, "classnames.txt": classnames()}, None, ExpectedSizes(None, None, 8, 4))

    return build


def imagenetv2() -> Fake:
    members = {
        f"imagenetv2-matched-frequency-format-val/{i}/{k}a7f.jpeg": JPEG for i in range(len(WNIDS)) for k in range(2)
    }
    return Fake(
        {"imagenetv2-matched-frequency.tar.gz": tar(members), "classnames.txt": classnames()},
        None,
        ExpectedSizes(None, None, 8, 4),
    )


FAKES: dict[str, Callable[[], Fake]] = {
    "ImageNet": imagenet,
    "Caltech101": caltech,
    "OxfordPets": pets,
    "StanfordCars": cars,
    "OxfordFlowers": flowers,
    "Food101": food,
    "FGVCAircraft": fgvc,
    "SUN397": sun,
    "DescribableTextures": dtd,
    "EuroSAT": eurosat,
    "UCF101": ucf,
    "ImageNetV2": imagenetv2,
    "ImageNetSketch": _variant("ImageNet-Sketch.zip", "sketch", make_tar=False, ext=".JPEG"),
    "ImageNetA": _variant("imagenet-a.tar", "imagenet-a", make_tar=True, ext=".jpg"),
    "ImageNetR": _variant("imagenet-r.tar", "imagenet-r", make_tar=True, ext=".jpg"),
}


def split_bytes(split: dict) -> bytes:
    """A split file written the way CoOp's are (indent 4, no trailing newline)."""
    return json.dumps(split, indent=4).encode()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
