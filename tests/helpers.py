"""Small builders for tests: feeds from partial specs, attributes and MISP-shaped events."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from falco_misp.feed.model import Feed
from falco_misp.feed.parse import parse_feed
from falco_misp.indicators.builder import IndicatorBuilder, IndicatorSet
from falco_misp.sources.attributes import Attribute

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """shared/ beside the repository (CI has it there too), or FALCO_MISP_SHARED."""
    return Path(os.environ.get("FALCO_MISP_SHARED", REPO.parent / "shared"))


def feed(spec: dict[str, Any] | None = None, name: str = "test", **sections: Any) -> Feed:
    """A feed with a file source unless the spec names another; ``sections`` merge into the spec."""
    body: dict[str, Any] = {"source": {"file": {"url": "unused.json"}}}
    body.update(spec or {})
    body.update(sections)
    return parse_feed({"metadata": {"name": name, "namespace": "ns"}, "spec": body})


def attr(value: str, type_: str = "ip-dst", ts: int = 0, **kw: Any) -> Attribute:
    """An attribute with defaults."""
    return Attribute(value=value, type=type_, timestamp=ts, **kw)


def indicators(values: list[tuple[str, str]] | list[str], f: Feed | None = None) -> IndicatorSet:
    """Build indicators from ``(type, value)`` pairs or plain ip-dst values."""
    f = f or feed()
    builder = IndicatorBuilder(f.spec)
    for i, item in enumerate(values):
        type_, value = ("ip-dst", item) if isinstance(item, str) else item
        builder.add(attr(value, type_, ts=i))
    return builder.build()


def misp_event(
    event_id: int,
    attributes: list[dict[str, Any]],
    *,
    org: str = "TestOrg",
    threat_level: int = 1,
    published: bool = True,
    publish_timestamp: int = 1_700_000_000,
    tags: tuple[str, ...] = (),
    info: str | None = None,
) -> dict[str, Any]:
    """A MISP event in export form; attributes are dicts with at least type and value."""
    attrs = []
    for i, a in enumerate(attributes):
        full = {
            "id": str(event_id * 1000 + i),
            "uuid": f"00000000-0000-4000-8000-{event_id * 1000 + i:012d}",
            "category": "Network activity",
            "to_ids": True,
            "timestamp": str(publish_timestamp),
            "deleted": False,
            "Tag": [],
        }
        full.update(a)
        if isinstance(full.get("Tag"), list | tuple) and full["Tag"] and isinstance(full["Tag"][0], str):
            full["Tag"] = [{"name": t} for t in full["Tag"]]
        attrs.append(full)
    return {
        "Event": {
            "id": str(event_id),
            "uuid": f"00000000-0000-4000-9000-{event_id:012d}",
            "info": info or f"event {event_id}",
            "threat_level_id": str(threat_level),
            "published": published,
            "publish_timestamp": str(publish_timestamp),
            "timestamp": str(publish_timestamp),
            "Orgc": {"id": str(sum(map(ord, org))), "name": org, "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, org))},
            "Tag": [{"name": t} for t in tags],
            "Attribute": attrs,
        }
    }
