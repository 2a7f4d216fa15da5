"""Train or evaluate a prompt-learning method on CLIP, with the CoOp/MaPLe/BMIP command line.

    python train.py --root DATA --trainer BMIP --dataset-config-file configs/datasets/eurosat.yaml \\
        --config-file configs/trainers/BMIP/<name>.yaml --output-dir OUT --seed 1 \\
        DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base

Config merge order (a later step overrides an earlier one):
1. engine defaults (``engine.config.get_cfg_default``);
2. ``extend_cfg``: the family keys below and every method subtree (``trainers/config.py``);
3. ``--dataset-config-file``;
4. ``--config-file`` (the method YAML; BMIP's own train.py merged it before the dataset YAML);
5. command-line flags (``--root``, ``--seed``, ``--trainer`` ...; only flags actually given);
6. a trainer's per-dataset table (``dataset_opts``: MMRL's, as its release merges it here);
7. trailing ``KEY VALUE`` pairs;
then the config is frozen. yacs rejects unknown keys and values of the wrong type.

Seeds: ``SEED >= 0`` seeds python, numpy and torch (``--seed 0`` is a real seed; the default -1 leaves
a YAML ``SEED`` alone). ``MODEL.INIT_SEED >= 0`` then re-seeds torch only, as BMIP does (its
configs use 48), so the few-shot split follows SEED while model initialisation follows INIT_SEED.
The device is cuda when available and ``USE_CUDA``, else cpu; ``--device`` overrides it.

Errors a user can cause (a wrong path, name, config key or value, missing data or weights, an unusable
checkpoint, a diverging loss) are printed as one ``train.py: error: ...`` message on stderr and the
script exits with status 1; the traceback goes to ``log.txt`` only. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import yaml
from yacs.config import CfgNode as CN

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)
from clip.open_clip_backbone import OPEN_CLIP_PREFIX, preprocess_config
from engine.config import apply_cfg_hooks, get_cfg_default
from engine.data.datasets import DATASET_REGISTRY
from engine.engine import TRAINER_REGISTRY, build_trainer
from engine.utils import check_availability, collect_env_info, set_random_seed, setup_logger
from engine.utils.torchtools import allow_pickled_checkpoints
from tools import run_record
from tools.run_lock import FolderBusy, FolderLock
from trainers.config import extend_trainer_cfg


def build_parser() -> argparse.ArgumentParser:
    # The docstring is RST for the docs; --help shows it as plain text, line breaks kept.
    description = __doc__.replace("``", "")
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, default="", help="path to the datasets folder (DATASET.ROOT)")
    parser.add_argument("--output-dir", type=str, default=None, help="output directory (OUTPUT_DIR)")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory to resume from (RESUME)")
    parser.add_argument("--seed", type=int, default=-1, help="seed (SEED); a negative value keeps the config's")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains (DG/DA)")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains (DG/DA)")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation choices (INPUT.TRANSFORMS)")
    parser.add_argument("--config-file", type=str, default="", help="method config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="dataset config file")
    parser.add_argument("--trainer", type=str, default="", help="trainer name (TRAINER.NAME)")
    parser.add_argument("--backbone", type=str, default="", help="backbone name (MODEL.BACKBONE.NAME)")
    parser.add_argument("--head", type=str, default="", help="head name (MODEL.HEAD.NAME)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate only")
    parser.add_argument("--model-dir", type=str, default="", help="load the model from this directory (eval-only)")
    parser.add_argument("--load-epoch", type=int, help="load model.pth.tar-<epoch> (eval-only)")
    parser.add_argument("--best", action="store_true", help="eval-only: load model-best.pth.tar (BMIP flag)")
    parser.add_argument("--no-train", action="store_true", help="build everything but do not train")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read checkpoints that pickle objects other than real Dassl's schedulers and optimizers (which "
        "load without it): only tensors and plain values are rebuilt, nothing in the file runs; trusted files only",
    )
    parser.add_argument("--device", type=str, default="", help='torch device, e.g. "cpu" or "cuda:0" (DEVICE)')
    parser.add_argument(
        "opts", default=None, nargs=argparse.REMAINDER, help="modify config options as KEY VALUE pairs at the end"
    )
    return parser


def extend_cfg(cfg: CN) -> None:
    """Add the keys this family uses beyond Dassl's defaults, then every method's subtree.

    - ``DATASET.SUBSAMPLE_CLASSES``: "all", "base" or "new" (base-to-new generalisation).
    - ``MODEL.INIT_SEED``: torch seed for model initialisation; -1 means "use SEED" (CoOp/MaPLe).
    - ``DATASET.CHECK_IMAGES``: decode every image header of every split before training (a damaged test
      image must not surface only after hours of training); False skips the check.
    - ``TRAIN.EARLY_STOPPING``, ``TRAIN.PATIENT_COUNT``, ``TEST.NO_TEST_EARLY``: BMIP's early-stopping
      keys with BMIP's defaults; only trainers that implement early stopping read them.
    - ``DATASET.IMAGE_FOLDER`` / ``DATASET.IMAGE_LIST``: a user's folder of class folders, or CSV of
      ``path,label``, for ``DATASET.NAME ImageFolder``; ``DATASET.IMAGE_FOLDER_SPLIT`` (train/val/test
      fractions) and ``DATASET.IMAGE_FOLDER_SPLIT_SEED`` make its split (datasets/image_folder.py).
    """
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    cfg.DATASET.CHECK_IMAGES = True
    cfg.MODEL.INIT_SEED = -1
    cfg.TRAIN.EARLY_STOPPING = True
    cfg.TRAIN.PATIENT_COUNT = 3
    cfg.TEST.NO_TEST_EARLY = True
    cfg.DATASET.IMAGE_FOLDER = ""
    cfg.DATASET.IMAGE_LIST = ""
    cfg.DATASET.IMAGE_FOLDER_SPLIT = [0.5, 0.2, 0.3]
    cfg.DATASET.IMAGE_FOLDER_SPLIT_SEED = 0
    extend_trainer_cfg(cfg)
    # Last, so that an outside trainer file's own keys (its ``extend_cfg``) replace ours of the same name.
    apply_cfg_hooks(cfg)


class ConfigAssertionError(AssertionError):
    """yacs reports some config errors (an unknown ``KEY VALUE`` key, an odd-length list) with ``assert``;
    re-raised as this type so that ``run`` can tell them from a failing assertion in the code."""


@contextmanager
def _config_errors(source: str) -> Iterator[None]:
    """Re-raise yacs' merge errors with ``source`` (a flag and file, or the KEY VALUE options) in front."""
    try:
        yield
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or " ".join(str(e).split())
        raise ValueError(f"{source}: not valid YAML: {problem}{where}") from None
    except KeyError as e:
        raise KeyError(f"{source}: {e.args[0]}") from e
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e
    except AssertionError as e:
        raise ConfigAssertionError(f"{source}: {e}") from e


