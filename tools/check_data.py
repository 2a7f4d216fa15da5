"""Is a dataset folder complete? A per-dataset ready / missing report against docs/DATASETS.md.

    python -m tools.check_data --root $DATA [DATASET ...] [--max-missing 20]

For every registered dataset (or the ones named) the tool looks at what the reader in ``datasets/``
declares - its folder, image folder, split file and the sizes in ``expected`` - and reports one of

* ``ready``: every image of the published split exists and the counts match docs/DATASETS.md;
* ``first use``: the dataset writes its own data on first use (Digits) and has not been used yet;
* ``missing``: the dataset folder is absent;
* ``incomplete``: a file the reader needs is absent (every missing image of a split file is listed);
* ``mismatch``: all files exist but the split has other counts than the published one (a generated or
  foreign split file: results would not be comparable with the paper).

Datasets with a split file (most of them) are checked without building the reader, so every missing
image is named. ImageNet, FGVCAircraft and the ImageNet variants are checked by building their reader,
which stops at the first missing file; the first ImageNet check writes ``preprocessed.pkl``, exactly as
the first training run would. The tool never writes a split file. Exit status: 0 when every dataset
checked is ready (or first use), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import datasets  # noqa: F401  (registers the readers)
from datasets.common import DatasetLayoutError, ExpectedSizes, LayoutChecks
from engine.config import get_cfg_default
from engine.data.datasets import DATASET_REGISTRY
from engine.utils import read_json

__all__ = ["DatasetReport", "check_dataset", "check_root", "format_report", "main"]

READY, FIRST_USE, MISSING, INCOMPLETE, MISMATCH = "ready", "first use", "missing", "incomplete", "mismatch"
_OK = (READY, FIRST_USE)
_PARTS = ("train", "val", "test")


@dataclass
class DatasetReport:
    """Outcome for one dataset: status, what was found, and every missing path (absolute)."""

    name: str
    folder: str
    status: str = READY
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in _OK


def _reader_class(name: str) -> type[LayoutChecks]:
    cls = DATASET_REGISTRY.get(name)
    if not issubclass(cls, LayoutChecks) or cls.expected is None:
        raise ValueError(f"Dataset {name} declares no expected layout and sizes; it cannot be checked")
    return cls


def _compare_counts(report: DatasetReport, expected: ExpectedSizes) -> None:
    """Set ``mismatch`` with one problem line per count that differs from the published one."""
    for part in (*_PARTS, "classes"):
        want = getattr(expected, part)
        if want is not None and report.counts.get(part) != want:
            report.problems.append(f"{part}: found {report.counts.get(part)}, expected {want}")
    if report.problems:
        report.status = MISMATCH


def _check_split_file(report: DatasetReport, cls: type, dataset_dir: str) -> None:
    """Read the split file as data (no ``Datum``, which would stop at the first missing image)."""
    probe = cls.__new__(cls)  # only to ask the reader where its split paths start
    probe.dataset_dir = dataset_dir
    probe.image_dir = os.path.join(dataset_dir, cls.image_subdir)
    split_path = os.path.join(dataset_dir, cls.split_filename)
    if not os.path.isfile(split_path):
        report.status = INCOMPLETE
        report.missing.append(split_path)
        generated = probe.generated_split_path
        used = (
            f"runs use the split generated on first use, {generated}"
            if os.path.isfile(generated)
            else "the reader would generate a new random split"
        )
        report.problems.append(
            f"split file absent: {used}, which does not match the published one "
            "(python -m tools.prepare_data installs CoOp's file; see docs/DATASETS.md)"
        )
        return
    prefix = probe.split_prefix
    if not os.path.isdir(prefix):
        report.status = INCOMPLETE
        report.missing.append(prefix)
        return
    try:
        split = read_json(split_path)
        entries = {part: [(str(e[0]), int(e[1])) for e in split[part]] for part in _PARTS}
    except (ValueError, KeyError, TypeError, IndexError) as e:
        report.status = INCOMPLETE
        report.problems.append(f"split file {split_path} is not a valid CoOp split ({type(e).__name__}: {e})")
        return
    for part in _PARTS:
        report.counts[part] = len(entries[part])
        report.missing.extend(
            path for path in (os.path.join(prefix, rel) for rel, _ in entries[part]) if not os.path.isfile(path)
        )
    report.counts["classes"] = len({label for _, label in entries["train"]})
    if report.missing:
        report.status = INCOMPLETE
        return
    _compare_counts(report, cls.expected)


def _check_by_reader(report: DatasetReport, cls: type, root: str) -> None:
    """Build the reader on all classes without few-shot sampling; its errors name the missing path."""
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = root
    cfg.DATASET.NUM_SHOTS = -1
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    try:
        dataset = cls(cfg)
    except (DatasetLayoutError, FileNotFoundError) as e:
        report.status = INCOMPLETE
        report.problems.append(str(e).splitlines()[0])
        return
    except ValueError as e:
        report.status = INCOMPLETE
        report.problems.append(str(e))
        return
    test_only = cls.expected.train is None
    report.counts = {
        "train": None if test_only else len(dataset.train_x),
        "val": None if dataset.val is None or dataset.val is dataset.test else len(dataset.val),
        "test": len(dataset.test),
        "classes": dataset.num_classes,
    }
    _compare_counts(report, cls.expected)


def check_dataset(name: str, root: str) -> DatasetReport:
    """Check one registered dataset (``DATASET.NAME``) under ``root``; nothing is written but caches."""
    cls = _reader_class(name)
    root = os.path.abspath(os.path.expanduser(root))
    dataset_dir = os.path.join(root, cls.dataset_dir)
    report = DatasetReport(name=name, folder=cls.dataset_dir + "/")
    if not os.path.isdir(dataset_dir):
        report.status = FIRST_USE if cls.created_on_first_use else MISSING
        if not cls.created_on_first_use:
            report.missing.append(dataset_dir)
        return report
    if getattr(cls, "split_filename", None):
        _check_split_file(report, cls, dataset_dir)
    else:
        _check_by_reader(report, cls, root)
    return report


def check_root(root: str, names: Sequence[str] | None = None) -> list[DatasetReport]:
    """Reports for ``names`` (default: every registered dataset with expected sizes, sorted) under ``root``."""
    if not os.path.isdir(os.path.expanduser(root)):
        what = "a file" if os.path.exists(os.path.expanduser(root)) else "not an existing folder"
        raise FileNotFoundError(f"Dataset root {root} is {what}; pass --root DATASET.ROOT, the folder of the datasets")
    known = DATASET_REGISTRY.registered_names()
    by_lower = {name.lower(): name for name in known}
    unknown = [n for n in names or () if n.lower() not in by_lower]
    if unknown:
        raise ValueError(f"Unknown dataset name(s) {unknown}; known: {', '.join(sorted(known))}")
    # a user's own data (ImageFolder) has no published sizes to check against: only checked when named
    checkable = sorted(n for n in known if getattr(DATASET_REGISTRY.get(n), "expected", None) is not None)
    chosen = [by_lower[n.lower()] for n in names] if names else checkable
    return [check_dataset(name, root) for name in dict.fromkeys(chosen)]


def _counts_text(counts: dict[str, int | None]) -> str:
    parts = [f"{part} {counts[part]:,}" for part in _PARTS if counts.get(part) is not None]
    if counts.get("classes") is not None:
        parts.append(f"{counts['classes']} classes")
    return ", ".join(parts)


def format_report(reports: Sequence[DatasetReport], max_missing: int = 20) -> str:
    """One line per dataset, then its missing paths (at most ``max_missing``; <= 0 lists all) and problems."""
    width = max((len(r.name) for r in reports), default=0)
    lines = []
    for r in reports:
        lines.append(f"{r.status:<10}  {r.name:<{width}}  {r.folder:<22} {_counts_text(r.counts)}".rstrip())
        shown = r.missing if max_missing <= 0 else r.missing[:max_missing]
        if r.missing:
            lines.append(f"    {len(r.missing)} missing path(s):")
        lines.extend(f"    {path}" for path in shown)
        if len(shown) < len(r.missing):
            lines.append(f"    ... and {len(r.missing) - len(shown)} more (--max-missing 0 lists all)")
        lines.extend(f"    {problem}" for problem in r.problems)
    n_ok = sum(r.ok for r in reports)
    lines.append(f"{n_ok} of {len(reports)} dataset(s) ready")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the folder holding every dataset (DATASET.ROOT)")
    parser.add_argument("names", nargs="*", metavar="DATASET", help="DATASET.NAME values (any case; default: all)")
    parser.add_argument("--datasets", nargs="+", default=[], help="the same, as an option")
    parser.add_argument("--max-missing", type=int, default=20, help="missing paths listed per dataset (0: all)")
    args = parser.parse_args(argv)
    try:
        reports = check_root(args.root, [*args.names, *args.datasets])
    except (OSError, ValueError) as e:
        print(f"tools.check_data: error: {e}", file=sys.stderr)
        return 2
    print(f"Dataset root: {os.path.abspath(os.path.expanduser(args.root))}")
    print(format_report(reports, args.max_missing))
    if any(r.status == MISSING for r in reports):
        print(
            f"{MISSING}: the dataset's folder is not under the root (not downloaded); "
            f"python -m tools.prepare_data NAME --root {args.root} fetches it (docs/DATASETS.md)"
        )
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
