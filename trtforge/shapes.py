"""Shapes of optimization profiles, read one way by every caller: the shape sets a profile spans
(its min, opt and max), whether a profile accepts a shape, and seeded random feeds of given shapes.

A profile is read in the form the manifest records (:data:`Profile`: input -> ``min``/``opt``/
``max`` shapes, a shape tensor's values as ``min_values`` etc.); :func:`spec_profiles` turns the
spec's profiles into it. numpy is imported inside the feed functions: importing this module stays
cheap for ``trtforge --help``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trtforge.errors import InvalidInputError
from trtforge.model import INT_HIGH, TensorDesc, input_bytes, is_float

if TYPE_CHECKING:
    import numpy as np

    from trtforge.spec import ShapeRange

Shape = tuple[int, ...]
ShapeSet = Mapping[str, Shape]
"""One shape per input: what one request (or one warm-up inference) looks like."""
Profile = Mapping[str, Mapping[str, Sequence[int]]]
"""One optimization profile as the manifest stores it: input -> {min, opt, max}."""
KINDS = ("min", "opt", "max")
#: Input bytes (all inputs together) above which the accuracy gate checks a profile's max at a
#: smaller batch: its other dims stay at the max, where long sequences and large images live.
MAX_POINT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ProfilePoint:
    """One of a profile's min, opt or max: a shape for each input the profile lists and each
    static input, and the values each shape tensor takes there."""

    profile: int
    kind: str
    shapes: dict[str, Shape]
    values: dict[str, list[int]]


def spec_profiles(profiles: Sequence[Mapping[str, ShapeRange]]) -> list[dict[str, dict[str, list[int]]]]:
    """The spec's profiles in the manifest's form: min/opt/max shapes per input, a shape tensor's
    values too (as ``min_values`` etc.)."""
    return [{name: shapes.for_manifest() for name, shapes in profile.items()} for profile in profiles]


def static_shapes(inputs: Sequence[TensorDesc]) -> dict[str, Shape]:
    """The inputs without a dynamic dim and their one shape: no profile needs to list them."""
    return {
        tensor.name: tuple(dim for dim in tensor.shape if isinstance(dim, int))
        for tensor in inputs
        if not tensor.is_dynamic
    }


def concrete_shape(tensor: TensorDesc, batch: int = 1) -> Shape:
    """A served shape for a model input: the first dynamic dim becomes ``batch``, other dynamic dims 1."""
    dims: list[int] = []
    for axis, dim in enumerate(tensor.shape):
        if isinstance(dim, int) and dim >= 0:
            dims.append(dim)
        else:
            dims.append(batch if axis == 0 else 1)
    return tuple(dims)


def profile_point(
    profile: Profile, kind: str, static: Mapping[str, Shape] | None = None, index: int = 0
) -> ProfilePoint:
    """The profile's ``kind`` (min, opt or max) shapes, static inputs first."""
    shapes = {**(static or {}), **{name: tuple(int(d) for d in ranges[kind]) for name, ranges in profile.items()}}
    values = {name: list(ranges[f"{kind}_values"]) for name, ranges in profile.items() if f"{kind}_values" in ranges}
    return ProfilePoint(index, kind, shapes, values)


def profile_points(profiles: Sequence[Profile], static: Mapping[str, Shape] | None = None) -> Iterator[ProfilePoint]:
    """Every profile's min, opt and max, in order (duplicates too: callers drop what is the same to them)."""
    for index, profile in enumerate(profiles):
        for kind in KINDS:
            yield profile_point(profile, kind, static, index)


def distinct_shapes(points: Iterable[ProfilePoint]) -> list[ProfilePoint]:
    """The points whose shapes (and shape-tensor values) no earlier point has: TensorRT re-allocates
    on each new input shape, so warming up these covers every shape the profiles allow at their bounds."""
    kept: list[ProfilePoint] = []
    for point in points:
        if all((point.shapes, point.values) != (seen.shapes, seen.values) for seen in kept):
            kept.append(point)
    return kept


def accepts(
    low: Mapping[str, Sequence[int]], high: Mapping[str, Sequence[int]], shapes: Mapping[str, Sequence[int]]
) -> bool:
    """Does the profile with these min (``low``) and max (``high``) shapes take ``shapes``? Each
    input it lists must be given, of its rank, every dim within [min, max]; inputs it does not list
    (static ones) are not its concern. Pure."""
    return all(
        name in shapes
        and len(shapes[name]) == len(low[name])
        and all(lo <= dim <= hi for dim, lo, hi in zip(shapes[name], low[name], high[name], strict=True))
        for name in low
    )


def no_one_profile(shapes: Mapping[str, Sequence[int]], profiles: Sequence[Profile]) -> str | None:
    """Why no one profile takes these shapes together, though each may fit one on its own (an
    engine runs one profile at a time: image at batch 32 beside meta at 1 fits none); None when one
    does, or there are no profiles. Pure."""
    if not profiles or any(
        accepts({n: r["min"] for n, r in p.items()}, {n: r["max"] for n, r in p.items()}, shapes) for p in profiles
    ):
        return None
    given = ", ".join(f"{name} [{', '.join(map(str, shape))}]" for name, shape in shapes.items())
    ranges = "; ".join(
        f"profile {index}: "
        + ", ".join(
            f"{name} [{', '.join(map(str, r['min']))}]..[{', '.join(map(str, r['max']))}]" for name, r in p.items()
        )
        for index, p in enumerate(profiles)
    )
    return f"input shapes {given} fit no one profile together ({ranges})"


