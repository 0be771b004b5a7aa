"""The diagnosis as one self-contained HTML page (``{name}-{precision}.diagnosis.html``): no network, no script.

The charts are inline SVG written here by hand: a bar per node is all they need, and a plotting
library (matplotlib's SVG backend, plotly's static export) would be a heavy dependency of the
CLI for that, with output that embeds fonts or scripts. The page holds:

- the error along the graph: one bar per node in topological order, its height the cosine lost
  (``1 - cosine``) on a log scale; the first jump red, FP16 range problems orange, excluded nodes
  outlined;
- the sensitivity ranking as bars and the chosen exclusions as the YAML to paste, when the
  diagnosis carries a :class:`~trtforge.precision.sensitivity.SensitivityResult`;
- at fp16, the nodes the overflow guard keeps in FP32 on the diagnosis's inputs and the
  ``fp16: keep_fp32`` lines to paste, when they add to what the candidate keeps;
- a table with one row per node.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from trtforge.calibration.qdq import exclusion_yaml
from trtforge.diagnosis.layerwise import Diagnosis, NodeError

if TYPE_CHECKING:
    from trtforge.precision.sensitivity import SensitivityResult

#: The chart's log scale: cosine losses below FLOOR draw as FLOOR (an exact match), above 1 as 1.
LOSS_FLOOR = 1e-9
BAR_WIDTH = 12
CHART_HEIGHT = 160

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
td.name, th.name { text-align: left; }
tr.jump { background: #fdd; }
tr.range { background: #fed; }
tr.excluded td.name { font-weight: bold; }
.legend span { margin-right: 1.5em; }
pre { background: #f4f4f4; padding: 0.5em; }
"""

RED, ORANGE, BLUE, GREY = "#d62728", "#ff7f0e", "#1f77b4", "#999999"


def _number(value: float, digits: int = 6) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def _loss_height(cosine: float) -> float:
    """Bar height in pixels for ``1 - cosine`` on a log scale from LOSS_FLOOR to 1."""
    loss = min(max(1.0 - cosine, LOSS_FLOOR), 1.0) if not math.isnan(cosine) else 1.0
    return CHART_HEIGHT * (math.log10(loss) - math.log10(LOSS_FLOOR)) / -math.log10(LOSS_FLOOR)


def _colour(node: NodeError, diagnosis: Diagnosis) -> str:
    if node.node == diagnosis.first_jump:
        return RED
    return ORANGE if node.out_of_fp16_range else BLUE


def error_chart(diagnosis: Diagnosis, excluded: frozenset[str]) -> str:
    """The cosine lost per node, in topological order, as an inline SVG."""
    width = max(len(diagnosis.nodes) * BAR_WIDTH, 200) + 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{CHART_HEIGHT + 30}" '
        'role="img" aria-label="cosine lost per node">'
    ]
    decades = int(-math.log10(LOSS_FLOOR))
    for step in range(0, decades + 1, 3):
        y = CHART_HEIGHT * step / decades
        parts.append(f'<line x1="50" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="0" y="{y + 4:.1f}" font-size="10">1e-{step}</text>')
    for index, node in enumerate(diagnosis.nodes):
        height = _loss_height(node.effective_cosine)
        x = 50 + index * BAR_WIDTH
        outline = ' stroke="#000" stroke-width="2"' if node.node in excluded else ""
        parts.append(
            f'<rect x="{x}" y="{CHART_HEIGHT - height:.1f}" width="{BAR_WIDTH - 2}" height="{max(height, 1):.1f}" '
            f'fill="{_colour(node, diagnosis)}"{outline}><title>{html.escape(node.node)} ({node.op_type}): '
            f"cosine {_number(node.cosine)}</title></rect>"
        )
    parts.append(f'<text x="50" y="{CHART_HEIGHT + 20}" font-size="10">nodes in topological order →</text>')
    parts.append("</svg>")
    return "".join(parts)


