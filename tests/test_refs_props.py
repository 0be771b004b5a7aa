"""Properties of the text trtforge reads besides the spec: registry locations (``publish --to``,
``pull URI``, ``publish_to:``), the target flags of ``check`` and ``pull`` and the project file
``trtforge.yaml`` with the matrix ``trtforge matrix`` plans from it. Whatever the text, it is a
value that formats back to the same text, or one line of trtforge's own (exit 2), never an
internal error; a password in a URI is never repeated; and the OCI references trtforge takes and
writes are the ones the OCI distribution spec's grammar takes."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import models
import pytest
import yaml
from clitools import cli
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from trtforge.cli.common import target_from_flags
from trtforge.environment import Target
from trtforge.errors import InvalidInputError, SpecError, one_line
from trtforge.project import ProjectSettings, load_settings
from trtforge.publish.base import DirLocation, OciLocation, TritonLocation, check_name, parse_location, redacted
from trtforge.spec import PROJECT_FILE
from trtforge.tags import (
    FLAVORS,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    PRECISIONS,
    ComputeCapability,
    EngineTag,
    Platform,
    artifact_stem,
    parse_trt_version,
)
from trtforge.triton_releases import find_release, releases

# The OCI Distribution Specification v1.1.0, spec.md, "Pulling manifests": written here, apart from
# trtforge's own patterns, as the oracle. "<name> MUST match the following regular expression",
# and "<reference> as a tag MUST be at most 128 characters in length and MUST match the following
# regular expression".
SPEC_NAME = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
SPEC_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

#: characters that mean something in a URI, a path or a shell, and some that break lines
URI_CHARS = list("aZ09.-_~:/@[]?#%!$&'()*+,;= \t\r\n\x00\x85\u2028é٥")
uri_text = st.text(st.sampled_from(URI_CHARS), max_size=24)


def _refusal(error: InvalidInputError) -> str:
    """The line the CLI prints for ``error``; the error must be trtforge's own, exit 2."""
    assert type(error).exit_code == 2, error
    printed = one_line(str(error))
    assert len(printed.splitlines()) == 1 and printed.strip(), printed
    return printed


# ---------------------------------------------------------------- registry locations


@st.composite
def location_texts(draw: st.DrawFn) -> str:
    """What a user may write as a registry: any text, or a URI of any scheme made of URI parts."""
    if draw(st.booleans()):
        return draw(st.text(max_size=40))
    scheme = draw(st.sampled_from(["oci", "dir", "triton", "OCI", "ocy", "s3", "http", ""]))
    host = draw(st.one_of(st.sampled_from(["localhost:5000", "127.0.0.1", "[::1]:5000", "registry.io"]), uri_text))
    return f"{scheme}://{host}{draw(st.sampled_from(['', '/', '//']))}{draw(uri_text)}"


@settings(max_examples=600)
@given(text=location_texts())
# a tab or line break: urlsplit deleted it, and the location was another one (defect 2)
@example(text="oci://localhost:5000/team\n")
@example(text="oci://ho\tst/team/models")
# "~user" of no such user: pathlib's RuntimeError was an internal error (defect 3)
@example(text="dir://~no-such-user-here/engines")
@example(text="triton://~no-such-user-here")
def test_any_location_text_is_a_location_that_formats_back_or_one_line(text: str) -> None:
    """``--to``, ``pull URI`` and ``publish_to:`` are typed by hand: a location trtforge takes is
    the one the text says (written back as its URI, it is the same location), anything else is
    exit 2 naming the text and the fix, never "internal error"."""
    try:
        location = parse_location(text)
    except InvalidInputError as error:
        assert redacted(text) in str(error) or text in str(error) or "://" not in text, str(error)
        _refusal(error)
        return
    assert parse_location(location.uri) == location
    if isinstance(location, OciLocation):
        prefix = f"oci://{location.host}/"
        assert text.startswith(prefix) and text[len(prefix) :].strip("/") == location.repository, location
    else:
        assert isinstance(location, (DirLocation, TritonLocation)) and location.path.is_absolute()
        rest = text.partition("://")[2]
        if rest.startswith("/"):
            assert location.path == Path(rest), location


