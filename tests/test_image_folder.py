"""A user's own image folder (configs/datasets/image_folder.yaml): split file, base/new, CSV, class names,
bad input, output folders per image folder, the tables tool, and every trainer's base2new_train.sh on it.

The every-trainer test starts one train.py per trainer (about 10 CPU-seconds each) and is marked
``image_folder_scripts``; the rest runs in a few seconds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import datasets  # noqa: F401  (registers the readers)
import train
from engine.config import get_cfg_default
from engine.data.datasets import build_dataset
from engine.engine import TRAINER_REGISTRY
from tests.test_all_trainers import ACCURACY, FAKE_PYTHON, ROOT, argv, flag, run_script, smoke_setup
from tools import layout, tables

CLASSES = ("black_cat", "blue_bell", "green_leaf", "red_rose")
SPLIT = "split_image_folder_50-20-30_seed0.json"


def write_images(folder: Path, n: int, start: int = 0) -> None:
    rng = np.random.default_rng(start)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture
def flowers(tmp_path: Path) -> Path:
    """``tmp/data/flowers/<class>/<0..9>.png``: four classes of ten images."""
    for name in CLASSES:
        write_images(tmp_path / "data" / "flowers" / name, 10)
    return tmp_path / "data" / "flowers"


def load(root: Path, *opts: str, **keys: object):
    cfg = get_cfg_default()
    train.extend_cfg(cfg)
    cfg.merge_from_file(str(ROOT / "configs/datasets/image_folder.yaml"))
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = 2
    cfg.DATASET.CHECK_IMAGES = False
    for key, value in keys.items():
        setattr(cfg.DATASET, key, value)
    cfg.merge_from_list(list(opts))
    return build_dataset(cfg)


def items(data) -> set[tuple[str, int, str]]:
    return {(d.impath, d.label, d.classname) for d in data}


def test_split_is_written_once_stratified_and_reused(flowers: Path) -> None:
    first = load(flowers.parent, IMAGE_FOLDER="flowers", NUM_SHOTS=0)
    split_file = flowers / SPLIT
    saved = json.loads(split_file.read_text())
    assert [len(saved[k]) for k in ("train", "val", "test")] == [20, 8, 12]  # 5/2/3 of each class's 10
    for key, per_class in (("train", 5), ("val", 2), ("test", 3)):
        assert sorted(e[2] for e in saved[key]) == sorted([c.replace("_", " ") for c in CLASSES] * per_class)
    assert first.classnames == ["black cat", "blue bell", "green leaf", "red rose"]
    before = split_file.read_bytes()
    again = load(flowers.parent, IMAGE_FOLDER=str(flowers), NUM_SHOTS=0)  # absolute path: the same data
    assert split_file.read_bytes() == before
    for a, b in ((first.train_x, again.train_x), (first.val, again.val), (first.test, again.test)):
        assert [(d.impath, d.label) for d in a] == [(d.impath, d.label) for d in b]
    assert sorted(p.name for p in flowers.iterdir()) == [*CLASSES, SPLIT]  # nothing else written, no cache
    # another seed or other fractions make another split file beside it; few-shot caches are per split
    other = load(flowers.parent, "DATASET.IMAGE_FOLDER_SPLIT", "[0.6,0.2,0.2]", IMAGE_FOLDER="flowers")
    assert len(other.train_x) == 8 and (flowers / "split_image_folder_60-20-20_seed0.json").is_file()
    assert (flowers / "split_fewshot_image_folder_60-20-20_seed0").is_dir()


def test_base_and_new_halves_follow_sorted_class_folders(flowers: Path) -> None:
    every = load(flowers.parent, IMAGE_FOLDER="flowers", NUM_SHOTS=0)
    base = load(flowers.parent, IMAGE_FOLDER="flowers", NUM_SHOTS=0, SUBSAMPLE_CLASSES="base")
    new = load(flowers.parent, IMAGE_FOLDER="flowers", NUM_SHOTS=0, SUBSAMPLE_CLASSES="new")
    assert base.classnames == ["black cat", "blue bell"] and new.classnames == ["green leaf", "red rose"]
    assert {d.label for d in new.test} == {0, 1}  # relabelled from 0, as CoOp does
    assert {d.impath for d in base.test} | {d.impath for d in new.test} == {d.impath for d in every.test}
    assert len(load(flowers.parent, IMAGE_FOLDER="flowers", SUBSAMPLE_CLASSES="base").train_x) == 4  # 2 shots


def test_changed_folder_is_refused_until_the_split_is_deleted(flowers: Path) -> None:
    load(flowers.parent, IMAGE_FOLDER="flowers")
    write_images(flowers / "white_lily", 10)
    with pytest.raises(ValueError, match=rf"no longer matches its split .*{SPLIT}: 10 new .*'white lily'"):
        load(flowers.parent, IMAGE_FOLDER="flowers")
    (flowers / "white_lily").rename(flowers.parent / "lily")
    (flowers / "red_rose" / "3.png").unlink()
    with pytest.raises(ValueError, match=r"1 gone \(e\.g\. red_rose/3\.png"):
        load(flowers.parent, IMAGE_FOLDER="flowers")
    (flowers / SPLIT).unlink()
    assert (
        len(load(flowers.parent, IMAGE_FOLDER="flowers", NUM_SHOTS=0).train_x) == 19
    )  # 5+5+5+round(4.5), which is 4


def test_too_few_images_for_the_shots_names_the_class_and_counts(flowers: Path) -> None:
    write_images(flowers / "tiny_moss", 4)  # 2 train, 1 val, 1 test
    with pytest.raises(
        ValueError, match=r"DATASET.NUM_SHOTS 3: class 'tiny moss' has only 2 train images in "
    ):
        load(flowers.parent, IMAGE_FOLDER="flowers", NUM_SHOTS=3)
    with pytest.raises(
        ValueError, match=r"DATASET.NUM_SHOTS 16: class 'tiny moss' has only 2 .*\(5 classes short\)"
    ):
        load(flowers.parent, IMAGE_FOLDER="flowers", NUM_SHOTS=16)
    write_images(flowers / "zz_rare", 3)
    (flowers / SPLIT).unlink()
    with pytest.raises(
        ValueError, match=r"class 'zz rare' has 3 images, too few for a 50%/20%/30% train/val/test"
    ):
        load(flowers.parent, IMAGE_FOLDER="flowers")


def test_classnames_txt_names_the_classes(flowers: Path) -> None:
    lines = ["# folder  class name", "black_cat a black cat", "blue_bell bluebell", "green_leaf leaf"]
    (flowers / "classnames.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError, match=r"classnames.txt: no line for class 'red_rose' \(1 classes missing\)"
    ):
        load(flowers.parent, IMAGE_FOLDER="flowers")
    (flowers / "classnames.txt").write_text("\n".join([*lines, "red_rose rose", "violet violet"]) + "\n")
    with pytest.raises(ValueError, match=r"classnames.txt line 6: expected '<a class folder> <class name>'"):
        load(flowers.parent, IMAGE_FOLDER="flowers")
    (flowers / "classnames.txt").write_text("\n".join([*lines, "red_rose rose"]) + "\n")
    data = load(flowers.parent, IMAGE_FOLDER="flowers")
    assert data.classnames == ["a black cat", "bluebell", "leaf", "rose"]
    (flowers / "classnames.txt").write_text("\n".join([*lines, "red_rose wild rose"]) + "\n")
    with pytest.raises(ValueError, match=r"10 new \(e\.g\. red_rose/\S+ as 'wild rose'\); 10 gone"):
        load(flowers.parent, IMAGE_FOLDER="flowers")  # a renamed class changes the split's items


def test_csv_image_list(flowers: Path) -> None:
    rows = ["path,label"] + [f"flowers/{c}/{i}.png,{c.split('_')[1]}" for c in CLASSES for i in range(10)]
    csv_file = flowers.parent / "pets.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    data = load(flowers.parent, IMAGE_LIST="pets.csv", NUM_SHOTS=0)
    assert data.classnames == ["bell", "cat", "leaf", "rose"]  # labels sorted
    assert (flowers.parent / "split_image_list_pets_50-20-30_seed0.json").is_file()
    assert len(data.train_x) == 20 and data.train_x[0].impath.startswith(str(flowers) + "/")
    for bad, message in (
        ("flowers/black_cat/99.png,cat", r"pets.csv line 2: missing image .*99.png"),
        ("flowers/black_cat/0.png,", r"pets.csv line 2: expected 'path,label' with a non-empty label"),
        ("/etc/hosts,cat", r"pets.csv line 2: '/etc/hosts' must be a path relative to the CSV's folder"),
        ("../x.png,cat", r"pets.csv line 2: '../x.png' must be a path relative"),
        (
            "flowers/black_cat/1.png,cat",
            r"pets.csv line 3: flowers/black_cat/1.png is listed twice \(first on line 2\)",
        ),
    ):
        csv_file.write_text("\n".join([rows[0], bad, *rows[2:]]) + "\n")
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            load(flowers.parent, IMAGE_LIST="pets.csv")
    (flowers / "notes.txt").write_text("x")
    csv_file.write_text("flowers/notes.txt,cat\n")
    with pytest.raises(ValueError, match=r"line 1: .*notes.txt is not an image file"):
        load(flowers.parent, IMAGE_LIST="pets.csv")


def test_bad_folders_give_one_line_errors_naming_the_path(tmp_path: Path, flowers: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"DATASET.IMAGE_FOLDER .*/nowhere: no such folder"):
        load(tmp_path, IMAGE_FOLDER="nowhere")
    with pytest.raises(
        ValueError, match=r"needs exactly one of DATASET.IMAGE_FOLDER .* and DATASET.IMAGE_LIST"
    ):
        load(tmp_path)
    with pytest.raises(
        ValueError, match=r"DATASET.IMAGE_FOLDER_SPLIT must be three positive .* got \[0.5, 0.5\]"
    ):
        load(flowers.parent, "DATASET.IMAGE_FOLDER_SPLIT", "[0.5,0.5]", IMAGE_FOLDER="flowers")
    (flowers / "empty_class").mkdir()
    with pytest.raises(ValueError, match=r"flowers/empty_class: empty class folder"):
        load(flowers.parent, IMAGE_FOLDER="flowers")
    (flowers / "empty_class" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"flowers/empty_class/readme.md: not an image file \(expected .jpg"):
        load(flowers.parent, IMAGE_FOLDER="flowers")
    (flowers / "empty_class" / "readme.md").rename(flowers / "empty_class" / ".DS_Store")  # hidden: skipped
    with pytest.raises(ValueError, match=r"empty class folder"):
        load(flowers.parent, IMAGE_FOLDER="flowers")
    write_images(flowers / "empty_class" / "nested" / "deeper", 4)  # subfolders of a class folder are walked
    data = load(flowers.parent, IMAGE_FOLDER="flowers", NUM_SHOTS=0)
    assert sum(d.classname == "empty class" for d in (*data.train_x, *data.val, *data.test)) == 4
    write_images(flowers.parent / "nothing" / "stray", 1)
    (flowers.parent / "nothing" / "stray" / "0.png").rename(flowers.parent / "nothing" / "0.png")
    with pytest.raises(ValueError, match=r"nothing/0.png: an image outside the class folders"):
        load(flowers.parent, IMAGE_FOLDER="nothing")


def test_train_py_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "train.py", "--root", str(tmp_path), "--dataset-config-file", "configs/datasets/image_folder.yaml",
         "--trainer", "CoOp", "--output-dir", str(tmp_path / "out"), "DATASET.IMAGE_FOLDER", "my_flowers"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"train.py: error: DATASET.IMAGE_FOLDER {tmp_path}/my_flowers: no such folder (expected <class>/<images>)"
    )


def lib_dataset_dir(*args: str, data: str = "/data") -> str:
    return layout.dataset_dir(ROOT / "scripts/lib.sh", *args[:1], args[1:], {"DATA": data})


def test_output_folders_of_two_image_folders_differ() -> None:
    assert lib_dataset_dir("eurosat") == "eurosat"
    mine = lib_dataset_dir("image_folder", "DATASET.IMAGE_FOLDER", "/data/my_flowers")
    assert re.fullmatch(r"image_folder_my_flowers_[0-9a-f]{8}", mine)
    assert lib_dataset_dir("image_folder", "DATASET.IMAGE_FOLDER", "my_flowers/") == mine  # from DATA
    assert lib_dataset_dir("image_folder", "DATASET.IMAGE_FOLDER", "my_flowers", data="/other") != mine
    assert lib_dataset_dir("image_folder", "DATASET.IMAGE_FOLDER", "/elsewhere/my_flowers") != mine
    listed = lib_dataset_dir("image_folder", "DATASET.IMAGE_LIST", "/data/my list.csv")
    assert re.fullmatch(r"image_folder_my_list_[0-9a-f]{8}", listed)


def test_scripts_keep_the_runs_of_two_folders_apart(tmp_path: Path) -> None:
    """Two folders named ``flowers``: train, test and few-shot runs in separate folders, each test loading its own."""
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = {"DATA": str(tmp_path / "data"), "OUTPUT": str(out), "PYTHON": str(fake)}
    for folder in ("a/flowers", "b/flowers"):
        args = ["image_folder", "1", "DATASET.IMAGE_FOLDER", folder]
        for script in ("base2new_train", "base2new_test"):
            run_script(ROOT / f"scripts/coop/{script}.sh", args, env)
        run_script(ROOT / "scripts/coop/fewshot.sh", [*args[:2], "4", *args[2:]], env)
    labels = sorted(p.name for p in (out / "base2new/train_base").iterdir())
    assert len(labels) == 2 and all(
        re.fullmatch(r"image_folder_flowers_[0-9a-f]{8}", name) for name in labels
    )
    assert sorted(p.name for p in (out / "fewshot").iterdir()) == labels
    for label in labels:
        train_dir = out / "base2new/train_base" / label / "shots_16/CoOp/vit_b16_ctxv1/seed1"
        folder = argv(train_dir)[-1]
        assert flag(argv(train_dir), "--dataset-config-file") == "configs/datasets/image_folder.yaml"
        assert label == lib_dataset_dir("image_folder", "DATASET.IMAGE_FOLDER", folder, data=env["DATA"])
        test_args = argv(out / "base2new/test_new" / label / "shots_16/CoOp/vit_b16_ctxv1/seed1")
        assert flag(test_args, "--model-dir") == str(train_dir) and test_args[-1] == folder
    # cross-dataset: train on folder a, evaluate on folder b with SOURCE = a's run folder name
    run_script(
        ROOT / "scripts/coop/xd_train.sh", ["image_folder", "1", "DATASET.IMAGE_FOLDER", "a/flowers"], env
    )
    source = lib_dataset_dir("image_folder", "DATASET.IMAGE_FOLDER", "a/flowers", data=env["DATA"])
    args = ["image_folder", "1", "DATASET.IMAGE_FOLDER", "b/flowers"]
    run_script(ROOT / "scripts/coop/xd_test.sh", args, {**env, "SOURCE": source})
    target = lib_dataset_dir(*args[:1], *args[2:], data=env["DATA"])
    test_args = argv(out / f"evaluation/CoOp/vit_b16_ep50_ctxv1_16shots/{target}/seed1")
    assert flag(test_args, "--model-dir") == str(out / source / "CoOp/vit_b16_ep50_ctxv1_16shots/seed1")


def test_tables_tool_shows_an_image_folder_row(flowers: Path, tmp_path: Path, capsys) -> None:
    """The base, new and all runs of BMIP through its scripts; the table finds them in their folders."""
    out = tmp_path / "out"
    scripts, opts, env, _ = smoke_setup("BMIP", flowers.parent, out)
    opts = [*opts, "DATASET.IMAGE_FOLDER", "flowers"]
    run_script(scripts / "base2new_train.sh", ["image_folder", "1", *opts], env)
    run_script(scripts / "base2new_test.sh", ["image_folder", "1", *opts], env)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA", str(flowers.parent))
        rc = tables.main(["--table", "1", "--methods", "BMIP", "--datasets", "image_folder", "--seeds", "1",
                          "--output", str(out), "--opts", *opts])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("BMIP") and " image_folder " in line)
    label = lib_dataset_dir("image_folder", "DATASET.IMAGE_FOLDER", "flowers", data=str(flowers.parent))
    logs = {sub: layout.place(out / f"base2new/{sub}/{label}/shots_1/BMIP/BMIP_ctx2_dp9_lr2/seed1", opts) / "log.txt"
            for sub in ("train_base", "test_new")}  # fmt: skip
    base, new = (float(ACCURACY.findall(logs[s].read_text())[-1].split()[-1][:-1]) for s in logs)
    assert row.split()[2::3][:2] == [f"{base:.2f}", f"{new:.2f}"], text
    assert "missing" not in text


@pytest.mark.image_folder_scripts
@pytest.mark.parametrize("name", TRAINER_REGISTRY.registered_names())
def test_every_trainer_trains_on_an_image_folder(name: str, flowers: Path, tmp_path: Path) -> None:
    scripts, opts, env, _ = smoke_setup(name, flowers.parent, tmp_path / "out")
    opts = [*opts, "DATASET.IMAGE_FOLDER", "flowers"]
    key = {"CoPrompt": "CoPrompt", "CoPrompt_BMIP": "CoPrompt", "HiCroPL": "HICROPL"}.get(name)
    if key:  # class descriptions: no folder has them, the user writes the file
        descriptions = {c.replace("_", " "): [f"a {c} seen up close.", f"a small {c}."] for c in CLASSES}
        (tmp_path / "descriptions.json").write_text(json.dumps(descriptions))
        opts += [f"TRAINER.{key}.DESCRIPTION_FILE", str(tmp_path / "descriptions.json")]
    run_script(scripts / "base2new_train.sh", ["image_folder", "1", *opts], env)
    log = next(
        (tmp_path / "out/base2new/train_base").glob(f"image_folder_flowers_*/shots_1/{name}/*/seed1+overrides-*/log.txt")
    )
    text = log.read_text()
    assert re.search(r"# classes\s+2\b", text) and ACCURACY.search(text), text[-2000:]
