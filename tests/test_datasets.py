"""Dataset readers on tiny synthetic trees: every layout end to end, few-shot, caches, Digits, bad input."""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import random
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

import datasets  # noqa: F401  (registers the readers)
from datasets.common import (
    DASSL_DATUM_MODULE,
    DatasetLayoutError,
    ForeignPickleError,
    load_datum_pickle,
    read_and_split_data,
    read_split,
    save_datum_pickle,
    subsample_classes,
)
from engine.config import get_cfg_default
from engine.data import DataManager, DatasetWrapper
from engine.data.datasets import DATASET_REGISTRY, Datum

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "datasets"


def make_cfg(name: str, root: Path | str, subsample: str = "all", shots: int = -1, seed: int = 1):
    cfg = get_cfg_default()
    if "SUBSAMPLE_CLASSES" not in cfg.DATASET:
        cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    cfg.DATASET.NAME = name
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.DATASET.NUM_SHOTS = shots
    cfg.SEED = seed
    cfg.VERBOSE = False
    cfg.INPUT.SIZE = (16, 16)
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 8
    return cfg


def build(name: str, root: Path | str, **kw):
    return DATASET_REGISTRY.get(name)(make_cfg(name, root, **kw))


def image(path: Path, value: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), (value % 256, 40, 90)).save(
        path, format="PNG" if path.suffix == ".png" else "JPEG"
    )
    return str(path)


def images(folder: Path, stem: str, n: int, ext: str = ".jpg") -> list[str]:
    return [image(folder / f"{stem}{i}{ext}", i * 30) for i in range(1, n + 1)]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --------------------------------------------------------------------------------------- synthetic layouts
# Each builder writes one dataset's raw layout under ``root`` and returns
# (class names in label order, (n_train, n_val, n_test)) as the official reader derives them.


def tree_imagenet(root: Path):
    d = root / "imagenet"
    write(d / "classnames.txt", "n01 tench\nn02 goldfish\nn03 great white shark\n")
    for wnid in ("n02", "n01", "n03"):
        images(d / "images" / "train" / wnid, "tr", 3)
        images(d / "images" / "val" / wnid, "va", 2)
    return ["tench", "goldfish", "great white shark"], (9, 6, 6)


def tree_caltech(root: Path):
    d = root / "caltech-101" / "101_ObjectCategories"
    for cat in ("airplanes", "Faces", "Faces_easy", "BACKGROUND_Google", "yin_yang"):
        images(d / cat, "image_", 5)
    return ["face", "airplane", "yin_yang"], (6, 3, 6)


def tree_pets(root: Path):
    d = root / "oxford_pets"
    lines = {"trainval": [], "test": []}
    for cid, breed in ((1, "Abyssinian"), (2, "american_bulldog")):
        for i in range(1, 8):
            image(d / "images" / f"{breed}_{i}.jpg", i)
            lines["trainval" if i <= 5 else "test"].append(f"{breed}_{i} {cid} 1 {cid}")
    for split, entries in lines.items():
        write(d / "annotations" / f"{split}.txt", "\n".join(entries) + "\n")
    return ["abyssinian", "american_bulldog"], (8, 2, 4)


def tree_cars(root: Path):
    d = root / "stanford_cars"
    names = np.empty((1, 2), dtype=object)
    names[0, 0], names[0, 1] = "AM General Hummer SUV 2000", "Tesla Model S Sedan 2012"
    (d / "devkit").mkdir(parents=True)
    savemat(d / "devkit" / "cars_meta.mat", {"class_names": names})

    def annos(folder: str, labels: list[int]) -> dict:
        rec = np.zeros((1, len(labels)), dtype=[("fname", object), ("class", object)])
        for i, label in enumerate(labels):
            fname = f"{folder[-4:]}{i:05d}.jpg"
            image(d / folder / fname, i)
            rec[0, i] = (fname, np.array([[label]], dtype=np.uint8))
        return {"annotations": rec}

    savemat(d / "devkit" / "cars_train_annos.mat", annos("cars_train", [1, 2] * 5))
    savemat(d / "cars_test_annos_withlabels.mat", annos("cars_test", [2, 1, 2]))
    return ["2000 AM General Hummer SUV", "2012 Tesla Model S Sedan"], (8, 2, 3)


