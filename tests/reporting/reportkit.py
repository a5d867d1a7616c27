"""Builders for the reporting tests (issue 5): feeds with reporting on, Falco and Falcosidekick alert bodies,
indexes built the way a sync builds them, and a reporter wired to the MISP emulator."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from falco_misp.feed.model import Feed
from falco_misp.feed.parse import parse_feed
from falco_misp.reporting.index import IndexBuilder
from falco_misp.reporting.matching import MispTarget, ReportingFeed
from falco_misp.sources.attributes import Attribute

ALERT_TIME = "2026-01-05T12:00:00.123456789Z"
ALERT_EPOCH = 1_767_614_400  # ALERT_TIME, to the second
OUTBOUND = "outbound connection to a listed address"
TOKEN = "test-token-0123456789abcdef"


def reporting_spec(
    sightings: dict[str, Any] | None = None, events: dict[str, Any] | None = None, **rest: Any
) -> dict[str, Any]:
    """A spec with a MISP source and reporting sections (sightings on unless given)."""
    spec: dict[str, Any] = {
        "source": {"misp": {"url": "http://misp.example", "authKeySecretRef": {"name": "misp-auth", "key": "k"}}},
        "reporting": {
            "sightings": {"enabled": True} if sightings is None else sightings,
            "events": events or {"enabled": False},
        },
    }
    spec.update(rest)
    return spec


def make_feed(name: str = "intel", namespace: str = "security", **spec: Any) -> Feed:
    body = reporting_spec(**spec)
    return parse_feed({"metadata": {"name": name, "namespace": namespace}, "spec": body})


def attribute(value: str, type_: str = "ip-dst", n: int = 1, event: int = 42, **kw: Any) -> Attribute:
    """An attribute with a stable uuid derived from ``n``."""
    defaults: dict[str, Any] = {
        "uuid": str(uuid.UUID(int=n)),
        "event_id": str(event),
        "event_uuid": str(uuid.UUID(int=10**6 + event)),
        "event_info": f"event {event}",
        "tags": ("tlp:green",),
    }
    defaults.update(kw)
    return Attribute(value=value, type=type_, **defaults)


def reporting_feed(
    feed: Feed, attributes: Iterable[Attribute], url: str = "http://misp.example", key: str = "k", uid: str = ""
) -> ReportingFeed:
    """What a sync hands to alert matching: the feed, its index, its MISP target."""
    builder = IndexBuilder(feed)
    for attr in attributes:
        builder.add(attr)
    misp = feed.spec.source.misp
    assert misp is not None
    server = type(misp)(url=url, auth_key=misp.auth_key, verify_tls=False, timeout_seconds=2.0)
    return ReportingFeed(feed=feed, index=builder.build(), target=MispTarget(server=server, auth_key=key), uid=uid)


def falco_alert(
    remote: str = "45.0.0.7",
    *,
    rule: str = f"misp_security_intel_0 {OUTBOUND}",
    tags: list[str] | None = None,
    hostname: str = "node-1",
    time: str = ALERT_TIME,
    **fields: Any,
) -> dict[str, Any]:
    """A Falco JSON alert (http_output with json_output) of one of our rules, shaped like Falco 0.44 writes it."""
    inbound = " inbound " in rule
    output_fields: dict[str, Any] = {
        "evt.time": 1_767_614_400_123_456_789,
        "evt.type": "accept" if inbound else "connect",
        "fd.sip": "10.0.0.5" if inbound else remote,
        "fd.sport": 8443 if inbound else 443,
        "fd.cip": remote if inbound else "10.0.0.5",
        "fd.cport": 51234,
        "fd.l4proto": "tcp",
        "proc.exepath": "/usr/bin/curl",
        "proc.cmdline": "curl https://example.org",
        "proc.pid": 4242,
        "user.name": "root",
        "k8s.ns.name": "shop",
        "k8s.pod.name": "web-1",
    }
    output_fields.update(fields)
    return {
        "hostname": hostname,
        "output": f"12:00:00.123456789: Warning Outbound connection to MISP-listed address (remote={remote})",
        "priority": "Warning",
        "rule": rule,
        "source": "syscall",
        "tags": ["misp", "misp_feed:security/intel", "mitre_command_and_control", "network"] if tags is None else tags,
        "time": time,
        "output_fields": output_fields,
    }


def sidekick_alert(remote: str = "45.0.0.7", **kw: Any) -> dict[str, Any]:
    """Falcosidekick's webhook body: Falco's fields plus a uuid (and its own ordering)."""
    body = copy.deepcopy(falco_alert(remote, **kw))
    return {"uuid": "6f0b4a4e-8d0b-4a8b-9a86-7a2a8cd5c1e2", **body}


async def wait_for(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``check`` until truthy (real time, small steps)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)


def synced_feed(misp_url: str, api_key: str, feed: Feed, uid: str = "uid-1") -> ReportingFeed:
    """Fetch the feed from MISP (the emulator) through the real pipeline and index it, as a sync does."""
    import time as _time

    from falco_misp.pipeline import fetch_and_render
    from falco_misp.sources.locations import FetchContext

    builder = IndexBuilder(feed)
    fetch_and_render(feed, FetchContext(now=int(_time.time()), auth_key=api_key), observe=builder.add)
    misp = feed.spec.source.misp
    assert misp is not None
    return ReportingFeed(feed=feed, index=builder.build(), target=MispTarget(server=misp, auth_key=api_key), uid=uid)


def emulator_feed(misp_url: str, name: str = "intel", namespace: str = "security", **spec: Any) -> Feed:
    """A feed reading the MISP emulator, reporting on (sightings unless given)."""
    body = reporting_spec(**spec)
    body["source"]["misp"].update({"url": misp_url, "timeoutSeconds": 2})
    return parse_feed({"metadata": {"name": name, "namespace": namespace}, "spec": body})