def _merge_file(cfg: CN, path: str, flag: str) -> None:
    """Merge a YAML file, naming the flag and the file in every error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path}: no such file")
    with _config_errors(f"{flag} {path}"):
        with open(path) as f:
            top = yaml.safe_load(f)
        if top is not None and not isinstance(top, dict):
            raise ValueError(f"expected a mapping of config keys at the top level, got a {type(top).__name__}")
        cfg.merge_from_file(path)


def reset_cfg(cfg: CN, args: argparse.Namespace) -> None:
    """Apply the command-line flags that were given."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir is not None:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed >= 0:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head
    if args.device:
        cfg.DEVICE = args.device


def setup_cfg(args: argparse.Namespace) -> CN:
    """Build the frozen config in the documented merge order."""
    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        _merge_file(cfg, args.dataset_config_file, "--dataset-config-file")
    if args.config_file:
        _merge_file(cfg, args.config_file, "--config-file")
    reset_cfg(cfg, args)
    flags = [o for o in args.opts or [] if o.startswith("--") and o[2:3].isalpha()]
    if flags:
        raise ValueError(
            f"KEY VALUE options: {flags[0]} comes after the KEY VALUE pairs; put every --flag before them "
            "(everything after the first KEY is read as KEY VALUE pairs)"
        )
    with _config_errors("KEY VALUE options"):
        merge_dataset_table(cfg, args.opts or [])
        cfg.merge_from_list(args.opts or [])
    follow_backbone_preprocessing(cfg)
    cfg.freeze()
    return cfg


