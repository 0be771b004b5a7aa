"""docker's login config, read as docker reads it: where ``docker login`` leaves a registry's
credentials, and how docker finds them again.

``$DOCKER_CONFIG/config.json`` or, without ``DOCKER_CONFIG``, ``~/.docker/config.json``, decoded as
docker's Go code decodes it (``go_decode``: keys matched case-insensitively, the last of a key given
twice wins, null is absent) and searched in docker's order (``GetAuthConfig``): the host's credential
helper (``credHelpers``), else ``credsStore``, else the entry's own ``auth``. A config docker would
refuse, or a credential helper that fails, is exit 2 naming it, where oras would have read it as the
registry's failure or gone on as if none were configured. ``trtforge.publish.oci`` asks for a
registry's login here when the registry first asks for credentials.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trtforge.errors import InvalidInputError
from trtforge.jsonsafe import MAX_JSON_DEPTH, json_depth, not_json_constant
from trtforge.manifest import first_error

#: the server address ``docker login`` files Docker Hub's login under, whichever of its names is used
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
#: docker's names for Docker Hub, and the API host that answers for them
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
#: what a docker credential helper's ``get`` says (on stdout, exit 1) for a server it keeps nothing for
HELPER_NOT_FOUND = "credentials not found in native keychain"
#: the user name a credential helper answers with when its secret is an identity token
HELPER_TOKEN_USER = "<token>"
#: what Go's ``base64.StdEncoding`` decodes, line breaks aside: whole quantums, padding at the end only
STD_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
#: docker's config, or a credential helper's answer, is read whole up to this size (as large as any
#: registry answer trtforge reads whole)
MAX_CONFIG_BYTES = 4 * 1024 * 1024


class _DockerJson(BaseModel):
    """What ``go_decode`` left, checked before use: unknown keys are ignored, known keys must have
    their type (strict: nothing is coerced)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True, populate_by_name=True)


class DockerAuth(_DockerJson):
    """One ``auths`` entry of docker's ``config.json``: the base64 ``user:password``, when inline, or
    an identity token (an OAuth2 refresh token, which oras-py cannot exchange for access)."""

    auth: str | None = None
    identity_token: str | None = Field(None, alias="identitytoken")

    @model_validator(mode="before")
    @classmethod
    def _plain_login(cls, entry: Any) -> Any:
        """An entry without ``auth`` may hold ``username`` and ``password`` as they are (a config
        written by hand or by older tools): docker logs in with them, and so does trtforge."""
        if isinstance(entry, dict) and not entry.get("auth") and entry.get("username"):
            login = f"{entry['username']}:{entry.get('password') or ''}".encode()
            return {**entry, "auth": base64.b64encode(login).decode()}
        return entry

    @field_validator("auth")
    @classmethod
    def _user_and_password(cls, auth: str | None) -> str | None:
        """docker's ``decodeAuth``: base64 (line breaks skipped) of ``user:password`` with a user, else
        docker refuses the whole file ("invalid auth configuration file"), and so does trtforge rather
        than send the registry what docker never would. Kept as docker sends it: NULs around the
        password dropped."""
        if not auth:
            return None
        text = auth.replace("\r", "").replace("\n", "")
        if not STD_BASE64.fullmatch(text):
            raise ValueError("not base64, where docker wants base64 of user:password")
        user, colon, password = base64.b64decode(text).partition(b":")
        if not colon or not user:
            raise ValueError("not base64 of user:password (docker: invalid auth configuration file)")
        return base64.b64encode(user + b":" + password.strip(b"\0")).decode()


class DockerConfig(_DockerJson):
    """The parts of docker's ``config.json`` that hold credentials, as ``go_decode`` leaves them
    (``DOCKER_CONFIG_FIELDS``); ``null`` stands for absent anywhere, as in docker's (Go's) decoding."""

    auths: dict[str, DockerAuth | None] | None = None
    creds_store: str | None = Field(None, alias="credsStore")
    cred_helpers: dict[str, str | None] | None = Field(None, alias="credHelpers")

    def entry(self, key: str) -> DockerAuth:
        """``key``'s ``auths`` entry as docker's file store finds it: the exact key, else the first
        whose host is ``key`` (``https://host:port/…`` as older docker and ``docker login https://…`` wrote it)."""
        auths = self.auths or {}
        found = auths[key] if key in auths else next((e for k, e in auths.items() if docker_hostname(k) == key), None)
        return found or DockerAuth()

    def helper(self, key: str) -> str | None:
        """The credential helper docker asks for ``key``: its own (``""`` or null: none), else ``credsStore``."""
        return (self.cred_helpers or {}).get(key, self.creds_store)


