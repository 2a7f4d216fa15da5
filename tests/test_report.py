"""``python -m tools.report`` on a synthetic output tree in the engine's log format.

Three methods (CoOp, MaPLe, BMIP) on two datasets with three seeds, plus MaPLe's cross-dataset runs;
one unfinished run, one run of another config under MaPLe's name, one missing all-classes evaluation.
Every number of report.md is recomputed here from the values written into the logs.
"""

from __future__ import annotations

import base64
import csv
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.results_helpers import write_engine_log
from tools import layout
from tools.metrics import harmonic_mean
from tools.report.__main__ import main
from tools.report.figures import epoch_curves
from tools.tables import PAPER_DIR

ROOT = Path(__file__).resolve().parents[1]
CFGS = {
    "CoOp": ("CoOp", "configs/trainers/CoOp/vit_b16_ctxv1.yaml"),
    "MaPLe": ("MaPLe", "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"),
    "BMIP": ("BMIP", "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml"),
}
DATASETS = {"EuroSAT": "eurosat", "DTD": "dtd"}
# (method, dataset) -> seed -> (base, new, all); chosen so some rows fall inside the paper's spread and some not
VALUES = {
    ("CoOp", "EuroSAT"): {1: (90.0, 62.0, 60.0), 2: (88.0, 66.0, 58.0), 3: (91.0, 60.0, 61.0)},
    ("CoOp", "DTD"): {1: (78.0, 40.0, 47.0), 2: (80.0, 44.0, 49.0), 3: (79.0, 42.0, 48.0)},
    ("MaPLe", "EuroSAT"): {
        1: (94.0, 71.0, 70.0),
        2: (95.0, 73.0, 71.0),
        3: (99.0, 99.0, 99.0),
    },  # seed 3: mixed
    ("MaPLe", "DTD"): {1: (80.0, 55.0, 55.0), 2: (81.0, 56.0, 54.0), 3: (79.0, 54.0, 53.0)},
    ("BMIP", "EuroSAT"): {1: (96.0, 80.0, 74.0), 2: (95.0, 78.0, 73.0)},  # seed 2: all-classes run missing
    ("BMIP", "DTD"): {
        1: (83.0, 59.0, 55.0),
        2: (82.0, 60.0, 54.0),
        3: (None, None, None),
    },  # seed 3: unfinished
}
MIXED = ("MaPLe", "EuroSAT", 3)
XD = {1: {"ImageNet": 70.5, "Caltech101": 93.0}, 2: {"ImageNet": 70.9, "Caltech101": 94.4}}
EPOCHS = [(2.0, 50.0, 0.0035), (1.2, 70.0, 0.0018)]


def _argv(method, dataset_cfg, seed, out, subsample, eval_only=False, opts=()):
    trainer, cfg = CFGS[method]
    argv = [
        "--trainer",
        trainer,
        "--config-file",
        cfg,
        "--dataset-config-file",
        f"configs/datasets/{dataset_cfg}.yaml",
    ]
    argv += ["--seed", str(seed), "--output-dir", str(out), "--root", "/data"]
    if eval_only:
        argv += ["--eval-only", "--model-dir", "x"]
    return argv + ["DATASET.SUBSAMPLE_CLASSES", subsample, *opts]


def _write_tensorboard(run: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run / "tensorboard"))
    for epoch in (1, 2):
        for batch in range(4):
            step = (epoch - 1) * 4 + batch
            writer.add_scalar("train/loss", 3.0 - epoch - 0.1 * batch, step)
            writer.add_scalar("train/lr", 0.002 / epoch if batch < 3 else 0.002 / (epoch + 1), step)
        for block in (1, 2):
            writer.add_scalar(f"gates/vision/block{block}/slot0", 0.5 + 0.1 * epoch, step)
            writer.add_scalar(f"gates/text/block{block}/slot0", 0.5 - 0.1 * epoch, step)
        writer.add_scalar("train/epoch", epoch, step)
    writer.close()