def batched_inputs(inputs: Sequence[TensorDesc]) -> list[str]:
    """The inputs with a batch axis: a dynamic dim 0 (a static ``[4]`` bias beside them has none),
    unless the model names it as it names another axis (``b [S, 4]`` beside ``x [B, S, 8]``: a
    sequence, one size with ``x``'s ``S`` at run time, which halving as a batch would break)."""
    later = {dim for t in inputs for dim in t.shape[1:] if isinstance(dim, str)}
    return [
        t.name
        for t in inputs
        if t.shape and (not isinstance(t.shape[0], int) or t.shape[0] < 0) and t.shape[0] not in later
    ]


def batch_capped(
    inputs: Sequence[TensorDesc], shapes: Mapping[str, Shape], floors: Mapping[str, Shape], budget: int
) -> dict[str, Shape]:
    """``shapes`` with the leading (batch) dim of every input whose dim 0 is dynamic halved, all
    together so that they stay equal, never below ``floors``, until the feed fits ``budget`` bytes
    or no batch can shrink; every other dim unchanged. Pure."""
    batched = batched_inputs(inputs)
    current = {name: tuple(shape) for name, shape in shapes.items()}
    while input_bytes(inputs, current) > budget:
        shrinkable = [name for name in batched if current[name][0] > floors[name][0]]
        if not shrinkable:
            break
        for name in shrinkable:
            current[name] = (max(floors[name][0], current[name][0] // 2), *current[name][1:])
    return current


def random_array(tensor: TensorDesc, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Seeded values of the input's dtype: floats uniform in [0, 1) (the range of normalized
    images; bfloat16 and float8 too), integers in [0, INT_HIGH) unless the graph says which values
    are valid (``TensorDesc.valid_range``), booleans at random."""
    import numpy as np

    dtype = tensor.np_dtype
    if is_float(dtype):
        return rng.random(shape, dtype=np.float64).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        low, high = tensor.valid_range or (0, INT_HIGH)
        return rng.integers(low, high, shape).astype(dtype)
    raise InvalidInputError(f"input '{tensor.name}' has dtype {dtype}, for which no random data can be made")


def random_feed(
    inputs: Sequence[TensorDesc],
    shapes: ShapeSet,
    seed: int | np.random.Generator = 0,
    values: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """One feed of seeded random data (:func:`random_array`), drawn input by input from ``seed``
    (a generator continues its stream); a shape tensor in ``values`` gets those values, as the
    engine accepts no others."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feed = {tensor.name: random_array(tensor, shapes[tensor.name], rng) for tensor in inputs}
    for name, given in (values or {}).items():
        feed[name] = np.asarray(given, dtype=feed[name].dtype).reshape(shapes[name])
    return feed


# ---------------------------------------------------------------- shapes given on a command line

#: ``NAME=DIMS``'s dims: ``8x1x8x8`` or ``8,1,8,8``
_DIMS = re.compile(r"^\d+([x,]\d+)*$")
#: a shape tensor's values, ``[4,3,4]`` (negative values too: a Reshape's -1)
_VALUES = re.compile(r"^\[\s*-?\d+(\s*,\s*-?\d+)*\s*\]$")


def parse_shape(text: str) -> tuple[str, Shape]:
    """``input=1x1x8x8`` (or ``input=1,1,8,8``) -> ("input", (1, 1, 8, 8))."""
    name, sep, dims = text.partition("=")
    dims = dims.strip().lower()
    if not sep or not name.strip() or not _DIMS.match(dims):
        raise InvalidInputError(
            f"--shape '{text}': write NAME=DIMS, e.g. --shape input=8x1x8x8 (a shape tensor's values: NAME=[V,...])"
        )
    return name.strip(), _integers(re.split(r"[x,]", dims), text)


def parse_values(text: str) -> tuple[str, tuple[int, ...]] | None:
    """``shape=[4,3,4]`` -> ("shape", (4, 3, 4)): a shape tensor's values; None for any other text
    (a value of more digits than int() converts: InvalidInputError)."""
    name, sep, given = text.partition("=")
    given = given.strip()
    if not sep or not name.strip() or not _VALUES.match(given):
        return None
    return name.strip(), _integers(given.strip("[] ").split(","), text)


def _integers(numbers: Sequence[str], text: str) -> tuple[int, ...]:
    """The numbers of a ``--shape``; one of more digits than int() converts (4300) is no dim or value
    of any tensor, refused (int()'s ValueError was an internal error, exit 1)."""
    try:
        return tuple(int(number) for number in numbers)
    except ValueError:
        digits = max(len(number.strip().lstrip("-")) for number in numbers)
        raise InvalidInputError(
            f"--shape '{text}': a number of {digits} digits is no dim or value a tensor has"
        ) from None


def parse_inputs(texts: Sequence[str]) -> tuple[dict[str, Shape], dict[str, tuple[int, ...]]]:
    """Every ``--shape``, one per input: ``NAME=DIMS`` a shape, ``NAME=[V,...]`` a shape tensor's
    values (a Reshape's shape, TopK's k: what the model reads from it, not only its shape)."""
    shapes: dict[str, Shape] = {}
    values: dict[str, tuple[int, ...]] = {}
    for text in texts:
        parsed = parse_values(text)
        name, given = parsed or parse_shape(text)
        if name in shapes or name in values:
            before = f"[{','.join(map(str, values[name]))}]" if name in values else "x".join(map(str, shapes[name]))
            raise InvalidInputError(f"--shape {text}: input '{name}' already has --shape {name}={before}; give it once")
        (values if parsed else shapes)[name] = given
    return shapes, values
