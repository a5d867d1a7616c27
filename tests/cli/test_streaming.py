"""Streaming (MISP pages of any size, read ahead or not, incremental state or not) and non-streaming (one export
file) give the same bytes."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from emulators.misp import MispEmulator
from falco_misp.pipeline import IncrementalRefresh, fetch_and_render, refresh_and_render
from falco_misp.sources.locations import FetchContext
from helpers import feed, misp_event


def _events() -> list[dict[str, object]]:
    rnd = random.Random(5)
    events = []
    for e in range(4):
        attrs = []
        for _ in range(60):
            kind = rnd.random()
            if kind < 0.7:
                value = f"{rnd.randint(11, 99)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
            elif kind < 0.8:
                value = f"{rnd.randint(11, 99)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.0/{rnd.choice([24, 26])}"
            elif kind < 0.9:
                value = f"2a00:{rnd.randint(0, 65535):x}::{rnd.randint(1, 255):x}"
            else:
                value = rnd.choice(["bogus", "10.0.0.1", "0.0.0.0/0"])
            attrs.append({"type": rnd.choice(["ip-src", "ip-dst"]), "value": value,
                          "timestamp": str(1_700_000_000 + rnd.randint(0, 10**6))})  # fmt: skip
        attrs += attrs[:10]  # duplicates across pages
        events.append(misp_event(e + 1, attrs))
    return events


def test_page_size_does_not_change_bytes(tmp_path: Path) -> None:
    events = _events()
    export = tmp_path / "export.json"
    export.write_text(json.dumps(events))
    ctx = FetchContext(now=int(time.time()), base_dir=tmp_path)
    limits = {"maxIndicators": 150}  # the cap's "newest first" order must not depend on arrival order
    reference = fetch_and_render(feed({"source": {"file": {"url": "export.json"}}}, limits=limits), ctx)
    assert reference.indicators.total == 150 and reference.indicators.rejected["over_limit"] > 0
    with MispEmulator(events=events) as misp:
        for page_size, prefetch in ((1, 0), (1, 3), (7, 1), (100, 0), (100, None), (100_000, None)):
            spec = {"source": {"misp": {"url": misp.url, "pageSize": page_size}}, "limits": limits}
            context = FetchContext(now=ctx.now, auth_key=misp.api_key, prefetch_pages=prefetch)
            got = fetch_and_render(feed(spec), context)
            assert [s.content for s in got.bundle.shards] == [s.content for s in reference.bundle.shards]
            assert got.bundle.sha256 == reference.bundle.sha256
            assert got.indicators.rejected == reference.indicators.rejected
            incremental = refresh_and_render(feed(spec), context, IncrementalRefresh())  # its full fetch
            assert incremental.bundle.sha256 == reference.bundle.sha256
