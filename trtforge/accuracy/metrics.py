"""Metrics that compare a candidate's output with the reference's: pure numpy functions.

Everything is computed in float64 on the flattened arrays, so FP16 (and bfloat16, through
ml_dtypes) outputs don't lose the precision the comparison itself needs.

NaN and Inf are values an output may legitimately hold (a division by zero, log of 0): where
reference and candidate hold the same one (NaN, +Inf or -Inf) in the same position they agree.
``compare`` measures the finite positions and counts the positions whose pattern differs; the
tolerances fail the output on any such position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from trtforge.model import is_float

#: ``max_rel`` divides by ``max(|reference|, floor)`` with ``floor = REL_FLOOR_FRACTION * max|reference|``:
#: a relative error is meaningless where the reference is almost zero (a logit of 1e-9 that comes
#: back as 2e-9 is "100 % off" yet harmless), so tiny values are measured against the output's scale.
REL_FLOOR_FRACTION = 1e-3
#: The floor never drops below this, so an all-zero reference gives finite relative errors.
REL_FLOOR_MIN = 1e-12
#: A float64 sum of squares below this, or not finite, is summed again over values scaled by a power
#: of two: squares overflow past 1.3e154 and vanish below 1e-162, so float64 outputs of 1e200 gave a
#: NaN cosine and SNR, and of 1e-200 a cosine of 0 and an SNR of inf for a candidate 1.5x off.
#: float32 and float16 values never get there (their squares span 1e-90 to 1e77).
SAFE_SQUARES_MIN = 2.0**-900


@dataclass(frozen=True)
class OutputMetrics:
    """Everything measured on one output; ``top1`` only for classifier outputs."""

    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float
    snr_db: float
    top1: float | None = None
    match: float | None = None  # integer and boolean outputs: share of values equal to the reference's
    nonfinite: int | None = None  # NaN/Inf values in the reference; None when both outputs are finite
    nonfinite_mismatch: int | None = None  # positions whose NaN/+Inf/-Inf pattern differs; None likewise
    nonfinite_added: int | None = None  # of those, the ones finite in the reference (an overflow); None likewise

    def as_dict(self) -> dict[str, float | None]:
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "max_rel": self.max_rel,
            "cosine": self.cosine,
            "snr_db": self.snr_db,
            "top1": self.top1,
            "match": self.match,
            "nonfinite": self.nonfinite,
            "nonfinite_mismatch": self.nonfinite_mismatch,
            "nonfinite_added": self.nonfinite_added,
        }


def _pair(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cand = np.asarray(candidate, dtype=np.float64).ravel()
    if ref.shape != cand.shape:
        raise ValueError(f"reference has {ref.size} values, candidate {cand.size}: shapes differ")
    return ref, cand


def _scaled(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``values`` times the power of two that brings the largest |value| into [0.5, 1), and that
    power's exponent: exact, but for values 2**-1074 of the largest and below, which no sum sees."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    if peak == 0.0 or not math.isfinite(peak):
        return values, 0
    exponent = math.frexp(peak)[1]
    return np.ldexp(values, -exponent), exponent


def _squares_safe(*sums: float) -> bool:
    """Whether float64 sums of squares lost nothing to overflow or underflow."""
    return all(math.isfinite(value) and abs(value) >= SAFE_SQUARES_MIN for value in sums)


def _finite(*arrays: np.ndarray) -> bool:
    return all(bool(np.isfinite(array).all()) for array in arrays)


def _halved_difference(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``(cand - ref) / 2``, finite for any finite float64 values: their difference overflows
    past 1.8e308 (1e308 - -1e308), and a metric of it was inf where the exact one is not."""
    return cand * 0.5 - ref * 0.5


#: every integer of at most this magnitude is a float64 exactly
_FLOAT64_EXACT_INT = 2**53


def _float64_exact(values: np.ndarray) -> bool:
    """Whether every value of an integer or boolean array is a float64 exactly: any of 32 bits or
    fewer, a 64-bit one within 2**53 (two passes, where the 32-bit split below costs a dozen)."""
    if values.dtype.itemsize <= 4 or not values.size:
        return True
    return bool(int(values.min()) >= -_FLOAT64_EXACT_INT and int(values.max()) <= _FLOAT64_EXACT_INT)


