"""Fetching attributes from the four source kinds (the I/O end of the pipeline).

Everything here yields :class:`~falco_misp.attributes.Attribute` values one at a time, page by page or event by
event, so memory follows the page size rather than the feed size. Every failure becomes a
:class:`~falco_misp.errors.SourceError` with a short reason (``ConnectionRefused``, ``Timeout``, ``TLS``,
``HTTP401``, ``InvalidJSON``...) and a message naming the URL or path, never the auth key.
"""

from __future__ import annotations

import json
import logging
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
    return "Error", type(exc).__name__


# ---------------------------------------------------------------------------------------------------------- MISP
class _ResultCount(requests.auth.AuthBase):
    """Reads MISP's ``X-Result-Count`` header, which PyMISP does not expose.

    Not authentication (PyMISP sends the key itself): ``auth=`` is the public PyMISP/requests hook point that
    sees every request, and this registers a response hook on each.
    """

    def __init__(self) -> None:
        self.last: int | None = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self.last = None
        request.register_hook("response", self._record)  # type: ignore[no-untyped-call]
        return request

    def _record(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        value = response.headers.get("X-Result-Count", "")
        self.last = int(value) if value.isdigit() else None


def quiet_pymisp_logger() -> None:
    """PyMISP logs every request's headers, the API key included, at DEBUG: keep its logger at INFO or above."""
    logger = logging.getLogger("pymisp")
    logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))


class MispApi:
    """The slice of MISP the operator uses, over the real PyMISP client."""

    def __init__(self, server: MispServer, auth_key: str, ca_bundle: str | None = None) -> None:
        if not auth_key:
            raise SourceError("AuthKeyMissing", f"no API key for MISP at {server.url}")
        self.server = server
        verify: bool | str = (ca_bundle or True) if server.verify_tls else False
        self._count = _ResultCount()
        quiet_pymisp_logger()
        try:
            self._misp = PyMISP(
                server.url,
                auth_key,
                ssl=verify,
                timeout=server.timeout_seconds,
                tool="falco-misp-operator",
                auth=self._count,
            )
        except Exception as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> SourceError:
        text = str(exc)
        for code in ("401", "403"):
            if f"({code}" in text or f"Error code {code}" in text or f"'{code}'" in text:
                return SourceError(f"HTTP{code}", f"MISP at {self.server.url} rejected the API key")
        if "Error code 5" in text:
            return SourceError("HTTP5xx", f"MISP at {self.server.url} answered a server error")
        if type(exc).__name__ == "PyMISPUnexpectedResponse":
            return SourceError("InvalidJSON", f"MISP at {self.server.url} answered something that is not JSON")
        reason, what = _reason(exc)
        if reason == "Error" and "Unable to get the user settings" in text:
            return SourceError("Unauthorized", f"MISP at {self.server.url} rejected the API key")
        return SourceError(reason, f"MISP at {self.server.url}: {what}")

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
            status = answer["errors"][0] if isinstance(answer["errors"], tuple | list) else "?"
            return_reason = f"HTTP{status}" if isinstance(status, int) else "MispError"
            raise SourceError(return_reason, f"MISP at {self.server.url} refused the search (HTTP {status})")
        if isinstance(answer, dict) and isinstance(answer.get("Attribute"), list):
            return [a for a in answer["Attribute"] if isinstance(a, dict)]
        if isinstance(answer, dict) and not answer:
            return []
        raise SourceError("InvalidJSON", f"MISP at {self.server.url} answered something that is not a search result")


def fetch_misp(feed: Feed, ctx: FetchContext, api: MispApi | None = None) -> Iterator[Attribute]:
    """Attributes from a MISP server, one filter set (``anyOf`` group) after another, page by page.

    Filters are applied server-side; an attribute selected by several groups is yielded once.
    """
    server = feed.spec.source.misp
    assert server is not None
    if api is None:
        api = MispApi(server, ctx.auth_key or "", ctx.ca_bundle)
    seen: set[str] | None = set() if len(feed.spec.filters) > 1 else None
    events: dict[str, EventContext] = {}
    for filters in feed.spec.filters:
        params = build_restsearch_params(filters, ctx.now)
        page = 1
        while True:
            rows = api.search_attributes(params, page, server.page_size)
            log.debug("misp page", extra={"feed": feed.name, "page": page, "attributes": len(rows)})
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
    """The bytes at an http(s) URL or a local path."""
    target = url or loc.url
    if _is_url(target):
        try:
            resp = requests.get(target, timeout=loc.timeout_seconds, verify=loc.verify_tls)
        except requests.RequestException as exc:
            reason, what = _reason(exc)
            raise SourceError(reason, f"{target}: {what}") from None
        if resp.status_code != 200:
            raise SourceError(f"HTTP{resp.status_code}", f"{target} answered HTTP {resp.status_code}")
        return resp.content  # read in full by get(): a cut-off body already raised above
    path = _local_path(target, ctx.base_dir)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SourceError("NotFound", f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError("ReadError", f"{path}: {exc.strerror}") from None


def _json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError("InvalidJSON", f"{where}: not valid JSON ({exc})") from None


def fetch_static_feed(feed: Feed, ctx: FetchContext) -> Iterator[Attribute]:
    """Attributes of a MISP static feed (``manifest.json`` then each ``<uuid>.json``), filtered locally."""
    loc = feed.spec.source.misp_feed
    assert loc is not None
    base = loc.url if loc.url.endswith("/") else loc.url + "/"

    def at(name: str) -> str:
        return urljoin(base, name) if _is_url(base) else str(_local_path(base, ctx.base_dir) / name)

    manifest = _json(read_location(loc, ctx, at("manifest.json")), at("manifest.json"))
    if not isinstance(manifest, dict):
        raise SourceError("InvalidFeed", f"{at('manifest.json')}: expected an object mapping event uuids")

    def events() -> Iterator[Attribute]:
        for uuid in sorted(manifest):
            if not uuid.replace("-", "").isalnum():
                raise SourceError("InvalidFeed", f"{at('manifest.json')}: bad event uuid {uuid!r}")
            name = at(f"{uuid}.json")
            doc = _json(read_location(loc, ctx, name), name)
            yield from _document(doc, name)

    return select(events(), feed.spec.filters, ctx.now)


def _document(doc: object, where: str) -> Iterator[Attribute]:
    try:
        yield from attributes_from_document(doc)
    except ValueError as exc:
        raise SourceError("InvalidExport", f"{where}: {exc}") from None


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
        raise SourceError("InvalidText", f"{text.location.url}: not UTF-8 text") from None
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
