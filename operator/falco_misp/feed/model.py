"""The MispFeed spec as frozen settings objects (STYLE.md #5), and the names every stage shares.

:func:`~falco_misp.feed.parse.parse_feed` builds them once from the document ``falco-misp render --feed FILE``
reads and the operator reads from the custom resource, so both produce the same rules from the same spec. Each
field carries a one-line docstring; :class:`Feed` holds the identity (namespace and name) that names ConfigMaps,
rules and tags.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

API_GROUP = "falco-misp.io"
API_VERSION = "v1alpha1"
KIND = "MispFeed"


class Direction(StrEnum):
    """Which side of a connection an indicator is matched on."""

    INBOUND = "inbound"
    """The listed address connects to us (``accept``): matched on ``fd.cip``/``fd.cnet``."""
    OUTBOUND = "outbound"
    """We connect to the listed address (``connect``): matched on ``fd.sip``/``fd.snet``/``fd.sip.name``."""


class Rollout(StrEnum):
    """How Falco picks up changed rules."""

    RESTART = "Restart"
    """Patch the DaemonSet pod template annotation so pods roll."""
    HOT_RELOAD = "HotReload"
    """Rely on Falco's ``watch_config_files``; never restart pods."""
    NONE = "None"
    """Only write the ConfigMaps."""


class DeliveryMode(StrEnum):
    """What the rules are written as (``falco.delivery.mode``)."""

    CONFIG_MAPS = "ConfigMaps"
    """ConfigMaps that the Falco DaemonSet mounts (the falcosecurity chart)."""
    RULESFILES = "Rulesfiles"
    """One ConfigMap (key ``rules.yaml``) and one falco-operator ``Rulesfile`` per shard; no DaemonSet is touched."""
    OCI = "OCI"
    """A falcoctl rulesfile artifact pushed to a registry (falcoctl follows it; optionally a pinned Rulesfile)."""


#: MISP attribute types the pipeline understands, and the direction each one is matched on.
SUPPORTED_TYPES: Mapping[str, tuple[Direction, ...]] = {
    "ip-src": (Direction.INBOUND,),
    "ip-dst": (Direction.OUTBOUND,),
    "ip-src|port": (Direction.INBOUND,),
    "ip-dst|port": (Direction.OUTBOUND,),
    "domain": (Direction.OUTBOUND,),
    "hostname": (Direction.OUTBOUND,),
    "domain|ip": (Direction.OUTBOUND,),
}
DEFAULT_TYPES = ("ip-src", "ip-dst")

#: MISP threat_level_id: 1 High, 2 Medium, 3 Low, 4 Undefined. ``minThreatLevel: low`` keeps 1, 2 and 3.
THREAT_LEVELS: Mapping[str, int] = {"high": 1, "medium": 2, "low": 3, "undefined": 4}
PRIORITIES = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFORMATIONAL", "DEBUG")

# Falco: an `in` over a network or name field iterates with a 16-bit counter; 65,536 items or more make it loop
# forever while `falco -V` says Ok (reference/FALCO.md, measured on Falco 0.44.1). Every list we emit stays below.
FALCO_MAX_LIST_ITEMS = 65_535
# fd.sip.name resolves every listed name with a blocking getaddrinfo on every node (falco #2680): keep it small.
MAX_DOMAINS_HARD = 1_000
# A ConfigMap's data holds at most 1,048,576 bytes, keys included (measured: reference/KUBERNETES.md); a shard and
# its key (< 130 bytes) stay below. Fuller shards mean fewer files, and Falco loads fewer files faster (issue 14).
DEFAULT_SHARD_BYTES = 1_040_000
MAX_SHARD_BYTES = 1_048_000  # the 1,048,576-byte limit less the longest key (a ConfigMap key is at most 253 bytes)


@dataclass(frozen=True)
class SecretRef:
    """A key in a Kubernetes Secret in the feed's namespace."""

    name: str
    """Secret name."""
    key: str
    """Key inside the Secret's data."""


class ServerKind(StrEnum):
    """The kinds of MISP server resources a feed may refer to (``source.misp.serverRef.kind``, issue 15)."""

    CLUSTER = "ClusterMispServer"
    """Cluster-scoped, its Secrets in the operator's namespace, usable by the namespaces it allows."""
    NAMESPACED = "MispServer"
    """In the feed's own namespace, its Secrets there too."""