@settings(max_examples=50)
@given(
    user=st.text(st.sampled_from(list("ab:.-_%~")), max_size=5),
    password=st.tuples(uri_text, uri_text).map(lambda parts: f"{parts[0]}SECRET{parts[1]}"),
    scheme=st.sampled_from(["oci", "OCI", "http", "https", "s3", "ocy"]),
    host=st.sampled_from(["localhost:5000", "registry.io", "[::1]", "[::1", "", "host:99999"]),
    path=st.one_of(st.just(""), uri_text.map(lambda text: "/" + text)),
)
# no path after the host: the userinfo was not seen as such, and the password was printed (defect 1)
@example(user="ci", password="SECRET", scheme="oci", host="registry.io", path="")
@example(user="ci", password="SECRET", scheme="oci", host="[::1", path="")
@example(user="ci", password="SECRET", scheme="http", host="registry.io", path="")
def test_a_password_in_a_uri_is_never_repeated(user: str, password: str, scheme: str, host: str, path: str) -> None:
    """CI logs keep every error line and --json document: a password typed into a URI must not
    reach them, whatever else the URI gets wrong. A password is RFC 3986's userinfo, with the
    '/' and '@' trtforge also tells apart; a '/' in a password of a URI with no path at all is
    not told from ``host/repo@tag`` (see the report), so such passwords have a path after them."""
    if "/" in password and not path.startswith("/"):
        path = "/" + path
    text = f"{scheme}://{user}:{password}@{host}{path}"
    assert "SECRET" not in redacted(text)
    with pytest.raises(InvalidInputError) as refused:
        parse_location(text)
    assert "SECRET" not in str(refused.value)
    code, out, err = cli("pull", text, "--name", "x", "--json")
    assert code == 2 and "SECRET" not in out + err, out + err
    assert json.loads(out)["from"] == redacted(text)


alnum = st.text(st.sampled_from(list("a0z9")), min_size=1, max_size=3)
#: names of the spec's grammar, built part by part (``st.from_regex`` of it is slow to draw)
spec_components = st.builds(
    lambda first, rest: first + "".join(sep + part for sep, part in rest),
    alnum,
    st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "--"]), alnum), max_size=3),
)
spec_names = st.lists(spec_components, min_size=1, max_size=3).map("/".join)


@settings(max_examples=300)
@given(
    name=st.one_of(
        spec_names,
        st.text(st.sampled_from(list("abz09._-/A:@ \n")), min_size=1, max_size=20),
    )
)
@example(name="team/models\n")  # a trailing line break: taken as team/models (defect 2)
def test_oci_repositories_are_the_distribution_specs_names(name: str) -> None:
    """A repository trtforge takes is one every registry takes (it pushes to it, unchanged), and one
    the spec allows is taken. Where trtforge differs, it says so: the '/' that ends the host and any
    '/' at the end of the URI are separators, not part of the name (``oci://host//team/`` is team)."""
    text = f"oci://localhost:5000/{name}"
    allowed = SPEC_NAME.fullmatch(name.strip("/")) is not None
    try:
        location = parse_location(text)
    except InvalidInputError as error:
        assert not allowed, f"{text!r} refused: {error}"
        _refusal(error)
    else:
        assert allowed and location.repository == name.strip("/"), location


names = st.from_regex(NAME_PATTERN, fullmatch=True).filter(lambda name: len(name) <= MAX_NAME_LENGTH)
capabilities = st.builds(ComputeCapability, st.integers(1, 99), st.integers(0, 9))
platforms = st.sampled_from(["linux_x86_64", "linux_aarch64", "win_amd64"]).map(Platform.parse)
engine_tags = st.builds(
    EngineTag,
    flavor=st.sampled_from(FLAVORS),
    version=st.lists(st.integers(0, 9999), min_size=1, max_size=4).map(lambda parts: ".".join(map(str, parts))),
    version_compatible=st.booleans(),
    capabilities=st.lists(capabilities, max_size=30).map(tuple),
    and_later_from=st.one_of(st.none(), capabilities),
    platform=platforms,
)


@settings(max_examples=300)
@given(name=st.one_of(names, st.text(max_size=70)), precision=st.sampled_from(PRECISIONS), tag=engine_tags)
def test_every_artifact_name_makes_a_tag_the_distribution_spec_allows(
    name: str, precision: str, tag: EngineTag
) -> None:
    """``{name}-{precision}-{tag}`` is the OCI tag an engine is published under: a name the spec's
    rule (``check_name``) accepts always gives one every registry takes, whatever the GPUs; any
    other name is exit 2 before anything is published."""
    try:
        check_name(name, "name")
    except InvalidInputError as error:
        _refusal(error)
        assert re.fullmatch(NAME_PATTERN, name) is None or len(name) > MAX_NAME_LENGTH
        return
    assert SPEC_TAG.fullmatch(artifact_stem(name, precision, tag)), artifact_stem(name, precision, tag)