def follow_backbone_preprocessing(cfg: CN) -> None:
    """An ``open_clip:`` backbone sets INPUT.SIZE / PIXEL_MEAN / PIXEL_STD / INTERPOLATION to its pretrained
    tag's preprocessing (the configs carry OpenAI's); docs/CLIP.md. Other backbones keep the config's."""
    if not cfg.MODEL.BACKBONE.NAME.startswith(OPEN_CLIP_PREFIX):
        return
    pp = preprocess_config(cfg.MODEL.BACKBONE.NAME)
    cfg.INPUT.SIZE = (pp["size"], pp["size"])
    cfg.INPUT.PIXEL_MEAN = list(pp["mean"])
    cfg.INPUT.PIXEL_STD = list(pp["std"])
    cfg.INPUT.INTERPOLATION = pp["interpolation"]
    if pp["resize_mode"] != "shortest":
        print(
            f"Note: {cfg.MODEL.BACKBONE.NAME} was evaluated with resize mode {pp['resize_mode']!r}; the test "
            "pipeline resizes the shorter side and center-crops (the same on square images)"
        )


def merge_dataset_table(cfg: CN, opts: Sequence[str]) -> None:
    """A trainer's per-dataset values (its ``dataset_opts(cfg)``), merged after the config files and before
    the command line, so a command-line value wins over the table as in the releases that have one (MMRL)."""
    if cfg.TRAINER.NAME not in TRAINER_REGISTRY.registered_names():
        return  # check_names reports it
    dataset_opts = getattr(TRAINER_REGISTRY.get(cfg.TRAINER.NAME), "dataset_opts", None)
    if dataset_opts is not None:
        final = cfg.clone()  # the dataset, and the table's own switch, as the command line leaves them
        final.merge_from_list(list(opts))
        cfg.merge_from_list(dataset_opts(final))


def check_names(cfg: CN) -> None:
    """Fail early, before any work, on a missing or unknown trainer or dataset name."""
    known_trainers = TRAINER_REGISTRY.registered_names()
    if not cfg.TRAINER.NAME:
        raise ValueError(f"No trainer given: pass --trainer NAME (known: {', '.join(sorted(known_trainers))})")
    try:
        check_availability(cfg.TRAINER.NAME, known_trainers)
    except ValueError as e:
        raise ValueError(f"Unknown trainer (--trainer, TRAINER.NAME): {e}") from e
    known_datasets = DATASET_REGISTRY.registered_names()
    if not cfg.DATASET.NAME:
        raise ValueError(
            "No dataset given: pass --dataset-config-file or DATASET.NAME "
            f"(known: {', '.join(sorted(known_datasets))})"
        )
    try:
        check_availability(cfg.DATASET.NAME, known_datasets)
    except ValueError as e:
        raise ValueError(f"Unknown dataset (DATASET.NAME): {e}") from e


def check_flags(args: argparse.Namespace, cfg: CN) -> None:
    """Refuse flags that would be ignored or silently change what runs (Dassl ignored them)."""
    if not args.eval_only:
        given = {"--model-dir": bool(args.model_dir), "--load-epoch": args.load_epoch is not None, "--best": args.best}
        ignored = [name for name, present in given.items() if present]
        if ignored:
            raise ValueError(
                f"{', '.join(ignored)} {'applies' if len(ignored) == 1 else 'apply'} only with --eval-only; training "
                "resumes from its own --output-dir (or from --resume DIR)"
            )
    if args.resume and not os.path.isdir(args.resume):
        raise FileNotFoundError(f"--resume {args.resume}: no such folder (expected a training run's output dir)")
    if os.path.isfile(cfg.DATASET.ROOT):
        raise NotADirectoryError(
            f"DATASET.ROOT (--root) {cfg.DATASET.ROOT} is a file; expected the folder that holds the datasets"
        )


