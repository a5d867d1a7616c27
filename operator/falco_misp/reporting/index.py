r"""Where each listed value came from (pure): the provenance index a sync builds from what it fetched.

:class:`IndexBuilder` sees every fetched attribute (the pipeline's ``observe`` hook) and keeps those the rules list
(the same readers as the indicator builder); :class:`ProvenanceIndex` maps a remote address back to every attribute
that lists it, a CIDR attribute included when the address lies inside it, and a domain likewise. It is compact:
per IPv4 address or network attribute about 33 bytes (a 4-byte key and a 4-byte attribute number per entry in sorted
``array``\ s, a 16-byte UUID, a 4-byte event number, a 4-byte tag-set number and a 1-byte type number per attribute);
lookups are one ``bisect`` per prefix length present in the feed.
"""

from __future__ import annotations

import ipaddress
import uuid as uuidlib
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

from falco_misp.feed.model import SUPPORTED_TYPES, Direction, Feed
from falco_misp.reporting.alerts import IPAddress
from falco_misp.sources.attributes import Attribute
from falco_misp.values import normalise_domain, parse_ip, split_port

_IP_TYPES = {"ip-src", "ip-dst", "ip-src|port", "ip-dst|port"}
_DOMAIN_TYPES = {"domain", "hostname"}

MAX_MATCHES = 16
"""At most this many attributes are reported for one alert (most specific first)."""


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
    """Collects the attributes a sync fetches (``fetch_and_render(observe=builder.add)``); :meth:`build` freezes them.

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