# ---------------------------------------------------------------- target flags


FLAG_CHARS = [*"0123456789._-smSMlinuxwdaArch6_x4 \t\n\x00٥", "tensorrt", "-rtx", "sm_", "linux_", "win_", "."]
flag_text = st.one_of(st.text(max_size=12), st.lists(st.sampled_from(FLAG_CHARS), max_size=8).map("".join))
FLAGS = ("flavor", "trt_version", "cc", "platform")


@settings(max_examples=500)
@given(flag=st.sampled_from(FLAGS), text=flag_text)
def test_any_target_flag_is_a_value_that_formats_back_or_one_line_naming_the_flag(flag: str, text: str) -> None:
    """``--flavor --trt-version --cc --platform`` say which machine ``check`` and ``pull`` judge
    for: a value taken is the one written (its canonical form reads back as itself), anything
    else is exit 2 naming the flag, so the user knows which one to fix."""
    option = "--" + flag.replace("_", "-")
    try:
        target = target_from_flags(**{flag: text})
    except InvalidInputError as error:
        assert _refusal(error).startswith(option), str(error)
        return
    assert isinstance(target, Target)
    if flag == "flavor":
        assert target.flavor == text and text in FLAVORS
    elif flag == "trt_version":
        assert target.version == text.strip() and parse_trt_version(target.version)
    elif flag == "cc":
        assert (
            target.compute_capability is not None
            and ComputeCapability.parse(str(target.compute_capability)) == target.compute_capability
        )
        assert ComputeCapability.parse(target.compute_capability.sm) == target.compute_capability
    else:
        assert target.platform is not None and Platform.parse(target.platform.tag) == target.platform


@settings(max_examples=300)
@given(
    text=st.one_of(
        st.text(max_size=30),
        st.builds(
            "{}{}{}".format,
            st.sampled_from([row.release for row in releases()] + ["24.8", "2408", "99.99"]),
            st.sampled_from(["", "-", "-py3", "-trtllm-python-py3", "-PY3", " ", "\n"]),
            st.text(st.sampled_from(list("-py3 \n")), max_size=3),
        ),
    )
)
def test_any_triton_release_is_a_known_one_or_one_line(text: str) -> None:
    """``--triton RELEASE`` (and ``triton:``) names a container whose TensorRT decides everything:
    a release taken is one of the table, by a name that finds it again; else exit 2 naming the flag."""
    try:
        release = find_release(text)
    except InvalidInputError as error:
        assert _refusal(error).startswith("--triton '"), str(error)
        return
    assert release in releases() and find_release(release.name) == release


@settings(max_examples=25)
@given(flag=st.sampled_from(FLAGS), text=flag_text)
def test_the_commands_refuse_a_bad_target_flag_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, flag: str, text: str
) -> None:
    """The same through the CLI: ``check`` and ``pull`` answer a bad flag with exit 2 and one line
    naming it before anything is read (an engine, a registry)."""
    option = "--" + flag.replace("_", "-")
    try:
        target_from_flags(**{flag: text})
    except InvalidInputError:
        bad = True
    else:
        bad = False
    empty = tmp_path_factory.mktemp("registry")
    for command in (("check", empty / "missing.engine"), ("pull", f"dir://{empty}", "--name", "x")):
        code, _, err = cli(*command, f"{option}={text}")
        lines = err.splitlines()
        assert code in ((2,) if bad else (2, 5)) and len(lines) == 1, err
        assert lines[0].startswith(f"error: {option}") == bad, err


# ---------------------------------------------------------------- trtforge.yaml and matrix


VALID_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "runners": st.dictionaries(
            st.sampled_from(["cpu", "8.6", "sm89", "sm_120", "7.5"]),
            st.one_of(
                st.text(min_size=1, max_size=6).filter(str.strip), st.lists(st.sampled_from(["gpu", "x"]), min_size=1)
            ),
            max_size=3,
        ),
        "specs": st.lists(st.sampled_from(["*.yaml", "**/*.yaml", "specs/*.yml"]), max_size=2),
        "publish_to": st.sampled_from(["oci://localhost:5000/team/models", "dir:///srv/engines", "triton://repo"]),
        "triton": st.sampled_from(["24.08", "24.08-py3", "24.10"]),
        "install": st.sampled_from(["pip install trtforge", "uv pip install 'trtforge[rtx]'"]),
    },
)
project_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=10,
)
KEYS = ("runners", "specs", "publish_to", "triton", "install", "runner", "publish-to")


