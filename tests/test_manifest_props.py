"""Property-based tests (Hypothesis) of the engine manifest, which every runtime check trusts: the
shipped JSON Schema and trtforge read it alike, any bytes read as one are trtforge's own one-line
error, ``inspect`` and ``check`` exit with a documented code on an edited one, and what trtforge
writes it reads back as the same manifest. Each starts from a real build's manifest and edits it."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from clitools import cli
from documents import at, places
from hypothesis import given, settings
from hypothesis import strategies as st
from models import need_rtx, retag
from registry import build_engine

from trtforge.errors import InvalidInputError
from trtforge.jsonsafe import MAX_JSON_DEPTH
from trtforge.manifest import MAX_MANIFEST_BYTES, Manifest, manifest_path_for, parse_manifest
from trtforge.tags import PRECISIONS, RTX_COMPUTE_CAPABILITIES

need_rtx()

REPO = Path(__file__).resolve().parent.parent
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads((REPO / "trtforge" / "manifest.schema.json").read_text(encoding="utf-8"))
)
ORIGIN = "edited.manifest.json"
#: reproducible in CI; the per-test cache folder (conftest) is no state an example depends on

#: what a refusal from trtforge's readers says (README "Compatibility checks and the runtime loader")
REFUSALS = ("unreadable manifest", "not a trtforge manifest", "is a newer trtforge's")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engine(tmp_path_factory.mktemp("props-manifest"), targets=["8.6", "8.9"])


@pytest.fixture(scope="module")
def document(engine: Path) -> dict[str, Any]:
    """The manifest as the build wrote it."""
    return json.loads(manifest_path_for(engine).read_bytes())


# --- edits ---------------------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
)
#: keys of an object, unpaired surrogates (``"\\ud800"``, valid JSON) included
KEYS = st.text(max_size=10) | st.sampled_from(["\ud800", "\udcff", "a\udc80"])
#: values an editor, another tool's writer or a hostile hand puts in a manifest
ODD_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(["", " ", "8.6", "10", "linux", "x86_64", "fp16", "input", "ampere_plus", "\u2028", "é", "\ud800"]),
    st.integers(min_value=10**15, max_value=10**40).flatmap(lambda n: st.sampled_from([n, -n, float(n)])),
    st.sampled_from([-1, 0, 1, 1.0, 64.0, -0.0, 0.5, 1e308, -1e308, 2**63, 2**64, 10**400, -(10**400)]),
    st.sampled_from(["0" * 64 + "\n", "a" * 65, "A" * 64]),  # a sha256's near misses
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12),
)


def near_misses(value: Any) -> st.SearchStrategy[Any]:
    """A value close to ``value``, as a slip or another tool writes it: a string with a final newline,
    in capitals, with an unpaired surrogate or empty; a number as a whole float, negative or huge."""
    if isinstance(value, str):
        return st.sampled_from([value + "\n", value.upper(), value + "\ud800", f" {value}", ""])
    if isinstance(value, int) and not isinstance(value, bool):
        whole = float(value) if value.bit_length() < 1000 else -value
        return st.sampled_from([whole, -value - 1, value + 2**64, 10**400])
    return ODD_VALUES


def _edit(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """One edit at one place: drop it, add an unknown key, put another value there (another type, a
    huge or negative number, a whole-number float, an empty string, unicode) or nest it deep."""
    edited = copy.deepcopy(document)
    path = draw(st.sampled_from(list(places(edited))))
    node = at(edited, path)
    kind = draw(st.sampled_from(["drop", "add", "replace", "near", "near", "float", "nest"]))
    if not path or kind == "add":
        target = node if isinstance(node, dict) else edited
        target[draw(KEYS.filter(lambda key: key not in target))] = draw(ODD_VALUES)
        return edited
    parent, last = at(edited, path[:-1]), path[-1]
    if kind == "drop":
        del parent[last]
    elif kind == "float" and isinstance(node, int) and not isinstance(node, bool) and node.bit_length() < 1000:
        parent[last] = float(node)
    elif kind == "near":
        parent[last] = draw(near_misses(node))
    elif kind == "nest":
        depth = draw(st.integers(min_value=1, max_value=MAX_JSON_DEPTH + 4))
        for _ in range(depth):
            node = draw(st.sampled_from([[node], {"x": node}]))
        parent[last] = node
    else:
        parent[last] = draw(ODD_VALUES)
    return edited


def _refacted(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """Other facts a build writes (name, precision, GPU list), tag and file name rendered from them."""
    edited = copy.deepcopy(document)
    edited["name"] = draw(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True))
    edited["precision"] = draw(st.sampled_from(PRECISIONS))
    gpus = draw(st.sets(st.sampled_from(RTX_COMPUTE_CAPABILITIES), min_size=1))
    edited["gpu"]["compute_capabilities"] = [str(cc) for cc in sorted(gpus)]
    return retag(edited)


@st.composite
def edited_documents(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """A real manifest, maybe with other facts a build writes, with one edit or two."""
    start = _refacted(draw, document) if draw(st.booleans()) else document
    edited = _edit(draw, start)
    return _edit(draw, edited) if draw(st.booleans()) else edited


def read(document: Any) -> Manifest | InvalidInputError:
    """trtforge's reading of ``document`` as JSON: the manifest, or its refusal."""
    try:
        return parse_manifest(json.dumps(document).encode(), ORIGIN)
    except InvalidInputError as exc:
        return exc


