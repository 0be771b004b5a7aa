"""Replay every case of the trust review and print case -> exit code -> one line? -> leftovers.

The cases are the regression tests themselves (``pytest -m trust``: every test that takes the
``trust_case`` fixture of ``tests/trust.py``), so this table and CI can never disagree. A case
passes when its test passes; the table adds what a reviewer wants at a glance: the exit code the
user got, whether the error was one line without a traceback, and whether anything was left on
disk.

Prints the table on stderr and one JSON document on stdout; exits non-zero when a case fails.

    python benchmarks/trust_replay.py [-k EXPRESSION]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cases(keyword: str | None) -> tuple[list[dict], dict[str, str], int]:
    """Run the trust tests; returns the records, each test's outcome, and pytest's exit code."""
    with tempfile.TemporaryDirectory() as scratch:
        records_file = Path(scratch) / "records.json"
        junit_file = Path(scratch) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "trust",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit_file}",
            str(REPO / "tests"),
        ]
        if keyword:
            command += ["-k", keyword]
        env = {**os.environ, "TRTFORGE_TRUST_RECORD": str(records_file)}
        completed = subprocess.run(command, cwd=REPO, env=env, stdout=sys.stderr, check=False)
        records = json.loads(records_file.read_text()) if records_file.is_file() else []
        outcomes = _outcomes(junit_file) if junit_file.is_file() else {}
    return records, outcomes, completed.returncode


def _outcomes(junit_file: Path) -> dict[str, str]:
    """Test outcome by the ``path::name`` part of a node id (JUnit keeps classname and name)."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit_file).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                status = "failed"
            elif child.tag == "skipped":
                status = "skipped"
        outcomes[f"{module}.py::{case.get('name')}"] = status
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="keyword", help="only the cases whose test matches this pytest -k expression")
    args = parser.parse_args()
    records, outcomes, returncode = run_cases(args.keyword)
    rows = [{**record, "test_outcome": outcomes.get(record["test"], "unknown")} for record in records]
    rows.sort(key=lambda row: (row["item"], row["case"]))

    from rich.console import Console
    from rich.table import Table

    table = Table(title="trust review: every case replayed", title_justify="left")
    for column in ("item", "case", "exit", "one line?", "left on disk", "test"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["item"]),
            row["case"],
            str(row["exit_code"]),
            {True: "yes", False: "no", None: "-"}[row["one_line"]],
            ", ".join(row["leftovers"]) or "nothing",
            row["test_outcome"],
        )
    console = Console(stderr=True, width=200)
    console.print(table)
    tally = Counter(row["test_outcome"] for row in rows)
    items = sorted({row["item"] for row in rows})
    console.print(f"{len(rows)} cases over items {items}: {dict(tally)}; pytest exit {returncode}")
    json.dump({"cases": rows, "pytest_exit_code": returncode, "outcomes": dict(tally)}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