def tree_flowers(root: Path):
    d = root / "oxford_flowers"
    labels = [2, 1] * 5
    for i in range(len(labels)):
        image(d / "jpg" / f"image_{i + 1:05d}.jpg", i)
    savemat(d / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    write(d / "cat_to_name.json", json.dumps({"1": "pink primrose", "2": "hard-leaved pocket orchid"}))
    return ["pink primrose", "hard-leaved pocket orchid"], (4, 2, 4)


def tree_food(root: Path):
    for cat in ("baby_back_ribs", "apple_pie"):
        images(root / "food-101" / "images" / cat, "x", 5)
    return ["apple_pie", "baby_back_ribs"], (4, 2, 4)


def tree_fgvc(root: Path):
    d = root / "fgvc_aircraft"
    variants = ["707-320", "Cessna 172", "A300B4"]
    write(d / "variants.txt", "\n".join(variants) + "\n")
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        lines = []
        for label, variant in enumerate(variants):
            for i in range(n):
                imid = f"{split[:2]}{label}{i}"
                image(d / "images" / f"{imid}.jpg", i)
                lines.append(f"{imid} {variant}")
        write(d / f"images_variant_{split}.txt", "\n".join(lines) + "\n")
    return variants, (9, 6, 3)


def tree_sun(root: Path):
    d = root / "sun397"
    write(d / "ClassName.txt", "/a/abbey\n/b/bakery/shop\n")
    lines = {"Training_01": [], "Testing_01": []}
    for folder in ("a/abbey", "b/bakery/shop"):
        for i in range(7):
            image(d / "SUN397" / folder / f"sun_{i}.jpg", i)
            lines["Training_01" if i < 5 else "Testing_01"].append(f"/{folder}/sun_{i}.jpg")
    for name, entries in lines.items():
        write(d / f"{name}.txt", "\n".join(entries) + "\n")
    return ["abbey", "shop bakery"], (8, 2, 4)


def tree_dtd(root: Path):
    for cat in ("blotchy", "banded"):
        images(root / "dtd" / "images" / cat, f"{cat}_", 5)
    return ["banded", "blotchy"], (4, 2, 4)


def tree_eurosat(root: Path):
    from datasets.eurosat import NEW_CNAMES  # every class folder: a missing or extra one is an error

    for cat in NEW_CNAMES:
        images(root / "eurosat" / "2750" / cat, f"{cat}_", 5)
    return [NEW_CNAMES[c] for c in sorted(NEW_CNAMES)], (20, 10, 20)


def tree_ucf(root: Path):
    d = root / "ucf101"
    write(d / "ucfTrainTestlist" / "classInd.txt", "1 ApplyEyeMakeup\n2 Basketball\n")
    lists = {"trainlist01": [], "testlist01": []}
    for label, (action, folder) in enumerate(
        (("ApplyEyeMakeup", "Apply_Eye_Makeup"), ("Basketball", "Basketball"))
    ):
        for g in range(1, 8):
            video = f"v_{action}_g{g:02d}_c01"
            image(d / "UCF-101-midframes" / folder / f"{video}.jpg", g)
            if g <= 5:
                lists["trainlist01"].append(f"{action}/{video}.avi {label + 1}")
            else:
                lists["testlist01"].append(f"{action}/{video}.avi")
    for name, entries in lists.items():
        write(d / "ucfTrainTestlist" / f"{name}.txt", "\n".join(entries) + "\n")
    return ["Apply_Eye_Makeup", "Basketball"], (8, 2, 4)


def tree_imagenetv2(root: Path):
    d = root / "imagenetv2"
    write(d / "classnames.txt", "n03 great white shark\nn01 tench\n")
    for i in range(2):
        images(d / "imagenetv2-matched-frequency-format-val" / str(i), "im", 2, ".jpeg")
    return ["great white shark", "tench"], (4, None, 4)


def tree_sketch(root: Path):
    d = root / "imagenet-sketch"
    write(d / "classnames.txt", "n03 great white shark\nn01 tench\nn02 goldfish\n")
    for wnid in ("n03", "n01", "n02"):
        images(d / "images" / wnid, "sk", 2)
    return ["tench", "goldfish", "great white shark"], (6, None, 6)


def tree_variant_200(folder: str, image_folder: str):
    def tree(root: Path):
        d = root / folder
        write(d / "classnames.txt", "n01 tench\nn02 goldfish\nn03 great white shark\n")
        write(d / image_folder / "README.txt", "not a class\n")
        for wnid in ("n03", "n02"):
            images(d / image_folder / wnid, "x", 3)
        return ["goldfish", "great white shark"], (6, None, 6)

    return tree


LAYOUTS = {
    "ImageNet": tree_imagenet,
    "Caltech101": tree_caltech,
    "OxfordPets": tree_pets,
    "StanfordCars": tree_cars,
    "OxfordFlowers": tree_flowers,
    "Food101": tree_food,
    "FGVCAircraft": tree_fgvc,
    "SUN397": tree_sun,
    "DescribableTextures": tree_dtd,
    "EuroSAT": tree_eurosat,
    "UCF101": tree_ucf,
    "ImageNetV2": tree_imagenetv2,
    "ImageNetSketch": tree_sketch,
    "ImageNetA": tree_variant_200("imagenet-adversarial", "imagenet-a"),
    "ImageNetR": tree_variant_200("imagenet-rendition", "imagenet-r"),
}


def test_every_registered_dataset_has_a_layout_test_and_a_config():
    registered = set(DATASET_REGISTRY.registered_names())
    assert registered == set(LAYOUTS) | {"Digits", "ToyShapes", "ToyShapesShifted", "ImageFolder"}  # test_toy_clip.py, test_image_folder.py
    names = {}
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        cfg = get_cfg_default()
        cfg.merge_from_file(str(path))
        names[cfg.DATASET.NAME] = path.name
    assert set(names) == registered


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_end_to_end_through_the_data_loader(name, tmp_path):
    classnames, (n_train, n_val, n_test) = LAYOUTS[name](tmp_path)
    random.seed(0)
    dm = DataManager(make_cfg(name, tmp_path))
    ds = dm.dataset
    assert ds.classnames == classnames
    assert dm.num_classes == len(classnames)
    assert (len(ds.train_x), len(ds.test)) == (n_train, n_test)
    if n_val is None:  # test-only variants
        assert ds.val is None and ds.train_x is ds.test
    else:
        assert len(ds.val) == n_val
    for loader in (dm.train_loader_x, dm.test_loader):
        batch = next(iter(loader))
        assert batch["img"].shape[1:] == (3, 16, 16)
        for label, impath in zip(batch["label"].tolist(), batch["impath"]):
            assert 0 <= label < len(classnames) and os.path.isfile(impath)
    seen = [(d.label, d.classname) for d in ds.test]
    assert sorted(set(seen)) == list(enumerate(classnames))


SPLIT_WRITERS = {  # readers that generate a split file when it is absent (never under the published name)
    "Caltech101": "split_generated_Caltech101.json",
    "OxfordPets": "split_generated_OxfordPets.json",
    "StanfordCars": "split_generated_StanfordCars.json",
    "OxfordFlowers": "split_generated_OxfordFlowers.json",
    "Food101": "split_generated_Food101.json",
    "SUN397": "split_generated_SUN397.json",
    "DescribableTextures": "split_generated_DescribableTextures.json",
    "EuroSAT": "split_generated_EuroSAT.json",
    "UCF101": "split_generated_UCF101.json",
}


@pytest.mark.parametrize("name", sorted(SPLIT_WRITERS))
def test_generated_split_is_saved_and_read_back(name, tmp_path):
    LAYOUTS[name](tmp_path)
    random.seed(5)
    first = build(name, tmp_path)
    split_file = Path(first.dataset_dir) / SPLIT_WRITERS[name]
    saved = json.loads(split_file.read_text())
    assert first.split_used == str(split_file) and not Path(first.split_path).exists()
    assert {k: len(v) for k, v in saved.items()} == {
        "train": len(first.train_x),
        "val": len(first.val),
        "test": len(first.test),
    }
    assert all(not rel.startswith("/") for rel, _, _ in saved["train"])
    random.seed(99)  # reading the saved split must not depend on the RNG
    second = build(name, tmp_path)
    for a, b in ((first.train_x, second.train_x), (first.val, second.val), (first.test, second.test)):
        assert [(d.impath, d.label, d.classname) for d in a] == [(d.impath, d.label, d.classname) for d in b]


def test_stanford_cars_split_paths_are_relative_to_the_dataset_folder(tmp_path):
    tree_cars(tmp_path)
    build("StanfordCars", tmp_path)
    saved = json.loads((tmp_path / "stanford_cars" / "split_generated_StanfordCars.json").read_text())
    assert {rel.split("/")[0] for rel, _, _ in saved["test"]} == {"cars_test"}


def test_imagenet_val_is_test_and_preprocessed_cache_is_reused(tmp_path):
    tree_imagenet(tmp_path)
    ds = build("ImageNet", tmp_path, subsample="new")
    assert ds.val is ds.test and ds.classnames == ["great white shark"]  # 3 classes: base 2, new 1
    assert (tmp_path / "imagenet" / "preprocessed.pkl").is_file()
    (tmp_path / "imagenet" / "classnames.txt").unlink()  # from now on preprocessed.pkl replaces the listing
    assert len(build("ImageNet", tmp_path).train_x) == 9
    fewshot = build("ImageNet", tmp_path, shots=1, seed=4)
    assert len(fewshot.train_x) == 3 and len(fewshot.test) == 6
    cached = load_datum_pickle(str(tmp_path / "imagenet" / "split_fewshot" / "shot_1-seed_4.pkl"), ("train",))
    assert sorted(cached) == ["train"]
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "imagenet").rename(moved / "imagenet")  # the cache's absolute paths now point nowhere
    with pytest.raises(FileNotFoundError, match=r"preprocessed\.pkl entry train\[0\] names a missing image"):
        build("ImageNet", moved)


