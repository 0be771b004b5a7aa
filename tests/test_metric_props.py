"""The accuracy gate's comparison rules as properties, against oracles that share none of its code.

Oracles: exact rational arithmetic (``fractions.Fraction`` of each float64 value, rounded once at
the end), ``scipy.spatial.distance.cosine``, numpy's ``longdouble`` sums, and Python's own loops
for the arg-max rules. What is checked is README's "Accuracy gate": the metrics over the positions
finite in both, the NaN/Inf pattern, inclusive limits, top-1 and the task accuracy, the report.
Hand-computed examples live in tests/test_accuracy_metrics.py; these state what holds for any array.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from float_pairs import FLOATS, candidate_for, elements, finite_like
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial import distance

from trtforge.accuracy import metrics, tolerances
from trtforge.accuracy.gate import evaluate_outputs
from trtforge.accuracy.report import (
    AccuracyReport,
    CandidateInfo,
    DataInfo,
    OutputResult,
    ReferenceInfo,
    summary,
)
from trtforge.spec import Spec, Tolerance, load_spec

EPS = np.finfo(np.float64).eps
INTEGERS = (np.bool_, np.int8, np.uint8, np.int32, np.uint32, np.int64, np.uint64)
PRECISIONS = ("fp32", "fp16", "int8")

# ---------------------------------------------------------------- strategies


def _shapes(min_side: int = 0) -> st.SearchStrategy[tuple[int, ...]]:
    return hnp.array_shapes(min_dims=0, max_dims=3, min_side=min_side, max_side=5)


@st.composite
def float_pairs(draw: st.DrawFn, min_side: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A finite reference and a finite candidate of one shape and float dtype: independent, equal,
    slightly off, negated, scaled, half its signs flipped (sums that cancel), or all zeros."""
    dtype = draw(st.sampled_from(FLOATS))
    ref = draw(hnp.arrays(dtype, draw(_shapes(min_side)), elements=elements(dtype)))
    return ref, draw(candidate_for(ref))


@st.composite
def integer_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Integer or boolean outputs (class indices, masks, ids), each of any value its dtype holds."""
    dtype = draw(st.sampled_from(INTEGERS))
    shape = draw(_shapes())
    ref = draw(hnp.arrays(dtype, shape))
    if draw(st.booleans()):
        cand = draw(hnp.arrays(dtype, shape))
    else:  # mostly equal: a few values changed, by one (lost in a float64 cast past 2**53) or any
        cand = ref.copy()
        flat = cand.reshape(-1)
        for index in draw(st.lists(st.integers(0, max(flat.size - 1, 0)), max_size=3)) if flat.size else []:
            if dtype is np.bool_ or draw(st.booleans()):
                flat[index] = draw(hnp.from_dtype(np.dtype(dtype)))
            else:
                info = np.iinfo(dtype)
                flat[index] = int(flat[index]) - 1 if int(flat[index]) == info.max else int(flat[index]) + 1
    return ref, cand


def _tolerance_keys() -> st.SearchStrategy[dict[str, float]]:
    """A spec's "*" tolerance: any value each key may take (README "Keys"), each key set or not."""
    fraction = st.floats(0, 1)
    return st.fixed_dictionaries(
        {},
        optional={
            "max_abs": st.floats(0, 1e6),
            "mean_abs": st.floats(0, 1e6),
            "max_rel": st.floats(0, 1e6),
            "cosine_min": st.one_of(st.sampled_from([-1.0, 0.0, 1e-200, 0.99999, 1.0]), st.floats(-1, 1)),
            "snr_db_min": st.floats(-1e3, 1e3),
            "top1_min": fraction,
            "match_min": fraction,
        },
    )


# ---------------------------------------------------------------- oracles


def _exact(array: np.ndarray) -> list[Fraction]:
    """Each value as the rational number it is (float16/32 widen to float64 exactly)."""
    return [Fraction(value) for value in np.asarray(array, np.float64).ravel().tolist()]


