"""The shipped JSON Schema (trtforge/spec.schema.json, what editors and CI linters read) accepts
the project's own specs, the README's spec reference, and globs as "a string or a list" (issue 13,
item 6): until then `calibration.data: dir/*.npy` was valid for trtforge and invalid for the schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from trtforge.spec import Spec
from trtforge.tags import ComputeCapability

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "trtforge" / "spec.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _specs() -> list[Path]:
    """YAML files in configs/ and examples/ that are specs: not trtforge.yaml, not CI workflows."""
    found = []
    for folder in ("configs", "examples"):
        for path in sorted((REPO / folder).rglob("*.y*ml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if path.name != "trtforge.yaml" and isinstance(data, dict) and {"name", "model"} <= data.keys():
                found.append(path)
    return found


def _errors(document: object) -> list[str]:
    return [f"{'.'.join(map(str, error.path))}: {error.message}" for error in VALIDATOR.iter_errors(document)]


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_there_are_specs_to_check() -> None:
    names = {path.name for path in _specs()}
    assert {"digits-fp32.yaml", "digits-fp16.yaml", "digits-int8.yaml", "digits-dynamic.yaml"} <= names


@pytest.mark.parametrize("spec", _specs(), ids=lambda path: str(path.relative_to(REPO)))
def test_every_shipped_spec_validates(spec: Path) -> None:
    assert not _errors(yaml.safe_load(spec.read_text(encoding="utf-8")))


def test_the_readme_spec_reference_validates() -> None:
    """By the schema, and by trtforge's own model: settings that exclude each other (an exclusion
    list with max_excluded, which the schema cannot say) were in it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    reference = readme[readme.index("## Spec reference") :]
    block = re.search(r"```yaml\n(.*?)```", reference, re.DOTALL)
    assert block is not None
    document = yaml.safe_load(block.group(1))
    assert not _errors(document)
    Spec.model_validate(document)


def test_the_schema_takes_and_refuses_what_trtforge_does() -> None:
    """Unquoted compute capabilities build, so the schema takes them; a workspace trtforge refuses
    (0, text with more than a size) the schema refuses too."""
    base = {"name": "m", "model": "m.onnx"}
    assert not _errors({**base, "targets": [8.6, "sm_89"], "build": {"workspace": "1.5 GiB"}})
    for workspace in (0, "1GiB of it", "1XB", "", -1):
        assert _errors({**base, "build": {"workspace": workspace}}), workspace
    assert _errors({**base, "targets": ["8.6", "8.6"]})  # one GPU twice (other spellings: trtforge alone)


@pytest.mark.parametrize("section", ["calibration", "accuracy"])
def test_data_is_a_glob_or_a_list_of_globs(section: str) -> None:
    base = {"name": "m", "model": "m.onnx"}
    for data in ("data/*.npy", ["a/*.npy", "b.npz"]):
        assert not _errors({**base, section: {"data": data}})
    assert _errors({**base, section: {"data": []}})
    assert _errors({**base, section: {"data": 3}})


@pytest.mark.parametrize(
    "target",
    ["8.6", "sm86", "sm_86", "SM120", " 8.9 ", "foo", "86", "8.10", "sm8", "0.5", "ampere"],
)
def test_the_schema_takes_the_target_texts_trtforge_takes(target: str) -> None:
    """The schema took any text as a target: an editor passed `targets: [ampere]`, which is exit 2."""
    try:
        ComputeCapability.parse(target)
        parses = True
    except ValueError:
        parses = False
    assert bool(_errors({"name": "m", "model": "m.onnx", "targets": [target]})) != parses, target


@pytest.mark.parametrize(
    "settings",
    [
        {"profiles": [{"x": {"min": [1.0, 3], "opt": [2, 3.0], "max": [4, 3]}}]},
        {"profiles": [{"k": {"value": 2.0}}]},
        {"profiles": [{"s": {"values": {"min": [1.0, 2], "opt": [2, 2], "max": [3, 2.0]}}}]},
        {"precision": "int8", "calibration": {"data": "d.npy", "batch_size": 64.0, "max_samples": 512.0}},
        {"precision": "int8", "calibration": {"data": "d.npy", "exclude": "auto", "max_excluded": 2.0}},
        {"accuracy": {"max_samples": 1e3}},
        {"build": {"optimization_level": 3.0, "workspace": 1048576.0}},
    ],
    ids=["shape", "value", "values", "calibration", "max_excluded", "accuracy", "build"],
)
def test_a_number_with_no_fraction_is_an_integer_for_the_schema_and_for_trtforge(settings: dict[str, object]) -> None:
    """JSON Schema counts 64.0 an integer, so the schema (and an editor, a CI linter) takes it where
    an integer goes: trtforge refused it, exit 2 for a spec its own schema passed. Now both take it,
    as the integer it is, and both refuse a fraction."""
    document = {"name": "m", "model": "m.onnx", **settings}
    assert not _errors(document)
    spec = Spec.model_validate(document)
    numbers = json.dumps(spec.model_dump(mode="json", include=set(settings), exclude_unset=True))
    assert ".0" not in numbers, numbers  # held as integers
    fraction = json.loads(json.dumps(document).replace(".0", ".5", 1))
    assert _errors(fraction)
    with pytest.raises(ValueError, match=r"valid integer|not a size"):
        Spec.model_validate(fraction)
