"""What reaches MISP and Kubernetes for a hit (pure): the sighting, the daily event and its attributes, the
Event message with the MISP context.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from falco_misp.feed.model import Direction, Feed
from falco_misp.reporting.alerts import Alert
from falco_misp.reporting.index import AttributeRef
from falco_misp.reporting.matching import Hit


def _clean(text: str, limit: int) -> str:
    return "".join(c if c.isprintable() else " " for c in text)[:limit]


def sighting_source(hit: Hit, cluster: str) -> str:
    """The sighting's ``source``: the feed's template filled in, or ``<cluster>/<node>`` (at most 255 chars)."""
    node = hit.alert.hostname
    template = hit.feed.feed.spec.reporting.sightings.source
    if not template:
        return "/".join(p for p in (cluster, node) if p) or "falco-misp-operator"
    values = {"cluster": cluster, "node": node, "namespace": hit.feed.feed.namespace, "feed": hit.feed.feed.name}
    return _clean(re.sub(r"\{(cluster|node|namespace|feed)\}", lambda m: values[m.group(1)], template), 255)


def sighting_body(hit: Hit, cluster: str) -> dict[str, Any]:
    """What ``POST /sightings/add/<attribute uuid>`` sends: a sighting (type 0) at the alert's time."""
    return {"type": "0", "source": sighting_source(hit, cluster), "timestamp": int(hit.alert.time)}


_EVENT_NAMESPACE = uuidlib.UUID("7d1a7f3e-4c1e-5b39-9d7e-3f1c8f6a2b10")


def daily_event_uuid(feed: Feed, cluster: str, day: str) -> str:
    """The UUID of the feed's event for ``day`` (``YYYY-MM-DD``): the same after a restart, on any replica."""
    return str(uuidlib.uuid5(_EVENT_NAMESPACE, f"falco-misp/{cluster}/{feed.namespace}/{feed.name}/{day}"))


def alert_day(alert: Alert) -> str:
    """The UTC day of an alert (``YYYY-MM-DD``)."""
    return datetime.fromtimestamp(alert.time, UTC).strftime("%Y-%m-%d")


def context_line(hit: Hit) -> str:
    """Where and what: node, pod, process, connection and rule, for MISP comments and Kubernetes Events."""
    f = hit.alert.fields
    direction = hit.rule.direction
    port = f.get("fd.sport") if direction is Direction.OUTBOUND else f.get("fd.cport")
    remote = f"{hit.remote}:{port}" if port else hit.remote
    parts = [f"{direction.value} {'to' if direction is Direction.OUTBOUND else 'from'} {remote}"]
    if hit.rule.kind == "domain" and f.get("fd.sip.name"):
        parts.append(f"domain {f['fd.sip.name']}")
    if hit.alert.hostname:
        parts.append(f"node {hit.alert.hostname}")
    if f.get("k8s.ns.name") and f.get("k8s.pod.name"):
        parts.append(f"pod {f['k8s.ns.name']}/{f['k8s.pod.name']}")
    elif f.get("container.name"):
        parts.append(f"container {f['container.name']}")
    process = f.get("proc.exepath") or f.get("proc.name")
    if process:
        parts.append(f"process {process}")
    parts.append(f"rule {hit.alert.rule!r}")
    return _clean(", ".join(parts), 600)


def describe_attribute(ref: AttributeRef) -> str:
    """``<type> <indicator> (attribute <uuid>) in MISP event <id> "<info>" [tags]``."""
    tags = f" tags {', '.join(ref.tags[:8])}" if ref.tags else ""
    return f'{ref.type} {ref.indicator} (attribute {ref.uuid}) in MISP event {ref.event.id} "{ref.event.info}"{tags}'


def notice_message(hit: Hit, attributes: Sequence[AttributeRef]) -> str:
    """The Kubernetes Event message for a hit (at most 1,024 characters)."""
    listed = "; ".join(describe_attribute(a) for a in attributes[:3])
    more = f" and {len(attributes) - 3} more" if len(attributes) > 3 else ""
    return _clean(f"Falco alert ({context_line(hit)}) matches {listed}{more}", 1024)


def event_attribute(hit: Hit, to_ids: bool) -> dict[str, Any]:
    """The attribute added to the daily event: the remote address, with the alert's context as comment."""
    attrs = ", ".join(f"{a.uuid} (event {a.event.id})" for a in hit.attributes[:4])
    return {
        "type": "ip-dst" if hit.rule.direction is Direction.OUTBOUND else "ip-src",
        "category": "Network activity",
        "value": hit.remote,
        "to_ids": to_ids,
        "distribution": "5",  # inherit the event's
        "comment": _clean(f"Falco: {context_line(hit)}; listed by MISP attribute(s) {attrs}", 1024),
        "first_seen": datetime.fromtimestamp(hit.alert.time, UTC).isoformat(),
    }


def daily_event(hit: Hit, cluster: str, attributes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A new daily event for the hit's feed, holding ``attributes``."""
    feed = hit.feed.feed
    events = feed.spec.reporting.events
    day = alert_day(hit.alert)
    where = f" in cluster {cluster}" if cluster else ""
    return {
        "uuid": daily_event_uuid(feed, cluster, day),
        "info": _clean(
            f"Falco: connections to addresses of MISP feed {feed.namespace}/{feed.name}{where} on {day}", 255
        ),
        "date": day,
        "distribution": str(events.distribution),
        "threat_level_id": str(events.threat_level),
        "analysis": str(events.analysis),
        "published": False,
        "Tag": [{"name": t} for t in events.tags],
        "Attribute": [dict(a) for a in attributes],
    }