@dataclass(frozen=True)
class ServerRef:
    """``source.misp.serverRef``: the MISP server resource whose URL, TLS, key and ZeroMQ settings a feed uses."""

    kind: ServerKind
    """ClusterMispServer or MispServer."""
    name: str
    """Its metadata.name (a MispServer: in the feed's namespace)."""


@dataclass(frozen=True)
class MispServer:
    """A MISP server read through its REST API (``/attributes/restSearch``)."""

    url: str
    """Base URL, e.g. ``https://misp.example.org`` (empty for a ``serverRef`` not resolved yet)."""
    auth_key: SecretRef | None = None
    """Secret holding the API key (the CLI reads the key from an environment variable instead)."""
    verify_tls: bool = True
    """Verify the server certificate."""
    ca_bundle: SecretRef | None = None
    """Secret holding a PEM CA bundle for a private CA."""
    timeout_seconds: float = 30.0
    """Per-request timeout."""
    page_size: int = 5_000
    """Attributes per page (``limit``); pages are fetched until a short page."""
    zmq: MispZmq | None = None
    """MISP's ZeroMQ publisher, for live updates (operator only; ``falco-misp render`` ignores it)."""
    server_ref: ServerRef | None = None
    """The server resource these settings come from (the operator fills the rest in before a fetch)."""
    secret_namespace: str | None = None
    """Where ``auth_key``, ``ca_bundle`` and the ZeroMQ credentials live (None: the feed's namespace)."""


@dataclass(frozen=True)
class MispZmq:
    """MISP's ZeroMQ publisher: relevant attribute changes and event publishes trigger a sync within seconds.

    The messages only say *that* something changed: the sync still reads everything through the REST API, and the
    refresh timer keeps running as the safety net (issue 7).
    """

    url: str
    """``tcp://host:port`` of the PUB socket (MISP's ``Plugin.ZeroMQ_port``, 50000 by default)."""
    debounce_seconds: int = 10
    """A sync runs once this long passed without another relevant message, so a burst gives one sync."""
    credentials_secret: str | None = None
    """A Secret with keys ``username`` and ``password`` for ZeroMQ PLAIN (MISP's ``ZeroMQ_username`` and
    ``ZeroMQ_password``); server resources only."""


@dataclass(frozen=True)
class Location:
    """Where a static feed, export or list lives: an http(s) URL or a local path."""

    url: str
    """``https://...``, ``http://...``, ``file:///...`` or a path (relative paths: relative to the feed file)."""
    verify_tls: bool = True
    """Verify the server certificate for https URLs."""
    timeout_seconds: float = 30.0
    """Per-request timeout for http(s) URLs."""
    headers_secret: str | None = None
    """``headersSecretRef.name``: a Secret in the feed's namespace, each key an HTTP header sent with every request
    to the URL's own origin (never on a redirect elsewhere), paired with that origin like a MISP key (issue 15)."""


@dataclass(frozen=True)
class TextList:
    """A plain list, one indicator per line, ``#`` comments, optional score column (IPsum: ``ip<TAB>count``)."""

    location: Location
    """Where the list lives."""
    types: tuple[str, ...] = ("ip-src", "ip-dst")
    """MISP types each line stands for (both directions by default)."""
    min_score: int | None = None
    """Keep lines whose second column is at least this; lines without a score are kept only when unset."""


@dataclass(frozen=True)
class Source:
    """Exactly one indicator source."""

    misp: MispServer | None = None
    """A MISP server."""
    misp_feed: Location | None = None
    """A MISP static feed (``manifest.json`` + ``<uuid>.json`` event files)."""
    file: Location | None = None
    """A MISP JSON export: an event, a list of events, or a restSearch answer."""
    text: TextList | None = None
    """A plain indicator list."""

    @property
    def location(self) -> Location | None:
        """Where a static feed, export or list lives (None: a MISP server)."""
        return self.misp_feed or self.file or (self.text.location if self.text else None)

    @property
    def kind(self) -> str:
        """The name of the configured source, as in the spec."""
        for name in ("misp", "misp_feed", "file", "text"):
            if getattr(self, name) is not None:
                return {"misp_feed": "mispFeed"}.get(name, name)
        raise AssertionError("a parsed Source always has one kind")