def _integer_difference(
    reference: np.ndarray, candidate: np.ndarray, as_float64: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray | None:
    """``|c - r|`` of two integer or boolean outputs, rounded once to float64 (None for floats):
    float64 casts make 2**53 and 2**53 + 1 one value, and ``max_abs: 0`` passed ids that differ.
    Values float64 holds exactly (class indices, masks: nearly every output) are subtracted as
    float64, which rounds the exact difference once; others are split into 32-bit halves, whose
    differences float64 holds exactly (the split alone made an int32 output's compare 3x slower).
    ``as_float64``: both outputs already cast to float64 and flattened, as :func:`compare` has them."""
    ref, cand = np.asarray(reference).ravel(), np.asarray(candidate).ravel()
    if ref.dtype.kind not in "biu" or cand.dtype.kind not in "biu":
        return None
    if ref.shape != cand.shape:
        raise ValueError(f"reference has {ref.size} values, candidate {cand.size}: shapes differ")
    if _float64_exact(ref) and _float64_exact(cand):
        ref64, cand64 = as_float64 or (ref.astype(np.float64), cand.astype(np.float64))
        return np.abs(cand64 - ref64)
    halves = []
    for values in (ref, cand):
        wide = values.astype(np.uint64 if values.dtype.kind == "u" else np.int64)
        halves.append(((wide >> 32).astype(np.int64), (wide & 0xFFFFFFFF).astype(np.int64)))
    (ref_high, ref_low), (cand_high, cand_low) = halves
    return np.abs((cand_high - ref_high).astype(np.float64) * 2.0**32 + (cand_low - ref_low).astype(np.float64))


def max_abs(reference: np.ndarray, candidate: np.ndarray) -> float:
    diff = _integer_difference(reference, candidate)
    if diff is not None:
        return float(np.max(diff)) if diff.size else 0.0
    ref, cand = _pair(reference, candidate)
    with np.errstate(over="ignore"):  # inf only where |c - r| is past float64's largest value
        return float(np.max(np.abs(cand - ref))) if ref.size else 0.0


def mean_abs(reference: np.ndarray, candidate: np.ndarray) -> float:
    diff = _integer_difference(reference, candidate)
    if diff is not None:
        return float(np.mean(diff)) if diff.size else 0.0
    ref, cand = _pair(reference, candidate)
    if not ref.size:
        return 0.0
    with np.errstate(over="ignore"):
        mean = float(np.mean(np.abs(cand - ref)))
    if math.isinf(mean) and _finite(ref, cand):  # float64 values near its largest: sum them scaled down
        shift = math.ceil(math.log2(ref.size)) + 1
        mean = float(np.mean(np.abs(np.ldexp(_halved_difference(ref, cand), -shift)))) * 2.0 ** (shift + 1)
    return mean


def rel_floor(reference: np.ndarray) -> float:
    """The denominator floor of ``max_rel`` for this reference (see REL_FLOOR_FRACTION)."""
    ref = np.asarray(reference, dtype=np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return max(REL_FLOOR_FRACTION * scale, REL_FLOOR_MIN)


def max_rel(reference: np.ndarray, candidate: np.ndarray, floor: float | None = None) -> float:
    """``max |c - r| / max(|r|, floor)``; the floor defaults to ``rel_floor(reference)``."""
    diff = _integer_difference(reference, candidate)
    if diff is not None:
        return _exact_max_rel(np.asarray(reference, dtype=np.float64).ravel(), diff, floor)
    ref, cand = _pair(reference, candidate)
    if not ref.size:
        return 0.0
    floor = rel_floor(ref) if floor is None else floor
    with np.errstate(over="ignore"):
        value = float(np.max(np.abs(cand - ref) / np.maximum(np.abs(ref), floor)))
    if math.isinf(value) and _finite(ref, cand):  # |c - r| overflowed: (c/2 - r/2) / (|r|/2)
        with np.errstate(over="ignore"):  # inf still where the ratio is past float64's largest (a floor below 1)
            value = float(np.max(np.abs(_halved_difference(ref, cand)) / (0.5 * np.maximum(np.abs(ref), floor))))
    return value


def _exact_max_rel(ref: np.ndarray, diff: np.ndarray, floor: float | None = None) -> float:
    """:func:`max_rel` of an integer or boolean output from its exact difference ``diff``."""
    if not ref.size:
        return 0.0
    floor = rel_floor(ref) if floor is None else floor
    return float(np.max(diff / np.maximum(np.abs(ref), floor)))


def _exact_errors(ref: np.ndarray, diff: np.ndarray) -> tuple[float, float, float]:
    """``max_abs``, ``mean_abs`` and ``max_rel`` of an integer or boolean output (``ref``: as
    float64, flat) from its one exact difference ``diff``: :func:`compare` took it three times."""
    if not diff.size:
        return 0.0, 0.0, 0.0
    return float(np.max(diff)), float(np.mean(diff)), _exact_max_rel(ref, diff)


#: The largest cosine of two outputs that differ: ``cosine_min: 1.0`` asks for a bit-identical
#: output, and brings no SNR limit (none is finite), yet dot / norms of ``c = 2 r`` is 1.0 exactly
#: for most arrays: a candidate at twice the reference passed ``cosine_min: 1.0`` and failed the
#: looser ``0.99999`` (whose implied SNR sees the scale).
BELOW_ONE = math.nextafter(1.0, 0.0)


class _Wide(NamedTuple):
    """A sum beyond float64's range: ``value * 2**exponent`` (a sum of squares keeps an even
    exponent, so that its square root is ``sqrt(value) * 2**(exponent // 2)``)."""

    value: float
    exponent: int

    def plus(self, value: float, exponent: int) -> _Wide:
        """This sum plus ``value * 2**exponent``: aligned on the larger exponent (what the smaller
        part loses there is below the larger's last bit). A zero has no exponent to align on."""
        if value == 0.0 or self.value == 0.0:  # -0.0 + x is x: one term is kept bit for bit
            return _Wide(self.value + value, exponent if self.value == 0.0 else self.exponent)
        top = max(self.exponent, exponent)
        return _Wide(math.ldexp(self.value, self.exponent - top) + math.ldexp(value, exponent - top), top)

    def log2_sqrt(self) -> float:
        """log2 of the square root of a sum of squares: the Euclidean norm's (-inf for no squares)."""
        return self.exponent // 2 + 0.5 * math.log2(self.value) if self.value > 0.0 else -math.inf


#: the empty sum; -0.0 as the plain sums start: -0.0 + x is x for every x, -0.0 too
_NO_SUM = _Wide(-0.0, 0)


def _wide(value: float, squares: bool = False) -> tuple[float, int]:
    """A finite float64 sum as ``(mantissa, exponent)`` with the mantissa in [0.25, 1) (exact),
    to be added to a :class:`_Wide` without overflowing it; ``squares``: an even exponent."""
    if value == 0.0:
        return value, 0
    exponent = math.frexp(value)[1]
    exponent += exponent % 2 if squares else 0
    return math.ldexp(value, -exponent), exponent


@dataclass
class PartialSums:
    """The sums :func:`cosine` and :func:`snr_db` are made of, added batch by batch: the gate
    measures an output in one batch, ``trtforge diagnose`` a node's outputs over many, and both take
    their metrics from here, so that a node's are the gate's on all its values together (the
    diagnosis kept float64 sums of its own, which overflowed at 1e200 and vanished at 1e-200).

    Each batch adds its plain float64 sums (``np.dot``, ``np.sum``) and their range-safe form
    (:class:`_Wide`): where the batch's plain sums lost range (SAFE_SQUARES_MIN), those of its
    values scaled by the power of two of their largest, else the plain sums themselves, rescaled
    exactly. The metrics take the plain totals where they are safe, else the range-safe ones. Of
    one batch that is bit for bit what the metrics computed on one array; of several, the same up
    to the order of the float64 additions (a few ulps)."""

    differ: bool = False  # some position holds different values (NaN differs from itself)
    finite: bool = True  # every value seen is finite
    dot: float = -0.0
    ref_sq: float = -0.0
    cand_sq: float = -0.0
    noise: float = -0.0  # sum (c - r)^2
    signal: float = -0.0  # sum r^2, by np.sum as snr_db takes it (np.dot rounds otherwise)
    wide_dot: _Wide = _NO_SUM
    wide_ref_sq: _Wide = _NO_SUM
    wide_cand_sq: _Wide = _NO_SUM
    wide_noise: _Wide = _NO_SUM  # of (c - r) / 2 where ``halved``
    wide_signal: _Wide = _NO_SUM
    halved: bool = False  # some c - r overflowed float64: the noise is summed over (c - r) / 2

    @classmethod
    def of(cls, reference: np.ndarray, candidate: np.ndarray) -> PartialSums:
        """The sums of one batch."""
        sums = cls()
        sums.add(reference, candidate)
        return sums

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Add one batch: the two arrays, of one size, flattened to float64."""
        ref, cand = _pair(reference, candidate)
        differ = not np.array_equal(ref, cand)
        self.differ = self.differ or differ
        with np.errstate(over="ignore", invalid="ignore"):
            signal = float(np.sum(ref**2))
            if differ:
                dot, ref_sq, cand_sq = float(np.dot(ref, cand)), float(np.dot(ref, ref)), float(np.dot(cand, cand))
                # (cand - ref) ** 2 squares the difference in place (numpy reuses the temporary): a
                # named difference made snr_db of a 10M-value output 20-45 % slower
                noise = float(np.sum((cand - ref) ** 2))
            else:  # equal values: the same products, and differences of 0 (inf - inf: NaN)
                dot = ref_sq = cand_sq = float(np.dot(ref, ref))
                noise = 0.0 if math.isfinite(signal) or _finite(ref) else math.nan
        self.dot, self.ref_sq, self.cand_sq = self.dot + dot, self.ref_sq + ref_sq, self.cand_sq + cand_sq
        self.noise, self.signal = self.noise + noise, self.signal + signal
        # the range-safe sums; NaN and Inf lose range too, and are no values to scale (the
        # metrics of a NaN/Inf batch are the plain sums'): checked only where range was lost
        if _squares_safe(ref_sq, cand_sq) and math.isfinite(dot):
            self._add_cosine(_wide(dot), _wide(ref_sq, squares=True), _wide(cand_sq, squares=True))
        elif self._finite(ref, cand):  # a cosine is blind to each side's scale
            (scaled_ref, ref_exp), (scaled_cand, cand_exp) = _scaled(ref), _scaled(cand)
            self._add_cosine(
                (float(np.dot(scaled_ref, scaled_cand)), ref_exp + cand_exp),
                (float(np.dot(scaled_ref, scaled_ref)), 2 * ref_exp),
                (float(np.dot(scaled_cand, scaled_cand)), 2 * cand_exp),
            )
        if not differ:
            if _squares_safe(signal):
                self.wide_signal = self.wide_signal.plus(*_wide(signal, squares=True))
            elif (signal != 0.0 or np.any(ref)) and self._finite(ref, cand):
                self.wide_signal = self.wide_signal.plus(*_sum_of_squares(ref))
        elif _squares_safe(noise) and (_squares_safe(signal) or not np.any(ref)):
            self._add_noise(*_wide(noise, squares=True), halved=False)
            if signal:  # else all zeros
                self.wide_signal = self.wide_signal.plus(*_wide(signal, squares=True))
        elif self._finite(ref, cand):  # squares that overflow or vanish: scaled, as a cosine's
            with np.errstate(over="ignore"):
                diff = cand - ref
            halved = not np.isfinite(diff).all()
            self._add_noise(*_sum_of_squares(_halved_difference(ref, cand) if halved else diff), halved=halved)
            self.wide_signal = self.wide_signal.plus(*_sum_of_squares(ref))

    def _finite(self, ref: np.ndarray, cand: np.ndarray) -> bool:
        """Whether this batch's values are all finite; a batch's NaN/Inf make :attr:`finite` False."""
        finite = _finite(ref, cand)
        self.finite = self.finite and finite
        return finite

    def _add_cosine(self, dot: tuple[float, int], ref_sq: tuple[float, int], cand_sq: tuple[float, int]) -> None:
        self.wide_dot = self.wide_dot.plus(*dot)
        self.wide_ref_sq = self.wide_ref_sq.plus(*ref_sq)
        self.wide_cand_sq = self.wide_cand_sq.plus(*cand_sq)

    def _add_noise(self, value: float, exponent: int, halved: bool) -> None:
        """Add a batch's sum of squared differences, of halved ones where ``halved``: once one
        batch's differences overflow, all are summed halved (a quarter of the squares: the
        exponent moves by 2, exactly)."""
        if halved and not self.halved:
            self.halved = True
            self.wide_noise = _Wide(self.wide_noise.value, self.wide_noise.exponent - 2)
        self.wide_noise = self.wide_noise.plus(value, exponent - 2 if self.halved and not halved else exponent)

    def cosine(self) -> float:
        """See :func:`cosine`."""
        if not self.differ:
            return 1.0
        if not self.finite or (_squares_safe(self.ref_sq, self.cand_sq) and math.isfinite(self.dot)):
            dot, ref_sq, cand_sq, exponent = self.dot, self.ref_sq, self.cand_sq, 0
        else:  # a cosine is blind to each side's scale: the range-safe sums, each at its own
            dot, ref_sq, cand_sq = self.wide_dot.value, self.wide_ref_sq.value, self.wide_cand_sq.value
            exponent = self.wide_dot.exponent - self.wide_ref_sq.exponent // 2 - self.wide_cand_sq.exponent // 2
        norms = math.sqrt(ref_sq) * math.sqrt(cand_sq)
        if norms == 0.0:
            return 0.0
        with np.errstate(invalid="ignore"):  # NaN/Inf values: a NaN cosine
            return float(np.clip(math.ldexp(dot / norms, exponent) if exponent else dot / norms, -1.0, BELOW_ONE))

    def snr_db(self) -> float:
        """See :func:`snr_db`."""
        if self.noise == 0.0 and not self.differ:
            return math.inf
        signal_safe = _squares_safe(self.signal) or self.wide_signal.value == 0.0  # or all-zero values
        if (_squares_safe(self.noise) and signal_safe) or not self.finite:
            with np.errstate(all="ignore"):  # signal 0 -> -inf, NaN in the candidate -> nan: both fail the gate
                return float(10.0 * np.log10(self.signal / self.noise))
        # float64 values whose squares overflow or vanish: 20 log10 of the ratio of the norms
        noise_log2 = self.wide_noise.log2_sqrt() + 1 if self.halved else self.wide_noise.log2_sqrt()
        return 20.0 * math.log10(2.0) * (self.wide_signal.log2_sqrt() - noise_log2)


def _sum_of_squares(values: np.ndarray) -> tuple[float, int]:
    """The sum of squares of finite float64 values, as ``(sum of the scaled values' squares,
    exponent)``: scaled by the power of two of the largest |value| (:func:`_scaled`)."""
    scaled, exponent = _scaled(values)
    return float(np.sum(scaled**2)), 2 * exponent


def cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Cosine similarity of the flattened outputs, in [-1, 1]; equal outputs (two all-zero ones
    too) are 1.0 exactly, which dot / norms rounds to 0.9999999999999999 for about one array in
    five, and ``cosine_min: 1.0`` (bit-identical) must pass them; outputs that differ are at most
    ``BELOW_ONE`` (within one rounding of the exact cosine), so that it fails them."""
    return PartialSums.of(reference, candidate).cosine()


def snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-noise ratio ``10 log10(sum r^2 / sum (c - r)^2)`` in dB; ``inf`` when identical."""
    return PartialSums.of(reference, candidate).snr_db()


def is_classifier(array: np.ndarray) -> bool:
    """A classifier output is a float ``[N, C]`` array with at least two classes."""
    return array.ndim == 2 and array.shape[1] >= 2 and is_float(array.dtype)


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of rows whose arg-max class is the same in both ``[N, C]`` outputs. The arg-max is
    numpy's (README): the first of tied largest values, the first NaN of a row holding one, so
    bit-identical rows always agree, NaN ones too."""
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(f"top-1 needs two [N, C] arrays of one shape, got {reference.shape} and {candidate.shape}")
    if not len(reference):
        return 1.0
    return float(np.mean(np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)))


