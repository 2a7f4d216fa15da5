"""ImageNet (1000 classes): labels from the sorted wnid folders, names from CoOp's ``classnames.txt``.

No split file: the official train set is train and the official val set is both val and test. The parsed
lists are cached in ``preprocessed.pkl`` (Dassl's Datum pickle format) because listing 1.3M files is slow.
The helpers here also serve the four test-only ImageNet variants.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Any

from engine.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from engine.utils import listdir_nohidden

from .common import (
    BenchmarkDataset,
    ExpectedSizes,
    LayoutChecks,
    dataset_root,
    load_datum_pickle,
    save_datum_pickle,
    subsample_mode,
)


def read_classnames(text_file: str) -> OrderedDict[str, str]:
    """``<wnid> <class name words>`` lines -> ordered {wnid: name}; blank lines are not entries."""
    classnames: OrderedDict[str, str] = OrderedDict()
    with open(text_file) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            folder, _, name = line.strip().partition(" ")
            if not name:
                raise ValueError(f"{text_file}:{lineno}: expected '<wnid> <class name>', got {line!r}")
            classnames[folder] = name
    return classnames


def name_folders(
    folders: list[str], classnames: dict[str, str], image_dir: str, names_file: str
) -> list[tuple[str, str]]:
    """Pair each wnid folder with its class name; a folder missing from ``classnames.txt`` is an error."""
    for folder in folders:
        if folder not in classnames:
            raise ValueError(f"Class folder {os.path.join(image_dir, folder)} has no entry in {names_file}")
    return [(folder, classnames[folder]) for folder in folders]


def read_class_folders(image_dir: str, named_folders: list[tuple[str, str]]) -> list[Datum]:
    """Every image of ``image_dir/<folder>/``, labelled by the folder's position in ``named_folders``.

    Images keep the filesystem listing order, as in the official code (few-shot picks depend on it).
    """
    items = []
    for label, (folder, classname) in enumerate(named_folders):
        class_dir = os.path.join(image_dir, folder)
        for imname in listdir_nohidden(class_dir):
            items.append(Datum(impath=os.path.join(class_dir, imname), label=label, classname=classname))
    return items


def sorted_subfolders(path: str) -> list[str]:
    """Sorted names of the non-hidden folders of ``path`` (README files and other stray files are not classes)."""
    return sorted(f.name for f in os.scandir(path) if f.is_dir() and not f.name.startswith("."))


@DATASET_REGISTRY.register()
class ImageNet(BenchmarkDataset):
    dataset_dir = "imagenet"
    expected = ExpectedSizes(train=1281167, val=None, test=50000, classes=1000)
    image_subdir = "images"
    layout = """\
imagenet/
    images/train/<wnid>/*.JPEG      (1000 wnid folders)
    images/val/<wnid>/*.JPEG        (the official val set, re-sorted into wnid folders)
    classnames.txt                  ('<wnid> <class name>' per line, CoOp's file)
    preprocessed.pkl                (written on first use)
"""

    read_classnames = staticmethod(read_classnames)

    def read_splits(self) -> tuple[list[Datum], None, list[Datum]]:
        self.preprocessed = os.path.join(self.dataset_dir, "preprocessed.pkl")
        if os.path.exists(self.preprocessed):
            data = load_datum_pickle(self.preprocessed, ("train", "test"), check_every_file=False)
            return data["train"], None, data["test"]
        names_file = self.require(os.path.join(self.dataset_dir, "classnames.txt"), "class-name file")
        classnames = read_classnames(names_file)
        train = self.read_data(classnames, "train", names_file)
        test = self.read_data(classnames, "val", names_file)
        save_datum_pickle({"train": train, "test": test}, self.preprocessed)
        return train, None, test

    def read_data(self, classnames: dict[str, str], split_dir: str, names_file: str) -> list[Datum]:
        split_dir = self.require(os.path.join(self.image_dir, split_dir), "image folder", is_dir=True)
        return read_class_folders(
            split_dir, name_folders(sorted_subfolders(split_dir), classnames, split_dir, names_file)
        )


class ImageNetVariant(LayoutChecks, DatasetBase):
    """Base of the test-only ImageNet variants: one folder per class, ``classnames.txt`` beside it.

    ``train_x`` and ``test`` are the same list (train_x only defines the label space), ``val`` is None;
    ``NUM_SHOTS`` and ``SUBSAMPLE_CLASSES`` do not apply and a warning says so when they are set.
    """

    dataset_dir = ""
    image_subdir = ""

    def __init__(self, cfg: Any) -> None:
        name = type(self).__name__
        self.root = dataset_root(cfg, name, self.layout)
        self.dataset_dir = os.path.join(self.root, type(self).dataset_dir)
        self.image_dir = self.require(
            os.path.join(self.dataset_dir, self.image_subdir), "image folder", is_dir=True
        )
        names_file = self.require(os.path.join(self.dataset_dir, "classnames.txt"), "class-name file")
        mode = subsample_mode(cfg)
        if cfg.DATASET.NUM_SHOTS >= 1 or mode != "all":
            warnings.warn(
                f"{name} is a test-only dataset: DATASET.NUM_SHOTS={cfg.DATASET.NUM_SHOTS} and "
                f"DATASET.SUBSAMPLE_CLASSES={mode!r} are ignored; all its images are used",
                stacklevel=2,
            )
        classnames = read_classnames(names_file)
        data = read_class_folders(self.image_dir, self.class_folders(classnames, names_file))
        super().__init__(train_x=data, test=data)

    def class_folders(self, classnames: OrderedDict[str, str], names_file: str) -> list[tuple[str, str]]:
        """(folder, class name) in label order; default: the sorted wnid folders."""
        return name_folders(sorted_subfolders(self.image_dir), classnames, self.image_dir, names_file)
