"""Metrics, the Dassl-compatible parser and the results layer."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import numpy as np
import pytest

from tests.results_helpers import write_scripts, write_test_log, write_train_log
from tools import layout, parse_test_res, plan
from tools.metrics import harmonic_mean, hm_of_means, mean_of_hms, summarize
from tools.results import collect
from tools.tables import PAPER_DIR


def _paper_rows(method):
    with (PAPER_DIR / "table1_open_world.csv").open() as f:
        return [r for r in csv.DictReader(f) if r["method"] == method]


def test_table1_clip_average_is_mean_of_per_dataset_hm_and_acc():
    rows = _paper_rows("CLIP")
    per_dataset = [r for r in rows if r["dataset"] != "Average"]
    average = next(r for r in rows if r["dataset"] == "Average")
    assert len(per_dataset) == 11
    assert round(mean_of_hms([float(r["hm"]) for r in per_dataset]), 2) == float(average["hm"]) == 70.84
    assert round(float(np.mean([float(r["acc"]) for r in per_dataset])), 2) == float(average["acc"]) == 63.92


def test_hm_of_means_is_the_base_to_new_convention():
    # CLIP's README average: base 69.34, new 74.22 -> 71.70 (the value the paper prints in Table 4).
    assert round(hm_of_means([69.34], [74.22]), 2) == 71.70
    assert round(hm_of_means([80.0, 60.0], [60.0, 80.0]), 6) == 70.0
    assert mean_of_hms([harmonic_mean(80, 60), harmonic_mean(60, 80)]) == pytest.approx(68.5714285)


def test_harmonic_mean_and_bad_input():
    assert harmonic_mean(80.0, 40.0) == pytest.approx(53.3333333)
    assert harmonic_mean(0.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="new accuracy"):
        harmonic_mean(50.0, float("nan"))
    with pytest.raises(ValueError, match="equally many"):
        hm_of_means([1.0], [])


def test_summarize_uses_population_std_and_ci95():
    stat = summarize([70.0, 72.0, 74.0])
    assert stat.mean == pytest.approx(72.0)
    assert stat.std == pytest.approx(math.sqrt(8 / 3))  # ddof 0, like Dassl's np.std
    assert summarize([70.0, 72.0, 74.0], ci95=True).std == pytest.approx(
        1.96 * math.sqrt(8 / 3) / math.sqrt(3)
    )
    assert stat.format() == "72.00 +- 1.63"


def test_parse_log_end_signal_last_match_and_decimals(tmp_path):
    log = write_train_log(tmp_path / "a", 81.2, decimals=1, val=99.0)
    assert parse_test_res.parse_log(log) == {"accuracy": 81.2}  # the val block before the end is ignored
    assert parse_test_res.parse_log(log, keywords=("macro_f1",)) == {"macro_f1": 42.0}
    log2 = write_test_log(tmp_path / "b", 63.456)
    assert parse_test_res.parse_log(log2, parse_test_res.TRAIN_END) == {}  # eval-only: no Finish training
    assert parse_test_res.parse_log(log2, parse_test_res.TEST_END) == {"accuracy": 63.46}
    with log2.open("a") as f:  # a later result block wins
        f.write("=> result\n* accuracy: 10.5%\n")
    assert parse_test_res.parse_log(log2, parse_test_res.TEST_END) == {"accuracy": 10.5}
    assert parse_test_res.parse_log(tmp_path / "missing" / "log.txt") == {}


def test_parse_test_res_cli_matches_dassl_summary(tmp_path, capsys):
    for seed, acc in zip((1, 2, 3), (80.0, 82.0, 84.0)):
        write_train_log(tmp_path / "exp" / f"seed{seed}", acc)
    (tmp_path / "exp" / ".hidden").mkdir()
    assert parse_test_res.main([str(tmp_path / "exp")]) == 0
    out = capsys.readouterr().out
    assert f"file: {tmp_path / 'exp' / 'seed1' / 'log.txt'}. accuracy: 80.00%. " in out
    assert f"Summary of directory: {tmp_path / 'exp'}\n* accuracy: 82.00% +- 1.63%" in out
    parse_test_res.main([str(tmp_path / "exp"), "--ci95"])
    assert "* accuracy: 82.00% +- 1.85%" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="Nothing found"):
        parse_test_res.main([str(tmp_path / "exp"), "--test-log", "--end-signal", "Finished training"])
    write_test_log(tmp_path / "multi" / "b" / "seed1", 50.0)
    write_test_log(tmp_path / "multi" / "a" / "seed1", 70.0)
    parse_test_res.main([str(tmp_path / "multi"), "--multi-exp", "--test-log"])
    assert "Average performance\n* accuracy: 60.00%" in capsys.readouterr().out
    (tmp_path / "exp" / "seed4").mkdir()
    with pytest.raises(SystemExit, match="seed4/log.txt does not exist"):
        parse_test_res.main([str(tmp_path / "exp")])


def _printed_config(dataset: str, label_space: str) -> str:
    from engine.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.SUBSAMPLE_CLASSES = dataset, label_space
    return str(cfg)


def test_parse_test_res_never_averages_label_spaces_or_datasets(tmp_path, project_root):
    """A folder with base, new and another dataset's runs: one summary each, no figure mixing them."""
    runs = {"base1": ("Digits", "base", 80.0), "base2": ("Digits", "base", 82.0),
            "new1": ("Digits", "new", 20.0), "euro1": ("EuroSAT", "base", 50.0)}  # fmt: skip
    for name, (dataset, space, acc) in runs.items():
        write_train_log(tmp_path / "mixed" / name, acc, config=_printed_config(dataset, space))
    assert parse_test_res.run_group(tmp_path / "mixed" / "new1" / "log.txt") == ("Digits", "new")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.parse_test_res", str(tmp_path / "mixed")],
        cwd=project_root, capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = proc.stdout
    assert "[dataset Digits, classes base]\n* accuracy: 81.00% +- 1.00%" in out
    assert "[dataset Digits, classes new]\n* accuracy: 20.00% +- 0.00%" in out
    assert "[dataset EuroSAT, classes base]\n* accuracy: 50.00% +- 0.00%" in out
    assert "3 datasets / label spaces" in out
    assert out.count("* accuracy:") == 3  # nothing else: no pooled figure
    # --multi-exp keeps the groups apart too.
    for exp, space, acc in (("a", "base", 70.0), ("b", "base", 90.0), ("c", "new", 10.0)):
        write_train_log(tmp_path / "multi" / exp / "seed1", acc, config=_printed_config("Digits", space))
    parse = subprocess.run(
        [sys.executable, "-m", "tools.parse_test_res", str(tmp_path / "multi"), "--multi-exp"],
        cwd=project_root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "Average performance [dataset Digits, classes base]\n* accuracy: 80.00%" in parse
    assert "Average performance [dataset Digits, classes new]\n* accuracy: 10.00%" in parse


def test_read_script_follows_conditionals_and_cfg_env(tmp_path):
    scripts = write_scripts(tmp_path, {"m": ("MaPLe", "cfgA", "5")})
    script = scripts / "m" / "base2new_train.sh"
    script.write_text(
        'source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"\n'
        'if [ "${1:-}" = imagenet ]; then lib_setup MaPLe cfg_in 2; else lib_setup MaPLe cfgA 5; fi\n'
        'base2new_train "$@"\n'
    )
    assert layout.read_script(script, ["eurosat", "1"]).cfg == "cfgA"
    assert layout.read_script(script, ["imagenet", "1"]).cfg == "cfg_in"
    info = layout.read_script(script, ["eurosat", "1"], {"CFG": "other"})
    assert (info.trainer, info.cfg, info.zero_shot) == ("MaPLe", "other", False)
    (scripts / "m" / "broken.sh").write_text("echo hi\n")
    with pytest.raises(ValueError, match="never called 'lib_setup"):
        layout.read_script(scripts / "m" / "broken.sh", ["x", "1"])


def test_collect_maps_runs_to_keys_and_lists_missing(tmp_path):
    scripts = write_scripts(
        tmp_path, {"maple": ("MaPLe", "c", "5"), "zsclip": ("ZeroshotCLIP", "vit_b16", "-")}
    )
    out = tmp_path / "output"
    jobs = plan.open_world_jobs(["MaPLe", "CLIP"], ["EuroSAT"], [1, 2], out, scripts_root=scripts)
    assert [j.name for j in jobs] == [
        "base2new MaPLe EuroSAT seed1",
        "base2new MaPLe EuroSAT seed2",
        "base2new CLIP EuroSAT seed1",  # zero-shot: one seed
    ]
    train = out / "base2new/train_base/eurosat/shots_16/MaPLe/c/seed1"
    assert jobs[0].steps[0].log == train / "log.txt"
    write_train_log(train, 90.0)
    write_test_log(out / "base2new/test_new/eurosat/shots_16/MaPLe/c/seed1", 60.0)
    write_test_log(out / "base2new/train_base/eurosat/shots_16/ZeroshotCLIP/vit_b16/seed1", 70.0)
    res = collect(jobs)
    assert res.values == {
        ("base", "MaPLe", "EuroSAT", 1): 90.0,
        ("new", "MaPLe", "EuroSAT", 1): 60.0,
        ("base", "CLIP", "EuroSAT", 1): 70.0,
    }
    assert res.seeds("MaPLe", "EuroSAT", "base") == [1, 2]
    assert len(res.missing) == 9 - 3
    cell = res.open_world("MaPLe", "EuroSAT")
    assert cell["hm"].stat.mean == pytest.approx(72.0) and cell["hm"].found == 1 and not cell["hm"].complete
    assert cell["acc"].stat is None
    assert res.open_world_average("MaPLe", ["EuroSAT"])["hm"].stat is None  # incomplete -> no average


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5])
def test_paper_tables_plan_onto_the_real_scripts_and_configs(project_root, tmp_path, number):
    jobs = plan.table_jobs(plan.TABLES[number], [1, 2], tmp_path)
    tdef = plan.TABLES[number]
    for job in jobs:
        for step in job.steps:
            info = layout.read_script(step.command[1], step.command[2:], dict(step.env))
            assert (project_root / "configs" / "trainers" / info.cfg_dir / f"{info.cfg}.yaml").is_file(), step
            assert (
                project_root / "configs" / "datasets" / f"{plan.config_name(step.dataset)}.yaml"
            ).is_file()
            assert step.log.is_relative_to(tmp_path)
    datasets = len(tdef.datasets)
    trained = [m for m in tdef.methods if m != "CLIP"]
    if tdef.kind == "transfer":  # one job per trained method and seed, one for zero-shot CLIP
        assert len(jobs) == 2 * len(trained) + ("CLIP" in tdef.methods)
        assert all(len(j.steps) == 1 + datasets for j in jobs)
    else:
        assert len(jobs) == datasets * (2 * len(trained) + ("CLIP" in tdef.methods))
        assert all([s.paradigm for s in j.steps] == ["base", "new", "all"] for j in jobs)


def test_result_tools_do_not_import_torch(project_root):
    """tools/__init__.py promises that tables, parsing, planning and sweeps run on machines without torch."""
    import subprocess
    import sys

    modules = ["tables", "parse_test_res", "plan", "results", "metrics", "sweep", "layout", "run_record", "run_lock",
               "reliability_cases", "doc_sections", "dassl_compat_table"]
    code = "import sys\n" + "".join(f"import tools.{m}\n" for m in modules) + (
        "loaded = sorted(m for m in ('torch', 'engine', 'clip', 'prompting') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=project_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
