"""Profile shapes, the profile-accepts rule and random feeds: one module (trtforge.shapes) that the
accuracy gate, the pool, bench, the TensorRT runner and the Triton config all read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trtforge.accuracy.inputs import accepted, random_batches, shape_sets
from trtforge.errors import InvalidInputError
from trtforge.model import INT_HIGH, ModelInfo, TensorDesc
from trtforge.runners.tensorrt import ProfileRange
from trtforge.runtime.sources import ShapeTensors
from trtforge.shapes import (
    accepts,
    distinct_shapes,
    profile_points,
    random_array,
    random_feed,
    spec_profiles,
)
from trtforge.spec import ShapeRange

LOW = {"x": (1, 3), "ids": (1,)}
HIGH = {"x": (8, 3), "ids": (8,)}


def test_profile_shapes_cover_min_opt_max_of_every_profile() -> None:
    profiles = [
        {"input": {"min": [1, 3, 16, 16], "opt": [4, 3, 16, 16], "max": [8, 3, 16, 16]}},
        {"input": {"min": [8, 3, 16, 16], "opt": [16, 3, 16, 16], "max": [16, 3, 16, 16]}},
    ]
    inputs = (TensorDesc("input", "float32", ("N", 3, 16, 16)), TensorDesc("meta", "float32", (1, 4)))
    shapes = [entry.shapes for entry in ShapeTensors(inputs, tuple(profiles)).defaults()]  # what a pool warms
    assert [s["input"][0] for s in shapes] == [1, 4, 8, 16]  # duplicates dropped, order kept
    assert all(s["meta"] == (1, 4) for s in shapes)


def test_random_feed_matches_dtypes_and_is_seeded() -> None:
    inputs = (TensorDesc("x", "float16", (None, 3)), TensorDesc("ids", "int64", (None,)), TensorDesc("m", "bool", (2,)))
    shapes = {"x": (2, 3), "ids": (5,), "m": (2,)}
    feed = random_feed(inputs, shapes, seed=3)
    assert [(a.dtype.name, a.shape) for a in feed.values()] == [("float16", (2, 3)), ("int64", (5,)), ("bool", (2,))]
    assert all(
        np.array_equal(a, b) for a, b in zip(feed.values(), random_feed(inputs, shapes, seed=3).values(), strict=True)
    )


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        ({"x": (1, 3), "ids": (8,)}, True),  # both bounds are inclusive
        ({"x": (9, 3), "ids": (4,)}, False),  # over max
        ({"x": (4, 3, 1), "ids": (4,)}, False),  # another rank
        ({"x": (4, 3)}, False),  # an input the profile lists is missing
        ({"x": (4, 3), "ids": (4,), "static": (2, 2)}, True),  # an input it does not list is not its concern
    ],
)
def test_one_accepts_rule_for_runner_gate_and_manifest(shapes: dict[str, tuple[int, ...]], expected: bool) -> None:
    assert accepts(LOW, HIGH, shapes) is expected
    assert ProfileRange(LOW, HIGH).accepts(shapes) is expected  # the TensorRT runner's profile switch
    profile = {name: ShapeRange(min=list(LOW[name]), opt=list(LOW[name]), max=list(HIGH[name])) for name in LOW}
    feed = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    assert accepted([profile], feed) is expected  # the gate dropping samples no profile takes


def test_gate_and_pool_warm_the_same_shape_sets() -> None:
    """The gate's random shape sets (no budget reduction here) are the pool's warm-up shapes."""
    model = ModelInfo(Path("m.onnx"), (TensorDesc("x", "float32", ("N", 3)), TensorDesc("meta", "float32", (1, 4))), ())
    profiles = [
        {"x": ShapeRange(min=[1, 3], opt=[2, 3], max=[4, 3])},
        {"x": ShapeRange(min=[4, 3], opt=[8, 3], max=[8, 3])},
    ]
    gate = [shape_set.shapes for shape_set in shape_sets(model, profiles)]
    pool = [entry.shapes for entry in ShapeTensors(model.inputs, tuple(spec_profiles(profiles))).defaults()]
    assert gate == pool == [{"meta": (1, 4), "x": (n, 3)} for n in (1, 2, 4, 8)]
    labels = [shape_set.label for shape_set in shape_sets(model, profiles)]
    assert labels == ["profile 0 min", "profile 0 opt", "profile 0 max", "profile 1 opt"]


def test_shape_tensor_values_travel_with_their_point() -> None:
    profile = {
        "x": ShapeRange(min=[1, 4], opt=[2, 4], max=[4, 4]),
        "shape": ShapeRange.model_validate({"values": {"min": [1, 4], "opt": [2, 4], "max": [4, 4]}}),
    }
    points = list(profile_points(spec_profiles([profile])))
    assert [(p.kind, p.shapes["shape"], p.values) for p in points] == [
        ("min", (2,), {"shape": [1, 4]}),
        ("opt", (2,), {"shape": [2, 4]}),
        ("max", (2,), {"shape": [4, 4]}),
    ]
    assert len(distinct_shapes(points)) == 3  # x differs at each point
    inputs = (TensorDesc("x", "float32", ("N", 4)), TensorDesc("shape", "int64", (2,)))
    feed = random_feed(inputs, points[2].shapes, seed=0, values=points[2].values)
    assert feed["shape"].tolist() == [4, 4] and feed["shape"].dtype == np.int64


def test_random_feed_keeps_integer_inputs_in_their_valid_range() -> None:
    """Gather indices into an axis of 3: the pool's warm-up feed must be valid, as the gate's is."""
    index = TensorDesc("idx", "int64", (64,), valid_range=(0, 3))
    plain = TensorDesc("n", "int32", (64,))
    feed = random_feed((index, plain), {"idx": (64,), "n": (64,)}, seed=1)
    assert set(feed["idx"].tolist()) == {0, 1, 2}
    assert feed["n"].min() >= 0 and feed["n"].max() < INT_HIGH


def test_a_generator_continues_its_stream_as_the_gate_draws_it() -> None:
    model = ModelInfo(Path("m.onnx"), (TensorDesc("x", "float32", ("N", 2)),), ())
    profiles = [{"x": ShapeRange(min=[1, 2], opt=[2, 2], max=[3, 2])}]
    rng = np.random.default_rng(7)
    expected = [random_array(model.inputs[0], (n, 2), rng) for n in (1, 2, 3)]
    got = [batch.feed["x"] for batch in random_batches(model, profiles, 7)]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_a_dtype_without_random_data_is_refused_with_the_gate_advice() -> None:
    model = ModelInfo(Path("m.onnx"), (TensorDesc("c", "complex64", (2,)),), ())
    with pytest.raises(InvalidInputError, match=r"input 'c' has dtype complex64, for which no random data can be made"):
        random_feed(model.inputs, {"c": (2,)})
    with pytest.raises(InvalidInputError, match=r"give accuracy\.data in the spec"):
        list(random_batches(model, [], 0))


def test_a_capped_max_keeps_a_dim_named_alike_one_size() -> None:
    """b [S, 4] beside x [B, S, 8]: b's dim 0 is the sequence, no batch. The gate capped it with
    x's batch (x S=64 beside b S=16: a feed no engine or onnxruntime takes); only B shrinks now."""
    model = ModelInfo(
        Path("m.onnx"), (TensorDesc("x", "float32", ("B", "S", 8)), TensorDesc("b", "float32", ("S", 4))), ()
    )
    profile = {
        "x": ShapeRange(min=[1, 1, 8], opt=[2, 64, 8], max=[4096, 64, 8]),
        "b": ShapeRange(min=[1, 4], opt=[64, 4], max=[64, 4]),
    }
    top = shape_sets(model, [profile])[-1]
    assert top.label.startswith("profile 0 max (batch capped")
    assert top.shapes == {"x": (1024, 64, 8), "b": (64, 4)}
