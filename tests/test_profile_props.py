"""Property-based tests (Hypothesis) of the rules trtforge applies to optimization profiles and input
shapes, with TensorRT-RTX itself as the oracle: the raw ``IOptimizationProfile.set_shape`` +
``add_optimization_profile`` + ``build_serialized_network`` of the installed ``tensorrt_rtx`` (a real
CPU build, no trtforge code on the way) on the same ONNX model and the same profile set.

1. trtforge's ``build`` takes a profile set iff TensorRT-RTX builds it, except where README documents
   a stricter rule (unknown input names, a dim over 2**31-1, a dynamic dim's opt or max at 0, a dim
   the model names alike given other ranges in another input): those trtforge refuses whatever
   TensorRT says. A refusal is exit 2, one line naming the spec file, no traceback, nothing in --out.
2. What a build's manifest records (``io``, ``profiles``) is what TensorRT-RTX's network and profile
   objects report (an engine does not deserialize without a GPU: the builder's objects are the oracle).
3. The accuracy gate's random shape sets stay inside each profile's box, keep a dim the model names
   alike one size, and cover each profile's min, opt and max (README: the max's batch capped).
4. ``bench --shape`` / ``serve --warmup-shape`` take a shape inside one profile's box and refuse
   one outside it, exit 2 naming the input.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from clitools import cli
from hypothesis import event, given, settings
from hypothesis import strategies as st
from models import OPSET, conv_net, need_rtx, save, two_input_model
from onnx import TensorProto, helper, numpy_helper

from trtforge.accuracy.inputs import shape_sets
from trtforge.bench import describe_artifact, request_shapes
from trtforge.errors import InvalidInputError
from trtforge.manifest import read_manifest
from trtforge.model import INPUT_BUDGET_BYTES, ModelInfo, TensorDesc, input_bytes
from trtforge.serve.server import check_warmup_shapes, engine_plan
from trtforge.shapes import KINDS, MAX_POINT_BYTES, Profile, accepts, parse_inputs
from trtforge.spec import MAX_DIM, ShapeRange

trt = need_rtx()

Dims = tuple[int | str, ...]
#: the models, as (input name, dims) pairs: a dim is static (int) or named (str)
MODELS: dict[str, tuple[tuple[str, Dims], ...]] = {
    "seq": (("x", ("B", "S", 8)), ("b", ("S", 4))),  # two dynamic dims, S named in both inputs, a static 8
    "conv": (("input", ("N", 3, 16, 16)),),
    "pair": (("a", ("batch", 4)), ("b", ("batch", 4))),
    "static": (("x", (2, 8)),),
}
HUGE = (2**31 - 1, 2**31, 2**32, 2**40, 2**63 - 1, 2**64)


def seq_model(path: Path) -> Path:
    """x [B, S, 8] @ W [8, 4] + b [S, 4] -> y [B, S, 4]: a batch and a sequence dim, S in both inputs."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Add", ["m", "b"], ["y"])],
        "seq",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 8]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["S", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", 4])],
        [numpy_helper.from_array(rng.normal(0, 0.5, (8, 4)).astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return save(model, path)


def static_model(path: Path) -> Path:
    """x [2, 8] @ W [8, 3] -> y [2, 3]: no dynamic dim, no profile needed."""
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "static",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(rng.normal(0, 0.5, (8, 3)).astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return save(model, path)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("profile-models")
    return {
        "seq": seq_model(folder / "seq.onnx"),
        "conv": conv_net(folder / "conv.onnx"),
        "pair": save(two_input_model(), folder / "pair.onnx"),
        "static": static_model(folder / "static.onnx"),
    }


# ---------------------------------------------------------------- the oracle: TensorRT-RTX's own API


class _Errors(trt.ILogger):  # type: ignore[misc,name-defined]
    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.lines: list[str] = []

    def log(self, severity: Any, msg: str) -> None:
        if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
            self.lines.append(msg)


Profiles = list[dict[str, dict[str, list[int]]]]


def tensorrt_builds(model: Path, profiles: Profiles) -> tuple[bool, str, dict[str, Any]]:
    """(built?, why not, what the network and profiles report) for the raw TensorRT-RTX API given
    these profiles as they are: every input of each profile ``set_shape``, each profile added, a
    build for sm86 (as the specs here ask)."""
    logger = _Errors()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(model)), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    added = []
    for profile_spec in profiles:
        profile = builder.create_optimization_profile()
        for name, shapes in profile_spec.items():
            try:
                profile.set_shape(name, *(shapes[kind] for kind in KINDS))
            except (RuntimeError, TypeError) as exc:  # TypeError: a dim no int64 holds
                return False, f"set_shape({name}): {exc}", {}
        if config.add_optimization_profile(profile) < 0:
            return False, f"add_optimization_profile: {logger.lines[-1:]}", {}
        added.append((profile, list(profile_spec)))
    config.num_compute_capabilities = 1
    config.set_compute_capability(trt.ComputeCapability.SM86, 0)
    if builder.build_serialized_network(network, config) is None:
        return False, f"build_serialized_network: {logger.lines[-1:]}", {}
    tensors = [(network.get_input(i), "input") for i in range(network.num_inputs)]
    tensors += [(network.get_output(i), "output") for i in range(network.num_outputs)]
    facts = {
        "io": [
            {"name": t.name, "mode": mode, "dtype": np.dtype(trt.nptype(t.dtype)).name, "shape": list(t.shape)}
            for t, mode in tensors
        ],
        "profiles": [
            {name: dict(zip(KINDS, (list(dims) for dims in profile.get_shape(name)), strict=True)) for name in names}
            for profile, names in added
        ],
    }
    return True, "", facts


# ---------------------------------------------------------------- profile sets, valid and broken


@st.composite
def spans(draw: st.DrawFn) -> tuple[int, int, int]:
    """min <= opt <= max, small (a build for them takes a fraction of a second)."""
    low = draw(st.integers(0, 3) | st.just(1))  # min 0 (empty tensors) allowed, 1 the usual
    mid = low + draw(st.integers(0, 3))
    return low, max(mid, 1), max(mid, 1) + draw(st.integers(0, 4))


MUTATIONS = (
    "drop",
    "extra",
    "rank",
    "static",
    "zero",
    "negative",
    "min>opt",
    "opt>max",
    "huge",
    "named",
    "empty",
    "none",
)


@st.composite
def profile_sets(draw: st.DrawFn, inputs: tuple[tuple[str, Dims], ...]) -> Profiles:
    """One to three profiles valid by construction (a dim the model names alike: one span), then up
    to two of the breakages README names: an input left out or added, another rank, a static dim
    contradicted, 0, negative, min > opt, opt > max, huge values, named dims apart, {} or no profile."""
    profiles: Profiles = []
    for _ in range(draw(st.integers(1, 3))):
        named: dict[str, tuple[int, int, int]] = {}
        profile: dict[str, dict[str, list[int]]] = {}
        for name, dims in inputs:
            if all(isinstance(dim, int) for dim in dims) and draw(st.booleans()):
                continue  # a static input needs no profile entry: listing it is allowed too
            triples = [(dim, dim, dim) if isinstance(dim, int) else named.get(dim) or draw(spans()) for dim in dims]
            for dim, triple in zip(dims, triples, strict=True):
                if isinstance(dim, str):
                    named.setdefault(dim, triple)
            profile[name] = {kind: [t[i] for t in triples] for i, kind in enumerate(KINDS)}
        profiles.append(profile)
    broken = draw(st.integers(0, 3)) > 0  # three in four broken: TensorRT's and trtforge's refusals are the point
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=2)) if broken else ():
        _mutate(draw, profiles, mutation, inputs)
    return profiles


def _mutate(draw: st.DrawFn, profiles: Profiles, mutation: str, inputs: tuple[tuple[str, Dims], ...]) -> None:
    if mutation == "none":
        profiles.clear()
        return
    if mutation == "empty":
        profiles.insert(draw(st.integers(0, len(profiles))), {})
        return
    if not profiles:
        return
    profile = draw(st.sampled_from(profiles))
    if mutation == "extra":
        name = draw(st.sampled_from(["extra", "xx", inputs[0][0] + "_", "input0"]))
        profile[name] = {kind: [1, 4] for kind in KINDS}
        return
    if not profile:
        return
    name = draw(st.sampled_from(sorted(profile)))
    entry = profile[name]
    if mutation == "drop":
        del profile[name]
        return
    if mutation == "rank":
        kinds = draw(st.sampled_from([KINDS, ("min",), ("max",)]))
        for kind in kinds:
            entry[kind] = entry[kind] + [1] if draw(st.booleans()) or len(entry[kind]) < 2 else entry[kind][:-1]
        return
    axis = draw(st.integers(0, len(entry["min"]) - 1))
    dims = dict(inputs).get(name, ())
    kind = draw(st.sampled_from(KINDS))
    if mutation == "static":
        statics = [i for i, dim in enumerate(dims) if isinstance(dim, int)]
        if statics:
            axis = draw(st.sampled_from(statics))
            for k in KINDS:
                entry[k][axis] = dims[axis] + draw(st.sampled_from([-1, 1, 5]))
    elif mutation == "zero":
        entry[kind][axis] = 0
    elif mutation == "negative":
        entry[kind][axis] = draw(st.sampled_from([-1, -5]))
    elif mutation == "min>opt":
        entry["min"][axis] = entry["opt"][axis] + 1
    elif mutation == "opt>max":
        entry["opt"][axis] = entry["max"][axis] + 1
    elif mutation == "huge":
        big = draw(st.sampled_from(HUGE))
        for k in KINDS[KINDS.index(kind) :]:
            entry[k][axis] = big
    elif mutation == "named":  # another range for a dim the model names alike elsewhere
        entry[kind][axis] += draw(st.sampled_from([-1, 1]))


def documented_refusal(profiles: Profiles, inputs: tuple[tuple[str, Dims], ...]) -> str | None:
    """Why README says trtforge refuses these profiles where TensorRT-RTX may take them: names no
    model input (a typo TensorRT ignores), a dim over 2**31-1 (TensorRT-RTX 1.7 refuses 2**31 but
    builds 2**32: its own overflow), a dynamic dim's opt or max 0 (an engine for empty tensors
    only), a dim named alike given other ranges in two inputs (TensorRT takes some of those: a
    larger min in one; at run time both are one size). None: the oracle decides."""
    model = dict(inputs)
    for profile in profiles:
        named: dict[str, list[int]] = {}
        for name, entry in profile.items():
            if name not in model:
                return f"profile names input '{name}', which the model does not have"
            if any(dim > MAX_DIM for kind in KINDS for dim in entry[kind]):
                return "a dim over 2**31-1"
            if not all(len(entry[kind]) == len(model[name]) for kind in KINDS):
                continue  # another rank: TensorRT refuses it too
            for axis, dim in enumerate(model[name]):
                if isinstance(dim, str):
                    if 0 in (entry["opt"][axis], entry["max"][axis]):
                        return "a dynamic dim's opt or max is 0"
                    span = [entry[kind][axis] for kind in KINDS]
                    if named.setdefault(dim, span) != span:
                        return f"dim '{dim}' given two ranges"
    return None


def write_spec(folder: Path, model: Path, profiles: Profiles) -> Path:
    document: dict[str, Any] = {
        "name": "prof",
        "model": str(model),
        "backend": "tensorrt-rtx",
        "targets": ["8.6"],
        "accuracy": {"enabled": False},
    }
    if profiles or model.stem != "static":
        document["profiles"] = profiles
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return spec


def refusal_line(code: int, stdout: str, stderr: str, spec: Path, out: Path, why: str) -> str:
    """The one line of a refusal: exit 2, naming the spec file, no traceback, nothing left in --out
    (``why``: what refused it, README or TensorRT-RTX, for the failure message)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (why, code, stdout, stderr)
    assert "Traceback" not in stderr + stdout and "Error Code" not in stderr, stderr
    assert lines and str(spec) in lines[-1], stderr
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    return lines[-1]


@settings(max_examples=50)
@given(st.sampled_from(sorted(MODELS)).flatmap(lambda key: st.tuples(st.just(key), profile_sets(MODELS[key]))))
def test_trtforge_builds_a_profile_set_iff_tensorrt_rtx_does(
    tmp_path: Path, onnx_files: dict[str, Path], drawn: tuple[str, Profiles]
) -> None:
    key, profiles = drawn
    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example: tmp_path is shared by them
    out = folder / "out"
    spec = write_spec(folder, onnx_files[key], profiles)
    code, stdout, stderr = cli("build", spec, "--out", out, "--backend", "tensorrt-rtx")
    documented = documented_refusal(profiles, MODELS[key])
    built, why, facts = tensorrt_builds(onnx_files[key], profiles) if documented is None else (False, "", {})
    event("documented refusal" if documented else "TensorRT-RTX refuses" if not built else "both build")
    if documented is not None or not built:
        line = refusal_line(code, stdout, stderr, spec, out, documented or why)
        named = {name for profile in profiles for name in profile} | {name for name, _ in MODELS[key]}
        assert "profiles" in line or any(f"'{name}'" in line for name in named), line
        return
    assert code == 0, f"TensorRT-RTX builds {profiles}, trtforge refused: {stderr}"
    [manifest_file] = out.glob("*.manifest.json")
    manifest = read_manifest(manifest_file)
    # 2. the manifest records what TensorRT-RTX's network and profiles report
    assert [t.model_dump() for t in manifest.io] == facts["io"]
    assert manifest.profiles == facts["profiles"]


# ---------------------------------------------------------------- 3. the gate's random shape sets

NAMES = ("N", "S", "H")


@st.composite
def gate_cases(draw: st.DrawFn) -> tuple[ModelInfo, list[dict[str, ShapeRange]]]:
    """A model of 1-3 float inputs of rank 1-4 (static dims, dims named N/S/H shared between inputs)
    and 1-3 profiles valid for it, maxima up to tens of MiB (the gate caps a max over 4 MiB)."""
    inputs = []
    for index in range(draw(st.integers(1, 3))):
        dims = tuple(draw(st.sampled_from(NAMES) | st.integers(1, 6)) for _ in range(draw(st.integers(1, 4))))
        inputs.append(TensorDesc(f"in{index}", "float32", dims))
    profiles = []
    for _ in range(draw(st.integers(1, 3))):
        named = {
            name: draw(
                st.tuples(st.integers(1, 4), st.integers(0, 8), st.integers(0, 2048)).map(
                    lambda t: (t[0], t[0] + t[1], t[0] + t[1] + t[2])
                )
            )
            for name in NAMES
        }
        profile = {}
        for tensor in inputs:
            if not tensor.is_dynamic:
                continue
            triples = [named[d] if isinstance(d, str) else (d, d, d) for d in tensor.shape]
            profile[tensor.name] = ShapeRange(**{kind: [t[i] for t in triples] for i, kind in enumerate(KINDS)})
        profiles.append(profile)
    return ModelInfo(Path("m.onnx"), tuple(inputs), ()), profiles


def _points(model: ModelInfo, profile: Mapping[str, ShapeRange], kind: str) -> dict[str, tuple[int, ...]]:
    static = {t.name: tuple(t.shape) for t in model.inputs if not t.is_dynamic}
    return {**static, **{name: tuple(getattr(r, kind)) for name, r in profile.items()}}


@settings(max_examples=200)
@given(gate_cases())
def test_the_gates_random_shapes_stay_in_the_profiles_and_cover_min_opt_max(
    case: tuple[ModelInfo, list[dict[str, ShapeRange]]],
) -> None:
    model, profiles = case
    try:
        sets = shape_sets(model, profiles)
    except InvalidInputError as exc:  # even a min over 256 MiB: README's documented refusal
        assert "even at the profile's min" in str(exc)
        assert any(input_bytes(model.inputs, _points(model, p, "min")) > INPUT_BUDGET_BYTES for p in profiles)
        return
    for shape_set in sets:
        index = int(shape_set.label.split()[1])  # "profile 1 max (batch capped ...)"
        profile = profiles[index]
        low = {name: r.min for name, r in profile.items()}
        high = {name: r.max for name, r in profile.items()}
        assert accepts(low, high, shape_set.shapes), (shape_set, profile)
        assert set(shape_set.shapes) == {t.name for t in model.inputs}
        sizes: dict[str, set[int]] = {}  # a dim the model names alike is one size at run time
        for tensor in model.inputs:
            for dim, size in zip(tensor.shape, shape_set.shapes[tensor.name], strict=True):
                if isinstance(dim, str):
                    sizes.setdefault(dim, set()).add(size)
        assert all(len(seen) == 1 for seen in sizes.values()), (shape_set, sizes)
    shapes = [s.shapes for s in sets]
    for profile in profiles:
        for kind in ("min", "opt"):
            point = _points(model, profile, kind)
            if input_bytes(model.inputs, point) <= INPUT_BUDGET_BYTES:
                assert point in shapes, (kind, point, shapes)
        top = _points(model, profile, "max")
        if input_bytes(model.inputs, top) <= MAX_POINT_BYTES:
            assert top in shapes, (top, shapes)
        elif input_bytes(model.inputs, top) <= INPUT_BUDGET_BYTES:
            # README: the max with its batch capped, every other dim at the max (long sequences stay long)
            assert any(
                accepts({n: r.min for n, r in profile.items()}, {n: r.max for n, r in profile.items()}, s)
                and all(s[name][1:] == top[name][1:] for name in top)
                for s in shapes
            ), (top, shapes)


# ---------------------------------------------------------------- 4. bench --shape, serve --warmup-shape


@pytest.fixture(scope="module")
def engines(onnx_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """conv and seq built with two profiles each (real builds, once)."""
    folder = tmp_path_factory.mktemp("profile-engines")
    profiles: dict[str, Profiles] = {
        "conv": [
            {"input": {"min": [1, 3, 16, 16], "opt": [2, 3, 16, 16], "max": [4, 3, 16, 16]}},
            {"input": {"min": [8, 3, 16, 16], "opt": [8, 3, 16, 16], "max": [16, 3, 16, 16]}},
        ],
        "seq": [
            {
                "x": {"min": [1, 1, 8], "opt": [2, 4, 8], "max": [4, 8, 8]},
                "b": {"min": [1, 4], "opt": [4, 4], "max": [8, 4]},
            },
            {
                "x": {"min": [2, 16, 8], "opt": [2, 16, 8], "max": [3, 32, 8]},
                "b": {"min": [16, 4], "opt": [16, 4], "max": [32, 4]},
            },
        ],
    }
    built = {}
    for key, sets in profiles.items():
        (folder / key).mkdir()
        spec = write_spec(folder / key, onnx_files[key], sets)
        code, _, stderr = cli("build", spec, "--out", folder / key / "out", "--backend", "tensorrt-rtx")
        assert code == 0, stderr
        [built[key]] = (folder / key / "out").glob("*.engine")
    return built


@st.composite
def requested(draw: st.DrawFn, key: str) -> dict[str, tuple[int, ...]]:
    """A shape for every input of the model, a dim named alike one size, in and out of the profiles."""
    sizes = st.integers(1, 40) | st.sampled_from([0, 2**31, 2**63, 10**30])  # empty and huge too
    named = {name: draw(sizes) for name in ("N", "B", "S")}
    shapes = {}
    for name, dims in MODELS[key]:
        shape = [named[d] if isinstance(d, str) else d for d in dims]
        if draw(st.integers(0, 7)) == 0:  # a static dim contradicted
            axis = draw(st.sampled_from([i for i, d in enumerate(dims) if isinstance(d, int)]))
            shape[axis] += 1
        shapes[name] = tuple(shape)
    return shapes


def _inside(profiles: Sequence[Profile], shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """TensorRT's rule for one request: one profile's [min, max] box holds every input's shape."""
    return any(
        accepts({n: r["min"] for n, r in p.items()}, {n: r["max"] for n, r in p.items()}, shapes) for p in profiles
    )


@settings(max_examples=40)
@given(
    st.sampled_from(["conv", "seq"]).flatmap(
        lambda key: st.tuples(st.just(key), requested(key), st.sampled_from([None, *dict(MODELS[key])]))
    )
)
def test_bench_and_serve_take_a_shape_iff_one_profile_holds_it(
    engines: dict[str, Path], drawn: tuple[str, dict[str, tuple[int, ...]], str | None]
) -> None:
    key, shapes, left_out = drawn
    engine = engines[key]
    inputs, profiles = describe_artifact(engine)  # what bench reads: the manifest, no runtime
    given_shapes = {name: shape for name, shape in shapes.items() if name != left_out}
    if not given_shapes:
        return
    texts = [f"{name}={'x'.join(map(str, shape))}" for name, shape in given_shapes.items()]
    overrides, values = parse_inputs(texts)
    assert overrides == given_shapes and not values
    # an input left out: bench takes the first profile's opt, serve's warm-up dims 1 (README)
    bench_shapes = {n: tuple(profiles[0][n]["opt"]) for n in shapes} | given_shapes
    serve_shapes = {n: tuple(d if isinstance(d, int) else 1 for d in dims) for n, dims in MODELS[key]} | given_shapes
    try:
        request_shapes(inputs, profiles, overrides=overrides)
        bench_takes = True
    except InvalidInputError:
        bench_takes = False
    try:
        check_warmup_shapes([",".join(texts)], [engine_plan(engine, None)])
        serve_takes = True
    except InvalidInputError:
        serve_takes = False
    assert bench_takes == _inside(profiles, bench_shapes), (bench_shapes, profiles)
    assert serve_takes == _inside(profiles, serve_shapes), (serve_shapes, profiles)
    event(f"bench {'takes' if bench_takes else 'refuses'}, serve {'takes' if serve_takes else 'refuses'}")
    # the CLI: exit 2, one line naming an input, before anything loads or listens
    refused = [("bench", *(a for t in texts for a in ("--shape", t)), "--requests", "1")] if not bench_takes else []
    refused += [("serve", "--warmup-shape", ",".join(texts), "--port", "0")] if not serve_takes else []
    for command, *flags in refused:
        code, stdout, stderr = cli(command, engine, *flags)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2, (command, code, stderr)
        assert "Traceback" not in stderr + stdout
        assert any(f"{name}" in lines[-1] for name in shapes), lines[-1]