@st.composite
def project_texts(draw: st.DrawFn) -> str:
    """What a trtforge.yaml may hold: any text, settings with any values, or valid ones edited."""
    kind = draw(st.sampled_from(["text", "values", "edited"]))
    if kind == "text":
        return draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=120))
    if kind == "values":
        document = draw(st.dictionaries(st.sampled_from(KEYS), project_values, max_size=3))
        return yaml.safe_dump(document, allow_unicode=True)
    text = yaml.safe_dump(draw(VALID_SETTINGS), allow_unicode=True)
    start = draw(st.integers(0, len(text)))
    inserted = draw(st.text(st.sampled_from(list(" \t\n:-[]{}&*!|>'\"#%@,?\x00xy19.~")), max_size=5))
    return text[:start] + inserted + text[start + draw(st.integers(0, 6)) :]


@settings(max_examples=300)
@given(text=project_texts())
@example(text="publish_to: dir://~no-such-user-here/engines\n")  # was an internal error (defect 3)
@example(text="publish_to: oci://u:SECRET@registry.io\n")  # printed the password (defect 1)
def test_any_project_file_is_settings_or_one_line_naming_the_file_and_line(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    """``ci`` and ``matrix`` read trtforge.yaml first: whatever it holds, they get its settings or
    exit 2 with one line that names the file (and the line of a bad key), never "internal error"."""
    root = tmp_path_factory.mktemp("project")
    path = root / PROJECT_FILE
    path.write_text(text, encoding="utf-8")
    try:
        project = load_settings(root)
    except SpecError as error:
        printed = _refusal(error)
        assert printed.startswith(str(path)) and "SECRET" not in printed, printed
        if isinstance(error.__cause__, ValidationError):
            assert re.match(re.escape(str(path)) + r":\d+: ", printed), printed
        return
    assert isinstance(project, ProjectSettings)
    if project.publish_to is not None:
        parse_location(project.publish_to)


@pytest.fixture(scope="module")
def spec_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one TensorRT-RTX spec and its model, for ``matrix`` to plan."""
    folder = tmp_path_factory.mktemp("matrix")
    models.conv_net(folder / "conv.onnx")
    (folder / "conv.yaml").write_text("name: conv\nmodel: conv.onnx\nbackend: tensorrt-rtx\n", encoding="utf-8")
    return folder


@settings(max_examples=15)
@given(
    publish_to=st.one_of(
        st.sampled_from(["oci://localhost:5000/team/models", "dir:///srv/engines"]),
        st.text(st.sampled_from(list("ab/ '\"$`;&|*~\\")), min_size=1, max_size=12).map(lambda path: f"dir:///{path}"),
    ),
    labels=st.lists(
        st.text(st.sampled_from(list("ab -:'\"#")), min_size=1, max_size=6).filter(str.strip), min_size=1, max_size=2
    ),
)
def test_matrix_writes_the_project_settings_back_as_given(
    spec_folder: Path, publish_to: str, labels: list[str]
) -> None:
    """``matrix --format gitlab`` writes a pipeline that GitLab runs as given: the publish job's
    shell command names exactly ``publish_to:``, and the build job's tags are ``runners:``'s
    labels, whatever characters they hold; ``--format github`` is one line for $GITHUB_OUTPUT."""
    settings_text = yaml.safe_dump({"runners": {"cpu": labels}, "publish_to": publish_to}, allow_unicode=True)
    (spec_folder / PROJECT_FILE).write_text(settings_text, encoding="utf-8")
    code, out, err = cli("matrix", spec_folder, "--format", "gitlab")
    assert code == 0, err
    pipeline = yaml.safe_load(out)
    script = pipeline["publish"]["script"][0]
    publish = shlex.split(script.split("; do ", 1)[1].rsplit("; done", 1)[0])
    assert publish[-2:] == ["--to", publish_to], script
    assert pipeline["build:conv-fp32-cpu"]["tags"] == labels
    code, out, err = cli("matrix", spec_folder, "--format", "github")
    assert code == 0 and len(out.splitlines()) == 1, err
    assert json.loads(out)["include"][0]["runner"] == labels
