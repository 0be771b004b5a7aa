"""What an fp16 build with the gate off does, and the overflow guard's cache (issue 16).

The model: x * k -> MatMul with weights in [50, 100] -> * 1e-4. With k = 1000 and inputs near 1
the MatMul output reaches ~1e6 (beyond FP16's 65504) and the guard keeps ``blowup`` and
``shrink`` in FP32; with k = 0.001 nothing overflows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clitools import cli
from models import need_rtx, overflow_chain

from trtforge.manifest import read_manifest
from trtforge.model import inspect_model
from trtforge.precision.overflow import FOLDER, first_samples

PROFILE = "profiles:\n  - input: {min: [1, 16], opt: [4, 16], max: [8, 16]}\n"


def _build_keep(spec: Path, out: Path) -> list[str]:
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 0, stderr
    manifest = read_manifest(next(out.glob("*.manifest.json")))
    assert manifest.fp16 is not None and manifest.fp16["chosen_by"] == "overflow guard"
    return list(manifest.fp16["keep_fp32"])


def test_gate_off_fp16_build_makes_no_emulated_graph(
    write_spec: Callable[..., Path], tmp_path: Path, isolated_cache: Path
) -> None:
    """The FP16-storage emulation is the gate's candidate: with the gate off nothing runs it."""
    need_rtx()
    model = overflow_chain(tmp_path / "m.onnx", 0.001)
    spec = write_spec(
        f"name: m\nmodel: {model}\nprecision: fp16\ntargets: ['8.6']\n{PROFILE}accuracy: {{enabled: false}}\n"
    )
    assert _build_keep(spec, tmp_path / "out") == []
    assert list((isolated_cache / "fp16").glob("*.onnx"))
    assert not (isolated_cache / "fp16-emulated").exists()


def test_guard_cache_follows_the_model(write_spec: Callable[..., Path], tmp_path: Path, isolated_cache: Path) -> None:
    """The guard's choice is cached by the model's content: rewriting the model at the same path
    with other weights never reuses the old choice, and the old content hits the old entry."""
    need_rtx()
    model = overflow_chain(tmp_path / "m.onnx", 1000.0)
    spec = write_spec(
        f"name: m\nmodel: {model}\nprecision: fp16\ntargets: ['8.6']\n{PROFILE}accuracy: {{enabled: false}}\n"
    )
    assert _build_keep(spec, tmp_path / "a") == ["blowup", "shrink"]
    entries = list((isolated_cache / FOLDER).glob("*.json"))
    assert len(entries) == 1
    overflow_chain(model, 0.001)
    assert _build_keep(spec, tmp_path / "b") == []
    assert len(list((isolated_cache / FOLDER).glob("*.json"))) == 2
    overflow_chain(model, 1000.0)
    assert _build_keep(spec, tmp_path / "c") == ["blowup", "shrink"]  # served from the first entry
    assert len(list((isolated_cache / FOLDER).glob("*.json"))) == 2
    entries[0].write_text("{not json", encoding="utf-8")  # a damaged entry is a miss, not an error
    assert _build_keep(spec, tmp_path / "d") == ["blowup", "shrink"]


def test_guard_cache_follows_the_data(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """With calibration data, rewriting a data file in place changes the guard's choice."""
    need_rtx()
    model = overflow_chain(tmp_path / "m.onnx", 1000.0)
    data = tmp_path / "calib"
    data.mkdir()
    np.save(data / "batch.npy", np.full((8, 16), 1e-3, np.float32))  # MatMul output ~1e3: no overflow
    spec = write_spec(
        f"name: m\nmodel: {model}\nprecision: fp16\ntargets: ['8.6']\n{PROFILE}"
        f"accuracy: {{enabled: false}}\ncalibration:\n  data: {data}/*.npy\n"
    )
    assert _build_keep(spec, tmp_path / "a") == []
    np.save(data / "batch.npy", np.full((8, 16), 1.0, np.float32))  # ~1e6: overflows FP16
    assert _build_keep(spec, tmp_path / "b") == ["blowup", "shrink"]


def test_guard_runs_one_sample_per_random_shape(tmp_path: Path) -> None:
    """Random feeds of batch 1, 4 and 8 of one shape make one single-sample run: the first sample
    of the first feed; a model with a static batch axis is fed as is."""
    info = inspect_model(overflow_chain(tmp_path / "m.onnx", 1.0))
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.random((batch, 16), dtype=np.float32)} for batch in (1, 4, 8)]
    samples = list(first_samples(info, iter(feeds), lambda feed: True))
    assert [s["input"].shape for s in samples] == [(1, 16)]
    np.testing.assert_array_equal(samples[0]["input"], feeds[0]["input"][:1])
    refused = list(first_samples(info, iter(feeds), lambda feed: feed["input"].shape[0] >= 4))
    assert [s["input"].shape for s in refused] == [(1, 16), (4, 16), (8, 16)]