# ------------------------------------------------------------------------------------ subsample and few-shot


def test_subsample_classes_base_new_all(tmp_path):
    labels = [7, 0, 9, 2, 5, 2]  # 5 distinct labels: base = 0, 2, 5 (ceil(5/2)); new = 7, 9
    train = [
        Datum(image(tmp_path / f"{i}.png"), label=y, domain=3, classname=f"c{y}")
        for i, y in enumerate(labels)
    ]
    test = [Datum(d.impath, label=d.label, classname=d.classname) for d in train]
    assert subsample_classes(train, test, subsample="all") == (train, test)
    base_train, base_test = subsample_classes(train, test, subsample="base")
    assert [(d.label, d.classname) for d in base_train] == [(0, "c0"), (1, "c2"), (2, "c5"), (1, "c2")]
    assert all(d.domain == 0 for d in base_train)
    new_train, new_test = subsample_classes(train, test, subsample="new")
    assert [(d.label, d.classname) for d in new_train] == [(0, "c7"), (1, "c9")]
    assert [(d.label, d.classname) for d in new_test] == [(0, "c7"), (1, "c9")]
    with pytest.raises(ValueError, match="subsample must be one of"):
        subsample_classes(train, subsample="half")
    # A class with test images but none in train would shift the halves (CoOp splits train's labels): refused.
    test.append(Datum(image(tmp_path / "t.png"), label=11, classname="c11"))
    assert subsample_classes(train, test, subsample="all") == (train, test)
    with pytest.raises(ValueError) as error:
        subsample_classes(train, test, subsample="new")
    assert str(error.value) == (
        "DATASET.SUBSAMPLE_CLASSES new: class(es) 11 (c11) have images in val/test but none in the train split, "
        "so the base/new halves would shift; check the split file or the image folders"
    )


