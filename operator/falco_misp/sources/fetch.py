"""Fetching attributes from the four source kinds: MISP, a static feed, an export, a text list (a service).

Everything here yields :class:`~falco_misp.sources.attributes.Attribute` values one at a time, page by page or
event by event, so memory follows the page size rather than the feed size; the filters that MISP cannot apply are
applied here (:mod:`falco_misp.sources.filters`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin

from falco_misp.errors import SourceError
from falco_misp.feed.model import Feed
from falco_misp.sources.attributes import (
    Attribute,
    attributes_from_document,
    attributes_from_text,
)
from falco_misp.sources.filters import select
from falco_misp.sources.locations import FetchContext, _is_url, _local_path, read_location
from falco_misp.sources.misp import fetch_misp
from falco_misp.values import safe_url


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
        "misp": lambda: fetch_misp(feed, ctx, prefetch=ctx.prefetch_pages),
        "mispFeed": lambda: fetch_static_feed(feed, ctx),
        "file": lambda: fetch_file(feed, ctx),
        "text": lambda: fetch_text(feed, ctx, rejected),
    }
    return fetchers[source.kind]()