def write_tree(out: Path) -> dict:
    """The synthetic output tree; returns what the report must say about it."""
    for (method, dataset), seeds in VALUES.items():
        trainer, cfg = CFGS[method]
        stem = DATASETS[dataset]
        cfg_name = Path(cfg).stem
        for seed, (base, new, acc) in seeds.items():
            opts = ("OPTIM.LR", "0.5") if (method, dataset, seed) == MIXED else ()
            folder = layout.base2new_dir(out, "train_base", stem, 16, trainer, cfg_name, seed)
            extra = "BMIP options: BMIPOptions(gate_act='sigmoid')" if method == "BMIP" else ""
            write_engine_log(
                folder, _argv(method, stem, seed, folder, "base", opts=opts), base, EPOCHS, extra=extra
            )
            if method == "BMIP" and seed == 1:
                _write_tensorboard(folder)
            for split, value in (("new", new), ("all", acc)):
                if base is None or (method, dataset, seed, split) == ("BMIP", "EuroSAT", 2, "all"):
                    continue
                folder = layout.base2new_dir(out, f"test_{split}", stem, 16, trainer, cfg_name, seed)
                write_engine_log(folder, _argv(method, stem, seed, folder, split, True, opts), value)
    xd_cfg = "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml"
    for seed, values in XD.items():
        folder = layout.xd_train_dir(out, "imagenet", "MaPLe", Path(xd_cfg).stem, 16, seed)
        argv = _argv("MaPLe", "imagenet", seed, folder, "all")
        argv[3] = xd_cfg
        write_engine_log(folder, argv, values["ImageNet"], EPOCHS)
        folder = layout.xd_test_dir(out, "caltech101", "MaPLe", Path(xd_cfg).stem, 16, seed)
        argv = _argv("MaPLe", "caltech101", seed, folder, "all", eval_only=True)
        argv[3] = xd_cfg
        write_engine_log(folder, argv, values["Caltech101"])
    return {
        "unfinished": layout.base2new_dir(out, "train_base", "dtd", 16, "BMIP", "BMIP_ctx2_dp9_lr2", 3),
        "mixed": layout.base2new_dir(
            out, "train_base", "eurosat", 16, "MaPLe", "vit_b16_c2_ep5_batch4_2ctx", 3
        ),
    }


def _paper():
    found = {}
    for name, family, metrics in (
        ("table1_open_world.csv", "open", ("hm", "acc")),
        ("table2_cross_dataset.csv", "xd", ("acc",)),
    ):
        with (PAPER_DIR / name).open() as f:
            for row in csv.DictReader(f):
                for m in metrics:
                    std = row.get(f"{m}_std")
                    found[(family, row["method"], row["dataset"], m)] = (
                        float(row[m]),
                        float(std) if std else None,
                    )
    return found


def expected_rows(margin=1.0):
    """Independent computation: {(method, dataset, metric): (mean, std, n, verdict)} (numpy, the paper's CSV)."""
    paper = _paper()
    rows = {}

    def add(method, dataset, metric, key, values, family="open"):
        mean, std = float(np.mean(values)), float(np.std(values))
        ref = paper.get((family, method, dataset, key))
        verdict = "no reference"
        if ref is not None:
            tol = 2 * math.sqrt(std**2 + ref[1] ** 2) if ref[1] is not None else max(2 * std, margin)
            verdict = "DEPARTS" if abs(mean - ref[0]) > max(tol, 0.01) else "consistent"
        rows[(method, dataset, metric)] = (mean, std, len(values), verdict)

    for (method, dataset), seeds in VALUES.items():
        usable = {s: v for s, v in seeds.items() if v[0] is not None and (method, dataset, s) != MIXED}
        add(method, dataset, "Base", "base", [v[0] for v in usable.values()])
        add(method, dataset, "New", "new", [v[1] for v in usable.values()])
        add(method, dataset, "HM", "hm", [harmonic_mean(v[0], v[1]) for v in usable.values()])
        alls = [v[2] for s, v in usable.items() if (method, dataset, s) != ("BMIP", "EuroSAT", 2)]
        add(method, dataset, "All classes", "acc", alls)
    for dataset in ("ImageNet", "Caltech101"):
        add("MaPLe", dataset, "Accuracy", "acc", [XD[s][dataset] for s in XD], "xd")
    return rows