@dataclass(frozen=True)
class TagFilter:
    """Tag names; MISP semantics (case-insensitive, ``%`` wildcard), attribute or event tags."""

    any: tuple[str, ...] = ()
    """At least one of these."""
    all: tuple[str, ...] = ()
    """Every one of these."""
    none: tuple[str, ...] = ()
    """None of these."""

    def __bool__(self) -> bool:
        return bool(self.any or self.all or self.none)


@dataclass(frozen=True)
class FilterSet:
    """One fully resolved set of filters: an attribute passes when it satisfies every field (AND)."""

    types: tuple[str, ...] = DEFAULT_TYPES
    """Attribute types."""
    orgs: tuple[str, ...] = ()
    """Creator organisations of the event (name or id); empty: any."""
    categories: tuple[str, ...] = ()
    """Attribute categories; empty: any."""
    tags: TagFilter = field(default_factory=TagFilter)
    """Tag conditions."""
    to_ids: bool | None = True
    """Only attributes flagged for IDS (``None``: both)."""
    published: bool | None = None
    """Only attributes of published (True) or unpublished (False) events; ``None``: both."""
    max_threat_level_id: int = 4
    """Event threat_level_id at most this (1 High .. 4 Undefined): a minimum severity."""
    max_age_seconds: int | None = None
    """Attribute timestamp within this many seconds."""
    published_within_seconds: int | None = None
    """Event publish_timestamp within this many seconds."""
    enforce_warninglist: bool = False
    """Ask MISP to drop values on its warninglists (MISP server only)."""
    exclude_decayed: bool = False
    """Ask MISP to drop decayed attributes (MISP server only)."""


class RuleKind(StrEnum):
    """Which of a direction's rules: on listed addresses, on listed networks, or on listed domains."""

    ADDRESSES = "addresses"
    """``fd.sip``/``fd.cip in (...)`` rules."""
    NETWORKS = "networks"
    """``fd.snet``/``fd.cnet`` rules (the guarded network tries)."""
    DOMAINS = "domains"
    """``fd.sip.name`` rules (outbound only)."""


ExceptionValue = str | tuple[str, ...]
"""One cell of an exception's value row: a value, or a list of values for ``in``/``pmatch``."""


@dataclass(frozen=True)
class RuleException:
    """A Falco rule exception (``spec.falco.exceptions[]``, Falco's own structure), validated by
    :mod:`falco_misp.feed.exceptions`: the rules it scopes to get ``exceptions:``, which Falco turns into
    ``and not ((f1 c1 v1 and f2 c2 v2) or ...)`` on their condition."""

    name: str
    """Unique within the feed (``<allow-list>:<name>`` when it comes from a MispAllowList)."""
    fields: tuple[str, ...]
    """Falco fields, from the allow-list in :data:`falco_misp.feed.exceptions.FIELDS`."""
    comps: tuple[str, ...]
    """One Falco operator per field (default ``=``)."""
    values: tuple[tuple[ExceptionValue, ...], ...]
    """Rows, one cell per field; a row matches when every field matches its cell."""
    directions: tuple[Direction, ...] = (Direction.INBOUND, Direction.OUTBOUND)
    """``appliesTo.directions``: the directions whose rules carry it (default both)."""
    kinds: tuple[RuleKind, ...] = (RuleKind.ADDRESSES, RuleKind.NETWORKS, RuleKind.DOMAINS)
    """``appliesTo.kinds``: the kinds of rule that carry it (default all)."""

    def applies_to(self, direction: Direction, kind: RuleKind) -> bool:
        """Whether the rule of ``direction`` and ``kind`` carries this exception."""
        return direction in self.directions and kind in self.kinds


@dataclass(frozen=True)
class Exclusions:
    """Values never emitted."""

    networks: tuple[IPNetwork, ...] = ()
    """Allow-listed addresses and CIDRs: anything inside is dropped, broader CIDRs are carved around them."""
    domains: tuple[str, ...] = ()
    """Allow-listed domains: the domain and its subdomains are dropped."""
    keep_non_global: bool = False
    """Keep RFC 1918, loopback, link-local, multicast and reserved addresses (dropped by default)."""
    keep_documentation: bool = False
    """Keep documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)."""
    allow_lists: tuple[str, ...] = ()
    """Names of cluster-scoped MispAllowLists whose networks, domains and exceptions are merged in
    (:func:`falco_misp.feed.allowlist.merge_allow_lists`)."""


