"""Pushing a rulesfile artifact to an OCI registry: a small distribution-API client of our own (a service, issue 16).

Written here on ``requests`` rather than taken from an OCI library so the tests can pull back with an independent
client (PyPI ``oras``) and check what a registry really holds, and because a push needs only five calls of the
OCI distribution spec:

- ``GET /v2/<repo>/manifests/<tag>`` for every tag first: when each already carries our
  ``io.falco-misp.rules-sha256`` annotation with the same rules hash, nothing is written (``writes=0``), so an
  unchanged feed never makes every falcoctl of a fleet pull again;
- ``HEAD /v2/<repo>/blobs/<digest>`` for the config and the layer: a blob the registry holds is not sent again;
- a monolithic upload, ``POST /v2/<repo>/blobs/uploads/`` then ``PUT <Location>&digest=<digest>``;
- ``PUT /v2/<repo>/manifests/<tag>`` for each tag, the version tag first and the moving tag (``latest``, or the tag
  of the reference) last: a push that fails half-way leaves the moving tag on the last good rules;
- with ``read_previous`` (the operator's ``status.lastChange``), before writing, ``GET /v2/<repo>/blobs/<digest>`` of
  the layer the moving tag serves, when we pushed it: the files followers run now, at most
  :data:`MAX_LAYER_BYTES` packed and unpacked; failing to read them is logged, never a failed push.

Auth: HTTP Basic, and the Bearer-token challenge (``WWW-Authenticate: Bearer realm=...,service=...,scope=...``:
the token is fetched from the realm with the credentials, if any, as Basic) that Docker Hub, GHCR, Harbor and
distribution's token auth use. Credentials come from a docker config JSON (``auths[host].auth`` or
``username``/``password``, what a ``kubernetes.io/dockerconfigjson`` Secret holds) or a username/password pair.
TLS is verified by default, against a CA bundle when given; ``verify_tls=False`` skips it; ``plain_http`` speaks
HTTP. Every request has a timeout; bodies read back (manifests, token answers) are capped.

Every failure is a :class:`~falco_misp.errors.RegistryError` with a short reason: ``BadReference`` (the
reference), ``BadCredentials`` (an unusable docker config), ``RegistryUnreachable`` (connection, TLS, timeout,
HTTP 5xx/429), ``RegistryAuthFailed`` (401, a refused token, 403 on a read), ``PushRefused`` (a write refused:
read-only registry, 403, invalid manifest...) or ``BadAnswer`` (an answer that breaks the protocol). Messages name
the registry and repository, never a password or a token (they are redacted from anything quoted).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests

from falco_misp.delivery.artifact import (
    ANNOTATION_RULES_SHA256,
    LATEST_TAG,
    LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    Artifact,
    digest,
    read_layer,
)
from falco_misp.errors import RegistryError
from falco_misp.sources.locations import redact

log = logging.getLogger(__name__)

# distribution's grammar (docker/distribution reference/regexp.go), in short
_HOST = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)"
    r"(?::[0-9]{1,5})?$"
)
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPOSITORY_MAX = 255
# Docker Hub's registry answers on another host than its name, and docker config files key it by its v1 URL.
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
_DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
# An OCI manifest is at most 4 MiB in distribution; a token answer is a few KiB.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_TOKEN_BYTES = 1024 * 1024
# The artifact a push replaces is read back (for status.lastChange) up to this size, packed and unpacked: 256 shards
# (falco.maxShards' maximum) of at most 1 MiB, and room for the placeholders.
MAX_LAYER_BYTES = 257 * 1024 * 1024
_MAX_ERROR_CHARS = 200
_MAX_ERROR_BODY = 64 * 1024
# what a tag may hold: ours, or an image someone else pushed there (read to see it is not ours, then replaced)
_ACCEPT = ", ".join(
    (
        MANIFEST_MEDIA_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
_CHALLENGE_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Reference:
    """Where to push: ``host[:port]/repo[/...][:tag]``."""

    registry: str
    """``host[:port]`` as written (``docker.io`` is spoken to at ``registry-1.docker.io``)."""
    repository: str
    """The repository path, e.g. ``security/falco-misp-rules``."""
    tag: str | None
    """The moving tag to push (``None``: ``latest``)."""

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}" + (f":{self.tag}" if self.tag else "")


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for a registry (never logged, never in a message)."""

    username: str
    """User name (or ``<token>`` style names some registries use)."""
    password: str
    """Password or access token."""

    def __repr__(self) -> str:
        return f"RegistryAuth(username={self.username!r}, password='***')"


