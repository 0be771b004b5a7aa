"""Which limits apply to which output, and whether a measurement meets them: pure rules.

Resolution, most specific last (each key set at a later level wins, unset keys are inherited):
per-precision defaults, then the spec's ``"*"`` entry, then the spec's entry for the output name.
``top1_min`` applies only to classifier outputs (float ``[N, C]``). A ``cosine_min`` without an
``snr_db_min`` brings the SNR it implies (``implied_snr_db``): cosine cannot see a wrong scale.
An integer or boolean output (class indices, masks) is judged by ``match_min`` (the share of
equal values) instead of cosine, SNR and top-1; ``match_min`` applies to such outputs only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from trtforge.errors import SpecError, did_you_mean
from trtforge.spec import Spec, Tolerance

if TYPE_CHECKING:  # metrics imports numpy: a gate that runs nothing must not pay for it
    from trtforge.accuracy.metrics import OutputMetrics

#: Defaults when a spec sets none (README "Accuracy gate"). Polygraphy's 1e-5 fails correct FP16
#: engines, so the limits follow what each precision can honestly deliver.
DEFAULT_TOLERANCES: Mapping[str, Tolerance] = {
    "fp32": Tolerance(cosine_min=0.99999, match_min=1.0),
    "fp16": Tolerance(cosine_min=0.999, match_min=0.99),
    "int8": Tolerance(cosine_min=0.98, top1_min=0.95, match_min=0.95),
}
#: the limits that judge float values (cosine and SNR of class indices or masks mean nothing)
VALUE_LIMITS = ("cosine_min", "snr_db_min", "top1_min")

#: tolerance key -> (metric it limits, whether the limit is an upper or a lower bound)
LIMITS: Mapping[str, tuple[str, Literal["max", "min"]]] = {
    "max_abs": ("max_abs", "max"),
    "mean_abs": ("mean_abs", "max"),
    "max_rel": ("max_rel", "max"),
    "cosine_min": ("cosine", "min"),
    "snr_db_min": ("snr_db", "min"),
    "top1_min": ("top1", "min"),
    "match_min": ("match", "min"),
}

WILDCARD = "*"
#: The check every output with NaN/Inf gets: the pattern must match exactly (not a spec key).
PATTERN_KEY = "nonfinite_pattern"
#: The check an output fails whose candidate arrays have another shape than the reference's (not a spec key).
SHAPE_KEY = "shape"


@dataclass(frozen=True)
class Check:
    """One limit applied to one output's measurement."""

    output: str
    limit_key: str
    metric: str
    bound: Literal["max", "min"]
    value: float
    limit: float
    passed: bool
    detail: str = ""  # SHAPE_KEY: the first batch's shapes, said

    @property
    def message(self) -> str:
        if self.limit_key == PATTERN_KEY and not self.passed:
            return (
                f"output '{self.output}': NaN/Inf pattern differs from the reference's at {self.value:g} "
                "positions (NaN, +Inf and -Inf must be where the reference has them)"
            )
        if self.limit_key == SHAPE_KEY:
            return f"{self.detail}: not compared (batches of another shape: {self.value:g})"
        relation = ("<=" if self.passed else ">") if self.bound == "max" else (">=" if self.passed else "<")
        value, limit = compared_values(self.value, self.limit)
        return f"output '{self.output}': {self.metric} {value} {relation} {self.limit_key} {limit}"


def compared_values(value: float, limit: float) -> tuple[str, str]:
    """A value and its limit as a message writes them: short, with all the digits a limit is written
    with (cosine_min 0.9999999 is not 1), and every digit where the short forms would read the
    same although the numbers differ ("cosine 1 < cosine_min 1"). Pure."""
    shown = format_value(value), f"{limit:.10g}"
    if shown[0] == shown[1] and value != limit:
        return repr(float(value)), repr(float(limit))
    return shown


