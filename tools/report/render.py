"""Compose the report once (headings, paragraphs, tables, pictures) and write it as Markdown and HTML.

The HTML is self-contained: pictures are embedded as base64 PNG, the style is inline, and nothing
(script, font, stylesheet) is fetched, so it opens without a network.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from tabulate import tabulate

from tools.report import figures
from tools.report.compare import (
    DEPARTS,
    NO_REFERENCE,
    Reference,
    Row,
    build_rows,
    folder_reference,
    method_order,
    paper_reference,
)
from tools.report.runs import FINGERPRINT_EXCLUDED, Collection, Unusable, collect_runs

__all__ = ["write_report", "RULE"]

RULE = (
    "A row DEPARTS when |ours - reference| > tolerance. Tolerance = 2 * sqrt(std_ours^2 + std_ref^2) where "
    "the reference gives a spread (the paper's +- or the other folder's std over 2 or more seeds), else "
    "max(2 * std_ours, margin) with margin = {margin:g} accuracy points; never below 0.01 (the published "
    "rounding). std is the population std over seeds (ddof 0, as Dassl's parse_test_res)."
)
SHORT_SECTION = {"open": "open world", "xd": "cross-dataset", "dg": "domain gen.", "fewshot": "few-shot"}

Block = tuple  # ("h1"|"h2"|"h3"|"p", text) | ("table", headers, rows) | ("img", Picture)


def _fmt_ref(row: Row) -> str:
    if row.ref is None:
        return "-"
    text = f"{row.ref.mean:.2f}" + (f" ± {row.ref.std:.2f}" if row.ref.std is not None else "")
    return text + (f" ({row.ref.n} seeds)" if row.ref.n else "")


def _row_cells(row: Row) -> list[str]:
    stat, entry = row.entry.stat, row.entry
    seeds = str(entry.found) if entry.complete else f"{entry.found}/{entry.expected}"
    return [
        row.verdict,
        SHORT_SECTION[row.section],
        row.method,
        row.dataset,
        row.metric,
        f"{stat.mean:.2f} ± {stat.std:.2f}",
        seeds,
        _fmt_ref(row),
        "-" if row.diff is None else f"{row.diff:+.2f}",
        "-" if row.tolerance is None else f"{row.tolerance:.2f}",
    ]


HEADERS = [
    "Verdict",
    "Section",
    "Method",
    "Dataset",
    "Metric",
    "Ours (mean ± std)",
    "Seeds",
    "Reference",
    "Δ",
    "Tolerance",
]


def _pictures(collection: Collection, rows: list[Row], out: Path) -> list[tuple[str, list[figures.Picture]]]:
    methods = method_order([r.method for r in rows])
    groups: list[tuple[str, list[figures.Picture]]] = []
    per_dataset = [
        figures.bars(d, [r for r in rows if r.dataset == d], methods, out)
        for d in sorted({r.dataset for r in rows})
    ]
    groups.append(("Per dataset: our bars (error bar: std over seeds) beside the reference", per_dataset))
    scatter = figures.scatter([r for r in rows if r.section == "open"], methods, out)
    groups.append(("Base vs new accuracy of the methods", [scatter] if scatter else []))
    trained: dict[tuple[str, str, str], list] = {}
    for run in collection.runs:
        if run.trains:
            trained.setdefault(run.row, []).append(run)
    curves, gates = [], []
    for method in methods:
        for (m, dataset, paradigm), runs in sorted(trained.items()):
            if m != method:
                continue
            runs = sorted(runs, key=lambda r: r.seed)
            picture = figures.training_curves(method, dataset, paradigm, runs, out)
            curves += [picture] if picture else []
            gate = figures.gates(method, dataset, runs[0], out)
            gates += [gate] if gate else []
    groups.append(("Training curves (loss, accuracy, learning rate per epoch; one line per seed)", curves))
    groups.append(("BMIP gates (tools.plot_gates; lowest seed of each BMIP-family row)", gates))
    return groups


def _compose(output_dir: Path, reference: Reference | None, margin: float, rows: list[Row],
             unusable: list[Unusable], pictures, out: Path) -> list[Block]:  # fmt: skip
    flagged = sum(r.verdict == DEPARTS for r in rows)
    compared = sum(r.verdict != NO_REFERENCE for r in rows)
    blocks: list[Block] = [
        ("h1", f"Reproduction report: {output_dir}"),
        (
            "p",
            f"Reference: {reference.name if reference else 'none'}. Rows: {len(rows)}; compared with a "
            f"reference: {compared}; departing: {flagged} (listed first).",
        ),  # fmt: skip
        ("p", RULE.format(margin=margin)),
        (
            "p",
            "HM per dataset is the mean over seeds of each seed's harmonic mean of base and new accuracy "
            "(the paper's Table 1); Table 6's published HM is the HM of the mean base and new. Runs of one "
            "row are averaged only when their printed configs agree (fingerprint without the seed and the "
            f"keys that change no result: {', '.join(k for k in FINGERPRINT_EXCLUDED if k != 'SEED')}). Dataset averages: "
            "python -m tools.tables.",
        ),  # fmt: skip
        ("h2", "Results (departing rows first)"),
        ("table", HEADERS, [_row_cells(r) for r in rows]),
        ("h2", "Pictures"),
    ]
    for title, pics in pictures:
        blocks.append(("h3", title))
        blocks += [("img", p) for p in pics] if pics else [("p", "None in this folder.")]
    blocks.append(("h2", f"Runs not used ({len(unusable)})"))
    if unusable:
        blocks.append(
            ("table", ["Folder", "Reason"], [[_relative(u.folder, output_dir), u.reason] for u in unusable])
        )
    else:
        blocks.append(("p", "Every run found is finished, complete and of one config per row."))
    return blocks


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _markdown(blocks: list[Block], out: Path) -> str:
    lines = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            lines += [tabulate(block[2], headers=block[1], tablefmt="github", disable_numparse=True), ""]
        elif kind == "img":
            pic = block[1]
            rel = _relative(pic.path, out)
            lines += [f"![{pic.caption}]({rel})", "", f"*{pic.caption} ({pic.width}×{pic.height} px)*", ""]
    return "\n".join(lines)


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;font-size:90%}"
    "td,th{border:1px solid #bbb;padding:2px 6px}tr.departs td{background:#fdd}img{max-width:100%}"
)


def _html(blocks: list[Block]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(blocks[0][1])}</title><style>{_STYLE}</style></head><body>"]  # fmt: skip
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3", "p"):
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            body = []
            for cells in block[2]:
                cls = ' class="departs"' if cells and cells[0] == DEPARTS else ""
                body.append(
                    f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"
                )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        elif kind == "img":
            pic = block[1]
            data = base64.b64encode(pic.path.read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" width="{pic.width}" height="{pic.height}" '
                f'alt="{html.escape(pic.caption)}"><figcaption>{html.escape(pic.caption)} '
                f"({pic.width}×{pic.height} px)</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(output_dir: Path, against: str, out: Path, margin: float) -> tuple[Path, Path]:
    """Read ``output_dir``, compare with ``against`` ("paper", "none" or a folder), write into ``out``.

    Prints one summary line: rows, how many depart, runs not used.
    """
    output_dir, out = Path(output_dir), Path(out)
    collection = collect_runs(output_dir)
    if against == "paper":
        reference = paper_reference()
    elif against == "none":
        reference = None
    else:
        reference = folder_reference(against)
    rows = build_rows(collection, reference, margin)
    pictures = _pictures(collection, rows, out / "figures")
    unusable = collection.unusable + collection.missing()
    blocks = _compose(output_dir, reference, margin, rows, unusable, pictures, out)
    out.mkdir(parents=True, exist_ok=True)
    md, page = out / "report.md", out / "report.html"
    md.write_text(_markdown(blocks, out))
    page.write_text(_html(blocks))
    departing = sum(r.flagged for r in rows)
    print(f"{len(rows)} rows, {departing} departing from the reference, {len(unusable)} runs not used")
    return md, page