@dataclass(frozen=True)
class Limits:
    """Bounds that keep Falco healthy whatever the feed holds."""

    max_indicators: int = 1_000_000
    """Cap on emitted indicators; the newest (attribute timestamp) are kept."""
    max_drop_percent: int = 50
    """Operator: refuse to apply a fetch that shrinks the list by more than this."""
    min_prefix_v4: int = 16
    """IPv4 CIDRs broader than this prefix length are rejected."""
    min_prefix_v6: int = 32
    """IPv6 CIDRs broader than this prefix length are rejected."""
    max_domains: int = 100
    """Cap on domain names (each is resolved by every Falco node)."""
    cidr_warn_threshold: int = 1_000
    """Warn when more CIDR entries than this are emitted (each is a linear scan per event)."""
    expand_prefix_v4: int = 0
    """Expand IPv4 CIDRs of this prefix length or longer into single addresses (0: never)."""
    expand_prefix_v6: int = 0
    """Expand IPv6 CIDRs of this prefix length or longer into single addresses (0: never)."""
    max_expanded_addresses: int = 100_000
    """At most this many addresses come from expansion; the narrowest CIDRs are expanded first."""


# The falco-operator loads Rulesfiles in priority order, lower first (0-99, its default 50). 60: after Falco's
# default rules at 50, so the order is fixed (no name can clash: every name we emit starts with misp_), and below
# 61-99, where a Rulesfile that tunes ours (appended exceptions, enabled: false) must sit: Falco applies an override
# only to a rule already loaded, and keeps the last definition of a name.
DEFAULT_RULESFILE_PRIORITY = 60


@dataclass(frozen=True)
class SelectorRequirement:
    """One ``matchExpressions`` entry of a node label selector (Kubernetes' LabelSelectorRequirement)."""

    key: str
    """The node label key."""
    operator: str
    """``In``, ``NotIn``, ``Exists`` or ``DoesNotExist``."""
    values: tuple[str, ...] = ()
    """The values for ``In``/``NotIn`` (empty for ``Exists``/``DoesNotExist``)."""


@dataclass(frozen=True)
class NodeSelector:
    """Which nodes' Falco loads the rules: the Rulesfile's ``spec.selector`` (a LabelSelector over node labels)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    """``matchLabels`` as sorted (key, value) pairs."""
    match_expressions: tuple[SelectorRequirement, ...] = ()
    """``matchExpressions``, ANDed with ``matchLabels``."""


@dataclass(frozen=True)
class RulesfileDelivery:
    """How the falco-operator's Rulesfiles are written (``falco.delivery.rulesfile``)."""

    priority: int = DEFAULT_RULESFILE_PRIORITY
    """Load order among Rulesfiles, 0-99, lower first."""
    selector: NodeSelector | None = None
    """Only Falco on the nodes it matches loads the rules (None: every node)."""


@dataclass(frozen=True)
class OciDelivery:
    """Where and how the rules are pushed as a falcoctl rulesfile artifact (``falco.delivery.oci``)."""

    reference: str
    """``registry[:port]/repository[:tag]``: the moving tag (default ``latest``); a version tag is pushed beside it."""
    credentials: str | None = None
    """Secret in the feed's namespace: ``kubernetes.io/dockerconfigjson`` or keys ``username``/``password``."""
    ca_bundle: SecretRef | None = None
    """Secret key holding the PEM CAs the registry's certificate is verified against."""
    plain_http: bool = False
    """Speak plain HTTP to the registry (no TLS)."""
    insecure_skip_verify: bool = False
    """Do not verify the registry's certificate."""
    rulesfile: bool = False
    """Also keep a falco-operator Rulesfile whose ``ociArtifact`` is pinned to the digest just pushed."""
    pull_secret: str | None = None
    """That Rulesfile's ``registry.auth.secretRef``: a Secret in Falco's namespace the falco-operator pulls with."""


@dataclass(frozen=True)
class Delivery:
    """What the rules are written as, for which Falco deployment (``falco.delivery``)."""

    mode: DeliveryMode = DeliveryMode.CONFIG_MAPS
    """ConfigMaps for a DaemonSet to mount, the falco-operator's Rulesfiles, or an OCI artifact."""
    rulesfile: RulesfileDelivery = field(default_factory=RulesfileDelivery)
    """Rulesfile settings (mode ``Rulesfiles``, or ``OCI`` with ``oci.rulesfile``)."""
    oci: OciDelivery | None = None
    """The registry (mode ``OCI``)."""