def format_value(value: float) -> str:
    """Short, exact enough for a log line; ``nan``/``inf`` spelled out."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.8g}"


def implied_snr_db(cosine_min: float) -> float | None:
    """The SNR a cosine of ``cosine_min`` gives when the error is orthogonal to the signal
    (cos² = S / (S + N)): 27.0 dB for 0.999, 13.8 dB for 0.98.

    Cosine is blind to scale: an FP16 output at 0.66x the reference (a weight clamped to 65504)
    has cosine 1.0. Its SNR is 9.3 dB. Holding the SNR to what the cosine limit implies fails
    exactly the errors the cosine cannot see, and nothing an orthogonal error of the allowed size
    gives. None for a limit of 1 (no error allowed: no finite SNR) or <= 0 (no bound). Pure.

    As ``20 log10(c) - 10 log10(1 - c²)``: ``c²`` vanishes for a limit below 1.5e-162, and a spec's
    ``cosine_min: 1e-200`` (a valid one) stopped the gate with a math domain error."""
    if not 0.0 < cosine_min < 1.0:
        return None
    return 20.0 * math.log10(cosine_min) - 10.0 * math.log10(1.0 - cosine_min**2)


def resolve(
    output: str, precision: str, tolerances: Mapping[str, Tolerance], classifier: bool, exact: bool = False
) -> Tolerance:
    """The limits for ``output`` (see the module docstring for the order); ``exact``: an integer or
    boolean output."""
    merged: dict[str, float] = {}
    for layer in (DEFAULT_TOLERANCES[precision], tolerances.get(WILDCARD), tolerances.get(output)):
        if layer is not None:
            merged.update(layer.model_dump(exclude_none=True))
    if not classifier:
        merged.pop("top1_min", None)
    if exact:
        return Tolerance(**{key: value for key, value in merged.items() if key not in VALUE_LIMITS})
    merged.pop("match_min", None)
    implied = implied_snr_db(merged["cosine_min"]) if "cosine_min" in merged else None
    if implied is not None and "snr_db_min" not in merged:
        merged["snr_db_min"] = round(implied, 2)
    return Tolerance(**merged)


def evaluate(output: str, metrics: OutputMetrics, tolerance: Tolerance) -> list[Check]:
    """Every limit set in ``tolerance`` checked against ``metrics``; NaN never passes. An output
    with NaN/Inf on either side also gets the pattern check: no position may differ."""
    measured = metrics.as_dict()
    checks = []
    for key, (metric, bound) in LIMITS.items():
        limit = getattr(tolerance, key)
        value = measured[metric]
        if limit is None or value is None:
            continue
        ok = value <= limit if bound == "max" else value >= limit
        checks.append(Check(output, key, metric, bound, float(value), float(limit), bool(ok and not math.isnan(value))))
    if metrics.nonfinite_mismatch is not None:
        mismatch = float(metrics.nonfinite_mismatch)
        checks.append(Check(output, PATTERN_KEY, "nonfinite_mismatch", "max", mismatch, 0.0, mismatch == 0))
    return checks


def shape_check(output: str, batches: int, detail: str) -> Check:
    """The failed check of an output whose candidate arrays have another shape than the
    reference's in ``batches`` batches (``detail``: the first one's shapes, said)."""
    return Check(output, SHAPE_KEY, "shape_mismatch", "max", float(batches), 0.0, False, detail)


def check_names(
    tolerances: Mapping[str, Tolerance],
    outputs: Sequence[str],
    classifiers: Sequence[str],
    floats: Sequence[str],
    where: Callable[[str], str],
) -> None:
    """Spec tolerance keys must name real outputs; ``top1_min`` by name needs a classifier output,
    and ``match_min`` by name an integer or boolean one (``floats``: the float outputs)."""
    for name, tolerance in tolerances.items():
        if name == WILDCARD:
            continue
        if name not in outputs:
            raise SpecError(
                f"{where(name)}: accuracy.tolerances names output '{name}', which the model does not have"
                f"{did_you_mean(name, outputs)} (outputs: {', '.join(outputs)}; '*' means all)"
            )
        if tolerance.top1_min is not None and name not in classifiers:
            raise SpecError(
                f"{where(name)}: top1_min for output '{name}', which is not a classifier output "
                "(float [N, C]); remove top1_min or set it on a classifier output"
            )
        if tolerance.match_min is not None and name in floats:
            raise SpecError(
                f"{where(name)}: match_min for output '{name}', which is a float output: the share of equal "
                "values judges integer and boolean outputs only; judge it with cosine_min, snr_db_min or max_abs"
            )


def check_spec_names(spec: Spec, outputs: Sequence[str], classifiers: Sequence[str], floats: Sequence[str]) -> None:
    """:func:`check_names` for a spec's tolerances before anything runs; ``classifiers``: the
    outputs the graph's declared types and shapes leave possibly classifiers (the gate judges the
    others once their arrays are known): the gate's plan checks them, and a build with the gate
    off does too."""
    check_names(
        spec.accuracy.tolerances,
        outputs,
        classifiers,
        floats,
        lambda name: spec.origin.where("accuracy", "tolerances", name),
    )
