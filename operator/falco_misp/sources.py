"""Fetching attributes from the four source kinds (the I/O end of the pipeline).

Everything here yields :class:`~falco_misp.attributes.Attribute` values one at a time, page by page or event by
event, so memory follows the page size rather than the feed size. Every failure becomes a
:class:`~falco_misp.errors.SourceError` with a short reason (``ConnectionRefused``, ``Timeout``, ``TLS``,
``HTTP401``, ``InvalidJSON``...) and a message naming the URL or path and the cause (the client's own message),
never the auth key nor credentials written into a URL (:func:`redact`).

Nothing a server sends is trusted to end (issue 11): every body (MISP answers, static feed files, exports, text
lists) is streamed and cut at :attr:`FetchContext.max_response_bytes` (``ResponseTooLarge``), and a MISP server
that ignores ``page``/``limit`` (a page repeating an earlier one, longer than the limit, or past the count MISP
announced) fails with ``PagingIgnored`` instead of being paged forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from pymisp import PyMISP

from falco_misp.attributes import (
    Attribute,
    EventContext,
    attribute_from_json,
    attributes_from_document,
    attributes_from_text,
)
from falco_misp.errors import SourceError
from falco_misp.filters import build_restsearch_params, select
from falco_misp.spec import Feed, Location, MispServer

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


# scheme://user:password@host -> scheme://***@host (also a bare token before the @)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` safe for a status, an Event or a log: the secrets and URL credentials replaced by ``***``.

    Whitespace is collapsed and the result kept to :data:`MAX_CAUSE_CHARS` (cut after redaction, so no part of a
    secret survives at the cut).
    """
    for secret in secrets:
        for form in {secret or "", (secret or "").strip()}:
            if form:
                text = text.replace(form, "***")
    text = " ".join(_URL_CREDENTIALS.sub(r"\1***@", text).split())
    return text if len(text) <= MAX_CAUSE_CHARS else text[: MAX_CAUSE_CHARS - 1] + "…"


def safe_url(url: str) -> str:
    """A URL without the credentials it may carry (``https://user:pw@host/x`` -> ``https://***@host/x``)."""
    return _URL_CREDENTIALS.sub(r"\1***@", url)


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


# ---------------------------------------------------------------------------------------------------------- MISP
class _ResponseHooks(requests.auth.AuthBase):
    """Reads MISP's ``X-Result-Count`` header, which PyMISP does not expose, and caps every body PyMISP reads.

    Not authentication (PyMISP sends the key itself): ``auth=`` is the public PyMISP/requests hook point that
    sees every request, and this registers a response hook on each. requests runs response hooks before it reads
    the body, so the hook streams the body itself, up to ``max_bytes``, and hands it to the response.
    """

    def __init__(self, server_url: str, max_bytes: int) -> None:
        self.last: int | None = None
        self._where = f"MISP at {safe_url(server_url)}"
        self._max_bytes = max_bytes

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self.last = None
        request.register_hook("response", self._record)  # type: ignore[no-untyped-call]
        return request

    def _record(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        value = response.headers.get("X-Result-Count", "")
        self.last = int(value) if value.isdigit() else None
        path = urlsplit(response.url).path or "/"
        body = read_body(response, self._max_bytes, f"{self._where} ({path})")
        response._content = body  # what `response.content` returns from now on (requests reads no further)


def quiet_pymisp_logger() -> None:
    """PyMISP logs every request's headers, the API key included, at DEBUG: keep its logger at INFO or above."""
    logger = logging.getLogger("pymisp")
    logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))


def connect_misp(server: MispServer, auth_key: str, ca_path: str | None, **options: Any) -> PyMISP:
    """The one way a PyMISP client is made, for reading and for reporting: TLS as the spec says (a private CA from
    ``ca_path``), its timeout, our tool name, and PyMISP's logger kept from logging the key. Raises what PyMISP's
    start-up calls raise (see :func:`failure_reason`)."""
    verify: bool | str = (ca_path or True) if server.verify_tls else False
    quiet_pymisp_logger()
    return PyMISP(
        server.url, auth_key, ssl=verify, timeout=server.timeout_seconds, tool="falco-misp-operator", **options
    )


def failure_reason(exc: BaseException) -> str:
    """A short reason for a failed PyMISP call, the same for reading and reporting: the network's (``TLS``,
    ``Timeout``, ``ConnectionRefused``...), else the answer's (``HTTP401``, ``HTTP403``, ``HTTP5xx``, ``InvalidJSON``,
    ``Unauthorized``: PyMISP's start-up could not read the user), else ``Error``."""
    reason, _ = _reason(exc)
    if reason != "Error":
        return reason
    text = str(exc)
    for code in ("401", "403"):
        if f"({code}" in text or f"Error code {code}" in text or f"'{code}'" in text:
            return f"HTTP{code}"
    if "Error code 5" in text:
        return "HTTP5xx"
    if type(exc).__name__ == "PyMISPUnexpectedResponse":
        return "InvalidJSON"
    if "Unable to get the user settings" in text:
        return "Unauthorized"
    return "Error"


