"""The README's command table stays true: every command exists, every option it names exists,
and every command trtforge has is in the table with every one of its options."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
TABLE = README[README.index("## Commands") : README.index("## Spec reference")]
ROWS = re.findall(r"^\| `(trtforge [^|]*(?:\\\|[^|]*)*)` \|", TABLE, re.MULTILINE)


def _usages() -> list[str]:
    usages = []
    for row in ROWS:
        usages.extend(part.strip(" `") for part in row.split("` / `"))
    return usages


def test_every_command_and_option_in_the_table_exists() -> None:
    usages = _usages()
    assert len(usages) >= 14
    for usage in usages:
        command = usage.split()[1]
        code, stdout, _ = cli(command, "--help")
        assert code == 0, f"README names 'trtforge {command}', which does not exist"
        for option in re.findall(r"--[a-z][a-z0-9-]*", usage):
            assert option in stdout, f"README: trtforge {command} has no option {option}"


def test_every_command_is_in_the_table() -> None:
    _, stdout, _ = cli("--help")
    commands = re.findall(r"^  ([a-z]+)\s", stdout[stdout.index("Commands:") :], re.MULTILINE)
    documented = {usage.split()[1] for usage in _usages()}
    assert commands and set(commands) <= documented, set(commands) - documented


def _options(help_text: str) -> set[str]:
    """The long options a command's ``--help`` lists (each at the start of its line)."""
    return set(re.findall(r"^ {2}(?:-[a-zA-Z], )?(--[a-z][a-z0-9-]*)", help_text, re.MULTILINE)) - {"--help"}


def test_every_option_of_every_command_is_in_the_table() -> None:
    documented: dict[str, set[str]] = {}
    for usage in _usages():
        documented.setdefault(usage.split()[1], set()).update(re.findall(r"--[a-z][a-z0-9-]*", usage))
    missing = {}
    for command, options in documented.items():
        _, stdout, _ = cli(command, "--help")
        if _options(stdout) - options:
            missing[command] = sorted(_options(stdout) - options)
    assert not missing, f"README's command table lacks these options: {missing}"


def test_make_demo_builds_the_examples_end_to_end(tmp_path: Path) -> None:
    """The README's first command, on the environment running the tests (``BIN``; ``-o``: the
    venv is taken as it is, never remade under the tests): every example engine built, and the
    side-by-side table printed."""
    if shutil.which("make") is None:
        pytest.skip("`make` is not installed")
    repo, bin_dir = Path(__file__).resolve().parent.parent, Path(sys.executable).parent
    env = {**os.environ, "TRTFORGE_CACHE_DIR": str(tmp_path / "cache")}
    command = ["make", "-o", f"{bin_dir}/trtforge", "demo", f"BIN={bin_dir}", f"OUT={tmp_path / 'demo'}"]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    engines = sorted(path.name.split("-rtx")[0] for path in (tmp_path / "demo").glob("*.engine"))
    assert engines == ["digits-cnn-dynamic-fp16", "digits-cnn-fp16", "digits-cnn-fp32", "digits-cnn-int8"]
    assert "accuracy side by side" in done.stderr and "identical: " in done.stderr
