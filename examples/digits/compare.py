"""Print the digits example's accuracy at every precision side by side (``make demo``).

Reads the ``*.accuracy.json`` reports that ``trtforge build`` / ``trtforge verify`` wrote into a
folder and prints one table (stderr, like every trtforge table) plus, with ``--json``, one JSON
document on stdout:

    python examples/digits/compare.py out/ --name digits-cnn
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trtforge.accuracy.report import read_report, render_side_by_side, side_by_side
from trtforge.console import Reporter
from trtforge.manifest import REJECTED_SUFFIX, REPORT_SUFFIX


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the engines and their .accuracy.json reports are")
    parser.add_argument("--name", default=None, help="only reports of this spec name (default: all)")
    parser.add_argument("--json", action="store_true", help="also print the rows as one JSON document on stdout")
    args = parser.parse_args(argv)
    paths = sorted(path for path in args.folder.glob(f"*{REPORT_SUFFIX}") if not path.name.endswith(REJECTED_SUFFIX))
    found = [read_report(path) for path in paths]
    reports = [report for report in found if args.name is None or report.name == args.name]
    if found and not reports:  # reports of other specs: the name is wrong, not the folder
        names = ", ".join(sorted({report.name for report in found}))
        print(
            f"error: no accuracy reports of --name {args.name!r} in {args.folder}; pass a name there: {names}",
            file=sys.stderr,
        )
        return 2
    if not reports:
        print(f"error: no accuracy reports in {args.folder}: build the specs first (trtforge build)", file=sys.stderr)
        return 2
    rows = side_by_side(reports)
    render_side_by_side(rows, Reporter(), title=f"accuracy side by side ({args.folder})")
    if args.json:
        print(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
