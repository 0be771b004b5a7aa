"""A real OCI registry on 127.0.0.1 for the publish/pull tests, and real engines to publish.

The registry is Debian's ``docker-registry`` (the CNCF distribution registry, 2.8), installed
with ``apt-get install -y docker-registry``; ``start_registry`` writes its config (a free port,
filesystem storage in a temporary folder), serves it, waits until ``/v2/`` answers and stops it
after. Tests that need it skip with ``SKIP_REASON`` when the binary is missing.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from models import skip_or_fail

BINARY = shutil.which("docker-registry")
SKIP_REASON = (
    "docker-registry is not installed (apt-get install -y docker-registry): the OCI tests need a real registry"
)
DIGITS_ONNX = Path(__file__).resolve().parents[1] / "calibration" / "digits" / "digits_cnn.onnx"
DIGITS_PROFILE = "  - input: {min: [1, 1, 8, 8], opt: [16, 1, 8, 8], max: [64, 1, 8, 8]}"
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class RunningRegistry:
    host: str
    storage: Path
    log: Path

    def uri(self, repository: str) -> str:
        return f"oci://{self.host}/{repository}"

    def blob(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (to damage one on purpose)."""
        hex_digest = digest.removeprefix("sha256:")
        return self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_digest[:2] / hex_digest / "data"


def put_manifest(uri: str, reference: str, document: dict, media_type: str) -> None:
    """PUT an image manifest or index under ``reference`` in the ``oci://`` repository ``uri``, as
    any registry client may: how tests plant what trtforge itself never pushes."""
    import requests

    from trtforge.publish import parse_location

    location = parse_location(uri)
    response = requests.put(
        f"http://{location.host}/v2/{location.repository}/manifests/{reference}",
        data=json.dumps(document).encode(),
        headers={"Content-Type": media_type},
        timeout=10,
    )
    response.raise_for_status()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(port: int, storage: Path, htpasswd: Path | None) -> str:
    auth = f"auth:\n  htpasswd:\n    realm: trtforge-tests\n    path: {htpasswd}\n" if htpasswd else ""
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"{auth}"
    )


def _answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=1) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # up, and asking for credentials
    except OSError:
        return False


@contextlib.contextmanager
def start_registry(workdir: Path, htpasswd: Path | None = None) -> Iterator[RunningRegistry]:
    """Serve a registry until the block ends; retries another port if the chosen one was taken meanwhile."""
    if BINARY is None:
        skip_or_fail("registry", SKIP_REASON)
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        port = free_port()
        storage = workdir / f"storage-{port}"
        config = workdir / f"config-{port}.yml"
        log = workdir / f"registry-{port}.log"
        config.write_text(_config(port, storage, htpasswd), encoding="utf-8")
        with open(log, "wb") as log_file:
            process = subprocess.Popen([BINARY, "serve", str(config)], stdout=log_file, stderr=subprocess.STDOUT)
        host = f"127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None and not _answers(host):
            time.sleep(0.05)
        if process.poll() is None and _answers(host):
            try:
                yield RunningRegistry(host, storage, log)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            return
        process.kill()
        process.wait()
        if attempt == 2:
            raise RuntimeError(f"docker-registry did not start: {log.read_text(errors='replace')[-2000:]}")


