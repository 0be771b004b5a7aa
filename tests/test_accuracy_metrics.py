"""Each gate metric against values computed by hand, and the tolerance rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trtforge.accuracy import metrics, tolerances
from trtforge.errors import SpecError
from trtforge.spec import Tolerance

REF = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
CAND = np.array([1.0, 2.0, 3.0, 5.0], dtype=np.float32)  # one value off by 1


def test_max_abs_and_mean_abs() -> None:
    assert metrics.max_abs(REF, CAND) == 1.0
    assert metrics.mean_abs(REF, CAND) == 0.25  # (0 + 0 + 0 + 1) / 4


def test_max_rel_divides_by_the_reference() -> None:
    # |5 - 4| / 4; the floor (1e-3 * 4) is far below every |reference| value
    assert metrics.max_rel(REF, CAND) == pytest.approx(0.25)


def test_max_rel_floor_for_tiny_reference_values() -> None:
    ref = np.array([0.0, 10.0])
    cand = np.array([0.001, 10.0])
    assert metrics.rel_floor(ref) == pytest.approx(0.01)  # 1e-3 * max|ref|
    assert metrics.max_rel(ref, cand) == pytest.approx(0.1)  # 0.001 / 0.01, not 0.001 / 0
    assert metrics.max_rel(ref, cand, floor=0.001) == pytest.approx(1.0)
    assert math.isfinite(metrics.max_rel(np.zeros(3), np.ones(3)))


def test_cosine() -> None:
    # dot = 1 + 4 + 9 + 20 = 34; |ref| = sqrt(30), |cand| = sqrt(39)
    assert metrics.cosine(REF, CAND) == pytest.approx(34 / math.sqrt(30 * 39))
    assert metrics.cosine(REF, REF) == pytest.approx(1.0)
    assert metrics.cosine(REF, -REF) == pytest.approx(-1.0)
    assert metrics.cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert metrics.cosine(np.zeros(3), np.ones(3)) == 0.0


def test_cosine_of_equal_arrays_is_exactly_one() -> None:
    """dot / norms rounds to 0.9999999999999999 for about one array in five: ``cosine_min: 1.0``
    (bit-identical) failed identical outputs, saying "cosine 1 < cosine_min 1"."""
    rng = np.random.default_rng(0)
    arrays = [np.maximum(rng.integers(-400, 400, (64, 37)) / 4, 0).astype(np.float32) for _ in range(200)]
    assert all(metrics.cosine(array, array.copy()) == 1.0 for array in arrays)
    assert all(-1.0 <= metrics.cosine(array, -array) <= 1.0 for array in arrays)
    (check,) = tolerances.evaluate("y", metrics.compare(arrays[0], arrays[0]), Tolerance(cosine_min=1.0, snr_db_min=0))[
        :1
    ]
    assert check.passed


def test_a_failure_message_tells_the_value_from_its_limit() -> None:
    measured = metrics.OutputMetrics(max_abs=0.0, mean_abs=0.0, max_rel=0.0, cosine=0.9999999999999999, snr_db=1.0)
    (check,) = tolerances.evaluate("y", measured, Tolerance(cosine_min=1.0))
    assert check.message == "output 'y': cosine 0.9999999999999999 < cosine_min 1.0"


def test_snr_db() -> None:
    # signal = 1 + 4 + 9 + 16 = 30, noise = 1: 10 log10(30)
    assert metrics.snr_db(REF, CAND) == pytest.approx(10 * math.log10(30))
    assert metrics.snr_db(REF, REF) == math.inf
    assert metrics.snr_db(np.zeros(2), np.ones(2)) == -math.inf


def test_nan_in_the_candidate_fails_the_pattern_check() -> None:
    """A NaN where the reference is finite: the finite values are measured, the pattern fails."""
    bad = CAND.copy()
    bad[0] = np.nan
    measured = metrics.compare(REF, bad)
    assert measured.max_abs == 1.0 and measured.nonfinite == 0 and measured.nonfinite_mismatch == 1
    checks = tolerances.evaluate("y", measured, Tolerance(cosine_min=0.5, max_abs=10.0))
    failed = [check for check in checks if not check.passed]
    assert [check.limit_key for check in failed] == [tolerances.PATTERN_KEY]
    assert "NaN/Inf pattern differs from the reference's at 1 positions" in failed[0].message


def test_nan_metric_never_passes() -> None:
    measured = metrics.OutputMetrics(math.nan, math.nan, math.nan, math.nan, math.nan)
    checks = tolerances.evaluate("y", measured, Tolerance(cosine_min=0.5, max_abs=10.0))
    assert checks and not any(check.passed for check in checks)
    assert "nan" in checks[0].message


def test_top1_agreement_and_task_accuracy() -> None:
    ref = np.array([[1.0, 2.0], [3.0, 1.0], [0.0, 5.0]])
    cand = np.array([[2.0, 1.0], [3.0, 1.0], [0.0, 5.0]])  # first row flips its class
    assert metrics.top1_agreement(ref, cand) == pytest.approx(2 / 3)
    labels = np.array([1, 0, 0])  # reference predicts [1, 0, 1]
    assert metrics.task_accuracy(ref, labels) == pytest.approx(2 / 3)
    assert metrics.task_accuracy(cand, labels) == pytest.approx(1 / 3)


def test_top1_of_no_rows_is_full_agreement() -> None:
    """A batch of zero rows has no class that differs: nothing to fail, as ``match`` of no values."""
    empty = np.zeros((0, 10), np.float32)
    assert metrics.top1_agreement(empty, empty) == 1.0
    assert metrics.compare(empty, empty, classifier=True).top1 == 1.0


def test_integer_values_are_compared_as_they_are_not_as_float64() -> None:
    """2**53 and 2**53 + 1 are one float64: ids and hashes past it differ all the same."""
    reference = np.array([2**53, 7], np.int64)
    candidate = np.array([2**53 + 1, 7], np.int64)
    assert metrics.match_fraction(reference, candidate) == 0.5
    assert metrics.compare(reference, candidate).match == 0.5


def test_classifier_outputs() -> None:
    assert metrics.is_classifier(np.zeros((4, 10), np.float32))
    assert metrics.is_classifier(np.zeros((4, 2), np.float16))
    assert not metrics.is_classifier(np.zeros((4, 1), np.float32))
    assert not metrics.is_classifier(np.zeros((4, 10), np.int64))
    assert not metrics.is_classifier(np.zeros((4, 10, 3), np.float32))
    measured = metrics.compare(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32))
    assert measured.top1 == 1.0
    assert metrics.compare(REF, CAND).top1 is None


def test_compare_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        metrics.compare(np.zeros((2, 3)), np.zeros((3, 2)))


# ---------------------------------------------------------------- tolerances


def test_default_tolerances_per_precision() -> None:
    """Each cosine limit brings the SNR it implies for an error orthogonal to the signal."""
    assert tolerances.resolve("y", "fp32", {}, classifier=False) == Tolerance(cosine_min=0.99999, snr_db_min=46.99)
    assert tolerances.resolve("y", "fp16", {}, classifier=True) == Tolerance(cosine_min=0.999, snr_db_min=26.98)
    assert tolerances.resolve("y", "int8", {}, classifier=True) == Tolerance(
        cosine_min=0.98, snr_db_min=13.85, top1_min=0.95
    )
    assert tolerances.resolve("y", "int8", {}, classifier=False) == Tolerance(cosine_min=0.98, snr_db_min=13.85)
    # a spec's own cosine limit brings its own SNR; an explicit snr_db_min wins
    looser = {"*": Tolerance(cosine_min=0.99)}
    assert tolerances.resolve("y", "fp16", looser, classifier=False).snr_db_min == 16.92
    explicit = {"*": Tolerance(snr_db_min=5.0)}
    assert tolerances.resolve("y", "fp16", explicit, classifier=False).snr_db_min == 5.0
    assert tolerances.implied_snr_db(1.0) is None and tolerances.implied_snr_db(0.0) is None


def test_the_implied_snr_fails_a_wrong_scale_that_cosine_passes() -> None:
    """An FP16 output at 0.656x the reference (a weight of 1e5 clamped to 65504 by the converter):
    cosine 1.0, SNR 9.3 dB; an orthogonal error within the cosine limit passes both."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=4096)
    limits = tolerances.resolve("y", "fp16", {}, classifier=False)
    scaled = tolerances.evaluate("y", metrics.compare(reference, reference * 0.656), limits)
    assert [(c.limit_key, c.passed) for c in scaled] == [("cosine_min", True), ("snr_db_min", False)]
    noise = rng.normal(size=4096)
    noise -= reference * (noise @ reference) / (reference @ reference)  # orthogonal to the signal
    noise *= 0.03 * np.linalg.norm(reference) / np.linalg.norm(noise)  # cosine 0.99955 > 0.999
    orthogonal = tolerances.evaluate("y", metrics.compare(reference, reference + noise), limits)
    assert all(check.passed for check in orthogonal)


