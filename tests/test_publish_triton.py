"""triton://: a Triton model repository with config.pbtxt generated from the manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from clitools import cli
from models import conv_net, need_rtx
from registry import build_engine

from trtforge.digests import sha256_file
from trtforge.errors import InvalidInputError
from trtforge.manifest import Manifest, TensorInfo, read_manifest
from trtforge.publish import TritonLocation
from trtforge.publish.triton import TritonRegistry, Version, versions
from trtforge.publish.triton_config import build_config, edited_by_hand, parse_config, warmup_samples
from trtforge.selection import preference

need_rtx()

TWO_PROFILES = (
    "  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}\n"
    "  - input: {min: [4, 3, 16, 16], opt: [8, 3, 16, 16], max: [16, 3, 16, 16]}"
)
TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64"}


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("triton-engines")
    conv = conv_net(root / "conv.onnx")
    return {
        "8.6": build_engine(root / "a", targets=["8.6"]),
        "8.9": build_engine(root / "b", targets=["8.9"]),
        "multi": build_engine(root / "c", targets=["8.6", "8.9", "12.0"]),
        "conv": build_engine(root / "d", targets=["8.6"], model=conv, profiles=TWO_PROFILES),
    }


def config_of(repository: Path, name: str = "digits-cnn") -> tuple[str, object]:
    text = (repository / name / "config.pbtxt").read_text()
    return text, parse_config(text)


def test_config_matches_the_manifest_field_by_field(engines: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "models"
    code, out, err = cli("publish", str(engines["8.6"]), "--to", f"triton://{repository}", "--json")
    assert code == 0, err
    document = json.loads(out)
    manifest = read_manifest(engines["8.6"])
    plan = repository / "digits-cnn" / "1" / f"model.{manifest.tag}.plan"
    assert document["reference"] == str(plan) and document["version"] == 1
    assert document["config"] == str(repository / "digits-cnn" / "config.pbtxt")
    code, out, err = cli("publish", str(engines["8.6"]), "--to", f"triton://{repository}", "--json")
    again = json.loads(out)  # the same fields on a rerun: a CI step reads them whatever the status
    assert code == 0 and again["status"] == "unchanged", err
    assert (again["reference"], again["version"], again["config"]) == (str(plan), 1, document["config"])
    # Triton takes every folder in the root for a model and reads every file of a version folder:
    # the artifact lock lives in the model's folder, whose non-numeric subfolders Triton ignores
    assert [path.name for path in repository.iterdir() if path.is_dir()] == ["digits-cnn"]
    assert sorted(path.name for path in plan.parent.iterdir()) == sorted(
        [plan.name, f"model.{manifest.tag}.manifest.json"]
    )
    assert plan.read_bytes() == engines["8.6"].read_bytes()
    assert read_manifest(plan.with_name(f"model.{manifest.tag}.manifest.json")) == manifest
    text, config = config_of(repository)
    assert not edited_by_hand(text)
    assert config.name == manifest.name == "digits-cnn"
    assert config.platform == "tensorrt_plan"
    assert config.HasField("max_batch_size") and config.max_batch_size == 0
    inputs = [t for t in manifest.io if t.mode == "input"]
    outputs = [t for t in manifest.io if t.mode == "output"]
    assert [(i.name, list(i.dims)) for i in config.input] == [(t.name, t.shape) for t in inputs]
    assert [(o.name, list(o.dims)) for o in config.output] == [(t.name, t.shape) for t in outputs]
    data_type = config.DESCRIPTOR.file.enum_types_by_name["DataType"]
    for configured, tensor in zip([*config.input, *config.output], [*inputs, *outputs], strict=True):
        assert data_type.values_by_number[configured.data_type].name == TYPES[tensor.dtype]
    assert list(config.input[0].dims) == [-1, 1, 8, 8]  # dynamic batch stays in the dims
    (group,) = config.instance_group
    assert list(group.profile) == [str(i) for i in range(len(manifest.profiles))] == ["0"]
    assert dict(config.cc_model_filenames) == {"8.6": plan.name}
    assert not config.default_model_filename
    shapes = manifest.profiles[0]["input"]
    assert [
        (w.name, w.batch_size, list(w.inputs["input"].dims), w.inputs["input"].zero_data) for w in config.model_warmup
    ] == [
        ("profile0_min", 1, shapes["min"], True),
        ("profile0_opt", 1, shapes["opt"], True),
        ("profile0_max", 1, shapes["max"], True),
    ]
    assert all(data_type.values_by_number[w.inputs["input"].data_type].name == "TYPE_FP32" for w in config.model_warmup)
    assert "will not load this TensorRT-RTX engine" in err
    assert document["warnings"] and "TensorRT-RTX" in document["warnings"][0]
    assert "WARNING: Triton's tensorrt_plan backend" in text


def _tritons_model_config() -> object:
    """Triton's own generated ``model_config_pb2``, or a skip without tritonclient."""
    reference = _tritons_model_config_if_installed()
    if reference is None:
        pytest.skip("tritonclient is not installed (pip install tritonclient): no reference schema to compare with")
    return reference