class GoObject(tuple[tuple[str, Any], ...]):
    """A JSON object as Go's decoder meets it: its members in order, a key given twice twice."""


@dataclass(frozen=True)
class GoMap:
    """A Go map of ``values`` (a ``GoType``): unlike a struct, it takes any key as it is."""

    values: GoType


#: a Go type for ``go_decode``: a struct (a dict of its fields' JSON names and types), a map, a string
GoType = dict[str, "GoType"] | GoMap | type[str]

#: docker's ``ConfigFile`` and its ``AuthConfig`` entries: the fields trtforge reads
DOCKER_CONFIG_FIELDS: GoType = {
    "auths": GoMap({"auth": str, "identitytoken": str, "username": str, "password": str}),
    "credsStore": str,
    "credHelpers": GoMap(str),
}
#: what a credential helper's ``get`` answers (docker-credential-helpers' ``Credentials``): the fields trtforge reads
HELPER_ANSWER_FIELDS: GoType = {"Username": str, "Secret": str}

#: the letters Go's encoding/json folds onto ASCII ones besides ASCII's own (its ``foldName``,
#: upper(lower(r))): long s, the Kelvin sign, dotless i, I with a dot
_GO_FOLD = str.maketrans({"\u017f": "s", "\u212a": "k", "\u0131": "i", "\u0130": "i"})


def go_fold(name: str) -> str:
    """A JSON key as Go matches it to a struct field's name: case-insensitively."""
    return name.translate(_GO_FOLD).lower()


def _json_kind(value: Any) -> str:
    if isinstance(value, GoObject):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, int | float) else "a string"


def go_decode(value: Any, kind: GoType, where: str = "", previous: dict[str, Any] | None = None) -> Any:
    """``value`` (``docker_json``'s) decoded into ``kind`` as Go's encoding/json decodes it, as plain
    dicts: a key names a struct field case-insensitively, others are ignored; each key that names a
    field sets it, so the last one in the document wins; null leaves a string as it was and empties a
    map; a map given again is added to (``previous``), each of its entries replaced whole. A value of
    another type refuses the document (ValueError ``where: what``), as docker's decoder does whatever
    follows it."""
    wanted = "an object" if isinstance(kind, dict | GoMap) else "a string"
    if _json_kind(value) != wanted:
        raise ValueError(f"{where or '(top level)'}: {wanted} expected, not {_json_kind(value)}")
    if isinstance(kind, GoMap):
        found = dict(previous or {})
        for key, item in value:
            found[key] = None if item is None else go_decode(item, kind.values, f"{where}.{key}" if where else key)
        return found
    if not isinstance(kind, dict):
        return value
    names = {go_fold(name): name for name in kind}
    fields: dict[str, Any] = {}
    for key, item in value:
        name = names.get(go_fold(key))
        if name is None:
            continue
        if item is None:
            if isinstance(kind[name], GoMap):
                fields[name] = None
            continue
        fields[name] = go_decode(item, kind[name], f"{where}.{key}" if where else key, fields.get(name))
    return fields


def docker_hostname(key: str) -> str:
    """docker's ``ConvertToHostname``: an ``auths`` key without its http(s) scheme and path."""
    scheme, separator, rest = key.partition("://")
    if separator and scheme in ("http", "https"):
        key = rest
    return key.partition("/")[0]


def docker_key(host: str) -> str:
    """The server address docker looks ``host``'s login up by: Docker Hub's names share one."""
    return DOCKER_HUB_KEY if host in DOCKER_HUB_HOSTS else host


