"""A user's own dataset with no code: a folder of ``<class>/<images>`` or a CSV of ``path,label``.

``DATASET.IMAGE_FOLDER`` (or ``DATASET.IMAGE_LIST``, a CSV) names the data; a relative path is taken from
``DATASET.ROOT``, like every dataset folder. On first use a stratified train/val/test split
(``DATASET.IMAGE_FOLDER_SPLIT`` fractions, shuffled per class by ``DATASET.IMAGE_FOLDER_SPLIT_SEED``) is written
beside the data as ``split_image_folder_<tag>.json`` (``split_image_list_<csv stem>_<tag>.json`` for a CSV) in
CoOp's split format; later runs reuse it and refuse to run when the data no longer matches it. Few-shot caches
go to ``split_fewshot_<same name>/``. Class names are the folder names (or CSV labels) with underscores read as
spaces, or come from a ``classnames.txt`` beside the data. Base/new halves are CoOp's (sorted class names).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from engine.data.datasets import DATASET_REGISTRY, Datum
from engine.utils import listdir_nohidden, read_json

from .common import BenchmarkDataset, read_split, save_split, stratified_split

CLASSNAMES_FILE = "classnames.txt"
SPLIT_PREFIX = "split_image_"  # never "split_zhou_": a generated split is not CoOp's published one
FEWSHOT_PREFIX = "split_fewshot"


@dataclass(frozen=True)
class ImageSource:
    """Where the images are listed (a folder or a CSV), and where the split and caches are written."""

    key: str  # the config key that named it, for errors
    path: str  # the folder, or the CSV file
    folder: str  # the folder image paths are relative to (and where generated files go)
    tag: str  # split_image_<tag>.json

    @classmethod
    def from_cfg(cls, cfg: Any) -> ImageSource:
        folder, image_list = cfg.DATASET.IMAGE_FOLDER, cfg.DATASET.IMAGE_LIST
        if bool(folder) == bool(image_list):
            raise ValueError(
                "DATASET.NAME ImageFolder needs exactly one of DATASET.IMAGE_FOLDER <folder of class folders> "
                f"and DATASET.IMAGE_LIST <CSV of path,label>; got IMAGE_FOLDER {folder!r}, IMAGE_LIST {image_list!r}"
            )
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT or "."))
        fractions = split_fractions(cfg)
        suffix = "-".join(f"{100 * p:g}" for p in fractions) + f"_seed{cfg.DATASET.IMAGE_FOLDER_SPLIT_SEED}"
        if folder:
            path = os.path.join(root, os.path.expanduser(folder)).rstrip("/") or "/"
            if not os.path.isdir(path):
                raise FileNotFoundError(
                    f"DATASET.IMAGE_FOLDER {path}: no such folder (expected <class>/<images>)"
                )
            return cls("DATASET.IMAGE_FOLDER", path, path, f"folder_{suffix}")
        path = os.path.join(root, os.path.expanduser(image_list))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"DATASET.IMAGE_LIST {path}: no such file (expected a CSV of path,label)")
        stem = os.path.splitext(os.path.basename(path))[0]
        return cls("DATASET.IMAGE_LIST", path, os.path.dirname(path), f"list_{stem}_{suffix}")

    def items(self) -> list[tuple[str, str]]:
        """``(path relative to self.folder, folder name or CSV label)`` of every image, sorted by path."""
        return sorted(self._scan_folder() if self.key == "DATASET.IMAGE_FOLDER" else self._read_list())

    def _scan_folder(self) -> list[tuple[str, str]]:
        classes, strays = [], []
        for name in sorted(listdir_nohidden(self.path)):
            full = os.path.join(self.path, name)
            if os.path.isdir(full):
                if not name.startswith(FEWSHOT_PREFIX):
                    classes.append(name)
            elif name.lower().endswith(IMG_EXTENSIONS):
                strays.append(full)
        if strays:
            raise ValueError(f"{self.key} {strays[0]}: an image outside the class folders (move it into one)")
        if not classes:
            raise ValueError(f"{self.key} {self.path}: no class folders (expected <class name>/<images>)")
        found = make_dataset(
            self.path, {c: i for i, c in enumerate(classes)}, None, self._is_image, allow_empty=True
        )
        counts = Counter(label for _, label in found)
        empty = [c for i, c in enumerate(classes) if not counts[i]]
        if empty:
            raise ValueError(
                f"{self.key} {os.path.join(self.path, empty[0])}: empty class folder (no {', '.join(IMG_EXTENSIONS[:4])}"
                f" ... images){f'; {len(empty) - 1} more empty' if len(empty) > 1 else ''}"
            )
        return [(os.path.relpath(p, self.path), classes[label]) for p, label in found]

    def _is_image(self, path: str) -> bool:
        """torchvision's walk calls this per file: hidden files are skipped, other non-images refused."""
        if any(part.startswith(".") for part in os.path.relpath(path, self.path).split(os.sep)):
            return False
        if not path.lower().endswith(IMG_EXTENSIONS):
            raise ValueError(f"{self.key} {path}: not an image file (expected {', '.join(IMG_EXTENSIONS)})")
        return True

    def _read_list(self) -> list[tuple[str, str]]:
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        items, lines = [], {}
        for n, row in enumerate(rows, start=1):
            if not any(cell.strip() for cell in row):
                continue
            cells = [cell.strip() for cell in row]
            if n == 1 and [c.lower() for c in cells] == ["path", "label"]:
                continue
            where = f"{self.key} {self.path} line {n}"
            if len(cells) != 2 or not cells[1]:
                raise ValueError(
                    f"{where}: expected 'path,label' with a non-empty label, got {','.join(row)!r}"
                )
            rel = os.path.normpath(cells[0])
            if os.path.isabs(rel) or rel.split(os.sep)[0] == "..":
                raise ValueError(
                    f"{where}: {cells[0]!r} must be a path relative to the CSV's folder {self.folder}"
                )
            full = os.path.join(self.folder, rel)
            if not os.path.isfile(full):
                raise FileNotFoundError(f"{where}: missing image {full}")
            if not rel.lower().endswith(IMG_EXTENSIONS):
                raise ValueError(
                    f"{where}: {full} is not an image file (expected {', '.join(IMG_EXTENSIONS)})"
                )
            if rel in lines:
                raise ValueError(f"{where}: {rel} is listed twice (first on line {lines[rel]})")
            lines[rel] = n
            items.append((rel, cells[1]))
        if not items:
            raise ValueError(f"{self.key} {self.path}: no 'path,label' rows")
        return items

    def classnames(self, classes: list[str]) -> dict[str, str]:
        """Class name of each folder (or CSV label): ``classnames.txt`` beside the data, else ``_`` read as space."""
        path = os.path.join(self.folder, CLASSNAMES_FILE)
        if not os.path.isfile(path):
            return {c: c.replace("_", " ") for c in classes}
        names = {}
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                parts = line.strip().split(maxsplit=1)
                if len(parts) != 2 or parts[0] not in classes:
                    known = "a class folder" if self.key == "DATASET.IMAGE_FOLDER" else "a CSV label"
                    raise ValueError(
                        f"{path} line {n}: expected '<{known}> <class name>', got {line.strip()!r}"
                    )
                names[parts[0]] = parts[1]
        missing = [c for c in classes if c not in names]
        if missing:
            raise ValueError(f"{path}: no line for class {missing[0]!r} ({len(missing)} classes missing)")
        return names