def _rounded(value: Fraction) -> float:
    """The float64 nearest an exact value: inf past float64's largest."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _oracle_cosine(ref: list[Fraction], cand: list[Fraction]) -> float:
    if ref == cand:
        return 1.0
    dot = sum((r * c for r, c in zip(ref, cand, strict=True)), Fraction(0))
    ref_sq, cand_sq = sum(r * r for r in ref), sum(c * c for c in cand)
    if not ref_sq or not cand_sq:
        return 0.0  # trtforge's rule for one all-zero side: no direction to agree with
    return math.copysign(math.sqrt(_rounded(dot * dot / (ref_sq * cand_sq))), 1 if dot >= 0 else -1)


def _log10(value: Fraction) -> float:
    """log10 of a positive rational, to a few ulps at any magnitude (log10 of huge ints is exact-ish)."""
    return math.log10(value.numerator) - math.log10(value.denominator)


def _oracle_snr(ref: list[Fraction], cand: list[Fraction]) -> float:
    noise = sum(((c - r) ** 2 for r, c in zip(ref, cand, strict=True)), Fraction(0))
    signal = sum((r * r for r in ref), Fraction(0))
    if not noise:
        return math.inf
    if not signal:
        return -math.inf
    return 10.0 * (_log10(signal) - _log10(noise))


def _oracle_max_rel(ref: list[Fraction], cand: list[Fraction]) -> float:
    """README: ``|c - r| / max(|r|, 1e-3 max|r|)``, the floor at least ``REL_FLOOR_MIN`` (1e-12)."""
    if not ref:
        return 0.0
    floor = max(Fraction(metrics.REL_FLOOR_FRACTION) * max(abs(r) for r in ref), Fraction(metrics.REL_FLOOR_MIN))
    return _rounded(max(abs(c - r) / max(abs(r), floor) for r, c in zip(ref, cand, strict=True)))


def _close(value: float, oracle: float, rel: float, abs_: float = 0.0) -> bool:
    if math.isinf(oracle) or math.isinf(value):
        return value == oracle
    return abs(value - oracle) <= rel * abs(oracle) + abs_


def _first_argmax(row: Sequence[float]) -> int:
    """numpy's arg-max rule, spelt out: the first NaN if any, else the first of the largest values."""
    for index, value in enumerate(row):
        if math.isnan(value):
            return index
    largest = max(row)
    return next(index for index, value in enumerate(row) if value == largest)


# ---------------------------------------------------------------- the gate's verdict


@pytest.fixture(scope="module")
def base_spec(tmp_path_factory: pytest.TempPathFactory) -> Spec:
    folder = tmp_path_factory.mktemp("spec")
    (folder / "spec.yaml").write_text("name: props\nmodel: m.onnx\n")
    return load_spec(folder / "spec.yaml")


def _spec(base: Spec, precision: str, tolerance: Tolerance | None) -> Spec:
    limits = {"*": tolerance} if tolerance is not None else {}
    accuracy = base.accuracy.model_copy(update={"tolerances": limits})
    return base.model_copy(update={"precision": precision, "accuracy": accuracy})


def _outputs(spec: Spec, ref: np.ndarray, cand: np.ndarray) -> list[OutputResult]:
    """The gate's own judging of one output ``y`` (no model runs: the arrays are the outputs)."""
    heads: Any = SimpleNamespace(outputs=[SimpleNamespace(name="y")])  # what evaluate_outputs reads
    return evaluate_outputs(spec, heads, {"y": [ref]}, {"y": [cand]}, None)


def _passes(spec: Spec, ref: np.ndarray, cand: np.ndarray) -> bool:
    return all(out.passed for out in _outputs(spec, ref, cand))


# ---------------------------------------------------------------- 1. metrics against the oracles


@settings(max_examples=400)
@given(float_pairs())
def test_float_metrics_equal_exact_arithmetic(pair: tuple[np.ndarray, np.ndarray]) -> None:
    """Any finite float16/32/64 arrays of any shape: max_abs is the exactly rounded max |c - r|
    (float64 subtraction rounds once); the sums are within their summation error of the exact
    value; cosine is 1.0 exactly for equal outputs and only for them; inf only past float64's range."""
    ref, cand = pair
    exact_ref, exact_cand = _exact(ref), _exact(cand)
    n = len(exact_ref)
    diffs = [abs(c - r) for r, c in zip(exact_ref, exact_cand, strict=True)]
    assert metrics.max_abs(ref, cand) == (_rounded(max(diffs)) if n else 0.0)
    mean = _rounded(sum(diffs, Fraction(0)) / n) if n else 0.0
    assert _close(metrics.mean_abs(ref, cand), mean, rel=4 * (n + 2) * EPS)
    assert _close(metrics.max_rel(ref, cand), _oracle_max_rel(exact_ref, exact_cand), rel=8 * EPS, abs_=1e-300)
    cosine = metrics.cosine(ref, cand)
    assert -1.0 <= cosine <= 1.0
    assert (cosine == 1.0) == (exact_ref == exact_cand)  # -0.0 and 0.0 are one value
    assert _close(cosine, _oracle_cosine(exact_ref, exact_cand), rel=0.0, abs_=8 * (n + 4) * EPS)
    snr = _oracle_snr(exact_ref, exact_cand)
    assert _close(metrics.snr_db(ref, cand), snr, rel=1e-12, abs_=1e-9)


