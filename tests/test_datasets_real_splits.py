"""The readers parse every real CoOp split file: sizes, label spaces, class names, base/new halves.

Dassl's ``Datum`` requires each listed image to exist, so each split's paths are created as empty files in a
temporary root (the images are never opened here).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from test_datasets import make_cfg  # one config builder for the dataset tests

import datasets  # noqa: F401  (registers the readers)
from engine.data.datasets import DATASET_REGISTRY

# name -> (folder, image folder, train/val/test sizes, classes, base classes, label-0 name, last name)
REAL_SPLITS = {
    "Caltech101": ("caltech-101", "101_ObjectCategories", (4128, 1649, 2465), 100, 50, "face", "yin_yang"),
    "DescribableTextures": ("dtd", "images", (2820, 1128, 1692), 47, 24, "banded", "zigzagged"),
    "EuroSAT": ("eurosat", "2750", (13500, 5400, 8100), 10, 5, "Annual Crop Land", "Sea or Lake"),
    "OxfordPets": ("oxford_pets", "images", (2944, 736, 3669), 37, 19, "abyssinian", "yorkshire_terrier"),
}


@pytest.fixture(scope="module", params=sorted(REAL_SPLITS))
def real_split(request, tmp_path_factory, split_files):
    """(name, root, parsed split JSON) with every listed path present as an empty file."""
    name = request.param
    folder, image_folder = REAL_SPLITS[name][:2]
    root = tmp_path_factory.mktemp(name)
    split_file = split_files / f"split_zhou_{name}.json"
    (root / folder).mkdir()
    shutil.copy(split_file, root / folder / split_file.name)
    split = json.loads(split_file.read_text())
    image_dir = root / folder / image_folder
    for entries in split.values():
        for relpath, _, _ in entries:
            path = image_dir / relpath
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True)
            open(path, "x").close()
    return name, root, split


def test_all_classes_match_the_split_file(real_split):
    name, root, split = real_split
    _, image_folder, sizes, n_classes, _, first, last = REAL_SPLITS[name]
    ds = DATASET_REGISTRY.get(name)(make_cfg(name, root))
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == sizes
    assert ds.num_classes == n_classes == len(ds.classnames)
    assert ds.classnames[0] == first and ds.classnames[-1] == last
    expected_names = {label: cname for _, label, cname in split["train"]}
    assert ds.lab2cname == expected_names
    # Order and paths are the file's, joined to the image folder.
    rel, label, cname = split["test"][17]
    item = ds.test[17]
    assert item.impath == os.path.join(ds.dataset_dir, image_folder, rel)
    assert (item.label, item.classname) == (label, cname)


def test_base_and_new_halves(real_split):
    name, root, split = real_split
    n_classes, n_base = REAL_SPLITS[name][3], REAL_SPLITS[name][4]
    all_names = [c for _, c in sorted({(lab, c) for _, lab, c in split["train"]})]
    counts = {key: {} for key in split}
    for key, entries in split.items():
        for _, label, _ in entries:
            counts[key][label] = counts[key].get(label, 0) + 1

    for mode, labels in (("base", range(n_base)), ("new", range(n_base, n_classes))):
        ds = DATASET_REGISTRY.get(name)(make_cfg(name, root, subsample=mode))
        assert ds.classnames == [all_names[y] for y in labels]
        assert ds.num_classes == len(labels)
        assert sorted({item.label for item in ds.test}) == list(range(len(labels)))
        for key, data in (("train", ds.train_x), ("val", ds.val), ("test", ds.test)):
            assert len(data) == sum(counts[key][y] for y in labels)


def test_few_shot_on_a_real_split(real_split):
    name, root, _ = real_split
    n_classes = REAL_SPLITS[name][3]
    ds = DATASET_REGISTRY.get(name)(make_cfg(name, root, shots=2, seed=3))
    assert len(ds.train_x) == 2 * n_classes and len(ds.val) == 2 * n_classes
    assert len(ds.test) == REAL_SPLITS[name][2][2]
    assert (root / REAL_SPLITS[name][0] / "split_fewshot" / "shot_2-seed_3.pkl").is_file()