def _table(md: str, first_header: str) -> list[list[str]]:
    lines = md[md.index(f"| {first_header}") :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fewshot"  # folder names above the output folder do not count
    facts = write_tree(out)
    assert main([str(out), "--out", str(out / "report")]) == 0
    return out, facts, (out / "report" / "report.md").read_text()


def test_numbers_and_verdicts_equal_an_independent_computation(report):
    _, _, md = report
    rows = _table(md, "Verdict")
    expected = expected_rows()
    seen = {}
    for verdict, _section, method, dataset, metric, ours, seeds, reference, diff, _tol in rows:
        seen[(method, dataset, metric)] = (verdict, ours, seeds, reference, diff)
    assert set(seen) == set(expected)
    for key, (mean, std, n, verdict) in expected.items():
        got = seen[key]
        assert got[0] == verdict, key
        assert got[1] == f"{mean:.2f} ± {std:.2f}", key
        expected_n = 2 if key[:2] == ("BMIP", "EuroSAT") else n
        assert got[2] == (str(n) if n == expected_n else f"{n}/{expected_n}"), key
    # the mixed-config seed is not averaged: MaPLe EuroSAT over seeds 1 and 2 only
    assert seen[("MaPLe", "EuroSAT", "Base")][1:3] == ("94.50 ± 0.50", "2")
    assert seen[("CoOp", "EuroSAT", "HM")][3] == "74.33 ± 4.35"
    verdicts = [r[0] for r in rows]
    assert "DEPARTS" in verdicts and "consistent" in verdicts
    # flagged rows first
    assert verdicts == sorted(verdicts, key=lambda v: v != "DEPARTS")


def test_unusable_runs_are_listed_with_their_folder(report):
    out, facts, md = report
    unusable = {folder: reason for folder, reason in _table(md, "Folder")}
    unfinished = str(facts["unfinished"].relative_to(out))
    assert unusable[unfinished].startswith("unfinished")
    mixed = unusable[str(facts["mixed"].relative_to(out))]
    assert mixed.startswith("mixed config") and "OPTIM.LR=0.5 vs" in mixed
    assert sum(r.startswith("mixed config") for r in unusable.values()) == 3  # its base, new and all runs
    assert any("missing: no all run of BMIP EuroSAT seed2" in r for r in unusable.values())


def test_every_picture_is_a_png_of_the_stated_size_with_one_series_per_method(report):
    out, _, md = report
    pictures = re.findall(r"!\[(.*?)\]\((.*?)\)\n\n\*.*\((\d+)×(\d+) px\)\*", md)
    names = {Path(p[1]).name for p in pictures}
    assert {"bars_EuroSAT.png", "bars_DTD.png", "bars_ImageNet.png", "base_vs_new.png"} <= names
    assert "curves_BMIP_DTD_base.png" in names and "gates_BMIP_EuroSAT_seed1.png" in names
    for _, rel, width, height in pictures:
        path = out / "report" / rel
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (int(width), int(height)), rel
            series = image.text["Series"].split("; ")
        name = path.name
        if name in ("bars_EuroSAT.png", "bars_DTD.png", "base_vs_new.png"):
            assert series == ["CoOp", "MaPLe", "BMIP"], name
        elif name == "curves_BMIP_DTD_base.png":
            assert series == ["seed1", "seed2"], name  # seed 3 never finished
        elif name == "curves_CoOp_EuroSAT_base.png":
            assert series == ["seed1", "seed2", "seed3"], name


def test_html_is_self_contained(report):
    out, _, md = report
    page = (out / "report" / "report.html").read_text()
    assert not re.search(r"https?://|<script|<link|@import|url\(", page)
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    files = re.findall(r"!\[.*?\]\((.*?)\)", md)
    assert len(embedded) == len(files) > 0
    assert base64.b64decode(embedded[0]) == (out / "report" / files[0]).read_bytes()
    assert "DEPARTS" in page


def test_training_curves_come_from_tensorboard_or_the_log(report):
    out, _, _ = report
    from_events = epoch_curves(
        layout.base2new_dir(out, "train_base", "eurosat", 16, "BMIP", "BMIP_ctx2_dp9_lr2", 1)
    )
    assert from_events["loss"] == pytest.approx(
        {1: 1.7, 2: 0.7}
    )  # the running mean at each epoch's last step
    assert from_events["lr"] == pytest.approx({1: 0.002, 2: 0.001})  # the rate the epoch trained with
    from_log = epoch_curves(layout.base2new_dir(out, "train_base", "dtd", 16, "BMIP", "BMIP_ctx2_dp9_lr2", 2))
    assert from_log == {"loss": {1: 2.0, 2: 1.2}, "acc": {1: 50.0, 2: 70.0}, "lr": {1: 0.0035, 2: 0.0018}}


def test_against_another_folder(tmp_path, report):
    """An official release's logs (same Dassl format) as the reference: its mean +- std beside ours."""
    out, _, _ = report
    official = tmp_path / "official"
    for seed, base in ((1, 89.0), (2, 91.0)):
        folder = (
            official
            / "base2new"
            / "train_base"
            / "eurosat"
            / "shots_16"
            / "CoOp"
            / "vit_b16_ctxv1"
            / f"seed{seed}"
        )
        write_engine_log(folder, _argv("CoOp", "eurosat", seed, folder, "base"), base, EPOCHS)
    assert main([str(out), "--against", str(official), "--out", str(tmp_path / "rep")]) == 0
    rows = {(r[2], r[3], r[4]): r for r in _table((tmp_path / "rep" / "report.md").read_text(), "Verdict")}
    row = rows[("CoOp", "EuroSAT", "Base")]
    ours = [v[0] for v in VALUES[("CoOp", "EuroSAT")].values()]
    assert row[7] == "90.00 ± 1.00 (2 seeds)"
    assert row[8] == f"{np.mean(ours) - 90.0:+.2f}"
    tol = 2 * math.sqrt(np.std(ours) ** 2 + 1.0)
    assert row[9] == f"{tol:.2f}" and row[0] == "consistent"
    assert rows[("CoOp", "DTD", "Base")][0] == "no reference"


def test_bad_inputs_fail_with_one_line(tmp_path):
    for argv, needle in (
        ([str(tmp_path / "nope")], "is not a directory"),
        ([str(tmp_path), "--against", str(tmp_path / "nope")], "--against"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "tools.report", *argv], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 2 and needle in proc.stderr.splitlines()[-1]


def test_printed_config_is_read_back_key_for_key(tmp_path):
    """tools.parse_test_res.read_log_header flattens train.py's printed config: every leaf, as printed."""
    import train
    from tools.parse_test_res import read_log_header

    argv = _argv("BMIP", "eurosat", 1, tmp_path, "base", opts=("DEVICE", ""))
    log = write_engine_log(tmp_path, argv, 50.0)
    args, config = read_log_header(log)
    cfg = train.setup_cfg(train.build_parser().parse_args(argv))

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", str(value)

    assert config == dict(leaves(cfg))
    assert config["DATASET.CIFAR_C_TYPE"] == "" and config["TRAINER.NAME"] == "BMIP"
    assert args["config_file"] == CFGS["BMIP"][1] and args["eval_only"] == "False"


def test_seeds_that_differ_only_in_what_changes_no_result_share_a_fingerprint(tmp_path):
    """The report's "same config" test leaves out the seed and every key train.py's run record ignores."""
    from tools.parse_test_res import read_log_header
    from tools.report.runs import config_fingerprint

    def fingerprint(name, *opts):
        argv = _argv("BMIP", "eurosat", 1 if name == "a" else 2, tmp_path / name, "base", opts=opts)
        return config_fingerprint(tmp_path / name, read_log_header(write_engine_log(tmp_path / name, argv, 50.0))[1])

    reference = fingerprint("a", "DATALOADER.NUM_WORKERS", "8", "TRAIN.PRINT_FREQ", "20")
    assert fingerprint("b", "DATALOADER.NUM_WORKERS", "2", "TRAIN.PRINT_FREQ", "5") == reference
    assert fingerprint("c", "DATALOADER.NUM_WORKERS", "8", "OPTIM.LR", "0.5") != reference
