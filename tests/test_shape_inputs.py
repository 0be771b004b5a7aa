"""Shape-tensor inputs (Slice starts/ends, Reshape shape, TopK k): values in the spec's profiles,
checked, passed to a real TensorRT-RTX build, fed to the gate, recorded in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from clitools import cli
from models import need_rtx, save
from onnx import TensorProto, helper

from trtforge.accuracy.inputs import random_batches, shape_sets
from trtforge.errors import InvalidInputError, SpecError
from trtforge.model import ModelInfo, TensorDesc, inspect_model
from trtforge.spec import ShapeRange, check_profiles, load_spec

need_rtx()


def _model(path: Path, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], out: list) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, [helper.make_tensor_value_info("y", *out)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return save(model, path)


def slice_model(path: Path) -> Path:
    """x [4, 6] sliced by graph inputs starts [2] and ends [2] (int64 shape tensors)."""
    return _model(
        path,
        [helper.make_node("Slice", ["x", "starts", "ends"], ["y"])],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6]),
            helper.make_tensor_value_info("starts", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("ends", TensorProto.INT64, [2]),
        ],
        [TensorProto.FLOAT, ["a", "b"]],
    )


def reshape_model(path: Path) -> Path:
    """x [2, 3, 4] reshaped to the graph input ``shape`` [2]."""
    return _model(
        path,
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [TensorProto.FLOAT, ["a", "b"]],
    )


def topk_model(path: Path) -> Path:
    """The k largest of x [3, 5] along the last axis; k is the graph input ``k`` [1]."""
    graph = helper.make_graph(
        [helper.make_node("TopK", ["x", "k"], ["y", "indices"])],
        "topk",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, "k"]),
            helper.make_tensor_value_info("indices", TensorProto.INT64, [3, "k"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return save(model, path)


def _spec(tmp_path: Path, model: Path, profiles: str = "", name: str = "shapes") -> Path:
    text = f"name: {name}\nmodel: {model.name}\ntargets: ['8.6']\n"
    if profiles:
        text += f"profiles:\n{profiles}"
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _build(spec: Path, out: Path) -> tuple[int, str, dict]:
    code, stdout, stderr = cli("build", spec, "--out", out, "--json")
    document = json.loads(stdout)
    return code, stderr, document["results"][0]


@pytest.mark.parametrize(
    ("make", "profiles"),
    [
        (
            slice_model,
            "  - starts: {values: {min: [0, 0], opt: [1, 2], max: [2, 3]}}\n    ends: {value: [4, 6]}\n",
        ),
        (reshape_model, "  - shape: {values: {min: [-1, 4], opt: [-1, 6], max: [-1, 12]}}\n"),
        (topk_model, "  - k: {values: {min: [1], opt: [2], max: [5]}}\n"),
    ],
    ids=["slice", "reshape", "topk"],
)
def test_shape_tensor_values_build_and_pass_the_gate(tmp_path: Path, make, profiles: str) -> None:
    """Before: no spec key for values; TensorRT's "no optimization profile has been defined"."""
    make(tmp_path / "m.onnx")
    code, stderr, result = _build(_spec(tmp_path, tmp_path / "m.onnx", profiles), tmp_path / "out")
    assert code == 0, stderr
    assert result["accuracy"]["passed"] is True
    manifest = json.loads(Path(result["manifest"]).read_text())
    entry = next(iter(manifest["profiles"][0].values()))
    assert {"min_values", "opt_values", "max_values"} <= set(entry)
    assert entry["min"] == entry["max"] == [len(entry["min_values"])]


def test_value_shorthand_is_min_opt_max(tmp_path: Path) -> None:
    reshape_model(tmp_path / "m.onnx")
    spec = load_spec(_spec(tmp_path, tmp_path / "m.onnx", "  - shape: {value: [4, 6]}\n"))
    entry = spec.profiles[0]["shape"]
    assert entry.values is not None
    assert entry.values.flat("min") == entry.values.flat("max") == [4, 6]
    assert entry.min == entry.opt == entry.max == [2]
    code, stderr, result = _build(spec.origin.path, tmp_path / "out")
    assert code == 0, stderr
    assert json.loads(Path(result["manifest"]).read_text())["profiles"][0]["shape"]["opt_values"] == [4, 6]