def sensitivity_chart(result: SensitivityResult) -> str:
    """The ranking as horizontal bars (longest: most damaging), excluded nodes in red."""
    top = max((abs(score) for _, score in result.ranking if math.isfinite(score)), default=0.0) or 1.0
    row, label = 16, 220
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label + 320}" height="{row * len(result.ranking) + 10}" '
        'role="img" aria-label="sensitivity ranking">'
    ]
    for index, (node, score) in enumerate(result.ranking):
        length = 300 * min(abs(score) / top, 1.0) if math.isfinite(score) else 300
        colour = RED if node in result.excluded else GREY
        y = index * row
        parts.append(f'<text x="0" y="{y + 12}" font-size="11">{html.escape(node[:34])}</text>')
        parts.append(
            f'<rect x="{label}" y="{y + 2}" width="{max(length, 1):.1f}" height="{row - 4}" fill="{colour}">'
            f"<title>{html.escape(node)}: {_number(score)}</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _row(node: NodeError, diagnosis: Diagnosis, excluded: frozenset[str]) -> str:
    classes = [
        name
        for name, flag in (
            ("jump", node.node == diagnosis.first_jump),
            ("range", node.out_of_fp16_range),
            ("excluded", node.node in excluded),
        )
        if flag
    ]
    cells = [
        _number(node.cosine),
        _number(node.snr_db, 4),
        _number(node.max_abs, 4),
        _number(node.max_rel, 4),
        _number(node.drop, 3),
        str(node.nonfinite_mismatch),
        str(node.fp16_overflow),
        _number(node.fp16_underflow, 3),
    ]
    attribute = f' class="{" ".join(classes)}"' if classes else ""
    return (
        f'<tr{attribute}><td class="name">{html.escape(node.node)}</td><td class="name">'
        f"{html.escape(node.op_type)}</td>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
    )


HEADERS = ("node", "op", "cosine", "SNR dB", "max_abs", "max_rel", "drop", "NaN/Inf mismatch", "> 65504", "underflow")


def render_html(diagnosis: Diagnosis) -> str:
    """The whole page, self-contained."""
    result = diagnosis.sensitivity
    excluded = frozenset(result.excluded) if result else frozenset()
    title = html.escape(f"{diagnosis.stem}: layer-wise diagnosis")
    facts = [
        ("precision", diagnosis.precision),
        ("reference", diagnosis.reference),
        ("candidate", f"{diagnosis.candidate}, simulated on onnxruntime"),
        ("emulation", diagnosis.emulation or "none: the precision-prepared graph as is"),
        (
            "inputs",
            f"{diagnosis.source}, {diagnosis.samples} samples in {diagnosis.batches} batches"
            + (" (stopped by the time budget)" if diagnosis.truncated else ""),
        ),
        ("first jump", diagnosis.first_jump or "none"),
        ("largest drop", diagnosis.largest_drop or "none"),
        ("outside FP16's range", ", ".join(diagnosis.fp16_out_of_range) or "none"),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        "<dl>" + "".join(f"<dt>{name}</dt><dd>{html.escape(value)}</dd>" for name, value in facts) + "</dl>",
        "<h2>Error along the graph</h2>",
        '<p class="legend"><span style="color:#d62728">■ first jump</span>'
        '<span style="color:#ff7f0e">■ outside FP16 range</span><span style="color:#1f77b4">■ node</span>'
        "<span>□ outlined: excluded</span> bar height: 1 - cosine, log scale</p>",
        error_chart(diagnosis, excluded),
    ]
    if result is not None:
        parts += [
            "<h2>Sensitivity</h2>",
            f"<p>{html.escape(result.method)}</p>" if result.method else "",
            sensitivity_chart(result),
            "<h3>Exclusions for the spec</h3>",
            f"<pre>{html.escape(exclusion_yaml(result.excluded))}</pre>" if result.excluded else "<p>none</p>",
        ]
    if diagnosis.fp16_keep_fp32_yaml:
        reasons = "".join(
            f"<li>{html.escape(node)}: {html.escape(why)}</li>" for node, why in diagnosis.fp16_keep_reasons.items()
        )
        parts += [
            "<h2>FP16 overflow</h2>",
            f"<p>The overflow guard, on these inputs, keeps in FP32:</p><ul>{reasons}</ul>",
            "<h3>Nodes to keep in FP32 for the spec</h3>",
            "<p>They replace the spec's <code>fp16.keep_fp32</code> list (or the guard's own choice), so they "
            "name the nodes the candidate keeps already too.</p>",
            f"<pre>{html.escape(diagnosis.fp16_keep_fp32_yaml)}</pre>",
        ]
    parts += [
        "<h2>Nodes</h2>",
        "<table><thead><tr>"
        + "".join(
            f'<th class="name">{name}</th>' if name in ("node", "op") else f"<th>{html.escape(name)}</th>"
            for name in HEADERS
        )
        + "</tr></thead><tbody>",
        *(_row(node, diagnosis, excluded) for node in diagnosis.nodes),
        "</tbody></table>",
        "</body></html>",
    ]
    return "\n".join(parts)
