"""MISP over PyMISP (a service): the one client setup for reading and for reporting, and paged restSearch.

:func:`connect_misp` makes every PyMISP client (TLS, private CA via :func:`write_ca_file`, timeout, PyMISP's logger
kept from logging the key); :func:`failure_reason` names what went wrong the same way for both uses. :class:`MispApi`
reads ``/attributes/restSearch`` page by page, each answer capped, and :func:`fetch_misp` stops a server that
ignores ``page``/``limit`` (a page repeating an earlier one, longer than the limit, or past the count MISP
announced) with ``PagingIgnored`` instead of paging forever.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from pymisp import PyMISP

from falco_misp.errors import SourceError
from falco_misp.feed.model import Feed, MispServer
from falco_misp.feed.policy import Policy
from falco_misp.sources.attributes import (
    Attribute,
    EventContext,
    attribute_from_json,
)
from falco_misp.sources.egress import GuardedAdapter, check_connect
from falco_misp.sources.filters import build_restsearch_params
from falco_misp.sources.locations import (
    DEFAULT_MAX_RESPONSE_BYTES,
    FetchContext,
    _cause,
    _reason,
    _source_error_in,
    read_body,
    redact,
)
from falco_misp.sources.prefetch import prefetched
from falco_misp.values import safe_url

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------- MISP
class _ResponseHooks(requests.auth.AuthBase):
    """Reads MISP's ``X-Result-Count`` header, which PyMISP does not expose, and caps every body PyMISP reads.

    Not authentication (PyMISP sends the key itself): ``auth=`` is the public PyMISP/requests hook point that
    sees every request, and this registers a response hook on each. requests runs response hooks before it reads
    the body, so the hook streams the body itself, up to ``max_bytes``, and hands it to the response.
    """

    def __init__(self, server_url: str, max_bytes: int, policy: Policy | None = None) -> None:
        self.last: int | None = None
        self._policy = policy  # checked before each request and each redirect (plain http is not pinned: egress.py)
        self.date: int | None = None  # the answer's Date header (epoch seconds), when it has a readable one
        self._where = f"MISP at {safe_url(server_url)}"
        self._max_bytes = max_bytes

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self.last = None
        if self._policy is not None:
            check_connect(self._policy, request.url or "")
        request.register_hook("response", self._record)  # type: ignore[no-untyped-call]
        return request

    def _record(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        if self._policy is not None and response.is_redirect:
            check_connect(self._policy, urljoin(response.url, response.headers.get("location", "")))
        value = response.headers.get("X-Result-Count", "")
        self.last = int(value) if value.isdigit() else None
        try:
            self.date = int(email.utils.parsedate_to_datetime(response.headers.get("Date", "")).timestamp())
        except (TypeError, ValueError):
            self.date = None
        path = urlsplit(response.url).path or "/"
        body = read_body(response, self._max_bytes, f"{self._where} ({path})")
        response._content = body  # what `response.content` returns from now on (requests reads no further)


def quiet_pymisp_logger() -> None:
    """PyMISP logs every request's headers, the API key included, at DEBUG: keep its logger at INFO or above."""
    logger = logging.getLogger("pymisp")
    logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))


def connect_misp(
    server: MispServer, auth_key: str, ca_path: str | None, *, policy: Policy | None = None, **options: Any
) -> PyMISP:
    """The one way a PyMISP client is made, for reading and for reporting: TLS as the spec says (a private CA from
    ``ca_path``), its timeout, our tool name, and PyMISP's logger kept from logging the key. Raises what PyMISP's
    start-up calls raise (see :func:`failure_reason`). With an egress ``policy`` (the operator) the URL and its
    addresses are checked first (``SourceError``) and https connections go only to checked addresses."""
    verify: bool | str = (ca_path or True) if server.verify_tls else False
    quiet_pymisp_logger()
    if policy is not None:
        check_connect(policy, server.url)
        options.setdefault("https_adapter", GuardedAdapter(policy))
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
        policy: Policy | None = None,
    ) -> None:
        self.url = safe_url(server.url)
        if not auth_key:
            raise SourceError("AuthKeyMissing", f"no API key for MISP at {self.url}")
        self.server = server
        self._auth_key = auth_key
        self._count = _ResponseHooks(server.url, max_response_bytes, policy)
        try:
            self._misp = connect_misp(server, auth_key, ca_bundle, policy=policy, auth=self._count)
        except SourceError:
            raise
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

    def event_index(self) -> tuple[object, int | None]:
        """MISP's slim index of every event (``/events/index`` with ``minimal``) and the answer's time (its
        ``Date`` header, epoch seconds; None without one)."""
        try:
            answer = self._misp.search_index(minimal=True)
        except Exception as exc:
            raise self._error(exc) from None
        if isinstance(answer, dict) and "errors" in answer:
            raise SourceError("MispError", f"MISP at {self.url} refused the event index ({self._describe(answer)})")
        return answer, self._count.date


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

    def check(self, page: int, rows: list[dict[str, Any]], total: int | None) -> None:
        if not rows:
            return  # a page emptied by the warninglist/decay post-filter may follow another one
        problem = ""
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


