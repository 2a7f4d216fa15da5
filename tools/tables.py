"""Print the paper's Tables 1-5 (and Table 7, later methods' own published numbers) from our runs, the
published numbers beside ours, and what is missing.

    python -m tools.tables --table 1 [--format text|markdown|csv] [--seeds 1 2 3] [--output DIR]
                           [--methods ...] [--datasets ...] [--average-rule mean_of_hms|hm_of_means]
                           [--opts KEY VALUE ...]

Rows and columns follow the paper's tables (``tools/paper_tables/*.csv``). Each entry is
mean +- population std over seeds; ``[k/n]`` marks an entry with only k of its n seeds; averages are
left empty until complete. Every missing or unfinished run is listed below the table (on stderr for
CSV). The run folders are found through the same run list the sweep executes, so ``--opts`` must
repeat any override that changes folders (e.g. ``DATASET.NUM_SHOTS``).
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from tools import plan
from tools.results import Entry, Results, collect

__all__ = ["PAPER_DIR", "AVERAGE_RULES", "Table", "load_paper", "build_table", "render", "main"]

PAPER_DIR = Path(__file__).resolve().parent / "paper_tables"
_PAPER_FILES = {
    1: "table1_open_world.csv",
    2: "table2_cross_dataset.csv",
    3: "table3_domain_generalization.csv",
    4: "table4_combinations.csv",
    5: "table5_aggregation.csv",
    6: "table6_since_maple.csv",
    7: "table7_since_maple_part2.csv",
}
AVERAGE_RULES = {
    "mean_of_hms": "mean of the per-dataset HMs (Table 1's rule, bmip_spec §4)",
    "hm_of_means": "HM of the dataset-averaged base and new accuracies (base-to-new literature)",
}
AVERAGE = "Average"


@dataclass(frozen=True)
class Cell:
    """One metric of one row: ours (maybe absent) and the paper's (maybe not published)."""

    ours: Entry | None
    paper: float | None = None
    paper_std: float | None = None

    @property
    def diff(self) -> float | None:
        if self.paper is None or self.ours is None or not self.ours.complete:
            return None
        # the paper's numbers are rounded to 2 decimals: compare what is printed, and never print -0.00
        return round(round(self.ours.stat.mean, 2) - self.paper, 2) + 0.0