# --- properties ----------------------------------------------------------------------------------


@settings(max_examples=1000)
@given(data=st.data())
def test_the_shipped_schema_and_trtforge_agree_on_edited_manifests(
    document: dict[str, Any], data: st.DataObject
) -> None:
    """A loader that is not trtforge (a C++ runtime, a registry policy) validates with the shipped
    schema: what it passes trtforge must read, unless a rule between fields (or a value's form)
    that a schema cannot state refuses it, and what it refuses trtforge must refuse too."""
    edited = data.draw(edited_documents(document))
    schema_errors = [error.message for error in VALIDATOR.iter_errors(edited)]
    read_as = read(edited)
    if isinstance(read_as, Manifest):
        assert schema_errors == [], "trtforge read a manifest the shipped schema refuses"
        return
    message = str(read_as)
    if schema_errors or "unreadable manifest" in message:
        return  # the bounds before parsing (depth, numbers beyond a double, keys not Unicode) are README's
    cause = read_as.__cause__
    assert cause is not None and hasattr(cause, "errors"), message
    structural = [error for error in cause.errors() if error["type"] != "value_error"]
    assert structural == [], f"trtforge refused, by the schema's own kind of rule, what the schema passes: {message}"


@settings(max_examples=300)
@given(data=st.data())
def test_any_bytes_read_as_a_manifest_are_trtforges_own_one_line_error(
    document: dict[str, Any], data: st.DataObject
) -> None:
    """A manifest comes from a registry, a download, a shared folder: whatever its bytes, reading it
    is the manifest or exit 2 naming the file, never a library's exception (exit 1, "internal error")."""
    good = json.dumps(document, indent=2).encode()
    raw = data.draw(
        st.one_of(
            st.binary(max_size=200),
            edited_documents(document).map(lambda edited: json.dumps(edited).encode()),
            st.integers(min_value=0, max_value=len(good)).map(lambda end: good[:end]),
            JSON_VALUES.map(lambda value: json.dumps(value).encode()),
            st.sampled_from([b"NaN", b"-Infinity", b"1e999", b'{"a": 1, "a": 2}', b"\xef\xbb\xbf{}", b"9" * 5000]),
            st.sampled_from([b"[" * 40 + b"]" * 40, b" " * (MAX_MANIFEST_BYTES + 1)]),
            st.tuples(st.integers(min_value=0, max_value=len(good) - 1), st.binary(min_size=1, max_size=4)).map(
                lambda cut: good[: cut[0]] + cut[1] + good[cut[0] + 1 :]
            ),
        )
    )
    try:
        parse_manifest(raw, ORIGIN)
    except InvalidInputError as exc:
        message = str(exc)
        assert message.startswith(f"{ORIGIN}: ") and any(says in message for says in REFUSALS), message
        assert exc.exit_code == 2


@settings(max_examples=600)
@given(data=st.data())
def test_what_trtforge_writes_it_reads_back_as_the_same_manifest(document: dict[str, Any], data: st.DataObject) -> None:
    """``sign``, ``pull`` and ``verify`` write a manifest they read: it must read back as the same
    manifest (and pass the shipped schema), or a signature covers facts other than the ones read."""
    manifest = read(data.draw(edited_documents(document)))
    if not isinstance(manifest, Manifest):
        return
    written = manifest.to_json()
    again = parse_manifest(written, ORIGIN)
    assert again == manifest
    assert again.to_json() == written
    assert list(VALIDATOR.iter_errors(json.loads(written))) == []


