"""An alert -> the feed and the MISP attributes it hit (pure).

:class:`FeedRegistry` holds, by rule prefix, the feeds whose rules were applied (their index and MISP target);
:func:`match_alert` parses the rule name, checks the feed tag and looks the remote side up; :class:`Deduper` lets
one report per attribute through per window.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from falco_misp.feed.model import Feed, MispServer
from falco_misp.feed.policy import Policy
from falco_misp.reporting.alerts import Alert, RuleRef, feed_tag, parse_rule, remote_address, remote_domain, rule_ident
from falco_misp.reporting.index import AttributeRef, ProvenanceIndex


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
    policy: Policy | None = None
    """The operator's egress policy (issue 15): reports connect only where a sync may (None: no restriction)."""

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


def with_uid(feed: ReportingFeed, uid: str) -> ReportingFeed:
    """The same feed with the MispFeed's metadata.uid."""
    return replace(feed, uid=uid)