def _tritons_model_config_if_installed() -> object | None:
    """Triton's own generated ``model_config_pb2``, loaded by path: ``tritonclient.grpc``'s package
    import needs grpcio, the generated module itself only protobuf."""
    import importlib.util

    found = importlib.util.find_spec("tritonclient")
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_parses_with_tritons_own_schema(engines: dict[str, Path], tmp_path: Path) -> None:
    from google.protobuf import text_format

    from trtforge.publish.triton_config import model_config_class

    reference = _tritons_model_config()
    repository = tmp_path / "models"
    assert cli("publish", str(engines["conv"]), "--to", f"triton://{repository}")[0] == 0
    text, ours = config_of(repository)
    theirs = text_format.Parse(text, reference.ModelConfig())  # type: ignore[attr-defined]
    assert theirs.platform == "tensorrt_plan" and theirs.max_batch_size == 0
    assert list(theirs.instance_group[0].profile) == ["0", "1"] and len(theirs.model_warmup) == 5
    mirrored = model_config_class()()
    mirrored.ParseFromString(theirs.SerializeToString())  # every field survives Triton's schema
    ours.ClearField("max_batch_size")  # proto3 does not carry an explicit zero: compare the rest
    assert mirrored == ours

    def same_fields(mine: object, real: object, where: str = "ModelConfig") -> None:
        for field in mine.fields:  # type: ignore[attr-defined]
            other = real.fields_by_name.get(field.name)  # type: ignore[attr-defined]
            assert other is not None, f"{where}.{field.name} is not in Triton's schema"
            assert (field.number, field.type) == (other.number, other.type), f"{where}.{field.name}"
            if field.message_type is not None:
                same_fields(field.message_type, other.message_type, f"{where}.{field.name}")
            if field.enum_type is not None:
                for value in field.enum_type.values:
                    assert other.enum_type.values_by_name[value.name].number == value.number

    same_fields(model_config_class().DESCRIPTOR, reference.ModelConfig.DESCRIPTOR)  # type: ignore[attr-defined]


