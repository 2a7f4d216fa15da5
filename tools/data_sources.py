"""Where every benchmark dataset comes from and how its archives map onto the layout the readers expect.

One entry per ``DATASET.NAME``: the files to fetch (URL, the checksum the source publishes, where each
archive's members go under the dataset folder) and the status of the source. ``tools.prepare_data`` is the
only user; docs/DATASETS.md lists the same table for people.

Checksums are written ``<kind>:<hex>`` with kind ``md5`` (what the dataset sites and torchvision publish),
``sha256``, or ``gitblob`` (the id git records for a file committed on GitHub, for split files too large for
the search store we took the others' sha256 from). ``None`` means the source publishes none; the tool then
prints the sha256 it computed. A path inside an archive of ``""`` means the archive's top level.

Split files are installed from ``datasets/splits/<name>.gz`` when the package ships them (sha256 of the
uncompressed bytes in ``datasets/splits/SHA256SUMS``); the others are fetched from the commit of
linzhiqiu/cross_modal_adaptation that holds CoOp's published files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, field

__all__ = [
    "ALL",
    "DatasetSource",
    "SOURCES",
    "SPLITS_DIR",
    "Source",
    "published_checksum",
    "shipped_split",
    "shipped_split_checksums",
]

SPLITS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets", "splits")
_COOP_SPLITS = (
    "https://raw.githubusercontent.com/linzhiqiu/cross_modal_adaptation/"
    "c7e7e68ae4eeadfab98e7886b2d6c9cf48a7ceb5/splits/"
)
_VGG = "https://www.robots.ox.ac.uk/~vgg/data"
_BERKELEY = "https://people.eecs.berkeley.edu/~hendrycks"
_COOP_DRIVE = "CoOp's Google Drive link in its DATASETS.md (https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md)"


@dataclass(frozen=True)
class Source:
    """One file to fetch. ``places``: (path inside the archive, path under the dataset folder) pairs."""

    filename: str
    url: str | None
    checksum: str | None
    places: tuple[tuple[str, str], ...] = (("", ""),)
    inner: str | None = None  # an archive inside this one that holds the data (Caltech's zip holds a tar.gz)
    copy_from: str | None = None  # a path under the root to copy the file from (ImageNet's classnames.txt)


@dataclass(frozen=True)
class DatasetSource:
    name: str
    status: str  # alive | dead | login | drive (a Google Drive link: fetch it in a browser)
    origin: str  # the page the data is published on
    sources: tuple[Source, ...]
    split: Source | None = None  # CoOp's split file: installed from the package when shipped, else fetched
    handler: str | None = None  # a layout step beyond moving folders ("imagenet")
    guidance: tuple[str, ...] = field(default=())  # two lines printed when a needed file has no URL


def _split(dataset: str, checksum: str) -> Source:
    """CoOp's ``split_zhou_<dataset>.json`` at the pinned commit."""
    filename = f"split_zhou_{dataset}.json"
    return Source(filename, _COOP_SPLITS + filename, checksum, places=(("", filename),))


def _fetched(url: str, checksum: str | None, *places: tuple[str, str], inner: str | None = None) -> Source:
    """A file with a public URL, named as the URL's last path component."""
    return Source(url.rsplit("/", 1)[1], url, checksum, places=places, inner=inner)


def _alive(name: str, origin: str, *sources: Source, **kw) -> DatasetSource:
    return DatasetSource(name, "alive", origin, sources, **kw)


def _classnames() -> Source:
    return Source("classnames.txt", None, None, places=(("", "classnames.txt"),), copy_from="imagenet/classnames.txt")


_IMAGENET_GUIDANCE = (
    "ImageNet needs a login: download ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and "
    "ILSVRC2012_devkit_t12.tar.gz from https://image-net.org, and CoOp's classnames.txt from " + _COOP_DRIVE + ".",
    "Then pass each with --archive: python -m tools.prepare_data ImageNet --root $DATA "
    "--archive ILSVRC2012_img_train.tar --archive ILSVRC2012_img_val.tar "
    "--archive ILSVRC2012_devkit_t12.tar.gz --archive classnames.txt",
)
_VARIANT_GUIDANCE = (
    "The ImageNet variants need CoOp's classnames.txt (from " + _COOP_DRIVE + "); it is copied from "
    "$DATA/imagenet/ when ImageNet is prepared.",
    "Otherwise pass it with --archive classnames.txt.",
)

