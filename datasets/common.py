"""What every benchmark reader shares: split files, few-shot caches, base/new subsampling, split generation.

The readers reproduce CoOp's dataset code, whose fixed splits and few-shot samples every repository of this
family reuses. The logic lives here once; the historical access points (``OxfordPets.read_split``,
``DescribableTextures.read_and_split_data`` ...) are the same functions exposed on :class:`BenchmarkDataset`.

Few-shot caches (``split_fewshot/shot_{N}-seed_{S}.pkl``) and ImageNet's ``preprocessed.pkl`` are pickles of
``Datum`` lists. We write them byte-compatible with Dassl (the class is recorded as
``dassl.data.datasets.base_dataset.Datum``) so that the official repositories can read ours, and we read theirs
with an unpickler that admits that one class and nothing else.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import random
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.data.datasets import DatasetBase, Datum
from engine.utils import listdir_nohidden, mkdir_if_missing, read_json, write_json

__all__ = [
    "DASSL_DATUM_MODULE",
    "SUBSAMPLE_CHOICES",
    "BenchmarkDataset",
    "DatasetLayoutError",
    "ExpectedSizes",
    "ForeignPickleError",
    "LayoutChecks",
    "dataset_root",
    "folder_written_atomically",
    "load_datum_pickle",
    "load_or_create_fewshot",
    "read_and_split_data",
    "read_split",
    "save_datum_pickle",
    "save_split",
    "split_trainval",
    "stratified_split",
    "subsample_classes",
]

DASSL_DATUM_MODULE = "dassl.data.datasets.base_dataset"
SUBSAMPLE_CHOICES = ("all", "base", "new")
_ALLOWED_GLOBALS = {(DASSL_DATUM_MODULE, "Datum"), (Datum.__module__, "Datum")}
T = TypeVar("T")


@dataclass(frozen=True)
class ExpectedSizes:
    """What docs/DATASETS.md promises for the published split: image counts and number of classes.

    Readers declare it as ``expected`` so that ``tools/check_data.py`` can compare a data folder against it.
    ``None`` means the split has no such part (ImageNet's val is its test set; the variants are test-only).
    """

    train: int | None
    val: int | None
    test: int
    classes: int


class DatasetLayoutError(FileNotFoundError):
    """A file or folder the dataset needs is missing; the message shows the expected tree."""


class ForeignPickleError(pickle.UnpicklingError):
    """A dataset cache refers to something other than ``Datum``; it is refused before anything runs."""


def layout_error(dataset: str, problem: str, root: str, layout: str) -> DatasetLayoutError:
    """Build the one error message format all readers use for a missing path."""
    return DatasetLayoutError(
        f"{dataset}: {problem}\nExpected layout under DATASET.ROOT ({root}):\n{layout.rstrip()}\n"
        "See docs/DATASETS.md for how to obtain the data."
    )


def dataset_root(cfg: Any, dataset: str, layout: str) -> str:
    """``DATASET.ROOT`` made absolute (as Dassl does); it must be an existing folder."""
    root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
    if not os.path.isdir(root):
        raise layout_error(dataset, f"DATASET.ROOT {root} is not an existing folder.", root, layout)
    return root


def subsample_mode(cfg: Any) -> str:
    """``DATASET.SUBSAMPLE_CLASSES`` ("all" when the config predates train.py's extend_cfg)."""
    mode = cfg.DATASET.get("SUBSAMPLE_CLASSES", "all")
    if mode not in SUBSAMPLE_CHOICES:
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be one of {SUBSAMPLE_CHOICES}, got {mode!r}")
    return mode


# ----------------------------------------------------------------------------------------------- split files


def _unreadable_folder(path: str) -> str | None:
    """The deepest existing folder above ``path`` that cannot be listed or entered, if any.

    Such a folder makes every image below it look missing (``isfile`` is False), so the error names it.
    """
    folder = os.path.dirname(path)
    while folder and not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent
    return folder if folder and not os.access(folder, os.R_OK | os.X_OK) else None


def _make_datum(impath: str, label: int, classname: str, where: str) -> Datum:
    try:
        return Datum(impath=impath, label=label, classname=classname)
    except FileNotFoundError as e:
        blocked = _unreadable_folder(impath)
        if blocked is not None:
            raise PermissionError(
                f"{where} references {impath}, but the folder {blocked} is not readable (permission denied)"
            ) from e
        raise FileNotFoundError(f"{where} references a missing image: {impath}") from e


def read_split(filepath: str, path_prefix: str) -> tuple[list[Datum], list[Datum], list[Datum]]:
    """Read a CoOp split file (``{"train"|"val"|"test": [[relpath, label, classname], ...]}``).

    Paths are joined to ``path_prefix``; every entry is validated so a damaged file fails on the entry that
    is wrong instead of somewhere in training.
    """
    print(f"Reading split from {filepath}")
    split = read_json(filepath)
    if not isinstance(split, dict) or any(
        not isinstance(split.get(k), list) for k in ("train", "val", "test")
    ):
        found = sorted(split) if isinstance(split, dict) else type(split).__name__
        raise ValueError(
            f"Split file {filepath} must be a JSON object with lists under 'train', 'val' and 'test' "
            f"(each entry [relative_path, label, classname]); found {found}"
        )
    out = []
    checks = _SplitChecks()
    for key in ("train", "val", "test"):
        items = []
        for i, entry in enumerate(split[key]):
            where = f"Split file {filepath} entry {key}[{i}]"
            if (
                not isinstance(entry, (list, tuple))
                or len(entry) != 3
                or not isinstance(entry[0], str)
                or not isinstance(entry[2], str)
                or isinstance(entry[1], bool)
                or not isinstance(entry[1], (int, str))
                or not str(entry[1]).lstrip("-").isdigit()
            ):
                raise ValueError(f"{where} must be [relative_path, integer label, classname], got {entry!r}")
            checks.entry(where, entry[0], int(entry[1]), entry[2], path_prefix)
            items.append(_make_datum(os.path.join(path_prefix, entry[0]), int(entry[1]), entry[2], where))
        out.append(items)
    checks.label_range()
    return out[0], out[1], out[2]


class _SplitChecks:
    """What one entry cannot show: paths inside the image folder, no image twice, one name per label and
    one label per name, labels 0..n-1 for the n classes of the file. Errors name the entry."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}
        self.names: dict[int, tuple[str, str]] = {}
        self.labels: dict[str, tuple[int, str]] = {}

    def entry(self, where: str, path: str, label: int, name: str, prefix: str) -> None:
        normal = os.path.normpath(path)
        if os.path.isabs(path) or normal == ".." or normal.startswith(".." + os.sep):
            raise ValueError(f"{where}: the path {path!r} lies outside the image folder {prefix}")
        if normal in self.paths:
            raise ValueError(f"{where}: {path!r} is listed twice (also at {self.paths[normal]})")
        self.paths[normal] = where
        first_name, at = self.names.setdefault(label, (name, where))
        if first_name != name:
            raise ValueError(f"{where}: label {label} is named {name!r} here but {first_name!r} at {at}")
        first_label, at = self.labels.setdefault(name, (label, where))
        if first_label != label:
            raise ValueError(f"{where}: class {name!r} has label {label} here but {first_label} at {at}")

    def label_range(self) -> None:
        n = len(self.names)
        for label, (name, where) in sorted(self.names.items()):
            if not 0 <= label < n:
                raise ValueError(
                    f"{where}: label {label} ({name!r}) is outside 0..{n - 1}, the labels of the {n} classes "
                    "the file names"
                )


def save_split(
    train: Sequence[Datum], val: Sequence[Datum], test: Sequence[Datum], filepath: str, path_prefix: str
) -> None:
    """Write a split file with paths relative to ``path_prefix`` (the format :func:`read_split` reads)."""
    prefix = path_prefix.rstrip("/") + "/"

    def _extract(items: Sequence[Datum]) -> list[tuple[str, int, str]]:
        out = []
        for item in items:
            if not item.impath.startswith(prefix):
                raise ValueError(f"Cannot save {item.impath} relative to {path_prefix}: it lies outside it")
            out.append((item.impath[len(prefix) :], item.label, item.classname))
        return out

    write_json({"train": _extract(train), "val": _extract(val), "test": _extract(test)}, filepath)
    print(f"Saved split to {filepath}")


def split_trainval(trainval: Sequence[Datum], p_val: float = 0.2) -> tuple[list[Datum], list[Datum]]:
    """Split per label (first-appearance order): ``round(n*p_val)`` shuffled items go to val, the rest to train."""
    print(f"Splitting trainval into {1 - p_val:.0%} train and {p_val:.0%} val")
    tracker: dict[int, list[int]] = defaultdict(list)
    for idx, item in enumerate(trainval):
        tracker[item.label].append(idx)
    train, val = [], []
    for label, idxs in tracker.items():
        n_val = round(len(idxs) * p_val)
        if n_val <= 0:
            raise ValueError(
                f"Class {label} has only {len(idxs)} train+val images, too few to hold out {p_val:.0%} for val"
            )
        random.shuffle(idxs)
        for n, idx in enumerate(idxs):
            (val if n < n_val else train).append(trainval[idx])
    return train, val


def read_and_split_data(
    image_dir: str,
    p_trn: float = 0.5,
    p_val: float = 0.2,
    ignored: Sequence[str] = (),
    new_cnames: dict[str, str] | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[list[Datum], list[Datum], list[Datum]]:
    """Split ``image_dir/<category>/<image>`` per category into train/val/test (DTD-style).

    Labels follow the sorted category names; images keep the filesystem listing order before the shuffle,
    exactly as the official code, so a generated split depends on the filesystem and the python seed.
    ``classes``, the reader's complete list of category folders, makes a missing or extra folder an error
    (it would shift every label and the base/new halves).
    """
    categories = sorted(c for c in listdir_nohidden(image_dir) if c not in ignored)
    if classes is not None and set(categories) != set(classes):
        missing, extra = sorted(set(classes) - set(categories)), sorted(set(categories) - set(classes))
        raise ValueError(
            f"Image folder {image_dir} has {len(categories)} class folders, the reader expects {len(classes)}: "
            f"missing {missing or 'none'}, not a class of this dataset {extra or 'none'}"
        )
    for category in categories:
        try:
            category.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"Category folder {os.fsencode(os.path.join(image_dir, category))!r} has a name that is not "
                "valid UTF-8; rename it (folder names become the class names in the text prompts)"
            ) from None
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {1 - p_trn - p_val:.0%} test")
    train, val, test = [], [], []
    for label, category in enumerate(categories):
        category_dir = os.path.join(image_dir, category)
        images = [os.path.join(category_dir, im) for im in listdir_nohidden(category_dir)]
        random.shuffle(images)
        n_total = len(images)
        n_train = round(n_total * p_trn)
        n_val = round(n_total * p_val)
        if n_train <= 0 or n_val <= 0 or n_total - n_train - n_val <= 0:
            raise ValueError(
                f"Category folder {category_dir} has {n_total} images, too few for a "
                f"{p_trn:.0%}/{p_val:.0%}/{1 - p_trn - p_val:.0%} train/val/test split"
            )
        classname = new_cnames.get(category, category) if new_cnames else category
        for part, ims in (
            (train, images[:n_train]),
            (val, images[n_train : n_train + n_val]),
            (test, images[n_train + n_val :]),
        ):
            part.extend(Datum(impath=im, label=label, classname=classname) for im in ims)
    return train, val, test


def stratified_split(
    groups: dict[str, Sequence[T]], p_trn: float, p_val: float, seed: int
) -> tuple[list[T], list[T], list[T]]:
    """Reproducible per-class split: each group (in the given order) shuffled by one private RNG.

    The first ``round(n*p_trn)`` shuffled items of a group go to train, the next ``round(n*p_val)`` to val,
    the rest to test; every part must get at least one item. The RNG is ``random.Random(seed)``, so the split
    does not depend on (or disturb) the python ``random`` state that few-shot sampling uses. A group's key
    names it in errors.
    """
    rng = random.Random(seed)
    train: list[T] = []
    val: list[T] = []
    test: list[T] = []
    for name, items in groups.items():
        items = list(items)
        rng.shuffle(items)
        n_train, n_val = round(len(items) * p_trn), round(len(items) * p_val)
        if n_train <= 0 or n_val <= 0 or len(items) - n_train - n_val <= 0:
            raise ValueError(
                f"{name} has {len(items)} images, too few for a {p_trn:.0%}/{p_val:.0%}/{1 - p_trn - p_val:.0%} "
                "train/val/test split (each part needs at least one image)"
            )
        train.extend(items[:n_train])
        val.extend(items[n_train : n_train + n_val])
        test.extend(items[n_train + n_val :])
    return train, val, test


def subsample_classes(*datasets: Sequence[Datum], subsample: str = "all") -> Any:
    """Keep the base (first ceil(n/2)) or new (remaining) labels of ``datasets[0]`` in every dataset.

    Labels are sorted and the kept ones relabelled 0..k-1 in ascending order (so "new" starts from 0);
    "all" returns the inputs untouched. New ``Datum`` objects are built (domain resets to 0, as in CoOp).
    """
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(f"subsample must be one of {SUBSAMPLE_CHOICES}, got {subsample!r}")
    if subsample == "all":
        return datasets
    labels = sorted({item.label for item in datasets[0]})
    # The halves are taken from the first (train) split's labels, as in CoOp: a class absent from it would
    # silently move the base/new boundary.
    present = set(labels)
    absent = sorted({(item.label, item.classname) for d in datasets[1:] for item in d if item.label not in present})
    if absent:
        shown = ", ".join(f"{label} ({name})" for label, name in absent[:5])
        raise ValueError(
            f"DATASET.SUBSAMPLE_CLASSES {subsample}: class(es) {shown}{' ...' if len(absent) > 5 else ''} have "
            "images in val/test but none in the train split, so the base/new halves would shift; check the split "
            "file or the image folders"
        )
    m = math.ceil(len(labels) / 2)
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabeler = {y: y_new for y_new, y in enumerate(selected)}
    return [
        [
            Datum(impath=item.impath, label=relabeler[item.label], classname=item.classname)
            for item in dataset
            if item.label in relabeler
        ]
        for dataset in datasets
    ]


# -------------------------------------------------------------------------------------------- Datum pickles


class _DasslPickler(pickle._Pickler):
    """Pickler that records our ``Datum`` under Dassl's module path, as the official caches do.

    The pure-Python pickler is used because its ``save_global`` is the one hook that decides the recorded
    class path; everything else is pickle's standard protocol-5 output.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is Datum:
            self.save(DASSL_DATUM_MODULE)
            self.save("Datum")
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


class _DatumUnpickler(pickle.Unpickler):
    """Unpickler that resolves only Dassl's or our ``Datum``; any other global is refused."""

    def __init__(self, file: io.BufferedReader, path: str) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return Datum
        raise ForeignPickleError(
            f"{self._path} refers to {module}.{name}; a dataset cache may hold only Datum objects "
            f"({DASSL_DATUM_MODULE}.Datum) in plain lists and dicts"
        )


def save_datum_pickle(data: dict[str, list[Datum]], path: str) -> None:
    """Write ``{key: [Datum, ...]}`` in the format real Dassl writes and reads."""
    buffer = io.BytesIO()
    _DasslPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(data)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def load_datum_pickle(
    path: str, keys: Sequence[str], check_every_file: bool = True
) -> dict[str, list[Datum]]:
    """Read a Datum cache written by us or by the official repositories, checking what it holds.

    Cached paths are absolute: a cache made under another ``DATASET.ROOT`` names images that are not here,
    which is reported now (with the fix) rather than when the loader first opens one. For ImageNet's 1.3M-image
    ``preprocessed.pkl`` (``check_every_file=False``) only the first image of each list is checked: enough to
    catch a moved root without paying the stat calls the cache exists to avoid.
    """
    try:
        with open(path, "rb") as f:
            data = _DatumUnpickler(f, path).load()
    except ForeignPickleError:
        raise
    except Exception as e:  # truncated or non-pickle files raise UnpicklingError, EOFError, ValueError, ...
        raise ValueError(
            f"Cannot read dataset cache {path} ({type(e).__name__}: {e}); delete it to rebuild"
        ) from e
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in keys):
        raise ValueError(
            f"Dataset cache {path} must be a dict with Datum lists under {list(keys)}; delete it to rebuild"
        )
    for key in keys:
        for i, item in enumerate(data[key]):
            state = getattr(item, "__dict__", {})
            if (
                not isinstance(item, Datum)
                or not {"_impath", "_label", "_domain", "_classname"} <= state.keys()
            ):
                raise ValueError(f"Dataset cache {path} entry {key}[{i}] is not a Datum: {item!r}")
            if (check_every_file or i == 0) and not os.path.isfile(item.impath):
                raise FileNotFoundError(
                    f"Dataset cache {path} entry {key}[{i}] names a missing image {item.impath} "
                    "(was it made under another DATASET.ROOT?); delete the cache to rebuild it"
                )
    return data


def load_or_create_fewshot(
    dataset: DatasetBase,
    train: list[Datum],
    val: list[Datum] | None,
    num_shots: int,
    seed: int,
    cache_dir: str,
) -> tuple[list[Datum], list[Datum] | None]:
    """Dassl's few-shot step: ``num_shots`` per class for train, ``min(num_shots, 4)`` for val, cached.

    The cache key is ``shot_{N}-seed_{S}`` only (as in CoOp): it ignores the subsample mode and the split
    file, so delete ``split_fewshot/`` after changing a split. ``val=None`` (ImageNet) caches train only.
    """
    if num_shots < 1:
        print(f"DATASET.NUM_SHOTS is {num_shots}: every train and val image is used (Dassl's convention for < 1)")
        return train, val
    mkdir_if_missing(cache_dir)
    path = os.path.join(cache_dir, f"shot_{num_shots}-seed_{seed}.pkl")
    keys = ("train",) if val is None else ("train", "val")
    if os.path.exists(path):
        print(f"Loading preprocessed few-shot data from {path}")
        data = load_datum_pickle(path, keys)
        return data["train"], data.get("val") if val is not None else None
    train = dataset.generate_fewshot_dataset(train, num_shots=num_shots)
    data = {"train": train}
    if val is not None:
        val = dataset.generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
        data["val"] = val
    print(f"Saving preprocessed few-shot data to {path}")
    save_datum_pickle(data, path)
    return train, val


# ------------------------------------------------------------------------------------------- the base reader


class LayoutChecks:
    """``require``: existence checks whose errors name the path and show the reader's expected ``layout``."""

    root = ""
    layout = ""
    expected: ExpectedSizes | None = None
    created_on_first_use = False  # True when the reader writes its own data (Digits)

    def require(self, path: str, what: str, is_dir: bool = False, hint: str = "") -> str:
        """Return ``path`` if it exists (as a folder when ``is_dir``), else raise a layout error naming it."""
        if os.path.isdir(path) if is_dir else os.path.isfile(path):
            return path
        problem = f"missing {what} {path}." + (f" {hint}" if hint else "")
        raise layout_error(type(self).__name__, problem, self.root, self.layout)


class BenchmarkDataset(LayoutChecks, DatasetBase):
    """Template for the trainable benchmarks: read or create the split, few-shot it, subsample classes.

    Subclasses set ``dataset_dir`` (folder under ``DATASET.ROOT``), ``image_subdir``, ``split_filename``,
    ``layout`` (the tree shown in errors and docs) and implement :meth:`create_split` for when the split file
    is absent. A subclass whose official split has no val set returns ``val=None`` from :meth:`read_splits`;
    its test set then doubles as val (ImageNet).
    """

    dataset_dir = ""
    image_subdir = ""
    split_filename: str | None = None
    fewshot_dirname = "split_fewshot"
    layout = ""

    read_split = staticmethod(read_split)
    save_split = staticmethod(save_split)
    split_trainval = staticmethod(split_trainval)
    read_and_split_data = staticmethod(read_and_split_data)
    subsample_classes = staticmethod(subsample_classes)

    def __init__(self, cfg: Any) -> None:
        self.root = self.resolve_root(cfg)
        self.dataset_dir = os.path.join(self.root, type(self).dataset_dir)
        self.require(self.dataset_dir, "dataset folder", is_dir=True)
        self.image_dir = os.path.join(self.dataset_dir, self.image_subdir)
        self.split_path = os.path.join(self.dataset_dir, self.split_filename) if self.split_filename else ""
        self.split_fewshot_dir = os.path.join(self.dataset_dir, self.fewshot_dirname)

        train, val, test = self.read_splits()
        train, val = load_or_create_fewshot(
            self, train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED, self.split_fewshot_dir
        )
        mode = subsample_mode(cfg)
        if val is None:
            train, test = subsample_classes(train, test, subsample=mode)
            val = test
        else:
            train, val, test = subsample_classes(train, val, test, subsample=mode)
        super().__init__(train_x=train, val=val, test=test)

    def resolve_root(self, cfg: Any) -> str:
        """The absolute ``DATASET.ROOT``, which must exist."""
        return dataset_root(cfg, type(self).__name__, self.layout)

    @property
    def split_prefix(self) -> str:
        """Folder the split file's relative paths start from."""
        return self.image_dir

    @property
    def generated_split_path(self) -> str:
        """Where a split generated on first use is kept: never a published file's name, so that it cannot
        pass for it later (``split_zhou_X.json`` -> ``split_generated_X.json``; a reader's own split
        format such as Digits' keeps its name)."""
        name = self.split_filename or ""
        return os.path.join(self.dataset_dir, name.replace("split_zhou_", "split_generated_", 1))

    def read_splits(self) -> tuple[list[Datum], list[Datum] | None, list[Datum]]:
        """The published split file when present, else one generated earlier, else a new generated split."""
        for path in (self.split_path, self.generated_split_path):
            if os.path.exists(path):
                self.require(self.split_prefix, "image folder", is_dir=True)
                self.split_used = path
                if path != self.split_path:
                    print(f"Using a split generated on first use, not the published {self.split_filename}")
                return read_split(path, self.split_prefix)
        train, val, test = self.create_split()
        self.split_used = self.generated_split_path
        save_split(train, val, test, self.split_used, self.split_prefix)
        return train, val, test

    def create_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        """Build the split from the raw data (only used when the split file is absent)."""
        raise NotImplementedError

    @property
    def no_split_hint(self) -> str:
        """Explains, in a missing-raw-file error, that the split file was looked for first."""
        return f"(The split file {self.split_path} is absent too, so the split had to be generated.)"


@contextmanager
def folder_written_atomically(path: str) -> Iterator[str]:
    """A temporary sibling of ``path`` to fill; it becomes ``path`` when the block ends without error.

    Generated datasets (Digits, ToyShapes) write their images this way, so an interrupted run leaves
    nothing half-written and concurrent runs cannot mix their files: when another run created ``path``
    first, its folder is kept and the error of this one is dropped.
    """
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".images-", dir=parent)
    try:
        yield tmp_dir
        os.rename(tmp_dir, path)
    except OSError:
        if not os.path.isdir(path):
            raise
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir)