def test_gate_feeds_each_profile_values(tmp_path: Path) -> None:
    """min and max values share one shape: the gate runs both, with the values, not random ints."""
    reshape_model(tmp_path / "m.onnx")
    spec = load_spec(
        _spec(tmp_path, tmp_path / "m.onnx", "  - shape: {values: {min: [-1, 4], opt: [-1, 6], max: [-1, 12]}}\n")
    )
    feeds = [batch.feed["shape"].tolist() for batch in random_batches(inspect_model(spec.model_path), spec.profiles, 0)]
    assert feeds == [[-1, 4], [-1, 6], [-1, 12]]


@pytest.mark.parametrize(
    ("make", "profiles", "expected"),
    [
        (
            slice_model,
            "",
            "profile 0: input 'starts' is a shape tensor: give its values, e.g. `starts: {value: [0, 0]}`",
        ),
        (reshape_model, "  - x: {min: [2, 3, 4], opt: [2, 3, 4], max: [2, 3, 4]}\n", "input 'shape' is a shape tensor"),
        (topk_model, "  - k: {min: [1], opt: [1], max: [1]}\n", "`k: {value: [0]}`"),
    ],
    ids=["slice-no-profiles", "reshape-not-covered", "topk-given-shapes"],
)
def test_missing_values_are_exit_2_naming_input_and_key(tmp_path: Path, make, profiles: str, expected: str) -> None:
    make(tmp_path / "m.onnx")
    spec = _spec(tmp_path, tmp_path / "m.onnx", profiles)
    code, _stdout, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 2
    assert expected in stderr
    assert str(spec) in stderr and "no optimization profile" not in stderr
    assert len(stderr.strip().splitlines()) == 1 + stderr.count(": backend ")


def test_values_for_an_input_tensorrt_reads_as_data_are_exit_2(tmp_path: Path) -> None:
    """An int64 input that feeds an Add is data: values there would be TensorRT's ValueError."""
    _model(
        tmp_path / "m.onnx",
        [helper.make_node("Add", ["a", "b"], ["y"])],
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("b", TensorProto.INT64, [2]),
        ],
        [TensorProto.INT64, [2]],
    )
    code, _stdout, stderr = cli(
        "build", _spec(tmp_path, tmp_path / "m.onnx", "  - a: {value: [1, 2]}\n"), "--out", tmp_path
    )
    assert code == 2
    assert "input 'a' is not a shape tensor" in stderr and "min: [...]" in stderr


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "{values: {min: [0, 0], opt: [1], max: [2, 2]}}",
            ":5: key 'profiles.0.starts.values': min, opt and max must have",
        ),
        ("{values: {min: [0, 3], opt: [1, 2], max: [2, 2]}}", "need min <= opt <= max at position 1, got 3, 2, 2"),
        ("{value: [0, 0], min: [3], opt: [3], max: [3]}", "shape follows from its values ([2]); drop 'min: [3]'"),
        ("{value: [0, 0], values: {min: [0, 0], opt: [0, 0], max: [1, 1]}}", "give 'value' (one value) or 'values'"),
    ],
)
def test_bad_values_name_file_line_and_key(tmp_path: Path, entry: str, expected: str) -> None:
    slice_model(tmp_path / "m.onnx")
    with pytest.raises(SpecError) as caught:
        load_spec(_spec(tmp_path, tmp_path / "m.onnx", f"  - starts: {entry}\n"))
    assert expected in str(caught.value)
    assert str(tmp_path / "shapes.yaml") in str(caught.value)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("x: {value: [1, 2]}", "gives values for input 'x', which is float32"),
        ("starts: {value: 1}", "input 'starts' has shape [2]: its values are a list of 2 integers, got 1"),
        ("starts: {value: [1, 2, 3]}", "its values are a list of 2 integers, got [1, 2, 3]"),
    ],
)
def test_values_are_checked_against_the_graph_before_the_build(tmp_path: Path, entry: str, expected: str) -> None:
    slice_model(tmp_path / "m.onnx")
    spec = load_spec(_spec(tmp_path, tmp_path / "m.onnx", f"  - {entry}\n"))
    with pytest.raises(SpecError) as caught:
        check_profiles(spec, inspect_model(spec.model_path))
    assert expected in str(caught.value) and ":5:" in str(caught.value)