def test_engines_for_other_gpus_share_a_version_chosen_by_cc(engines: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "models"
    for key in ("8.6", "8.9", "multi"):
        code, out, err = cli("publish", str(engines[key]), "--to", f"triton://{repository}", "--json")
        assert code == 0, err
        assert json.loads(out)["version"] == 1
    model = repository / "digits-cnn"
    assert [v.number for v in versions(model)] == [1]
    plans = {
        p.name: read_manifest(p.with_name(p.name.removesuffix(".plan") + ".manifest.json"))
        for p in (model / "1").glob("*.plan")
    }
    assert len(plans) == 3
    _, config = config_of(repository)
    by_cc = dict(config.cc_model_filenames)
    assert set(by_cc) == {"8.6", "8.9", "12.0"}
    for cc, filename in by_cc.items():
        able = [(preference(m), name) for name, m in plans.items() if cc in m.gpu.compute_capabilities]
        assert filename == min(able)[1], f"{cc}: the plan the loader would prefer"
    assert by_cc["12.0"] == f"model.{read_manifest(engines['multi']).tag}.plan"


def test_another_build_starts_the_next_version(engines: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "models"
    assert cli("publish", str(engines["8.6"]), "--to", f"triton://{repository}")[0] == 0
    other = build_engine(
        tmp_path / "v2",
        model=conv_net(tmp_path / "v2.onnx", seed=2),
        targets=["8.9"],
        profiles="  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}",
    )
    code, out, err = cli("publish", str(other), "--to", f"triton://{repository}", "--json")
    assert code == 0, err
    assert json.loads(out)["version"] == 2
    assert [v.number for v in versions(repository / "digits-cnn")] == [1, 2]
    _, config = config_of(repository)
    assert dict(config.cc_model_filenames) == {"8.9": f"model.{read_manifest(other).tag}.plan"}
    assert list(config.input[0].dims) == [-1, 3, 16, 16]
    # pull serves what Triton serves: the newest version
    out_dir = tmp_path / "pulled"
    code, stdout, err = cli(
        "pull", f"triton://{repository}", "--name", "digits-cnn", "--cc", "8.9", "--out", str(out_dir), "--json"
    )
    assert code == 0, err
    assert sha256_file(Path(json.loads(stdout)["engine"])) == read_manifest(other).artifact.sha256
    code, _, err = cli("pull", f"triton://{repository}", "--name", "digits-cnn", "--cc", "8.6")
    assert code == 5 and "8.6" in err


def test_builds_of_other_external_weights_do_not_share_a_version(engines: dict[str, Path]) -> None:
    """Same .onnx, other weights in its external data file: another model, so another version."""
    from trtforge.publish.triton import same_build

    manifest = read_manifest(engines["8.6"])
    weights = manifest.replace(source=manifest.source.model_copy(update={"model_sha256": "a" * 64}))
    others = manifest.replace(source=manifest.source.model_copy(update={"model_sha256": "b" * 64}))
    assert same_build(weights, weights) and same_build(manifest, manifest)
    assert not same_build(weights, others) and not same_build(manifest, weights)


def test_a_config_left_stale_by_a_killed_publish_is_rewritten_by_the_next_one(
    engines: dict[str, Path], tmp_path: Path
) -> None:
    """Killed after the new version's plan and before its config.pbtxt: Triton would look for
    version 1's plans in version 2. The same publish again finds the plan there ("unchanged") and
    now rewrites the config that does not describe it."""
    repository = tmp_path / "models"
    uri = f"triton://{repository}"
    assert cli("publish", str(engines["8.6"]), "--to", uri)[0] == 0
    config_path = repository / "digits-cnn" / "config.pbtxt"
    version_1_config = config_path.read_bytes()
    other = build_engine(
        tmp_path / "v2",
        model=conv_net(tmp_path / "v2.onnx", seed=2),
        targets=["8.9"],
        profiles="  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}",
    )
    assert cli("publish", str(other), "--to", uri)[0] == 0
    config_path.write_bytes(version_1_config)  # what the kill left
    code, out, err = cli("publish", str(other), "--to", uri, "--json")
    document = json.loads(out)
    assert code == 0 and document["status"] == "unchanged", err
    assert "it did not describe this version's plans" in document["detail"]
    _, config = config_of(repository)
    assert dict(config.cc_model_filenames) == {"8.9": f"model.{read_manifest(other).tag}.plan"}
    code, out, _ = cli("publish", str(other), "--to", uri, "--json")
    assert code == 0 and "regenerated" not in json.loads(out)["detail"]  # repaired once, then left alone


def test_two_profiles_are_listed_and_every_shape_warmed(engines: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "models"
    manifest = read_manifest(engines["conv"])
    assert cli("publish", str(engines["conv"]), "--to", f"triton://{repository}")[0] == 0
    _, config = config_of(repository)
    assert list(config.instance_group[0].profile) == ["0", "1"]
    warmed = [(w.name, list(w.inputs["input"].dims)) for w in config.model_warmup]
    # profile1's min equals profile0's max: warmed once
    assert warmed == [
        ("profile0_min", [1, 3, 16, 16]),
        ("profile0_opt", [2, 3, 16, 16]),
        ("profile0_max", [4, 3, 16, 16]),
        ("profile1_opt", [8, 3, 16, 16]),
        ("profile1_max", [16, 3, 16, 16]),
    ]
    every_shape = {tuple(p["input"][k]) for p in manifest.profiles for k in ("min", "opt", "max")}
    assert {tuple(dims) for _, dims in warmed} == every_shape


def test_same_engine_no_op_and_other_engine_needs_force(engines: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "models"
    uri = f"triton://{repository}"
    assert cli("publish", str(engines["8.6"]), "--to", uri)[0] == 0
    code, out, _ = cli("publish", str(engines["8.6"]), "--to", uri, "--json")
    assert code == 0 and json.loads(out)["status"] == "unchanged"
    # the same build (ONNX, precision, TensorRT, I/O, profiles) with another engine: another workspace
    other = build_engine(tmp_path / "other", build="{workspace: 256MiB}")
    assert sha256_file(other) != sha256_file(engines["8.6"]) and other.name == engines["8.6"].name
    code, _, err = cli("publish", str(other), "--to", uri)
    assert code == 6 and "--force" in err
    code, out, err = cli("publish", str(other), "--to", uri, "--force", "--json")
    assert code == 0 and json.loads(out)["status"] == "replaced" and json.loads(out)["version"] == 1
    plan = repository / "digits-cnn" / "1" / f"model.{read_manifest(other).tag}.plan"
    assert sha256_file(plan) == read_manifest(other).artifact.sha256


def test_a_hand_edited_config_is_kept(engines: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "models"
    uri = f"triton://{repository}"
    assert cli("publish", str(engines["8.6"]), "--to", uri)[0] == 0
    config_path = repository / "digits-cnn" / "config.pbtxt"
    edited = config_path.read_text().replace("count: 1", "count: 2")
    config_path.write_text(edited)
    code, out, err = cli("publish", str(engines["8.9"]), "--to", uri, "--json")
    assert code == 0, err
    assert any("edited by hand" in warning for warning in json.loads(out)["warnings"])
    assert config_path.read_text() == edited
    assert cli("publish", str(engines["multi"]), "--to", uri, "--force")[0] == 0
    text, config = config_of(repository)
    assert not edited_by_hand(text) and set(config.cc_model_filenames) == {"8.6", "8.9", "12.0"}


def test_half_written_versions_are_invisible(engines: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "models"
    assert cli("publish", str(engines["8.6"]), "--to", f"triton://{repository}")[0] == 0
    staged = repository / "digits-cnn" / ".2.x1y2.tmp"  # what an interrupted publish of version 2 leaves
    shutil.copytree(repository / "digits-cnn" / "1", staged)
    assert [v.number for v in versions(repository / "digits-cnn")] == [1]
    listing = TritonRegistry(TritonLocation(repository)).candidates("digits-cnn", None)
    assert [Path(c.reference).parent.name for c in listing.candidates] == ["1"]
    code, out, _ = cli("publish", str(engines["8.9"]), "--to", f"triton://{repository}", "--json")
    assert code == 0 and json.loads(out)["version"] == 1
    assert not [p for p in (repository / "digits-cnn").iterdir() if p.name.endswith(".tmp") and p != staged]


def test_types_triton_cannot_carry_are_refused(engines: dict[str, Path]) -> None:
    manifest: Manifest = read_manifest(engines["8.6"])
    fp8 = manifest.replace(
        io=[TensorInfo(name="input", mode="input", dtype="float8_e4m3fn", shape=[-1, 1, 8, 8]), *manifest.io[1:]]
    )
    with pytest.raises(InvalidInputError, match="float8_e4m3fn, which Triton has no data type for"):
        build_config("digits-cnn", [(fp8, "model.plan")])
    no_profile = manifest.replace(profiles=[])
    with pytest.raises(InvalidInputError, match="no profile gives its shapes"):
        warmup_samples(no_profile)


def test_missing_repository_on_pull(tmp_path: Path) -> None:
    code, _, err = cli("pull", f"triton://{tmp_path / 'none'}", "--name", "digits-cnn", "--cc", "8.6")
    assert code == 6 and "no such directory" in err


def _onnx(path: Path, nodes: list, inputs: list, outputs: list) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _published_config(engine: Path, repository: Path, name: str) -> tuple[object, object | None]:
    """Publish, then read config.pbtxt with trtforge's schema and (when installed) Triton's own."""
    from google.protobuf import text_format

    code, _, err = cli("publish", str(engine), "--to", f"triton://{repository}")
    assert code == 0, err
    text, ours = config_of(repository, name)
    reference = _tritons_model_config_if_installed()
    theirs = text_format.Parse(text, reference.ModelConfig()) if reference else None  # type: ignore[attr-defined]
    return ours, theirs


def test_shape_tensor_inputs_are_marked_as_triton_requires(tmp_path: Path) -> None:
    """Before: no ``is_shape_tensor``, and Triton's TensorRT backend refused the model."""
    from onnx import TensorProto, helper

    model = _onnx(
        tmp_path / "reshape.onnx",
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])],
    )
    engine = build_engine(tmp_path / "b", name="reshape", model=model, profiles="  - shape: {value: [4, 6]}")
    for config in _published_config(engine, tmp_path / "models", "reshape"):
        if config is None:
            continue
        marked = {tensor.name: (tensor.is_shape_tensor, list(tensor.dims)) for tensor in config.input}  # type: ignore[attr-defined]
        assert marked == {"x": (False, [2, 3, 4]), "shape": (True, [2])}
        assert not config.model_warmup  # type: ignore[attr-defined]


def test_an_engine_with_rank_0_tensors_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Before: ``dims: [1]`` with an empty ``reshape``, which Triton refuses in a model without
    batching ("cannot have empty reshape for non-batching model as scalar tensors are not
    supported", core's ``ValidateIOShape``), and trtforge's configs are all ``max_batch_size: 0``."""
    from onnx import TensorProto, helper

    model = _onnx(
        tmp_path / "scale.onnx",
        [helper.make_node("Mul", ["x", "s"], ["y"]), helper.make_node("ReduceSum", ["y"], ["total"], keepdims=0)],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, []),
        ],
    )
    engine = build_engine(tmp_path / "b", name="scale", model=model, profiles="  []")
    assert {t.name: t.shape for t in read_manifest(engine).io if not t.shape} == {"s": [], "total": []}
    repository = tmp_path / "models"
    code, out, err = cli("publish", str(engine), "--to", f"triton://{repository}")
    assert code == 2 and not out, err
    assert err.strip().count("\n") == 0, err
    assert "rank-0 (scalar) tensor(s) 's', 'total': Triton cannot serve a scalar in a model without batching" in err
    assert "dir:// or oci://" in err
    assert not repository.exists()
    with pytest.raises(InvalidInputError, match=r"rank-0 \(scalar\) tensor\(s\) 's', 'total'"):
        build_config("scale", [(read_manifest(engine), "model.plan")])


def test_force_on_an_unchanged_plan_says_what_it_did_to_the_config(engines: dict[str, Path], tmp_path: Path) -> None:
    """Before: --force rewrote config.pbtxt and said "(it did not describe this version's plans)"
    even when it did; a config written by another trtforge version (its header) is not stale either."""
    repository = tmp_path / "models"
    uri = f"triton://{repository}"
    assert cli("publish", str(engines["8.6"]), "--to", uri)[0] == 0
    config_path = repository / "digits-cnn" / "config.pbtxt"
    written = config_path.read_text()
    code, out, err = cli("publish", str(engines["8.6"]), "--to", uri, "--force", "--json")
    document = json.loads(out)
    assert code == 0 and document["status"] == "unchanged", err
    assert "nothing to do" in document["detail"] and "regenerated" not in document["detail"]
    assert config_path.read_text() == written
    older = written.replace("# Generated by trtforge ", "# Generated by trtforge 0.0.1, not ", 1)
    config_path.write_text(older)
    for flags in ((), ("--force",)):
        code, out, _ = cli("publish", str(engines["8.6"]), "--to", uri, "--json", *flags)
        assert code == 0 and "regenerated" not in json.loads(out)["detail"]
        assert config_path.read_text() == older
    config_path.write_text(written.replace("count: 1", "count: 2"))
    code, out, _ = cli("publish", str(engines["8.6"]), "--to", uri, "--force", "--json")
    assert code == 0 and "regenerated (--force: it had been edited by hand)" in json.loads(out)["detail"]
    assert config_path.read_text() == written


def test_a_version_listing_skips_what_is_not_a_readable_manifest(tmp_path: Path) -> None:
    """A FIFO named as a plan's manifest hung ``pull triton://`` (reading waited for a writer), and a
    folder of that name failed the whole pull (exit 6); both are left alone, as ``dir://`` leaves
    them."""
    import os
    import threading

    from trtforge.publish.triton import version_plans

    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    os.mkfifo(version / "model.a.manifest.json")
    (version / "model.a.plan").write_bytes(b"plan")
    (version / "model.b.manifest.json").mkdir()
    (version / "model.b.plan").write_bytes(b"plan")
    found: list[object] = []
    listing = threading.Thread(target=lambda: found.append(version_plans(version)), daemon=True)
    listing.start()
    listing.join(timeout=10)
    assert not listing.is_alive(), "version_plans waited on the FIFO"
    assert found == [[]]


@pytest.mark.parametrize("folder", ["²", "٣", "1²"])
def test_only_ascii_integers_are_version_folders(engines: dict[str, Path], tmp_path: Path, folder: str) -> None:
    """``str.isdigit`` took ``²`` (then ``int`` failed: exit 1) and ``٣`` (Arabic-Indic 3: publish wrote
    version 4, pull found nothing); Triton reads neither as a version, and neither does trtforge."""
    repository = tmp_path / "models"
    (repository / "digits-cnn" / folder).mkdir(parents=True)
    assert versions(repository / "digits-cnn") == []
    code, out, err = cli("publish", engines["8.6"], "--to", f"triton://{repository}", "--json")
    assert code == 0, err
    assert json.loads(out)["version"] == 1 and (repository / "digits-cnn" / folder).is_dir()
    code, _, err = cli("pull", f"triton://{repository}", "--name", "digits-cnn", "--cc", "8.6", "--out", tmp_path / "o")
    assert code == 0, err


def test_a_version_folder_is_used_by_the_name_it_is_listed_under(engines: dict[str, Path], tmp_path: Path) -> None:
    """``007`` is version 7, and its plans are in ``007``: not in ``7``, which does not exist."""
    repository = tmp_path / "models"
    assert cli("publish", engines["8.6"], "--to", f"triton://{repository}")[0] == 0
    model = repository / "digits-cnn"
    (model / "1").rename(model / "007")
    assert versions(model) == [Version(7, "007")]
    code, out, err = cli("publish", engines["8.9"], "--to", f"triton://{repository}", "--json")
    assert code == 0, err
    published = json.loads(out)
    assert published["version"] == 7 and Path(published["reference"]).parent == model / "007"
    assert sorted(p.name for p in model.iterdir() if not p.name.startswith(".")) == ["007", "config.pbtxt"]
    assert len(list((model / "007").glob("*.plan"))) == 2
    code, stdout, err = cli(
        "pull", f"triton://{repository}", "--name", "digits-cnn", "--cc", "8.6", "--out", tmp_path / "o", "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["source"].startswith(str(model / "007"))
