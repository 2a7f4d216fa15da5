"""A miniature Table 1 through the real scripts, engine and sweep runner on CPU.

Two methods (zero-shot CLIP, BMIP) x the embedded Digits dataset x two seeds with the tiny random
CLIP: 9 train.py processes, the slowest test of this area (each process mostly imports torch).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys

import pytest

from tools import layout, sweep
from tools.metrics import harmonic_mean
from tools.parse_test_res import TEST_END, TRAIN_END, parse_log

OPTS = [
    "MODEL.BACKBONE.NAME", "random:tiny", "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2",
    "DATALOADER.NUM_WORKERS", "0", "TEST.PER_CLASS_RESULT", "True",
]  # fmt: skip
SEED1 = layout.place("seed1", OPTS).name  # the overrides place every run apart (scripts/lib.sh)


def _classes(log) -> dict[str, int]:
    """class name -> label from the evaluator's per-class lines."""
    lines = re.findall(r"^\* class: (\d+) \(([^)]*)\)", log.read_text(), re.MULTILINE)
    return {name: int(label) for label, name in lines}


def _total(log) -> int:
    return int(re.findall(r"^\* total: ([\d,]+)", log.read_text(), re.MULTILINE)[-1].replace(",", ""))


@pytest.fixture(scope="module")
def mini_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    mp = pytest.MonkeyPatch()
    mp.setenv("DATA", str(root / "data"))
    mp.setenv("PYTHON", sys.executable)
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.setenv("CUDA_VISIBLE_DEVICES", "")
    args = ["--table", "1", "--methods", "CLIP", "BMIP", "--datasets", "digits", "--seeds", "1", "2",
            "--output", str(root / "output"), "--print-table", "--opts", *OPTS]  # fmt: skip
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = sweep.main(args)
    yield root / "output", args, rc, buf.getvalue()
    mp.undo()


def test_mini_table1_runs_through_the_sweep_and_prints(mini_table):
    out, _, rc, text = mini_table
    assert rc == 0, text
    assert "running serially" in text and "runs left: 0" in text
    assert "All runs of this table are finished." in text
    b2n = out / "base2new"
    clip = f"digits/shots_2/ZeroshotCLIP/vit_b16/{SEED1}/log.txt"
    base = parse_log(b2n / "train_base" / clip, TEST_END)["accuracy"]  # zero-shot: evaluation only
    new = parse_log(b2n / "test_new" / clip, TEST_END)["accuracy"]
    row = next(line for line in text.splitlines() if line.startswith("CLIP") and " digits " in line)
    # columns: Method Dataset Base +- std New +- std HM +- std Acc +- std
    assert row.split()[2::3][:3] == [f"{base:.2f}", f"{new:.2f}", f"{harmonic_mean(base, new):.2f}"]
    bmip = [line for line in text.splitlines() if line.startswith("BMIP")]
    assert len(bmip) == 3 and not any(re.search(r"\[\d+/\d+\]|missing", line) for line in bmip)
    for seed in (1, 2):
        assert parse_log(
            layout.place(b2n / f"train_base/digits/shots_2/BMIP/BMIP_ctx2_dp9_lr2/seed{seed}", OPTS) / "log.txt", TRAIN_END
        )


def test_all_class_evaluation_uses_every_class_with_original_labels(mini_table):
    out = mini_table[0]
    folder = f"digits/shots_2/BMIP/BMIP_ctx2_dp9_lr2/{SEED1}/log.txt"
    base, new, every = (out / "base2new" / split / folder for split in ("train_base", "test_new", "test_all"))
    base_classes, new_classes, all_classes = _classes(base), _classes(new), _classes(every)
    assert len(base_classes) == 5 and len(new_classes) == 5
    assert set(all_classes) == set(base_classes) | set(new_classes)  # every class name is a candidate
    assert all(all_classes[name] == label for name, label in base_classes.items())
    assert sorted(all_classes[name] for name in new_classes) == list(range(5, 10))  # original labels
    assert _total(every) == _total(base) + _total(new)  # the whole test set


def test_second_sweep_finds_everything_complete(mini_table, capsys):
    out, args, _, _ = mini_table
    consoles = {p: p.stat().st_mtime_ns for p in (out / "sweep_logs").iterdir()}
    assert sweep.main(args) == 0
    assert "3 jobs, 0 with unfinished runs" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "sweep_logs").iterdir()} == consoles