def test_schema_accepts_values_and_value() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parent.parent / "trtforge" / "spec.schema.json").read_text())
    base = {"name": "a", "model": "m.onnx"}
    for entry in ({"value": [1, 2]}, {"value": 3}, {"values": {"min": [0], "opt": [1], "max": [2]}}):
        jsonschema.validate({**base, "profiles": [{"starts": entry}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**base, "profiles": [{"x": {"min": [1]}}]}, schema)


def test_triton_config_has_no_zero_filled_warmup_for_shape_tensors(tmp_path: Path) -> None:
    """Zeros for a Reshape's shape would fail Triton's warm-up and keep the model not-ready."""
    from trtforge.manifest import read_manifest
    from trtforge.publish.triton_config import build_config

    reshape_model(tmp_path / "m.onnx")
    code, stderr, result = _build(
        _spec(tmp_path, tmp_path / "m.onnx", "  - shape: {value: [4, 6]}\n"), tmp_path / "out"
    )
    assert code == 0, stderr
    config = build_config("shapes", [(read_manifest(Path(result["manifest"])), "model.plan")])
    assert [entry.name for entry in config.input] == ["x", "shape"]
    assert len(config.model_warmup) == 0


def test_a_profile_may_include_empty_tensors(tmp_path: Path) -> None:
    """A 0 dim is an empty tensor, which TensorRT builds (Reshape with allowzero in the node tests);
    the profile check refused it ("must be >= 1")."""
    _model(
        tmp_path / "m.onnx",
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [TensorProto.FLOAT, ["n", 3]],
    )
    code, stderr, result = _build(
        _spec(tmp_path, tmp_path / "m.onnx", "  - x: {min: [0, 3], opt: [2, 3], max: [4, 3]}\n"), tmp_path / "out"
    )
    assert code == 0, stderr
    assert json.loads(Path(result["manifest"]).read_text())["profiles"][0]["x"]["min"] == [0, 3]


@pytest.fixture(scope="module")
def reshape_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x [2, 3, 4] reshaped to ``shape``: values min [-1, 4], opt [-1, 6], max [-1, 12] (one shape, [2])."""
    folder = tmp_path_factory.mktemp("reshape")
    reshape_model(folder / "m.onnx")
    profile = "  - shape: {values: {min: [-1, 4], opt: [-1, 6], max: [-1, 12]}}\n"
    code, stderr, result = _build(_spec(folder, folder / "m.onnx", profile), folder / "out")
    assert code == 0, stderr
    return Path(result["engine"])


def test_an_engines_warm_up_and_probes_use_its_profile_values(reshape_engine: Path) -> None:
    """The pool warms each profile's min, opt and max values (three sets of one shape), probes with
    the smallest, and serve's own request sends the min values (before: random integers in the
    warm-up and zeros in serve's request, values no profile allows); ``--warmup-shape`` values
    are checked against the profiles before the port opens. The engine itself needs a GPU
    TensorRT-RTX runs on: the feeds are what the pool would give it."""
    from types import SimpleNamespace

    from trtforge.runtime.pool import EnginePool
    from trtforge.runtime.sources import WarmupSet
    from trtforge.serve.protocol import parse_infer_request, probe_request
    from trtforge.serve.server import check_warmup_shapes, engine_plan

    plan = engine_plan(reshape_engine, None)
    assert plan.shape_tensors is not None
    shapes = {"x": (2, 3, 4), "shape": (2,)}
    assert plan.shape_tensors.defaults() == [
        WarmupSet(shapes, {"shape": (-1, 4)}),
        WarmupSet(shapes, {"shape": (-1, 6)}),
        WarmupSet(shapes, {"shape": (-1, 12)}),
    ]
    pool = EnginePool(reshape_engine, start=False)
    source = SimpleNamespace(inputs=plan.shape_tensors.inputs, shape_tensors=plan.shape_tensors)
    feeds, probe = pool._warm_feeds(source)  # type: ignore[arg-type]
    assert [feed["shape"].tolist() for feed in feeds] == [[-1, 4], [-1, 6], [-1, 12]]
    assert probe["shape"].tolist() == [-1, 4] and probe["shape"].dtype == np.int64
    sent = parse_infer_request(*probe_request(plan.signature), plan.signature).inputs
    assert sent["shape"].tolist() == [-1, 4]
    # a set without values takes the profile's (opt first); values outside every profile are exit 2
    assert plan.shape_tensors.complete({"x": (2, 3, 4)}).values == {"shape": (-1, 6)}
    check_warmup_shapes(["shapes:shape=[-1,8]", "x=2x3x4"], [plan])
    with pytest.raises(InvalidInputError, match=r"no profile of the engine takes the values shape=\[-1, 24\] "):
        check_warmup_shapes(["shapes:shape=[-1,24]"], [plan])


def test_the_triton_config_says_it_has_no_warmup_for_shape_tensors(reshape_engine: Path) -> None:
    """The header claimed "model_warmup covers each profile's min/opt/max shapes ... Triton keeps
    the model not-ready until these requests have run" over a config with no model_warmup."""
    from trtforge.manifest import ArtifactPaths, read_manifest
    from trtforge.publish.triton_config import build_config, render_config

    manifest = read_manifest(ArtifactPaths.of(reshape_engine).manifest)
    text = render_config(build_config("shapes", [(manifest, "model.plan")]), ["m.engine"])
    assert "model_warmup" not in text.split("# trtforge-sha256")[1]  # the message has none
    assert "model_warmup covers" not in text and "not-ready until" not in text
    assert "# No model_warmup: shape are shape tensors" in text
    assert "Triton reports the model ready before any request" in text


def _batch_reshape(path: Path) -> Path:
    """x [N, 16] reshaped to the graph input ``s`` [2]: its values hold the batch."""
    return _model(
        path,
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]),
            helper.make_tensor_value_info("s", TensorProto.INT64, [2]),
        ],
        [TensorProto.FLOAT, ["a", "b"]],
    )


