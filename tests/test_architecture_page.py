"""docs/architecture.md stays true: one row per module of the package, each module imports only
the units its row names, and every file the page names exists."""

from __future__ import annotations

import re
from pathlib import Path

from test_architecture import MODULES, _imports

REPO = Path(__file__).resolve().parent.parent
PAGE = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
ROWS = {
    f"trtforge.{name}": {unit.strip() for unit in allowed.split(",")} - {"—"}
    for name, allowed in re.findall(r"^\| `([a-z_.]+)` \| .+ \| ([^|]+) \|$", PAGE, re.MULTILINE)
}


def _unit(module: str) -> str:
    """``trtforge.accuracy.gate`` -> ``accuracy``: the page's granularity for what may be imported."""
    return module.split(".")[1]


def test_every_module_has_one_row() -> None:
    assert len(ROWS) == PAGE.count("\n| `")
    assert set(ROWS) == set(MODULES) - {"trtforge"}


def test_no_module_imports_outside_its_row() -> None:
    outside = {}
    for module, allowed in ROWS.items():
        units = {_unit(name) for name in _imports(MODULES[module]) if name != "trtforge"} - {_unit(module)}
        if units - allowed:
            outside[module] = sorted(units - allowed)
    assert outside == {}, "imports the page does not allow (update the row, or the layering)"


def test_every_file_the_page_names_exists() -> None:
    named = set(re.findall(r"`((?:trtforge|tests)/[\w./<>-]+\.(?:py|json))`", PAGE))
    assert "tests/test_architecture.py" in named
    assert [path for path in named if "<" not in path and not (REPO / path).is_file()] == []
