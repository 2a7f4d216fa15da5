"""The table tool on synthetic run folders: layout, mean +- std, averaging rules, missing runs."""

from __future__ import annotations

import csv
import hashlib
import io
import math

import pytest

from tests.results_helpers import write_scripts, write_test_log, write_train_log
from tools import plan, tables

SCRIPTS = {
    "zsclip": ("ZeroshotCLIP", "vit_b16", "-"),
    "maple": ("MaPLe", "mcfg", "5"),
    "bmip": ("BMIP", "bcfg", "10"),
}


@pytest.fixture()
def fake(tmp_path):
    return write_scripts(tmp_path, SCRIPTS), tmp_path / "output"


def _b2n(out, split, dataset, trainer, cfg, seed):
    return out / "base2new" / split / plan.config_name(dataset) / "shots_16" / trainer / cfg / f"seed{seed}"


def _paper(name):
    with (tables.PAPER_DIR / name).open() as f:
        return list(csv.DictReader(f))


# sha256 of the published tables as first carried (numbers exactly as printed in the paper).
PAPER_SHA256 = {
    "table1_open_world.csv": "c88b388c6b57ecbb16f7248217efd92e0db1400f7c367e0c5f5c4ecc0ffdf8be",
    "table2_cross_dataset.csv": "0e1e99db051783db06eb57c82e668c017bdb75ee6eeed64b25781063dd6d28d1",
    "table3_domain_generalization.csv": "d6d0f92738ef0314e79192640118e0ac4af021b31479dbcad1e28c6ad7894f25",
    "table4_combinations.csv": "e42e6a8737942d046aa53769904ff7388114a9a57563b13921df227d221272ae",
    "table5_aggregation.csv": "eacf2019670e31ecea7153572a8d592054bc64be2850c1357d7a431a39252e68",
    "table6_since_maple.csv": "5a0649c371c71733c56d66b3fae6961d5ab4c71474ad3db4072608276eab0b52",
    # + the HiCroPL row (issue 30; before: aaf02fda0e85b113e22140cee0e1e5ce516003abba91343f8087302acd196fcb)
    "table7_since_maple_part2.csv": "0c32c0bde96402844e271294dd9683626acd509244b285edd9b64f8100845530",
}


def test_shipped_paper_tables_are_unchanged():
    for name in tables._PAPER_FILES.values():
        assert hashlib.sha256((tables.PAPER_DIR / name).read_bytes()).hexdigest() == PAPER_SHA256[name], name


def test_table1_clip_row_end_to_end_reproduces_paper_average(fake):
    scripts, out = fake
    for row in _paper("table1_open_world.csv"):
        if row["method"] != "CLIP" or row["dataset"] == "Average":
            continue
        # base = new = the paper's HM makes each dataset's HM equal to the published one
        write_test_log(
            _b2n(out, "train_base", row["dataset"], "ZeroshotCLIP", "vit_b16", 1), float(row["hm"])
        )
        write_test_log(_b2n(out, "test_new", row["dataset"], "ZeroshotCLIP", "vit_b16", 1), float(row["hm"]))
        write_test_log(_b2n(out, "test_all", row["dataset"], "ZeroshotCLIP", "vit_b16", 1), float(row["acc"]))
    jobs = plan.table_jobs(plan.TABLES[1], [1, 2, 3], out, methods=["CLIP"], scripts_root=scripts)
    table = tables.build_table(1, jobs, methods=["CLIP"])
    assert table.missing == []
    rows = {label: cells for _, label, cells in table.rows}
    assert len(rows) == 13
    avg = rows["Average [mean_of_hms]"]
    assert (
        avg["hm"].ours.stat.format() == "70.84 +- 0.00" and avg["hm"].paper == 70.84 and avg["hm"].diff == 0.0
    )
    assert avg["acc"].ours.stat.format() == "63.92 +- 0.00" and avg["acc"].diff == 0.0
    assert rows["Average [hm_of_means]"]["hm"].paper is None  # the paper's Average is the mean of HMs
    assert rows["EuroSAT"]["hm"].paper == 58.16 and rows["EuroSAT"]["hm"].paper_std == 0.0
    text, report = tables.render(table, "text")
    assert report == ""
    assert "All runs of this table are finished." in text
    assert "Average [mean_of_hms]" in text and "70.84 +- 0.00" in text