def test_a_max_whose_shape_tensor_holds_the_batch_is_not_capped(tmp_path: Path) -> None:
    """The max's 8 MiB of input was capped to batch 32768 while ``s`` kept 131072: the engine
    built, then the gate's feed was refused (exit 2). A point with values is run as the profile
    gives it."""
    _batch_reshape(tmp_path / "m.onnx")
    profile = (
        "  - x: {min: [1, 16], opt: [8, 16], max: [131072, 16]}\n"
        "    s: {values: {min: [1, 16], opt: [8, 16], max: [131072, 16]}}\n"
    )
    spec_path = _spec(tmp_path, tmp_path / "m.onnx", profile)
    spec_path.write_text(spec_path.read_text() + "precision: fp16\n")  # where the gate runs both sides
    spec = load_spec(spec_path)
    sets = shape_sets(inspect_model(spec.model_path), spec.profiles)
    assert [(s.shapes["x"], s.values["s"]) for s in sets] == [
        ((1, 16), [1, 16]),
        ((8, 16), [8, 16]),
        ((131072, 16), [131072, 16]),
    ]
    assert not any(s.note for s in sets)
    code, stderr, result = _build(spec.origin.path, tmp_path / "out")
    assert code == 0, stderr
    assert result["accuracy"]["passed"] is True and result["accuracy"]["samples"] == 1 + 8 + 131072


def test_a_point_with_values_over_the_input_budget_is_checked_at_the_next_point_down() -> None:
    """Halving its shapes would leave the values behind: the opt (within budget) is run instead,
    and the note says why; a min over the budget is refused as any is."""
    model = ModelInfo(
        Path("m.onnx"), (TensorDesc("x", "float32", ("N", 1024, 1024)), TensorDesc("s", "int64", (3,))), ()
    )

    def profile(low: int, opt: int, high: int) -> dict[str, ShapeRange]:
        return {
            "x": ShapeRange(min=[low, 1024, 1024], opt=[opt, 1024, 1024], max=[high, 1024, 1024]),
            "s": ShapeRange.model_validate(
                {"values": {"min": [low, 1024, 1024], "opt": [opt, 1024, 1024], "max": [high, 1024, 1024]}}
            ),
        }

    sets = shape_sets(model, [profile(1, 2, 128)])  # the max: 512 MiB of input
    assert [(s.shapes["x"][0], s.values["s"][0]) for s in sets] == [(1, 1), (2, 2)]
    assert sets[1].note is not None and "profile 0 max shapes" in sets[1].note
    assert "values (s) may hold their batch: checked at the profile's opt instead" in sets[1].note
    with pytest.raises(InvalidInputError, match="even at the profile's min"):
        shape_sets(model, [profile(100, 100, 128)])