def expected_fewshot(items, n, seed):
    """Dassl's rule written out: per label in first-appearance order, random.sample of n."""
    random.seed(seed)
    groups = {}
    for d in items[0]:
        groups.setdefault(d.label, []).append(d)
    picked = [s.impath for g in groups.values() for s in random.sample(g, n)]
    groups = {}
    for d in items[1]:
        groups.setdefault(d.label, []).append(d)
    return picked, [s.impath for g in groups.values() for s in random.sample(g, min(n, 4))]


@pytest.fixture()
def dtd_big(tmp_path):
    for cat in ("banded", "blotchy", "braided"):
        images(tmp_path / "dtd" / "images" / cat, f"{cat}_", 20)
    random.seed(0)
    full = build("DescribableTextures", tmp_path)  # writes the split file
    return tmp_path, full


def test_few_shot_matches_dassl_and_is_deterministic(dtd_big):
    root, full = dtd_big
    cache = root / "dtd" / "split_fewshot" / "shot_5-seed_1.pkl"
    random.seed(1)
    a = build("DescribableTextures", root, shots=5, seed=1)
    assert ([d.impath for d in a.train_x], [d.impath for d in a.val]) == expected_fewshot(
        (full.train_x, full.val), 5, seed=1
    )
    assert len(a.train_x) == 15 and len(a.val) == 12 and len(a.test) == len(full.test)
    cache.unlink()
    random.seed(1)
    b = build("DescribableTextures", root, shots=5, seed=1)
    assert [d.impath for d in b.train_x] == [d.impath for d in a.train_x]
    random.seed(2)
    c = build("DescribableTextures", root, shots=5, seed=2)
    assert [d.impath for d in c.train_x] != [d.impath for d in a.train_x]


