"""Spec loading: every bad input gives one line naming file, line and key, and exit code 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from clitools import cli

from trtforge.errors import SpecError
from trtforge.model import inspect_model
from trtforge.spec import FP16_CALIBRATION_KEYS, Spec, check_profiles, load_spec, spec_json_schema

GOOD = """\
name: conv
model: {models}/conv.onnx
precision: fp16
targets: [8.6, sm89, sm_120]
profiles:
  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}
"""


def test_good_spec_resolves_paths_and_normalizes_targets(write_spec: Callable[..., Path], model_dir: Path) -> None:
    spec = load_spec(write_spec(GOOD))
    assert spec.model_path == model_dir / "conv.onnx"
    assert spec.targets == ["8.6", "8.9", "12.0"]
    assert spec.build.workspace == 1 << 30
    assert spec.origin.sha256 and spec.origin.where("precision").endswith(":3")


def test_relative_model_path_resolves_against_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    spec_path = tmp_path / "sub" / "s.yaml"
    spec_path.write_text("name: a\nmodel: ../m.onnx\naccuracy: {data: d/*.npy}\n")
    spec = load_spec(spec_path)
    assert spec.model_path == (tmp_path / "sub" / ".." / "m.onnx")
    assert spec.accuracy.data == [str(tmp_path / "sub" / "d/*.npy")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\nmodel: m.onnx\nprecison: fp16\n", ":3: unknown key 'precison' — did you mean 'precision'?"),
        (
            "name: a\nmodel: m.onnx\nbuild:\n  worksapce: 1GiB\n",
            ":4: unknown key 'worksapce' — did you mean 'workspace'?",
        ),
        ("name: a\nmodel: m.onnx\nprecision: fp8\n", ":3: key 'precision': Input should be 'fp32', 'fp16' or 'int8'"),
        ("name: a\nmodel: m.onnx\nbuild: {optimization_level: high}\n", ":3: key 'build.optimization_level'"),
        ("name: Bad Name\nmodel: m.onnx\n", ":1: key 'name': String should match pattern"),
        ("model: m.onnx\n", "missing required key 'name'"),
        ("name: a\nmodel: m.onnx\ntargets: [8.6, nine]\n", ":3: key 'targets.1': Value error, 'nine' is not a compute"),
        ("name: a\nmodel: m.onnx\nprecision: int8\n", "needs a 'calibration:' section"),
        ("name: a\nmodel: [unclosed\n", ": malformed YAML"),
        ("- just\n- a list\n", "a spec is a YAML mapping"),
        ("name: a\nmodel: m.onnx\nbuild: {workspace: lots}\n", ":3: key 'build.workspace'"),
        ("name: a\nmodel: m.onnx\nbuild: {workspace: 99999999TiB}\n", ":3: key 'build.workspace': a workspace is 1"),
        ("name: a\nmodel: m.onnx\nbuild: {workspace: 0}\n", ":3: key 'build.workspace': a workspace is 1"),
        # a misspelt key is also a missing one: the unknown key is named, with the fix
        (
            "name: a\nmodel: m.onnx\nprofiles:\n  - x: {min: [1], opt: [1], mx: [1]}\n",
            ":4: unknown key 'mx' — did you mean 'max'?",
        ),
        ("name: a\nmodel: m.onnx\ncalibration: {dat: d.npy}\n", ":3: unknown key 'dat' — did you mean 'data'?"),
        (
            "name: a\nmodel: m.onnx\naccuracy:\n  tolerances:\n    '*': {cosin_min: 0.9}\n",
            ":5: unknown key 'cosin_min' — did you mean 'cosine_min'?",
        ),
        # settings another one makes meaningless are refused, not ignored
        (
            "name: a\nmodel: m.onnx\nprecision: int8\ncalibration: {data: d.npy, mode: native, exclude: [n]}\n",
            "exclude needs mode: qdq",
        ),
        (
            "name: a\nmodel: m.onnx\nprecision: int8\ncalibration:\n  data: d.npy\n  exclude: [n]\n  max_excluded: 2\n",
            ":7: key 'calibration.max_excluded': Value error, max_excluded bounds exclude: auto",
        ),
        # ByteSize reads a size's start alone: the rest of the text was dropped
        (
            "name: a\nmodel: m.onnx\nbuild: {workspace: 1GiB of it}\n",
            ":3: key 'build.workspace': Value error, '1GiB of",
        ),
        ("name: a\nmodel: m.onnx\ntargets: [true]\n", ":3: key 'targets.0': Input should be a valid string"),
        # a value no member of a union takes: one error at the key, naming every form
        (
            "name: a\nmodel: m.onnx\nprecision: int8\ncalibration: {data: d.npy, exclude: n}\n",
            ":4: key 'calibration.exclude': Input should be a valid list or Input should be 'auto' (got 'n')",
        ),
        # PyYAML would keep the last of two equal keys without a word
        # no coercion: what the shipped JSON Schema refuses, the loader refuses
        ("name: a\nmodel: m.onnx\naccuracy: {enabled: 'yes'}\n", ":3: key 'accuracy.enabled': Input should be a valid"),
        ("name: a\nmodel: m.onnx\naccuracy: {max_samples: '12'}\n", ":3: key 'accuracy.max_samples': Input should"),
        # a fraction where an integer goes (12.0 is the integer 12, for JSON Schema as for the loader)
        ("name: a\nmodel: m.onnx\naccuracy: {max_samples: 12.5}\n", ":3: key 'accuracy.max_samples': Input should"),
        (
            "name: a\nmodel: m.onnx\nprofiles:\n  - x: {min: [true, 1], opt: [1, 1], max: [1, 1]}\n",
            ":4: key 'profiles.0.x.min.0': Input should be a valid integer (got True)",
        ),
        (
            "name: a\nmodel: m.onnx\naccuracy: {tolerances: {y: {max_abs: '0.1'}}}\n",
            ":3: key 'accuracy.tolerances.y.max_abs': Input should be a valid number (got '0.1')",
        ),
        ("name: a\nmodel: m.onnx\nbuild: {workspace: true}\n", ":3: key 'build.workspace'"),
        (
            "name: a\nmodel: m.onnx\nprofiles:\n  - s: {value: [99999999999999999999]}\n",
            "99999999999999999999 at position 0 is outside the int64 range of a shape tensor's values",
        ),
        ("name: a\nmodel: m.onnx\nname: b\n", ":3: key 'name' is given twice (first at line 1); keep one"),
        ("name: a\nmodel: m.onnx\nprofiles:\n\t- x: {min: [1]}\n", ":4: malformed YAML: found character that cannot"),
        ("name: a\nmodel: m.onnx\nbuild:\n  timing_cache: true\n\ttiming: 1\n", "(a tab: YAML indents with spaces"),
        ("name: a\nmodel: m.onnx\ntargets: []\n", ":3: key 'targets': List should have at least 1 item"),
        ("name: a\nmodel: m.onnx\nPRECISION: fp16\n", ":3: unknown key 'PRECISION' — did you mean 'precision'?"),
        (
            "name: a\nmodel: m.onnx\naccuracy: {tolerances: {y: {MAX_ABS: 1}}}\n",
            ":3: unknown key 'MAX_ABS' — did you mean 'max_abs'?",
        ),
        ("name: a\nmodel: m.onnx\nbuild: {timing_cache: true, timing_cache: false}\n", ":3: key 'timing_cache' is"),
        # one GPU listed twice, in any spelling: the manifest refused it after the whole build (exit 1)
        ("name: a\nmodel: m.onnx\ntargets: ['8.6', '8.6']\n", ":3: key 'targets': 8.6 is listed twice (items 0 and 1;"),
        (
            "name: a\nmodel: m.onnx\ntargets:\n  - '8.9'\n  - '8.6'\n  - sm86\n  - sm_86\n",
            ":3: key 'targets': 8.6 is listed twice (items 1 and 2; 8.6, sm86 and sm_86 are one GPU): list each target",
        ),
        # a top-level key YAML reads as a number is named at its own line, as nested ones are
        ("name: a\nmodel: m.onnx\n\n\n1: 2\n", ":5: key '1': Keys should be strings"),
        # a tensor name YAML reads as a number (PyTorch's "0", "495"): "[key]: Input should be a valid string"
        (
            "name: a\nmodel: m.onnx\naccuracy:\n  tolerances:\n    495: {max_abs: 0.1}\n",
            ":5: YAML reads key 'accuracy.tolerances.495' as 495, not text: put the key in quotes, as the file "
            "spells it",
        ),
        (
            "name: a\nmodel: m.onnx\nprofiles:\n  - 0: {min: [1], opt: [1], max: [1]}\n",
            ":4: YAML reads key 'profiles.0.0' as 0, not text: put the key in quotes, as the file spells it",
        ),
        # a key of another section: "see trtforge schema for valid keys" said nothing of where it goes
        ("name: a\nmodel: m.onnx\nworkspace: 2GiB\n", ":3: unknown key 'workspace' here: it belongs under build:"),
        (
            "name: a\nmodel: m.onnx\nmax_samples: 8\n",
            ":3: unknown key 'max_samples' here: it belongs under calibration:",
        ),
        (
            "name: a\nmodel: m.onnx\naccuracy:\n  max_abs: 0.1\n",
            ":4: unknown key 'max_abs' here: it belongs under accuracy.tolerances.NAME:",
        ),
        # a setting given without the name it is for: "Input should be a valid dictionary or instance of Tolerance"
        (
            "name: a\nmodel: m.onnx\naccuracy:\n  tolerances:\n    cosine_min: 0.99\n",
            ":5: key 'accuracy.tolerances.cosine_min': 'cosine_min' goes under a name: 'accuracy.tolerances' maps "
            'names to settings (per output name, or "*" for all); write `NAME: {cosine_min: ...}`',
        ),
        (
            "name: a\nmodel: m.onnx\nprofiles:\n  - {min: [1], opt: [1], max: [1]}\n",
            ":4: key 'profiles.0.min': 'min' goes under a name: 'profiles.0' maps names to settings; write `NAME: {",
        ),
        # only an fp16 build reads fp16:, and at fp32 or int8 a keep_fp32 list (typos included) went unread
        ("name: a\nmodel: m.onnx\nfp16: {keep_fp32: [no/such]}\n", ":3: key 'fp16': applies at precision fp16 only"),
        # a rule between keys is said at the key it is about (it was the file's line 1, '(top level)')
        (
            "name: a\nmodel: m.onnx\ntargets: ['8.6']\nprecision: int8\n",
            ":4: key 'precision': precision int8 needs a 'calibration:' section with 'data:'",
        ),
        (
            "name: a\nmodel: m.onnx\nprecision: int8\ncalibration: {data: d/*.npy}\nfp16: {keep_fp32: []}\n",
            ":5: key 'fp16': applies at precision fp16 only, and this spec is int8; its unquantized layers run in",
        ),
        # an fp32 build reads no calibration: its data was checked and hashed as an input, its settings
        # (typos included) went unread; fp16's overflow guard reads its data, so fp16 takes it
        (
            "name: a\nmodel: m.onnx\nprecision: fp32\ncalibration: {data: d/*.npy, algorithm: minmax}\n",
            ":4: key 'calibration': is read at precision int8 (and by fp16's overflow guard, its data) only, and "
            "this spec is fp32: remove the section, or set precision: int8",
        ),
        ("name: a\nmodel: m.onnx\n\ncalibration: {data: d/*.npy}\n", ":4: key 'calibration': is read at precision"),
        # at fp16 the overflow guard reads the data alone: algorithm: minmax there was ignored without a word
        (
            "name: a\nmodel: m.onnx\nprecision: fp16\ncalibration:\n  data: d/*.npy\n  algorithm: minmax\n",
            ":6: key 'calibration.algorithm': is read at precision int8 only, and this spec is fp16 (its overflow "
            "guard reads data, batch_size and max_samples alone): remove it",
        ),
        # the first in the file, before the section's own checks (exclude needs mode: qdq; percentile <= 100)
        (
            "name: a\nmodel: m.onnx\nprecision: fp16\ncalibration:\n  data: d/*.npy\n  batch_size: 4\n"
            "  mode: native\n  exclude: [a]\n  percentile: 500\n",
            ":7: key 'calibration.mode': is read at precision int8 only, and this spec is fp16 (its overflow guard "
            "reads data, batch_size and max_samples alone): remove it (and exclude, percentile: int8's too)",
        ),
        # a default given as such is the user's setting too
        (
            "name: a\nmodel: m.onnx\nprecision: fp16\ncalibration: {data: d/*.npy, high_precision: fp16}\n",
            ":4: key 'calibration.high_precision': is read at precision int8 only",
        ),
        # keep_fp32 replaces the guard, the section's one reader at fp16
        (
            "name: a\nmodel: m.onnx\nprecision: fp16\n\ncalibration: {data: d/*.npy}\nfp16: {keep_fp32: []}\n",
            ":5: key 'calibration': is read at precision fp16 by the overflow guard alone, and fp16.keep_fp32 "
            "replaces the guard: remove the section, or fp16.keep_fp32 to let the guard choose on this data",
        ),
    ],
)
def test_bad_specs_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert expected.replace("Value error, ", "") in message, message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_fp16_takes_the_calibration_keys_its_overflow_guard_reads(tmp_path: Path) -> None:
    """data, batch_size and max_samples: what the guard runs on; the defaults of the others stand."""
    path = tmp_path / "half.yaml"
    path.write_text(
        "name: a\nmodel: m.onnx\nprecision: fp16\ncalibration: {data: d/*.npy, batch_size: 4, max_samples: 8}\n"
    )
    calibration = load_spec(path).calibration
    assert calibration is not None and (calibration.batch_size, calibration.max_samples) == (4, 8)
    assert calibration.model_fields_set == set(FP16_CALIBRATION_KEYS)


@pytest.mark.parametrize(
    ("raw", "expected", "fix"),
    [
        (
            "name: a\nmodel: m.onnx\n".encode("utf-16"),
            ":1: cannot read spec file: UTF-16 (it starts with a byte-order mark)",
            "save it as UTF-8",
        ),
        (b"name: a\nmodel: caf\xe9.onnx\n", ":2: cannot read spec file: not UTF-8 (byte 0xe9", "save it as UTF-8"),
        ("name: a\nmodel: m.onnx\n".encode("utf-16-le"), ":1: malformed YAML: a NUL byte", "save it as UTF-8"),
        (b"name: a\nmodel: m\x00.onnx\n", ":2: malformed YAML: a NUL byte", "save it as UTF-8"),
        (b"name: a\nmodel: m.onnx\n\x01\n", ":3: malformed YAML: character #x0001", "remove it"),
    ],
    ids=["utf-16", "latin-1", "utf-16 without BOM", "NUL", "control character"],
)
def test_a_spec_that_is_not_utf8_text_is_named_at_its_line_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: bytes, expected: str, fix: str
) -> None:
    """Named as every other spec error names it: the absolute path (though given relative), the
    line, and what to do."""
    (tmp_path / "bad.yaml").write_bytes(raw)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        load_spec(Path("bad.yaml"))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'bad.yaml'}{expected}") and message.endswith(fix), message
    assert "\n" not in message and caught.value.exit_code == 2


@pytest.mark.parametrize(
    "text",
    [
        # fp16's nodes kept out are keep_fp32; calibration.exclude is int8's, and an fp16 build never reads it
        "name: a\nmodel: m.onnx\nprecision: fp16\nfp16: {exclude: [head/Gemm]}\n",
        # a tolerance's min is no profile's
        "name: a\nmodel: m.onnx\naccuracy: {tolerances: {'*': {min: 0.99}}}\n",
    ],
)
def test_a_key_inside_another_section_is_not_sent_to_an_unrelated_one(tmp_path: Path, text: str) -> None:
    """'belongs under' names where a key given too high up goes (workspace: at the top); a key inside
    another section got the name of any section holding a key so spelt (fp16: {exclude:} 'belongs
    under calibration:', where an fp16 spec's exclude is silently unread)."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert "belongs under" not in str(caught.value), str(caught.value)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_project_file_is_never_a_spec(tmp_path: Path) -> None:
    path = tmp_path / "trtforge.yaml"
    path.write_text("runners: {}\n")
    with pytest.raises(SpecError, match="project file") as refused:
        load_spec(path)
    # `trtforge ci configs/*.yaml` names it: the fix is the folder, which excludes it
    assert f"or their folder ({tmp_path}/: every spec in it, this file excluded)" in str(refused.value)


