"""Falco alerts as values (pure): Falco's JSON alert and Falcosidekick's webhook body, and our rule names.

- :func:`parse_alerts` reads both bodies (the same fields; Sidekick adds a ``uuid``) into frozen :class:`Alert`
  values, keeping only the output fields matching needs;
- :func:`parse_rule` recognises our rule names (``<rule prefix><n> outbound connection to a listed address``...,
  the prefix being the feed's ConfigMap prefix with ``_`` for ``-``: ``misp_<namespace>_<name>`` by default);
  :func:`feed_tag` is the tag ``misp_feed:<namespace>/<name>`` that tells apart two feeds sharing a prefix in two
  Falco namespaces;
- :func:`remote_address` / :func:`remote_domain`: the remote side (``fd.sip`` outbound, ``fd.cip`` inbound), read
  with the indicator builder's own readers (:mod:`falco_misp.values`), so an IDN is punycode on both sides.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from falco_misp.feed.model import Direction, Feed
from falco_misp.values import normalise_domain, parse_ip

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
_MAX_RULE_CHARS = 512
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})$")
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
# render.py's rule titles: "<prefix><shard> <direction> connection <to|from> a listed <kind>" (rules/*.yaml);
# the prefix is Feed.rule_prefix (a ConfigMap prefix with _ for -), the shard the number before the space.
_RULE = re.compile(
    r"^([a-z0-9][a-z0-9_]*?)_(\d+) (?:(outbound) connection to|(inbound) connection from) a listed "
    r"(address|network|domain)$"
)


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


def alert_timestamp(value: object, now: float) -> float:
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
        time=alert_timestamp(raw.get("time"), now),
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