def test_spec_tolerances_most_specific_wins_key_by_key() -> None:
    spec_tolerances = {
        "*": Tolerance(cosine_min=0.9, snr_db_min=20),
        "logits": Tolerance(cosine_min=0.95, max_abs=0.05, top1_min=0.99),
    }
    logits = tolerances.resolve("logits", "int8", spec_tolerances, classifier=True)
    assert logits == Tolerance(cosine_min=0.95, snr_db_min=20, max_abs=0.05, top1_min=0.99)
    other = tolerances.resolve("boxes", "int8", spec_tolerances, classifier=False)
    assert other == Tolerance(cosine_min=0.9, snr_db_min=20)  # default top1 dropped: not a classifier


def test_evaluate_names_metric_value_and_limit() -> None:
    measured = metrics.OutputMetrics(max_abs=0.2, mean_abs=0.01, max_rel=0.5, cosine=0.97, snr_db=30.0, top1=0.9)
    limits = Tolerance(max_abs=0.1, cosine_min=0.98, snr_db_min=25, top1_min=0.95)
    checks = {check.limit_key: check for check in tolerances.evaluate("logits", measured, limits)}
    assert set(checks) == {"max_abs", "cosine_min", "snr_db_min", "top1_min"}
    assert not checks["max_abs"].passed
    assert checks["max_abs"].message == "output 'logits': max_abs 0.2 > max_abs 0.1"
    assert checks["cosine_min"].message == "output 'logits': cosine 0.97 < cosine_min 0.98"
    assert checks["snr_db_min"].passed
    assert checks["snr_db_min"].message == "output 'logits': snr_db 30 >= snr_db_min 25"
    # a limit is said with its digits: cosine_min 0.9999999 read as "cosine 0.99995274 < cosine_min 1"
    (tight,) = tolerances.evaluate("logits", measured, Tolerance(cosine_min=0.9999999))
    assert tight.message == "output 'logits': cosine 0.97 < cosine_min 0.9999999"
    assert not checks["top1_min"].passed