@settings(max_examples=100)
@given(data=st.data())
def test_inspect_and_check_exit_with_a_documented_code_on_an_edited_manifest(
    engine: Path, document: dict[str, Any], data: st.DataObject, tmp_path: Path
) -> None:
    """The engine commands read manifests from untrusted places: an edited one is exit 2 (unreadable
    or not a manifest) or 5 (not this engine's), on one line, never 1 (internal error) or a traceback."""
    edited = data.draw(edited_documents(document))
    folder = tmp_path / f"example-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    copy_ = folder / engine.name
    shutil.copyfile(engine, copy_)
    manifest_path_for(copy_).write_bytes(json.dumps(edited).encode())
    readable = isinstance(read(edited), Manifest)
    for command in (("inspect", copy_), ("check", copy_, "--cc", "8.6")):
        code, _, err = cli(*command)
        assert code in ((0, 5) if readable else (2,)), f"{command[0]} exit {code}: {err}"
        assert "Traceback" not in err and "internal error" not in err, err
        errors = [line for line in err.splitlines() if " error: " in f" {line}"]
        if code == 2:  # a user error is its one line
            assert len(err.splitlines()) == 1 and errors, repr(err)
        elif code == 5:  # one refusal; inspect shows the facts, check each reason below it
            assert len(errors) == 1, repr(err)


# --- the defects the properties found, pinned ------------------------------------------------------


def test_a_sha256_with_a_final_newline_is_refused_by_the_schema_too(document: dict[str, Any]) -> None:
    """``$`` in Python's ``re`` (the jsonschema library's) matches before a final newline: the shipped
    schema passed ``"<64 hex>\\n"`` as ``artifact.sha256``, which trtforge refuses."""
    for section, key in (("artifact", "sha256"), ("source", "model_sha256")):
        edited = copy.deepcopy(document)
        edited[section][key] = "0" * 64 + "\n"
        assert list(VALIDATOR.iter_errors(edited)), key
        assert isinstance(read(edited), InvalidInputError), key


@pytest.mark.parametrize(
    "number", ["1" + "0" * 400, "-1" + "0" * 400, "9" * 5000], ids=["1e400", "-1e400", "5000 digits"]
)
def test_an_integer_beyond_a_double_is_unreadable(document: dict[str, Any], number: str) -> None:
    """A JSON parser that holds numbers as doubles reads ``1`` and 400 zeros as infinity, as it reads
    ``1e999``: trtforge took it as ``artifact.size``, and as ``build.seconds`` said "Input should be a
    valid number"; 5,000 digits was Python's own message about ``sys.set_int_max_str_digits``."""
    for section, key in (("artifact", "size"), ("build", "seconds")):
        edited = copy.deepcopy(document)
        edited[section][key] = 0.5  # a marker, then the literal in its place
        raw = json.dumps(edited).replace(f'"{key}": 0.5', f'"{key}": {number}', 1)
        with pytest.raises(InvalidInputError, match=rf"unreadable manifest, number {number[:20]} is out of range"):
            parse_manifest(raw, ORIGIN)


@pytest.mark.parametrize(
    ("edit", "shown"),
    [
        (lambda d: d["platform"].update(machine="x86_64\ud800"), "'x86_64\\ud800'"),
        (lambda d: d.update(accuracy={chr(0xD800): 1, chr(0xD801): 2}), "'\\ud800'"),
    ],
    ids=["in a value a validator repeats", "two keys pydantic wrote as one"],
)
def test_a_string_that_is_not_unicode_text_is_unreadable(
    engine: Path, document: dict[str, Any], tmp_path: Path, edit: Callable[[dict[str, Any]], None], shown: str
) -> None:
    """``"\\ud800"`` is valid JSON syntax with no UTF-8 form. In ``platform.machine`` pydantic raised
    UnicodeEncodeError writing its error (``check``: exit 1, "internal error"); as keys of ``accuracy``
    it wrote both as U+FFFD, one key, so a manifest read and written again said another thing."""
    edited = copy.deepcopy(document)
    edit(edited)
    copy_ = tmp_path / engine.name
    shutil.copyfile(engine, copy_)
    manifest_path_for(copy_).write_bytes(json.dumps(edited).encode())
    code, _, err = cli("check", copy_, "--cc", "8.6")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"unreadable manifest, string {shown} is not Unicode text (an unpaired surrogate)" in err, err