def test_ctrl_c_in_onnxruntime_s_import_stops_the_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard's activation pass imports onnxruntime: Ctrl-C there (ImportError raised from the
    KeyboardInterrupt) was taken for "onnxruntime cannot run the model", the pass skipped and the
    build went on. It stops the build."""
    from trtforge.calibration import collect as collect_module
    from trtforge.precision import overflow
    from trtforge.spec import load_spec

    def interrupted_import(*args: object, **kwargs: object) -> None:
        raise ImportError("initialization failed") from KeyboardInterrupt()

    monkeypatch.setattr(collect_module, "collect", interrupted_import)
    model = overflow_chain(tmp_path / "m.onnx", 1000.0)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: m\nmodel: m.onnx\nprecision: fp16\n{PROFILE}")
    with pytest.raises(KeyboardInterrupt):
        overflow.choose_keep_fp32(load_spec(spec), inspect_model(model), lambda line: None)


def _plain_and_external(folder: Path) -> tuple[Path, Path]:
    """The overflow chain twice, in folders of their own: as one file, and with its weights in
    external data (``w.bin``)."""
    import onnx

    (folder / "plain").mkdir()
    plain = overflow_chain(folder / "plain" / "m.onnx")
    external = folder / "external" / "m.onnx"
    external.parent.mkdir()
    onnx.save(onnx.load(str(plain)), str(external), save_as_external_data=True, location="w.bin", size_threshold=0)
    return plain, external


def test_guard_runs_a_copy_of_the_file_and_keeps_external_data_models_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard's session extends a copy of the model's file (no second serialization) and leaves
    the model itself untouched; a model whose weights are in external data (which a copy elsewhere
    would not find) is run from the loaded model instead. Both choose the same nodes."""

    from trtforge.precision import overflow
    from trtforge.precision.graphs import onnx_loader
    from trtforge.spec import load_spec

    copied: list[Path] = []
    copy = overflow.shutil.copyfile
    monkeypatch.setattr(overflow.shutil, "copyfile", lambda src, dst: (copied.append(Path(src)), copy(src, dst))[1])

    plain, external = _plain_and_external(tmp_path)
    chosen = {}
    for model in (plain, external):
        before = model.read_bytes()
        spec_path = model.parent / "spec.yaml"
        spec_path.write_text(f"name: m\nmodel: {model.name}\nprecision: fp16\n{PROFILE}")
        spec = load_spec(spec_path)
        keep = overflow.choose_keep_fp32(spec, inspect_model(model), lambda line: None, None, onnx_loader(model))
        chosen[model] = keep.nodes
        assert model.read_bytes() == before
    assert chosen[plain] == chosen[external] and set(chosen[plain]) >= {"blowup", "shrink"}
    assert copied == [plain]  # the external-data model was run from the loaded model


@pytest.mark.parametrize(("k", "kept"), [(1000.0, ["blowup", "shrink"]), (0.001, [])])
def test_guard_beside_the_conversion_gives_the_graph_of_guard_then_conversion(
    write_spec: Callable[..., Path], tmp_path: Path, k: float, kept: list[str]
) -> None:
    """The FP16 graph is converted while the guard runs (with no node kept, the common case) and
    again where the guard keeps nodes: the graph built is the one the guard's choice gives when
    the two run one after the other."""
    import onnx

    from trtforge.console import Reporter
    from trtforge.mixedprecision import to_fp16
    from trtforge.precision import prepare_precision
    from trtforge.spec import load_spec

    model = overflow_chain(tmp_path / "m.onnx", k)
    spec = load_spec(write_spec(f"name: m\nmodel: {model}\nprecision: fp16\ntargets: ['8.6']\n{PROFILE}"))
    prepared = prepare_precision(
        spec, inspect_model(model), "tensorrt-rtx", "1.7.1", tmp_path / "cache", Reporter(), for_gate=False
    )
    assert prepared.fp16 is not None and prepared.fp16["keep_fp32"] == kept
    sequential = to_fp16(onnx.load(str(model)), kept)
    assert prepared.onnx_path.read_bytes() == sequential.SerializeToString()