SOURCES: dict[str, DatasetSource] = {
    s.name: s
    for s in (
        DatasetSource(
            "ImageNet", "login", "https://image-net.org/challenges/LSVRC/2012/",
            (
                Source("ILSVRC2012_img_train.tar", None, "md5:1d675b47d978889d74fa0da5fadfb00e"),
                Source("ILSVRC2012_img_val.tar", None, "md5:29b22e2961454d5413ddabcf34fc5622"),
                Source("ILSVRC2012_devkit_t12.tar.gz", None, "md5:fa75699e90414af021442c21a62c3abf"),
                Source("classnames.txt", None, None, places=(("", "classnames.txt"),)),
            ),
            handler="imagenet", guidance=_IMAGENET_GUIDANCE,
        ),
        _alive(
            "Caltech101", "https://data.caltech.edu/records/mzrjq-6wc02",
            _fetched(
                "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
                "md5:3138e1922a9193bfa496528edbbc45d0",
                ("101_ObjectCategories", "101_ObjectCategories"),
                inner="caltech-101/101_ObjectCategories.tar.gz",
            ),
            split=_split("Caltech101", "sha256:52ce83205ff8ff8a1a18119aad6376120ae35c36e783a984bc560cbf10e73fa5"),
        ),
        _alive(
            "OxfordPets", f"{_VGG}/pets/",
            _fetched(f"{_VGG}/pets/data/images.tar.gz", "md5:5c4f3ee8e5d25df40f4fd59a7f44e54c", ("images", "images")),
            split=_split("OxfordPets", "sha256:d7f3ffe65b3919f95132e51422894ae18686b83c331fd8c0adcdc3dc2de6301e"),
        ),
        DatasetSource(
            "StanfordCars", "dead", "https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
            (
                Source("cars_train.tgz", None, "md5:065e5b463ae28d29e77c1b4b166cfe61",
                       places=(("cars_train", "cars_train"),)),
                Source("cars_test.tgz", None, "md5:4ce7ebf6a94d07f1952d94dd34c4d501",
                       places=(("cars_test", "cars_test"),)),
            ),
            split=_split("StanfordCars", "sha256:40acee7aa65c8e4727a32d90e884b7c3f8960b523422317e163f7af65432959d"),
            guidance=(
                "Stanford's download links for Stanford Cars are dead: find cars_train.tgz and cars_test.tgz "
                "(md5 065e5b46..., 4ce7ebf6...) on a mirror you trust (e.g. a Kaggle copy of the original archives).",
                "Then: python -m tools.prepare_data StanfordCars --root $DATA "
                "--archive cars_train.tgz --archive cars_test.tgz",
            ),
        ),
        _alive(
            "OxfordFlowers", f"{_VGG}/flowers/102/",
            _fetched(f"{_VGG}/flowers/102/102flowers.tgz", "md5:52808999861908f626f3c1f4e79d11fa", ("jpg", "jpg")),
            split=_split("OxfordFlowers", "sha256:2f50c42fc1a17ca13c271cb4269b1347bdb43d2be672e34f74a4e4cbfbcca794"),
        ),
        _alive(
            "Food101", "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
            _fetched(
                "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz", "md5:85eeb15f3717b99a5da872d97d918f87", ("food-101", "")
            ),
            split=_split("Food101", "gitblob:39557040ee6501bd32aa8b5dfd75f7941a32f0a7"),
        ),
        _alive(
            "FGVCAircraft", f"{_VGG}/fgvc-aircraft/",
            _fetched(f"{_VGG}/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz", None, ("fgvc-aircraft-2013b/data", "")),
        ),
        _alive(
            "SUN397", "https://vision.princeton.edu/projects/2010/SUN/",
            _fetched(
                "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
                "md5:8ca2778205c41d23104230ba66911c7a",
                ("SUN397", "SUN397"),
            ),
            split=_split("SUN397", "gitblob:8d5725db8f70bcf02245665304f863e68f96a24c"),
        ),
        _alive(
            "DescribableTextures", f"{_VGG}/dtd/",
            _fetched(f"{_VGG}/dtd/download/dtd-r1.0.1.tar.gz", "md5:fff73e5086ae6bdbea199a49dfb8a4c1", ("dtd", "")),
            split=_split(
                "DescribableTextures", "sha256:f26ebeccd2b58e68d70f07a0dc39fe49bf7b69024bac34396b954dfd87969c38"
            ),
        ),
        _alive(
            "EuroSAT", "https://github.com/phelber/eurosat",
            _fetched(
                "https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
                "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
                "md5:c8fa014336c82ac7804f0398fcb19387",
                ("2750", "2750"),
            ),
            split=_split("EuroSAT", "sha256:541503a77d0b26b735d85ec7a3e672804fe0aa466c2e5f07da772cc6c0af8ad2"),
        ),
        DatasetSource(
            "UCF101", "drive", "https://www.crcv.ucf.edu/data/UCF101.php (frames: CoOp)",
            (
                Source("UCF-101-midframes.zip", None, None, places=(("UCF-101-midframes", "UCF-101-midframes"),)),
            ),
            split=_split("UCF101", "sha256:d78cb834f7c5792ceaff2c5ee2d7c76a9e4086e48a3a6b01232989d29cbefdd8"),
            guidance=(
                "UCF101's middle frames exist only as CoOp's UCF-101-midframes.zip on Google Drive: download it "
                "in a browser from " + _COOP_DRIVE + ".",
                "Then: python -m tools.prepare_data UCF101 --root $DATA --archive UCF-101-midframes.zip",
            ),
        ),
        _alive(
            "ImageNetV2", "https://github.com/modestyachts/ImageNetV2",
            _fetched(
                "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz",
                None,
                ("imagenetv2-matched-frequency-format-val", "imagenetv2-matched-frequency-format-val"),
            ),
            _classnames(),
            guidance=_VARIANT_GUIDANCE,
        ),
        _alive(
            "ImageNetSketch", "https://github.com/HaohanWang/ImageNet-Sketch",
            _fetched(
                "https://huggingface.co/datasets/songweig/imagenet_sketch/resolve/main/data/ImageNet-Sketch.zip",
                None,
                ("sketch", "images"),
            ),
            _classnames(),
            guidance=_VARIANT_GUIDANCE,
        ),
        _alive(
            "ImageNetA", "https://github.com/hendrycks/natural-adv-examples",
            _fetched(f"{_BERKELEY}/imagenet-a.tar", "md5:c3e55429088dc681f30d81f4726b6595", ("imagenet-a", "imagenet-a")),
            _classnames(),
            guidance=_VARIANT_GUIDANCE,
        ),
        _alive(
            "ImageNetR", "https://github.com/hendrycks/imagenet-r",
            _fetched(f"{_BERKELEY}/imagenet-r.tar", "md5:a61312130a589d0ca1a8fca1f2bd3337", ("imagenet-r", "imagenet-r")),
            _classnames(),
            guidance=_VARIANT_GUIDANCE,
        ),
    )
}

ALL = tuple(SOURCES)  # `all`: the 11 base-to-new datasets and the four ImageNet variants


def published_checksum(source: Source) -> str | None:
    """The checksum ``source`` must match (tests replace this to serve their own tiny archives)."""
    return source.checksum


def shipped_split_checksums() -> dict[str, str]:
    """``{split file name: sha256 of its uncompressed bytes}`` from ``datasets/splits/SHA256SUMS``."""
    path = os.path.join(SPLITS_DIR, "SHA256SUMS")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return {name: digest for digest, name in (line.split() for line in f if line.strip())}


def shipped_split(filename: str, dest: str) -> bool:
    """Write the shipped copy of ``filename`` to ``dest`` (verified by sha256); False when none is shipped."""
    packed = os.path.join(SPLITS_DIR, filename + ".gz")
    want = shipped_split_checksums().get(filename)
    if want is None or not os.path.isfile(packed):
        return False
    with gzip.open(packed, "rb") as f:
        data = f.read()
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise ValueError(f"{packed}: decompresses to sha256 {got}, but SHA256SUMS lists {want}; the package is damaged")
    with open(dest, "wb") as f:
        f.write(data)
    return True
