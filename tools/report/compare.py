"""Our mean +- std per method, dataset and metric beside a reference figure, with a verdict from the spread.

The reference is the paper's number (``tools/paper_tables`` through ``tools.tables.load_paper``) or
another output folder's mean +- std (ours or an official release's logs, read the same way).

Verdict rule (``tolerance``): a row *departs* when |ours - reference| exceeds
``2 * sqrt(std_ours^2 + std_ref^2)`` where the reference gives a spread (the paper's +- or the other
folder's std over two or more seeds), and ``max(2 * std_ours, margin)`` where it does not. The
tolerance is never below 0.01, the rounding of the published two decimals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tools import plan, tables
from tools.report.runs import Collection, collect_runs
from tools.results import Entry, Results

__all__ = [
    "Reference",
    "Row",
    "SECTIONS",
    "paper_reference",
    "folder_reference",
    "build_rows",
    "method_order",
    "tolerance",
]

OPEN_WORLD_METRICS = (("base", "Base"), ("new", "New"), ("hm", "HM"), ("acc", "All classes"))
SECTIONS = {
    "open": "Base-to-new and all classes (open world)",
    "xd": "Cross-dataset transfer (source and targets)",
    "dg": "Domain generalisation (ImageNet variants)",
    "fewshot": "Few-shot",
}
ROUNDING = 0.01
DEPARTS, CONSISTENT, NO_REFERENCE = "DEPARTS", "consistent", "no reference"


@dataclass(frozen=True)
class RefValue:
    mean: float
    std: float | None  # None: the reference gives no spread
    n: int | None = None  # seeds behind it, when known


@dataclass
class Reference:
    """Reference numbers keyed by (method, dataset, paradigm, metric); ``name`` says where they are from."""

    name: str
    values: dict[tuple[str, str, str, str], RefValue]

    def get(self, method: str, dataset: str, paradigm: str, metric: str) -> RefValue | None:
        return self.values.get((method, dataset, paradigm, metric))


def paper_reference() -> Reference:
    """Per-dataset published numbers: Tables 1 and 6 (open world), 2 (cross-dataset), 3 (DG targets)."""
    values: dict[tuple[str, str, str, str], RefValue] = {}
    for number, paradigm in ((6, "open"), (1, "open"), (2, "xd"), (3, "xd")):
        for (method, dataset), row in tables.load_paper(number).items():
            if dataset == tables.AVERAGE or "Average" in dataset:
                continue
            if number == 3 and dataset not in plan.DG_TARGETS:
                continue  # ImageNet (the source) is Table 2's
            for metric in ("base", "new", "hm", "acc"):
                if row.get(metric) is not None:
                    values[(method, dataset, paradigm, metric)] = RefValue(
                        row[metric], row.get(f"{metric}_std")
                    )
    return Reference("paper (tools/paper_tables)", values)


def _entries(res: Results, method: str, dataset: str, family: str) -> dict[str, Entry]:
    if family == "open":
        return res.open_world(method, dataset)
    return {"acc": res.accuracy(family, method, dataset)}


def _families(collection: Collection) -> list[tuple[str, str, str]]:
    """(family, method, dataset) of every row: ``open`` for base/new/all, else the paradigm."""
    found = {
        ("open" if r.paradigm in ("base", "new", "all") else r.paradigm, r.method, r.dataset)
        for r in collection.runs
    }
    return sorted(found)


def folder_reference(path: str | Path) -> Reference:
    """Mean +- std over seeds of another output folder (any layout, official Dassl logs included)."""
    collection = collect_runs(path)
    res = collection.results()
    values = {}
    for family, method, dataset in _families(collection):
        for metric, entry in _entries(res, method, dataset, family).items():
            if entry.stat is not None:
                stat = entry.stat
                values[(method, dataset, family, metric)] = RefValue(
                    stat.mean, stat.std if stat.n > 1 else None, stat.n
                )
    return Reference(f"folder {path}", values)


def tolerance(ours_std: float, ref: RefValue, margin: float) -> float:
    """How far ours may be from the reference before the row departs (the module docstring's rule)."""
    if ref.std is not None:
        tol = 2.0 * math.sqrt(ours_std**2 + ref.std**2)
    else:
        tol = max(2.0 * ours_std, margin)
    return max(tol, ROUNDING)


@dataclass(frozen=True)
class Row:
    """One metric of one method on one dataset, ours beside the reference."""

    section: str
    method: str
    dataset: str
    metric: str
    entry: Entry
    ref: RefValue | None
    margin: float

    @property
    def diff(self) -> float | None:
        if self.ref is None or self.entry.stat is None:
            return None
        return self.entry.stat.mean - self.ref.mean

    @property
    def tolerance(self) -> float | None:
        if self.ref is None or self.entry.stat is None:
            return None
        return tolerance(self.entry.stat.std, self.ref, self.margin)

    @property
    def verdict(self) -> str:
        if self.diff is None:
            return NO_REFERENCE
        return DEPARTS if abs(self.diff) > self.tolerance else CONSISTENT

    @property
    def flagged(self) -> bool:
        return self.verdict == DEPARTS


def _section(family: str, dataset: str) -> str:
    if family.startswith("fewshot"):
        return "fewshot"
    if family == "xd":
        return "dg" if dataset in plan.DG_TARGETS else "xd"
    return "open"


def method_order(methods: Iterable[str]) -> list[str]:
    """Paper labels in ``tools.plan.METHODS`` order (whatever their backbone), then any others by name."""
    paper = list(plan.METHODS)

    def key(method: str) -> tuple[int, str]:
        label = method.split(" [")[0]
        return (paper.index(label) if label in paper else len(paper), method)

    return sorted(set(methods), key=key)


def build_rows(collection: Collection, reference: Reference | None, margin: float) -> list[Row]:
    """Every row of the folder, flagged (departing) rows first, then in method / dataset order."""
    res = collection.results()
    rows = []
    for family, method, dataset in _families(collection):
        names = dict(OPEN_WORLD_METRICS) if family == "open" else {"acc": "Accuracy"}
        for metric, entry in _entries(res, method, dataset, family).items():
            if entry.stat is None:
                continue
            ref = reference.get(method, dataset, family, metric) if reference else None
            label = names[metric] if not family.startswith("fewshot") else f"{family[7:]}-shot accuracy"
            rows.append(Row(_section(family, dataset), method, dataset, label, entry, ref, margin))
    order = {name: i for i, name in enumerate(SECTIONS)}
    methods = {m: i for i, m in enumerate(method_order(r.method for r in rows))}
    return sorted(rows, key=lambda r: (not r.flagged, order[r.section], methods[r.method], r.dataset))
