"""Dassl-compatible result parser: ``python -m tools.parse_test_res <dir> [--test-log] [--ci95] ...``.

Same flags, same reading rules and the same printed summary as the ``parse_test_res.py`` of CoOp and
MaPLe, so their usage notes apply unchanged:

- every non-hidden subdirectory of ``<dir>`` is one run (one seed) and must hold ``log.txt``;
- numbers are read only from the line that equals the end signal onwards (``Finish training`` for
  training logs, ``=> result`` with ``--test-log`` for eval-only logs), and the last match wins;
- accuracies printed with one or two decimals both parse; the spread is the population std (ddof 0),
  or ``1.96*std/sqrt(n)`` with ``--ci95``;
- ``--multi-exp`` treats each subdirectory as one experiment (its subdirectories are the seeds).

One departure: runs are grouped by the dataset and label space (``DATASET.NAME`` and
``DATASET.SUBSAMPLE_CLASSES``, read from the config each log prints) and each group gets its own
summary, so a folder holding a base run and a new-class run is never averaged into one figure (the
Dassl script did that silently). A folder of one group prints exactly the Dassl summary.

MaPLe's copy looks for ``Finished training``; ``--end-signal`` accepts any other end line.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.metrics import summarize

__all__ = [
    "TRAIN_END",
    "TEST_END",
    "metric_regex",
    "parse_log",
    "read_log_header",
    "read_epoch_curves",
    "run_group",
    "parse_directory",
    "main",
]

TRAIN_END = "Finish training"
TEST_END = "=> result"


def metric_regex(keyword: str) -> re.Pattern[str]:
    """The Dassl pattern for one metric line, e.g. ``* accuracy: 81.2%``."""
    return re.compile(rf"\* {re.escape(keyword)}: ([\.\deE+-]+)%")


def parse_log(
    path: str | Path, end_signal: str = TRAIN_END, keywords: Sequence[str] = ("accuracy",)
) -> dict[str, float]:
    """Metrics of one ``log.txt``: values after the first end-signal line, the last match winning.

    A missing file, or a log that never reached its end signal, gives an empty dict: the run is not
    finished. Callers decide whether that is an error.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    patterns = {kw: metric_regex(kw) for kw in keywords}
    found: dict[str, float] = {}
    started = False
    with path.open(errors="replace") as f:
        for raw in f:
            line = raw.strip()
            if line == end_signal:
                started = True
            if not started:
                continue
            for kw, pattern in patterns.items():
                match = pattern.search(line)
                if match:
                    try:
                        found[kw] = float(match.group(1))
                    except ValueError:
                        continue
    return found


_ARGS_START = "** Arguments **"
_CONFIG_START = "** Config **"
_HEADER_END = ("Collecting env info", "** System info **")
UNKNOWN = "?"