@dataclass(frozen=True)
class FalcoTarget:
    """Where and how the rules reach Falco."""

    namespace: str = "falco"
    """Namespace of the Falco DaemonSet; the ConfigMaps are written there."""
    daemon_set: str | None = None
    """DaemonSet name; when unset, found by ``selector``."""
    selector: str = "app.kubernetes.io/name=falco"
    """Label selector finding the Falco DaemonSet when ``daemonSet`` is unset."""
    config_map_prefix: str = ""
    """ConfigMap names are ``<prefix>-0 .. <prefix>-N`` (default ``misp-<feed>``)."""
    max_shards: int = 16
    """Refuse output needing more ConfigMaps than this."""
    directions: tuple[Direction, ...] = (Direction.INBOUND, Direction.OUTBOUND)
    """Which directions get rules."""
    priority: str = "WARNING"
    """Falco priority of the emitted rules."""
    tags: tuple[str, ...] = ()
    """Extra Falco rule tags."""
    domains: bool = False
    """Emit ``fd.sip.name`` rules for domain indicators (opt-in: Falco resolves each name on every node)."""
    rollout: Rollout = Rollout.HOT_RELOAD
    """How Falco picks up changes (default: Falco's own ``watch_config_files`` reload, no pod restart)."""
    metrics_port: int = 8765
    """Port of Falco's Prometheus endpoint on each pod (the falcosecurity chart's ``metrics.enabled: true``)."""
    metrics_path: str = "/metrics"
    """Path of that endpoint."""
    delivery_deadline_seconds: int = 180
    """How long after a write a Falco pod may still run the previous rules (the kubelet's ConfigMap refresh, about
    a minute, plus Falco's reload and a margin) before it is reported stale."""
    min_rollout_interval_seconds: int = 300
    """At most one rollout per this interval."""
    shard_bytes: int = DEFAULT_SHARD_BYTES
    """Byte budget of one rules file (one ConfigMap)."""
    exceptions: tuple[RuleException, ...] = ()
    """Falco rule exceptions on the rules they scope to (the feed's own, then its allow-lists')."""
    delivery: Delivery = field(default_factory=Delivery)
    """ConfigMaps mounted by a DaemonSet (the DaemonSet fields above apply) or the falco-operator's Rulesfiles."""


# ---------------------------------------------------------------------- reporting: alerts -> MISP (issue 5)
#: MISP event analysis: 0 Initial, 1 Ongoing, 2 Completed.
ANALYSIS_LEVELS: Mapping[str, int] = {"initial": 0, "ongoing": 1, "completed": 2}
#: Placeholders a sighting source may hold.
SOURCE_PLACEHOLDERS = ("cluster", "node", "namespace", "feed")
DEFAULT_EVENT_TAGS = ("falco-misp:observed",)


@dataclass(frozen=True)
class SightingsReporting:
    """Report a MISP sighting for each attribute a Falco alert of this feed matched."""

    enabled: bool = False
    """Send sightings (off by default)."""
    source: str = ""
    """Sighting source; ``{cluster}``, ``{node}``, ``{namespace}``, ``{feed}`` are filled in (empty: cluster/node)."""
    dedup_window_seconds: int = 3600
    """At most one sighting (and one Kubernetes Event) per attribute within this window."""


@dataclass(frozen=True)
class EventsReporting:
    """Append observed hits to one MISP event per feed and day (created on the first hit of the day)."""

    enabled: bool = False
    """Write events (off by default)."""
    tags: tuple[str, ...] = DEFAULT_EVENT_TAGS
    """Tags of the daily event."""
    distribution: int = 0
    """Event distribution: 0 your organisation only, 1 this community, 2 connected communities, 3 all."""
    threat_level: int = 4
    """Event threat_level_id: 1 High .. 4 Undefined."""
    analysis: int = 0
    """Event analysis: 0 Initial, 1 Ongoing, 2 Completed."""
    to_ids: bool = False
    """``to_ids`` of the added attributes (off: a feed filtering on toIds never reads its own hits back)."""
    published: bool = False
    """Publish the event after adding hits."""


