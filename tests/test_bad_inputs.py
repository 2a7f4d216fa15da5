"""The catalogue of bad inputs (docs/RELIABILITY.md): each one ends in the exact message asserted here.

``train.run`` is what ``python train.py`` executes: a user error becomes ``train.py: error: <message>``
on stderr and exit status 1 (one test runs the script itself to check that wiring). Dataset layout
errors add the expected folder tree after their first sentence. Runs use CoOp with a micro CLIP on a tiny
EuroSAT folder (2 classes, 3/1/2 images per class) or on Digits.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
from PIL import Image
from test_reliability import coop_argv, write_micro_clip

import clip
import train

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"AnnualCrop": "Annual Crop Land", "Forest": "Forest"}
LAYOUT = """Expected layout under DATASET.ROOT ({root}):
eurosat/
    2750/<Class>/<Class>_<n>.jpg     (AnnualCrop/, Forest/, ... SeaLake/)
    split_zhou_EuroSAT.json
See docs/DATASETS.md for how to obtain the data."""


@pytest.fixture(autouse=True)
def fast_env_info(monkeypatch):
    monkeypatch.setattr(train, "collect_env_info", lambda: "env info")


@pytest.fixture(scope="module")
def micro_clip(tmp_path_factory) -> Path:
    return write_micro_clip(tmp_path_factory.mktemp("clip") / "micro-clip.pt")


def make_eurosat(root: Path, images: bool = True, split: bool = True, extra_test: str = "") -> Path:
    """``root/eurosat`` with 6 images per class (train 3, val 1, test 2) and CoOp's split file format."""
    folder = root / "eurosat"
    folder.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, (name, cname) in enumerate(CLASSES.items()):
        for i in range(6):
            rel = f"{name}/{name}_{i}.jpg"
            if images:
                (folder / "2750" / name).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (32, 32), (200 * label, 60, 30 * i)).save(folder / "2750" / rel)
            parts["train" if i < 3 else "val" if i < 4 else "test"].append([rel, label, cname])
    if extra_test:
        parts["test"].append([extra_test, 1, "Forest"])
    if split:
        (folder / "split_zhou_EuroSAT.json").write_text(json.dumps(parts))
    return root


def argv(root: Path, out: Path, backbone: Path, *opts: str, trainer: str = "CoOp", flags: tuple = ()) -> list[str]:
    """CoOp (or CoCoOp) on the tiny EuroSAT; ``flags`` go before the trailing ``KEY VALUE`` options."""
    configs = {"CoOp": "CoOp/vit_b16.yaml", "CoCoOp": "CoCoOp/vit_b16_c4_ep10_batch1.yaml"}
    return [
        *flags, "--root", str(root), "--output-dir", str(out), "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", str(ROOT / "configs/datasets/eurosat.yaml"),
        "--config-file", str(ROOT / "configs/trainers" / configs[trainer]),
        "MODEL.BACKBONE.NAME", str(backbone), "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "2", "OPTIM.MAX_EPOCH", "1", "TRAINER.COOP.N_CTX", "4",
        "TRAINER.COCOOP.N_CTX", "4", *opts,
    ]


def error_of(args: list[str], capsys, status: int = 1) -> str:
    """Run train.py's entry point; it must fail with ``status`` and one ``train.py: error:`` message."""
    capsys.readouterr()
    assert train.run(args) == status
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: ") and err.endswith("\n") and "Traceback" not in err
    return err[len("train.py: error: "):-1]


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory) -> Path:
    return make_eurosat(tmp_path_factory.mktemp("eurosat"))


@pytest.fixture(scope="module")
def coop_run(eurosat, micro_clip, tmp_path_factory) -> Path:
    """A finished one-epoch CoOp run (N_CTX 4) whose checkpoints the loading errors use."""
    out = tmp_path_factory.mktemp("coop")
    assert train.run(argv(eurosat, out, micro_clip)) == 0
    return out


# ---------------------------------------------------------------------------------------------- datasets


