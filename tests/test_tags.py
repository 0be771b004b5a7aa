"""Compute-capability normalizer, compatibility tags (artifact names) and the TensorRT version rule."""

from __future__ import annotations

import re

import pytest

from trtforge.compat import comparable_versions, version_tuple, weakly_typed
from trtforge.errors import InvalidInputError
from trtforge.tags import (
    TRT_VERSION_RULE,
    ComputeCapability,
    EngineTag,
    Platform,
    artifact_stem,
    canonical_machine,
    parse_trt_version,
    valid_name,
)

CC = ComputeCapability.parse


@pytest.mark.parametrize("text", ["8.6", "sm86", "sm_86", "SM86", " 8.6 ", 8.6])
def test_one_normalizer_for_every_spelling(text: object) -> None:
    assert ComputeCapability.parse(text) == ComputeCapability(8, 6)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["sm120", "sm_120", "12.0"])
def test_three_digit_capabilities(text: str) -> None:
    assert CC(text) == ComputeCapability(12, 0)
    assert CC(text).sm == "sm120"


# other scripts' digits: Python's int() reads "٦" as 6, the JSON Schema's pattern takes ASCII only
@pytest.mark.parametrize("text", ["86", "sm8", "9", "eight", "8.6.1", "sm_0", "8.\u0666", "sm8\u0666"])
def test_rejects_ambiguous_spellings(text: str) -> None:
    with pytest.raises(ValueError, match=r"8\.6, sm86 or sm_86"):
        CC(text)


def test_ordering() -> None:
    assert sorted([CC("12.0"), CC("7.5"), CC("8.9")]) == [CC("7.5"), CC("8.9"), CC("12.0")]


def _tag(**overrides: object) -> EngineTag:
    values: dict[str, object] = {
        "flavor": "tensorrt-rtx",
        "version": "1.7.1.116",
        "version_compatible": False,
        "capabilities": (CC("8.9"), CC("8.6")),
        "and_later_from": None,
        "platform": Platform("linux", "x86_64"),
    }
    values.update(overrides)
    return EngineTag(**values)  # type: ignore[arg-type]


def test_tag_examples_from_the_design() -> None:
    assert _tag().render() == "rtx1.7-sm86.sm89-linux_x86_64"
    assert artifact_stem("digits-cnn", "int8", _tag()) == "digits-cnn-int8-rtx1.7-sm86.sm89-linux_x86_64"
    enterprise = _tag(flavor="tensorrt", version="10.13.0.35", capabilities=(CC("9.0"),))
    assert enterprise.render() == "trt10.13-sm90-linux_x86_64"
    assert _tag(flavor="tensorrt", version="10.13.0.35", version_compatible=True).render().startswith("trt10-")
    assert _tag(version_compatible=True).render().startswith("rtx1-")
    assert _tag(capabilities=(), and_later_from=CC("8.0")).render() == "rtx1.7-sm80plus-linux_x86_64"
    assert _tag(platform=Platform("windows", "x86_64")).render().endswith("-win_amd64")


def test_long_capability_list_becomes_a_range_within_the_oci_limit() -> None:
    many = tuple(ComputeCapability(major, minor) for major in range(7, 13) for minor in range(10))
    stem = artifact_stem("n" * 64, "int8", _tag(capabilities=many))
    assert len(stem) <= 128
    assert "-sm70-sm129-" in stem
    assert re.fullmatch(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", stem)


def test_a_stem_of_exactly_the_oci_limit_keeps_its_list_and_one_past_it_takes_the_range() -> None:
    """The limit is the whole stem's (name and precision too), and inclusive: a list that fits in
    128 characters is kept; one more capability, and the stem (not the tag alone) would pass it."""
    seven = tuple(CC(cc) for cc in ("7.5", "8.0", "8.6", "10.0", "10.1", "12.0", "12.1"))
    stem = artifact_stem("n" * 64, "int8", _tag(capabilities=seven))
    assert len(stem) == 128 and stem.endswith("-rtx1.7-sm75.sm80.sm86.sm100.sm101.sm120.sm121-linux_x86_64")
    longer = artifact_stem("n" * 64, "int8", _tag(capabilities=(*seven, CC("8.9"))))
    assert longer == "n" * 64 + "-int8-rtx1.7-sm75-sm121-linux_x86_64"


def test_a_name_is_at_most_64_characters() -> None:
    assert valid_name("a" * 64)
    assert not valid_name("a" * 65)


@pytest.mark.parametrize(("text", "tag"), [("linux_x86_64", "linux_x86_64"), ("win_amd64", "win_amd64")])
def test_platform_round_trip(text: str, tag: str) -> None:
    assert Platform.parse(text).tag == tag


@pytest.mark.parametrize(
    ("text", "platform"),
    [
        ("linux_amd64", Platform("linux", "x86_64")),
        ("linux_arm64", Platform("linux", "aarch64")),
        ("LINUX_AARCH64", Platform("linux", "aarch64")),
        ("win_amd64", Platform("windows", "x86_64")),
        ("windows_x86_64", Platform("windows", "x86_64")),
    ],
)
def test_other_spellings_of_a_machine_are_trtforges_own(text: str, platform: Platform) -> None:
    """What Windows, Debian and wheel tags call a machine is the tag trtforge writes: a check against
    linux_amd64 never advises pulling an engine tagged linux_amd64, which no build writes."""
    assert Platform.parse(text) == platform


@pytest.mark.parametrize("text", ["linux_x86 64", "linux_sparc", "linux_x86", "win_"])
def test_an_unknown_machine_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="linux_x86_64, linux_aarch64 or win_amd64"):
        Platform.parse(text)


