"""Property-based tests (Hypothesis) of the compatibility rules, the tags and the selection.

These decide whether an engine may load on a machine: a wrong answer is a crash in production (a
plan deserialized on a runtime or GPU it was not built for) or a good engine refused. The example
tables of ``test_compat_rules.py`` and ``test_tags.py`` pin the README's cases; here each rule is
stated once for every value Hypothesis draws.
"""

from __future__ import annotations

import random
import re
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from models import retag
from test_compat_rules import env_for, manifest_for

from trtforge.compat import (
    CROSS_MAJOR_VERSION_COMPATIBLE,
    DEFAULT_POLICY,
    ArtifactFacts,
    Environment,
    GpuDevice,
    LoadPolicy,
    Rule,
    SignatureStatus,
    content_problem,
    problems,
    signature_problem,
    version_compatible_majors,
)
from trtforge.errors import InvalidInputError
from trtforge.fsutil import TempName
from trtforge.manifest import MANIFEST_SUFFIX, Manifest
from trtforge.selection import list_artifacts, listed_name, preference, select_engine
from trtforge.tags import (
    CAPABILITY_PATTERN,
    MACHINES,
    MAX_OCI_TAG,
    PRECISIONS,
    RTX_COMPUTE_CAPABILITIES,
    ComputeCapability,
    EngineTag,
    Platform,
    artifact_stem,
    gpus_tag,
    parse_trt_version,
    short_version,
    valid_name,
)

#: reproducible in CI: the same examples on every run
FAST = settings(max_examples=200)
#: the ones that validate a manifest (pydantic) or more per example, write folders, run select_engine
SLOWER = settings(max_examples=100)

OCI_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

# ---------------------------------------------------------------- strategies

capabilities = st.builds(ComputeCapability, st.integers(1, 99), st.integers(0, 9))
platforms = st.builds(Platform, st.sampled_from(["linux", "windows"]), st.sampled_from(MACHINES))
names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True)
precisions = st.sampled_from(PRECISIONS)


