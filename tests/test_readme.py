"""The README's command table stays true: every command exists, every option it names exists,
and every command trtforge has is in the table with every one of its options."""

from __future__ import annotations

import ast
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


#: the file the Makefile's set-up makes (``-o``: taken as it is)
SETUP = ".venv/bin/trtforge"


def test_make_demo_builds_the_examples_end_to_end(tmp_path: Path) -> None:
    """The README's first command, on the environment running the tests (``BIN``; ``-o``: the
    venv is taken as it is, never remade under the tests): every example engine built, and the
    side-by-side table printed."""
    if shutil.which("make") is None:
        pytest.skip("`make` is not installed")
    repo, bin_dir = Path(__file__).resolve().parent.parent, Path(sys.executable).parent
    env = {**os.environ, "TRTFORGE_CACHE_DIR": str(tmp_path / "cache")}
    command = ["make", "-o", SETUP, "demo", f"BIN={bin_dir}", f"OUT={tmp_path / 'demo'}"]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    engines = sorted(path.name.split("-rtx")[0] for path in (tmp_path / "demo").glob("*.engine"))
    assert engines == ["digits-cnn-dynamic-fp16", "digits-cnn-fp16", "digits-cnn-fp32", "digits-cnn-int8"]
    assert "accuracy side by side" in done.stderr and "identical: " in done.stderr


def test_make_demo_takes_folders_with_spaces(tmp_path: Path) -> None:
    """A checkout (so its venv) or an output folder whose path has a space: each reaches the
    command as one argument. Before, make split them (``/tmp/my: No such file or directory``)."""
    if shutil.which("make") is None:
        pytest.skip("`make` is not installed")
    bin_dir, out = tmp_path / "my venv" / "bin", tmp_path / "out dir"
    bin_dir.mkdir(parents=True)
    out.mkdir()
    (out / "digits-cnn-fp32.engine").touch()
    for tool in ("trtforge", "python"):  # stand-ins that record their arguments, one a line
        (bin_dir / tool).write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{bin_dir / tool}.args"\n', encoding="utf-8")
        (bin_dir / tool).chmod(0o755)
    repo = Path(__file__).resolve().parent.parent
    command = ["make", "-o", SETUP, "demo", f"BIN={bin_dir}", f"OUT={out}"]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    for tool in ("trtforge", "python"):
        assert str(out) in (bin_dir / f"{tool}.args").read_text(encoding="utf-8").splitlines(), tool
    assert f"{out}/digits-cnn-fp32.engine" in done.stdout


def _python_examples() -> list[str]:
    """The README's ```python blocks, each with its commented-out calls (``# select_artifact(...)``,
    an alternative to the line above) turned into code, so that they are checked too; prose comments
    (which do not parse as a call) stay comments."""
    blocks = re.findall(r"^```python\n(.*?)^```$", README, re.MULTILINE | re.DOTALL)
    examples = []
    for block in blocks:
        lines = [line[2:] if line.startswith("# ") and _is_call(line[2:]) else line for line in block.splitlines()]
        examples.append("\n".join(lines) + "\n")
    return examples


def _is_call(code: str) -> bool:
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return False
    return len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Call)


def test_the_python_examples_pass_mypy_strict_as_a_user_writes_them(tmp_path: Path) -> None:
    """A library user type-checks their code against the API the README shows: every name is
    imported before it is used, and ``mypy --strict`` accepts every call. ``wrong.py`` proves that
    mypy read trtforge's own types (no Any from a missing package): its one error must be found."""
    examples = _python_examples()
    assert len(examples) >= 3 and any("Target(" in example for example in examples)
    files = [tmp_path / f"example_{index}.py" for index in range(len(examples))]
    for path, example in zip(files, examples, strict=True):
        path.write_text(example, encoding="utf-8")
    wrong = tmp_path / "wrong.py"
    wrong.write_text('from trtforge.runtime import Target\n\nTarget(platform=("linux", "x86_64"))\n', encoding="utf-8")
    ruff = [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", "--select", "F821"]
    names = subprocess.run([*ruff, *map(str, files)], capture_output=True, text=True, check=False)
    assert names.returncode == 0, names.stdout  # F821: a name used before its import, or never imported
    mypy = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), *map(str, files)]
    # run where no project config is: a user's own settings
    typed = subprocess.run([*mypy, str(wrong)], capture_output=True, text=True, check=False, cwd=tmp_path)
    errors = [line for line in typed.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith("wrong.py:3:") and '"platform"' in errors[0], typed.stdout