PROFILE_CASES = [
    ("  - input: {min: [1, 3, 16], opt: [1, 3, 16], max: [1, 3, 16]}\n", "has rank 3"),
    ("  - input: {min: [8, 3, 16, 16], opt: [4, 3, 16, 16], max: [2, 3, 16, 16]}\n", "need min <= opt <= max"),
    ("  - input: {min: [1, 4, 16, 16], opt: [1, 4, 16, 16], max: [1, 4, 16, 16]}\n", r"static \(3\)"),
    ("  - imput: {min: [1, 3, 16, 16], opt: [1, 3, 16, 16], max: [1, 3, 16, 16]}\n", "did you mean 'input'"),
    # an engine for empty batches only would pass any accuracy check on zero values
    ("  - input: {min: [0, 3, 16, 16], opt: [0, 3, 16, 16], max: [0, 3, 16, 16]}\n", r"opt\[0\] is 0: an engine"),
    ("  - input: {min: [0, 3, 16, 16], opt: [1, 3, 16, 16], max: [0, 3, 16, 16]}\n", r"max\[0\] is 0"),
    ("  - input: {min: [1, 3, 16, 16], opt: [1, 3, 16, 16], max: [4000000000, 3, 16, 16]}\n", "a dim is 0 to 2,147"),
    ("  - input: {min: [-1, 3, 16, 16], opt: [1, 3, 16, 16], max: [1, 3, 16, 16]}\n", "a dim is 0 to"),
]