def versions(min_parts: int = 2, major: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[str]:
    """A TensorRT version as a build records it: numbers without leading zeros."""
    head = major if major is not None else st.integers(0, 12)
    tail = st.lists(st.integers(0, 200), min_size=min_parts - 1, max_size=3)
    return st.builds(lambda first, rest: ".".join(map(str, (first, *rest))), head, tail)


#: build times as manifests hold them: with an offset, ``Z``, none (UTC too), and one that is no time
CREATED = ("2026-01-01T00:00:00+00:00", "2026-03-01T12:00:00Z", "2025-12-31T23:00:00", "2026-01-01T01:00:00+01:00", "?")


@st.composite
def engine_tags(draw: st.DrawFn) -> EngineTag:
    plus = draw(st.booleans())
    return EngineTag(
        draw(st.sampled_from(["tensorrt", "tensorrt-rtx"])),
        draw(versions(min_parts=1)),
        draw(st.booleans()),
        () if plus else tuple(draw(st.lists(capabilities, max_size=40))),
        draw(capabilities) if plus else None,
        draw(platforms),
    )


@st.composite
def manifests(
    draw: st.DrawFn,
    name: str | None = None,
    flavor: str | None = None,
    platform: tuple[str, str] | None = None,
    gpus: tuple[str, ...] = ("7.5", "8.0", "8.6", "8.9", "9.0", "12.0"),
) -> Manifest:
    """Any manifest a build writes (the facts ``Manifest`` accepts), its compatibility fields drawn
    (``flavor``, ``platform``, ``gpus`` narrowed, so that several fit one host and the ranking decides)."""
    flavor = flavor or draw(st.sampled_from(["tensorrt", "tensorrt-rtx"]))
    platform = platform or (draw(st.sampled_from(["linux", "windows"])), draw(st.sampled_from(MACHINES)))
    created = draw(st.sampled_from(CREATED))
    # names that end as another's precision or tag begins: their file names must still differ
    chosen = name or draw(st.sampled_from(["a", "b", "a-fp16", "a-fp16-trt10"]))
    if flavor == "tensorrt-rtx":  # plain, hardware none, listed GPUs it compiles for (manifest rules)
        rtx = [text for text in gpus if ComputeCapability.parse(text) in RTX_COMPUTE_CAPABILITIES]
        listed = tuple(draw(st.lists(st.sampled_from(rtx), min_size=1, unique=True)))
        version = draw(st.one_of(st.sampled_from(["1.7.1.116", "1.7", "1.7.0"]), versions(major=st.integers(1, 2))))
        return manifest_for(flavor, version, False, listed, platform=platform, created=created, name=chosen)
    version_compatible = draw(st.booleans())
    major = st.integers(8, 12) if version_compatible else st.integers(7, 12)
    # a few versions often (equal ones, 10.7 and 10.7.0, rank as one), any other sometimes
    version = draw(
        st.one_of(st.sampled_from(["10.3.0", "10.3.0.26", "10.7", "10.7.0", "10.7.1"]), versions(major=major))
    )
    if version_compatible:
        assume(parse_trt_version(version)[:2] >= (8, 6))  # no earlier build writes version compatibility
    hardware = draw(st.sampled_from(["none", "ampere_plus", "same_compute_capability"]))
    text = st.sampled_from(gpus)
    if hardware == "ampere_plus":
        ccs: tuple[str, ...] = ()
        build_cc = None
    elif hardware == "same_compute_capability":
        build_cc = draw(text)
        ccs = (build_cc,)
    else:
        ccs = tuple(draw(st.lists(text, min_size=1, max_size=3, unique=True)))
        build_cc = ccs[0] if draw(st.booleans()) else None  # a plan that names its build GPU model
    return manifest_for(
        flavor,
        version,
        version_compatible,
        ccs,
        hardware,
        "8.0" if hardware == "ampere_plus" else None,
        build_cc,
        platform,
        created,
        chosen,
    )


GPU_TEXTS = ("7.5", "8.0", "8.6", "8.9", "9.0", "12.0")


@st.composite
def environments(draw: st.DrawFn, like: Manifest | None = None) -> Environment:
    """A host or a target; ``like``: mostly one that ``like`` was built for, so the rules pass
    often enough for the ranking to be exercised."""
    flavor: str | None
    version: str | None
    cc: str | None
    if like is not None and draw(st.sampled_from([True, True, True, False])):
        flavor, version = like.tensorrt.flavor, like.tensorrt.version
        cc = draw(st.sampled_from(like.gpu.compute_capabilities or GPU_TEXTS))
        platform = Platform(like.platform.os, like.platform.machine)
    else:
        flavor = draw(st.sampled_from(["tensorrt", "tensorrt-rtx", None]))
        version = None if flavor is None else draw(st.one_of(st.none(), versions(major=st.integers(1, 12))))
        cc = draw(st.one_of(st.none(), st.sampled_from(GPU_TEXTS)))
        platform = draw(platforms)
    env = env_for(flavor, version, cc, platform)
    if cc is not None and draw(st.booleans()):  # this host, its GPU detected: the GPU model counts
        gpu = GpuDevice(0, draw(st.sampled_from(["GPU", "Other GPU"])), ComputeCapability.parse(cc), "570", 1, 1)
        env = replace(env, gpus=(gpu,), overridden=False)
    return env


@st.composite
def candidate_sets(draw: st.DrawFn, min_size: int = 1, max_size: int = 5) -> tuple[list[Manifest], Environment]:
    """Manifests a folder or registry may list, and where they are judged (mostly a fit for one)."""
    shared = draw(st.booleans())  # one runtime and platform, so that several fit
    flavor = draw(st.sampled_from(["tensorrt", "tensorrt-rtx"])) if shared else None
    platform = (draw(st.sampled_from(["linux", "windows"])), draw(st.sampled_from(MACHINES))) if shared else None
    gpus = ("8.6", "8.9") if shared else GPU_TEXTS
    found = draw(st.lists(manifests(None, flavor, platform, gpus), min_size=min_size, max_size=max_size))
    like = draw(st.sampled_from(found))
    for created in draw(st.lists(st.sampled_from(CREATED), max_size=max_size - len(found))):
        # rebuilds of one engine: a tie, or the newest build decides
        found.insert(
            draw(st.integers(0, len(found))), like.replace(build=like.build.model_copy(update={"created_utc": created}))
        )
    return found, draw(environments(like=like))


# ---------------------------------------------------------------- tags


@FAST
@given(capabilities)
def test_every_spelling_of_a_capability_reads_back_as_itself(cc: ComputeCapability) -> None:
    """``--cc``, a spec's ``targets`` and a tag's ``sm86`` all name one GPU: what trtforge writes
    (``8.6``, ``sm86``) must read back as that GPU, or a tag would point at another one."""
    for text in (str(cc), cc.sm, f"sm_{cc.major}{cc.minor}", cc.sm.upper(), f" {cc} "):
        assert ComputeCapability.parse(text) == cc, text
        assert re.match(CAPABILITY_PATTERN, text), text  # the spec's JSON Schema takes what the parser takes


#: texts near a capability's spellings: digits (and another script's), sm, separators, every kind of blank
capability_texts = st.one_of(
    st.text(alphabet="0123456789.smSM_ \t\n\x0b\x1c\x85\xa0\u0666\u2028\ufeff", max_size=8), st.text(max_size=8)
)


@FAST
@given(capability_texts)
def test_the_schema_pattern_and_the_parser_take_the_same_capability_texts(text: str) -> None:
    """A spec editor validating against the JSON Schema must see the verdict ``trtforge build``
    gives: a text the pattern takes parses, and one it refuses is a ValueError, never another value."""
    try:
        ComputeCapability.parse(text)
    except ValueError:
        assert re.match(CAPABILITY_PATTERN, text) is None
    else:
        assert re.match(CAPABILITY_PATTERN, text) is not None


@FAST
@given(capabilities, capabilities, capabilities)
def test_capability_order_is_the_order_of_major_then_minor(
    a: ComputeCapability, b: ComputeCapability, c: ComputeCapability
) -> None:
    """``ampere_plus`` is "8.0 and later" by this order: it must be total and numeric (12.0 after
    9.0, never as text), or a newer GPU would be refused."""
    assert (a < b) == ((a.major, a.minor) < (b.major, b.minor))
    assert (a == b) == ((a.major, a.minor) == (b.major, b.minor))
    assert sum([a < b, a == b, b < a]) == 1
    if a <= b <= c:
        assert a <= c


@FAST
@given(platforms, st.sampled_from(["", " "]))
def test_a_platform_tag_reads_back_as_its_platform(platform: Platform, pad: str) -> None:
    """A tag's platform (``win_amd64``) and ``--platform`` name the same platform."""
    assert Platform.parse(pad + platform.tag + pad) == platform
    assert Platform.parse(platform.tag.upper()) == platform


@FAST
@given(
    st.one_of(
        st.from_regex(
            r"\s?(linux|windows|win|Win32|darwin)_(x86_64|aarch64|amd64|arm64|AMD64|ppc64le|)\s?", fullmatch=True
        ),
        st.text(max_size=20),
    )
)
def test_a_platform_text_is_a_known_platform_or_a_value_error(text: str) -> None:
    """``--platform`` never yields a platform no tag can say (it would match no engine, silently)."""
    try:
        platform = Platform.parse(text)
    except ValueError as exc:
        assert str(exc).startswith(f"'{text}'")
    else:
        assert platform.os in ("linux", "windows") and platform.machine in MACHINES
        assert Platform.parse(platform.tag) == platform


@FAST
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=4))
def test_a_trt_version_reads_back_as_its_numbers(parts: list[int]) -> None:
    """The version a manifest records is the version the rules compare."""
    assert parse_trt_version(".".join(map(str, parts))) == tuple(parts)


