"""Compute-capability normalizer and compatibility tags (artifact names)."""

from __future__ import annotations

import re

import pytest

from trtforge.tags import ComputeCapability, EngineTag, Platform, artifact_stem, canonical_machine

CC = ComputeCapability.parse


@pytest.mark.parametrize("text", ["8.6", "sm86", "sm_86", "SM86", " 8.6 ", 8.6])
def test_one_normalizer_for_every_spelling(text: object) -> None:
    assert ComputeCapability.parse(text) == ComputeCapability(8, 6)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["sm120", "sm_120", "12.0"])
def test_three_digit_capabilities(text: str) -> None:
    assert CC(text) == ComputeCapability(12, 0)
    assert CC(text).sm == "sm120"


@pytest.mark.parametrize("text", ["86", "sm8", "9", "eight", "8.6.1", "sm_0"])
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


def test_detection_and_parsing_share_one_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    from trtforge.environment import detect_platform

    for machine, expected in (("AMD64", "x86_64"), ("arm64", "aarch64"), ("x86_64", "x86_64")):
        monkeypatch.setattr(platform, "machine", lambda machine=machine: machine)
        assert detect_platform().machine == expected == canonical_machine(machine)