def test_missing_dataset_root(tmp_path, micro_clip, capsys):
    root = tmp_path / "nowhere"
    assert error_of(argv(root, tmp_path / "out", micro_clip), capsys) == (
        f"EuroSAT: DATASET.ROOT {root} is not an existing folder.\n" + LAYOUT.format(root=root)
    )


def test_empty_dataset_root(tmp_path, micro_clip, capsys):
    root = tmp_path / "empty"
    root.mkdir()
    assert error_of(argv(root, tmp_path / "out", micro_clip), capsys) == (
        f"EuroSAT: missing dataset folder {root / 'eurosat'}.\n" + LAYOUT.format(root=root)
    )


def test_missing_split_file_without_images_to_rebuild_it(tmp_path, micro_clip, capsys):
    root = make_eurosat(tmp_path / "data", images=False, split=False)
    folder = root / "eurosat"
    assert error_of(argv(root, tmp_path / "out", micro_clip), capsys) == (
        f"EuroSAT: missing image folder {folder / '2750'}. (The split file {folder / 'split_zhou_EuroSAT.json'} "
        "is absent too, so the split had to be generated.)\n" + LAYOUT.format(root=root)
    )


def test_split_file_referencing_a_missing_image(tmp_path, micro_clip, capsys):
    root = make_eurosat(tmp_path / "data", extra_test="Forest/Forest_99.jpg")
    folder = root / "eurosat"
    assert error_of(argv(root, tmp_path / "out", micro_clip), capsys) == (
        f"Split file {folder / 'split_zhou_EuroSAT.json'} entry test[4] references a missing image: "
        f"{folder / '2750/Forest/Forest_99.jpg'}"
    )


def test_unreadable_image_is_found_before_training(tmp_path, micro_clip, capsys):
    root = make_eurosat(tmp_path / "data")
    broken = root / "eurosat/2750/Forest/Forest_5.jpg"  # a test image
    broken.write_bytes(b"half a download")
    (root / "eurosat/2750/Forest/Forest_4.jpg").write_bytes(b"")
    out = tmp_path / "out"
    assert error_of(argv(root, out, micro_clip), capsys) == (
        f"Cannot read image {broken.with_name('Forest_4.jpg')}: cannot identify image file "
        f"'{broken.with_name('Forest_4.jpg')}' (the test split of EuroSAT and 1 more; checked before training)"
    )
    assert "epoch [" not in (out / "log.txt").read_text() and not (out / "prompt_learner").exists()
    # Without the check (DATASET.CHECK_IMAGES False) the image fails where it is loaded, after training.
    assert error_of(argv(root, out, micro_clip, "DATASET.CHECK_IMAGES", "False"), capsys) == (
        f"Cannot read image {broken.with_name('Forest_4.jpg')}: cannot identify image file "
        f"'{broken.with_name('Forest_4.jpg')}'"
    )
    assert "Finish training" in (out / "log.txt").read_text()


def test_num_shots_larger_than_the_smallest_class_takes_all_with_a_warning(eurosat, tmp_path, micro_clip):
    """Dassl's behaviour, kept: every image of such a class is used, and the warning says so."""
    with pytest.warns(UserWarning) as caught:
        assert train.run(argv(eurosat, tmp_path / "out", micro_clip, "DATASET.NUM_SHOTS", "4", flags=("--no-train",))) == 0
    messages = {str(w.message) for w in caught}
    assert "Class 0 (Annual Crop Land) has only 3 images, fewer than NUM_SHOTS=4: all of them are used" in messages
    assert "Class 1 (Forest) has only 3 images, fewer than NUM_SHOTS=4: all of them are used" in messages


# ------------------------------------------------------------------------------------- names and configs