@FAST
@given(st.one_of(st.text(alphabet="0123456789.x \n\u0666", max_size=12), st.text(max_size=12)))
def test_a_trt_version_is_numbers_and_dots_or_a_value_error(text: str) -> None:
    """No other text (``10.x``, ``10.3\\n``, a digit of another script) is read as some version."""
    try:
        parts = parse_trt_version(text)
    except ValueError:
        assert re.fullmatch(r"[0-9]+(\.[0-9]+){0,3}", text) is None
    else:
        assert re.fullmatch(r"[0-9]+(\.[0-9]+){0,3}", text)
        assert parts == tuple(int(part) for part in text.split("."))


@FAST
@given(st.sampled_from(["tensorrt", "tensorrt-rtx"]), versions(), st.booleans())
def test_a_tags_version_is_the_major_for_version_compatible_engines_else_major_minor(
    flavor: str, version: str, version_compatible: bool
) -> None:
    """``trt10`` promises every later 10.x runtime; ``trt10.13`` only its own release: a tag must not
    promise more than the engine keeps."""
    parts = version.split(".")
    kept = parts[:1] if version_compatible else parts[:2]
    prefix = "rtx" if flavor == "tensorrt-rtx" else "trt"
    assert short_version(flavor, version, version_compatible) == prefix + ".".join(kept)


