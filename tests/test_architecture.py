"""The module layout's promises: one home per public name, and no import cycle between trtforge modules.

Read from the source (ast), so the test sees every import, also the lazy ones inside functions
(a cycle hidden in a function is still two modules that need each other); only imports under
``if TYPE_CHECKING:`` are left out, as they never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import trtforge

PACKAGE = Path(trtforge.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
MODULES = {_module_name(path): ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> set[str]:
    """The trtforge modules ``tree`` imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    found: set[str] = set()
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                for alias in node.names
            )
        pending.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return components


def test_no_import_cycle_between_trtforge_modules() -> None:
    graph = {name: _imports(tree) - {name} for name, tree in MODULES.items()}
    # a package's __init__ importing its own submodules is how a package re-exports; that edge
    # alone, with the submodule importing nothing back, is no cycle, so it is kept in the graph
    assert _cycles(graph) == []


def test_no_public_name_is_defined_in_two_modules() -> None:
    """``check_artifact`` meaning two things in two modules sent readers to the wrong one."""
    homes: dict[str, set[str]] = defaultdict(set)  # a set: ``@overload`` defines one name several times
    for module, tree in MODULES.items():
        for node in tree.body:
            if isinstance(node, DEFINITIONS) and not node.name.startswith("_"):
                homes[node.name].add(module)
    assert {name: sorted(where) for name, where in homes.items() if len(where) > 1} == {}


def test_the_walk_sees_the_modules_it_must() -> None:
    """The two tests above would pass on nothing: make sure they read the real package."""
    assert {"trtforge.manifest", "trtforge.runtime.loader", "trtforge.accuracy.gate", "trtforge.cli"} <= set(MODULES)
    assert {"trtforge.jsonsafe", "trtforge.publish.docker_auth"} <= set(MODULES)
    assert "trtforge.manifest" in _imports(MODULES["trtforge.runtime.loader"])


#: what any module may import, ``cli.early`` (before anything else) included: the standard library only
LEAVES = ("trtforge.errors", "trtforge.filehash", "trtforge.jsonsafe")


def test_the_modules_every_other_may_import_import_no_trtforge_module() -> None:
    """``errors`` (exit codes), ``filehash`` (the hash ``cli.early`` starts) and ``jsonsafe`` (untrusted
    JSON, read by the manifest, registries and serve alike) sit below every layer."""
    assert {module: sorted(_imports(MODULES[module])) for module in LEAVES} == {module: [] for module in LEAVES}


def test_a_cycle_is_found_and_a_chain_is_not() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_every_engine_entry_point_resolves_paths_one_way(tmp_path: Path) -> None:
    """check, inspect, sign, publish and the manifest reader share ``ArtifactPaths``: the .engine
    and the .manifest.json name the same pair, and any other file gets the same one-line refusal."""
    from trtforge.errors import InvalidInputError
    from trtforge.inspection import engine_facts
    from trtforge.manifest import ArtifactPaths, read_manifest
    from trtforge.publish import load_local_artifact
    from trtforge.runtime.loader import check_compatibility
    from trtforge.signing import generate_keypair, load_signing_key, sign_artifact

    pair = ArtifactPaths(tmp_path / "m-fp16-t.engine", tmp_path / "m-fp16-t.manifest.json")
    assert ArtifactPaths.of(pair.engine) == ArtifactPaths.of(pair.manifest) == pair
    key = load_signing_key(generate_keypair(tmp_path / "key").private_path)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read")
    entry_points = [
        engine_facts,
        read_manifest,
        load_local_artifact,
        check_compatibility,
        lambda path: sign_artifact(path, key),
    ]
    for entry in entry_points:
        with pytest.raises(InvalidInputError) as refused:
            entry(model)
        message = str(refused.value)
        assert message.startswith(f"{model}: not an engine: pass an .engine that trtforge build wrote"), message
        assert "trtforge build SPEC" in message and "\n" not in message
