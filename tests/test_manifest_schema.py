"""The manifest's JSON Schema (``trtforge schema --manifest``, shipped as
``trtforge/manifest.schema.json``), for loaders that are not trtforge: it is the model's, every
manifest a build writes is valid by it (checked with jsonschema, a standard validator), and what it
refuses trtforge refuses too."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from clitools import cli
from models import need_rtx

from trtforge.errors import InvalidInputError
from trtforge.manifest import manifest_json_schema, manifest_path_for, parse_manifest

need_rtx()

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "trtforge" / "manifest.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SHIPPED.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The digits example at fp32, fp16 (its overflow guard's section) and int8 (calibration), and
    the fp32 one signed (its signature section), as the build wrote them."""
    out = tmp_path_factory.mktemp("out")
    key = out / "signing.key"
    specs = [REPO / "configs" / f"digits-{precision}.yaml" for precision in ("fp32", "fp16", "int8")]
    # a cache of its own: a module's fixture runs before the per-test cache folder (conftest) is set
    assert cli("build", *specs, "--out", out, "--cache-dir", tmp_path_factory.mktemp("cache"))[0] == 0
    assert cli("keygen", key)[0] == 0
    found = {path.name.split("-")[2]: json.loads(path.read_text()) for path in out.glob("*.manifest.json")}
    (fp32,) = out.glob("digits-cnn-fp32-*.engine")
    assert cli("sign", fp32, "--key", key)[0] == 0
    found["signed"] = json.loads(manifest_path_for(fp32).read_text())
    return found


def test_the_shipped_schema_is_the_models() -> None:
    assert json.loads(SHIPPED.read_text(encoding="utf-8")) == manifest_json_schema()
    code, stdout, stderr = cli("schema", "--manifest")
    assert code == 0 and json.loads(stdout) == manifest_json_schema(), stderr


def test_every_manifest_a_build_writes_is_valid(manifests: dict[str, dict[str, Any]]) -> None:
    assert sorted(manifests) == ["fp16", "fp32", "int8", "signed"]
    assert "signature" in manifests["signed"] and manifests["fp16"].get("fp16")
    for name, document in manifests.items():
        errors = [error.message for error in VALIDATOR.iter_errors(document)]
        assert errors == [], name


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown key": lambda m: m.update(extra=1),
    "newer schema": lambda m: m.update(schema="trtforge/manifest/v2"),
    "precision": lambda m: m.update(precision="fp8"),
    "sha256 form": lambda m: m["artifact"].update(sha256="ABC"),
    "negative size": lambda m: m["artifact"].update(size=-1),
    "platform os": lambda m: m["platform"].update(os="macos"),
    "missing build": lambda m: m.pop("build"),
    "io mode": lambda m: m["io"][0].update(mode="inout"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_what_the_schema_refuses_trtforge_refuses(manifests: dict[str, dict[str, Any]], edit: str) -> None:
    document = json.loads(json.dumps(manifests["fp32"]))
    EDITS[edit](document)
    assert list(VALIDATOR.iter_errors(document)), edit
    with pytest.raises(InvalidInputError):
        parse_manifest(json.dumps(document), "edited.manifest.json")


def test_a_number_with_no_fraction_is_the_integer_the_schema_says(manifests: dict[str, dict[str, Any]]) -> None:
    """JSON Schema counts 64.0 an integer: the shipped schema passed a manifest written with one
    (another tool's JSON writer) that trtforge refused as not a manifest. Both read it now, as the
    spec loader reads ``batch_size: 64.0``; the schema and trtforge refuse 64.5 alike."""
    original = manifests["fp32"]
    document = json.loads(json.dumps(original))
    document["artifact"]["size"] = float(document["artifact"]["size"])
    for tensor in document["io"]:
        tensor["shape"] = [float(dim) for dim in tensor["shape"]]
    for entry in (entry for profile in document["profiles"] for entry in profile.values()):
        entry.update({key: [float(dim) for dim in dims] for key, dims in entry.items()})
    assert document["profiles"] and document["io"]
    assert list(VALIDATOR.iter_errors(document)) == []
    assert parse_manifest(json.dumps(document), "m") == parse_manifest(json.dumps(original), "m")
    document["artifact"]["size"] += 0.5
    assert list(VALIDATOR.iter_errors(document))
    with pytest.raises(InvalidInputError, match=r"artifact\.size"):
        parse_manifest(json.dumps(document), "m")