@FAST
@given(st.lists(capabilities, max_size=12), st.randoms(use_true_random=False))
def test_the_gpu_tag_names_the_set_of_gpus(listed: list[ComputeCapability], rng: random.Random) -> None:
    """``targets: [8.9, 8.6]`` and ``[8.6, 8.9, 8.6]`` are one engine, so one file name; and the
    tag names exactly those GPUs (read back, the set given)."""
    shuffled = list(listed)
    rng.shuffle(shuffled)
    text = gpus_tag(tuple(listed), None)
    assert text == gpus_tag(tuple(shuffled), None)
    if listed:
        assert {ComputeCapability.parse(part) for part in text.split(".")} == set(listed)
    else:
        assert text == "anygpu"


def _split_stem(stem: str) -> list[tuple[str, str, str]]:
    """Every way to read ``stem`` as ``{name}-{precision}-{tag}`` with a valid name and a tag as
    ``EngineTag.render`` writes them (``trt10.13-sm86.sm89-linux_x86_64``, a range, ``sm80plus``)."""
    tag = re.compile(
        r"(?:trt|rtx)[0-9]+(?:\.[0-9]+)?-(?:anygpu|sm[0-9]+plus|sm[0-9]+(?:\.sm[0-9]+)*|sm[0-9]+-sm[0-9]+)"
        r"-(?:linux|win)_[a-z0-9_]+"
    )
    found: list[tuple[str, str, str]] = []
    for precision in PRECISIONS:
        marker = f"-{precision}-"
        start = stem.find(marker)
        while start != -1:
            name, rest = stem[:start], stem[start + len(marker) :]
            if valid_name(name) and tag.fullmatch(rest):
                found.append((name, precision, rest))
            start = stem.find(marker, start + 1)
    return found


@SLOWER
@given(names, precisions, engine_tags())
def test_an_artifact_stem_is_a_listed_oci_tag_that_says_its_name_precision_and_tag(
    name: str, precision: str, tag: EngineTag
) -> None:
    """The stem is the OCI tag ``publish`` pushes and the file name a folder lists: it must fit
    the OCI tag rule, be listed (never hidden), and read back one way only, so no two artifacts
    (``a`` in fp16 and ``a-fp16`` in fp32, say) share a file or a registry tag."""
    assert valid_name(name)
    stem = artifact_stem(name, precision, tag)
    assert len(stem) <= MAX_OCI_TAG and OCI_TAG.fullmatch(stem), stem
    assert listed_name(stem + MANIFEST_SUFFIX) and listed_name(stem + ".engine")
    rendered = stem.removeprefix(f"{name}-{precision}-")
    assert _split_stem(stem) == [(name, precision, rendered)]
    if len(str(tag)) + len(name) + len(precision) + 2 <= MAX_OCI_TAG:
        assert rendered == str(tag)  # the full tag whenever it fits


@SLOWER
@given(names, precisions, engine_tags(), st.integers(1, 2**22), st.from_regex(r"[a-z0-9_]{8}", fullmatch=True))
def test_a_writers_temporary_is_never_listed_as_an_artifact(
    name: str, precision: str, tag: EngineTag, pid: int, token: str
) -> None:
    """A build in progress keeps ``.{file}.{pid}-{token}.tmp`` beside its final files: a listing
    that took one for an artifact would serve a half-written engine; the sweep must still know it."""
    for suffix in (MANIFEST_SUFFIX, ".engine"):
        final = artifact_stem(name, precision, tag) + suffix
        for kind in ("tmp", "journal.tmp", "bak.tmp"):
            temporary = f".{final}.{pid}-{token}.{kind}"
            assert not listed_name(temporary)
            assert TempName.parse(temporary) == TempName(final, pid, kind)
        assert listed_name(final) and TempName.parse(final) is None