@dataclass(frozen=True)
class RegistryTarget:
    """A reference and how to speak to its registry."""

    reference: Reference
    """Registry, repository and optional tag."""
    plain_http: bool = False
    """Speak HTTP instead of HTTPS (a registry on a trusted network or 127.0.0.1)."""
    verify_tls: bool = True
    """Verify the registry's certificate (False: skip verification, as falcoctl's insecureSkipVerify)."""
    ca_bundle: str | None = None
    """PEM file of the CAs to verify against (None: the system's)."""
    timeout_seconds: float = 30.0
    """Connect and read timeout of every request."""


@dataclass(frozen=True)
class PushResult:
    """What a push did."""

    digest: str
    """The manifest digest the tags point to (the remote one when nothing was pushed)."""
    tags: tuple[str, ...]
    """The tags, the version tag first."""
    pushed: bool
    """False when every tag already held these rules."""
    writes: int
    """Write requests the registry accepted (POST/PUT): 0 when unchanged."""
    previous: Mapping[str, bytes] | None = None
    """With ``read_previous``, when it pushed: the files the moving tag served before (what falcoctl followers ran;
    empty when the tag did not exist). None: not asked, nothing pushed, or not known (the tag held an artifact not
    ours, or it could not be read: logged, never a failure of the push)."""


def parse_reference(ref: str) -> Reference:
    """``host[:port]/repo[/...][:tag]`` -> :class:`Reference`; :class:`RegistryError` ``BadReference`` otherwise.

    The registry host is required (no implied Docker Hub: ``falcosecurity/rules`` is refused), and so is a tag
    rather than a digest: a digest names content, a push names where to put it.
    """

    def bad(why: str) -> RegistryError:
        return RegistryError("BadReference", f"{ref!r}: {why}; expected REGISTRY[:PORT]/REPOSITORY[:TAG]")

    if "://" in ref:
        raise bad("no scheme in a reference (use plain HTTP explicitly, e.g. --plain-http)")
    if "@" in ref:
        raise bad("a digest reference cannot be pushed to; give a tag")
    host, slash, rest = ref.partition("/")
    if not slash or not rest:
        raise bad("no repository")
    if not _HOST.match(host) or ("." not in host and ":" not in host and host != "localhost"):
        raise bad(f"{host!r} is not a registry host (a host name with a dot or a port, or localhost)")
    tag: str | None = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, _, tag = rest.rpartition(":")
        if not _TAG.match(tag):
            raise bad(f"{tag!r} is not a valid tag")
    components = rest.split("/")
    if len(rest) > _REPOSITORY_MAX or not all(_PATH_COMPONENT.match(c) for c in components):
        raise bad(f"{rest!r} is not a valid repository (lower-case letters, digits, '.', '_', '-', '/')")
    return Reference(registry=host, repository=rest, tag=tag)


def _config_key_host(key: str) -> str:
    """``https://host:port/v1/`` -> ``host:port``: docker config files key ``auths`` by host or URL."""
    if "://" in key:
        key = urlsplit(key).netloc
    return key.split("/", 1)[0].lower()


def _decode_auth(value: object, registry: str) -> RegistryAuth:
    if not isinstance(value, str):
        raise RegistryError("BadCredentials", f"the docker config's auth for {registry} is not a string")
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise RegistryError("BadCredentials", f"the docker config's auth for {registry} is not base64") from None
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise RegistryError("BadCredentials", f"the docker config's auth for {registry} is not user:password")
    return RegistryAuth(username=username, password=password)