def read_log_header(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """(arguments, config) that train.py (and Dassl's train.py) print at the top of ``log.txt``.

    Arguments are ``{flag: value}``; the yacs config is flattened to ``{"DATASET.NAME": value}`` from
    its two-space indentation. Values stay strings, as printed. Only the first blocks are read (a
    resumed run prints the same ones again); a log without them gives empty dicts.
    """
    args: dict[str, str] = {}
    config: dict[str, str] = {}
    target: dict[str, str] | None = None
    stack: list[str] = []
    last_key = None
    with Path(path).open(errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            stripped = line.strip()
            if stripped == _ARGS_START and not args:
                target = args
                continue
            if stripped == _CONFIG_START and not config:
                target, stack = config, []
                continue
            if target is None or set(stripped) == {"*"}:
                continue
            if line.startswith(_HEADER_END) or line.startswith("** "):
                if target is config:
                    break
                target = None
                continue
            if target is args:
                key, sep, value = line.partition(": ")
                if sep or line.endswith(":"):
                    args[key.rstrip(":")] = value
                continue
            level = (len(line) - len(line.lstrip(" "))) // 2
            key, sep, value = line.lstrip(" ").partition(":")  # "KEY: " is an empty value, "KEY:" a section
            if not sep or " " in key or level > len(stack):
                if last_key is not None:  # a value printed over several lines
                    config[last_key] += "\n" + stripped
                continue
            del stack[level:]
            if value == "":
                stack.append(key)
                last_key = None
            else:
                last_key = ".".join([*stack, key])
                config[last_key] = value[1:] if value.startswith(" ") else value
    return args, config


_EPOCH_LINE = re.compile(r"^epoch \[(\d+)/(\d+)\] batch \[(\d+)/(\d+)\] (.*)$")
_METER = re.compile(r"(\w+) ([-+\d.eE]+|nan|inf) \(([-+\d.eE]+|nan|inf)\)")
_LR = re.compile(r"\blr ([-+\d.eE]+)")
_NOT_CURVES = ("time", "data")  # the batch line's timers, not training quantities


def read_epoch_curves(path: str | Path) -> dict[str, dict[int, float]]:
    """Per-epoch training quantities from a log's batch lines: ``{"loss": {1: 1.23, ...}, "lr": ...}``.

    A batch line (``epoch [e/E] batch [b/B] ... loss 0.2 (1.0) acc 93.7 (70.6) lr 3.5e-03 ...``, the
    engine's and Dassl's format) prints each meter's running mean over the epoch in brackets; the last
    line of an epoch gives that epoch's mean (exact when its last batch is printed), and ``lr`` its
    learning rate. A resumed run prints redone epochs again: the later lines win.
    """
    curves: dict[str, dict[int, float]] = {}
    path = Path(path)
    if not path.is_file():
        return curves
    with path.open(errors="replace") as f:
        for raw in f:
            match = _EPOCH_LINE.match(raw.strip())
            if match is None:
                continue
            epoch, rest = int(match.group(1)), match.group(5)
            for name, _, mean in _METER.findall(rest):
                if name not in _NOT_CURVES:
                    curves.setdefault(name, {})[epoch] = float(mean)
            lr = _LR.search(rest)
            if lr:
                curves.setdefault("lr", {})[epoch] = float(lr.group(1))
    return curves


def run_group(path: str | Path) -> tuple[str, str]:
    """(dataset, label space) from the yacs config a ``log.txt`` prints; ``?`` for what it does not say."""
    config = read_log_header(path)[1]
    return (config.get("DATASET.NAME", UNKNOWN), config.get("DATASET.SUBSAMPLE_CLASSES", UNKNOWN))


def _run_dirs(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise SystemExit(f"parse_test_res: {directory} is not a directory (expected a folder of seed runs)")
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


Group = tuple[str, str]  # (dataset, label space)


def _group_label(group: Group, n_groups: int) -> str:
    return "" if n_groups == 1 else f" [dataset {group[0]}, classes {group[1]}]"


def parse_directory(
    directory: str | Path,
    end_signal: str = TRAIN_END,
    keyword: str = "accuracy",
    ci95: bool = False,
    verbose: bool = True,
) -> dict[Group, float]:
    """Print per-run values and mean +- std per (dataset, label space) of one folder; return the means."""
    directory = Path(directory)
    print(f"Parsing files in {directory}")
    groups: dict[Group, list[float]] = {}
    for run in _run_dirs(directory):
        log = run / "log.txt"
        if not log.is_file():
            raise SystemExit(f"parse_test_res: {log} does not exist (every run folder must hold log.txt)")
        found = parse_log(log, end_signal, (keyword,))
        if keyword in found:
            groups.setdefault(run_group(log), []).append(found[keyword])
            if verbose:
                print(f"file: {log}. {keyword}: {found[keyword]:.2f}%. ")
    if not groups:
        raise SystemExit(f"parse_test_res: Nothing found in {directory} (end signal {end_signal!r})")
    means = {}
    for group, values in sorted(groups.items()):
        stat = summarize(values, ci95=ci95)
        means[group] = stat.mean
        if verbose:
            print("===")
            print(f"Summary of directory: {directory}{_group_label(group, len(groups))}")
            print(f"* {keyword}: {stat.mean:.2f}% +- {stat.std:.2f}%")
            print("===")
    if len(groups) > 1:
        print(
            f"Note: {len(groups)} datasets / label spaces in {directory}: summarised separately, never averaged"
        )
    return means


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=str, help="folder whose subfolders are runs (or experiments)")
    parser.add_argument("--ci95", action="store_true", help="report the 95%% confidence interval")
    parser.add_argument("--test-log", action="store_true", help="eval-only logs: read from '=> result'")
    parser.add_argument("--multi-exp", action="store_true", help="each subfolder is an experiment")
    parser.add_argument("--keyword", default="accuracy", type=str, help="metric name, e.g. macro_f1")
    parser.add_argument("--end-signal", default=None, help="override the end line (e.g. 'Finished training')")
    args = parser.parse_args(argv)

    end_signal = args.end_signal or (TEST_END if args.test_log else TRAIN_END)
    directory = Path(args.directory)
    if args.multi_exp:
        per_group: dict[Group, list[float]] = {}
        for exp in _run_dirs(directory):
            for group, mean in parse_directory(exp, end_signal, args.keyword, args.ci95).items():
                per_group.setdefault(group, []).append(mean)
        if not per_group:
            raise SystemExit(f"parse_test_res: Nothing found in {directory} (no experiment folders)")
        for group, means in sorted(per_group.items()):
            print("===")
            print(f"Average performance{_group_label(group, len(per_group))}")
            print(f"* {args.keyword}: {sum(means) / len(means):.2f}%")
            print("===")
    else:
        parse_directory(directory, end_signal, args.keyword, args.ci95)
    return 0


if __name__ == "__main__":
    sys.exit(main())