@SLOWER
@given(st.lists(st.tuples(manifests(), precisions), min_size=1, max_size=4))
def test_a_folder_lists_exactly_the_artifacts_written_to_it(drawn: list[tuple[Manifest, str]]) -> None:
    """``serve FOLDER``, ``select_artifact`` and ``dir://`` see the manifests a build wrote, as
    written (name, precision, tag), beside the engine of that name; no two builds of another name
    or precision share a file; a hidden copy beside them is never seen."""
    found = [_with_precision(manifest, precision) for manifest, precision in drawn]
    unique = {manifest.stem: manifest for manifest in found}
    builds = {(m.name, m.precision, m.tag) for m in found}
    assert len(unique) == len(builds)  # one file name per (name, precision, tag), never shared
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for stem, manifest in unique.items():
            (root / f"{stem}{MANIFEST_SUFFIX}").write_text(manifest.to_json())
            (root / f"{stem}.engine").write_bytes(b"")
            (root / f".{stem}{MANIFEST_SUFFIX}").write_text(manifest.to_json())  # an editor's copy
            (root / f".{stem}.engine").write_bytes(b"")
        listing = list_artifacts(root)
    assert listing.skipped == ()
    assert sorted(listed.manifest.stem for listed in listing.artifacts) == sorted(unique)
    for listed in listing.artifacts:
        assert listed.manifest == unique[listed.manifest.stem]
        assert listed.engine.name == listed.manifest.artifact.file


# ---------------------------------------------------------------- compat rules


def _rules(manifest: Manifest, env: Environment) -> set[Rule]:
    return {problem.rule for problem in problems(manifest, env, allow_host_code=True)}


@SLOWER
@given(manifests(), environments(), st.booleans(), st.booleans())
def test_problems_is_a_pure_function_with_one_line_per_rule(
    manifest: Manifest, env: Environment, require_signature: bool, allow_host_code: bool
) -> None:
    """``check``, the loader, ``pull`` and ``select_engine`` must give one verdict: the same inputs
    give the same problems, each rule at most once, each message one line a CI log can grep."""
    first = problems(manifest, env, require_signature=require_signature, allow_host_code=allow_host_code)
    again = problems(manifest, env, require_signature=require_signature, allow_host_code=allow_host_code)
    assert first == again
    rules = [problem.rule for problem in first]
    assert len(rules) == len(set(rules))
    for problem in first:
        assert problem.message and problem.message.splitlines() == [problem.message]


@SLOWER
@given(manifests(), environments())
def test_the_platform_rule(manifest: Manifest, env: Environment) -> None:
    """Rule 1: an enterprise plan loads on the platform that built it only; a TensorRT-RTX one on
    Linux and Windows alike, of its machine."""
    built = Platform(manifest.platform.os, manifest.platform.machine)
    if manifest.tensorrt.flavor == "tensorrt-rtx":
        fits = built.machine == env.platform.machine
    else:
        fits = built == env.platform
    assert (Rule.PLATFORM not in _rules(manifest, env)) == fits


@SLOWER
@given(manifests(), environments())
def test_the_gpu_rule_is_the_listed_gpus_or_ampere_and_later(manifest: Manifest, env: Environment) -> None:
    """Rule 4: an engine loads on exactly the GPUs it lists, ``ampere_plus`` on 8.0 and later;
    without a GPU (and no ``--cc``) nothing loads."""
    cc = env.compute_capability
    gpu = manifest.gpu
    if cc is None:
        fits = False
    elif gpu.hardware_compatibility == "ampere_plus":
        fits = cc >= ComputeCapability(8, 0)
    else:
        fits = cc in {ComputeCapability.parse(text) for text in gpu.compute_capabilities}
    assert (Rule.GPU not in _rules(manifest, env)) == fits


@SLOWER
@given(manifests(), environments())
def test_another_runtime_is_a_flavor_problem_never_a_version_one(manifest: Manifest, env: Environment) -> None:
    """Rule 2 before rule 3: TensorRT and TensorRT-RTX cannot load each other's plans whatever the
    versions, and a runtime that is not there has no version to compare."""
    rules = _rules(manifest, env)
    if env.flavor != manifest.tensorrt.flavor or env.version is None:
        assert Rule.FLAVOR in rules and Rule.VERSION not in rules
    else:
        assert Rule.FLAVOR not in rules