def auth_from_docker_config(config_json: str, registry: str) -> RegistryAuth | None:
    """The credentials a docker config JSON holds for ``registry`` (``host[:port]``), or None when it has none.

    Reads ``auths[<host>]`` (keys may be a host or a URL such as ``https://index.docker.io/v1/``) with ``auth``
    (base64 ``user:password``) or ``username``/``password``; also the legacy ``.dockercfg`` form without ``auths``.
    Credential helpers and identity tokens are not supported (``BadCredentials`` for an identity token alone).
    """
    try:
        doc = json.loads(config_json)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RegistryError("BadCredentials", "the docker config is not valid JSON") from None
    if not isinstance(doc, dict):
        raise RegistryError("BadCredentials", "the docker config is not a JSON object")
    auths = doc.get("auths", doc if "auths" not in doc and all(isinstance(v, dict) for v in doc.values()) else {})
    if not isinstance(auths, dict):
        raise RegistryError("BadCredentials", "the docker config's auths is not an object")
    wanted = {registry.lower()}
    if registry.lower() in _DOCKER_HUB:
        wanted |= {*_DOCKER_HUB, _config_key_host(_DOCKER_HUB_CONFIG_KEY)}
    for key, entry in sorted(auths.items()):
        if _config_key_host(str(key)) not in wanted:
            continue
        if not isinstance(entry, dict):
            raise RegistryError("BadCredentials", f"the docker config's entry for {registry} is not an object")
        if entry.get("auth"):
            return _decode_auth(entry["auth"], registry)
        username, password = entry.get("username"), entry.get("password")
        if isinstance(username, str) and username and isinstance(password, str):
            return RegistryAuth(username=username, password=password)
        if entry.get("identitytoken"):
            raise RegistryError(
                "BadCredentials", f"the docker config holds only an identity token for {registry}: not supported, "
                "give a user name and password (or an access token as the password)",
            )  # fmt: skip
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` -> (``bearer``, params). The scheme is lower-cased."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _CHALLENGE_PARAM.finditer(rest)}  # fmt: skip
    return scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()}


class _Client:
    """One push's HTTP conversation: a session, the auth state, the count of accepted writes."""

    def __init__(self, target: RegistryTarget, auth: RegistryAuth | None) -> None:
        self.target = target
        self.auth = auth
        ref = target.reference
        host = _DOCKER_HUB_API if ref.registry.lower() in _DOCKER_HUB else ref.registry
        self.netloc = host
        self.base = f"{'http' if target.plain_http else 'https'}://{host}/v2/{ref.repository}"
        self.where = f"{ref.registry}/{ref.repository}"
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "falco-misp-operator"
        # per request, not on the session: requests lets REQUESTS_CA_BUNDLE override a session's verify
        self.verify: bool | str = False if not target.verify_tls else (target.ca_bundle or True)
        self.authorization: str | None = None
        self.token: str | None = None
        self.writes = 0

    # ------------------------------------------------------------------------------------------------ plumbing
    def _secrets(self) -> tuple[str | None, ...]:
        basic = self.authorization.removeprefix("Basic ") if self.authorization else None
        return (self.auth.password if self.auth else None, self.token, basic)

    def _redact(self, text: str) -> str:
        return redact(text, *self._secrets())

    def _send(self, method: str, url: str, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if self.authorization and urlsplit(url).netloc == self.netloc:  # never to an upload host elsewhere
            headers["Authorization"] = self.authorization
        timeout = self.target.timeout_seconds
        try:
            # streamed: no body is read unless a caller reads it, and then a bounded part (_read)
            return self.session.request(
                method, url, headers=headers, timeout=(timeout, timeout), verify=self.verify, stream=True, **kw
            )
        except requests.exceptions.SSLError:
            raise RegistryError(
                "RegistryUnreachable", f"{self.where}: TLS verification failed (give the registry's CA bundle, or "
                "skip verification explicitly)",
            ) from None  # fmt: skip
        except requests.exceptions.Timeout:
            raise RegistryError("RegistryUnreachable", f"{self.where}: timed out after {timeout:g} s") from None
        except requests.exceptions.ConnectionError as exc:
            what = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
            raise RegistryError("RegistryUnreachable", f"{self.where}: {what}") from None
        except requests.RequestException as exc:
            raise RegistryError("RegistryUnreachable", self._redact(f"{self.where}: {type(exc).__name__}")) from None
        except OSError:  # requests' own check of the CA bundle path
            raise RegistryError(
                "RegistryUnreachable", f"{self.where}: cannot read the CA bundle {self.verify}"
            ) from None

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        """A request, answering one auth challenge (Basic or Bearer) and retrying once."""
        response = self._send(method, url, **kw)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        response.close()
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.auth is None:
                raise RegistryError("RegistryAuthFailed", f"{self.where}: the registry requires credentials")
            raw = f"{self.auth.username}:{self.auth.password}".encode()
            self.authorization = "Basic " + base64.b64encode(raw).decode()
        elif scheme == "bearer" and params.get("realm"):
            self.token = self._fetch_token(params)
            self.authorization = f"Bearer {self.token}"
        else:
            raise RegistryError("RegistryAuthFailed", f"{self.where}: HTTP 401 without a usable auth challenge")
        response = self._send(method, url, **kw)
        if response.status_code == 401:
            response.close()
            who = "these credentials were refused" if self.auth else "the registry requires credentials"
            raise RegistryError("RegistryAuthFailed", f"{self.where}: {who} (HTTP 401)")
        return response

    def _fetch_token(self, params: Mapping[str, str]) -> str:
        realm = params["realm"]
        if urlsplit(realm).scheme not in ("http", "https"):
            raise RegistryError("BadAnswer", f"{self.where}: the token realm is not an http(s) URL")
        query = {k: params[k] for k in ("service", "scope") if params.get(k)}
        if "scope" not in query:
            query["scope"] = f"repository:{self.target.reference.repository}:pull,push"
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        basic = (self.auth.username, self.auth.password) if self.auth else None
        timeout = self.target.timeout_seconds
        try:
            with self.session.get(
                url, auth=basic, timeout=(timeout, timeout), verify=self.verify, stream=True
            ) as answer:
                status = answer.status_code
                body = self._read(answer, MAX_TOKEN_BYTES, "token answer") if status == 200 else b""
        except requests.exceptions.SSLError:
            raise RegistryError(
                "RegistryUnreachable", f"{self.where}: TLS verification of the token server failed"
            ) from None
        except (requests.RequestException, OSError):
            raise RegistryError("RegistryUnreachable", f"{self.where}: cannot reach the token server") from None
        if status in (401, 403):
            who = "these credentials were refused" if self.auth else "the registry requires credentials"
            raise RegistryError("RegistryAuthFailed", f"{self.where}: {who} by the token server (HTTP {status})")
        if status != 200:
            raise RegistryError("RegistryAuthFailed", f"{self.where}: the token server answered HTTP {status}")
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RegistryError("BadAnswer", f"{self.where}: the token server's answer is not JSON") from None
        token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError("BadAnswer", f"{self.where}: the token server's answer holds no token")
        return token

    def _read(self, response: requests.Response, limit: int, what: str, *, cut: bool = False) -> bytes:
        """At most ``limit`` bytes of a streamed body: beyond, ``BadAnswer`` (or, with ``cut``, the first ones)."""
        body = bytearray()
        try:
            for chunk in response.iter_content(chunk_size=64 * 1024):
                body += chunk
                if len(body) > limit:
                    if cut:
                        return bytes(body[:limit])
                    raise RegistryError("BadAnswer", f"{self.where}: the {what} is larger than {limit} bytes")
        except requests.RequestException:
            raise RegistryError("RegistryUnreachable", f"{self.where}: the {what} was cut off") from None
        return bytes(body)

    def fail(self, response: requests.Response, doing: str, *, write: bool) -> RegistryError:
        """The error for an unexpected answer while ``doing`` something."""
        status = response.status_code
        detail = ""
        try:
            body = (
                self._read(response, _MAX_ERROR_BODY, "error answer", cut=True)
                if response.request.method != "HEAD"
                else b""
            )
            errors = json.loads(body or b"{}").get("errors") or []
            detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors if isinstance(e, dict))
        except (ValueError, AttributeError, TypeError, RegistryError):
            pass
        detail = self._redact(detail)[:_MAX_ERROR_CHARS]
        message = f"{self.where}: {doing} answered HTTP {status}" + (f" ({detail})" if detail else "")
        response.close()
        if status >= 500 or status == 429:
            return RegistryError("RegistryUnreachable", message)
        if status == 403 and not write:
            return RegistryError("RegistryAuthFailed", message)
        if 400 <= status < 500 and write:
            return RegistryError("PushRefused", message)
        return RegistryError("BadAnswer", message)

    # ---------------------------------------------------------------------------------------------- the calls
    def remote_manifest(self, tag: str) -> tuple[str, dict[str, Any]] | None:
        """(digest, manifest) of ``tag``, or None when the tag does not exist."""
        url = f"{self.base}/manifests/{tag}"
        response = self.request("GET", url, headers={"Accept": _ACCEPT})
        with response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self.fail(response, f"reading tag {tag}", write=False)
            body = self._read(response, MAX_MANIFEST_BYTES, f"manifest of tag {tag}")
        try:
            manifest = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            manifest = None
        return digest(body), (manifest if isinstance(manifest, dict) else {})

    def layer_files(self, manifest: Mapping[str, Any], limit: int) -> dict[str, bytes]:
        """The files of a rulesfile manifest's one layer, at most ``limit`` bytes packed and unpacked."""
        layers = manifest.get("layers")
        layer = layers[0] if isinstance(layers, list) and len(layers) == 1 else None
        if not isinstance(layer, dict) or layer.get("mediaType") != LAYER_MEDIA_TYPE:
            raise RegistryError("BadAnswer", f"{self.where}: not a rulesfile artifact (one {LAYER_MEDIA_TYPE} layer)")
        blob_digest = str(layer.get("digest") or "")
        response = self.request("GET", f"{self.base}/blobs/{blob_digest}")
        with response:
            if response.status_code != 200:
                raise self.fail(response, f"reading blob {blob_digest}", write=False)
            blob = self._read(response, limit, f"blob {blob_digest}")
        if digest(blob) != blob_digest:
            raise RegistryError("BadAnswer", f"{self.where}: blob {blob_digest} does not have that digest")
        try:
            return read_layer(blob, limit)
        except ValueError as exc:
            raise RegistryError("BadAnswer", f"{self.where}: layer {blob_digest}: {exc}") from None

    def has_blob(self, blob_digest: str) -> bool:
        response = self.request("HEAD", f"{self.base}/blobs/{blob_digest}")
        with response:
            if response.status_code == 200:
                return True
            if response.status_code == 404:
                return False
            raise self.fail(response, f"checking blob {blob_digest}", write=False)

    def upload_blob(self, data: bytes, blob_digest: str) -> None:
        """A monolithic upload: POST a session, PUT the bytes with their digest."""
        response = self.request("POST", f"{self.base}/blobs/uploads/", headers={"Content-Length": "0"})
        with response:
            if response.status_code != 202:
                raise self.fail(response, "starting a blob upload", write=True)
            location = response.headers.get("Location")
        if not location:
            raise RegistryError("BadAnswer", f"{self.where}: the blob upload answer has no Location")
        self.writes += 1
        upload = urljoin(self.base + "/", location)
        upload += ("&" if "?" in upload else "?") + urlencode({"digest": blob_digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        response = self.request("PUT", upload, data=data, headers=headers)
        with response:
            if response.status_code != 201:
                raise self.fail(response, f"uploading blob {blob_digest}", write=True)
        self.writes += 1

    def put_manifest(self, manifest: bytes, tag: str, manifest_digest: str) -> None:
        response = self.request(
            "PUT", f"{self.base}/manifests/{tag}", data=manifest, headers={"Content-Type": MANIFEST_MEDIA_TYPE}
        )
        with response:
            if response.status_code != 201:
                raise self.fail(response, f"tagging {tag}", write=True)
            echoed = response.headers.get("Docker-Content-Digest")
        self.writes += 1
        if echoed and echoed != manifest_digest:
            raise RegistryError("BadAnswer", f"{self.where}: tag {tag} was stored as {echoed}, not {manifest_digest}")


def _rules_sha256(manifest: Mapping[str, Any]) -> str | None:
    """The rules hash a manifest says it carries (None for anything we did not push)."""
    annotations = manifest.get("annotations")
    value = annotations.get(ANNOTATION_RULES_SHA256) if isinstance(annotations, dict) else None
    return value if isinstance(value, str) else None


def push_tags(reference: Reference, artifact: Artifact) -> tuple[str, ...]:
    """The tags a push writes, in order: the version tag, then the moving tag (the reference's, or ``latest``)."""
    moving = reference.tag or LATEST_TAG
    return (artifact.version, moving) if moving != artifact.version else (moving,)


def _replaced_files(client: _Client, found: tuple[str, dict[str, Any]] | None) -> dict[str, bytes] | None:
    """The files of the artifact a push is about to replace (``found``: the moving tag's digest and manifest)."""
    if found is None:
        return {}  # a first push: followers had none of these rules
    if _rules_sha256(found[1]) is None:
        log.info("%s: the tag holds an artifact not pushed by falco-misp: what it replaces is unknown", client.where)
        return None
    try:
        return client.layer_files(found[1], MAX_LAYER_BYTES)
    except RegistryError as exc:
        log.warning("%s: cannot read the artifact this push replaces (%s): no lastChange", client.where, exc)
        return None


def push_artifact(
    target: RegistryTarget, artifact: Artifact, auth: RegistryAuth | None = None, *, read_previous: bool = False
) -> PushResult:
    """Push ``artifact`` under :func:`push_tags`, or nothing when every tag already holds the same rules hash.

    ``read_previous``: before pushing, read back the files the moving tag serves (:attr:`PushResult.previous`)."""
    tags = push_tags(target.reference, artifact)
    client = _Client(target, auth)
    try:
        remote = [client.remote_manifest(tag) for tag in tags]
        current = [
            found[0] for found in remote if found is not None and _rules_sha256(found[1]) == artifact.rules_sha256
        ]
        if len(current) == len(tags) and len(set(current)) == 1:
            log.info("%s: tags %s already hold rules %s", client.where, ", ".join(tags), artifact.rules_sha256[:12])
            return PushResult(digest=current[0], tags=tags, pushed=False, writes=0)
        previous = _replaced_files(client, remote[-1]) if read_previous else None  # the moving tag is the last
        for data, blob_digest in ((artifact.config, artifact.config_digest), (artifact.layer, artifact.layer_digest)):
            if not client.has_blob(blob_digest):
                client.upload_blob(data, blob_digest)
        for tag in tags:  # the moving tag last: a failure before it leaves it on the last good rules
            client.put_manifest(artifact.manifest, tag, artifact.manifest_digest)
    finally:
        client.session.close()
    log.info("%s: pushed %s as %s (%d writes)", client.where, artifact.manifest_digest, ", ".join(tags), client.writes)
    return PushResult(digest=artifact.manifest_digest, tags=tags, pushed=True, writes=client.writes, previous=previous)