@dataclass
class Table:
    """A renderer-agnostic table: rows of labelled cells, the missing runs, and footnotes."""

    title: str
    metrics: list[tuple[str, str]]  # (key, column title)
    rows: list[tuple[str, str, dict[str, Cell]]] = field(default_factory=list)  # (method, row label, cells)
    missing: list[plan.Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _num(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def load_paper(number: int, paper_dir: Path = PAPER_DIR) -> dict[tuple[str, str], dict[str, float | None]]:
    """Published numbers of one table, keyed by (method label, dataset or "Average")."""
    path = paper_dir / _PAPER_FILES[number]
    if not path.is_file():
        raise FileNotFoundError(
            f"paper table {path} is missing (expected the copy shipped in tools/paper_tables)"
        )
    out = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            method = row["method"]
            if row.get("base_method"):
                method = f"{row['base_method']}{method}"  # "+BMIP" after "MaPLe" -> "MaPLe+BMIP"
            dataset = row.get("dataset") or AVERAGE
            out[(method, dataset)] = {
                k: _num(v) for k, v in row.items() if k not in ("method", "dataset", "base_method")
            }
    return out


def _cell(entry: Entry | None, paper: dict[str, float | None] | None, key: str) -> Cell:
    paper = paper or {}
    return Cell(entry, paper.get(key), paper.get(f"{key}_std"))


def _open_world_table(tdef: plan.TableDef, res: Results, methods, datasets, rule: str, paper) -> Table:
    other = "hm_of_means" if rule == "mean_of_hms" else "mean_of_hms"
    avg_metric = {"mean_of_hms": "hm", "hm_of_means": "hm_of_means"}
    if tdef.kind == "open_world":
        table = Table(
            f"Table {tdef.number}: {tdef.title}",
            [("base", "Base"), ("new", "New"), ("hm", "HM"), ("acc", "Acc")],
        )
        for method in methods:
            for dataset in datasets:
                entries = res.open_world(method, dataset)
                p = paper.get((method, dataset))
                table.rows.append(
                    (method, dataset, {k: _cell(entries[k], p, k) for k in ("base", "new", "hm", "acc")})
                )
            avg = res.open_world_average(method, datasets)
            p = paper.get((method, AVERAGE))
            for which, label in ((rule, f"{AVERAGE} [{rule}]"), (other, f"{AVERAGE} [{other}]")):
                cells = {k: _cell(avg[k], p if which == rule else None, k) for k in ("base", "new", "acc")}
                cells["hm"] = _cell(avg[avg_metric[which]], p if which == rule else None, "hm")
                table.rows.append((method, label, cells))
        table.notes.append(
            f"HM per dataset: mean over seeds of each seed's harmonic mean of base and new accuracy. "
            f"The paper's Average is compared with '{AVERAGE} [{rule}]' = {AVERAGE_RULES[rule]}; "
            f"'{AVERAGE} [{other}]' = {AVERAGE_RULES[other]}."
        )
    else:
        table = Table(
            f"Table {tdef.number}: {tdef.title}",
            [("hm", f"HM [{rule}]"), ("hm_other", f"HM [{other}]"), ("acc", "Acc")],
        )
        for method in methods:
            avg = res.open_world_average(method, datasets)
            p = paper.get((method, AVERAGE))
            table.rows.append(
                (
                    method,
                    AVERAGE,
                    {
                        "hm": _cell(avg[avg_metric[rule]], p, "hm"),
                        "hm_other": Cell(avg[avg_metric[other]]),
                        "acc": _cell(avg["acc"], p, "acc"),
                    },
                )
            )
        table.notes.append(
            f"Averages over {len(datasets)} datasets; HM [{rule}] = {AVERAGE_RULES[rule]}, "
            f"HM [{other}] = {AVERAGE_RULES[other]}."
        )
    table.notes.append(
        "Paper inconsistencies (Average rows, CLIP HM 71.70 vs 70.84, ...): tools/paper_tables/README.md."
    )
    return table


def _base2new_table(tdef: plan.TableDef, res: Results, methods, datasets, paper) -> Table:
    """Dataset averages of base, new, HM and Acc; the published HM is the HM of the averaged base and new
    accuracies (the base-to-new literature's rule), so ours is computed the same way."""
    table = Table(
        f"Table {tdef.number}: {tdef.title}",
        [("base", "Base"), ("new", "New"), ("hm", "HM [hm_of_means]"), ("acc", "Acc")],
    )
    for method in methods:
        avg = res.open_world_average(method, datasets)
        p = paper.get((method, AVERAGE))
        cells = {k: _cell(avg[k], p, k) for k in ("base", "new", "acc")}
        cells["hm"] = _cell(avg["hm_of_means"], p, "hm")
        table.rows.append((method, AVERAGE, cells))
    table.notes.append(
        f"Averages over {len(datasets)} datasets; HM = {AVERAGE_RULES['hm_of_means']}. Published numbers: "
        "each method's own paper (sources in tools/paper_tables/README.md); none exist for our combinations "
        "or for CLIP-LoRA, which publishes no base-to-new table."
    )
    return table


# trainers/mmrl.py logs the head it evaluates with and the rule (TEST_HEAD) that chose it.
_MMRL_HEAD = re.compile(r"^MMRL evaluation head: \w+ \(TEST_HEAD (\w+)\)$", re.MULTILINE)
_MMRL_RULES = {
    "by_label_space": "the release's rule, as in the published numbers (fused head on the base classes, "
    "CLS head on new and all classes)",
    "fusion": "one fused head for every label space, NOT the rule of the published numbers",
}


def _test_head_notes(jobs: Sequence[plan.Job], methods: Sequence[str]) -> list[str]:
    """Which MMRL test-head rule made each row, read from its runs' logs (docs/METHODS.md, MMRL)."""
    rules: dict[str, set[str]] = {}
    for step in (step for job in jobs for step in job.steps if step.method in methods):
        if step.log.is_file():
            found = _MMRL_HEAD.findall(step.log.read_text(errors="replace"))
            rules.setdefault(step.method, set()).update(found)
    return [
        f"{method}: evaluated with TEST_HEAD {rule} ({_MMRL_RULES.get(rule, 'one head for every label space')})."
        for method in methods
        for rule in sorted(rules.get(method, ()))
    ]


def _transfer_table(tdef: plan.TableDef, res: Results, methods, datasets, paper) -> Table:
    table = Table(f"Table {tdef.number}: {tdef.title}", [("acc", "Acc")])
    source = tdef.source or plan.SOURCE
    for method in methods:
        for dataset in (source, *datasets):
            cell = _cell(res.accuracy("xd", method, dataset), paper.get((method, dataset)), "acc")
            table.rows.append((method, dataset, {"acc": cell}))
        for label, with_source in tdef.averages:
            entry = res.accuracy_average("xd", method, [source, *datasets] if with_source else list(datasets))
            table.rows.append((method, label, {"acc": _cell(entry, paper.get((method, label)), "acc")}))
    for label, with_source in tdef.averages:
        table.notes.append(f"{label}: mean over the {'source and ' if with_source else ''}target datasets.")
    if tdef.number == 2:
        table.notes.append("The paper's BMIP Average includes ImageNet: see tools/paper_tables/README.md.")
    return table


def build_table(
    number: int,
    jobs: Sequence[plan.Job],
    methods: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    rule: str | None = None,
    ci95: bool = False,
    paper_dir: Path = PAPER_DIR,
) -> Table:
    """Table ``number`` from the logs of ``jobs`` (the table's run list); ``rule`` None = the table's own."""
    if number not in plan.TABLES:
        raise ValueError(f"unknown table {number}; the paper has tables {sorted(plan.TABLES)}")
    rule = rule or plan.TABLES[number].average_rule
    if rule not in AVERAGE_RULES:
        raise ValueError(f"unknown average rule {rule!r}; expected one of {sorted(AVERAGE_RULES)}")
    tdef = plan.TABLES[number]
    methods = tuple(methods or tdef.methods)
    datasets = tuple(plan.paper_name(d) for d in datasets or tdef.datasets)
    res = collect(jobs, ci95=ci95)
    paper = load_paper(number, paper_dir)
    subset = datasets != tdef.datasets
    if subset:  # the paper's averages are over its full dataset list: not comparable with a subset's
        paper = {key: value for key, value in paper.items() if key[1] not in (AVERAGE, "OOD Average")}
    if tdef.kind == "transfer":
        table = _transfer_table(tdef, res, methods, datasets, paper)
    elif tdef.kind == "base2new_average":
        table = _base2new_table(tdef, res, methods, datasets, paper)
        table.notes.extend(_test_head_notes(jobs, methods))
    else:
        table = _open_world_table(tdef, res, methods, datasets, rule, paper)
    table.missing = res.missing
    if subset:
        table.notes.append(
            f"Datasets {', '.join(datasets)} are not the paper's list: averages are not compared."
        )
    table.notes.insert(
        0,
        "+- is the "
        + ("95% confidence interval 1.96*std/sqrt(n)" if ci95 else "population std (ddof 0) over seeds")
        + "; [k/n] = only k of n seeds finished; Δ = ours - paper.",
    )
    return table


def build_fewshot_table(
    jobs: Sequence[plan.Job],
    methods: Sequence[str],
    datasets: Sequence[str],
    shots: Sequence[int],
    ci95: bool = False,
) -> Table:
    """Few-shot accuracy (all classes, K shots per class) per method and dataset; no paper numbers."""
    res = collect(jobs, ci95=ci95)
    datasets = [plan.paper_name(d) for d in datasets]
    table = Table("Few-shot classification (CoOp protocol)", [(f"fewshot{k}", f"{k}-shot") for k in shots])
    for method in methods:
        for dataset in datasets:
            table.rows.append(
                (
                    method,
                    dataset,
                    {f"fewshot{k}": Cell(res.accuracy(f"fewshot{k}", method, dataset)) for k in shots},
                )
            )
        table.rows.append(
            (
                method,
                AVERAGE,
                {f"fewshot{k}": Cell(res.accuracy_average(f"fewshot{k}", method, datasets)) for k in shots},
            )
        )
    table.missing = res.missing
    return table


# ---- rendering ------------------------------------------------------------------------------------
def _fmt_entry(entry: Entry | None) -> str:
    if entry is None:
        return "-"
    if entry.stat is None:
        return "missing"
    text = entry.stat.format()
    return text if entry.complete else f"{text} [{entry.found}/{entry.expected}]"


def _fmt_paper(cell: Cell) -> str:
    if cell.paper is None:
        return "-"
    return f"{cell.paper:.2f}" + (f" +- {cell.paper_std:.2f}" if cell.paper_std is not None else "")


def _has_paper(table: Table, key: str) -> bool:
    return any(cells[key].paper is not None for _, _, cells in table.rows if key in cells)


def _text_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    headers = ["Method", "Dataset"]
    with_paper = {key: _has_paper(table, key) for key, _ in table.metrics}
    for key, title in table.metrics:
        headers.append(title)
        if with_paper[key]:
            headers += [f"{title} paper", f"Δ{title.split(' ')[0]}"]
    body = []
    for method, label, cells in table.rows:
        row = [method, label]
        for key, _ in table.metrics:
            cell = cells.get(key, Cell(None))
            row.append(_fmt_entry(cell.ours))
            if with_paper[key]:
                row += [_fmt_paper(cell), "-" if cell.diff is None else f"{cell.diff:+.2f}"]
        body.append(row)
    return headers, body


def _missing_lines(table: Table) -> list[str]:
    lines = []
    for step in table.missing:
        state = "unfinished" if step.log.is_file() else "not run"
        lines.append(f"{step.paradigm} {step.method} {step.dataset} seed{step.seed}: {state} ({step.log})")
    return lines


def render(table: Table, fmt: str = "text") -> tuple[str, str]:
    """(table text, report of missing runs). For CSV the report is meant for stderr."""
    missing = _missing_lines(table)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        keys = [key for key, _ in table.metrics]
        writer.writerow(
            ["method", "dataset"]
            + [
                f"{k}_{s}"
                for k in keys
                for s in ("mean", "std", "seeds", "expected", "paper", "paper_std", "diff")
            ]
        )
        for method, label, cells in table.rows:
            row = [method, label]
            for key in keys:
                cell = cells.get(key, Cell(None))
                stat = cell.ours.stat if cell.ours else None
                row += [
                    "" if stat is None else f"{stat.mean:.4f}",
                    "" if stat is None else f"{stat.std:.4f}",
                    0 if cell.ours is None else cell.ours.found,
                    0 if cell.ours is None else cell.ours.expected,
                    "" if cell.paper is None else f"{cell.paper:.2f}",
                    "" if cell.paper_std is None else f"{cell.paper_std:.2f}",
                    "" if cell.diff is None else f"{cell.diff:.4f}",
                ]
            writer.writerow(row)
        report = f"missing or unfinished runs: {len(missing)}\n" + "".join(f"  {line}\n" for line in missing)
        return buf.getvalue(), report
    headers, body = _text_rows(table)
    markdown = fmt == "markdown"
    out = [f"### {table.title}" if markdown else table.title, ""]
    out.append(
        tabulate(body, headers=headers, tablefmt="github" if markdown else "simple", disable_numparse=True)
    )
    out.append("")
    out += [f"- {n}" if markdown else f"Note: {n}" for n in table.notes]
    out.append("")
    if missing:
        out.append(f"Missing or unfinished runs ({len(missing)}):")
        out += [f"- `{line}`" if markdown else f"  {line}" for line in missing]
    else:
        out.append("All runs of this table are finished.")
    return "\n".join(out) + "\n", ""


def print_table(jobs: Sequence[plan.Job], args: argparse.Namespace, stream=None) -> Table:
    """Build, render and print the table the options name (CSV report to stderr); the sweep calls this too."""
    if args.fewshot is not None:
        table = build_fewshot_table(jobs, args.methods, args.datasets, args.fewshot, args.ci95)
    else:
        table = build_table(args.table, jobs, args.methods, args.datasets, args.average_rule, args.ci95)
    text, report = render(table, args.format)
    (stream or sys.stdout).write(text)
    if report:
        sys.stderr.write(report)
    return table


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "markdown", "csv"), default="text")
    parser.add_argument(
        "--average-rule",
        choices=sorted(AVERAGE_RULES),
        default=None,
        help="which dataset average the paper's Average is compared with (default: the table's own; "
        "mean_of_hms for Tables 1-5, hm_of_means for Table 6)",
    )
    parser.add_argument("--ci95", action="store_true", help="95%% confidence interval instead of std")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print one of the paper's tables from our runs.")
    plan.add_plan_arguments(parser)
    add_table_arguments(parser)
    args = parser.parse_args(argv)
    jobs = plan.jobs_from_args(args)
    print_table(jobs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