def split_fractions(cfg: Any) -> tuple[float, float, float]:
    """``DATASET.IMAGE_FOLDER_SPLIT``: three positive train/val/test fractions that sum to 1."""
    fractions = tuple(float(p) for p in cfg.DATASET.IMAGE_FOLDER_SPLIT)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"DATASET.IMAGE_FOLDER_SPLIT must be three positive train/val/test fractions summing to 1, "
            f"e.g. [0.5,0.2,0.3]; got {list(cfg.DATASET.IMAGE_FOLDER_SPLIT)}"
        )
    return fractions  # type: ignore[return-value]


@DATASET_REGISTRY.register()
class ImageFolder(BenchmarkDataset):
    """A folder of class folders (or a CSV of ``path,label``) read, split and few-shot like a benchmark."""

    dataset_dir = ""  # the data folder itself is the root (resolve_root)
    layout = """\
<DATASET.IMAGE_FOLDER>/
    <class name>/<image>.jpg          (one folder per class; torchvision's image types)
    classnames.txt                    (optional: '<folder> <class name>' per line)
    split_image_folder_<...>.json     (written on first use)
"""

    def __init__(self, cfg: Any) -> None:
        self.source = ImageSource.from_cfg(cfg)
        self.fractions = split_fractions(cfg)
        self.split_seed = cfg.DATASET.IMAGE_FOLDER_SPLIT_SEED
        self.num_shots = cfg.DATASET.NUM_SHOTS
        self.split_filename = f"{SPLIT_PREFIX}{self.source.tag}.json"
        self.fewshot_dirname = f"{FEWSHOT_PREFIX}_image_{self.source.tag}"
        super().__init__(cfg)

    def resolve_root(self, cfg: Any) -> str:
        return self.source.folder

    def read_splits(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        """The saved split when it matches the data; else (first use) a new stratified split, saved."""
        items = self.source.items()
        classes = sorted({label for _, label in items})
        names = self.source.classnames(classes)
        labels = {c: i for i, c in enumerate(classes)}
        current = {(rel, labels[c], names[c]) for rel, c in items}
        if os.path.exists(self.split_path):
            self._check_saved_split(current)
            train, val, test = read_split(self.split_path, self.source.folder)
        else:
            groups: dict[str, list[Datum]] = {}
            for rel, label, name in sorted(current, key=lambda t: (t[1], t[0])):
                where = f"{self.source.key} {self.source.path}: class {name!r}"
                groups.setdefault(where, []).append(
                    Datum(impath=os.path.join(self.source.folder, rel), label=label, classname=name)
                )
            train, val, test = stratified_split(groups, self.fractions[0], self.fractions[1], self.split_seed)
            save_split(train, val, test, self.split_path, self.source.folder)
        self._check_shots(train)
        return train, val, test

    def _check_saved_split(self, current: set[tuple[str, int, str]]) -> None:
        """Refuse a split written for other data: its items must be exactly the images and classes found now."""
        split = read_json(self.split_path)
        if not isinstance(split, dict) or any(
            not isinstance(split.get(k), list) for k in ("train", "val", "test")
        ):
            return  # read_split reports what is wrong with the file
        saved = {
            (entry[0], entry[1], entry[2])
            for key in ("train", "val", "test")
            for entry in split[key]
            if isinstance(entry, list) and len(entry) == 3 and [type(e) for e in entry] == [str, int, str]
        }
        if saved == current:
            return
        added, gone = sorted(current - saved), sorted(saved - current)
        shown = "; ".join(
            f"{len(part)} {what} (e.g. {part[0][0]} as {part[0][2]!r})"
            for part, what in ((added, "new"), (gone, "gone"))
            if part
        )
        raise ValueError(
            f"{self.source.key} {self.source.path} no longer matches its split {self.split_path}: {shown}; "
            "delete the split file (and its few-shot folder) to split again (results of the old split are not comparable)"
        )

    def _check_shots(self, train: list[Datum]) -> None:
        """Dassl silently uses fewer shots for a small class; here that is an error naming the class."""
        if self.num_shots < 1:
            return
        counts = Counter((item.label, item.classname) for item in train)
        short = sorted((n, name) for (_, name), n in counts.items() if n < self.num_shots)
        if short:
            n, name = short[0]
            raise ValueError(
                f"DATASET.NUM_SHOTS {self.num_shots}: class {name!r} has only {n} train images in "
                f"{self.split_path} ({len(short)} classes short); add images, lower DATASET.NUM_SHOTS or raise "
                "the train fraction of DATASET.IMAGE_FOLDER_SPLIT"
            )