@pytest.mark.parametrize(("profile", "expected"), PROFILE_CASES)
def test_profiles_checked_against_graph(
    write_spec: Callable[..., Path], model_dir: Path, profile: str, expected: str
) -> None:
    spec = load_spec(write_spec("name: a\nmodel: {models}/conv.onnx\nprofiles:\n" + profile))
    with pytest.raises(SpecError, match=expected) as caught:
        check_profiles(spec, inspect_model(model_dir / "conv.onnx"))
    assert ":4:" in str(caught.value)


def test_an_empty_batch_is_a_valid_profile_min(write_spec: Callable[..., Path], model_dir: Path) -> None:
    profile = "  - input: {min: [0, 3, 16, 16], opt: [1, 3, 16, 16], max: [2, 3, 16, 16]}\n"
    spec = load_spec(write_spec("name: a\nmodel: {models}/conv.onnx\nprofiles:\n" + profile))
    check_profiles(spec, inspect_model(model_dir / "conv.onnx"))
    assert spec.profiles[0]["input"].min == [0, 3, 16, 16]


def test_dynamic_input_without_profile(write_spec: Callable[..., Path], model_dir: Path) -> None:
    spec = load_spec(write_spec("name: a\nmodel: {models}/conv.onnx\n"))
    with pytest.raises(SpecError, match="add 'profiles:'"):
        check_profiles(spec, inspect_model(model_dir / "conv.onnx"))


