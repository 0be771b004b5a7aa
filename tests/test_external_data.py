"""Models that keep their weights in external data files beside the .onnx: int8 builds them (the
BatchNormalization-folded copy and the cached Q/DQ graph carry their weights), ``verify`` refuses
weights edited in their data file (the manifest's ``source.model_sha256``), provenance lists each
data file, and the build hashes them ahead (without reading the graph twice for a model that has
none)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import models
import numpy as np
import onnx
import pytest
from clitools import cli
from onnx import TensorProto, helper, numpy_helper

import trtforge.build
import trtforge.model
from trtforge import digests
from trtforge.digests import sha256_file
from trtforge.manifest import read_manifest
from trtforge.model import content_sha256, inspect_model, model_files, read_model_info
from trtforge.signing import generate_keypair
from trtforge.spec import load_spec
from trtforge.verify import source_mismatch

PROFILE = "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n"
INT8 = (
    f"name: wide\nprecision: int8\nmodel: wide.onnx\ntargets: ['8.6']\n{PROFILE}"
    "calibration: {data: data/*.npy, batch_size: 8, algorithm: entropy}\n"
)
FP32 = f"name: conv\nprecision: fp32\nmodel: conv.onnx\ntargets: ['8.6']\n{PROFILE}"
DATA = "x.onnx.data"


def wide_net(path: Path, seed: int = 0) -> Path:
    """input [N,3,16,16] -> Conv+BatchNormalization+Relu -> Conv(32 -> 32)+Relu -> GlobalAveragePool
    -> Flatten -> Gemm -> [N,10]. BN is folded before Q/DQ; the second Conv's INT8 weights (9 KB)
    are past the size a Q/DQ graph with external data keeps inline."""
    rng = np.random.default_rng(seed)

    def init(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(array.astype(np.float32), name)

    weights = [
        init("stem.w", rng.normal(0, 0.3, (32, 3, 3, 3))),
        init("stem.b", rng.normal(0, 0.1, 32)),
        init("bn.gamma", rng.uniform(0.5, 1.5, 32)),
        init("bn.beta", rng.normal(0, 0.1, 32)),
        init("bn.mean", rng.normal(0, 0.1, 32)),
        init("bn.var", rng.uniform(0.5, 1.5, 32)),
        init("body.w", rng.normal(0, 0.08, (32, 32, 3, 3))),
        init("body.b", rng.normal(0, 0.1, 32)),
        init("fc.w", rng.normal(0, 0.3, (10, 32))),
        init("fc.b", rng.normal(0, 0.1, 10)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "stem.w", "stem.b"], ["s"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["s", "bn.gamma", "bn.beta", "bn.mean", "bn.var"], ["n"], name="stem/BN"
        ),
        helper.make_node("Relu", ["n"], ["sr"], name="stem/Relu"),
        helper.make_node("Conv", ["sr", "body.w", "body.b"], ["b"], name="body", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["br"], name="body/Relu"),
        helper.make_node("GlobalAveragePool", ["br"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "wide_net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", models.OPSET)])
    model.ir_version = 8
    return models.save(model, path)


def _other_weights(model: Path, make: Callable[..., Path], tmp_path: Path) -> None:
    """Other weights into ``model``'s external data file, its .onnx file byte for byte the same."""
    other = tmp_path / "other" / model.name
    other.parent.mkdir(parents=True)
    make(other, seed=1)
    graph = model.read_bytes()
    model.with_name(DATA).write_bytes(models.externalize(other, DATA).read_bytes())
    assert model.read_bytes() == graph


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in onnx.load(str(path)).graph.initializer}


# ---------------------------------------------------------------- 1: int8 of a model with external data


@pytest.fixture
def int8_projects(tmp_path: Path) -> tuple[Path, Path]:
    """The same model and calibration data twice: weights inline, and in ``x.onnx.data``."""
    folders = []
    for kind in ("inline", "external"):
        root = tmp_path / kind
        models.write_samples(root / "data", (8, 3, 16, 16), files=2)
        wide_net(root / "wide.onnx")
        (root / "wide.yaml").write_text(INT8)
        folders.append(root)
    models.externalize(folders[1] / "wide.onnx", DATA)
    return folders[0], folders[1]