DEFAULT_PREFETCH_PAGES = 2
"""Pages read ahead while the current one is processed (:mod:`falco_misp.sources.prefetch`); 0: none."""


@dataclass(frozen=True)
class MispPage:
    """One restSearch answer of a paged query."""

    group: int
    """Which filter set (``anyOf`` group) it answers, from 0."""
    number: int
    """Its page number, from 1."""
    rows: list[dict[str, Any]]
    """The attributes as MISP sent them."""
    count: int | None
    """``X-Result-Count`` of that answer (matches before MISP's warninglist/decay post-filter)."""


def misp_api(feed: Feed, ctx: FetchContext) -> MispApi:
    """The client for a feed's MISP server (raises SourceError)."""
    server = feed.spec.source.misp
    assert server is not None
    return MispApi(server, ctx.auth_key or "", ctx.ca_bundle, ctx.max_response_bytes, ctx.policy)


def fetch_pages(
    feed: Feed, ctx: FetchContext, api: MispApi, extra: Mapping[str, Any] | None = None
) -> Iterator[MispPage]:
    """Every page of every filter set's restSearch, in order (``extra``: parameters added to each query)."""
    server = feed.spec.source.misp
    assert server is not None
    for group, filters in enumerate(feed.spec.filters):
        params = {**build_restsearch_params(filters, ctx.now), **(extra or {})}
        guard = _PageGuard(api, server.page_size)
        page = 1
        while True:
            rows = api.search_attributes(params, page, server.page_size)
            total = api.result_count  # read in the thread that made the request (it is the last answer's)
            log.debug("misp page", extra={"feed": feed.name, "page": page, "attributes": len(rows)})
            guard.check(page, rows, total)
            yield MispPage(group, page, rows, total)
            # MISP pages in SQL and drops warninglisted/decayed values afterwards: with those filters a short (even
            # empty) page is not the last one, so page on X-Result-Count (the count before the post-filter).
            if filters.enforce_warninglist or filters.exclude_decayed:
                if (total is not None and page * server.page_size >= total) or (total is None and not rows):
                    break
            elif len(rows) < server.page_size:
                break
            page += 1


def misp_attributes(feed: Feed, pages: Iterable[MispPage]) -> Iterator[tuple[MispPage, int, Attribute]]:
    """The attributes of ``pages`` with the page and MISP id of each; one selected by several groups comes once."""
    seen: set[str] | None = set() if len(feed.spec.filters) > 1 else None
    events: dict[str, EventContext] = {}
    for page in pages:
        for raw in page.rows:
            attr = attribute_from_json(raw, cache=events)
            if attr is None:
                continue
            if seen is not None:
                if attr.uuid in seen:
                    continue
                seen.add(attr.uuid)
            raw_id = raw.get("id")
            yield page, int(raw_id) if isinstance(raw_id, str) and raw_id.isdigit() else 0, attr


def fetch_misp(
    feed: Feed, ctx: FetchContext, api: MispApi | None = None, prefetch: int | None = None
) -> Iterator[Attribute]:
    """Attributes from a MISP server, one filter set (``anyOf`` group) after another, page by page.

    Filters are applied server-side; an attribute selected by several groups is yielded once. The next pages are
    fetched while the current one is processed (``prefetch`` pages ahead, default
    :data:`DEFAULT_PREFETCH_PAGES`; 0 fetches each page only when the one before is done).
    """
    if api is None:
        api = misp_api(feed, ctx)
    depth = DEFAULT_PREFETCH_PAGES if prefetch is None else prefetch
    for _, _, attr in misp_attributes(feed, prefetched(fetch_pages(feed, ctx, api), depth)):
        yield attr