def test_limits_are_inclusive() -> None:
    measured = metrics.OutputMetrics(max_abs=0.1, mean_abs=0.0, max_rel=0.0, cosine=0.98, snr_db=1.0)
    checks = tolerances.evaluate("y", measured, Tolerance(max_abs=0.1, cosine_min=0.98))
    assert all(check.passed for check in checks)


def test_check_names_unknown_output_with_did_you_mean() -> None:
    with pytest.raises(SpecError, match=r"'logit'.*did you mean 'logits'") as info:
        tolerances.check_names({"logit": Tolerance(max_abs=1)}, ["logits"], ["logits"], [], lambda n: "spec.yaml:12")
    assert str(info.value).startswith("spec.yaml:12:")
    tolerances.check_names({"*": Tolerance(max_abs=1)}, ["logits"], [], [], lambda n: "x")


def test_check_names_top1_needs_a_classifier_output() -> None:
    with pytest.raises(SpecError, match="top1_min for output 'boxes'"):
        tolerances.check_names({"boxes": Tolerance(top1_min=0.9)}, ["boxes"], [], [], lambda n: "spec.yaml:3")
    # through "*", top1_min simply does not apply to non-classifier outputs
    tolerances.check_names({"*": Tolerance(top1_min=0.9)}, ["boxes"], [], [], lambda n: "x")
    assert tolerances.resolve("boxes", "fp16", {"*": Tolerance(top1_min=0.9)}, classifier=False).top1_min is None


