"""What the gate feeds both models: the spec's accuracy data, or seeded random inputs.

Data files go through ``trtforge.data`` (the calibration data rules). Without data, every
profile contributes its min and opt shapes at full size and its max shapes with the batch capped
(``MAX_POINT_BYTES``: the max's batch is halved, never below the min's, until its inputs fit;
its other dims stay at the max), a static model its one shape, filled with
seeded values (``trtforge.shapes.random_feed``): floats uniform in [0, 1) (the range of
normalized images, so INT8 input quantizers see values they were calibrated for; bfloat16 and
float8 too), integers in [0, 8) unless the graph says which values are valid
(``TensorDesc.valid_range``: Gather indices, loss targets, sequence lengths, divisors), booleans
at random, a shape tensor the profile's values. In data files a shape tensor holds its values
once per file, which the file's samples run with (``trtforge.data``: one batch per file).
A shape set over ``INPUT_BUDGET_BYTES`` (all inputs together) is checked at a smaller shape
within the profile instead: the largest dynamic axis is halved (never below the profile's min;
in every input the model names it alike) until it fits, and the log says so.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from trtforge.errors import InvalidInputError, SpecError
from trtforge.model import INPUT_BUDGET_BYTES, ModelInfo, TensorDesc, input_bytes, mib
from trtforge.shapes import (
    KINDS,
    MAX_POINT_BYTES,
    Profile,
    ProfilePoint,
    Shape,
    accepts,
    batch_capped,
    batched_inputs,
    profile_point,
    profile_points,
    random_feed,
    spec_profiles,
    static_shapes,
)
from trtforge.spec import ShapeRange, Spec, expand_globs

if TYPE_CHECKING:  # numpy (and trtforge.data, which needs it) only where arrays are made: a gate
    import numpy as np  # that runs nothing imports neither

#: Seed of the random inputs (a fixed seed: the same spec always gets the same inputs).
RANDOM_SEED = 0
#: Largest batch the gate runs at once (a profile may cap it lower).
MAX_GATE_BATCH = 64

Shapes = dict[str, Shape]


@dataclass(frozen=True)
class Batch:
    """One feed for both models; ``first`` is the index of its first sample in data order."""

    feed: dict[str, np.ndarray]
    first: int
    label: str
    shape_inputs: Collection[str] = frozenset()  # inputs that hold values, not samples
    batched: Sequence[str] = ()  # random feeds: the inputs with a batch axis (``shapes.batched_inputs``)

    @property
    def size(self) -> int:
        return feed_size(self.feed, self.shape_inputs, self.batched)


def feed_size(
    feed: Mapping[str, np.ndarray], shape_inputs: Collection[str] = frozenset(), batched: Sequence[str] = ()
) -> int:
    """Samples in a feed: the leading dim of the first of ``batched`` (a static ``[4]`` bias before
    them holds no samples), else of the first input that has one, shape tensors (their values)
    aside (1 for scalars or no inputs)."""
    counted = next((name for name in batched if name in feed and name not in shape_inputs), None)
    if counted is not None:
        return len(feed[counted])
    return next((len(array) for name, array in feed.items() if array.ndim and name not in shape_inputs), 1)


@dataclass(frozen=True)
class Plan:
    """Where the inputs come from, for the report."""

    source: Literal["files", "random"]
    files: tuple[Path, ...]
    samples: int
    batch_size: int
    labels: Path | None
    seed: int | None
    notes: tuple[str, ...] = ()  # shape sets checked at a smaller shape than the profile's, and why


@dataclass(frozen=True)
class GateShapes:
    """One shape set the gate runs, named for the report and the log."""

    label: str
    shapes: Shapes
    note: str | None = None  # set when ``shapes`` were reduced to fit the input budget
    values: Mapping[str, list[int]] = field(default_factory=dict)  # shape tensors' values (the profile's)


def _text(shapes: Shapes) -> str:
    return ", ".join(f"{name}={list(shape)}" for name, shape in shapes.items())


def within_budget(inputs: Sequence[TensorDesc], shapes: Shapes, floors: Shapes, budget: int) -> Shapes | None:
    """``shapes`` made to fit ``budget`` bytes by halving the largest axis above its floor, one
    axis at a time; an axis the model names (``H``) in several inputs is one size at run time, so
    it is halved in all of them together. None when even the floors do not fit. Pure."""
    current = {name: list(shape) for name, shape in shapes.items()}
    model_dims = {tensor.name: tensor.shape for tensor in inputs}

    def linked(name: str, axis: int) -> str | tuple[str, int]:
        """The model's name for the axis, else the axis itself: the axes halved together."""
        dim = model_dims.get(name, ())[axis:][:1]
        return dim[0] if dim and isinstance(dim[0], str) else (name, axis)

    while input_bytes(inputs, current) > budget:
        axes = [(dim, name, axis) for name, dims in current.items() for axis, dim in enumerate(dims)]
        shrinkable = [(dim, name, axis) for dim, name, axis in axes if dim > floors[name][axis]]
        if not shrinkable:
            return None
        _, name, axis = max(shrinkable, key=lambda item: item[0])
        group = linked(name, axis)
        for dim, other, at in axes:
            if linked(other, at) == group:
                current[other][at] = max(floors[other][at], dim // 2)
    return {name: tuple(dims) for name, dims in current.items()}


def _budgeted(model: ModelInfo, label: str, shapes: Shapes, floors: Shapes) -> GateShapes:
    """The shape set, or a smaller one within the profile when it is over the input budget."""
    if input_bytes(model.inputs, shapes) <= INPUT_BUDGET_BYTES:
        return GateShapes(label, shapes)
    smaller = within_budget(model.inputs, shapes, floors, INPUT_BUDGET_BYTES)
    if smaller is None:
        floor = "the model's static shapes" if shapes == floors and label == "static" else "the profile's min"
        raise InvalidInputError(
            f"{label} shapes {_text(floors)} take {mib(input_bytes(model.inputs, floors))} of input, over the "
            f"accuracy gate's budget of {mib(INPUT_BUDGET_BYTES)} per random feed even at {floor}: "
            "give accuracy.data, or set accuracy.enabled: false"
        )
    note = (
        f"{label} shapes {_text(shapes)} exceed the gate's input budget of {mib(INPUT_BUDGET_BYTES)}: "
        f"checked at {_text(smaller)} instead"
    )
    return GateShapes(f"{label} (reduced to fit the input budget)", smaller, note)


def shape_sets(model: ModelInfo, profiles: Sequence[Mapping[str, ShapeRange]]) -> list[GateShapes]:
    """Each profile's min, opt and max shapes for every input (duplicates dropped), or the static
    shape; each within the input budget."""
    static = static_shapes(model.inputs)
    if not profiles:
        if len(static) != len(model.inputs):
            dynamic = [t.name for t in model.inputs if t.is_dynamic]
            raise SpecError(f"input '{dynamic[0]}' is dynamic and the spec has no profiles: add 'profiles:'")
        return [_budgeted(model, "static", static, static)]
    manifest_profiles = spec_profiles(profiles)
    sets: list[GateShapes] = []
    for point in profile_points(manifest_profiles, static):
        floors = profile_point(manifest_profiles[point.profile], "min", static).shapes
        label = f"profile {point.profile} {point.kind}"
        shapes, capped = point.shapes, None
        if point.values:  # never shrunk: the values may hold the batch, as a Reshape's target does
            point, capped = _valued_point(model, manifest_profiles[point.profile], point, static)
            shapes = point.shapes
        elif point.kind == "max":
            shapes = batch_capped(model.inputs, shapes, floors, MAX_POINT_BYTES)
            if shapes != point.shapes:
                label += f" (batch capped at {mib(MAX_POINT_BYTES)} of input)"
                capped = f"{label} shapes {_text(point.shapes)}: checked at {_text(shapes)} instead"
        budgeted = _budgeted(model, label, shapes, floors)
        note = "; ".join(text for text in (capped, budgeted.note) if text) or None
        shape_set = replace(budgeted, values=point.values, note=note)
        same = next(
            (at for at, kept in enumerate(sets) if (kept.shapes, kept.values) == (shape_set.shapes, point.values)), None
        )
        if same is None:
            sets.append(shape_set)
        elif shape_set.note:  # reduced onto a set already run: run it once, keep saying why
            notes = (note for note in (sets[same].note, shape_set.note) if note)
            sets[same] = replace(sets[same], note="; ".join(notes))
    return sets


def _valued_point(
    model: ModelInfo, profile: Profile, point: ProfilePoint, static: Shapes
) -> tuple[ProfilePoint, str | None]:
    """A point whose shape tensors take values, as the profile gives it: the gate cannot tell
    whether a value is the batch (a Reshape to ``[N, 16]``), so it shrinks neither, and a max is
    not capped. Over the input budget, the profile's next point down is checked instead (max: opt,
    opt: min), and the note says so; a min over it is refused as any is (``_budgeted``)."""
    at = point
    while at.kind != "min" and input_bytes(model.inputs, at.shapes) > INPUT_BUDGET_BYTES:
        at = profile_point(profile, KINDS[KINDS.index(at.kind) - 1], static, point.profile)
    if at is point:
        return point, None
    return at, (
        f"profile {point.profile} {point.kind} shapes {_text(point.shapes)} exceed the gate's input budget of "
        f"{mib(INPUT_BUDGET_BYTES)}, and shape tensors' values ({', '.join(point.values)}) may hold their batch: "
        f"checked at the profile's {at.kind} instead"
    )


def random_batches(model: ModelInfo, profiles: Sequence[Mapping[str, ShapeRange]], seed: int) -> Iterator[Batch]:
    """One feed per shape set, made when it is needed: one feed in memory at a time."""
    import numpy as np

    rng = np.random.default_rng(seed)
    first = 0
    batched = batched_inputs(model.inputs)
    for shape_set in shape_sets(model, profiles):
        try:
            feed = random_feed(model.inputs, shape_set.shapes, rng, shape_set.values)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{exc}; give accuracy.data in the spec") from None
        batch = Batch(feed, first, shape_set.label, frozenset(shape_set.values), batched)
        yield batch
        first += batch.size


def accepted(profiles: Sequence[Mapping[str, ShapeRange]], feed: Mapping[str, np.ndarray]) -> bool:
    """Would an engine built with these profiles take this feed (its shapes, and a shape tensor's
    values within the profile's)? (Always, without profiles.)"""
    shapes = {name: tuple(array.shape) for name, array in feed.items()}
    return not profiles or any(
        accepts({name: r.min for name, r in profile.items()}, {name: r.max for name, r in profile.items()}, shapes)
        and all(_values_within(r, feed[name]) for name, r in profile.items() if r.values is not None and name in feed)
        for profile in profiles
    )


def _values_within(entry: ShapeRange, array: np.ndarray) -> bool:
    assert entry.values is not None
    low, high = entry.values.flat("min"), entry.values.flat("max")
    given = array.reshape(-1).tolist()
    return len(given) == len(low) and all(a <= v <= b for a, v, b in zip(low, given, high, strict=True))


def gate_batch_size(model: ModelInfo, profiles: Sequence[Mapping[str, ShapeRange]]) -> int:
    """The model's static batch, else the largest batch a profile accepts up to MAX_GATE_BATCH, else
    (every profile's min batch above it) the smallest batch a profile accepts: a batch no profile
    accepts (64, for profiles of 1..8 and 128..256) would leave no sample to check (pure)."""
    from trtforge.data import fixed_batch_size, shape_tensors

    fixed = fixed_batch_size(model.inputs, shape_tensors(profiles))
    if fixed is not None:
        return fixed
    ranges = [
        (max(shape.min[0] for shape in batched), min(shape.max[0] for shape in batched))
        for profile in profiles
        if (batched := [shape for shape in profile.values() if shape.min and shape.max and not shape.is_shape_input])
    ]
    if not ranges:
        return 1
    under_cap = [min(high, MAX_GATE_BATCH) for low, high in ranges if low <= MAX_GATE_BATCH]
    return max(1, max(under_cap)) if under_cap else min(low for low, _ in ranges)


def plan(spec: Spec, model: ModelInfo) -> Plan:
    """Check the data files (headers only) and the labels file before any model runs."""
    accuracy = spec.accuracy
    if not accuracy.data:
        if accuracy.labels:
            raise SpecError(
                f"{spec.origin.where('accuracy', 'labels')}: accuracy.labels needs accuracy.data "
                "(labels are matched to data samples in order)"
            )
        try:
            sets = shape_sets(model, spec.profiles)
        except InvalidInputError as exc:
            raise SpecError(f"{spec.origin.where('accuracy')}: {exc}") from exc
        notes = tuple(shape_set.note for shape_set in sets if shape_set.note)
        return Plan("random", (), 0, 0, None, RANDOM_SEED, notes)
    from trtforge.data import plan_data, shape_tensors

    files = expand_globs(accuracy.data, spec.origin.where("accuracy", "data"))
    data_plan = plan_data(files, model.inputs, accuracy.max_samples, shape_inputs=shape_tensors(spec.profiles))
    labels = Path(accuracy.labels) if accuracy.labels else None
    if labels is not None:
        where = spec.origin.where("accuracy", "labels")
        if not possible_classifiers(model):  # the graph says so: no build first
            raise labels_need_a_classifier(where, [tensor.name for tensor in model.outputs])
        _check_labels(labels, data_plan.samples, data_plan.complete, where)
        declared = declared_classes(model)
        if declared:  # the classes the graph declares: a labels file of another data set costs no build
            check_label_classes(labels, load_labels(labels, data_plan.samples, where), declared, where)
    return Plan("files", data_plan.files, data_plan.samples, gate_batch_size(model, spec.profiles), labels, None)


def _check_labels(path: Path, samples: int, complete: bool, where: str) -> None:
    """The labels file's header against the data's sample count, before any model runs:
    ``complete`` (the data holds no other sample), exactly that many, else at least."""
    from trtforge.data import npy_header
    from trtforge.model import not_a_file

    problem = not_a_file(path)
    if problem:
        raise SpecError(f"{where}: labels file {path} {problem}")
    try:
        with open(path, "rb") as handle:
            shape, dtype = npy_header(handle)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{where}: cannot read labels {path} ({exc}); save them with np.save") from exc
    _refuse_labels(path, dtype, shape, samples, where)
    if complete and shape[0] > samples:
        raise InvalidInputError(
            f"{where}: labels {path} hold {shape[0]} entries, but the accuracy data holds {samples} samples; "
            "give one label per sample, in data order (are they the labels of this data?)"
        )


def _refuse_labels(path: Path, dtype: np.dtype, shape: tuple[int, ...], needed: int, where: str) -> None:
    import numpy as np

    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or not np.issubdtype(dtype, np.integer):
        raise InvalidInputError(
            f"{where}: labels {path} must be a 1-D integer array (one class per sample), got {dtype} {list(shape)}"
        )
    if shape[0] < needed:
        raise InvalidInputError(
            f"{where}: labels {path} hold {shape[0]} entries, but the accuracy data has at least "
            f"{needed} samples; give one label per sample, in data order"
        )


def load_labels(path: Path, needed: int, where: str) -> np.ndarray:
    """The first ``needed`` integer class labels, one per sample in data order (memory-mapped: a
    longer file is read no further)."""
    import numpy as np

    try:
        labels = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{where}: cannot read labels {path} ({exc}); save them with np.save") from exc
    labels = np.asarray(labels)
    _refuse_labels(path, labels.dtype, labels.shape, needed, where)
    return np.array(labels.reshape(-1)[:needed])


def declared_classes(model: ModelInfo) -> dict[str, int]:
    """Output name -> class count, for the outputs the graph declares as classifiers: float
    ``[N, C]`` with a static C of at least 2, as ``metrics.is_classifier`` judges their arrays."""
    return {
        tensor.name: tensor.shape[1]
        for tensor in model.outputs
        if len(tensor.shape) == 2
        and isinstance(tensor.shape[1], int)
        and tensor.shape[1] >= 2
        and tensor.dtype.startswith(("float", "bfloat"))
    }


def float_outputs(model: ModelInfo) -> list[str]:
    """The outputs the graph declares of a float type (``model.is_float`` judges their arrays)."""
    return [tensor.name for tensor in model.outputs if tensor.dtype.startswith(("float", "bfloat"))]


def possible_classifiers(model: ModelInfo) -> list[str]:
    """The outputs the graph's declared types and shapes leave possibly classifiers (float
    ``[N, C]``, C >= 2, as ``metrics.is_classifier`` judges their arrays): not those it declares of
    another dtype, another rank, or a static C below 2. An output declared without a shape (which
    the description gives as ``()``, as a scalar's) may be one."""
    floats = set(float_outputs(model))
    return [
        tensor.name
        for tensor in model.outputs
        if tensor.name in floats
        and (
            not tensor.shape
            or (len(tensor.shape) == 2 and not (isinstance(tensor.shape[1], int) and 0 <= tensor.shape[1] < 2))
        )
    ]


def labels_need_a_classifier(where: str, outputs: Sequence[str]) -> InvalidInputError:
    return InvalidInputError(
        f"{where}: accuracy.labels needs a classifier output (float [N, C]); outputs: {', '.join(outputs)}"
    )


def labels_fit(labels: np.ndarray, classes: int) -> bool:
    """Every label a class of an output of ``classes`` classes (0 to ``classes`` - 1)."""
    return bool(labels.size == 0 or (labels.min() >= 0 and labels.max() < classes))


def check_label_classes(path: Path, labels: np.ndarray, classifiers: Mapping[str, int], where: str) -> None:
    """The labels are the classes of at least one classifier output (output -> class count): a
    labels file of another data set, or -1 for "unlabelled", would otherwise give both models the
    same low task accuracy, and pass. A model with other heads beside its classifier (a box
    regressor of 4 values) is judged by the output the labels fit; the others get no task accuracy."""
    if not classifiers or any(labels_fit(labels, classes) for classes in classifiers.values()):
        return
    outputs = ", ".join(f"'{name}' ({classes} classes)" for name, classes in classifiers.items())
    outside = labels[(labels < 0) | (labels >= max(classifiers.values()))]  # not empty: they fit no output
    raise InvalidInputError(
        f"{where}: labels {path} hold {int(outside[0])}, a class of no classifier output ({outputs}); give the "
        "labels of this data, one class index per sample"
    )


def batches(spec: Spec, model: ModelInfo, data: Plan) -> Iterator[Batch]:
    """The feeds, in data order (random: one per profile shape)."""
    if data.source == "random":
        yield from random_batches(model, spec.profiles, RANDOM_SEED)
        return
    from trtforge.data import iter_batches, shape_tensors

    first = 0
    shaped = shape_tensors(spec.profiles)
    for feed in iter_batches(data.files, model.inputs, data.batch_size, spec.accuracy.max_samples, shape_inputs=shaped):
        batch = Batch(feed, first, f"samples {first}..{first + feed_size(feed, shaped) - 1}", shaped)
        first += batch.size
        yield batch
