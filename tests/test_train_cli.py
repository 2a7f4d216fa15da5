"""``train.py``: merge order, seeds, clear config errors, and full runs (in-process and as a script)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_engine import make_image_folder, toy_opts, toys_registered

import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module", autouse=True)
def _toys():
    with toys_registered():
        yield


@pytest.fixture(autouse=True)
def fast_env_info(monkeypatch):
    """torch's environment report takes seconds; the in-process runs do not need it."""
    monkeypatch.setattr(train, "collect_env_info", lambda: "env info")


def cfg_from(argv: list[str]):
    return train.setup_cfg(train.build_parser().parse_args(argv))


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_merge_order_dataset_then_method_then_flags_then_opts(tmp_path):
    dataset = write(tmp_path / "d.yaml", "DATASET:\n  NAME: A\nOPTIM:\n  LR: 0.1\n  MAX_EPOCH: 3\nSEED: 7\n")
    method = write(tmp_path / "m.yaml", "OPTIM:\n  LR: 0.2\nOUTPUT_DIR: from_yaml\n")
    cfg = cfg_from(["--dataset-config-file", dataset, "--config-file", method, "--output-dir", "flag",
                    "--trainer", "T", "OPTIM.MAX_EPOCH", "9"])
    assert (cfg.DATASET.NAME, cfg.OPTIM.LR, cfg.OUTPUT_DIR, cfg.OPTIM.MAX_EPOCH) == ("A", 0.2, "flag", 9)
    assert cfg.TRAINER.NAME == "T" and cfg.is_frozen()
    # The default --seed (-1) keeps the YAML seed; --seed 0 is a real seed.
    assert cfg.SEED == 7
    assert cfg_from(["--dataset-config-file", dataset, "--seed", "0"]).SEED == 0
    # Family keys and method subtrees exist.
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all" and cfg.MODEL.INIT_SEED == -1
    assert cfg.TRAINER.COOP.N_CTX == 16 and cfg.TRAINER.COCOOP.PREC == "fp16"
    assert cfg_from(["--device", "cpu"]).DEVICE == "cpu"


def test_config_errors_name_the_file_and_key(tmp_path):
    bad_key = write(tmp_path / "bad_key.yaml", "OPTIM:\n  LERNING_RATE: 0.1\n")
    with pytest.raises(KeyError, match=r"--config-file .*bad_key\.yaml: Non-existent config key: OPTIM\.LERNING_RATE"):
        cfg_from(["--config-file", bad_key])
    bad_type = write(tmp_path / "bad_type.yaml", "OPTIM:\n  MAX_EPOCH: ten\n")
    with pytest.raises(ValueError, match=r"bad_type\.yaml: Type mismatch .* OPTIM\.MAX_EPOCH"):
        cfg_from(["--dataset-config-file", bad_type])
    with pytest.raises(FileNotFoundError, match=r"--config-file .*nowhere\.yaml"):
        cfg_from(["--config-file", str(tmp_path / "nowhere.yaml")])
    with pytest.raises(AssertionError, match="OPTIM.NOPE"):
        cfg_from(["OPTIM.NOPE", "1"])


def test_unknown_or_missing_names_list_the_known_ones(data_root, tmp_path):
    with pytest.raises(ValueError, match=r"No trainer given.*EngineToyTrainer"):
        train.main(toy_opts(data_root, tmp_path))
    with pytest.raises(ValueError, match=r'"Nope".*EngineToyTrainer'):
        train.main(["--trainer", "Nope", *toy_opts(data_root, tmp_path)])
    with pytest.raises(ValueError, match=r'"Nowhere".*EngineToyImages'):
        train.main(["--trainer", "EngineToyTrainer", *toy_opts(data_root, tmp_path, **{"DATASET.NAME": "Nowhere"})])
    assert not (tmp_path / "log.txt").exists()


def test_train_then_eval_only_with_load_epoch_and_best(data_root, tmp_path):
    out = tmp_path / "run"
    opts = toy_opts(data_root, out, **{"OPTIM.MAX_EPOCH": "3", "TEST.FINAL_MODEL": "best_val"})
    train.main(["--trainer", "EngineToyTrainer", "--seed", "0", *opts])
    log = (out / "log.txt").read_text()
    assert "Setting fixed seed: 0" in log and "Loading trainer: EngineToyTrainer" in log
    assert "epoch [3/3] batch [2/3]" in log and "Finish training" in log and "\nElapsed: " in log
    assert log.rstrip().splitlines()[-1].startswith("Elapsed: ")
    best = torch.load(out / "model" / "model-best.pth.tar", weights_only=True)

    eval_dir = tmp_path / "eval"
    common = ["--trainer", "EngineToyTrainer", "--eval-only", "--model-dir", str(out)]
    train.main([*common, "--load-epoch", "2", *toy_opts(data_root, eval_dir / "e2")])
    log = (eval_dir / "e2" / "log.txt").read_text()
    assert f"Load {out / 'model' / 'model.pth.tar-2'} to model (epoch=2, val_result=n/a)" in log
    assert "Evaluate on the *test* set\n=> result\n" in log and "* class: 2 (blue)\ttotal: 3" in log
    assert "Finish training" not in log and not (eval_dir / "e2" / "model").exists()

    train.main([*common, "--best", "--load-epoch", "2", *toy_opts(data_root, eval_dir / "best")])
    log = (eval_dir / "best" / "log.txt").read_text()
    assert f"model-best.pth.tar to model (epoch={best['epoch']}, val_result={best['val_result']:.1f})" in log