def write_ca_file(pem: str) -> str:
    """A PEM CA bundle as a private temporary file (PyMISP and requests take a path); remove it with
    :func:`remove_file`."""
    fd, path = tempfile.mkstemp(prefix="falco-misp-ca-", suffix=".pem")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(pem)
    return path


def remove_file(path: str | None) -> None:
    """Remove a file if it is there."""
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


@contextlib.contextmanager
def ca_file(pem: str | None) -> Iterator[str | None]:
    """The CA bundle as a temporary file for the duration of a fetch (None: no bundle)."""
    path = write_ca_file(pem) if pem is not None else None
    try:
        yield path
    finally:
        remove_file(path)


class MispApi:
    """The slice of MISP the operator uses, over the real PyMISP client."""

    def __init__(
        self,
        server: MispServer,
        auth_key: str,
        ca_bundle: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.url = safe_url(server.url)
        if not auth_key:
            raise SourceError("AuthKeyMissing", f"no API key for MISP at {self.url}")
        self.server = server
        self._auth_key = auth_key
        self._count = _ResponseHooks(server.url, max_response_bytes)
        try:
            self._misp = connect_misp(server, auth_key, ca_bundle, auth=self._count)
        except Exception as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> SourceError:
        """The SourceError for a failed PyMISP call: a short reason, and the cause in PyMISP's words (redacted)."""
        inner = _source_error_in(exc)
        if inner is not None:
            return inner
        cause = _cause(exc, self._auth_key)
        reason = failure_reason(exc)
        rejected = "rejected the API key"
        said = {
            "HTTP401": rejected, "HTTP403": rejected, "Unauthorized": rejected,
            "HTTP5xx": "answered a server error", "InvalidJSON": "answered something that is not JSON",
        }.get(reason)  # fmt: skip
        if said is not None:
            return SourceError(reason, f"MISP at {self.url} {said} ({cause})")
        what = _reason(exc)[1] if reason != "Error" else f"unexpected answer ({cause})"
        return SourceError(reason, f"MISP at {self.url}: {what}")

    def _describe(self, answer: object) -> str:
        """What an answer that is not a search result says: its message, else its keys (redacted, short)."""
        if isinstance(answer, dict):
            said = [str(answer[k]) for k in ("name", "message", "errors") if answer.get(k)]
            text = "; ".join(dict.fromkeys(said)) if said else "keys: " + ", ".join(map(str, list(answer)[:10]))
        else:
            text = f"a {type(answer).__name__}"
        return redact(text, self._auth_key)

    @property
    def result_count(self) -> int | None:
        """``X-Result-Count`` of the last search (matches before MISP's warninglist/decay post-filter)."""
        return self._count.last

    def search_attributes(self, params: dict[str, Any], page: int, limit: int) -> list[dict[str, Any]]:
        """One page of ``/attributes/restSearch``."""
        try:
            answer = self._misp.search(controller="attributes", page=page, limit=limit, **params)
        except Exception as exc:
            raise self._error(exc) from None
        if isinstance(answer, dict) and "errors" in answer:
            errors = answer["errors"]
            status = errors[0] if isinstance(errors, tuple | list) and errors else "?"
            said = errors[1] if isinstance(errors, tuple | list) and len(errors) > 1 else errors
            return_reason = f"HTTP{status}" if isinstance(status, int) else "MispError"
            raise SourceError(
                return_reason,
                f"MISP at {self.url} refused the search (HTTP {status}: {self._describe(said)})"
                if isinstance(status, int) else f"MISP at {self.url} refused the search ({self._describe(said)})",
            )  # fmt: skip
        if isinstance(answer, dict) and isinstance(answer.get("Attribute"), list):
            return [a for a in answer["Attribute"] if isinstance(a, dict)]
        if isinstance(answer, dict) and not answer:
            return []
        raise SourceError(
            "InvalidJSON",
            f"MISP at {self.url} answered something that is not a search result ({self._describe(answer)})",
        )


def _page_digest(rows: list[dict[str, Any]]) -> str:
    """What identifies a page's content: its attributes' ids, uuids, types and values."""
    text = "\n".join(f"{r.get('id')}\0{r.get('uuid')}\0{r.get('type')}\0{r.get('value')}" for r in rows)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class _PageGuard:
    """Ends paging through one filter set when the server shows that it ignores ``page``/``limit`` (issue 11).

    MISP pages over ascending attribute ids, so no two non-empty pages of one query hold the same attributes, none
    holds more than ``limit``, and none starting past ``X-Result-Count`` holds any. A server answering otherwise
    would be paged forever (or until an empty page that never comes): fail with ``PagingIgnored`` instead.
    """

    def __init__(self, api: MispApi, limit: int) -> None:
        self._api = api
        self._limit = limit
        self._pages: dict[str, int] = {}

    def check(self, page: int, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return  # a page emptied by the warninglist/decay post-filter may follow another one
        problem = ""
        total = self._api.result_count
        if len(rows) > self._limit:
            problem = f"page {page} holds {len(rows)} attributes for a limit of {self._limit}"
        elif total is not None and (page - 1) * self._limit >= total:
            problem = f"page {page} starts past the {total} results it counted, yet holds {len(rows)} attributes"
        else:
            digest = _page_digest(rows)
            if digest in self._pages:
                problem = f"page {page} holds the same attributes as page {self._pages[digest]}"
            self._pages[digest] = page
        if problem:
            raise SourceError(
                "PagingIgnored", f"MISP at {self._api.url} ignores restSearch paging (page, limit={self._limit}): "
                f"{problem}; check the server or a proxy in front of it",
            )  # fmt: skip


def fetch_misp(feed: Feed, ctx: FetchContext, api: MispApi | None = None) -> Iterator[Attribute]:
    """Attributes from a MISP server, one filter set (``anyOf`` group) after another, page by page.

    Filters are applied server-side; an attribute selected by several groups is yielded once.
    """
    server = feed.spec.source.misp
    assert server is not None
    if api is None:
        api = MispApi(server, ctx.auth_key or "", ctx.ca_bundle, ctx.max_response_bytes)
    seen: set[str] | None = set() if len(feed.spec.filters) > 1 else None
    events: dict[str, EventContext] = {}
    for filters in feed.spec.filters:
        params = build_restsearch_params(filters, ctx.now)
        guard = _PageGuard(api, server.page_size)
        page = 1
        while True:
            rows = api.search_attributes(params, page, server.page_size)
            log.debug("misp page", extra={"feed": feed.name, "page": page, "attributes": len(rows)})
            guard.check(page, rows)
            for raw in rows:
                attr = attribute_from_json(raw, cache=events)
                if attr is None:
                    continue
                if seen is not None:
                    if attr.uuid in seen:
                        continue
                    seen.add(attr.uuid)
                yield attr
            # MISP pages in SQL and drops warninglisted/decayed values afterwards: with those filters a short (even
            # empty) page is not the last one, so page on X-Result-Count (the count before the post-filter).
            if filters.enforce_warninglist or filters.exclude_decayed:
                total = api.result_count
                if (total is not None and page * server.page_size >= total) or (total is None and not rows):
                    break
            elif len(rows) < server.page_size:
                break
            page += 1


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
            with requests.get(target, timeout=loc.timeout_seconds, verify=loc.verify_tls, stream=True) as resp:
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


def _json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError("InvalidJSON", f"{safe_url(where)}: not valid JSON ({exc})") from None


def fetch_static_feed(feed: Feed, ctx: FetchContext) -> Iterator[Attribute]:
    """Attributes of a MISP static feed (``manifest.json`` then each ``<uuid>.json``), filtered locally."""
    loc = feed.spec.source.misp_feed
    assert loc is not None
    base = loc.url if loc.url.endswith("/") else loc.url + "/"

    def at(name: str) -> str:
        return urljoin(base, name) if _is_url(base) else str(_local_path(base, ctx.base_dir) / name)

    manifest = _json(read_location(loc, ctx, at("manifest.json")), at("manifest.json"))
    if not isinstance(manifest, dict):
        raise SourceError("InvalidFeed", f"{safe_url(at('manifest.json'))}: expected an object mapping event uuids")

    def events() -> Iterator[Attribute]:
        for uuid in sorted(manifest):
            if not uuid.replace("-", "").isalnum():
                raise SourceError("InvalidFeed", f"{safe_url(at('manifest.json'))}: bad event uuid {uuid!r}")
            name = at(f"{uuid}.json")
            doc = _json(read_location(loc, ctx, name), name)
            yield from _document(doc, name)

    return select(events(), feed.spec.filters, ctx.now)


def _document(doc: object, where: str) -> Iterator[Attribute]:
    try:
        yield from attributes_from_document(doc)
    except ValueError as exc:
        raise SourceError("InvalidExport", f"{safe_url(where)}: {exc}") from None


def fetch_file(feed: Feed, ctx: FetchContext) -> Iterator[Attribute]:
    """Attributes of a MISP JSON export, filtered locally."""
    loc = feed.spec.source.file
    assert loc is not None
    doc = _json(read_location(loc, ctx), loc.url)
    return select(_document(doc, loc.url), feed.spec.filters, ctx.now)


def fetch_text(feed: Feed, ctx: FetchContext, rejected: Counter[str]) -> Iterator[Attribute]:
    """Attributes of a plain list; bad lines are counted in ``rejected`` as ``invalid_line``."""
    text = feed.spec.source.text
    assert text is not None
    try:
        body = read_location(text.location, ctx).decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError("InvalidText", f"{safe_url(text.location.url)}: not UTF-8 text") from None
    return attributes_from_text(body, text.types, text.min_score, rejected)


def fetch_attributes(feed: Feed, ctx: FetchContext, rejected: Counter[str]) -> Iterator[Attribute]:
    """Attributes from whichever source the feed names (generator: failures surface while iterating)."""
    source = feed.spec.source
    fetchers: dict[str, Callable[[], Iterator[Attribute]]] = {
        "misp": lambda: fetch_misp(feed, ctx),
        "mispFeed": lambda: fetch_static_feed(feed, ctx),
        "file": lambda: fetch_file(feed, ctx),
        "text": lambda: fetch_text(feed, ctx, rejected),
    }
    return fetchers[source.kind]()