@settings(max_examples=150)
@given(
    st.sampled_from([np.float16, np.float32]),
    st.integers(1, 3000),
    st.floats(1e-6, 1.0),
    st.integers(0, 2**32 - 1),
)
def test_sums_of_large_outputs_match_longdouble_and_scipy(dtype: Any, size: int, error: float, seed: int) -> None:
    """Large float16/float32 outputs near the dtype's largest values (where float32's own sum of
    squares overflows): cosine against scipy and a longdouble sum, SNR and mean_abs against
    longdouble; float64 holds these squares, so only summation error separates them."""
    rng = np.random.default_rng(seed)
    peak = float(np.finfo(dtype).max)
    ref = (rng.uniform(-1, 1, size) * peak).astype(dtype)
    noise = rng.normal(0, error, size)
    cand = finite_like(lambda: ref.astype(np.float64) * (1 + noise), ref)
    long_ref, long_cand = ref.astype(np.longdouble), cand.astype(np.longdouble)
    norms = np.sqrt(np.sum(long_ref**2)) * np.sqrt(np.sum(long_cand**2))
    bound = 8 * (size + 4) * EPS
    assert abs(metrics.cosine(ref, cand) - float(np.sum(long_ref * long_cand) / norms)) <= bound
    if np.any(ref) and np.any(cand):
        assert (
            abs(metrics.cosine(ref, cand) - (1.0 - distance.cosine(ref.astype(np.float64), cand.astype(np.float64))))
            <= bound
        )
    noise = np.sum((long_cand - long_ref) ** 2)
    if noise:
        assert metrics.snr_db(ref, cand) == pytest.approx(float(10 * np.log10(np.sum(long_ref**2) / noise)), abs=1e-9)
    mean = float(np.mean(np.abs(long_cand - long_ref)))
    assert metrics.mean_abs(ref, cand) == pytest.approx(mean, rel=4 * (size + 2) * EPS)


@settings(max_examples=300)
@given(integer_pairs())
def test_integer_metrics_equal_exact_integer_arithmetic(pair: tuple[np.ndarray, np.ndarray]) -> None:
    """Integer and boolean outputs: ``match`` is the exact share of equal values, and max_abs the
    exact largest difference rounded once, however far past 2**53 the values are."""
    ref, cand = pair
    exact_ref = [int(value) for value in ref.ravel().tolist()]
    exact_cand = [int(value) for value in cand.ravel().tolist()]
    n = len(exact_ref)
    measured = metrics.compare(ref, cand)
    equal = sum(r == c for r, c in zip(exact_ref, exact_cand, strict=True))
    assert measured.match == (float(Fraction(equal, n)) if n else 1.0)
    diffs = [abs(c - r) for r, c in zip(exact_ref, exact_cand, strict=True)]
    assert measured.max_abs == (float(max(diffs)) if n else 0.0)
    assert measured.mean_abs == pytest.approx(float(Fraction(sum(diffs), n)) if n else 0.0, rel=4 * (n + 2) * EPS)
    assert (measured.max_abs == 0.0) == (exact_ref == exact_cand)
    assert measured.nonfinite is None and measured.top1 is None


# ---------------------------------------------------------------- 2. NaN, Inf and the verdict


SPECIALS = (math.nan, math.inf, -math.inf)


def _code(value: float) -> int:
    return 1 if math.isnan(value) else 2 if value == math.inf else 3 if value == -math.inf else 0