def test_an_int8_build_of_a_model_with_external_data_passes(
    int8_projects: tuple[Path, Path], tmp_path: Path, isolated_cache: Path
) -> None:
    """The build once failed with an internal error (exit 1): onnxruntime's folded copy, written to
    a temporary folder, named the user's data file there. Now it builds, and the gate (the
    simulated candidate runs the cached Q/DQ graph) passes; the Q/DQ graph keeps its weights in a
    data file of its own beside it in the cache, which the engine was built from."""
    models.need_rtx()
    _, external = int8_projects
    code, _, stderr = cli("build", external / "wide.yaml", "--out", tmp_path / "out")
    assert code == 0, stderr
    (qdq,) = (isolated_cache / "calibration").glob("qdq-*.onnx")
    files = model_files(qdq)
    assert len(files) == 2 and files[1].parent == qdq.parent and files[1].name.startswith(qdq.stem)
    assert onnx.load(str(qdq)).graph.initializer  # its weights read back through its data file
    left = {path.name for path in (isolated_cache / "calibration").iterdir()}
    assert left == {qdq.name, files[1].name, *(p.name for p in (isolated_cache / "calibration").glob("scales-*.json"))}

    files[1].unlink()  # a cache entry without its data file is not reused: written again
    code, _, stderr = cli("build", external / "wide.yaml", "--out", tmp_path / "again")
    assert code == 0, stderr
    assert f"wrote {qdq.name}" in stderr and len(model_files(qdq)) == 2


def test_external_data_calibrates_to_the_scales_and_qdq_graph_of_the_inline_model(
    int8_projects: tuple[Path, Path], isolated_cache: Path
) -> None:
    """The same weights give the same scales and the same Q/DQ graph whether they are inline or in
    a data file; the exported Q/DQ graph comes with a data file of its own name, which it names."""
    exported = {}
    for root in int8_projects:
        code, stdout, stderr = cli("calibrate", root / "wide.yaml", "--out", root / "calib", "--json")
        assert code == 0, stderr
        exported[root.name] = json.loads(stdout)["files"]
    inline, external = exported["inline"], exported["external"]
    assert "qdq_data" not in inline
    assert Path(external["qdq_data"]).name == "wide-int8.qdq.onnx.data"
    assert [path.name for path in model_files(Path(external["qdq_model"]))] == [
        "wide-int8.qdq.onnx",
        "wide-int8.qdq.onnx.data",
    ]

    def scales(files: dict[str, str]) -> dict[str, float]:
        return dict(json.loads(Path(files["scales"]).read_text())["scales"])

    assert scales(external) == scales(inline) and scales(inline)
    want, got = _initializers(Path(inline["qdq_model"])), _initializers(Path(external["qdq_model"]))
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)
    nodes = [(n.op_type, list(n.input)) for n in onnx.load(str(inline["qdq_model"])).graph.node]
    assert [(n.op_type, list(n.input)) for n in onnx.load(str(external["qdq_model"])).graph.node] == nodes


def test_unnamed_nodes_of_a_model_with_external_data_are_named_as_in_the_inline_model(
    int8_projects: tuple[Path, Path], isolated_cache: Path
) -> None:
    """An unnamed Conv in a model with external data calibrated before unnamed nodes were named,
    then was refused (exit 2): the copy named in memory is folded with its weights read from the
    model's folder, to the inline model's Q/DQ graph, and ``exclude`` takes the node's given name."""
    graphs = {}
    for root in int8_projects:
        model = onnx.load(str(root / "wide.onnx"), load_external_data=False)
        for node in model.graph.node:
            node.name = "" if node.op_type == "Conv" else node.name
        onnx.save(model, str(root / "wide.onnx"))
        (root / "wide.yaml").write_text(INT8.replace("algorithm: entropy", "algorithm: entropy, exclude: [Conv_3]"))
        code, stdout, stderr = cli("calibrate", root / "wide.yaml", "--out", root / "calib", "--json")
        assert code == 0, stderr
        graphs[root.name] = onnx.load(json.loads(stdout)["files"]["qdq_model"]).graph
    inline, external = graphs["inline"], graphs["external"]
    assert [(n.op_type, n.name, list(n.input)) for n in external.node] == [
        (n.op_type, n.name, list(n.input)) for n in inline.node
    ]
    convs = {node.name: list(node.input) for node in external.node if node.op_type == "Conv"}
    assert sorted(convs) == ["Conv_0", "Conv_3"]
    assert all(name.endswith("_DequantizeLinear_Output") for name in convs["Conv_0"][:2])
    assert not any(name.endswith("_DequantizeLinear_Output") for name in convs["Conv_3"])


# ---------------------------------------------------------------- 2: verify and the manifest's model_sha256