def _write_maple(out, dataset, seeds, base, new, acc):
    for seed, b, n, a in zip(seeds, base, new, acc):
        write_train_log(_b2n(out, "train_base", dataset, "MaPLe", "mcfg", seed), b, decimals=1)
        write_test_log(_b2n(out, "test_new", dataset, "MaPLe", "mcfg", seed), n)
        write_test_log(_b2n(out, "test_all", dataset, "MaPLe", "mcfg", seed), a)


def test_table1_mean_std_partial_seeds_and_missing_runs(fake):
    scripts, out = fake
    _write_maple(out, "EuroSAT", (1, 2, 3), (90.0, 92.0, 94.0), (60.0, 70.0, 80.0), (70.0, 71.0, 75.0))
    _write_maple(out, "DTD", (1, 2), (80.0, 80.0), (60.0, 60.0), (65.0, 66.0))  # seed 3 missing
    kwargs = dict(methods=["MaPLe"], datasets=["EuroSAT", "DTD"])
    jobs = plan.table_jobs(plan.TABLES[1], [1, 2, 3], out, scripts_root=scripts, **kwargs)
    table = tables.build_table(1, jobs, **kwargs)
    rows = {label: cells for _, label, cells in table.rows}
    hms = [2 * b * n / (b + n) for b, n in ((90, 60), (92, 70), (94, 80))]
    hm = rows["EuroSAT"]["hm"].ours.stat
    assert hm.mean == pytest.approx(sum(hms) / 3)
    assert hm.std == pytest.approx(math.sqrt(sum((h - sum(hms) / 3) ** 2 for h in hms) / 3))
    assert rows["EuroSAT"]["hm"].diff == pytest.approx(round(hm.mean, 2) - 81.43)
    assert rows["DTD"]["acc"].ours.found == 2 and not rows["DTD"]["acc"].ours.complete
    assert rows["DTD"]["acc"].diff is None  # incomplete entries are not compared
    assert rows["Average [mean_of_hms]"]["hm"].ours.stat is None
    assert [(s.paradigm, s.dataset, s.seed) for s in table.missing] == [
        ("base", "DTD", 3),
        ("new", "DTD", 3),
        ("all", "DTD", 3),
    ]

    text, _ = tables.render(table, "text")
    assert "65.50 +- 0.50 [2/3]" in text  # DTD acc from 2 of 3 seeds, flagged
    assert "missing" in text.split("Average [mean_of_hms]")[1].splitlines()[0]
    assert "Missing or unfinished runs (3):" in text
    assert (
        f"base MaPLe DTD seed3: not run ({_b2n(out, 'train_base', 'DTD', 'MaPLe', 'mcfg', 3) / 'log.txt'})"
        in text
    )
    markdown, _ = tables.render(table, "markdown")
    assert (
        markdown.startswith("### Table 1") and "| MaPLe " in markdown and "- `all MaPLe DTD seed3" in markdown
    )
    data, report = tables.render(table, "csv")
    parsed = list(csv.DictReader(io.StringIO(data)))
    euro = next(r for r in parsed if r["dataset"] == "EuroSAT")
    assert (
        float(euro["acc_mean"]) == pytest.approx(72.0)
        and euro["acc_seeds"] == "3"
        and euro["acc_paper"] == "70.33"
    )
    assert "missing or unfinished runs: 3" in report