@st.composite
def nonfinite_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Finite arrays with NaN/+Inf/-Inf put at any positions of either, the same ones or not."""
    ref, cand = draw(float_pairs(min_side=1))
    ref, cand = ref.copy(), cand.copy()
    for array in (ref, cand):
        flat = array.reshape(-1)
        for index in draw(st.lists(st.integers(0, flat.size - 1), max_size=4)):
            flat[index] = draw(st.sampled_from(SPECIALS))
    if draw(st.booleans()):  # the candidate keeps the reference's specials where it has them
        specials = ~np.isfinite(ref)
        cand[specials] = ref[specials]
    return ref, cand


@settings(max_examples=300)
@given(nonfinite_pairs(), st.sampled_from(PRECISIONS))
def test_nonfinite_values_are_judged_by_their_pattern(pair: tuple[np.ndarray, np.ndarray], precision: str) -> None:
    """Wherever NaN, +Inf and -Inf sit: the counts are those of a plain loop, the metrics those of
    the positions finite in both, and the pattern check fails exactly when a position differs
    (a NaN or Inf where the reference is finite, too). Identical infinities and NaNs agree."""
    ref, cand = pair
    ref_values, cand_values = ref.astype(np.float64).ravel().tolist(), cand.astype(np.float64).ravel().tolist()
    codes = [(_code(r), _code(c)) for r, c in zip(ref_values, cand_values, strict=True)]
    measured = metrics.compare(ref, cand)
    if all(code == (0, 0) for code in codes):
        assert measured.nonfinite_mismatch is None
        return
    mismatch = sum(r != c for r, c in codes)
    assert measured.nonfinite == sum(r != 0 for r, _ in codes)
    assert measured.nonfinite_mismatch == mismatch
    assert measured.nonfinite_added == sum(r == 0 and c != 0 for r, c in codes)
    finite = [index for index, code in enumerate(codes) if code == (0, 0)]
    finite_ref, finite_cand = np.array([ref_values[i] for i in finite]), np.array([cand_values[i] for i in finite])
    assert measured.max_abs == metrics.max_abs(finite_ref, finite_cand)
    assert measured.cosine == metrics.cosine(finite_ref, finite_cand)
    checks = tolerances.evaluate("y", measured, Tolerance(max_abs=1e308, cosine_min=-1.0))
    pattern = [check for check in checks if check.limit_key == tolerances.PATTERN_KEY]
    assert [check.passed for check in pattern] == [mismatch == 0]


@settings(max_examples=300)
@given(st.one_of(nonfinite_pairs(), float_pairs(), integer_pairs()), st.sampled_from(PRECISIONS), _tolerance_keys())
def test_a_bit_identical_candidate_always_passes(
    base_spec: Spec, pair: tuple[np.ndarray, np.ndarray], precision: str, keys: dict[str, float]
) -> None:
    """Any output (float, integer, boolean, with NaN/Inf), any precision, any limits a spec may set:
    the reference's own arrays pass every check (``cosine_min: 1.0``, ``match_min: 1`` too)."""
    ref = pair[0]
    assert _passes(_spec(base_spec, precision, Tolerance(**keys)), ref, ref.copy())


@settings(max_examples=300)
@given(float_pairs(min_side=1), st.data(), st.sampled_from(["max_abs", "max_rel", "nan", "inf"]))
def test_one_value_beyond_the_limit_anywhere_fails(
    base_spec: Spec, pair: tuple[np.ndarray, np.ndarray], data: st.DataObject, how: str
) -> None:
    """A bit-identical candidate but for one value, anywhere: off by more than ``max_abs`` or
    ``max_rel`` allows, or NaN or +-Inf where the reference is finite, fails the gate."""
    ref = pair[0].astype(np.float64)
    cand = ref.copy()
    index = data.draw(st.integers(0, ref.size - 1))
    flat = cand.reshape(-1)
    limit = data.draw(st.floats(0, 1e3))
    if how in ("nan", "inf"):
        flat[index] = math.nan if how == "nan" else data.draw(st.sampled_from([math.inf, -math.inf]))
        tolerance = Tolerance(cosine_min=-1.0)
    else:
        step = data.draw(st.floats(1.0, 1e3)) * (limit + 1e-300)
        if how == "max_rel":
            step *= max(abs(float(ref.reshape(-1)[index])), metrics.rel_floor(ref))
        flat[index] = flat[index] + data.draw(st.sampled_from([step, -step]))
        assume(math.isfinite(flat[index]))
        exact_step = abs(Fraction(float(flat[index])) - Fraction(float(ref.reshape(-1)[index])))
        denominator = Fraction(1)
        if how == "max_rel":
            floor = metrics.rel_floor(ref)
            denominator = max(abs(Fraction(float(ref.reshape(-1)[index]))), Fraction(floor))
        # beyond the limit by more than the float64 metric's own rounding (a few ulps): the gate
        # measures in float64, and an excess below half an ulp of the limit rounds onto it
        assume(exact_step / denominator > Fraction(limit) * (1 + Fraction(8 * EPS)))
        tolerance = Tolerance(**{how: limit, "cosine_min": -1.0})
    assert not _passes(_spec(base_spec, "fp32", tolerance), ref, cand)