def test_unknown_dataset_and_trainer_names_list_the_known_ones(eurosat, tmp_path, micro_clip, capsys):
    known_trainers = ", ".join(sorted(train.TRAINER_REGISTRY.registered_names()))
    known_datasets = ", ".join(sorted(train.DATASET_REGISTRY.registered_names()))
    assert error_of(argv(eurosat, tmp_path, micro_clip, "DATASET.NAME", "EuroSet"), capsys) == (
        'Unknown dataset (DATASET.NAME): The requested one "EuroSet" is not available; did you mean "EuroSAT"? '
        f"Known: {known_datasets}"
    )
    args = argv(eurosat, tmp_path, micro_clip)
    args[args.index("CoOp")] = "CoOq"
    assert error_of(args, capsys) == (
        'Unknown trainer (--trainer, TRAINER.NAME): The requested one "CoOq" is not available; did you mean '
        f'"CoOp"? Known: {known_trainers}'
    )
    args = argv(eurosat, tmp_path, micro_clip)
    del args[args.index("--trainer"):args.index("--trainer") + 2]
    assert error_of(args, capsys) == f"No trainer given: pass --trainer NAME (known: {known_trainers})"
    assert not (tmp_path / "log.txt").exists()


def test_unknown_config_key_or_wrong_type(eurosat, tmp_path, micro_clip, capsys):
    assert error_of(argv(eurosat, tmp_path, micro_clip, "OPTIM.LERNING_RATE", "0.1"), capsys) == (
        "KEY VALUE options: Non-existent key: OPTIM.LERNING_RATE"
    )
    assert error_of(argv(eurosat, tmp_path, micro_clip, "OPTIM.MAX_EPOCH", "ten"), capsys) == (
        "KEY VALUE options: Type mismatch (<class 'int'> vs. <class 'str'>) with values (1 vs. ten) for config "
        "key: OPTIM.MAX_EPOCH"
    )
    method = tmp_path / "method.yaml"
    method.write_text("OPTIM:\n  LERNING_RATE: 0.1\n")
    args = argv(eurosat, tmp_path, micro_clip)
    args[args.index("--config-file") + 1] = str(method)
    assert error_of(args, capsys) == f"--config-file {method}: Non-existent config key: OPTIM.LERNING_RATE"
    method.write_text("OPTIM:\n  MAX_EPOCH: ten\n")
    before = train.setup_cfg(train.build_parser().parse_args(args[: args.index("--config-file")])).OPTIM.MAX_EPOCH
    assert error_of(args, capsys) == (
        f"--config-file {method}: Type mismatch (<class 'int'> vs. <class 'str'>) with values ({before} vs. ten) "
        "for config key: OPTIM.MAX_EPOCH"
    )


def test_config_file_not_found(eurosat, tmp_path, micro_clip, capsys):
    args = argv(eurosat, tmp_path, micro_clip)
    missing = tmp_path / "vit_b61.yaml"
    args[args.index("--config-file") + 1] = str(missing)
    assert error_of(args, capsys) == f"--config-file {missing}: no such file"


def test_output_directory_not_writable(eurosat, tmp_path, micro_clip, capsys):
    """Checked before any work. (Tests run as root, which may write anywhere: a file stands in the way.)"""
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "out"
    assert error_of(argv(eurosat, out, micro_clip), capsys) == f"OUTPUT_DIR {out} is not a writable folder: Not a directory"


# ------------------------------------------------------------------------------------ backbone and weights


def test_unknown_backbone(eurosat, tmp_path, capsys):
    assert error_of(argv(eurosat, tmp_path, Path("ViT-X/99")), capsys) == (
        f"CLIP backbone 'ViT-X/99' is neither a released model {clip.available_models()}, an existing checkpoint "
        f"file, 'random:<arch>' with arch in {sorted(clip.factory.ARCHS)}, 'open_clip:<model>/<pretrained>', "
        "nor 'toy:clip'"
    )


def test_weights_file_missing_offline(eurosat, tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(clip.pretrained.urllib.request, "urlopen", offline)
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "cache"))
    url = clip.pretrained._MODELS["ViT-B/16"]
    target = tmp_path / "cache" / "ViT-B-16.pt"
    assert error_of(argv(eurosat, tmp_path / "out", Path("ViT-B/16")), capsys) == (
        "could not download the CLIP checkpoint (<urlopen error [Errno -3] Temporary failure in name "
        f"resolution>). Without network access, place the file ViT-B-16.pt at {target} (get "
        f"it from {url}), or set CLIP_CACHE_DIR to the folder that holds it"
    )


