"""Trust review, items 7, 1 (OCI titles), 8 (OCI) and 9: what a registry answers cannot crash,
hang or fill the disk, and pull accepts exactly what ``check`` and the loader accept.

A misbehaving registry is a small HTTP server on 127.0.0.1 (a thread of this test) that answers
garbage; trtforge runs as a real subprocess, with a timeout, so a hang fails the test instead of
stalling it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from clitools import cli
from models import conv_net, need_rtx
from registry import as_enterprise, build_engine

from trtforge.compat import LoadPolicy, Rule
from trtforge.digests import sha256_file
from trtforge.environment import Target
from trtforge.manifest import manifest_path_for, read_manifest
from trtforge.publish import load_local_artifact
from trtforge.publish.oci import TITLE, image_manifest
from trtforge.selection import select_engine
from trtforge.tags import ComputeCapability

need_rtx()

TRTFORGE = Path(sys.executable).with_name("trtforge")
REPO = "x"
MIB = 1024 * 1024


# ---------------------------------------------------------------- a misbehaving registry


@dataclass(frozen=True)
class Reply:
    """One answer: a body, or ``stream`` bytes of zeros sent in 1 MiB chunks."""

    body: bytes = b"{}"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    stream: int = 0


def as_json(value: object) -> Reply:
    return Reply(json.dumps(value).encode())


Answers = Callable[[str], Reply | None]


#: a request as a test server got it: method, path, Authorization header
Seen = tuple[str, str, str | None]


class _Handler(BaseHTTPRequestHandler):
    answers: Answers
    #: set: a registry whose token service (``/token``, on itself) grants it to anyone (unless
    #: ``answers("/token")`` answers otherwise), and that asks for it (401, a Bearer challenge) on
    #: every other path
    token: str | None
    seen: list[Seen]

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        authorization = self.headers.get("Authorization")
        self.seen.append((self.command, path, authorization))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.token is not None and path == "/token":
            reply: Reply | None = self.answers(path) or as_json({"token": self.token})
        elif self.token is not None and authorization != f"Bearer {self.token}":
            challenge = f'Bearer realm="http://{self.headers["Host"]}/token",service="test"'
            reply = Reply(status=401, headers={"WWW-Authenticate": challenge})
        else:
            reply = Reply(b"{}") if path == "/v2/" else self.answers(path)
        if reply is None:
            reply = Reply(b'{"errors": [{"code": "NOT_FOUND", "message": "nothing here"}]}', status=404)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        if "Content-Length" not in reply.headers:  # one given: a body cut off, or more than it says
            self.send_header("Content-Length", str(reply.stream or len(reply.body)))
        self.end_headers()
        try:
            if reply.stream:
                chunk = bytes(MIB)
                for _ in range(reply.stream // MIB):
                    self.wfile.write(chunk)
            else:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # trtforge stopped reading: what the test wants

    do_HEAD = do_GET
    do_POST = do_PUT = do_PATCH = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


class Servers:
    """Registries on 127.0.0.1 answering with ``answers(path)`` (``token``: asking for one, see
    ``_Handler``); calling starts one and returns its ``oci://`` URI, ``seen`` its requests."""

    def __init__(self) -> None:
        self.servers: list[ThreadingHTTPServer] = []
        self.requests: dict[str, list[Seen]] = {}

    def __call__(self, answers: Answers, *, token: str | None = None) -> str:
        seen: list[Seen] = []
        handler = type("Handler", (_Handler,), {"answers": staticmethod(answers), "token": token, "seen": seen})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)
        uri = f"oci://127.0.0.1:{server.server_address[1]}/{REPO}"
        self.requests[uri] = seen
        return uri

    def seen(self, uri: str) -> list[Seen]:
        return list(self.requests[uri])

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def garbage() -> Iterator[Servers]:
    """``Servers`` for one test: ``garbage(answers)`` starts a registry, returns its ``oci://`` URI."""
    servers = Servers()
    yield servers
    servers.close()