# ---------------------------------------------------------------- 3. monotone verdicts


@settings(max_examples=300)
@given(float_pairs(min_side=1), st.floats(0, 1), _tolerance_keys(), st.sampled_from(PRECISIONS), st.booleans())
def test_a_closer_candidate_never_turns_pass_into_fail(
    base_spec: Spec,
    pair: tuple[np.ndarray, np.ndarray],
    shrink: float,
    keys: dict[str, float],
    precision: str,
    classifier: bool,
) -> None:
    """``c' = r + t (c - r)`` with t in [0, 1] is at least as close as ``c`` by every metric, and
    keeps each row's arg-max where ``c`` agreed with ``r`` on it: where ``c`` passes, ``c'`` does too."""
    ref: np.ndarray = pair[0].astype(np.float64).reshape(-1)
    cand: np.ndarray = pair[1].astype(np.float64).reshape(-1)
    if classifier and ref.size % 2 == 0:  # [N, 2]: top1_min applies
        ref, cand = ref.reshape(-1, 2), cand.reshape(-1, 2)
    with np.errstate(all="ignore"):
        closer = ref + shrink * (cand - ref)
    assume(np.isfinite(closer).all())
    spec = _spec(base_spec, precision, Tolerance(**keys))
    if _passes(spec, ref, cand):
        assert _passes(spec, ref, closer)


#: how far each limit moves (a share of its room): cosine_min 1.0 by 1e-5 is 0.99998
MOVES = st.sampled_from([0.0, 1e-5, 0.5, 1.0])


@settings(max_examples=200)
@given(
    float_pairs(min_side=2),
    _tolerance_keys(),
    st.fixed_dictionaries({key: MOVES for key in tolerances.LIMITS}),
    st.sampled_from(PRECISIONS),
    st.booleans(),
)
@example(
    pair=(np.array([1.0, 2.0, 3.0, 4.0], np.float32), np.array([2.0, 4.0, 6.0, 8.0], np.float32)),
    tight={"cosine_min": 1.0},
    moves=dict.fromkeys(tolerances.LIMITS, 1e-5),
    precision="fp32",
    classifier=False,
)
def test_loosening_a_limit_never_turns_pass_into_fail(
    base_spec: Spec,
    pair: tuple[np.ndarray, np.ndarray],
    tight: dict[str, float],
    moves: dict[str, float],
    precision: str,
    classifier: bool,
) -> None:
    """Raise an upper bound, lower a lower bound (cosine_min 1.0 to 0.99998 included, which brings
    an implied SNR): a candidate that passed the tighter limits passes the looser ones. The example:
    a candidate at twice the reference (cosine rounds to 1.0) passed cosine_min 1.0, not 0.99998."""
    ref, cand = pair
    if classifier and ref.size % 2 == 0:  # [N, 2]: top1_min applies
        ref, cand = ref.reshape(-1, 2), cand.reshape(-1, 2)
    loose = {}
    for key, value in tight.items():
        if tolerances.LIMITS[key][1] == "max":
            loose[key] = value + moves[key] * 1e3
        elif key == "snr_db_min":
            loose[key] = value - moves[key] * 1e3
        else:  # the other lower bounds: toward their least (-1 for cosine_min, 0 for shares)
            least = -1.0 if key == "cosine_min" else 0.0
            loose[key] = value - moves[key] * (value - least)
    if _passes(_spec(base_spec, precision, Tolerance(**tight)), ref, cand):
        assert _passes(_spec(base_spec, precision, Tolerance(**loose)), ref, cand)