def test_every_profile_covers_every_dynamic_input(write_spec: Callable[..., Path], model_dir: Path) -> None:
    spec = load_spec(
        write_spec(
            "name: a\nmodel: {models}/two_inputs.onnx\nprofiles:\n"
            "  - image: {min: [1, 3, 8, 8], opt: [2, 3, 8, 8], max: [4, 3, 8, 8]}\n"
        )
    )
    with pytest.raises(SpecError, match="no shapes for dynamic input 'meta'"):
        check_profiles(spec, inspect_model(model_dir / "two_inputs.onnx"))


def test_shipped_schema_matches_the_model() -> None:
    shipped = Path(__file__).parent.parent / "trtforge" / "spec.schema.json"
    assert json.loads(shipped.read_text()) == spec_json_schema()
    assert set(spec_json_schema()["properties"]) == set(Spec.model_fields)


def test_a_dim_named_alike_in_two_inputs_has_one_range(write_spec: Callable[..., Path], model_dir: Path) -> None:
    """TensorRT refused such a profile after the parse (exit 3, "contradictory kMIN/kMAX constraints")."""
    image = "  - image: {min: [1, 3, 8, 8], opt: [2, 3, 8, 8], max: [4, 3, 8, 8]}\n"
    model = inspect_model(model_dir / "two_inputs.onnx")
    same = load_spec(
        write_spec(
            "name: a\nmodel: {models}/two_inputs.onnx\nprofiles:\n"
            + image
            + "    meta: {min: [1, 4], opt: [2, 4], max: [4, 4]}\n"
        )
    )
    check_profiles(same, model)
    other = load_spec(
        write_spec(
            "name: a\nmodel: {models}/two_inputs.onnx\nprofiles:\n"
            + image
            + "    meta: {min: [8, 4], opt: [16, 4], max: [32, 4]}\n"
        )
    )
    expected = r"dim 'N' of input 'meta' min/opt/max \[8, 16, 32\], but \[1, 2, 4\] for input 'image'"
    with pytest.raises(SpecError, match=expected) as caught:
        check_profiles(other, model)
    assert ":5: profile 0 gives" in str(caught.value)