@pytest.fixture
def fp32_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    models.conv_net(root / "conv.onnx")
    (root / "conv.yaml").write_text(FP32)
    return root


def _build(spec: Path, out: Path, *extra: object) -> Path:
    code, _, stderr = cli("build", spec, "--out", out, *extra)
    assert code == 0, stderr
    (engine,) = out.glob("*.engine")
    return engine


def test_the_manifest_records_the_content_of_a_model_with_external_data(fp32_project: Path, tmp_path: Path) -> None:
    """``source.onnx_sha256`` stays the .onnx file's; ``source.model_sha256`` is written where the
    model has external data (its content digest), and absent, not null, where it has none."""
    models.need_rtx()
    inline = _build(fp32_project / "conv.yaml", tmp_path / "inline")
    assert (
        "model_sha256"
        not in json.loads(inline.with_name(inline.name[: -len(".engine")] + ".manifest.json").read_text())["source"]
    )
    assert read_manifest(inline).source.model_sha256 is None

    models.externalize(fp32_project / "conv.onnx", DATA)
    engine = _build(fp32_project / "conv.yaml", tmp_path / "external")
    source = read_manifest(engine).source
    assert source.onnx_sha256 == sha256_file(fp32_project / "conv.onnx")
    assert source.model_sha256 == content_sha256(fp32_project / "conv.onnx") != source.onnx_sha256


def test_verify_refuses_weights_edited_in_their_external_data_file(fp32_project: Path, tmp_path: Path) -> None:
    """The .onnx byte for byte the same, other weights in its data file: verify (ENGINE --spec, and
    SPEC --out) is exit 2 naming the data file, never a gate run on another model. A manifest
    written before ``model_sha256`` existed keeps the .onnx file's rule."""
    models.need_rtx()
    data = models.externalize(fp32_project / "conv.onnx", DATA)
    spec = fp32_project / "conv.yaml"
    out = tmp_path / "out"
    engine = _build(spec, out)
    code, _, stderr = cli("verify", engine, "--spec", spec)
    assert code == 0, stderr

    _other_weights(fp32_project / "conv.onnx", models.conv_net, tmp_path)
    for args in ((engine, "--spec", spec), (spec, "--out", out)):
        code, _, stderr = cli("verify", *args)
        assert code == 2, stderr
        assert "external data" in stderr and str(data) in stderr and "not the weights" in stderr

    loaded = load_spec(spec)
    manifest = read_manifest(engine)
    old = manifest.replace(source=manifest.source.model_copy(update={"model_sha256": None}))
    assert source_mismatch(loaded, old, sha256_file(spec.parent / "conv.onnx")) is None
    assert source_mismatch(loaded, manifest, sha256_file(spec.parent / "conv.onnx")) is not None


def test_verify_hashes_the_external_data_itself_never_the_digest_cache(fp32_project: Path, tmp_path: Path) -> None:
    """Weights edited in their data file, and an entry planted in the digest cache (which any process
    of this user, or a restored CI cache, writes) giving the edited file's exact stamp the digest of
    the weights the engine was built from: verify hashes the data itself and refuses, both ways."""
    models.need_rtx()
    data = models.externalize(fp32_project / "conv.onnx", DATA)
    spec = fp32_project / "conv.yaml"
    out = tmp_path / "out"
    engine = _build(spec, out)
    built = sha256_file(data, disk_cache=False)
    _other_weights(fp32_project / "conv.onnx", models.conv_net, tmp_path)
    stamp = digests.FileStamp.of(data, data.stat())
    digests.digest_dir().mkdir(parents=True, exist_ok=True)
    (digests.digest_dir() / stamp.entry_name()).write_text(json.dumps({**dataclasses.asdict(stamp), "sha256": built}))
    digests.forget_digests()
    assert sha256_file(data) == built  # the planted entry answers where the cache's word is taken
    manifest, onnx_sha256 = read_manifest(engine), sha256_file(spec.parent / "conv.onnx", disk_cache=False)
    digests.forget_digests()
    assert source_mismatch(load_spec(spec), manifest, onnx_sha256) is not None
    for args in ((engine, "--spec", spec), (spec, "--out", out)):
        digests.forget_digests()
        code, _, stderr = cli("verify", *args)
        assert code == 2 and "not the weights" in stderr, stderr


# ---------------------------------------------------------------- 3: provenance and the build's prefetch