def task_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows of ``[N, C]`` logits whose arg-max (as in ``top1_agreement``) is the label."""
    labels = np.asarray(labels).ravel()
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"task accuracy needs [N, C] logits and N labels, got {logits.shape} and {labels.shape}")
    if not len(labels):
        return 0.0
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def nonfinite_codes(array: np.ndarray) -> np.ndarray:
    """Per value: 0 finite, 1 NaN, 2 +Inf, 3 -Inf (flattened, float64)."""
    values = np.asarray(array, dtype=np.float64).ravel()
    codes = np.zeros(values.shape, np.int8)
    codes[np.isnan(values)] = 1
    codes[values == np.inf] = 2
    codes[values == -np.inf] = 3
    return codes


def match_fraction(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of positions holding the same value: class indices and masks are right or wrong, and
    a cosine of indices (4 of 13 argmaxes differing gave 0.9999997) means nothing."""
    ref, cand = np.asarray(reference).ravel(), np.asarray(candidate).ravel()
    return float(np.mean(ref == cand)) if ref.size else 1.0


def compare(reference: np.ndarray, candidate: np.ndarray, classifier: bool | None = None) -> OutputMetrics:
    """Every metric for one output (``classifier`` defaults to ``is_classifier(reference)``); the
    value metrics over the positions finite in both, plus the NaN/Inf pattern counts, and for an
    integer or boolean output the share of equal values."""
    if reference.shape != candidate.shape:
        raise ValueError(f"reference shape {reference.shape} differs from candidate shape {candidate.shape}")
    classifier = is_classifier(reference) if classifier is None else classifier
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    nonfinite = mismatch = added = None
    ref_finite, cand_finite = ref.ravel(), cand.ravel()
    # the NaN/Inf codes and the gather only where some value is not finite: on the common all-finite
    # outputs they were half of the time (11 of 25 array passes on a 660k-value output)
    if not (np.isfinite(ref_finite).all() and np.isfinite(cand_finite).all()):
        ref_codes, cand_codes = nonfinite_codes(ref), nonfinite_codes(cand)
        finite = (ref_codes == 0) & (cand_codes == 0)
        ref_finite, cand_finite = ref_finite[finite], cand_finite[finite]
        nonfinite = int(np.count_nonzero(ref_codes))
        mismatch = int(np.count_nonzero(ref_codes != cand_codes))
        added = int(np.count_nonzero((ref_codes == 0) & (cand_codes != 0)))
    # integer and boolean values (always finite) as they are: their differences are exact
    diff = _integer_difference(reference, candidate, (ref.ravel(), cand.ravel()))
    if diff is not None:
        errors = _exact_errors(ref.ravel(), diff)
    else:
        errors = max_abs(ref_finite, cand_finite), mean_abs(ref_finite, cand_finite), max_rel(ref_finite, cand_finite)
    sums = PartialSums.of(ref_finite, cand_finite)  # one pass of each kind for both metrics
    return OutputMetrics(
        max_abs=errors[0],
        mean_abs=errors[1],
        max_rel=errors[2],
        cosine=sums.cosine(),
        snr_db=sums.snr_db(),
        top1=top1_agreement(ref, cand) if classifier else None,
        match=None if is_float(reference.dtype) else match_fraction(reference, candidate),
        nonfinite=nonfinite,
        nonfinite_mismatch=mismatch,
        nonfinite_added=added,
    )