@pytest.mark.parametrize(("text", "value"), [("1e-3", 0.001), ("1.5e3", 1500.0), ("2E-4", 0.0002), ("1", 1.0)])
def test_a_float_in_exponent_form_is_a_number(tmp_path: Path, text: str, value: float) -> None:
    """PyYAML reads YAML 1.1, where 1e-3 is a string: the strict types refused the spec, though the
    JSON Schema (and YAML 1.2) call it a number."""
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: a\nmodel: m.onnx\naccuracy: {{tolerances: {{'*': {{max_abs: {text}}}}}}}\n")
    assert load_spec(path).accuracy.tolerances["*"].max_abs == value


# ---------------------------------------------------------------- README bounds: nesting and workspace


def _nested(levels: int) -> str:
    """A spec whose key ``x`` holds flow lists nested so that the innermost node is ``levels`` deep
    (the top mapping is level 1, ``x``'s value level 2)."""
    return "name: a\nmodel: m.onnx\nx: " + "[" * (levels - 1) + "]" * (levels - 1) + "\n"


def test_a_spec_nested_deeper_than_64_levels_is_exit_2_at_its_line(tmp_path: Path) -> None:
    """README: a spec is nested at most 64 deep; deeper is refused (exit 2) while it is parsed, one
    line naming the file and the line. At 64 the loader lets it through: what refuses it then is the
    validator (the unknown key), not the bound."""
    deep = tmp_path / "deep.yaml"
    deep.write_text(_nested(65))
    code, stdout, stderr = cli("build", deep, "--out", tmp_path / "out")
    assert code == 2 and stdout == "", stderr
    assert stderr == f"error: {deep}:3: nested deeper than 64 levels; a spec is a few dozen keys\n"
    assert not (tmp_path / "out").exists()
    with pytest.raises(SpecError, match=r"deep\.yaml:3: nested deeper than 64 levels") as caught:
        load_spec(deep)
    assert caught.value.exit_code == 2

    # block style: the line named is the one where the 65th level starts
    block = tmp_path / "block.yaml"
    block.write_text(
        "name: a\nmodel: m.onnx\n" + "".join("  " * level + "x:\n" for level in range(63)) + "  " * 63 + "y: 1\n"
    )
    code, _, stderr = cli("build", block, "--out", tmp_path / "out")
    assert code == 2 and stderr == f"error: {block}:66: nested deeper than 64 levels; a spec is a few dozen keys\n"

    at_the_bound = tmp_path / "64.yaml"
    at_the_bound.write_text(_nested(64))
    with pytest.raises(SpecError) as caught:
        load_spec(at_the_bound)
    assert str(caught.value) == f"{at_the_bound}:3: unknown key 'x' (see trtforge schema for valid keys)"


@pytest.mark.parametrize("value", ["1125899906842625", "1.000001PiB", "1025TiB"])
def test_a_workspace_just_above_1_pib_is_exit_2_at_its_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: a\nmodel: m.onnx\nbuild:\n  workspace: {value}\n")
    code, _, stderr = cli("build", path, "--out", tmp_path / "out")
    assert code == 2
    assert stderr == f"error: {path}:4: key 'build.workspace': a workspace is 1 byte to 1.0PiB, e.g. '4GiB'\n"


@pytest.mark.parametrize("value", ["1125899906842624", "1PiB", "1024TiB", "1pib"])
def test_a_workspace_of_exactly_1_pib_is_accepted_by_the_model_and_the_schema(tmp_path: Path, value: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: a\nmodel: m.onnx\nbuild:\n  workspace: {value}\n")
    assert load_spec(path).build.workspace == 1 << 50
    schema = spec_json_schema()
    document = {"name": "a", "model": "m.onnx", "build": {"workspace": int(value) if value.isdigit() else value}}
    jsonschema.validate(document, schema)  # the editor's schema agrees with the loader at the bound
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**document, "build": {"workspace": (1 << 50) + 1}}, schema)