@pytest.mark.parametrize("text", ["darwin_x86_64", "macos_arm64", "freebsd_x86_64", "x86_64_linux"])
def test_an_unknown_operating_system_is_refused(text: str) -> None:
    """Engines load on Linux and Windows only: no tag of another system is read as a platform."""
    with pytest.raises(ValueError, match=f"'{text}' is not a platform; use linux_x86_64, linux_aarch64 or win_amd64"):
        Platform.parse(text)


@pytest.mark.parametrize("os_name", ["Windows", "windows", "win", "win32", "WIN32"])
def test_every_spelling_of_windows_is_one_platform(os_name: str) -> None:
    """``platform.system()`` says Windows, ``sys.platform`` win32, a tag win: one platform, win_amd64."""
    assert Platform(os_name, "AMD64") == Platform("windows", "x86_64")
    assert Platform(os_name, "AMD64").tag == "win_amd64"


def test_detection_and_parsing_share_one_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    from trtforge.environment import detect_platform

    for machine, expected in (("AMD64", "x86_64"), ("arm64", "aarch64"), ("x86_64", "x86_64")):
        monkeypatch.setattr(platform, "machine", lambda machine=machine: machine)
        assert detect_platform().machine == expected == canonical_machine(machine)


# ---------------------------------------------------------------- the TensorRT version rule


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("10.13.0.35", (10, 13, 0, 35)),  # enterprise TensorRT: major.minor.patch.build
        ("1.7.1.116", (1, 7, 1, 116)),  # TensorRT-RTX
        ("10.3.0", (10, 3, 0)),  # the pip wheel's and the engine header's precision
        ("10.3", (10, 3)),
        ("10", (10,)),  # --trt-version 10 is 10.0.0, never "any 10.x" (compat.comparable_versions)
        ("010.03", (10, 3)),
    ],
)
def test_a_trt_version_is_up_to_four_numbers(text: str, parts: tuple[int, ...]) -> None:
    assert parse_trt_version(text) == parts
    assert version_tuple(text) == parts  # what the rules compare: the same numbers


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x",
        "10.x",
        "10..3",
        "10.",
        ".10",
        "10.13.0.35.1",
        " 10.3",
        "10.3\n",
        "10.3 ",
        "-10",
        "１０.３",
        "10.٣",
        "24.08-py3",
    ],
)
def test_anything_else_is_no_trt_version(text: str) -> None:
    """``version_tuple`` kept the numeric parts and dropped the rest: ``10.x`` was 10.0.0, ``''``
    was 0.0.0, ``10.3\\n`` (which the manifest's ``$`` let through) lost its last part. A Triton
    release (``24.08``) is a version of another thing: as text with its container, none."""
    with pytest.raises(ValueError, match=re.escape(TRT_VERSION_RULE)):
        parse_trt_version(text)
    with pytest.raises(InvalidInputError, match=re.escape(f"{text!r} is not a TensorRT version")) as refused:
        version_tuple(text)
    assert refused.value.exit_code == 2


@pytest.mark.parametrize(
    ("reported", "release"),
    [
        ("10.0.0b6", (10, 0, 0)),  # an early-access wheel
        ("9.3.0.post12.dev1", (9, 3, 0)),  # TensorRT 9's wheels on PyPI
        ("10.0.0rc1", (10, 0, 0)),
        ("10.0.0-rc.1", (10, 0, 0)),
        ("10.3.0+cuda12", (10, 3, 0)),  # a local version
    ],
)
def test_a_wheels_pre_post_dev_or_local_part_is_dropped_explicitly(reported: str, release: tuple[int, ...]) -> None:
    """A runtime's version is what its wheel reports (``installed_version``): the rules judge its
    release numbers; the manifest's side is numbers only."""
    with pytest.raises(ValueError):
        parse_trt_version(reported)
    assert version_tuple(reported) == release
    assert weakly_typed("tensorrt", reported) is (release < (11,))
    assert comparable_versions("10.0.0.6", reported)[1] == release[:3]


def test_a_target_with_no_version_in_it_is_refused_not_judged_as_another() -> None:
    """``Target(version="1.x")`` (Python; the CLI checks ``--trt-version`` first) reached the rules,
    which judged it as 1.0.0: "rebuild with TensorRT-RTX 1.x"."""
    from trtforge.compat import runtime_problem
    from trtforge.environment import Target
    from trtforge.manifest import TensorRTInfo

    built = TensorRTInfo(flavor="tensorrt-rtx", version="1.7.1.116", version_compatible=False)
    assert runtime_problem(built, Target(flavor="tensorrt-rtx", version="1.7.1").environment())[1] is None
    with pytest.raises(InvalidInputError, match=r"'1\.x' is not a TensorRT version"):
        runtime_problem(built, Target(flavor="tensorrt-rtx", version="1.x").environment())