def run(*args: object, timeout: float = 60) -> tuple[int, str, str, float]:
    """The real CLI in a subprocess: exit code, stdout, stderr, seconds."""
    started = time.monotonic()
    done = subprocess.run(
        [str(TRTFORGE), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


# ---------------------------------------------------------------- a real artifact to serve


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engine(tmp_path_factory.mktemp("trust-registry"), targets=["8.6"])


@dataclass(frozen=True)
class Served:
    """A real trtforge artifact as a registry serves it: tag, image manifest, blobs by digest."""

    tag: str
    image: dict
    blobs: dict[str, bytes]

    def answers(self, **override: Reply) -> Answers:
        """Registry paths -> replies; ``override`` replaces the tag list, manifest, engine or manifest blob."""
        engine_digest, manifest_digest = (layer["digest"] for layer in self.image["layers"])
        table = {
            f"/v2/{REPO}/tags/list": override.get("tags", as_json({"name": REPO, "tags": [self.tag]})),
            f"/v2/{REPO}/manifests/{self.tag}": override.get("image", as_json(self.image)),
            f"/v2/{REPO}/blobs/{engine_digest}": override.get("engine", Reply(self.blobs[engine_digest])),
            f"/v2/{REPO}/blobs/{manifest_digest}": override.get("manifest", Reply(self.blobs[manifest_digest])),
        }
        return table.get


def serve(engine: Path, image: Callable[[dict], None] = lambda image: None) -> Served:
    """``engine`` published as trtforge publishes it; ``image`` may edit the image manifest first."""
    artifact = load_local_artifact(engine)
    document = image_manifest(artifact)
    image(document)
    blobs = {
        f"sha256:{artifact.manifest.artifact.sha256}": engine.read_bytes(),
        f"sha256:{hashlib.sha256(artifact.manifest_bytes).hexdigest()}": artifact.manifest_bytes,
    }
    return Served(artifact.manifest.stem, document, blobs)


def pull(uri: str, out: Path, *extra: str, timeout: float = 60) -> tuple[int, str, str, float]:
    return run("pull", uri, "--name", "digits-cnn", "--cc", "8.6", "--insecure", "--out", out, *extra, timeout=timeout)


# ---------------------------------------------------------------- item 7: garbage answers


def _tags(value: object) -> Reply:
    return as_json(value)


def _image(edit: Callable[[dict], None]) -> Callable[[dict], Reply]:
    def reply(image: dict) -> Reply:
        edited = json.loads(json.dumps(image))
        edit(edited)
        return as_json(edited)

    return reply


GARBAGE = {
    "tags as a JSON array": ({"tags": _tags(["digits-cnn-fp32-x"])}, "a tag list"),
    "non-string tags": ({"tags": _tags({"tags": [1, {"a": 2}]})}, "a tag list"),
    "deeply nested tag list": ({"tags": Reply(b"[" * 100_000)}, "nested deeper"),
    "tag list larger than 4 MiB": ({"tags": Reply(stream=64 * MIB)}, "larger than"),
    "image manifest is a list": ({"image": Reply(b"[]")}, "image manifest"),
    "layers are a string": ({"image": _image(lambda i: i.update(layers="abc"))}, "layers"),
    'size "abc"': ({"image": _image(lambda i: i["layers"][0].update(size="abc"))}, "size"),
    "missing digest": ({"image": _image(lambda i: i["layers"][1].pop("digest"))}, "digest"),
    "deeply nested image manifest": ({"image": Reply(b'{"layers": ' + b"[" * 100_000)}, "nested deeper"),
    "manifest blob larger than declared": ({"manifest": Reply(stream=50 * MIB)}, "larger than the"),
    "engine blob larger than declared (50 MiB)": ({"engine": Reply(stream=50 * MIB)}, "larger than the"),
    "engine blob cut off (10 GB said, 1 KB sent)": (
        {"engine": Reply(bytes(1024), headers={"Content-Length": str(10 * 1024**3)})},
        "connection closed before the whole answer came; retry",
    ),
}


@pytest.mark.parametrize("case", list(GARBAGE), ids=list(GARBAGE))
def test_garbage_answers_are_exit_6_one_line_and_nothing_written(
    case: str, engine: Path, garbage: Callable[[Answers], str], tmp_path: Path, trust_case: Callable
) -> None:
    override, says = GARBAGE[case]
    served = serve(engine)
    replies = {key: value(served.image) if callable(value) else value for key, value in override.items()}
    uri = garbage(served.answers(**replies))
    out = tmp_path / "out"
    code, _, err, seconds = pull(uri, out)
    record = trust_case(7, f"registry answers garbage: {case}", code, err, folders=(tmp_path,))
    assert code == 6, err
    assert record.one_line, err
    assert says in err, err
    assert not record.leftovers
    assert not out.exists(), "nothing is written for a registry that misbehaves"
    assert seconds < 20


def test_publish_to_a_registry_answering_garbage_is_exit_6(
    engine: Path, garbage: Callable[[Answers], str], tmp_path: Path, trust_case: Callable
) -> None:
    uri = garbage(lambda path: Reply(b"[" * 100_000))
    code, _, err, _ = run("publish", engine, "--to", uri, "--insecure")
    record = trust_case(7, "publish to a registry answering deeply nested JSON", code, err, folders=(tmp_path,))
    assert code == 6 and record.one_line, err
    assert "nested deeper" in err


@pytest.mark.parametrize(
    ("case", "link", "says"),
    [
        ("Link header pointing at itself", lambda page: f"/v2/{REPO}/tags/list", "repeats a page"),
        ("Link header to ever new pages", lambda page: f"/v2/{REPO}/tags/list?last={page}", "goes past 1000 pages"),
        ("Link header to another host", lambda page: "http://127.0.0.2:1/v2/x/tags/list", "another server"),
    ],
)
def test_tag_list_pagination_is_bounded(
    case: str,
    link: Callable[[int], str],
    says: str,
    garbage: Callable[[Answers], str],
    tmp_path: Path,
    trust_case: Callable,
) -> None:
    pages = iter(range(10**9))

    def answers(path: str) -> Reply | None:
        if path != f"/v2/{REPO}/tags/list":
            return None
        return Reply(b'{"tags": []}', headers={"Link": f'<{link(next(pages))}>; rel="next"'})

    code, _, err, seconds = pull(garbage(answers), tmp_path / "out", timeout=60)
    record = trust_case(7, f"tag list pagination: {case}", code, err, folders=(tmp_path,))
    assert code == 6 and record.one_line, err
    assert says in err
    assert seconds < 30


def test_a_wrong_engine_blob_of_the_declared_size_is_exit_5(
    engine: Path, garbage: Callable[[Answers], str], tmp_path: Path, trust_case: Callable
) -> None:
    served = serve(engine)
    wrong = bytes(len(engine.read_bytes()))
    out = tmp_path / "out"
    code, _, err, _ = pull(garbage(served.answers(engine=Reply(wrong))), out)
    record = trust_case(7, "registry serves another blob of the declared size", code, err, folders=(tmp_path,))
    assert code == 5 and record.one_line, err
    assert "sha256" in err and "nothing written" in err
    assert not out.exists()


def test_a_tag_outside_the_oci_grammar_is_never_requested_nor_echoed_whole(
    engine: Path, garbage: Callable[[Answers], str], tmp_path: Path, trust_case: Callable
) -> None:
    """A tag list may hold anything: "digits-cnn-fp32-../../x" was requested as a manifest path, and
    a 5000-character tag was echoed whole in the error line."""
    served = serve(engine)
    junk = ["digits-cnn-fp32-../../x", "digits-cnn-fp32-" + "y" * 5000]
    requested: list[str] = []
    answers = served.answers(tags=as_json({"name": REPO, "tags": junk}))

    def watched(path: str) -> Reply | None:
        requested.append(path)
        return answers(path)

    out = tmp_path / "out"
    code, _, err, _ = pull(garbage(watched), out)
    record = trust_case(7, "registry lists only tags outside the OCI grammar", code, err, folders=(tmp_path,))
    assert code == 5 and record.one_line, err
    assert "'digits-cnn-fp32-../../x' is not an OCI tag: skipped" in err and "y" * 65 not in err
    assert requested == [f"/v2/{REPO}/tags/list"]
    assert not out.exists()


def test_a_good_artifact_from_the_test_server_is_pulled(
    engine: Path, garbage: Callable[[Answers], str], tmp_path: Path
) -> None:
    """The server above speaks enough of the protocol: without garbage, the pull succeeds."""
    out = tmp_path / "out"
    code, _, err, _ = pull(garbage(serve(engine).answers()), out)
    assert code == 0, err
    assert sha256_file(out / engine.name) == read_manifest(engine).artifact.sha256


def _conv_project(tmp_path: Path) -> Path:
    """A folder with the conv model and an fp32 spec of it, gate off: what ``ci`` builds here."""
    project = tmp_path / "project"
    project.mkdir()
    conv_net(project / "conv.onnx")
    (project / "conv.yaml").write_text(
        "name: conv\nprecision: fp32\nmodel: conv.onnx\ntargets: ['8.6']\naccuracy: {enabled: false}\n"
        "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}\n"
    )
    return project


def test_ci_remote_cache_survives_a_garbage_registry(
    garbage: Callable[[Answers], str], tmp_path: Path, trust_case: Callable
) -> None:
    project = _conv_project(tmp_path)
    uri = garbage(lambda path: Reply(b"[" * 100_000) if "/manifests/" in path else as_json(["not", "a", "dict"]))
    out = tmp_path / "out"
    code, _, err, _ = run("ci", project / "conv.yaml", "--out", out, "--remote-cache", uri, "--insecure", timeout=300)
    trust_case(7, "ci --remote-cache against a registry answering garbage", code, err, folders=(tmp_path,))
    assert code == 0, err
    assert "Traceback" not in err
    assert "remote cache unavailable" in err and "building locally" in err
    assert "could not store the build in the remote cache" in err
    (built,) = out.glob("*.engine")
    assert sha256_file(built) == read_manifest(built).artifact.sha256


# ---------------------------------------------------------------- credentials go to the registry only

LOGIN = ("ci", "s3cret")
TOKEN = "token-of-the-registry"


def _host(uri: str) -> str:
    return uri.removeprefix("oci://").split("/", 1)[0]


def _asking_for_credentials(garbage: Servers, status: int = 401, scheme: str = "Bearer") -> str:
    """Another server that answers every request with ``status`` and a challenge (a Bearer one
    names a token service on itself): what gets a login sent there would have it. Its URI."""
    where: list[str] = []

    def answers(path: str) -> Reply:
        challenge = (
            f'Bearer realm="http://{where[0]}/token",service="other"' if scheme == "Bearer" else 'Basic realm="x"'
        )
        return Reply(status=status, headers={"WWW-Authenticate": challenge})

    uri = garbage(answers)
    where.append(_host(uri))
    return uri


def _log_in(how: str, registry: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """LOGIN for ``registry``, from the environment or from docker's config (never the developer's own)."""
    docker = tmp_path / "docker"
    docker.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    if how == "environment":
        monkeypatch.setenv("TRTFORGE_REGISTRY_USERNAME", LOGIN[0])
        monkeypatch.setenv("TRTFORGE_REGISTRY_PASSWORD", LOGIN[1])
    else:
        auth = base64.b64encode(":".join(LOGIN).encode()).decode()
        (docker / "config.json").write_text(json.dumps({"auths": {_host(registry): {"auth": auth}}}))


@pytest.mark.parametrize(
    ("case", "token", "status", "login"),
    [
        ("a registry that needs no login, the environment's", None, 401, "environment"),
        ("a registry that needs no login, docker's", None, 401, "docker config"),
        ("a token registry, 403 and a challenge there (oras asks again)", TOKEN, 403, "environment"),
    ],
)
def test_a_blob_redirected_elsewhere_never_gets_the_registry_s_login(
    case: str,
    token: str | None,
    status: int,
    login: str,
    engine: Path,
    garbage: Servers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trust_case: Callable,
) -> None:
    """The engine blob answered with a 307 to another server, which asks for credentials: oras
    sent the registry's user name and password to the token service that server named (the
    redirect's answer was taken for the registry's, as in containerd's CVE-2020-15157)."""
    served = serve(engine)
    other = _asking_for_credentials(garbage, status)
    engine_path = f"/v2/{REPO}/blobs/{served.image['layers'][0]['digest']}"
    redirect = Reply(b"", 307, {"Location": f"http://{_host(other)}/blob"})
    uri = garbage(served.answers(engine=redirect), token=token)
    _log_in(login, uri, monkeypatch, tmp_path)
    out = tmp_path / "out"
    code, _, err, _ = pull(uri, out)
    record = trust_case(7, f"blob redirected to a server asking for credentials: {case}", code, err, folders=(out,))
    assert [seen for seen in garbage.seen(other) if seen[2] is not None] == []
    assert any(seen[1] == engine_path for seen in garbage.seen(uri))
    assert code == 6 and record.one_line, err
    assert f"sent trtforge to {_host(other)} while downloading" in err and "asks for credentials: refused" in err
    assert not out.exists()


def test_a_token_service_that_refuses_the_login_is_one_line(
    garbage: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust_case: Callable
) -> None:
    """oras printed "This endpoint requires a token. Please use basic auth with a username or
    password." on stderr itself, a line before trtforge's own."""
    uri = garbage(lambda path: Reply(b"{}", 401) if path == "/token" else None, token=TOKEN)
    _log_in("environment", uri, monkeypatch, tmp_path)
    out = tmp_path / "out"
    code, _, err, _ = pull(uri, out)
    record = trust_case(7, "a token service that refuses the login", code, err, folders=(tmp_path,))
    assert code == 6 and record.one_line, err
    assert "refused listing tags (HTTP 401)" in err and "TRTFORGE_REGISTRY_PASSWORD were refused" in err
    assert not out.exists()


def test_a_token_that_cannot_be_sent_is_never_repeated(
    garbage: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust_case: Callable
) -> None:
    """A token service answering a token with a line break after it (the token itself good):
    requests refuses the header and its error, which repeated the header whole, was the line CI
    logs keep, the registry's token in it."""
    secret = "eyJhbGciOiJSUzI1NiJ9.granted-to-this-runner.c2lnbmF0dXJl"
    uri = garbage(lambda path: as_json({"token": secret + "\n"}) if path == "/token" else None, token=secret)
    _log_in("environment", uri, monkeypatch, tmp_path)
    code, _, err, _ = pull(uri, tmp_path / "out")
    record = trust_case(7, "a token service answering a token with a line break", code, err, folders=(tmp_path,))
    assert code == 6 and record.one_line, err
    assert secret not in err and "granted-to-this-runner" not in err
    assert "a value for its authentication that HTTP cannot carry back" in err


@pytest.mark.parametrize("status", [201, 401])
def test_an_upload_location_elsewhere_never_gets_the_registry_s_login(
    status: int, engine: Path, garbage: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token registry whose upload sessions are on another server: oras sent the registry's
    token with every PUT there, and again to one that asked for credentials (401)."""
    other = _asking_for_credentials(garbage, 401, "Basic") if status == 401 else garbage(lambda path: Reply(b"", 201))
    location = Reply(b"", 202, {"Location": f"http://{_host(other)}/upload"})
    uri = garbage(lambda path: location if path == f"/v2/{REPO}/blobs/uploads/" else None, token=TOKEN)
    _log_in("environment", uri, monkeypatch, tmp_path)
    code, _, err, _ = run("publish", engine, "--to", uri, "--insecure")
    assert code == 6 and len(err.strip().splitlines()) == 1, err  # the test registry never holds the blobs
    assert any(seen[0] == "PUT" for seen in garbage.seen(other))
    assert [seen for seen in garbage.seen(other) if seen[2] is not None] == []
    if status == 401:
        assert f"sent trtforge to {_host(other)} while uploading" in err and "asks for credentials: refused" in err


# ---------------------------------------------------------------- item 1: layer titles are file names


@pytest.mark.parametrize(
    ("case", "layer", "title"),
    [
        ("engine layer titled ../../x.engine", 0, "../../x.engine"),
        ("manifest layer titled with an absolute path", 1, "/tmp/x.manifest.json"),
        ("engine layer titled with another file name", 0, "other.engine"),
    ],
)
def test_layer_titles_must_be_the_manifests_file_names(
    case: str,
    layer: int,
    title: str,
    engine: Path,
    garbage: Callable[[Answers], str],
    tmp_path: Path,
    trust_case: Callable,
) -> None:
    served = serve(engine, lambda image: image["layers"][layer]["annotations"].update({TITLE: title}))
    out = tmp_path / "deep" / "er" / "out"
    code, _, err, _ = pull(garbage(served.answers()), out)
    record = trust_case(1, f"OCI {case}", code, err, folders=(tmp_path,))
    assert code == 5 and record.one_line, err
    assert f"titled {title!r}" in err and "refused" in err
    assert not out.exists()
    assert list(tmp_path.rglob("x.engine")) == [] and not (tmp_path / "x.engine").exists()


@pytest.mark.parametrize(
    ("case", "edit"),
    [
        ("size", lambda layer: layer.update(size=layer["size"] + 1)),
        ("digest", lambda layer: layer.update(digest="sha256:" + "1" * 64)),
    ],
)
def test_an_engine_layer_the_manifest_does_not_pin_is_refused(
    case: str, edit: Callable[[dict], None], engine: Path, garbage: Callable[[Answers], str], tmp_path: Path
) -> None:
    """The engine layer's descriptor must be the engine the manifest pins, its digest and its size
    both: the registry serving the very engine under another descriptor is refused all the same."""
    served = serve(engine, lambda image: edit(image["layers"][0]))
    served.blobs.setdefault(served.image["layers"][0]["digest"], engine.read_bytes())  # the very engine, served
    out = tmp_path / "out"
    code, _, err, _ = pull(garbage(served.answers()), out)
    assert code == 5 and len(err.strip().splitlines()) == 1, err
    assert "is not the engine its manifest pins: refused" in err
    assert not out.exists()


def test_an_engine_blob_one_byte_over_its_declared_size_is_refused_unwritten(
    engine: Path, garbage: Callable[[Answers], str], tmp_path: Path
) -> None:
    """The download stops at the size the engine layer declares: one byte more is the registry
    misbehaving (exit 6), not an engine to write and measure."""
    served = serve(engine)
    out = tmp_path / "out"
    code, _, err, _ = pull(garbage(served.answers(engine=Reply(engine.read_bytes() + b"\0"))), out)
    assert code == 6 and len(err.strip().splitlines()) == 1, err
    assert f"is larger than the {engine.stat().st_size:,} bytes it may have" in err
    assert not out.exists()


def test_ci_says_why_it_refused_a_remote_cache_entry(
    engine: Path, garbage: Callable[[Answers], str], tmp_path: Path, trust_case: Callable
) -> None:
    """An entry under this spec's build key whose engine layer is titled as a path: refused before
    anything is written, and the warning says so (it was taken silently for an absent entry)."""
    from dataclasses import replace

    from trtforge.ci import build_inputs, build_key, cache_tag
    from trtforge.environment import choose_backend, installed_version
    from trtforge.spec import load_spec

    project = _conv_project(tmp_path)
    spec = load_spec(project / "conv.yaml")
    flavor = choose_backend(spec.backend).flavor
    tag = cache_tag(build_key(build_inputs(spec, flavor, installed_version(flavor) or "")))
    planted = serve(engine, lambda image: image["layers"][0]["annotations"].update({TITLE: "../../pwned.engine"}))
    uri = garbage(replace(planted, tag=tag).answers())
    out = tmp_path / "out"
    code, _, err, _ = run("ci", project / "conv.yaml", "--out", out, "--remote-cache", uri, "--insecure", timeout=300)
    trust_case(
        1, "ci --remote-cache: the entry's engine layer titled ../../pwned.engine", code, err, folders=(tmp_path,)
    )
    assert code == 0, err
    assert f"remote cache entry {tag} is refused" in err and "titled '../../pwned.engine'" in err
    assert "building locally" in err and not list(tmp_path.rglob("pwned.engine"))
    (built,) = out.glob("*.engine")
    assert read_manifest(built).source.onnx_sha256 == sha256_file(project / "conv.onnx")


# ---------------------------------------------------------------- item 8 (OCI): an absurd manifest layer


def test_oci_manifest_layer_nested_100k_deep_is_skipped_not_a_recursion_error(
    engine: Path, garbage: Callable[[Answers], str], tmp_path: Path, trust_case: Callable
) -> None:
    bomb = b"[" * 100_000
    digest = f"sha256:{hashlib.sha256(bomb).hexdigest()}"

    def layer(image: dict) -> None:
        image["layers"][1].update(digest=digest, size=len(bomb))

    served = serve(engine, layer)
    served.blobs[digest] = bomb
    out = tmp_path / "out"
    code, _, err, _ = pull(garbage(served.answers(manifest=Reply(bomb))), out)
    record = trust_case(8, "OCI pull: manifest layer nested 100k deep", code, err, folders=(tmp_path,))
    assert code == 5 and record.one_line, err
    assert "RecursionError" not in err and "unreadable manifest, nested deeper than" in err
    assert not out.exists()


# ---------------------------------------------------------------- item 9: one rule for host code


#: the enterprise TensorRT of the version-compatible engine (TensorRT-RTX builds none)
TRT = "10.13.0.35"
AT_TRT_86 = ("--flavor", "tensorrt", "--trt-version", TRT, "--cc", "8.6")


@pytest.fixture(scope="module")
def vc_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real engine whose manifest says a version-compatible enterprise TensorRT build (registry.as_enterprise)."""
    folder = tmp_path_factory.mktemp("trust-vc")
    return as_enterprise(build_engine(folder, targets=["8.6"]), folder / "vc", TRT, version_compatible=True)


def test_pull_and_select_refuse_host_code_like_check_and_the_loader(
    vc_engine: Path, tmp_path: Path, trust_case: Callable
) -> None:
    manifest = read_manifest(vc_engine)
    assert manifest.tensorrt.version_compatible
    registry = tmp_path / "registry"
    assert cli("publish", vc_engine, "--to", f"dir://{registry}")[0] == 0
    out = tmp_path / "out"

    code, _, err, _ = run("pull", f"dir://{registry}", "--name", "digits-cnn", *AT_TRT_86, "--out", out)
    trust_case(9, "pull of a version-compatible engine without --allow-host-code", code, err, folders=(tmp_path,))
    assert code == 5, err
    assert "host code" in err and "--allow-host-code" in err
    assert not out.exists()
    # check says the same about the published copy
    assert cli("check", registry / vc_engine.name, *AT_TRT_86)[0] == 5

    code, _, err, _ = run(
        "pull", f"dir://{registry}", "--name", "digits-cnn", *AT_TRT_86, "--out", out, "--allow-host-code"
    )
    assert code == 0, err
    assert sha256_file(out / vc_engine.name) == manifest.artifact.sha256
    assert cli("check", out / vc_engine.name, *AT_TRT_86, "--allow-host-code")[0] == 0

    env = Target(version=TRT, compute_capability=ComputeCapability(8, 6)).environment(manifest.tensorrt.flavor)
    chosen, rejected = select_engine([(manifest, vc_engine)], env)
    assert chosen is None
    assert [p.rule for p in rejected[0].problems] == [Rule.HOST_CODE]
    chosen, _ = select_engine([(manifest, vc_engine)], env, LoadPolicy(allow_host_code=True))
    assert chosen is not None and chosen[1] == vc_engine
    assert manifest_path_for(out / vc_engine.name).read_bytes() == manifest_path_for(vc_engine).read_bytes()