@dataclass(frozen=True)
class Reporting:
    """What the operator tells MISP when Falco fires one of this feed's rules (needs ``source.misp``)."""

    sightings: SightingsReporting = field(default_factory=SightingsReporting)
    """Sightings on the matched attributes."""
    events: EventsReporting = field(default_factory=EventsReporting)
    """A daily MISP event of observed hits."""

    @property
    def enabled(self) -> bool:
        """Whether anything is reported (alerts of this feed are then matched to their attributes)."""
        return self.sightings.enabled or self.events.enabled


@dataclass(frozen=True)
class FeedSpec:
    """A whole MispFeed spec."""

    source: Source
    """Where indicators come from."""
    filters: tuple[FilterSet, ...] = (FilterSet(),)
    """Resolved filter sets, joined by OR (one per ``anyOf`` group, or the top level alone)."""
    exclusions: Exclusions = field(default_factory=Exclusions)
    """Values never emitted."""
    limits: Limits = field(default_factory=Limits)
    """Bounds."""
    falco: FalcoTarget = field(default_factory=FalcoTarget)
    """Output target."""
    refresh_seconds: int = 3600
    """Sync interval."""
    full_refresh_seconds: int = 86400
    """``refresh.fullInterval``: a MISP feed is refreshed incrementally (only the events MISP changed are asked for
    again) and fetched in full at least this often (issue 14)."""
    reporting: Reporting = field(default_factory=Reporting)
    """Alerts of this feed's rules reported to MISP (sightings, daily event)."""
    suspend: bool = False
    """``spec.suspend``: like a CronJob's, the operator stops syncing (no fetch, no writes, no rollouts, live updates
    ignored) and deletes nothing: the applied ConfigMaps keep serving; false again syncs at once (issue 17)."""

    @property
    def types(self) -> frozenset[str]:
        """Every attribute type any filter set selects."""
        return frozenset(t for f in self.filters for t in f.types)


@dataclass(frozen=True)
class Feed:
    """A named feed: the identity used in rule names, ConfigMap names and labels."""

    name: str
    """metadata.name (a DNS-1123 label)."""
    namespace: str
    """metadata.namespace."""
    spec: FeedSpec
    """The parsed spec."""

    @property
    def ref(self) -> str:
        """``<namespace>/<name>``: the feed's identity in rule output, tags, logs and metrics."""
        return f"{self.namespace}/{self.name}"

    @property
    def identity_prefix(self) -> str:
        """``misp-<namespace>-<name>`` with every ``-`` of the namespace doubled (issue 15): injective, so no two
        feeds share it. A namespace never starts or ends with ``-``, so the first single ``-`` after ``misp-`` ends
        it (``team-a``/``x`` -> ``misp-team--a-x``; ``team``/``a-x`` -> ``misp-team-a-x``). A namespace without
        ``-`` keeps the names it always had. At most 5 + 124 + 1 + 47 = 177 characters: ``<prefix>-<shard>`` stays
        a valid ConfigMap name and key."""
        return f"misp-{self.namespace.replace('-', '--')}-{self.name}"

    @property
    def config_map_prefix(self) -> str:
        """Prefix of the ConfigMap names (and rules file names): :attr:`identity_prefix`, or ``falco.configMapPrefix``
        for a feed in its Falco namespace (its administrator's: parse refuses the field elsewhere)."""
        return self.spec.falco.config_map_prefix or self.identity_prefix

    @property
    def rule_prefix(self) -> str:
        """Prefix of every Falco list, macro and rule name: the ConfigMap prefix with ``-`` -> ``_``, plus ``_``.

        A prefix holds only ``[a-z0-9-]`` (never ``_`` or ``.``: see ``_PREFIX``), so the mapping is injective and
        shard ``n``'s names (``<rule_prefix><n>_...``) are unique exactly when its ConfigMap names are unique in one
        Falco namespace, which the operator enforces (it never overwrites another feed's ConfigMap). Falco keeps
        the last definition of a name, so two feeds sharing names would silently lose one feed's indicators.
        """
        return self.config_map_prefix.replace("-", "_") + "_"

    @property
    def tag(self) -> str:
        """The Falco tag on every rule of the feed: ``misp_feed:<namespace>/<name>`` (a ``/`` never occurs in
        ``falco.tags``, so no spec can forge another feed's tag)."""
        return f"misp_feed:{self.ref}"