def test_average_rows_follow_the_chosen_rule(fake):
    scripts, out = fake
    _write_maple(out, "EuroSAT", (1,), (90.0,), (50.0,), (70.0,))
    _write_maple(out, "DTD", (1,), (50.0,), (90.0,), (60.0,))
    jobs = plan.table_jobs(
        plan.TABLES[5], [1], out, methods=["MaPLe"], datasets=["EuroSAT", "DTD"], scripts_root=scripts
    )
    for rule, primary, other in (
        ("mean_of_hms", 2 * 90 * 50 / 140, 70.0),
        ("hm_of_means", 70.0, 2 * 90 * 50 / 140),
    ):
        table = tables.build_table(5, jobs, methods=["MaPLe"], datasets=["EuroSAT", "DTD"], rule=rule)
        ((_, label, cells),) = table.rows
        assert label == "Average"
        assert cells["hm"].ours.stat.mean == pytest.approx(primary)
        assert cells["hm_other"].ours.stat.mean == pytest.approx(other)
        assert cells["acc"].ours.stat.mean == pytest.approx(65.0)
        assert (
            cells["hm"].paper is None and cells["acc"].paper is None
        )  # a 2-dataset average is not the paper's
        text = tables.render(table)[0]
        assert f"HM [{rule}]" in text and "averages are not compared" in text
    assert tables.load_paper(5)[("MaPLe", "Average")] == {"hm": 78.18, "acc": 71.72}


def test_table4_labels_and_table3_averages(fake):
    paper4 = tables.load_paper(4)
    assert paper4[("MaPLe+BMIP", "Average")]["hm"] == 79.03 and paper4[("CLIP", "Average")]["hm"] == 71.70
    scripts, out = fake
    accs = {
        "ImageNet": 70.0,
        "ImageNetV2": 64.0,
        "ImageNetSketch": 48.0,
        "ImageNetA": 50.0,
        "ImageNetR": 78.0,
    }
    write_train_log(out / "imagenet" / "MaPLe" / "mcfg_16shots" / "seed1", accs["ImageNet"])
    for name, acc in list(accs.items())[1:]:
        write_test_log(out / "evaluation" / "MaPLe" / "mcfg_16shots" / plan.config_name(name) / "seed1", acc)
    jobs = plan.table_jobs(plan.TABLES[3], [1], out, methods=["MaPLe"], scripts_root=scripts)
    assert jobs[0].steps[1].command[1].endswith("maple/dg_test.sh")
    table = tables.build_table(3, jobs, methods=["MaPLe"])
    rows = {label: cells["acc"] for _, label, cells in table.rows}
    assert rows["Average"].ours.stat.mean == pytest.approx(sum(accs.values()) / 5)
    assert rows["OOD Average"].ours.stat.mean == pytest.approx(60.0)
    assert rows["OOD Average"].paper == 60.28 and rows["ImageNet"].paper == 70.72
    assert table.missing == []


def test_cli_prints_table_and_rejects_unknown_method(fake, capsys):
    scripts, out = fake
    _write_maple(out, "EuroSAT", (1,), (90.0,), (50.0,), (70.0,))
    args = ["--table", "1", "--methods", "MaPLe", "--datasets", "eurosat", "--seeds", "1",
            "--output", str(out), "--scripts-root", str(scripts)]  # fmt: skip
    assert tables.main([*args, "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    euro = next(line for line in text.splitlines() if line.startswith("| MaPLe") and "EuroSAT" in line)
    assert "| 90.00 +- 0.00 " in euro and "| 81.43 +- 0.53 " in euro  # config name -> paper name and number
    with pytest.raises(KeyError, match="unknown method 'Nope'"):
        tables.main([*args[:2], "--methods", "Nope", *args[4:]])


def test_fewshot_table_from_cli(fake, capsys):
    scripts, out = fake
    for k, accs in ((1, (50.0, 54.0)), (4, (70.0, 70.0))):
        for seed, acc in zip((1, 2), accs):
            write_train_log(
                out / "fewshot" / "eurosat" / f"shots_{k}" / "MaPLe" / "mcfg" / f"seed{seed}", acc
            )
    args = ["--fewshot", "1", "4", "16", "--methods", "MaPLe", "--datasets", "eurosat", "--seeds", "1", "2",
            "--output", str(out), "--scripts-root", str(scripts), "--format", "csv"]  # fmt: skip
    assert tables.main(args) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [(r["dataset"], r["fewshot1_mean"], r["fewshot1_std"], r["fewshot16_seeds"]) for r in rows] == [
        ("EuroSAT", "52.0000", "2.0000", "0"),
        ("Average", "52.0000", "2.0000", "0"),
    ]
    assert "missing or unfinished runs: 2" in captured.err
    with pytest.raises(SystemExit, match="exactly one of --table N or --fewshot"):
        tables.main(["--output", str(out)])