def check_output_dir(path: str) -> None:
    """Fail before any work when OUTPUT_DIR cannot be created or written (not hours later, at a checkpoint)."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise PermissionError(f"OUTPUT_DIR {path} is not a writable folder: {e.strerror or e}") from e


def check_run_intent(args: argparse.Namespace, cfg: CN) -> None:
    """Refuse settings under which the printed accuracy would not measure the work asked for."""
    if not cfg.OUTPUT_DIR.strip():
        raise ValueError("OUTPUT_DIR (--output-dir) is empty; name the folder this run writes to")
    if cfg.TEST.SPLIT not in ("val", "test"):
        raise ValueError(f"TEST.SPLIT must be 'val' or 'test', got {cfg.TEST.SPLIT!r}")
    if cfg.OPTIM.MAX_EPOCH <= 0 and not (args.eval_only or args.no_train):
        raise ValueError(
            f"OPTIM.MAX_EPOCH {cfg.OPTIM.MAX_EPOCH} trains nothing, so the accuracy printed would be the untrained "
            "model's; pass --eval-only (with --model-dir) to evaluate without training"
        )


def _evaluates(args: argparse.Namespace) -> dict[str, object] | None:
    """What an --eval-only run evaluates, for its folder's record: the model folder's fingerprint and epoch."""
    if not args.eval_only:
        return None
    model = ""
    if args.model_dir:
        record = run_record.read_record(args.model_dir)
        model = record["fingerprint"] if record else os.path.abspath(args.model_dir)
    return {"MODEL": model, "EPOCH": "best" if args.best else args.load_epoch}


def set_seeds(cfg: CN) -> None:
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    else:
        print(f"SEED {cfg.SEED}: this run is unseeded (python, numpy and torch are not seeded; it will not repeat)")
    if cfg.MODEL.INIT_SEED >= 0:
        print(f"Setting torch seed for model initialisation: {cfg.MODEL.INIT_SEED}")
        torch.manual_seed(cfg.MODEL.INIT_SEED)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(cfg.MODEL.INIT_SEED)


def print_args(args: argparse.Namespace, cfg: CN) -> None:
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(args.__dict__):
        print(f"{key}: {args.__dict__[key]}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    allow_pickled_checkpoints(args.allow_pickle)
    cfg = setup_cfg(args)
    check_names(cfg)
    check_flags(args, cfg)
    check_run_intent(args, cfg)
    check_output_dir(cfg.OUTPUT_DIR)
    with FolderLock(cfg.OUTPUT_DIR, what="OUTPUT_DIR"):
        run_record.check_and_write(cfg.OUTPUT_DIR, cfg, cfg.dump(), args.opts or [], _evaluates(args))
        _run(args, cfg)


def _run(args: argparse.Namespace, cfg: CN) -> None:
    """Everything after the checks, with the output folder locked and its record written."""
    logger = setup_logger(cfg.OUTPUT_DIR)
    trainer = None
    try:
        set_seeds(cfg)
        if torch.cuda.is_available() and cfg.USE_CUDA:
            torch.backends.cudnn.benchmark = True
        print_args(args, cfg)
        print("Collecting env info ...")
        print(f"** System info **\n{collect_env_info()}\n")

        trainer = build_trainer(cfg)
        if args.eval_only:
            if not args.model_dir and trainer.get_model_names():
                raise ValueError(
                    f"--eval-only without --model-dir would evaluate the untrained {cfg.TRAINER.NAME} "
                    f"({', '.join(trainer.get_model_names())}); pass --model-dir <the training run's output dir>"
                )
            epoch = None if args.best else args.load_epoch
            trainer.load_model(args.model_dir, epoch=epoch)
            trainer.test()
            return
        if not args.no_train:
            trainer.train()
    except BaseException as e:
        if logger is not None and logger.file is not None:
            traceback.print_exc(file=logger.file)
        if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
            raise OutOfMemory(_out_of_memory_advice(e, cfg)) from e
        if isinstance(e, KeyboardInterrupt):
            raise Interrupted(_interrupted_where(trainer, args), 143 if isinstance(e, Terminated) else 130) from e
        raise
    finally:
        if logger is not None:
            logger.close()


class OutOfMemory(Exception):
    """The GPU (or CPU) ran out of memory: ``run`` names the batch sizes to lower."""


def _out_of_memory_advice(error: BaseException, cfg: CN) -> str:
    device = "GPU" if isinstance(error, torch.OutOfMemoryError) else "CPU"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"out of {device} memory ({first}); the last checkpoint in {cfg.OUTPUT_DIR} is intact. Lower "
        f"DATALOADER.TRAIN_X.BATCH_SIZE (now {cfg.DATALOADER.TRAIN_X.BATCH_SIZE}) or, if it failed while "
        f"evaluating, DATALOADER.TEST.BATCH_SIZE (now {cfg.DATALOADER.TEST.BATCH_SIZE}), and re-run"
    )


class Interrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM during a run: ``run`` prints where it stopped instead of the traceback."""

    def __init__(self, message: str, code: int = 130) -> None:
        super().__init__(message)
        self.code = code


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``kill``, ``tools.sweep`` passing its own on): handled like Ctrl-C, so the
    output folder's lock is released on the way out."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _interrupted_where(trainer: object, args: argparse.Namespace) -> str:
    if args.eval_only:
        return "interrupted during the evaluation; re-run the same command to evaluate again"
    if not hasattr(trainer, "time_start"):  # set when training starts (SimpleTrainer.before_train)
        return "interrupted before training started; re-run the same command to start"
    return (
        f"interrupted at epoch {trainer.epoch + 1}/{trainer.max_epoch}; re-run the same command to resume "
        "from the last checkpoint"
    )