def test_rerun_into_the_same_output_dir_resumes_and_keeps_the_old_log(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--trainer", "EngineToyTrainer", "--seed", "1", *toy_opts(data_root, out, **{"OPTIM.MAX_EPOCH": "2"})]
    train.main(args)
    train.main(args)
    logs = sorted(p.name for p in out.iterdir() if p.name.startswith("log.txt"))
    assert len(logs) == 2 and logs[1].startswith("log.txt-")
    # log.txt is the latest (resumed, finished) run; the first one is kept under its timestamp.
    rerun = (out / "log.txt").read_text()
    assert rerun.startswith(f"The previous log of this folder is kept as {logs[1]}\n")
    assert "Previous epoch: 2" in rerun and "epoch [" not in rerun and "Finish training" in rerun
    assert "epoch [2/2]" in (out / logs[1]).read_text()

    # Other settings into the same folder are refused before anything runs (its run.json records them).
    longer = ["--trainer", "EngineToyTrainer", "--seed", "1", *toy_opts(data_root, out, **{"OPTIM.MAX_EPOCH": "4"})]
    capsys.readouterr()
    assert train.run(longer) == 1
    assert capsys.readouterr().err == (
        f"train.py: error: OUTPUT_DIR {out} holds a run of other settings (OPTIM.MAX_EPOCH: 2 there, 4 here); its "
        "results would be mixed with this run's. Use another --output-dir, or delete the folder to replace that run\n"
    )
    # Resuming it into a new folder with another schedule length would continue the old cosine schedule at
    # lr 0: refused.
    longer = ["--trainer", "EngineToyTrainer", "--seed", "1", "--resume", str(out),
              *toy_opts(data_root, tmp_path / "longer", **{"OPTIM.MAX_EPOCH": "4"})]  # fmt: skip
    assert train.run(longer) == 1
    err = capsys.readouterr().err
    assert err == (
        f'train.py: error: Cannot resume "{out / "model"}" (epoch 2): it was trained with another LR schedule '
        "(successor.T_max 2.0, this run 4.0: another OPTIM.MAX_EPOCH or OPTIM.LR_SCHEDULER setting?). "
        "Continuing would follow the old schedule (a finished cosine schedule trains at lr 0). Use a new "
        "--output-dir, or repeat the settings the folder was trained with.\n"
    )


def test_script_end_to_end(data_root, tmp_path):
    """``python train.py`` as a process: the toy trainer is registered first, then the script runs as __main__.

    torch's environment report (seconds of CPU) is stubbed here too.
    """
    out = tmp_path / "script"
    argv = ["train.py", "--trainer", "EngineToyTrainer", "--seed", "1",
            *toy_opts(data_root, out, **{"OPTIM.MAX_EPOCH": "2"})]
    code = (
        "import runpy, sys; sys.path[:0] = ['tests', '.']; import test_engine, engine.utils; "
        "test_engine.register_toys(); engine.utils.collect_env_info = lambda: 'env info'; "
        f"sys.argv = {argv!r}; runpy.run_path('train.py', run_name='__main__')"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model" / "model.pth.tar-2").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    log = (out / "log.txt").read_text()
    assert "** System info **" in log and "Finish training" in log and "* accuracy: " in log
    assert done.stdout == log


def test_help_is_plain_text_with_the_usage_example_on_its_lines():
    """``train.py --help``: no RST markup, and the multi-line example keeps its line breaks."""
    out = subprocess.run(
        [sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "``" not in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("python train.py --root DATA"))
    example = [line.strip() for line in lines[start : start + 3]]
    assert example[0].startswith("python train.py --root DATA") and example[0].endswith("eurosat.yaml \\")
    assert example[1].startswith("--config-file configs/trainers/BMIP/") and example[1].endswith("\\")
    assert example[2] == "DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base"
    assert "1. engine defaults (engine.config.get_cfg_default);" in out