def _loads(version: str, version_compatible: bool, runtime: str, flavor: str = "tensorrt") -> bool:
    manifest = manifest_for(flavor, version, version_compatible, ("8.6",))
    return Rule.VERSION not in _rules(manifest, env_for(flavor, runtime, "8.6"))


four_part = st.lists(st.integers(0, 40), min_size=4, max_size=4).map(lambda parts: ".".join(map(str, parts)))


@FAST
@given(st.sampled_from(["tensorrt", "tensorrt-rtx"]), versions(major=st.integers(1, 12)), four_part)
def test_a_plain_engine_loads_on_the_version_that_built_it_only(flavor: str, built: str, runtime: str) -> None:
    """Rule 3: a plain plan loads on its own release (as the runtime reports it, with a build
    number, or as the wheel spells it) and on no other version given at the same precision."""
    assert _loads(built, False, built, flavor)
    parts = parse_trt_version(built)
    if len(parts) == 3:
        assert _loads(built, False, f"{built}.7", flavor)  # the build number the manifest does not give
    if len(parts) == 4:
        assert _loads(built, False, runtime, flavor) == (runtime == built)


vc_built = versions(major=st.integers(8, 11)).filter(lambda text: parse_trt_version(text)[:2] >= (8, 6))


#: versions of a few small parts, so that a builder and a runtime often share a major and minor
close_parts = st.lists(st.integers(0, 6), min_size=3, max_size=3)


@FAST
@given(st.integers(8, 11), close_parts, st.integers(7, 12), close_parts, close_parts)
def test_a_version_compatible_engine_loads_on_every_later_runtime_of_the_majors_it_names(
    built_major: int, built_parts: list[int], runtime_major: int, first: list[int], second: list[int]
) -> None:
    """Rule 3: a version-compatible plan loads on its own release and every later one of its major
    and of the majors NVIDIA lists (``version_compatible_majors``), never on an older runtime: so
    upgrading the runtime within those majors never breaks a deployment (monotonic), and the
    plain plan of the same version loads nowhere the version-compatible one does not."""
    built_tuple = (built_major, max(built_parts[0], 6 if built_major == 8 else 0), *built_parts[1:])
    built = ".".join(map(str, built_tuple[: 2 + built_parts[2] % 3]))  # 10.3, 10.3.1 or 10.3.1.2
    built_tuple = parse_trt_version(built) + (0,) * (3 - len(parse_trt_version(built)))
    low, high = sorted([(runtime_major, *first), (runtime_major, *second)])  # as a runtime reports it
    assert _loads(built, True, built)
    loads = [_loads(built, True, ".".join(map(str, runtime))) for runtime in (low, high)]
    event(f"loads on the older runtime: {loads[0]}")
    assert not loads[0] or loads[1]  # monotonic within a major
    for runtime, fits in zip((low, high), loads, strict=True):
        newer = runtime[: len(built_tuple)] >= built_tuple[: len(runtime)]
        assert fits == (runtime_major in version_compatible_majors(built_major) and newer)
        if _loads(built, False, ".".join(map(str, runtime))):
            assert fits  # version compatibility only widens where a plan loads


@FAST
@given(vc_built, st.integers(0, 20))
def test_across_majors_a_version_compatible_engine_loads_where_nvidia_says_only(built: str, runtime_major: int) -> None:
    """Rule 3's list: 8 on 9 and 10, 9 on 10, 10 on 11, never on an older major or an 8 on 11;
    ``version_compatible_majors`` (what messages advise) says the same as the rule judges."""
    built_major = parse_trt_version(built)[0]
    runtime = f"{runtime_major}.999.0.0"  # newer than any builder drawn of its major (parts up to 200)
    expected = runtime_major == built_major or (built_major, runtime_major) in CROSS_MAJOR_VERSION_COMPATIBLE
    assert _loads(built, True, runtime) == expected
    assert (runtime_major in version_compatible_majors(built_major)) == expected
    assert all(later > built_major for later in version_compatible_majors(built_major)[1:])


