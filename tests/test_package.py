"""Package-level promises: `trtforge --help` imports nothing heavy, public names resolve."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import trtforge.runtime

HEAVY = ("onnx", "onnxruntime", "tensorrt", "tensorrt_rtx", "numpy", "prometheus_client", "oras")


def test_cli_import_stays_light() -> None:
    code = f"import sys, trtforge.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_runtime_exports_resolve() -> None:
    assert sorted(trtforge.runtime.__all__) == sorted(trtforge.runtime._MODULE_OF)
    for name in trtforge.runtime.__all__:
        assert getattr(trtforge.runtime, name) is not None


def test_every_error_a_library_user_catches_has_a_documented_home() -> None:
    """What the pool and the loader raise is importable from ``trtforge.runtime`` (the pool's own
    errors) or ``trtforge.errors`` (every TrtforgeError, with its exit code), and the README's
    Python API says where."""
    from pathlib import Path

    import trtforge.errors
    from trtforge.runners.base import RunnerError
    from trtforge.runtime.lending import PoolClosed
    from trtforge.runtime.pool import PoolStartError

    assert trtforge.runtime.PoolStartError is PoolStartError and trtforge.runtime.RunnerError is RunnerError
    assert issubclass(trtforge.runtime.PoolNotStarted, RuntimeError)
    assert not issubclass(trtforge.runtime.PoolNotStarted, PoolClosed)  # it is not shut down: it may start
    readme = (Path(trtforge.runtime.__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    documented = readme[readme.index("## Compatibility checks") : readme.index("## Deploy")]
    for name in ("PoolStartError", "RunnerError", "PoolNotStarted", "PoolClosed", "PoolExhausted"):
        assert f"`{name}`" in documented, name
    assert "`trtforge.errors`" in documented and "`exit_code`" in documented
    for name, value in vars(trtforge.errors).items():
        if isinstance(value, type) and issubclass(value, trtforge.errors.TrtforgeError):
            assert f"`{name}`" in documented, f"README does not say where {name} comes from"


def test_type_hints_and_lazy_names_reach_users() -> None:
    """PEP 561: the package says it is typed (and ships the marker); ``dir()`` lists the names that
    resolve on first use, as tab completion reads them."""
    from pathlib import Path

    package = Path(trtforge.runtime.__file__).parent.parent
    assert (package / "py.typed").is_file()
    pyproject = (package.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert 'trtforge = ["*.json", "py.typed"]' in pyproject
    assert set(trtforge.runtime.__all__) <= set(dir(trtforge.runtime))


#: The oldest version of each dependency known to work, and what breaks below it (an audit ran the
#: suite against older releases; a full minimum-versions CI job is too slow here). pyproject's lower
#: bounds must not drop under these: a bound nobody tested is a promise trtforge does not keep.
KNOWN_WORKING_FLOORS = {
    "typer": ("0.27.2", "trtforge.cli.common imports typer.exceptions, which 0.27.2 introduced"),
    "pydantic": ("2.10", "2.9 prints a UserWarning on every command (model_sha256 in its protected 'model_')"),
    "onnx": ("1.19", "INT8 builds fail below it ('cannot reshape array of size 0')"),
    "ml-dtypes": ("0.5.4", "trtforge.dtypes names float4_e2m1fn, absent before 0.5; 0.5.4 is the audited one"),
    "numpy": ("1.26", "the oldest audited working release"),
    "onnxruntime": ("1.22", "the oldest audited working release"),
    "starlette": ("0.37", "the oldest audited working release"),
    "uvicorn": ("0.30", "the oldest audited working release"),
    "oras": ("0.2.33", "a token registry refusing anonymous access fails in oras' token request before it"),
    "in-toto-attestation": ("0.9.2", "trtforge.provenance imports its SLSA predicate, absent before 0.9.2"),
    "anyio": ("4.2", "serve makes its CapacityLimiter before the event loop runs: 4.1 and older refuse"),
    "urllib3": ("1.26", "trtforge.publish.oci passes Retry(other=...), new in 1.26"),
}


def _requirements(*extras: str) -> list[Any]:
    """pyproject's runtime dependencies and those of ``extras``, parsed (read from the file: an
    editable install's metadata is as old as its last install)."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    requirements = pytest.importorskip("packaging.requirements")
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    lines = project["dependencies"] + [line for extra in extras for line in project["optional-dependencies"][extra]]
    return [requirements.Requirement(line) for line in lines]


#: Modules trtforge imports whose distribution is declared under another name: the extras' modules
#: come in per-CUDA wheels that the declared meta package installs, and pydantic pins the exact
#: pydantic-core it needs (whose error classes its documentation imports from there).
IMPORTED_THROUGH = {
    "tensorrt": "tensorrt",
    "tensorrt_rtx": "tensorrt-rtx",
    "cuda": "cuda-python",
    "pydantic_core": "pydantic",
}


def _third_party_imports() -> set[str]:
    """The top-level modules trtforge's source imports, less the standard library's and its own."""
    import ast
    from pathlib import Path

    found: set[str] = set()
    for path in Path(trtforge.runtime.__file__).parent.parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
    return found - set(sys.stdlib_module_names) - {"trtforge"}


def test_every_module_trtforge_imports_is_a_declared_dependency() -> None:
    """A module that only comes with a dependency's dependency has a version trtforge does not
    choose (anyio before 4.2, which starlette allows, cannot make serve's limiter: exit 1; urllib3
    1.25, which older requests allow, has no Retry(other=...)): each one imported is declared itself."""
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    declared = {canonicalize_name(requirement.name) for requirement in _requirements("rtx", "tensorrt", "gpu")}
    shipped_by = packages_distributions()
    undeclared = {}
    for module in sorted(_third_party_imports()):
        names = [IMPORTED_THROUGH[module]] if module in IMPORTED_THROUGH else shipped_by.get(module, [module])
        if not declared & {canonicalize_name(name) for name in names}:
            undeclared[module] = names
    assert not undeclared, f"imported, but pyproject.toml does not declare their distributions: {undeclared}"


def test_dependency_floors_are_not_below_the_known_working_ones() -> None:
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    floors = {}
    for requirement in _requirements():
        lower = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==", "~=")]
        floors[canonicalize_name(requirement.name)] = max(lower) if lower else None
    for name, (version, why) in KNOWN_WORKING_FLOORS.items():
        declared = floors[canonicalize_name(name)]
        assert declared is not None and declared >= Version(version), f"{name} >= {version} at least: {why}"


def test_installed_dependencies_satisfy_their_specifiers() -> None:
    """What the test suite runs against is what pyproject promises (a stale environment, or a
    bound raised past what is installed, shows here)."""
    from importlib.metadata import PackageNotFoundError, version

    for requirement in _requirements():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            pytest.fail(f"{requirement.name} is not installed")
        assert requirement.specifier.contains(installed, prereleases=True), f"{requirement.name} {installed}"


def test_a_required_part_fails_where_it_would_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI names what must not skip (``TRTFORGE_TEST_REQUIRE``): there a missing part fails."""
    import models

    monkeypatch.setattr(models, "REQUIRED", frozenset({"registry"}))
    with pytest.raises(pytest.fail.Exception, match="it must not skip here"):
        models.skip_or_fail("registry", "no registry")
    with pytest.raises(pytest.skip.Exception, match="no rtx"):
        models.skip_or_fail("rtx", "no rtx")