@pytest.fixture()
def fake_dassl(monkeypatch):
    """A stand-in ``dassl`` package whose ``Datum`` plays real Dassl's class; returns that class."""

    class Datum:
        pass

    Datum.__module__, Datum.__qualname__ = DASSL_DATUM_MODULE, "Datum"
    for name in ("dassl", "dassl.data", "dassl.data.datasets", DASSL_DATUM_MODULE):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules[DASSL_DATUM_MODULE].Datum = Datum
    return Datum


def test_few_shot_cache_round_trip_and_dassl_class_path(dtd_big, fake_dassl):
    root, _ = dtd_big
    random.seed(1)
    made = build("DescribableTextures", root, shots=2, seed=1, subsample="base")
    cache = root / "dtd" / "split_fewshot" / "shot_2-seed_1.pkl"
    raw = cache.read_bytes()
    strings = [arg for op, arg, _ in pickletools.genops(raw) if isinstance(arg, str)]
    assert DASSL_DATUM_MODULE in strings and "engine.data.datasets.base_dataset" not in strings
    random.seed(12345)  # another RNG state: the cache, not a new draw, must be used
    again = build("DescribableTextures", root, shots=2, seed=1, subsample="base")
    assert [(d.impath, d.label) for d in again.train_x] == [(d.impath, d.label) for d in made.train_x]
    # What real Dassl's plain pickle.load sees: its own Datum class, with Dassl's attribute names.
    first = pickle.loads(raw)["train"][0]
    assert type(first) is fake_dassl
    assert first._impath.startswith(str(root)) and isinstance(first._label, int)


def test_cache_written_by_dassl_loads_as_our_datum(dtd_big, fake_dassl, monkeypatch):
    root, full = dtd_big

    def as_dassl(d):
        obj = fake_dassl()
        obj.__dict__.update(_impath=d.impath, _label=d.label, _domain=0, _classname=d.classname)
        return obj

    official = {
        "train": [as_dassl(d) for d in full.train_x[::10]],
        "val": [as_dassl(d) for d in full.val[::8]],
    }
    cache = root / "dtd" / "split_fewshot" / "shot_16-seed_7.pkl"
    cache.parent.mkdir(exist_ok=True)
    cache.write_bytes(pickle.dumps(official, protocol=pickle.HIGHEST_PROTOCOL))
    for name in ("dassl", "dassl.data", "dassl.data.datasets", DASSL_DATUM_MODULE):
        monkeypatch.delitem(sys.modules, name)  # our loader must not need the dassl package
    ds = build("DescribableTextures", root, shots=16, seed=7)
    assert all(type(d) is Datum for d in ds.train_x + ds.val)
    assert [d.impath for d in ds.train_x] == [d.impath for d in full.train_x[::10]]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_cache_loader_refuses_foreign_objects_and_damage(tmp_path):
    img = image(tmp_path / "a.png")
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"train": [_Evil()]}))
    with pytest.raises(ForeignPickleError, match=r"evil\.pkl refers to .*system"):
        load_datum_pickle(str(bad), ("train",))
    save_datum_pickle({"train": [Datum(img, label=1, classname="x")]}, str(tmp_path / "ok.pkl"))
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes((tmp_path / "ok.pkl").read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"cut\.pkl"):
        load_datum_pickle(str(truncated), ("train",))
    with pytest.raises(ValueError, match=r"Datum lists under \['train', 'val'\]"):
        load_datum_pickle(str(tmp_path / "ok.pkl"), ("train", "val"))
    os.remove(img)  # a cache made under another root names images that are not here
    with pytest.raises(FileNotFoundError, match=r"ok\.pkl entry train\[0\] names a missing image .*a\.png"):
        load_datum_pickle(str(tmp_path / "ok.pkl"), ("train",))