@FAST
@given(
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 2000)),
    st.one_of(st.none(), st.sampled_from(["a" * 64, "d" * 64])),
    st.one_of(st.none(), st.sampled_from(["mine", "other.engine"])),
)
def test_the_content_rule_refuses_exactly_what_differs(
    missing: bool, size: int | None, sha256: str | None, engine_file: str | None
) -> None:
    """Rule 5: an engine whose measured size, sha256 or file name differs from the manifest's (or
    that is missing) is refused; what was not measured is not judged, so ``pull`` can rank first."""
    manifest = manifest_for()
    file = manifest.artifact.file if engine_file == "mine" else engine_file
    facts = ArtifactFacts(engine_file=file, engine_missing=missing, engine_size=size, engine_sha256=sha256)
    differs = (
        missing
        or (size is not None and size != manifest.artifact.size)
        or (sha256 is not None and sha256 != manifest.artifact.sha256)
        or (file is not None and file != manifest.artifact.file)
    )
    assert (content_problem(manifest, facts) is not None) == differs


@FAST
@given(st.sampled_from(SignatureStatus), st.booleans())
def test_a_bad_signature_always_refuses_a_missing_or_untrusted_one_when_required(
    status: SignatureStatus, required: bool
) -> None:
    """Rule 6: a signature that does not verify refuses under every policy; requiring a signature
    only ever refuses more."""
    facts = ArtifactFacts(signature=status, signature_key_id="0123abcd")
    refused = signature_problem(facts, required) is not None
    if status in (SignatureStatus.INVALID, SignatureStatus.MALFORMED):
        assert refused
    elif status is SignatureStatus.VALID:
        assert not refused
    else:
        assert refused == required
    assert not refused or signature_problem(facts, True) is not None


@SLOWER
@given(candidate_sets(max_size=2), st.booleans())
def test_host_code_refuses_version_compatible_engines_alone_and_only_by_policy(
    drawn: tuple[list[Manifest], Environment], allow_host_code: bool
) -> None:
    """Rule 7: a version-compatible plan runs code shipped inside it, so it needs the policy's
    consent; the consent changes no other verdict (it is no way around another rule)."""
    env = drawn[1]
    for manifest in drawn[0]:
        found = {problem.rule for problem in problems(manifest, env, allow_host_code=allow_host_code)}
        assert (Rule.HOST_CODE in found) == (manifest.tensorrt.version_compatible and not allow_host_code)
        assert found - {Rule.HOST_CODE} == _rules(manifest, env)


@FAST
@given(st.sampled_from(SignatureStatus), st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=24))
def test_every_problem_message_is_one_line_whatever_the_artifact_says(
    status: SignatureStatus, key_id: str, engine_file: str
) -> None:
    """A refusal's reasons (``IncompatibleEngineError.reasons``, ``check --json``'s ``problems``) are
    one line each: a key id a manifest gives or an engine's file name on disk must not add a line
    that reads as another reason or a log line of its own."""
    env = env_for("tensorrt", "10.0.0.1", "8.6")
    facts = ArtifactFacts(engine_file=engine_file, engine_size=1, signature=status, signature_key_id=key_id)
    for problem in problems(manifest_for(), env, facts, require_signature=True):
        assert problem.message.splitlines() == [problem.message], problem