# ------------------------------------------------------------------------------------------- checkpoints


def eval_epoch_1(model_dir: Path) -> tuple[str, ...]:
    return ("--eval-only", "--model-dir", str(model_dir), "--load-epoch", "1")


def test_load_epoch_that_does_not_exist(coop_run, eurosat, tmp_path, micro_clip, capsys):
    args = argv(eurosat, tmp_path, micro_clip, flags=("--eval-only", "--model-dir", str(coop_run), "--load-epoch", "7"))
    assert error_of(args, capsys) == (
        f'Model not found at "{coop_run / "prompt_learner/model.pth.tar-7"}" (that folder holds: model.pth.tar-1)'
    )


def test_checkpoint_with_incompatible_shapes(coop_run, eurosat, tmp_path, micro_clip, capsys):
    args = argv(eurosat, tmp_path, micro_clip, "TRAINER.COOP.N_CTX", "8", flags=eval_epoch_1(coop_run))
    assert error_of(args, capsys) == (
        f'"{coop_run / "prompt_learner/model.pth.tar-1"}" does not fit this model: shape mismatch for '
        "prompt_learner.ctx (checkpoint [4, 64], model [8, 64]) (saved with another configuration, e.g. another "
        "N_CTX, prompt depth or backbone?)"
    )


def test_checkpoint_of_a_different_method(coop_run, eurosat, tmp_path, micro_clip, capsys):
    args = argv(eurosat, tmp_path, micro_clip, trainer="CoCoOp", flags=eval_epoch_1(coop_run))
    message = error_of(args, capsys)
    assert message == (
        f'"{coop_run / "prompt_learner/model.pth.tar-1"}" does not fit this model: checkpoint does not match this '
        "model's prompt learner: missing ['prompt_learner.meta_net.linear1.bias', "
        "'prompt_learner.meta_net.linear1.weight', 'prompt_learner.meta_net.linear2.bias', "
        "'prompt_learner.meta_net.linear2.weight'], unexpected [] (was it trained with another method or another "
        "TRAINER.* setting?)"
    )


# -------------------------------------------------------------------------------------------- training


def test_non_finite_loss_stops_with_the_step_and_the_last_finite_values(tmp_path, micro_clip, capsys):
    """LR 1e30 after the warmup epoch: the second step of epoch 2 diverges."""
    out = tmp_path / "out"
    args = coop_argv(tmp_path / "digits", out, micro_clip, "OPTIM.LR", "1e30")
    message = error_of(args, capsys)
    last = re.search(r"^epoch \[2/3\] batch \[1/2\] .* loss (\S+) \(", (out / "log.txt").read_text(), re.M).group(1)
    assert message == (
        f"Loss is nan at epoch [2/3] batch [2/2]; last finite values at epoch [2/3] batch [1/2]: loss {last}. "
        "Training stopped: lower OPTIM.LR or check the inputs"
    )
    # The traceback is kept in the log for debugging; the console got one line.
    assert "Traceback (most recent call last)" in (out / "log.txt").read_text()


def test_coprompt_description_file_missing_a_class(tmp_path, micro_clip, capsys):
    """Checked in ``before_train``, before the first step."""
    descriptions = tmp_path / "digits_prompt.json"
    names = ["zero", "one", "two", "three"]  # "four" is missing
    descriptions.write_text(json.dumps({name: [f"a handwritten {name}."] for name in names}))
    args = coop_argv(tmp_path / "digits", tmp_path / "out", micro_clip,
                     "TRAINER.CoPrompt.DESCRIPTION_FILE", str(descriptions), "TRAINER.CoPrompt.PROMPT_DEPTH", "2",
                     "TRAINER.CoPrompt.DATASET_TABLE", "False")
    args[args.index("CoOp")] = "CoPrompt"
    args[args.index(str(ROOT / "configs/trainers/CoOp/vit_b16.yaml"))] = str(ROOT / "configs/trainers/CoPrompt/coprompt.yaml")
    assert error_of(args, capsys) == (
        f"class 'four' has no descriptions in {descriptions} (the file has 4 classes, e.g. ['one', 'three', 'two'])"
    )


