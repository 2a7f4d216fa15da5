"""Did my run reproduce? report.md and report.html of an output folder, beside the paper or another folder.

    python -m tools.report OUTPUT_DIR [--against paper|none|FOLDER] [--out DIR] [--margin M]

Reads every ``log.txt`` under OUTPUT_DIR (tools.report.runs), puts each method's mean +- std per
dataset and metric beside the reference (the paper's numbers, or another output folder such as a run
of the official code; tools.report.compare) with a verdict from the seed spread, draws the pictures
(tools.report.figures) and writes ``report.md`` and a self-contained ``report.html`` into ``--out``
(default ``OUTPUT_DIR/report``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.report.render import write_report

DEFAULT_MARGIN = 1.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "output_dir", type=Path, help="an output folder: method scripts', a sweep's or any runs'"
    )
    parser.add_argument(
        "--against",
        default="paper",
        help="'paper' (default: tools/paper_tables), 'none', or another output folder (ours, or logs of an "
        "official release in Dassl's format)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where report.md/.html go (default OUTPUT_DIR/report)"
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help=f"accuracy points allowed where the reference gives no spread (default {DEFAULT_MARGIN})",
    )
    args = parser.parse_args(argv)
    if not args.output_dir.is_dir():
        parser.error(
            f"OUTPUT_DIR {args.output_dir} is not a directory (expected a folder holding runs' log.txt)"
        )
    if args.against not in ("paper", "none") and not Path(args.against).is_dir():
        parser.error(f"--against {args.against}: not 'paper', 'none' or an existing output folder")
    if args.margin < 0:
        parser.error(f"--margin {args.margin}: expected a number >= 0")
    out = args.out or args.output_dir / "report"
    md, html = write_report(args.output_dir, args.against, out, args.margin)
    print(f"Wrote {md} and {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