def test_a_key_id_with_a_line_break_in_a_manifest_is_refused_on_one_line() -> None:
    """Found by the property above: a manifest's ``signature.key_id`` is the artifact's word, and
    ``"k\nengine OK"`` made the refusal two reasons when a program printed ``.reasons`` a line each
    (README "Errors"). The value is kept, written as ``repr`` writes a line break."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from trtforge.compat import Refused
    from trtforge.keys import TrustedKey
    from trtforge.selection import signature_facts

    public = Ed25519PrivateKey.generate().public_key()
    signed = manifest_for().replace(signature={"algorithm": "rsa", "key_id": "k\nengine OK", "value": "x"})
    policy = LoadPolicy(require_signature=True, trusted_keys=(TrustedKey(public, "trusted", "t"),))
    found = problems(manifest_for(), env_for(), signature_facts(signed, policy), require_signature=True)
    assert [problem.rule for problem in found] == [Rule.SIGNATURE]
    assert Refused("refused", found).reasons == (
        "signature by key k\\nengine OK cannot be verified: its algorithm is not ed25519 or ecdsa-p256, "
        "or its value is not base64; re-sign it (trtforge sign)",
    )


# ---------------------------------------------------------------- selection


@SLOWER
@given(candidate_sets(min_size=3, max_size=3))
def test_the_preference_is_a_strict_weak_order(drawn: tuple[list[Manifest], Environment]) -> None:
    """The ranking must be a strict weak order, or which engine serves would depend on the order a
    folder or registry happens to list them."""
    (a, b, c), env = drawn
    pa, pb, pc = (preference(m, env) for m in (a, b, c))
    assert not pa < pa
    assert not (pa < pb and pb < pa)
    if pa < pb and pb < pc:
        assert pa < pc
    incomparable = lambda x, y: not x < y and not y < x  # noqa: E731
    if incomparable(pa, pb) and incomparable(pb, pc):
        assert incomparable(pa, pc)
    assert incomparable(pa, pb) == (pa == pb)


@SLOWER
@given(candidate_sets(), st.sampled_from([True, True, False]), st.randoms(use_true_random=False))
def test_select_engine_picks_a_best_compatible_engine_in_any_order(
    drawn: tuple[list[Manifest], Environment], allow_host_code: bool, rng: random.Random
) -> None:
    """``select_engine`` never picks an engine ``problems()`` refuses, picks one whenever one is
    compatible, and the rank of its pick does not depend on the listing order (a tie goes to the
    first listed, as the README says)."""
    found, env = drawn
    policy = LoadPolicy(allow_host_code=allow_host_code) if allow_host_code else DEFAULT_POLICY
    candidates = [(manifest, index) for index, manifest in enumerate(found)]
    compatible = [
        index for manifest, index in candidates if not problems(manifest, env, allow_host_code=allow_host_code)
    ]
    event(f"compatible candidates: {min(len(compatible), 2)}")
    orders = [candidates, candidates[::-1]]
    shuffled = list(candidates)
    rng.shuffle(shuffled)
    orders.append(shuffled)
    picks = []
    for order in orders:
        chosen, rejected = select_engine(order, env, policy)
        assert [rejection.manifest for rejection in rejected] == [found[i] for _, i in order if i not in compatible]
        if not compatible:
            assert chosen is None
            continue
        assert chosen is not None and chosen[1] in compatible
        ranks = [preference(found[index], env) for index in compatible]
        assert preference(chosen[0], env) == min(ranks)
        first_best = next(
            index for _, index in order if index in compatible and preference(found[index], env) == min(ranks)
        )
        assert chosen[1] == first_best
        picks.append(preference(chosen[0], env))
    assert len(set(picks)) <= 1


def _with_precision(manifest: Manifest, precision: str) -> Manifest:
    """``manifest`` as a build of another precision writes it (its file name follows)."""
    return Manifest.model_validate(retag({**manifest.to_dict(), "precision": precision}))


@SLOWER
@given(candidate_sets(max_size=4), st.lists(precisions, min_size=4, max_size=4), st.randoms(use_true_random=False))
def test_several_compatible_precisions_are_refused_in_any_order(
    drawn: tuple[list[Manifest], Environment], chosen: list[str], rng: random.Random
) -> None:
    """Compatible engines of several precisions are the user's question (exit 2) whatever order
    they are listed in, never a pick by position; one precision is always a pick."""
    built, env = drawn
    found = [_with_precision(manifest, precision) for manifest, precision in zip(built, chosen, strict=False)]
    policy = LoadPolicy(allow_host_code=True)
    fitting = {m.precision for m in found if not problems(m, env, allow_host_code=True)}
    event(f"compatible precisions: {len(fitting)}")
    shuffled = list(enumerate(found))
    rng.shuffle(shuffled)
    for order in ([(m, i) for i, m in enumerate(found)], [(m, i) for i, m in shuffled]):
        if len(fitting) > 1:
            with pytest.raises(InvalidInputError, match="--precision"):
                select_engine(order, env, policy)
        else:
            picked, _ = select_engine(order, env, policy)
            assert (picked is None) == (not fitting)