# --------------------------------------------------------------------------------------------- the script


def test_the_script_prints_one_line_and_exits_with_status_1(tmp_path):
    """``python train.py`` itself (``sys.exit(run())``), for several bad command lines in one interpreter."""
    cases = [
        ["--trainer", "Nope", "--output-dir", str(tmp_path)],
        ["--seed", "abc"],
        ["--trainer", "CoOp", "OPTIM.MAX_EPOCH", "1", "--output-dir", str(tmp_path)],
    ]
    code = (
        "import runpy, sys\n"
        f"for argv in {cases!r}:\n"
        "    sys.argv = ['train.py', *argv]\n"
        "    try:\n"
        "        runpy.run_path('train.py', run_name='__main__')\n"
        "    except SystemExit as e:\n"
        "        print(f'@@ exit {e.code}', file=sys.stderr, flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    outputs = done.stderr.split("@@ exit ")
    assert [o.split("\n", 1)[0] for o in outputs[1:]] == ["1", "1", "1"]
    unknown, seed, late_flag = outputs[0], outputs[1].split("\n", 1)[1], outputs[2].split("\n", 1)[1]
    assert unknown.count("\n") == 1
    assert unknown.startswith('train.py: error: Unknown trainer (--trainer, TRAINER.NAME): The requested one "Nope"')
    assert seed.startswith("usage: train.py") and seed.endswith("train.py: error: argument --seed: invalid int value: 'abc'\n")
    assert late_flag == (
        "train.py: error: KEY VALUE options: --output-dir comes after the KEY VALUE pairs; put every --flag before "
        "them (everything after the first KEY is read as KEY VALUE pairs)\n"
    )


# ------------------------------------------------------------------- flags, config syntax, interruptions


def test_flags_and_values_that_would_be_ignored_or_misread(eurosat, coop_run, tmp_path, micro_clip, capsys):
    out = tmp_path / "out"
    run = argv(eurosat, out, micro_clip)
    for flags, message in [
        (("--model-dir", str(coop_run)), "--model-dir applies only with --eval-only; training resumes from its "
         "own --output-dir (or from --resume DIR)"),
        (("--best", "--load-epoch", "1"), "--load-epoch, --best apply only with --eval-only; training resumes "
         "from its own --output-dir (or from --resume DIR)"),
        (("--resume", str(tmp_path / "nowhere")),
         f"--resume {tmp_path / 'nowhere'}: no such folder (expected a training run's output dir)"),
        (("--resume", str(tmp_path)), f'RESUME (--resume) "{tmp_path}" holds no checkpoint (expected '
         "<folder>/<model name>/checkpoint for ['prompt_learner']); drop --resume to train from scratch"),
        (("--eval-only",), "--eval-only without --model-dir would evaluate the untrained CoOp (prompt_learner); "
         "pass --model-dir <the training run's output dir>"),
    ]:
        assert error_of([*flags, *run], capsys) == message
    keys = run.index("MODEL.BACKBONE.NAME")
    assert error_of([*run, "--output-dir", str(out)], capsys) == (
        "KEY VALUE options: --output-dir comes after the KEY VALUE pairs; put every --flag before them "
        "(everything after the first KEY is read as KEY VALUE pairs)"
    )
    known = error_of([*run[:keys], "--trainer", "bmip", *run[keys:]], capsys)
    assert known.startswith('Unknown trainer (--trainer, TRAINER.NAME): The requested one "bmip" is not available; '
                            'did you mean "BMIP"?')  # fmt: skip
    afile = tmp_path / "afile"
    afile.write_text("")
    assert error_of(argv(afile, out, micro_clip), capsys) == (
        f"DATASET.ROOT (--root) {afile} is a file; expected the folder that holds the datasets"
    )
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("OPTIM:\n  LR: [0.1\n  MAX_EPOCH: 2\n")
    # (a later --config-file wins)
    assert error_of([*run[:keys], "--config-file", str(broken_yaml), *run[keys:]], capsys) == (
        f"--config-file {broken_yaml}: not valid YAML: expected ',' or ']', but got ':' at line 3, column 12"
    )
    assert error_of([*run, "DATALOADER.TRAIN_X.BATCH_SIZE", "0"], capsys) == (
        "DATALOADER.TRAIN_X.BATCH_SIZE must be >= 1, got 0"
    )
    prompts = coop_run / "prompt_learner" / "model.pth.tar-1"
    assert error_of([*run, "MODEL.BACKBONE.NAME", str(prompts)], capsys) == (
        f"CLIP backbone file {prompts}: not an OpenAI CLIP state dict: key 'visual.layer1.0.conv1.weight' is "
        "missing (a trained prompt checkpoint such as model.pth.tar-N is loaded with --eval-only --model-dir DIR, "
        "not as the backbone)"
    )
    # argparse's own errors (a value of the wrong type) exit with 1 like every other user error, not 2.
    capsys.readouterr()
    assert train.run(["--seed", "abc"]) == 1
    assert "error: argument --seed: invalid int value: 'abc'" in capsys.readouterr().err


def test_empty_train_split_names_the_split_file(tmp_path, micro_clip, capsys):
    root = make_eurosat(tmp_path / "data")
    split = root / "eurosat/split_zhou_EuroSAT.json"
    split.write_text(json.dumps({**json.loads(split.read_text()), "train": []}))
    assert error_of(argv(root, tmp_path / "out", micro_clip), capsys) == (
        f"EuroSAT: the train split is empty; check {split}"
    )


def test_ctrl_c_says_where_it_stopped_and_the_same_command_resumes(eurosat, tmp_path, micro_clip, capsys, monkeypatch):
    from engine.engine import TrainerX

    out = tmp_path / "out"
    run = argv(eurosat, out, micro_clip, "OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1")
    real_run_epoch = TrainerX.run_epoch

    def interrupted_in_epoch_2(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        real_run_epoch(self)

    monkeypatch.setattr(TrainerX, "run_epoch", interrupted_in_epoch_2)
    capsys.readouterr()
    assert train.run(run) == 130
    assert capsys.readouterr().err == (
        "train.py: interrupted at epoch 2/2; re-run the same command to resume from the last checkpoint\n"
    )
    log = (out / "log.txt").read_text()
    # NUM_SHOTS < 1 keeps Dassl's meaning (all images) and says so; the traceback is in the log only.
    assert "DATASET.NUM_SHOTS is -1: every train and val image is used (Dassl's convention for < 1)\n" in log
    assert log.rstrip().endswith("KeyboardInterrupt")
    monkeypatch.setattr(TrainerX, "run_epoch", real_run_epoch)
    assert train.run(run) == 0
    log = (out / "log.txt").read_text()
    assert "Previous epoch: 1" in log and "epoch [2/2] batch [3/3]" in log and "Finish training" in log


def test_full_disk_is_one_line_naming_the_checkpoint(eurosat, tmp_path, micro_clip, capsys, monkeypatch):
    from engine.utils import torchtools

    def full_disk(path, mode="r", *args, **kwargs):
        """Checkpoint temp files go to /dev/full, where every write fails with ENOSPC."""
        if ".tmp-" in os.path.basename(str(path)) and "w" in mode:
            path = "/dev/full"
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(torchtools, "open", full_disk, raising=False)
    out = tmp_path / "out"
    assert error_of(argv(eurosat, out, micro_clip), capsys, status=train.EXIT_DISK_FULL) == (
        f"Cannot write checkpoint {out / 'prompt_learner' / 'model.pth.tar-1'}: No space left on device (errno 28)"
    )
    assert not list((out / "prompt_learner").iterdir())