def test_an_interrupted_conversion_stops_the_guard_beside_it_before_its_next_batch(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the FP16 graph is converted: the guard running beside it on calibration data
    ends before its next batch (not after its last), and leaves no cache entry behind."""
    import threading

    from trtforge.console import Reporter
    from trtforge.precision import graphs, prepare_precision
    from trtforge.spec import load_spec

    model = overflow_chain(tmp_path / "m.onnx", 1000.0)
    data = tmp_path / "calib"
    data.mkdir()
    for index in range(200):
        np.save(data / f"batch{index:03}.npy", np.full((8, 16), 1e-3, np.float32))
    spec = load_spec(
        write_spec(
            f"name: m\nmodel: {model}\nprecision: fp16\ntargets: ['8.6']\n{PROFILE}"
            f"calibration:\n  data: {data}/*.npy\n  batch_size: 1\n  max_samples: 1600\n"
        )
    )
    ran: list[int] = []
    guards_seen: list[list[threading.Thread]] = []

    def interrupted(*args: object, **kwargs: object) -> Path:
        guards = [thread for thread in threading.enumerate() if thread.name.startswith("trtforge-fp16-guard")]
        assert guards, "the guard runs beside the conversion"
        guards_seen.append(guards)
        raise KeyboardInterrupt

    monkeypatch.setattr(graphs, "fp16_onnx", interrupted)
    from trtforge.calibration import collect as collect_module

    real_collect = collect_module.collect

    def counting(model: object, names: object, feeds: Iterator[object], *args: object, **kwargs: object) -> object:
        def counted() -> Iterator[object]:
            for feed in feeds:
                ran.append(1)
                yield feed

        return real_collect(model, names, counted(), *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(collect_module, "collect", counting)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        prepare_precision(spec, inspect_model(model), "tensorrt-rtx", "1.7.1", cache, Reporter(), for_gate=False)
    for thread in guards_seen[0]:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert len(ran) < 1600  # stopped, not run over every sample
    assert not list((cache / FOLDER).glob("*.json"))


def test_guard_runs_beside_the_conversion_except_for_external_data_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose weights live in external data is guarded first and converted after, on the
    caller's thread (the guard's session extends the loaded model itself there); both ways give the
    same kept nodes and the same converted graph."""
    import threading

    import onnx

    from trtforge.console import Reporter
    from trtforge.precision import overflow, prepare_precision
    from trtforge.spec import load_spec

    threads: list[str] = []
    choose = overflow.choose_keep_fp32

    def recorded(*args: Any, **kwargs: Any) -> overflow.KeepFp32:
        threads.append(threading.current_thread().name)
        return choose(*args, **kwargs)

    monkeypatch.setattr(overflow, "choose_keep_fp32", recorded)
    plain, external = _plain_and_external(tmp_path)
    graphs = {}
    for model in (plain, external):
        (model.parent / "spec.yaml").write_text(f"name: m\nmodel: {model.name}\nprecision: fp16\n{PROFILE}")
        spec = load_spec(model.parent / "spec.yaml")
        cache = model.parent / "cache"
        prepared = prepare_precision(spec, inspect_model(model), "tensorrt-rtx", "1.7.1", cache, Reporter(), False)
        assert prepared.fp16 is not None and set(prepared.fp16["keep_fp32"]) >= {"blowup", "shrink"}
        converted = onnx.load(str(prepared.onnx_path), load_external_data=False)
        graphs[model] = [(node.op_type, list(node.input), list(node.output)) for node in converted.graph.node]
    assert threads[0].startswith("trtforge-fp16-guard") and threads[1] == threading.main_thread().name
    assert graphs[plain] == graphs[external]
