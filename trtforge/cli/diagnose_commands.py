"""``diagnose``: which layers of a spec's FP16/INT8 candidate lose the accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trtforge.cli.common import (
    BackendOption,
    CacheDirOption,
    JsonOption,
    backend_value,
    cache_dir_value,
    emit_json,
    exits_cleanly,
    path_option,
    reporter,
)

app = typer.Typer()


@app.command()
@exits_cleanly
def diagnose(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="Model spec YAML file.", show_default=False)],
    out: Annotated[
        Path, path_option("--out", "-o", help_text="Where {name}-{precision}.diagnosis.json and .diagnosis.html go.")
    ] = Path("out"),
    budget: Annotated[
        float | None,
        typer.Option(
            "--budget",
            min=0.0,
            help="Seconds the whole diagnosis may take (default 300): an exclude: auto search stops by it, the "
            "layer-wise pass after the batch that crosses it; another sensitivity search gets what is left.",
        ),
    ] = None,
    backend: BackendOption = None,
    cache_dir: CacheDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Layer-wise diagnosis: every node of the gate's candidate graph against the FP32 reference."""
    from trtforge.diagnosis import diagnose_spec
    from trtforge.fsutil import check_writable_dir
    from trtforge.spec import load_spec

    check_writable_dir(out)  # now, not after minutes of diagnosis
    console = reporter()
    loaded = load_spec(spec)
    diagnosis, files = diagnose_spec(
        loaded,
        out,
        console,
        cache_dir=cache_dir_value(cache_dir),
        budget_s=budget,
        backend=backend_value(backend),
    )
    if as_json:
        emit_json({**diagnosis.to_dict(), "files": {"json": str(files.json), "html": str(files.html)}})
        return
    worst = sorted(diagnosis.nodes, key=lambda node: node.drop, reverse=True)[:5]
    for node in worst:
        # the cosine is over the values both graphs hold finite: NaN/Inf mismatches make it 0 for the drop
        mismatch = f" ({node.nonfinite_mismatch} NaN/Inf mismatches: counted as 0)" if node.nonfinite_mismatch else ""
        console.info(f"  {node.node} ({node.op_type}): cosine {node.cosine:.6g}{mismatch}, drop {node.drop:.3g}")
    console.info(f"first jump: {diagnosis.first_jump or 'none'}")
    if diagnosis.fp16_out_of_range:
        console.info(f"outside FP16's range: {', '.join(diagnosis.fp16_out_of_range)}")
    if diagnosis.fp16_keep_fp32_yaml:  # the guard's choice on these inputs, beyond what the candidate keeps
        reasons = ", ".join(f"{node} ({why})" for node, why in diagnosis.fp16_keep_reasons.items())
        # a keep_fp32 list turns the guard off, and the spec refuses a calibration: section it leaves unread
        unread = "; remove its calibration: section with them (the guard reads it)" if loaded.calibration else ""
        console.info(
            f"{diagnosis.name}: the overflow guard, on these inputs, keeps in FP32 {reasons}; nodes to keep "
            f"in FP32 for the spec (they replace its keep_fp32 list{unread}):\n{diagnosis.fp16_keep_fp32_yaml}"
        )
    console.success(f"{diagnosis.stem}: see {files.html}")
