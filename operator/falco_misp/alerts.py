"""Falco alerts -> the feed and the MISP attributes they came from (pure).

Closing the loop (issue 5): Falco (``http_output``) or Falcosidekick (webhook) posts an alert; the operator tells
MISP which of its attributes was seen. Everything here is pure and fast, so it runs on the operator's event loop:

- :func:`parse_alerts` reads Falco's JSON alert and Falcosidekick's webhook body (the same fields; Sidekick adds a
  ``uuid``) into frozen :class:`Alert` values, keeping only the output fields matching needs;
- :func:`parse_rule` recognises our rule names (``<rule prefix><n> outbound connection to a listed address``...,
  the prefix being the feed's ConfigMap prefix with ``_`` for ``-``: ``misp_<namespace>_<name>`` by default);
  an alert whose tags are present must also carry the feed's tag ``misp_feed:<namespace>/<name>``
  (:attr:`Feed.tag`), which tells apart two feeds whose rules share a prefix in two Falco namespaces;
- :class:`ProvenanceIndex`, built by :class:`IndexBuilder` from the attributes a sync fetched (the pipeline's
  ``observe`` hook), maps the remote address of the connection (``fd.sip`` outbound, ``fd.cip`` inbound) back to
  every attribute that lists it, a CIDR attribute included when the address lies inside it; domains likewise.
  Attribute values and alert fields are read by the indicator builder's own readers (``values.parse_ip``,
  ``values.normalise_domain``), so an internationalised domain is punycode on both sides;
- :func:`match_alert` puts these together against a :class:`FeedRegistry` (rule prefix -> feeds, from the last
  successful syncs);
- :class:`Deduper` (one report per attribute per window) and the MISP payload builders for sightings and the daily
  event.

The index is compact: per IPv4 address or network attribute about 33 bytes (a 4-byte key and a 4-byte attribute
number per entry in sorted ``array``\\ s, a 16-byte UUID, a 4-byte event number, a 4-byte tag-set number and a
1-byte type number per attribute); events, tag sets and types are stored once. Lookups are one ``bisect`` per
prefix length present in the feed (at most 33 for IPv4, 129 for IPv6).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid as uuidlib
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from falco_misp.attributes import Attribute
from falco_misp.spec import SUPPORTED_TYPES, Direction, Feed, MispServer
from falco_misp.values import normalise_domain, parse_ip, split_port

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Output fields kept from an alert (for matching and for the context written to MISP and Kubernetes).
CONTEXT_FIELDS = (
    "fd.sip", "fd.cip", "fd.rip", "fd.sport", "fd.cport", "fd.sip.name", "fd.l4proto", "evt.type", "proc.exepath",
    "proc.name", "proc.cmdline", "proc.pid", "user.name", "k8s.ns.name", "k8s.pod.name", "container.id",
    "container.name", "container.image.repository",
)  # fmt: skip
MAX_ALERTS_PER_BODY = 100
"""A body may hold one alert or a list of at most this many."""
MAX_FIELD_CHARS = 512
"""Longer output field values are cut (a command line can be long)."""
MAX_MATCHES = 16
"""At most this many attributes are reported for one alert (most specific first)."""
_MAX_RULE_CHARS = 512
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})$")
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
# render.py's rule titles: "<prefix><shard> <direction> connection <to|from> a listed <kind>" (rules/*.yaml);
# the prefix is Feed.rule_prefix (a ConfigMap prefix with _ for -), the shard the number before the space.
_RULE = re.compile(
    r"^([a-z0-9][a-z0-9_]*?)_(\d+) (?:(outbound) connection to|(inbound) connection from) a listed "
    r"(address|network|domain)$"
)
_IP_TYPES = {"ip-src", "ip-dst", "ip-src|port", "ip-dst|port"}
_DOMAIN_TYPES = {"domain", "hostname"}


class AlertError(ValueError):
    """A body that is not a Falco or Falcosidekick alert (the sender's fault: HTTP 400)."""


# ------------------------------------------------------------------------------------------------ alerts
class Sender(StrEnum):
    """Who posted the alert."""

    FALCO = "falco"
    """Falco's ``http_output`` with ``json_output: true``."""
    FALCOSIDEKICK = "falcosidekick"
    """Falcosidekick's webhook output (it adds a ``uuid``)."""


@dataclass(frozen=True)
class Alert:
    """One Falco alert, reduced to what matching and reporting need."""

    rule: str
    """Rule name."""
    time: float
    """When Falco saw the event (epoch seconds); the receive time when the alert has none or a wrong one."""
    hostname: str = ""
    """The Falco node (``hostname``), empty when missing or not a host name."""
    priority: str = ""
    """Falco priority, e.g. ``Warning``."""
    tags: tuple[str, ...] | None = None
    """Rule tags; None when the alert carries none (``json_include_tags_property: false``)."""
    fields: Mapping[str, str] = field(default_factory=dict)
    """The :data:`CONTEXT_FIELDS` present in ``output_fields``, as strings."""
    uuid: str = ""
    """Falcosidekick's alert id."""
    sender: Sender = Sender.FALCO
    """Falco or Falcosidekick."""


def _text(value: object, limit: int) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value[:limit]
    return None


def parse_time(value: object, now: float) -> float:
    """RFC 3339 (Falco writes nanoseconds: ``2026-01-05T12:00:00.123456789Z``) -> epoch; ``now`` when unreadable.

    A time more than five minutes ahead of ``now`` is a wrong clock, not the future: ``now`` is used instead.
    """
    if not isinstance(value, str):
        return now
    m = _TIME.match(value.strip())
    if m is None:
        return now
    fraction = (m.group(2) or "")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        moment = datetime.fromisoformat(f"{m.group(1)}.{fraction}{zone}")
    except ValueError:
        return now
    seconds = moment.timestamp()
    return now if seconds > now + 300 or seconds <= 0 else seconds


def parse_alert(raw: object, now: float, where: str = "alert") -> Alert:
    """One alert object; :class:`AlertError` names what is wrong."""
    if not isinstance(raw, Mapping):
        raise AlertError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    rule = raw.get("rule")
    if not isinstance(rule, str) or not rule or len(rule) > _MAX_RULE_CHARS:
        raise AlertError(f"{where}.rule: expected the rule name (a string of 1-{_MAX_RULE_CHARS} characters)")
    output_fields = raw.get("output_fields")
    if output_fields is None:
        output_fields = {}
    if not isinstance(output_fields, Mapping):
        raise AlertError(f"{where}.output_fields: expected an object")
    fields: dict[str, str] = {}
    for name in CONTEXT_FIELDS:
        text = _text(output_fields.get(name), MAX_FIELD_CHARS)
        if text is not None and text != "<NA>":
            fields[name] = text
    tags_raw = raw.get("tags")
    tags: tuple[str, ...] | None = None
    if tags_raw is not None:
        if isinstance(tags_raw, str) or not isinstance(tags_raw, Sequence):
            raise AlertError(f"{where}.tags: expected a list of strings")
        tags = tuple(t for t in tags_raw if isinstance(t, str))
    hostname = raw.get("hostname")
    uuid = raw.get("uuid")
    return Alert(
        rule=rule,
        time=parse_time(raw.get("time"), now),
        hostname=hostname if isinstance(hostname, str) and _HOSTNAME.match(hostname) else "",
        priority=_text(raw.get("priority"), 32) or "",
        tags=tags,
        fields=fields,
        uuid=uuid[:64] if isinstance(uuid, str) else "",
        sender=Sender.FALCOSIDEKICK if isinstance(uuid, str) else Sender.FALCO,
    )


def parse_alerts(document: object, now: float) -> tuple[Alert, ...]:
    """A decoded request body: one alert object, or a list of at most :data:`MAX_ALERTS_PER_BODY`."""
    if isinstance(document, list):
        if not document or len(document) > MAX_ALERTS_PER_BODY:
            raise AlertError(f"expected 1 to {MAX_ALERTS_PER_BODY} alerts in a list, got {len(document)}")
        return tuple(parse_alert(item, now, f"alerts[{i}]") for i, item in enumerate(document))
    return (parse_alert(document, now),)


# ------------------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class RuleRef:
    """One of our rule names, taken apart."""

    ident: str
    """:attr:`Feed.rule_prefix` without its last ``_`` (``misp_<namespace>_<name>`` with ``_`` for ``-``)."""
    shard: int
    """The rules file the rule is in."""
    direction: Direction
    """Outbound (``connect``: the remote side is ``fd.sip``) or inbound (``accept``: ``fd.cip``)."""
    kind: str
    """``address``, ``network`` or ``domain``."""


def parse_rule(name: str) -> RuleRef | None:
    """Our rule's parts, or None for any other rule."""
    m = _RULE.match(name)
    if m is None:
        return None
    direction = Direction.OUTBOUND if m.group(3) else Direction.INBOUND
    return RuleRef(ident=m.group(1), shard=int(m.group(2)), direction=direction, kind=m.group(5))


def rule_ident(feed: Feed) -> str:
    """The rule-name prefix identifying a feed's rules (``misp_security_intel_eu`` for ``security/intel-eu``).

    Unique per Falco namespace (it maps the ConfigMap prefix injectively); feeds writing to two Falco namespaces
    may share one, and are told apart by :func:`feed_tag` and their indexes.
    """
    return feed.rule_prefix.removesuffix("_")


def feed_tag(feed: Feed) -> str:
    """The Falco tag every rule of the feed carries (render.py): ``misp_feed:<namespace>/<name>``."""
    return feed.tag


def parse_address(text: str | None) -> IPAddress | None:
    """An address from an output field, read as the rules' values are (``values.parse_ip``: IPv4-mapped IPv6
    unmapped, no zone ids); None for anything else, a CIDR included."""
    parsed = parse_ip(text) if text and "/" not in text else None
    if parsed is None:
        return None
    return ipaddress.IPv4Address(parsed.value) if parsed.version == 4 else ipaddress.IPv6Address(parsed.value)


def remote_address(alert: Alert, direction: Direction) -> IPAddress | None:
    """The other end of the connection: ``fd.sip`` outbound, ``fd.cip`` inbound, else ``fd.rip``."""
    primary = "fd.sip" if direction is Direction.OUTBOUND else "fd.cip"
    return parse_address(alert.fields.get(primary)) or parse_address(alert.fields.get("fd.rip"))


def remote_domain(alert: Alert) -> str | None:
    """The remote domain (``fd.sip.name``) in the rules' form (``values.normalise_domain``: lower-case ASCII,
    punycode for an internationalised name, whichever form Falco wrote), or None."""
    name = alert.fields.get("fd.sip.name")
    return normalise_domain(name) if name else None


# ------------------------------------------------------------------------------------------------- index
@dataclass(frozen=True, slots=True)
class EventRef:
    """The MISP event an attribute belongs to."""

    id: str
    """Numeric id (as a string)."""
    uuid: str
    """Event UUID."""
    info: str
    """Event title."""


@dataclass(frozen=True, slots=True)
class AttributeRef:
    """A MISP attribute an alert matched."""

    uuid: str
    """Attribute UUID (what a sighting names)."""
    type: str
    """MISP type, e.g. ``ip-dst``."""
    indicator: str
    """The listed address, CIDR or domain that matched."""
    event: EventRef
    """Its event."""
    tags: tuple[str, ...]
    """Attribute and event tags."""


class _Group:
    """Sorted keys of one (direction, IP version, prefix length), with the attribute number of each."""

    __slots__ = ("attrs", "keys", "prefix")

    def __init__(self, prefix: int, keys: array[int] | list[int], attrs: array[int]) -> None:
        self.prefix = prefix
        self.keys = keys
        self.attrs = attrs


class ProvenanceIndex:
    """Listed value -> the attributes that listed it, for one feed (built by :class:`IndexBuilder`; immutable)."""

    def __init__(
        self,
        *,
        uuids: bytes,
        event_of: array[int],
        type_of: array[int],
        tags_of: array[int],
        events: tuple[EventRef, ...],
        types: tuple[str, ...],
        tag_sets: tuple[tuple[str, ...], ...],
        groups: Mapping[tuple[Direction, int], tuple[_Group, ...]],
        domains: Mapping[str, tuple[int, ...]],
        skipped: Mapping[str, int],
    ) -> None:
        self._uuids = uuids
        self._event_of = event_of
        self._type_of = type_of
        self._tags_of = tags_of
        self._events = events
        self._types = types
        self._tag_sets = tag_sets
        self._groups = groups
        self._domains = domains
        self.skipped: Mapping[str, int] = skipped
        """Attributes not indexed, by reason (``no_uuid``, ``invalid_value``, ``too_broad``...)."""

    @property
    def attributes(self) -> int:
        """Attributes indexed."""
        return len(self._event_of)

    @property
    def entries(self) -> int:
        """Listed values indexed (an attribute of type domain|ip has two)."""
        return sum(len(g.keys) for gs in self._groups.values() for g in gs) + sum(map(len, self._domains.values()))

    def approx_bytes(self) -> int:
        """Bytes held by the per-attribute and per-entry tables (Python object overhead of small tables aside)."""
        size = len(self._uuids) + sum(a.itemsize * len(a) for a in (self._event_of, self._type_of, self._tags_of))
        for groups in self._groups.values():
            for g in groups:
                key_bytes = g.keys.itemsize * len(g.keys) if isinstance(g.keys, array) else 48 * len(g.keys)
                size += key_bytes + g.attrs.itemsize * len(g.attrs)
        return size + sum(100 + 8 * len(v) for v in self._domains.values())

    def _ref(self, i: int, indicator: str) -> AttributeRef:
        return AttributeRef(
            uuid=str(uuidlib.UUID(bytes=self._uuids[16 * i : 16 * i + 16])),
            type=self._types[self._type_of[i]],
            indicator=indicator,
            event=self._events[self._event_of[i]],
            tags=self._tag_sets[self._tags_of[i]],
        )

    def lookup(self, direction: Direction, address: IPAddress) -> tuple[AttributeRef, ...]:
        """Attributes listing ``address`` itself or a network holding it, most specific first."""
        bits = address.max_prefixlen
        value = int(address)
        seen: set[int] = set()
        out: list[AttributeRef] = []
        for group in self._groups.get((direction, address.version), ()):
            shift = bits - group.prefix
            key = value >> shift << shift
            i = bisect_left(group.keys, key)
            while i < len(group.keys) and group.keys[i] == key and len(out) < MAX_MATCHES:
                attr = group.attrs[i]
                if attr not in seen:
                    seen.add(attr)
                    net = ipaddress.ip_network((key, group.prefix))
                    out.append(self._ref(attr, str(net.network_address) if group.prefix == bits else str(net)))
                i += 1
        return tuple(out)

    def lookup_domain(self, domain: str) -> tuple[AttributeRef, ...]:
        """Attributes listing ``domain``, in any form :func:`values.normalise_domain` reads (case, trailing dot,
        Unicode or punycode)."""
        name = normalise_domain(domain)
        if name is None:
            return ()
        return tuple(self._ref(i, name) for i in self._domains.get(name, ())[:MAX_MATCHES])


class IndexBuilder:
    """Collects the attributes a sync fetches (``render_feed(observe=builder.add)``); :meth:`build` freezes them.

    Only what the feed's rules can fire on is kept: IP attributes of an enabled direction (networks no broader than
    the feed's minimum prefix), domains when ``falco.domains`` is on, and only attributes with a UUID (a sighting
    names its attribute by UUID).
    """

    def __init__(self, feed: Feed) -> None:
        spec = feed.spec
        self._directions = frozenset(spec.falco.directions)
        self._domains_on = spec.falco.domains
        self._min_prefix = {4: spec.limits.min_prefix_v4, 6: spec.limits.min_prefix_v6}
        self._uuids = bytearray()
        self._event_of = array("I")
        self._type_of = array("B")
        self._tags_of = array("I")
        self._event_ids: dict[tuple[str, str, str], int] = {}
        self._type_ids: dict[str, int] = {}
        self._tag_ids: dict[tuple[str, ...], int] = {}
        self._keys: dict[tuple[Direction, int, int], tuple[array[int] | list[int], array[int]]] = {}
        self._domains: dict[str, list[int]] = {}
        self._type_directions: dict[str, tuple[Direction, ...]] = {}
        self.skipped: dict[str, int] = {}

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _attribute_number(self, attr: Attribute, uuid: bytes) -> int:
        number = len(self._event_of)
        event_key = (attr.event_id, attr.event_uuid, attr.event_info)
        self._uuids += uuid
        self._event_of.append(self._event_ids.setdefault(event_key, len(self._event_ids)))
        self._type_of.append(self._type_ids.setdefault(attr.type, len(self._type_ids)))
        self._tags_of.append(self._tag_ids.setdefault(attr.tags, len(self._tag_ids)))
        return number

    def add(self, attr: Attribute) -> None:
        """Index one fetched attribute (the pipeline's ``observe`` callback)."""
        directions = self._type_directions.get(attr.type)
        if directions is None:
            directions = self._type_directions[attr.type] = tuple(
                d for d in SUPPORTED_TYPES.get(attr.type, ()) if d in self._directions
            )
        if not directions:
            return
        uuid = _uuid_bytes(attr.uuid)
        if uuid is None:
            self._skip("no_uuid")
            return
        # the value is read exactly as the indicator builder reads it (values.py: parse_ip, split_port,
        # normalise_domain), so what a rule lists is what the index finds
        value = attr.value
        ip_text: str | None = None
        domain: str | None = None
        if attr.type in _DOMAIN_TYPES:
            domain = value
        elif attr.type == "domain|ip":
            domain, sep, ip_text = value.partition("|")
            if not sep:
                domain = ip_text = None
        elif attr.type in _IP_TYPES:
            ip_text = split_port(value) if attr.type.endswith("|port") else value
        parsed = parse_ip(ip_text) if ip_text is not None else None
        kept = [parsed] if parsed is not None and parsed.prefix >= self._min_prefix[parsed.version] else []
        if parsed is not None and not kept:
            self._skip("too_broad")
        domain = normalise_domain(domain) if domain is not None and self._domains_on else None
        if not kept and domain is None:
            self._skip("invalid_value")
            return
        number = self._attribute_number(attr, uuid)
        for version, key, prefix, _ in kept:
            for d in directions:
                group = self._keys.get((d, version, prefix))
                if group is None:
                    group = self._keys[(d, version, prefix)] = (array("I") if version == 4 else [], array("I"))
                group[0].append(key)
                group[1].append(number)
        if domain is not None:
            self._domains.setdefault(domain, []).append(number)

    def build(self) -> ProvenanceIndex:
        """The immutable index (keys sorted for ``bisect``)."""
        groups: dict[tuple[Direction, int], list[_Group]] = {}
        for (direction, version, prefix), (keys, attrs) in self._keys.items():
            order = sorted(range(len(keys)), key=keys.__getitem__)
            sorted_keys: array[int] | list[int] = (
                array("I", (keys[i] for i in order)) if isinstance(keys, array) else [keys[i] for i in order]
            )
            groups.setdefault((direction, version), []).append(
                _Group(prefix, sorted_keys, array("I", (attrs[i] for i in order)))
            )
        events = sorted(self._event_ids.items(), key=lambda kv: kv[1])
        return ProvenanceIndex(
            uuids=bytes(self._uuids),
            event_of=self._event_of,
            type_of=self._type_of,
            tags_of=self._tags_of,
            events=tuple(EventRef(*key) for key, _ in events),
            types=tuple(t for t, _ in sorted(self._type_ids.items(), key=lambda kv: kv[1])),
            tag_sets=tuple(t for t, _ in sorted(self._tag_ids.items(), key=lambda kv: kv[1])),
            groups={k: tuple(sorted(v, key=lambda g: -g.prefix)) for k, v in groups.items()},
            domains={k: tuple(v) for k, v in self._domains.items()},
            skipped=dict(self.skipped),
        )


def _uuid_bytes(text: str) -> bytes | None:
    """The 16 bytes of a UUID in its canonical form (what MISP sends), else None."""
    if len(text) != 36 or text[8] != "-" or text[13] != "-" or text[18] != "-" or text[23] != "-":
        return None
    try:
        raw = bytes.fromhex(text.replace("-", ""))
    except ValueError:
        return None
    return raw if len(raw) == 16 else None


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class MispTarget:
    """Where reports go: the feed's MISP server and the credentials of its last sync (never logged)."""

    server: MispServer
    """URL, TLS and timeout settings."""
    auth_key: str = field(repr=False)
    """API key (needs the sighting permission, and add/publish permissions for events)."""
    ca_bundle: str | None = field(default=None, repr=False)
    """PEM CA bundle for a private CA."""

    @property
    def key(self) -> str:
        """Identifies one server and credentials (for client reuse and per-server backoff), secret-free."""
        digest = hashlib.sha256(f"{self.auth_key}\0{self.ca_bundle or ''}".encode()).hexdigest()[:16]
        return f"{self.server.url}#{digest}"


@dataclass(frozen=True)
class ReportingFeed:
    """A feed whose alerts are reported to MISP, as of its last applied sync."""

    feed: Feed
    """The parsed feed (name, namespace, ``spec.reporting``)."""
    index: ProvenanceIndex
    """Where each listed value came from."""
    target: MispTarget
    """The MISP server to report to."""
    uid: str = ""
    """metadata.uid of the MispFeed (for the Kubernetes Events)."""

    @property
    def ref(self) -> str:
        """``namespace/name``."""
        return f"{self.feed.namespace}/{self.feed.name}"


@dataclass(frozen=True)
class FeedRegistry:
    """Rule prefix -> the feeds reporting under it (an immutable snapshot; replaced as a whole on each change).

    Rule prefixes come from ConfigMap prefixes (``misp-<namespace>-<name>`` by default), so same-named feeds of
    two namespaces have their own. Feeds sharing a prefix (same ConfigMap prefix, two Falco namespaces) are all
    kept: an alert goes to those whose tag it carries (:func:`feed_tag`) and whose index lists its address.
    """

    by_ident: Mapping[str, tuple[ReportingFeed, ...]] = field(default_factory=dict)
    """Rule prefix -> feeds."""

    def with_feed(self, feed: ReportingFeed) -> FeedRegistry:
        """A registry where ``feed`` replaces the one of the same namespace/name."""
        out = dict(self.without(feed.ref).by_ident)
        ident = rule_ident(feed.feed)
        out[ident] = (*out.get(ident, ()), feed)
        return FeedRegistry(out)

    def without(self, ref: str) -> FeedRegistry:
        """A registry without the feed ``namespace/name``."""
        out = {k: tuple(f for f in v if f.ref != ref) for k, v in self.by_ident.items()}
        return FeedRegistry({k: v for k, v in out.items() if v})

    def feeds(self) -> Iterable[ReportingFeed]:
        """Every registered feed."""
        for feeds in self.by_ident.values():
            yield from feeds


# ------------------------------------------------------------------------------------------------ matching
class Outcome(StrEnum):
    """What became of one alert (a metrics label)."""

    MATCHED = "matched"
    """Mapped to a feed and to at least one attribute."""
    NOT_OURS = "not_ours"
    """Not one of our rules (or not this feed's tags): ignored."""
    UNKNOWN_FEED = "unknown_feed"
    """Our rule name, but no feed with reporting on is known under it (reporting off, or not synced yet)."""
    NO_ADDRESS = "no_address"
    """The alert has no readable remote address (or domain) in its output fields."""
    UNLISTED = "unlisted"
    """The address is in no attribute of the last sync (rules older or newer than the index)."""


@dataclass(frozen=True)
class Hit:
    """An alert mapped to one feed and to the attributes it came from."""

    feed: ReportingFeed
    """The feed whose rule fired."""
    alert: Alert
    """The alert."""
    rule: RuleRef
    """The rule, taken apart."""
    remote: str
    """The remote address of the connection."""
    attributes: tuple[AttributeRef, ...]
    """The attributes listing it (at most :data:`MAX_MATCHES`), most specific first."""


@dataclass(frozen=True)
class Match:
    """The result of matching one alert."""

    outcome: Outcome
    """What became of it."""
    hits: tuple[Hit, ...] = ()
    """One per feed when matched."""
    rule: RuleRef | None = None
    """Our rule, when it is one."""


def match_alert(alert: Alert, registry: FeedRegistry) -> Match:
    """Map an alert to its feed(s) and attribute(s)."""
    rule = parse_rule(alert.rule)
    if rule is None:
        return Match(Outcome.NOT_OURS)
    if alert.tags and not any(t.startswith("misp_") for t in alert.tags):
        return Match(Outcome.NOT_OURS, rule=rule)
    feeds = registry.by_ident.get(rule.ident, ())
    if alert.tags:
        feeds = tuple(f for f in feeds if feed_tag(f.feed) in alert.tags)
    if not feeds:
        return Match(Outcome.UNKNOWN_FEED, rule=rule)
    address = remote_address(alert, rule.direction)
    domain = remote_domain(alert) if rule.kind == "domain" else None
    if address is None or (rule.kind == "domain" and not domain):
        return Match(Outcome.NO_ADDRESS, rule=rule)
    hits: list[Hit] = []
    for feed in feeds:
        if rule.kind == "domain" and domain:
            found = feed.index.lookup_domain(domain)
        else:
            found = feed.index.lookup(rule.direction, address)
        if found:
            hits.append(Hit(feed=feed, alert=alert, rule=rule, remote=str(address), attributes=found))
    if not hits:
        return Match(Outcome.UNLISTED, rule=rule)
    return Match(Outcome.MATCHED, tuple(hits), rule)


# ----------------------------------------------------------------------------------------------- reporting
class Deduper:
    """Admits a key at most once per window (bounded: the oldest keys go first when full). Not thread-safe."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._until: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def admit(self, key: Hashable, now: float, window: float) -> bool:
        """True (and remembered until ``now + window``) unless ``key`` was admitted within its window."""
        while self._until:
            oldest, oldest_until = next(iter(self._until.items()))
            if oldest_until > now:
                break
            del self._until[oldest]
        until = self._until.get(key)
        if until is not None and until > now:
            return False
        self._until[key] = now + window
        self._until.move_to_end(key)
        while len(self._until) > self._capacity:
            self._until.popitem(last=False)
        return True

    def forget(self, key: Hashable) -> None:
        """Let ``key`` in again (its report was dropped before it reached MISP)."""
        self._until.pop(key, None)


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


def with_uid(feed: ReportingFeed, uid: str) -> ReportingFeed:
    """The same feed with the MispFeed's metadata.uid."""
    return replace(feed, uid=uid)