def test_more_shots_than_images_takes_all_with_a_warning(tmp_path):
    tree_dtd(tmp_path)  # 2 train images per class
    random.seed(0)
    with pytest.warns(UserWarning, match="fewer than NUM_SHOTS=3"):
        ds = build("DescribableTextures", tmp_path, shots=3)
    assert len(ds.train_x) == 4


# ------------------------------------------------------------------------------------------------- Digits


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits_root")
    state = random.getstate()
    build("Digits", root)
    assert random.getstate() == state  # generating the split must not consume the global RNG
    return root


def test_digits_all_base_new(digits_root):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    ds = build("Digits", digits_root)
    assert ds.classnames == names
    assert len(ds.train_x) + len(ds.val) + len(ds.test) == 1797
    assert all(180 * 0.45 < sum(d.label == y for d in ds.train_x) < 180 * 0.55 for y in range(10))
    with Image.open(ds.test[0].impath) as im:
        assert im.size == (32, 32)
    base = build("Digits", digits_root, subsample="base", shots=4, seed=1)
    assert base.classnames == names[:5] and len(base.train_x) == 20 and len(base.val) == 20
    new = build("Digits", digits_root, subsample="new", shots=4, seed=1)
    assert new.classnames == names[5:] and new.num_classes == 5
    assert {d.label for d in new.test} == set(range(5))
    assert {d.classname for d in new.test} == set(names[5:])


def test_digits_split_is_the_same_in_every_root(digits_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "digits").mkdir(parents=True)
    (tmp_path / "data" / "digits" / "images").symlink_to(
        digits_root / "digits" / "images"
    )  # skip re-rendering
    random.seed(123)
    ds = build("Digits", "")  # unset root -> ./data; the split file is drawn afresh here
    assert Path(ds.dataset_dir) == tmp_path / "data" / "digits"
    here = json.loads((tmp_path / "data" / "digits" / "split_Digits.json").read_text())
    there = json.loads((digits_root / "digits" / "split_Digits.json").read_text())
    assert here == there


def test_digits_train_through_the_data_loader(digits_root):
    dm = DataManager(make_cfg("Digits", digits_root, shots=2, subsample="base"))
    batch = next(iter(dm.train_loader_x))
    assert batch["img"].shape == (4, 3, 16, 16) and set(batch["label"].tolist()) <= set(range(5))


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_root_and_dataset_folder(tmp_path):
    with pytest.raises(
        DatasetLayoutError, match=r"DATASET.ROOT .*nowhere is not an existing folder(.|\n)*2750/"
    ):
        build("EuroSAT", tmp_path / "nowhere")
    with pytest.raises(
        DatasetLayoutError, match=r"missing dataset folder .*oxford_flowers(.|\n)*imagelabels\.mat"
    ):
        build("OxfordFlowers", tmp_path)
    with pytest.raises(
        DatasetLayoutError, match=r"missing class-name file .*imagenet-sketch/classnames\.txt"
    ):
        (tmp_path / "imagenet-sketch" / "images").mkdir(parents=True)
        build("ImageNetSketch", tmp_path)


def test_missing_split_file_and_raw_annotations(tmp_path):
    images(tmp_path / "oxford_pets" / "images", "Abyssinian_", 3)
    with pytest.raises(DatasetLayoutError) as err:
        build("OxfordPets", tmp_path)
    msg = str(err.value)
    assert "annotations/trainval.txt" in msg and "split_zhou_OxfordPets.json is absent too" in msg
    (tmp_path / "fgvc_aircraft").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"missing variant list .*fgvc_aircraft/variants\.txt"):
        build("FGVCAircraft", tmp_path)