def _dependencies(engine: Path) -> list[dict[str, Any]]:
    import base64

    envelope = json.loads(engine.with_name(engine.name[: -len(".engine")] + ".intoto.jsonl").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    return list(statement["predicate"]["buildDefinition"]["resolvedDependencies"])


def test_provenance_lists_each_external_data_file(fp32_project: Path, tmp_path: Path) -> None:
    """Each data file the model names is an input of its own (role ``model-data``) with its sha256
    and path; verify-provenance finds it changed once its weights are, and ``sign --attest --spec``
    refuses a model whose data is no longer the manifest's."""
    models.need_rtx()
    data = models.externalize(fp32_project / "conv.onnx", DATA)
    generate_keypair(tmp_path / "ci.key")
    engine = _build(fp32_project / "conv.yaml", tmp_path / "out", "--sign-key", tmp_path / "ci.key")
    dependencies = _dependencies(engine)
    assert [dep["annotations"]["role"] for dep in dependencies] == ["model", "spec", "model-data"]
    (item,) = [dep for dep in dependencies if dep["annotations"]["role"] == "model-data"]
    assert item["digest"] == {"sha256": sha256_file(data)}
    assert (engine.parent / item["annotations"]["path"]).resolve() == data.resolve()

    _other_weights(fp32_project / "conv.onnx", models.conv_net, tmp_path)
    code, stdout, _ = cli("verify-provenance", engine, "--trusted-key", tmp_path / "ci.key.pub", "--json")
    statuses = {check["role"]: check["status"] for check in json.loads(stdout)["inputs"]}
    assert code == 5 and statuses == {"model": "same", "spec": "same", "model-data": "changed"}
    code, _, stderr = cli(
        "sign", engine, "--key", tmp_path / "ci.key", "--attest", "--spec", fp32_project / "conv.yaml"
    )
    assert code == 5 and "external data" in stderr, stderr


def test_model_info_names_the_external_data_files(fp32_project: Path) -> None:
    model = fp32_project / "conv.onnx"
    assert read_model_info(model).external_data == inspect_model(model).external_data == ()
    models.externalize(model, DATA)
    for info in (read_model_info(model), inspect_model(model)):
        assert info.external_data == (DATA,) and info.files == model_files(model)


def test_the_build_hashes_external_data_ahead_and_reads_an_inline_graph_once(
    fp32_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build prefetches each data file's digest with the .onnx's, from the files its one read
    of the graph named: a model without external data costs no second read of its graph (an fp32
    build, signed or not, with the gate off)."""
    models.need_rtx()
    prefetched: list[Path] = []
    reads: list[Path] = []
    prefetch, read = trtforge.build.prefetch_digest, trtforge.model.read_onnx

    def recording_prefetch(path: Path) -> None:
        prefetched.append(path)
        prefetch(path)

    def counting_read(path: Path) -> onnx.ModelProto:
        reads.append(path)
        return read(path)

    monkeypatch.setattr(trtforge.build, "prefetch_digest", recording_prefetch)
    monkeypatch.setattr(trtforge.model, "read_onnx", counting_read)
    spec = fp32_project / "conv.yaml"
    spec.write_text(FP32 + "accuracy: {enabled: false}\n")
    model = fp32_project / "conv.onnx"
    generate_keypair(tmp_path / "ci.key")
    _build(spec, tmp_path / "plain")
    _build(spec, tmp_path / "signed", "--sign-key", tmp_path / "ci.key")
    assert prefetched == [model, model] and reads == [model, model]

    prefetched.clear()
    data = models.externalize(model, DATA)
    _build(spec, tmp_path / "external")
    assert prefetched == [model, data]


def test_an_fp16_build_keeps_the_converted_weights_in_a_data_file_of_their_own(
    int8_projects: tuple[Path, Path], tmp_path: Path, isolated_cache: Path
) -> None:
    """The FP16 graph of a model with external data was written inline: past protobuf's 2 GB (an
    FP32 model past 4 GB) it could not be written. Now it keeps its weights in a data file beside it
    in the cache, and a graph whose data file went missing is written again, not built from."""
    models.need_rtx()
    _, external = int8_projects
    spec = external / "fp16.yaml"
    spec.write_text(INT8.replace("precision: int8", "precision: fp16").split("calibration:")[0])
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 0, stderr
    (graph,) = (isolated_cache / "fp16").glob("*.onnx")
    (data,) = (isolated_cache / "fp16").glob("*.onnx.data")
    assert model_files(graph) == [graph, data]
    assert onnx.load(str(graph)).graph.initializer[0].data_type == TensorProto.FLOAT16
    data.unlink()
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 0, stderr
    assert len(model_files(graph)) == 2 and model_files(graph)[1].is_file()
