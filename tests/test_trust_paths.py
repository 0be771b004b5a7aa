"""Items 1, 10 and 12 of the trust review: names never become paths outside the repository, spec
names start with a letter or digit, and triton:// versions follow the README's rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from clitools import cli
from models import conv_net, need_rtx
from registry import DIGITS_ONNX, DIGITS_PROFILE, build_engine
from trust import TrustRecorder

from trtforge.digests import sha256_file
from trtforge.manifest import manifest_path_for, read_manifest

need_rtx()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engine(tmp_path_factory.mktemp("paths-engine") / "a")


def edited_copy(engine: Path, folder: Path, **changes: object) -> Path:
    """The engine beside a copy of its (unsigned) manifest with fields edited by hand: the engine's
    sha256 still matches, so only the name checks stand between it and the file system."""
    folder.mkdir(parents=True)
    copy = folder / engine.name
    shutil.copy2(engine, copy)
    document = json.loads(manifest_path_for(engine).read_text())
    document.update(changes)
    manifest_path_for(copy).write_text(json.dumps(document))
    return copy


def everything_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize("scheme", ["triton", "dir"])
@pytest.mark.parametrize("name", ["../../escaped", "ABSOLUTE/escaped", ".", "..", "-x"])
def test_a_manifest_name_edited_into_a_path_is_refused(
    engine: Path, tmp_path: Path, scheme: str, name: str, trust_case: TrustRecorder
) -> None:
    label, name = name, name.replace("ABSOLUTE", str(tmp_path / "absolute"))  # absolute, inside tmp_path
    edited = edited_copy(engine, tmp_path / "artifact", name=name)
    before = everything_under(tmp_path)
    repository = tmp_path / "deep" / "er" / "repo"
    code, _, err = cli("publish", edited, "--to", f"{scheme}://{repository}")
    record = trust_case(1, f"publish to {scheme}:// a manifest whose name is '{label}'", code, err, folders=(tmp_path,))
    assert code == 2 and record.one_line, err
    assert f"'{name}'" in err
    assert everything_under(tmp_path) - before <= {
        tmp_path / "deep",
        tmp_path / "deep" / "er",
        repository,
        repository / ".trtforge.lock",
    }


def test_a_manifest_whose_name_disagrees_with_its_file_is_refused(
    engine: Path, tmp_path: Path, trust_case: TrustRecorder
) -> None:
    """A valid but foreign name (or precision): the file name the build derived says otherwise."""
    for field, value in (("name", "resnet50"), ("precision", "int8")):
        edited = edited_copy(engine, tmp_path / field, **{field: value})
        repository = tmp_path / f"models-{field}"
        code, _, err = cli("publish", edited, "--to", f"triton://{repository}")
        record = trust_case(
            1, f"publish to triton:// a manifest whose {field} was edited", code, err, folders=(repository,)
        )
        assert code == 2 and record.one_line and "is not the build's name" in err, err
        assert not (repository / value).exists() and not (repository / "digits-cnn").exists()
    # a valid tag that is not the file's: Triton would name the plan after it, dir:// and oci:// after the file
    edited = edited_copy(engine, tmp_path / "tag", tag="rtx1.7-sm86")
    code, _, err = cli("publish", edited, "--to", f"triton://{tmp_path / 'models-tag'}")
    record = trust_case(1, "publish to triton:// a manifest whose tag was edited", code, err, folders=(tmp_path,))
    assert code == 2 and record.one_line and "tag 'rtx1.7-sm86' does not say what the manifest does" in err, err
    assert not (tmp_path / "models-tag" / "digits-cnn").exists()


@pytest.mark.parametrize("scheme", ["triton", "dir"])
def test_pull_with_a_name_that_is_a_path_is_refused(
    engine: Path, tmp_path: Path, scheme: str, trust_case: TrustRecorder
) -> None:
    repository = tmp_path / "a" / "b" / "repo"
    assert cli("publish", engine, "--to", f"{scheme}://{repository}")[0] == 0
    # a model outside the repository, where ../../x leads, that names itself ../../x
    tag = read_manifest(engine).tag
    outside = edited_copy(engine, tmp_path / "a" / "x" / "1", name="../../x")
    outside.rename(outside.with_name(f"model.{tag}.plan"))
    manifest_path_for(outside).rename(outside.with_name(f"model.{tag}.manifest.json"))
    out = tmp_path / "pulled"
    code, _, err = cli("pull", f"{scheme}://{repository}", "--name", "../../x", "--cc", "8.6", "--out", out)
    record = trust_case(1, f"pull {scheme}:// --name ../../x", code, err, folders=(tmp_path,))
    assert code == 2 and record.one_line and "--name '../../x'" in err, err
    assert not out.exists()


@pytest.mark.parametrize("name", [".", "..", "...", "-x"])
def test_spec_names_start_with_a_letter_or_digit(tmp_path: Path, name: str, trust_case: TrustRecorder) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f'model: {DIGITS_ONNX}\nname: "{name}"\nprofiles:\n{DIGITS_PROFILE}\n')
    out = tmp_path / "out"
    code, _, err = cli("build", spec, "--out", out)
    record = trust_case(10, f"spec name '{name}'", code, err, folders=(tmp_path,))
    assert code == 2 and record.one_line, err
    assert f"{spec}:2: key 'name'" in err and f"(got '{name}')" in err
    assert not list(out.glob("*.engine")) if out.exists() else True


def test_triton_versions_follow_the_readme_rule(engine: Path, tmp_path: Path, trust_case: TrustRecorder) -> None:
    """Same tag, another ONNX or precision: the next version, never exit 6; --force never puts
    another model's plan into version 1."""
    repository = tmp_path / "models"
    uri = f"triton://{repository}"
    assert cli("publish", engine, "--to", uri)[0] == 0
    v1_plan = repository / "digits-cnn" / "1" / f"model.{read_manifest(engine).tag}.plan"
    v1_sha = sha256_file(v1_plan)

    other_onnx = build_engine(
        tmp_path / "onnx",
        model=conv_net(tmp_path / "conv.onnx", seed=4),
        profiles="  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}",
    )
    assert read_manifest(other_onnx).tag == read_manifest(engine).tag
    code, out, err = cli("publish", other_onnx, "--to", uri, "--json")
    trust_case(12, "triton: same tag, another ONNX", code, err, folders=(repository,))
    assert code == 0 and json.loads(out)["version"] == 2 and json.loads(out)["status"] == "published", err

    spec = tmp_path / "fp16" / "spec.yaml"
    spec.parent.mkdir()
    spec.write_text(
        f"name: digits-cnn\nmodel: {DIGITS_ONNX}\nprecision: fp16\nbackend: tensorrt-rtx\n"
        f"targets: ['8.6']\nprofiles:\n{DIGITS_PROFILE}\naccuracy: {{enabled: false}}\n"
    )
    assert cli("build", spec, "--out", spec.parent / "out")[0] == 0
    (fp16,) = (spec.parent / "out").glob("*.engine")
    assert read_manifest(fp16).tag == read_manifest(engine).tag
    code, out, err = cli("publish", fp16, "--to", uri, "--force", "--json")
    trust_case(12, "triton: same tag, another precision, --force", code, err, folders=(repository,))
    assert code == 0 and json.loads(out)["version"] == 3, err

    # back to the first model with --force: it starts version 4, version 1 keeps its plan
    code, out, err = cli("publish", engine, "--to", uri, "--force", "--json")
    assert code == 0 and json.loads(out)["version"] == 4, err
    assert sha256_file(v1_plan) == v1_sha
    assert sorted(p.name for p in (repository / "digits-cnn").iterdir() if not p.name.startswith(".")) == [
        "1",
        "2",
        "3",
        "4",
        "config.pbtxt",
    ]