def test_missing_image_folder_with_a_split_file(tmp_path):
    write(
        tmp_path / "dtd" / "split_zhou_DescribableTextures.json",
        json.dumps({"train": [], "val": [], "test": []}),
    )
    with pytest.raises(DatasetLayoutError, match=r"missing image folder .*dtd/images\.(.|\n)*<category>"):
        build("DescribableTextures", tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"train": [', r"split_zhou_EuroSAT\.json is not valid JSON"),
        ('{"train": [], "test": []}', r"split_zhou_EuroSAT\.json must be a JSON object with lists under"),
        (
            '{"train": [["a.jpg", "x", "c"]], "val": [], "test": []}',
            r"entry train\[0\] must be \[relative_path",
        ),
        ('{"train": [], "val": [["a.jpg", 0]], "test": []}', r"entry val\[0\] must be"),
    ],
)
def test_corrupt_split_file(tmp_path, content, message):
    write(tmp_path / "eurosat" / "split_zhou_EuroSAT.json", content)
    (tmp_path / "eurosat" / "2750").mkdir()
    with pytest.raises(ValueError, match=message):
        build("EuroSAT", tmp_path)


def test_split_naming_a_missing_image(tmp_path):
    image(tmp_path / "eurosat" / "2750" / "Forest" / "Forest_1.jpg")
    split = {
        "train": [["Forest/Forest_1.jpg", 1, "Forest"]],
        "val": [],
        "test": [["Forest/Forest_9.jpg", 1, "Forest"]],
    }
    write(tmp_path / "eurosat" / "split_zhou_EuroSAT.json", json.dumps(split))
    with pytest.raises(
        FileNotFoundError, match=r"entry test\[0\] references a missing image: .*Forest_9\.jpg"
    ):
        build("EuroSAT", tmp_path)


def test_bad_list_lines_name_file_and_line(tmp_path):
    tree_fgvc(tmp_path)
    with open(tmp_path / "fgvc_aircraft" / "images_variant_val.txt", "a") as f:
        f.write("va99 Boeing 999\n")
    with pytest.raises(ValueError, match=r"images_variant_val\.txt:7: variant 'Boeing 999' is not listed"):
        build("FGVCAircraft", tmp_path)


def test_unreadable_image_is_named_by_the_loader(tmp_path):
    tree_dtd(tmp_path)
    random.seed(0)
    ds = build("DescribableTextures", tmp_path)
    Path(ds.test[0].impath).write_bytes(b"not an image")
    cfg = make_cfg("DescribableTextures", tmp_path)
    with pytest.raises(OSError, match=rf"{Path(ds.test[0].impath).name}"):
        DatasetWrapper(cfg, ds.test)[0]


def test_bad_subsample_value_and_test_only_warning(tmp_path):
    tree_dtd(tmp_path)
    with pytest.raises(ValueError, match=r"DATASET.SUBSAMPLE_CLASSES must be one of .*'half'"):
        build("DescribableTextures", tmp_path, subsample="half")
    tree_sketch(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build("ImageNetSketch", tmp_path, subsample="base", shots=16)
    assert any("test-only dataset" in str(w.message) for w in caught)
    assert len(ds.test) == 6


def test_a_class_folder_name_that_is_not_utf8_is_refused(tmp_path):
    images(tmp_path / "images" / "ok", "a", 5)
    bad = os.path.join(os.fsencode(tmp_path / "images"), b"caf\xe9")
    os.makedirs(bad)
    for i in range(5):
        Image.new("RGB", (6, 5)).save(os.path.join(os.fsdecode(bad), f"{i}.jpg"))
    with pytest.raises(ValueError) as error:
        read_and_split_data(str(tmp_path / "images"))
    assert str(error.value) == (
        f"Category folder {bad!r} has a name that is not valid UTF-8; rename it (folder names become the class "
        "names in the text prompts)"
    )


def test_a_folder_that_cannot_be_entered_is_named_instead_of_a_missing_image(tmp_path, monkeypatch):
    """As a non-root user, an unsearchable folder makes every image below it look missing."""
    images(tmp_path / "images" / "Forest", "f", 1)
    write(tmp_path / "split.json", json.dumps({"train": [["Forest/f1.jpg", 0, "Forest"], ["Lake/l1.jpg", 1, "Lake"]],
                                               "val": [], "test": []}))  # fmt: skip
    (tmp_path / "images" / "Lake").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: not str(p).endswith("Lake") and real_access(p, mode))
    with pytest.raises(PermissionError) as error:
        read_split(str(tmp_path / "split.json"), str(tmp_path / "images"))
    assert str(error.value) == (
        f"Split file {tmp_path / 'split.json'} entry train[1] references {tmp_path / 'images/Lake/l1.jpg'}, but "
        f"the folder {tmp_path / 'images/Lake'} is not readable (permission denied)"
    )
