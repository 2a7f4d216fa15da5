"""Data validated before work, and the last tracebacks turned into one line with a distinct exit status:
split entries, class folders, high-depth images, generated splits, unreadable checkpoints, a full disk,
out of memory. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pytest
import test_reliability
import torch
from PIL import Image
from test_bad_inputs import argv, error_of, make_eurosat
from test_datasets import build, images
from test_reliability import coop_argv

import train
from datasets.common import read_split
from engine.utils import load_checkpoint
from engine.utils.tools import read_image
from tools import check_data

# test_reliability's fixtures: the micro CLIP file, no seconds-long environment report
fast_env_info, micro_clip = test_reliability.fast_env_info, test_reliability.micro_clip

# ---- split entries -----------------------------------------------------------------------------------
GOOD = [["a/a_0.jpg", 0, "a"], ["b/b_0.jpg", 1, "b"]]


@pytest.mark.reliability_case(
    'split-entries',
    "a split file entry with a path outside the image folder (`../..`, absolute), listed twice, whose label and class name disagree with another entry's, or with a label outside 0..n-1",
    '`Split file <file> entry test[0]: <problem>` before any work',
)
@pytest.mark.parametrize(
    ("test", "message"),
    [
        ([["../../etc/passwd", 0, "a"]], "entry test[0]: the path '../../etc/passwd' lies outside the image folder"),
        ([["/etc/passwd", 0, "a"]], "entry test[0]: the path '/etc/passwd' lies outside the image folder"),
        ([["a/./a_0.jpg", 0, "a"]], "entry test[0]: 'a/./a_0.jpg' is listed twice (also at Split file"),
        ([["c/c_0.jpg", 0, "c"]], "entry test[0]: label 0 is named 'c' here but 'a' at Split file"),
        ([["c/c_0.jpg", 5, "a"]], "entry test[0]: class 'a' has label 5 here but 0 at Split file"),
        ([["c/c_0.jpg", 5, "c"]], "entry test[0]: label 5 ('c') is outside 0..2, the labels of the 3 classes"),
        ([["c/c_0.jpg", -1, "c"]], "entry test[0]: label -1 ('c') is outside 0..2"),
    ],
)
def test_split_entries_are_validated_naming_file_entry_and_problem(tmp_path, test, message):
    for rel in ("a/a_0.jpg", "b/b_0.jpg", "c/c_0.jpg"):
        (tmp_path / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / rel)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": GOOD, "val": [], "test": test}))
    with pytest.raises(ValueError) as err:
        read_split(str(split), str(tmp_path / "images"))
    assert str(err.value).startswith(f"Split file {split} ") and message in str(err.value)


@pytest.mark.reliability_case(
    'split-label-range',
    '`python train.py` on a split file with a label out of range',
    "`Split file <file> entry train[0]: label 7 ('Seven') is outside 0..2, the labels of the 3 classes the file names` (exit 1; it was a traceback at the first step)",
)
def test_a_label_out_of_range_is_one_line_before_training(tmp_path, micro_clip, capsys):
    root = make_eurosat(tmp_path / "data")
    path = root / "eurosat" / "split_zhou_EuroSAT.json"
    split = json.loads(path.read_text())
    split["train"][0][1], split["train"][0][2] = 7, "Seven"
    path.write_text(json.dumps(split))
    assert error_of(argv(root, tmp_path / "out", micro_clip), capsys) == (
        f"Split file {path} entry train[0]: label 7 ('Seven') is outside 0..2, the labels of the 3 classes the "
        "file names"
    )


@pytest.mark.reliability_case(
    'class-folders',
    'EuroSAT image folder with 9 or 11 class folders (split generated on first use)',
    "`Image folder <dir> has 9 class folders, the reader expects 10: missing ['Forest'], not a class of this dataset none`",
)
@pytest.mark.parametrize(("drop", "add"), [(["Forest"], []), ([], ["Snow"])])
def test_eurosat_class_folders_missing_or_extra_are_named(tmp_path, drop, add):
    from datasets.eurosat import NEW_CNAMES

    folders = [c for c in NEW_CNAMES if c not in drop] + add
    for cat in folders:
        images(tmp_path / "eurosat" / "2750" / cat, f"{cat}_", 5)
    with pytest.raises(ValueError) as err:
        build("EuroSAT", tmp_path)
    assert str(err.value) == (
        f"Image folder {tmp_path / 'eurosat' / '2750'} has {len(folders)} class folders, the reader expects 10: "
        f"missing {drop or 'none'}, not a class of this dataset {add or 'none'}"
    )


@pytest.mark.reliability_case(
    'generated-split',
    'no published `split_zhou_<Name>.json`: the split is generated on first use',
    'it is saved as `split_generated_<Name>.json` (never the published name), later runs say `Using a split generated on first use, ...`, and `tools.check_data` reports that runs use it',
)
def test_a_generated_split_never_takes_the_published_name_and_check_data_says_it_is_used(tmp_path, capsys):
    from datasets.eurosat import NEW_CNAMES

    for cat in NEW_CNAMES:
        images(tmp_path / "eurosat" / "2750" / cat, f"{cat}_", 5)
    random.seed(1)
    first = build("EuroSAT", tmp_path)
    generated = tmp_path / "eurosat" / "split_generated_EuroSAT.json"
    assert first.split_used == str(generated) and generated.is_file()
    assert not (tmp_path / "eurosat" / "split_zhou_EuroSAT.json").exists()
    (report,) = check_data.check_root(str(tmp_path), ["EuroSAT"])
    assert report.status == check_data.INCOMPLETE and report.problems == [
        f"split file absent: runs use the split generated on first use, {generated}, which does not match the "
        "published one (python -m tools.prepare_data installs CoOp's file; see docs/DATASETS.md)"
    ]
    again = build("EuroSAT", tmp_path)  # read back, not generated anew
    assert [d.impath for d in again.test] == [d.impath for d in first.test]
    assert "Using a split generated on first use, not the published split_zhou_EuroSAT.json" in capsys.readouterr().out


@pytest.mark.reliability_case(
    'check-data-args',
    '`python -m tools.check_data` with a file as `--root`, or an unknown dataset name',
    "`tools.check_data: error: Dataset root <file> is a file; ...` / `Unknown dataset name(s) ['EuroSet']; known: ...` (exit 2)",
)
@pytest.mark.parametrize(
    ("argv_", "message"),
    [
        (["--root", "{file}"], "Dataset root {file} is a file; pass --root DATASET.ROOT, the folder of the datasets"),
        (["--root", "{dir}", "EuroSet"], "Unknown dataset name(s) ['EuroSet']; known: "),
    ],
)
def test_check_data_bad_arguments_are_one_line(tmp_path, capsys, argv_, message):
    (tmp_path / "f.txt").write_text("x")
    fill = {"file": str(tmp_path / "f.txt"), "dir": str(tmp_path)}
    assert check_data.main([a.format(**fill) for a in argv_]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tools.check_data: error: {message.format(**fill)}") and err.count("\n") == 1


@pytest.mark.reliability_case(
    'high-depth-images',
    '16-bit PNG (`I;16`), 32-bit integer (`I`) or float (`F`) grey images',
    'scaled to 8 bits (`convert("RGB")` alone clipped them: 99.5% white)',
)
# ---- images deeper than 8 bits -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("array", "mode"),
    [
        ((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16), "I;16"),
        ((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.int32), "I"),
        ((np.arange(64 * 64).reshape(64, 64) / 4095.0).astype(np.float32), "F"),
    ],
)
def test_high_depth_grey_images_are_scaled_not_clipped(tmp_path, array, mode):
    path = tmp_path / ("img.png" if mode == "I;16" else "img.tiff")  # PNG holds 16 bits, TIFF the others
    Image.fromarray(array).save(path)
    with Image.open(path) as img:
        assert img.mode == mode
    rgb = np.asarray(read_image(str(path)))
    white = 1.0 if mode == "F" else 65535.0
    expected = np.round(array.astype(np.float64) * 255.0 / white)
    assert rgb.shape == (64, 64, 3) and np.abs(rgb[..., 0] - expected).max() <= 1
    assert 100 < rgb.mean() < 155  # convert("RGB") alone gave 254 (99.5% white)


@pytest.mark.reliability_case(
    'yaml-top-level',
    'a `--config-file` whose top level is a list or a scalar',
    '`--config-file <file>: expected a mapping of config keys at the top level, got a list` (was a traceback)',
)
# ---- configs and checkpoints -------------------------------------------------------------------------
def test_a_yaml_whose_top_level_is_not_a_mapping_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- OPTIM\n- LR\n")
    assert error_of(["--trainer", "CoOp", "--config-file", str(cfg), "--output-dir", str(tmp_path / "o")],
                    capsys) == f"--config-file {cfg}: expected a mapping of config keys at the top level, got a list"  # fmt: skip


@pytest.mark.reliability_case(
    'pickle-payload',
    'a checkpoint holding a pickle payload (a call of `os.system`)',
    '`"<file>" holds a pickle payload that calls posix.system, not a checkpoint: refused without running it`',
)
def test_a_pickle_payload_is_named_and_not_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path = tmp_path / "model.pth.tar-1"
    torch.save({"state_dict": {}, "epoch": 1, "x": Payload()}, path)
    with pytest.raises(Exception) as err:
        load_checkpoint(str(path))
    assert str(err.value) == (
        f'"{path}" holds a pickle payload that calls {os.system.__module__}.system, not a checkpoint: refused '
        "without running it"
    )
    assert not (tmp_path / "ran").exists()


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, micro_clip):
    """A finished 2-epoch CoOp run with a checkpoint per epoch."""
    root = tmp_path_factory.mktemp("digits")
    out = tmp_path_factory.mktemp("two") / "run"
    args = coop_argv(root, out, micro_clip, "OPTIM.MAX_EPOCH", "2")
    assert train.run(args) == 0
    return root, out, args


@pytest.mark.reliability_case(
    'not-a-checkpoint',
    'the newest checkpoint is random bytes or text, or the `checkpoint` pointer names `../../../../etc/passwd`',
    'resume warns (`... is unreadable ...` / `Checkpoint pointer <file> names ..., not a file of its folder; ignored`) and continues from the previous checkpoint (was an IndexError/KeyError traceback)',
)
@pytest.mark.parametrize("damage", ["random bytes", "text", "forged pointer"])
def test_a_file_that_is_no_checkpoint_falls_back_to_the_previous_one(two_epochs, tmp_path, damage):
    root, finished, args = two_epochs
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    folder = out / "prompt_learner"
    if damage == "random bytes":
        (folder / "model.pth.tar-2").write_bytes(os.urandom(4096))
    elif damage == "text":
        (folder / "model.pth.tar-2").write_text("not a checkpoint\n")
    else:
        (folder / "checkpoint").write_text("../../../../etc/passwd\n")
        (folder / "model.pth.tar-2").unlink()
    assert train.run([str(out) if a == str(finished) else a for a in args]) == 0
    log = (out / "log.txt").read_text()
    if damage == "forged pointer":
        assert f'Checkpoint pointer "{folder / "checkpoint"}" names "../../../../etc/passwd", not a file of its ' \
               "folder; ignored" in log  # fmt: skip
    else:
        assert f'Warning: Checkpoint "{folder / "model.pth.tar-2"}" is unreadable (truncated or corrupt?): ' in log
        assert "Trying the next checkpoint" in log
    assert f'Loading checkpoint from "{folder / "model.pth.tar-1"}"' in log and "Previous epoch: 1" in log
    assert "epoch [2/2]" in log and "Finish training" in log


@pytest.mark.reliability_case(
    'disk-full-log',
    'the disk fills up while the log is written',
    '`Cannot write the log <file>: No space left on device (errno 28); the checkpoints saved so far are intact: ...` (exit 4)',
)
# ---- the machine runs out ----------------------------------------------------------------------------
def test_disk_full_while_logging_is_one_line_with_its_own_status(tmp_path, micro_clip, capsys, monkeypatch):
    import engine.utils.logger as logger_module

    def full_disk(path, mode="r", *a, **kw):
        return open("/dev/full" if os.path.basename(str(path)) == "log.txt" else path, mode, *a, **kw)

    monkeypatch.setattr(logger_module, "open", full_disk, raising=False)
    out = tmp_path / "out"
    message = error_of(coop_argv(tmp_path / "data", out, micro_clip), capsys, status=train.EXIT_DISK_FULL)
    assert message == (
        f"Cannot write the log {out / 'log.txt'}: No space left on device (errno 28); the checkpoints saved so far "
        "are intact: free space and re-run the same command to resume"
    )


@pytest.mark.reliability_case(
    'out-of-memory',
    'the GPU (or CPU) runs out of memory',
    '`out of GPU memory (...); the last checkpoint in <dir> is intact. Lower DATALOADER.TRAIN_X.BATCH_SIZE (now 4) or, ... DATALOADER.TEST.BATCH_SIZE (now 64), and re-run` (exit 3)',
)
def test_out_of_memory_names_the_batch_sizes_to_lower(tmp_path, micro_clip, capsys, monkeypatch):
    class Trainer:
        def get_model_names(self):
            return []

        def train(self):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train, "build_trainer", lambda cfg: Trainer())
    out = tmp_path / "out"
    assert train.run(coop_argv(tmp_path / "data", out, micro_clip)) == train.EXIT_OUT_OF_MEMORY
    assert capsys.readouterr().err == (
        f"train.py: error: out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB); the last checkpoint "
        f"in {out} is intact. Lower DATALOADER.TRAIN_X.BATCH_SIZE (now 4) or, if it failed while evaluating, "
        "DATALOADER.TEST.BATCH_SIZE (now 64), and re-run\n"
    )