def forward(handler: BaseHTTPRequestHandler, upstream: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """The request ``handler`` got, sent on to the registry at ``upstream``: its status, headers
    (less those of the transfer itself) and body, for a proxy to answer with."""
    connection = http.client.HTTPConnection(upstream, timeout=30)
    connection.request(handler.command, handler.path, body=body or None, headers=dict(handler.headers))
    response = connection.getresponse()
    status, answer = response.status, response.read()
    skip = ("content-length", "transfer-encoding", "connection")
    headers = [(k, v) for k, v in response.getheaders() if k.lower() not in skip]
    connection.close()
    return status, headers, answer


def answer_with(handler: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    handler.send_response(status)
    for key, value in headers:
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


@contextlib.contextmanager
def faulty_proxy(
    upstream: str, faults: Mapping[str, tuple[int, bytes]], *, once: bool = False, after: int = 0
) -> Iterator[str]:
    """A plain-HTTP proxy on 127.0.0.1 in front of the registry ``upstream`` (``host:port``) that
    answers the requests ``faults`` names itself, with (status, body): a registry that refuses or
    fails pushes, which distribution cannot be made to do. A key is a method, or a method and the
    start of a path (``"GET /v2/REPO/manifests/"``); ``once``: only the first such request (a
    registry failing for a moment); ``after``: the first ``after`` such requests go through (a tag
    deleted between two reads). Yields the proxy's ``host:port``; the Host header goes through
    unchanged, so the registry's upload locations name the proxy."""
    import threading

    pending = dict(faults)
    seen = dict.fromkeys(faults, 0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                key = next((key for key in pending if f"{self.command} {self.path}".startswith(key)), None)
                if key is not None:
                    seen[key] += 1
                fault = None if key is None or seen[key] <= after else pending.pop(key) if once else pending[key]
            if fault is not None:
                status, answer = fault
                headers = [("Content-Type", "application/json")]
            else:
                status, headers, answer = forward(self, upstream, body)
            answer_with(self, status, headers, answer)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests read trtforge's output, not the proxy's."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """One registry for the session; tests use their own repositories in it."""
    with start_registry(tmp_path_factory.mktemp("oci-registry")) as running:
        yield running


#: the one account of the registries that ask for a user name and password (``htpasswd``)
USER, PASSWORD = "ci", "s3cret"


def htpasswd(folder: Path) -> Path:
    """A registry's ``htpasswd`` file with the one account USER / PASSWORD (bcrypt, as distribution requires)."""
    bcrypt = pytest.importorskip("bcrypt", reason="bcrypt writes the registry's htpasswd file (pip install bcrypt)")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "htpasswd"
    path.write_text(f"{USER}:" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode() + "\n")
    return path


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """One registry for the session that asks for a user name and password (USER / PASSWORD)."""
    folder = tmp_path_factory.mktemp("auth-registry")
    with start_registry(folder, htpasswd=htpasswd(folder)) as running:
        yield running


def build_engine(
    folder: Path,
    *,
    name: str = "digits-cnn",
    targets: Sequence[str] = ("8.6",),
    model: Path = DIGITS_ONNX,
    profiles: str = DIGITS_PROFILE,
    spec_name: str = "spec.yaml",
    build: str = "",
    precision: str = "fp32",
    gate: bool = False,
) -> Path:
    """A real TensorRT-RTX engine (fp32 or fp16, about a second) in ``folder/out``; returns the .engine path.

    ``build`` is the spec's ``build:`` section as flow YAML, e.g. ``{workspace: 256MiB}``; ``gate``
    runs the accuracy gate (on seeded random data), which writes ``{stem}.accuracy.json`` beside it.
    """
    from rich.console import Console

    from trtforge.build import build_spec
    from trtforge.console import Reporter
    from trtforge.spec import load_spec

    folder.mkdir(parents=True, exist_ok=True)
    listed = ", ".join(f'"{cc}"' for cc in targets)
    spec = folder / spec_name
    spec.write_text(
        f"name: {name}\nmodel: {model}\nprecision: {precision}\nbackend: tensorrt-rtx\ntargets: [{listed}]\n"
        f"profiles:\n{profiles}\n"
        + ("" if gate else "accuracy: {enabled: false}\n")
        + (f"build: {build}\n" if build else ""),
        encoding="utf-8",
    )
    quiet = Reporter(Console(file=io.StringIO()), interactive=False)
    return build_spec(load_spec(spec), folder / "out", quiet).engine


def as_enterprise(
    engine: Path, folder: Path, version: str, version_compatible: bool = False, *, ampere_plus: bool = False
) -> Path:
    """A copy of a real engine whose manifest says enterprise TensorRT ``version`` built it, tagged and
    named as such a build would be: the rules read only the manifest, and neither enterprise
    TensorRT (to build one) is installed here nor does TensorRT-RTX build version-compatible engines."""
    from models import retag

    from trtforge.manifest import Manifest, manifest_path_for
    from trtforge.tags import AMPERE

    document = json.loads(manifest_path_for(engine).read_text(encoding="utf-8"))
    document.pop("signature", None)  # it signed the TensorRT-RTX facts
    document["tensorrt"].update(flavor="tensorrt", version=version, version_compatible=version_compatible)
    if ampere_plus:
        gpu = {"compute_capabilities": [], "and_later_from": str(AMPERE), "hardware_compatibility": "ampere_plus"}
        document["gpu"].update(gpu)
    retag(document)
    copy = folder / f"{document['name']}-{document['precision']}-{document['tag']}.engine"
    document["artifact"]["file"] = copy.name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(engine, copy)
    manifest_path_for(copy).write_text(Manifest.model_validate(document).to_json(), encoding="utf-8")
    return copy
