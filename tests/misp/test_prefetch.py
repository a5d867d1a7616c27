"""Read-ahead of MISP pages (issue 14, goal 4): the same attributes in the same order, errors still SourceError,
at most a few pages in memory, and a consumer that stops early stops the fetching. Real PyMISP, emulator on
loopback."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from emulators.misp import Fault, MispEmulator
from falco_misp.errors import SourceError
from falco_misp.feed.parse import parse_feed
from falco_misp.sources.fetch import fetch_attributes
from falco_misp.sources.locations import FetchContext
from falco_misp.sources.prefetch import prefetched
from helpers import misp_event


@pytest.fixture(scope="module")
def misp() -> Iterator[MispEmulator]:
    with MispEmulator() as server:
        for e in range(1, 4):
            attrs = [{"type": "ip-dst", "value": f"45.{e}.{i // 200}.{i % 200 + 1}"} for i in range(120)]
            server.add_event(misp_event(e, attrs))
        yield server


def values(misp: MispEmulator, depth: int, page_size: int = 7) -> list[str]:
    spec = {"source": {"misp": {"url": misp.url, "timeoutSeconds": 5, "pageSize": page_size}},
            "filters": {"anyOf": [{"types": ["ip-dst"]}, {"types": ["ip-dst", "ip-src"]}]}}  # fmt: skip
    feed = parse_feed({"metadata": {"name": "prefetch"}, "spec": spec})
    ctx = FetchContext(now=1_800_000_000, auth_key=misp.api_key, prefetch_pages=depth)
    return [a.uuid for a in fetch_attributes(feed, ctx, Counter())]


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_same_attributes_in_the_same_order(misp: MispEmulator, depth: int) -> None:
    before = values(misp, 0)
    assert len(before) == 360 and values(misp, depth) == before


@pytest.mark.parametrize("depth", [0, 2])
def test_a_failing_page_is_a_source_error_where_it_happens(misp: MispEmulator, depth: int) -> None:
    got: list[str] = []
    misp.fault = Fault.status(500, after_requests=3, paths=("/attributes/restSearch",))
    try:
        with pytest.raises(SourceError) as caught:
            spec = {"source": {"misp": {"url": misp.url, "timeoutSeconds": 5, "pageSize": 7}}}
            feed = parse_feed({"metadata": {"name": "prefetch"}, "spec": spec})
            ctx = FetchContext(now=1_800_000_000, auth_key=misp.api_key, prefetch_pages=depth)
            got.extend(a.value for a in fetch_attributes(feed, ctx, Counter()))
    finally:
        misp.fault = None
    assert caught.value.reason == "HTTP5xx" and len(got) == 21  # three good pages, then the error


def test_read_ahead_is_bounded_and_stops_with_the_consumer() -> None:
    made: list[int] = []
    alive = threading.Event()

    def pages() -> Iterator[int]:
        alive.set()
        for i in range(1000):
            made.append(i)
            yield i

    stream = prefetched(pages(), 3)
    assert next(stream) == 0
    time.sleep(0.3)  # the worker fills the read-ahead and waits
    assert len(made) <= 1 + 3 + 1  # the one handed over, the queue, the one waiting to be put
    stream.close()  # type: ignore[attr-defined]
    settled = len(made)
    time.sleep(0.2)
    assert len(made) == settled < 10
    assert not [t for t in threading.enumerate() if t.name == "falco-misp-prefetch"]


def test_errors_keep_their_place_in_the_sequence() -> None:
    def pages() -> Iterator[int]:
        yield 1
        yield 2
        raise SourceError("Timeout", "page 3 timed out")

    seen: list[int] = []
    with pytest.raises(SourceError, match="page 3"):
        seen.extend(prefetched(pages(), 2))
    assert seen == [1, 2]