def test_check_names_match_min_needs_an_integer_or_boolean_output() -> None:
    """``match_min`` set by name on a float output was accepted and never applied: refused, saying
    what judges a float output; through "*" it applies to the integer and boolean outputs only."""
    with pytest.raises(SpecError, match="match_min for output 'y', which is a float output") as info:
        tolerances.check_names({"y": Tolerance(match_min=0.9)}, ["y", "ids"], [], ["y"], lambda n: "spec.yaml:7")
    assert str(info.value).startswith("spec.yaml:7:") and "cosine_min" in str(info.value)
    tolerances.check_names({"ids": Tolerance(match_min=0.9)}, ["y", "ids"], [], ["y"], lambda n: "x")
    tolerances.check_names({"*": Tolerance(match_min=0.9)}, ["y", "ids"], [], ["y"], lambda n: "x")


def test_format_value() -> None:
    assert tolerances.format_value(0.9999999760751828) == "0.99999998"
    assert tolerances.format_value(math.inf) == "inf"
    assert tolerances.format_value(math.nan) == "nan"


def test_cosine_min_one_fails_a_scaled_candidate() -> None:
    """``c = 2 r``: dot / norms is 1.0 exactly, and ``cosine_min: 1.0`` brings no SNR limit, so the
    gate passed it at ``cosine_min: 1.0`` (README: bit-identical) and failed it at the looser 0.99999."""
    reference = np.array([1.0, 2.0, 3.0], np.float32)
    measured = metrics.compare(reference, reference * 2)
    assert measured.cosine == metrics.BELOW_ONE
    strict = tolerances.resolve("y", "fp32", {"*": Tolerance(cosine_min=1.0)}, classifier=False)
    assert not all(check.passed for check in tolerances.evaluate("y", measured, strict))
    assert metrics.cosine(reference, reference.copy()) == 1.0


def test_float64_outputs_near_the_ends_of_its_range() -> None:
    """float64 squares overflow past 1.3e154 and vanish below 1e-162: a candidate 1.5x the reference
    got cosine NaN at 1e200, and at 1e-200 cosine 0 and SNR inf (passing any snr_db_min); values of
    +-1e308 got a max_rel and mean_abs of inf (their difference overflows, their ratio is 2)."""
    for scale in (1e200, 1e-200):
        reference = np.array([1.0, 2.0]) * scale
        assert metrics.cosine(reference, reference * 1.5) == metrics.BELOW_ONE
        assert metrics.snr_db(reference, reference * 1.5) == pytest.approx(10 * math.log10(4))
    reference = np.array([1e308, 0.0])
    assert metrics.max_rel(reference, -reference) == 2.0
    assert metrics.mean_abs(reference, -reference) == 1e308
    assert metrics.max_abs(reference, -reference) == math.inf  # 2e308: past float64's largest


def test_integer_differences_are_exact_past_two_to_the_53() -> None:
    """float64 casts made 2**53 and 2**53 + 1 one value: ``max_abs: 0`` passed ids that differ."""
    reference = np.array([2**53, 2**63 - 1, 0], np.int64)
    candidate = np.array([2**53 + 1, 2**63 - 1, 0], np.int64)
    measured = metrics.compare(reference, candidate)
    assert (measured.max_abs, measured.mean_abs) == (1.0, 1 / 3)
    (check,) = tolerances.evaluate("ids", measured, Tolerance(max_abs=0.0))
    assert not check.passed
    extremes = np.array([2**64 - 1], np.uint64), np.array([-(2**63)], np.int64)
    assert metrics.max_abs(*extremes) == float(2**64 - 1 + 2**63)
    assert metrics.max_abs(np.array([True, False]), np.array([False, False])) == 1.0


def test_a_tiny_cosine_limit_implies_an_snr() -> None:
    """``cosine_min: 1e-200`` is a valid limit; c² vanished and the gate stopped with a math domain error."""
    assert tolerances.implied_snr_db(1e-200) == pytest.approx(-4000.0)
    assert tolerances.resolve("y", "fp32", {"*": Tolerance(cosine_min=1e-200)}, classifier=False).snr_db_min == -4000.0
    assert tolerances.implied_snr_db(0.999) == pytest.approx(10 * math.log10(0.999**2 / (1 - 0.999**2)))


def test_snr_of_a_reference_whose_squares_vanish() -> None:
    """A float64 reference of 3.8e-284 has a sum of squares of 0.0 without being zero: its SNR
    against 1.0 is -5668 dB, not -inf."""
    assert metrics.snr_db(np.array([3.84885744e-284]), np.array([1.0])) == pytest.approx(-5668.29336, abs=1e-4)
    assert metrics.snr_db(np.zeros(2), np.ones(2)) == -math.inf
