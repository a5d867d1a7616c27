"""Bytes from a location: an http(s) URL or, for ``falco-misp render``, a local path (a service).

Nothing a server sends is trusted to end (issue 11): every body is streamed and cut at
:attr:`FetchContext.max_response_bytes` (``ResponseTooLarge``). Failures become
:class:`~falco_misp.errors.SourceError` with a short reason (``ConnectionRefused``, ``Timeout``, ``TLS``...) and a
message naming the URL without credentials (:func:`safe_url`) and the client's own words, redacted (:func:`redact`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from falco_misp.errors import SourceError
from falco_misp.feed.model import Location
from falco_misp.feed.policy import Policy
from falco_misp.feed.servers import origin
from falco_misp.sources.egress import guarded_session
from falco_misp.values import URL_CREDENTIALS, safe_url

log = logging.getLogger(__name__)

# The largest body read from a source (one MISP page, one static feed file, one export or text list): far above
# real answers (a 100,000-attribute MISP page is ~60 MiB, the IPsum list ~5 MiB), low enough that a server sending
# without end cannot exhaust the operator's memory (issue 11). `--max-response-bytes` changes it.
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
_CHUNK_BYTES = 64 * 1024
MAX_CAUSE_CHARS = 300  # of a client's message quoted in a SourceError


@dataclass(frozen=True)
class FetchContext:
    """What a fetch needs besides the spec: secrets resolved by the caller, the clock, the feed file's folder."""

    now: int
    """Current time (epoch seconds) for maxAge/publishedWithin."""
    auth_key: str | None = field(default=None, repr=False)
    """MISP API key; never logged or put in a message."""
    ca_bundle: str | None = None
    """Path of a PEM CA bundle for the MISP server."""
    base_dir: Path | None = None
    """Folder relative paths in the spec are resolved against (the feed file's folder)."""
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    """Largest body read from the source (each MISP page, feed file, export, list); larger: ``ResponseTooLarge``."""
    prefetch_pages: int | None = None
    """MISP pages fetched ahead while the current one is processed (None: the default, 2; 0: none)."""
    policy: Policy | None = None
    """The operator's egress policy (issue 15): hosts and addresses every connection is checked against
    (:mod:`falco_misp.sources.egress`); None: no restriction (``falco-misp render``)."""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """``headersSecretRef`` values: sent with requests to the source URL's own origin only; never logged."""


def redact(text: str, *secrets: str | None) -> str:
    """``text`` safe for a status, an Event or a log: the secrets and URL credentials replaced by ``***``.

    Whitespace is collapsed and the result kept to :data:`MAX_CAUSE_CHARS` (cut after redaction, so no part of a
    secret survives at the cut).
    """
    for secret in secrets:
        for form in {secret or "", (secret or "").strip()}:
            if form:
                text = text.replace(form, "***")
    text = " ".join(URL_CREDENTIALS.sub(r"\1***@", text).split())
    return text if len(text) <= MAX_CAUSE_CHARS else text[: MAX_CAUSE_CHARS - 1] + "…"


def _size(limit: int) -> str:
    return f"{limit} bytes" + (f" ({limit / 2**20:g} MiB)" if limit >= 2**20 else "")


def _too_large(where: str, limit: int) -> SourceError:
    return SourceError(
        "ResponseTooLarge", f"{where}: the answer is larger than {_size(limit)}; raise --max-response-bytes if "
        "such a size is expected",
    )  # fmt: skip


def read_body(response: requests.Response, limit: int, where: str) -> bytes:
    """A response's body (decoded), streamed and cut at ``limit`` bytes: ``ResponseTooLarge`` beyond.

    ``response`` must not have been read yet (``stream=True``, or a response hook). It is closed when too large.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit and not response.headers.get("Content-Encoding"):
        response.close()
        raise _too_large(where, limit)
    body = bytearray()
    for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            response.close()
            raise _too_large(where, limit)
    return bytes(body)


# ----------------------------------------------------------------------------------------------- files and URLs
def _is_url(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


def _local_path(url: str, base_dir: Path | None) -> Path:
    parts = urlsplit(url)
    path = Path(parts.path) if parts.scheme == "file" else Path(url)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def read_location(loc: Location, ctx: FetchContext, url: str | None = None) -> bytes:
    """The bytes at an http(s) URL or a local path, at most ``ctx.max_response_bytes`` of them (streamed)."""
    target = url or loc.url
    limit = ctx.max_response_bytes
    if _is_url(target):
        where = safe_url(target)
        try:
            home = origin(loc.url)  # the credentials go to the source's origin only, never on a redirect elsewhere
            headers = dict(ctx.headers) if ctx.headers and origin(target) == home else None
            session = guarded_session(ctx.policy, loc.url, ctx.headers)
            timeout, verify = loc.timeout_seconds, loc.verify_tls
            with session, session.get(target, headers=headers, timeout=timeout, verify=verify, stream=True) as resp:
                if resp.status_code != 200:
                    raise SourceError(f"HTTP{resp.status_code}", f"{where} answered HTTP {resp.status_code}")
                return read_body(resp, limit, where)
        except requests.RequestException as exc:
            reason, what = _reason(exc)
            raise SourceError(reason, f"{where}: {what}") from None
    path = _local_path(target, ctx.base_dir)
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)  # a device or a growing file has no meaningful size: read, then judge
    except FileNotFoundError:
        raise SourceError("NotFound", f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError("ReadError", f"{path}: {exc.strerror}") from None
    if len(data) > limit:
        raise SourceError(
            "FileTooLarge", f"{path}: the file is larger than {_size(limit)}; raise --max-response-bytes if such a "
            "size is expected",
        )  # fmt: skip
    return data


def _cause(exc: BaseException, *secrets: str | None) -> str:
    """``Type: message`` of a client exception, redacted (what PyMISP or requests said about the problem)."""
    text = str(exc)
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, *secrets)


def _reason(exc: BaseException) -> tuple[str, str]:
    """A short reason and a secret-free description for a client-side exception (walks the cause chain)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.exceptions.SSLError):
            return "TLS", "TLS verification failed (set verifyTLS or caBundleSecretRef)"
        if isinstance(seen, requests.exceptions.Timeout):
            return "Timeout", "timed out"
        if isinstance(seen, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
            return "TruncatedResponse", "the answer was cut off"
        if isinstance(seen, ConnectionRefusedError):
            return "ConnectionRefused", "connection refused"
        if isinstance(seen, requests.exceptions.ConnectionError):
            text = str(seen)
            if "refused" in text.lower():
                return "ConnectionRefused", "connection refused"
            if "IncompleteRead" in text or "Connection broken" in text:
                return "TruncatedResponse", "the answer was cut off"
            return "ConnectionError", "cannot connect"
        seen = seen.__cause__ or seen.__context__
    return "Error", f"unexpected answer ({_cause(exc)})"


def _source_error_in(exc: BaseException) -> SourceError | None:
    """A SourceError somewhere in the chain (raised by a response hook inside a PyMISP call, which may wrap it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SourceError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