def docker_config_path() -> Path:
    """Where docker keeps its logins: ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    folder = os.environ.get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path(os.path.expanduser("~/.docker/config.json"))


def docker_json(data: bytes) -> Any:
    """docker's config (or a credential helper's answer) as Go's ``json.Decoder.Decode`` reads it,
    for ``go_decode``, not as ``bounded_json`` reads what trtforge signs: nothing but whitespace is
    None (no config: docker ignores ``io.EOF``), what follows the first value is ignored, objects are
    ``GoObject`` (a key given twice kept twice), invalid UTF-8 becomes U+FFFD, ``NaN`` and
    ``Infinity`` are refused (Go's grammar has neither). Size and nesting are bounded all the same."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"larger than {MAX_CONFIG_BYTES:,} bytes")
    if json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    text = data.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        return None
    try:
        return json.JSONDecoder(object_pairs_hook=GoObject, parse_constant=not_json_constant).raw_decode(text, start)[0]
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None


def read_docker_config(path: Path, host: str, instead: str) -> DockerConfig:
    """The docker config at ``path`` (none: no credentials), checked here because oras would read a
    malformed one as the registry's failure. What docker itself would refuse (not JSON, a value of
    the wrong type, an ``auth`` that is not base64 ``user:password``) is a usage error naming the file
    and the fixes: the file, or ``instead`` (see :func:`docker_login_for`)."""
    fix = f"fix or remove it (then docker login {host}), or {instead} (then it is not read)"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return DockerConfig()
    except OSError as exc:
        raise InvalidInputError(f"cannot read the docker config {path} ({exc.strerror}): {fix}") from exc
    try:
        document = docker_json(data)
        return DockerConfig.model_validate({} if document is None else go_decode(document, DOCKER_CONFIG_FIELDS))
    except ValidationError as exc:
        raise InvalidInputError(f"{path} is not a docker config ({first_error(exc)}): {fix}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not a docker config ({exc}): {fix}") from exc


def docker_login_for(host: str, *, instead: str) -> tuple[DockerAuth, str]:
    """docker's login for the registry ``host``, and what holds it (the config, or its credential
    helper), as docker's ``GetAuthConfig`` finds it: the registry's credential helper
    (``credHelpers``), else ``credsStore``, and only without either the config's own ``auths``
    entry (with a helper, docker takes nothing but the e-mail address from that entry).

    ``instead``: what else logs in without docker's config (``set A and B``), named in every
    refusal as the way around a config or helper that cannot be fixed here."""
    from oras.utils import iter_localhosts

    path = docker_config_path()
    config = read_docker_config(path, host, instead)
    # docker's key, then the other spelling of this machine, as oras read logins (localhost:5000
    # serving 127.0.0.1:5000): a local registry's login kept working across the two
    keys = [docker_key(host), *(alias for alias in iter_localhosts(host) if alias != host)]
    key = next((name for name in keys if config.entry(name) != DockerAuth()), keys[0])
    helper = config.helper(key)
    if not helper:
        return config.entry(key), str(path)
    program = f"docker-credential-{helper}"
    return ask_helper(program, key, path, host, instead), f"the credential helper {program}"


def ask_helper(program: str, key: str, path: Path, host: str, instead: str) -> DockerAuth:
    """What the credential helper ``program`` (named by the config at ``path`` for ``host``) keeps
    for ``key``, asked as docker asks it (docker-credential-helpers' ``client.Get``): "credentials not
    found in native keychain" is no login; a helper that is missing, fails or answers what is not a
    credential is one line (exit 2) with its own words, where oras logged them and went on as if
    none were configured."""
    named = f"the credential helper {program} that {path} names for {host}"
    environment = f"or {instead}"
    try:
        done = subprocess.run([program, "get"], input=key.encode(), capture_output=True, check=False)
    except OSError as exc:
        why = "is not on PATH" if isinstance(exc, FileNotFoundError) else f"cannot be run ({exc.strerror})"
        raise InvalidInputError(
            f"{named} {why}: install it, or take it out of {path} and docker login {host} again; {environment}"
        ) from exc
    said = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0:
        if said == HELPER_NOT_FOUND:
            return DockerAuth()
        text = said or done.stderr.decode(errors="replace").strip()  # helpers say why on stdout; some on stderr
        told = f": {text.splitlines()[0][:200]}" if text else ""
        raise InvalidInputError(
            f"{named} failed (exit {done.returncode}{told}): fix what it says and docker login {host} again, "
            f"{environment}"
        )
    try:
        document = docker_json(done.stdout)
        if document is None:
            raise ValueError("nothing")
        answer = go_decode(document, HELPER_ANSWER_FIELDS)
    except ValueError as exc:
        raise InvalidInputError(
            f"{named} answered what is not a docker credential ({exc}): docker login {host} again, {environment}"
        ) from exc
    user, secret = answer.get("Username", ""), answer.get("Secret", "")
    if user == HELPER_TOKEN_USER:
        return DockerAuth(identitytoken=secret)
    return DockerAuth(auth=base64.b64encode(f"{user}:{secret}".encode()).decode()) if user else DockerAuth()