# Exceptions that report a user's mistake (see the module docstring); anything else is a bug and keeps
# its traceback on the console.
USER_ERRORS = (OSError, ValueError, KeyError, FloatingPointError, pickle.UnpicklingError, ConfigAssertionError)


def error_message(error: BaseException) -> str:
    """The sentence of a user error: no ``KeyError`` quotes, no DataLoader-worker traceback around it."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]
    else:
        text = str(error)
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: keep the original error line
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def run(argv: Sequence[str] | None = None) -> int:
    """``main`` for the command line: a user error becomes one message on stderr and an exit status
    (``exit_code``: 1 for a mistake in the input)."""
    try:
        main(argv)
    except SystemExit as e:  # argparse's usage errors exit with 2; every user error here exits with 1
        if e.code == 2:
            return 1
        raise
    except Interrupted as e:
        print(f"train.py: {e}", file=sys.stderr)
        return e.code
    except OutOfMemory as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except USER_ERRORS as e:
        print(f"train.py: error: {error_message(e)}", file=sys.stderr)
        return exit_code(e)
    return 0


# Exit statuses: 1 a mistake in the input (config, flags, data, checkpoints); the others are conditions of
# the machine or of another process, which a scheduler may want to tell apart (docs/RELIABILITY.md).
EXIT_OUT_OF_MEMORY = 3
EXIT_DISK_FULL = 4
EXIT_FOLDER_BUSY = 5


def exit_code(error: BaseException) -> int:
    """The exit status of a user error: 1, except a full disk (4) and a folder in use by another run (5)."""
    if isinstance(error, FolderBusy):
        return EXIT_FOLDER_BUSY
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return EXIT_DISK_FULL
    return 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(run())
