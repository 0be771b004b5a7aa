"""``trtforge diagnose``: which layers a precision-prepared candidate loses accuracy in.

:mod:`~trtforge.diagnosis.layerwise` measures every node of the candidate the accuracy gate
runs against the FP32 reference; :mod:`~trtforge.diagnosis.page` draws it as one HTML page.
``write_diagnosis`` writes ``{name}-{precision}.diagnosis.json`` and ``{name}-{precision}.diagnosis.html`` side by side.

A sensitivity search adds its result with
``write_diagnosis(dataclasses.replace(diagnosis, sensitivity=SensitivityResult(...)), out)``
(:class:`trtforge.precision.sensitivity.SensitivityResult`, which ``SensitivitySearch.report()``
gives): the JSON then carries ``sensitivity`` and the page its ranking and chosen exclusions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.deadline import Deadline
from trtforge.diagnosis.layerwise import DEFAULT_BUDGET_S, Diagnosis, diagnose_layers
from trtforge.fsutil import atomic_write_text, ensure_writable_dir
from trtforge.mixedprecision import tensorrt_choice
from trtforge.precision import prepare_precision

if TYPE_CHECKING:
    from trtforge.console import Reporter
    from trtforge.spec import Spec

__all__ = ["DEFAULT_BUDGET_S", "Diagnosis", "DiagnosisFiles", "diagnose_spec", "write_diagnosis"]


@dataclass(frozen=True)
class DiagnosisFiles:
    json: Path
    html: Path


def diagnosis_stem(spec: Spec) -> str:
    """``{name}-{precision}``: a diagnosis runs before (or without) an engine and its tag."""
    return f"{spec.name}-{spec.precision}"


def write_diagnosis(diagnosis: Diagnosis, out_dir: Path) -> DiagnosisFiles:
    """``{name}-{precision}.diagnosis.json`` and ``.diagnosis.html`` in ``out_dir``, each written atomically."""
    from trtforge.diagnosis.page import render_html

    ensure_writable_dir(out_dir)
    files = DiagnosisFiles(out_dir / f"{diagnosis.stem}.diagnosis.json", out_dir / f"{diagnosis.stem}.diagnosis.html")
    atomic_write_text(files.json, json.dumps(diagnosis.to_dict(), indent=2) + "\n")
    atomic_write_text(files.html, render_html(diagnosis))
    return files


def diagnose_spec(
    spec: Spec,
    out_dir: Path,
    reporter: Reporter,
    *,
    cache_dir: Path,
    budget_s: float | None = None,
    backend: str | None = None,
) -> tuple[Diagnosis, DiagnosisFiles]:
    """Prepare the candidate as ``build`` does for the gate, diagnose it, write both files.

    ``budget_s`` (None: DEFAULT_BUDGET_S) is the whole diagnosis's, counted from here. With
    ``exclude: auto`` the preparation's search is the report's sensitivity section, so that the
    exclusions reported are the candidate's: it stops by the deadline or ``search_budget``,
    whichever comes first, and ranks even a graph that passes. The layer-wise pass gets what the
    preparation left. Other int8 Q/DQ specs get a sensitivity search of their own, with what the
    pass left (without ``budget_s``, at most ``search_budget``). Calibration and a search's first
    measurements run whatever is left: a small budget can be overrun by them."""
    from trtforge.backends import choose_backend
    from trtforge.environment import PIP_EXTRAS, installed_version
    from trtforge.errors import BackendUnavailableError, SpecError
    from trtforge.model import describe, load_onnx
    from trtforge.spec import check_profiles

    if spec.precision == "fp32":  # the candidate would be the model itself: "first jump: none" says nothing
        raise SpecError(
            f"{spec.origin.where('precision')}: precision fp32 has no candidate to diagnose (it is the model "
            "itself); trtforge diagnose compares an fp16 or int8 candidate with the FP32 model"
        )
    deadline = Deadline(DEFAULT_BUDGET_S if budget_s is None else budget_s)
    model = load_onnx(spec.model_path)
    info = describe(model, spec.model_path)
    del model
    check_profiles(spec, info)
    choice = choose_backend(backend or spec.backend)
    version = installed_version(choice.flavor)
    if version is None:
        asked = f"--backend {backend}" if backend is not None else spec.origin.where("backend")
        raise BackendUnavailableError(
            f"{asked}: {choice.flavor} is not installed here, and the candidate graph depends on the backend: "
            f"pip install 'trtforge[{PIP_EXTRAS[choice.flavor]}]', or pass another --backend"
        )
    prepared = prepare_precision(spec, info, choice.flavor, version, cache_dir, reporter, diagnosis=deadline)
    reporter.info(f"{spec.name}: diagnosing {prepared.candidate_onnx.name} against {spec.model_path.name}")
    diagnosis = diagnose_layers(
        spec,
        info,
        prepared.candidate_onnx,
        stem=diagnosis_stem(spec),
        budget_s=max(0.0, deadline.left()),
        log=reporter.info,
        tensorrt_choice=tensorrt_choice(
            choice.flavor,
            version,
            spec.precision,
            spec.calibration is not None and spec.calibration.mode == "native",
        ),
        keep_fp32=prepared.fp16["keep_fp32"] if prepared.fp16 is not None else None,
    )
    if diagnosis.emulation:
        reporter.info(f"candidate emulated: {diagnosis.emulation}")
    found = prepared.sensitivity
    if found is None and spec.calibration is not None and spec.precision == "int8" and spec.calibration.mode == "qdq":
        from trtforge.precision.sensitivity import search_spec

        left = max(0.0, deadline.left())
        search_budget = min(spec.calibration.search_budget, left) if budget_s is None else left
        found = search_spec(spec, info, cache_dir / "calibration", budget_s=search_budget, log=reporter.info)
    if found is not None:
        from dataclasses import replace

        if found is not prepared.sensitivity or not found.exclude:  # the preparation logged its choice
            reporter.info(f"{spec.name}: exclusions for the spec, found by the sensitivity search:\n{found.yaml}")
        diagnosis = replace(diagnosis, sensitivity=found.report())
    return diagnosis, write_diagnosis(diagnosis, out_dir)