# ---------------------------------------------------------------- 4. top-1 and task accuracy


#: few distinct values, so that rows tie, plus NaN and both infinities
LOGITS = st.sampled_from([0.0, -0.0, 1.0, 2.0, -1.0, math.inf, -math.inf, math.nan])


@st.composite
def logit_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dtype = draw(st.sampled_from(FLOATS))
    rows, classes = draw(st.integers(0, 8)), draw(st.integers(2, 5))
    ref = draw(hnp.arrays(dtype, (rows, classes), elements=LOGITS))
    cand = draw(st.one_of(st.just(ref.copy()), hnp.arrays(dtype, (rows, classes), elements=LOGITS)))
    labels = draw(hnp.arrays(np.int64, (rows,), elements=st.integers(0, classes - 1)))
    return ref, cand, labels


@settings(max_examples=400)
@given(logit_pairs())
def test_top1_and_task_accuracy_follow_the_first_index_rule(pair: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """The arg-max is numpy's: the first of the largest values on a tie, the first NaN where a row
    has one (README "Metrics per output"); top-1 is the share of rows whose arg-max agree (1.0 for
    no rows), the task accuracy the share whose arg-max is the label (0.0 for no rows)."""
    ref, cand, labels = pair
    ref_top = [_first_argmax(row) for row in ref.astype(np.float64).tolist()]
    cand_top = [_first_argmax(row) for row in cand.astype(np.float64).tolist()]
    rows = len(ref_top)
    agree = sum(r == c for r, c in zip(ref_top, cand_top, strict=True))
    assert metrics.top1_agreement(ref, cand) == (float(Fraction(agree, rows)) if rows else 1.0)
    assert metrics.compare(ref, cand).top1 == metrics.top1_agreement(ref, cand)
    correct = sum(top == label for top, label in zip(cand_top, labels.tolist(), strict=True))
    assert metrics.task_accuracy(cand, labels) == (float(Fraction(correct, rows)) if rows else 0.0)
    if np.array_equal(ref, cand, equal_nan=True):
        assert metrics.top1_agreement(ref, cand) == 1.0


# ---------------------------------------------------------------- 5. the report


def _strict_json(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON (RFC 8259)")

    return json.loads(text, parse_constant=refuse)


@settings(max_examples=150)
@given(st.one_of(nonfinite_pairs(), float_pairs(), integer_pairs()), st.sampled_from(PRECISIONS), _tolerance_keys())
def test_the_report_is_json_and_reads_back_as_itself(
    base_spec: Spec, pair: tuple[np.ndarray, np.ndarray], precision: str, keys: dict[str, float]
) -> None:
    """Whatever the outputs hold (NaN, Inf, no values), the report is RFC 8259 JSON (a NaN or
    infinite metric is the string "nan", "inf" or "-inf"), reads back as the same report, writes
    the same bytes again, and its manifest summary is JSON too; its verdict is that of the checks."""
    ref, cand = pair
    outputs = _outputs(_spec(base_spec, precision, Tolerance(**keys)), ref, cand)
    failures = [check.message for out in outputs for check in out.checks if not check.passed]
    report = AccuracyReport(
        name="props",
        precision=precision,
        stem=f"props-{precision}",
        engine=None,
        passed=not failures,
        candidate=CandidateInfo(kind="simulated", runner="test", model=None, model_sha256=None, reason="test"),
        reference=ReferenceInfo(runner="test", model="m.onnx", model_sha256="0" * 64),
        data=DataInfo(source="random", files=0, samples=1, dropped=0, batches=1, labels=None, seed=0),
        outputs=outputs,
        failures=failures,
        created_utc="2026-01-01T00:00:00+00:00",
        seconds=0.0,
    )
    text = report.to_json()
    document = _strict_json(text)
    again = AccuracyReport.model_validate(document)
    assert again == report and again.to_json() == text
    _strict_json(json.dumps(summary(report, "x.accuracy.json")))
    measured = metrics.compare(ref, cand) if ref.size else None
    for name, value in document["outputs"][0]["metrics"].items():
        exact = getattr(measured, name)
        if isinstance(value, str):
            assert value == ("nan" if math.isnan(exact) else "inf" if exact > 0 else "-inf")
        else:
            assert value == exact
    assert document["passed"] == all(check["passed"] for out in document["outputs"] for check in out["checks"])
