"""The one parser of the MispFeed spec: a document -> :class:`~falco_misp.feed.model.Feed` (pure).

Parsing is strict: unknown fields and bad values raise :class:`~falco_misp.errors.SpecError` naming the field
(``spec.filters.minThreatLevel``), so a typo never turns into a silently ignored filter. The bounds are the CRD's
(tests/k8s/test_crd.py checks that both accept the same fields).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from falco_misp.errors import SpecError
from falco_misp.feed.exceptions import (
    EXCEPTION_NAME,
    LIST_COMPS,
    MAX_EXCEPTIONS,
    MAX_FIELDS,
    MAX_LIST_ITEMS,
    MAX_ROWS,
    check_comp,
    check_field,
    check_value,
)
from falco_misp.feed.model import (
    ANALYSIS_LEVELS,
    API_GROUP,
    API_VERSION,
    DEFAULT_EVENT_TAGS,
    DEFAULT_RULESFILE_PRIORITY,
    DEFAULT_SHARD_BYTES,
    DEFAULT_TYPES,
    FALCO_MAX_LIST_ITEMS,
    KIND,
    MAX_DOMAINS_HARD,
    MAX_SHARD_BYTES,
    PRIORITIES,
    SOURCE_PLACEHOLDERS,
    SUPPORTED_TYPES,
    THREAT_LEVELS,
    Delivery,
    DeliveryMode,
    Direction,
    EventsReporting,
    ExceptionValue,
    Exclusions,
    FalcoTarget,
    Feed,
    FeedSpec,
    FilterSet,
    IPNetwork,
    Limits,
    Location,
    MispServer,
    MispZmq,
    NodeSelector,
    OciDelivery,
    Reporting,
    Rollout,
    RuleException,
    RuleKind,
    RulesfileDelivery,
    SecretRef,
    SelectorRequirement,
    ServerKind,
    ServerRef,
    SightingsReporting,
    Source,
    TagFilter,
    TextList,
)
from falco_misp.values import normalise_domain, safe_url

_DURATION = re.compile(r"^([0-9]+)([smhdw])$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TAG = re.compile(r"^[A-Za-z0-9_.:=-]{1,64}$")
_SELECTOR = re.compile(r"^[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*(,[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*)*$")


def parse_duration(value: object, path: str) -> int:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"5d"``, ``"2w"`` -> seconds."""
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m and int(m.group(1)) > 0:
            return int(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise SpecError(path, f"expected a duration such as 90s, 15m, 12h or 5d, got {value!r}")


class _Reader:
    """Reads one mapping of the spec, recording which keys were used so unknown keys are reported."""

    def __init__(self, data: object, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise SpecError(path, f"expected a mapping, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.used: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def has(self, key: str) -> bool:
        """Whether the key holds a value (null counts as absent); the key counts as read."""
        self.used.add(key)
        return self.data.get(key) is not None

    def child(self, key: str) -> _Reader:
        return _Reader(self.raw(key), self.at(key))

    def string(self, key: str, default: str | None = None, *, pattern: re.Pattern[str] | None = None) -> str:
        value = self.raw(key)
        if value is None:
            if default is None:
                raise SpecError(self.at(key), "is required")
            return default
        if not isinstance(value, str) or not value.strip():
            raise SpecError(self.at(key), f"expected a non-empty string, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise SpecError(self.at(key), f"invalid value {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise SpecError(self.at(key), f"expected true or false, got {value!r}")
        return value

    def optional_boolean(self, key: str) -> bool | None:
        """A boolean where null means "either"."""
        if not self.has(key):
            self.used.add(key)
            return None
        return self.boolean(key, False)

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(self.at(key), f"expected an integer, got {value!r}")
        if not minimum <= value <= maximum:
            raise SpecError(self.at(key), f"must be between {minimum} and {maximum}, got {value}")
        return value

    def number(self, key: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(self.at(key), f"expected a number, got {value!r}")
        if not minimum <= value <= maximum:
            raise SpecError(self.at(key), f"must be between {minimum} and {maximum}, got {value}")
        return float(value)

    def strings(self, key: str, *, pattern: re.Pattern[str] | None = None) -> tuple[str, ...] | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise SpecError(self.at(key), f"expected a list of strings, got {value!r}")
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise SpecError(f"{self.at(key)}[{i}]", f"expected a non-empty string, got {item!r}")
            if pattern is not None and not pattern.match(item):
                raise SpecError(f"{self.at(key)}[{i}]", f"invalid value {item!r}")
            out.append(item.strip())
        return tuple(out)

    def duration(self, key: str, default: int | None) -> int | None:
        value = self.raw(key)
        return default if value is None else parse_duration(value, self.at(key))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise SpecError(self.at(unknown[0]), "unknown field (check the spelling: `kubectl explain mispfeed.spec`)")


def _secret_ref(r: _Reader) -> SecretRef:
    ref = SecretRef(name=r.string("name", pattern=_DNS_SUBDOMAIN), key=r.string("key"))
    r.done()
    return ref


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")


_SERVER_KINDS = {k.value: k for k in ServerKind}


def _server_ref(r: _Reader) -> ServerRef:
    kind = r.string("kind")
    if kind not in _SERVER_KINDS:
        raise SpecError(r.at("kind"), f"expected one of {', '.join(_SERVER_KINDS)}, got {kind!r}")
    ref = ServerRef(kind=_SERVER_KINDS[kind], name=r.string("name", pattern=_DNS_SUBDOMAIN))
    r.done()
    return ref


# With serverRef the server resource holds these; verifyTLS, timeoutSeconds and pageSize (defaulted by the CRD) are
# the server's too, whatever the feed says.
_SERVER_OWNED = ("url", "authKeySecretRef", "caBundleSecretRef", "zmq")


def _misp_server(r: _Reader) -> MispServer:
    if r.has("serverRef"):  # issue 15: a ClusterMispServer or MispServer supplies the connection
        owned = [k for k in _SERVER_OWNED if r.has(k)]
        if owned:
            raise SpecError(r.at(owned[0]), "not with serverRef: the server resource sets the URL, key, CA and ZeroMQ")
        server = MispServer(url="", server_ref=_server_ref(r.child("serverRef")))
        for key in ("verifyTLS", "timeoutSeconds", "pageSize"):
            r.raw(key)
        r.done()
        return server
    if not r.has("url"):
        raise SpecError(r.at("url"), "is required (or serverRef: a ClusterMispServer or MispServer)")
    url = r.string("url")
    if not _URL.match(url):
        raise SpecError(r.at("url"), f"expected an http(s) URL, got {safe_url(url)!r}")
    server = MispServer(
        url=url.rstrip("/"),
        auth_key=_secret_ref(r.child("authKeySecretRef")) if r.has("authKeySecretRef") else None,
        verify_tls=r.boolean("verifyTLS", True),
        ca_bundle=_secret_ref(r.child("caBundleSecretRef")) if r.has("caBundleSecretRef") else None,
        timeout_seconds=r.number("timeoutSeconds", 30.0, minimum=1, maximum=600),
        page_size=r.integer("pageSize", 5_000, minimum=1, maximum=100_000),
        zmq=_misp_zmq(r.child("zmq")) if r.has("zmq") else None,
    )
    r.done()
    return server


def parse_server_settings(r: _Reader) -> MispServer:
    """The connection settings of a ClusterMispServer or MispServer spec (:mod:`falco_misp.feed.servers`): the
    inline form's fields, the key required, ZeroMQ with ``credentialsSecretRef``; the caller reads the rest."""
    url = r.string("url")
    if not _URL.match(url):
        raise SpecError(r.at("url"), f"expected an http(s) URL, got {safe_url(url)!r}")
    if not r.has("authKeySecretRef"):
        raise SpecError(r.at("authKeySecretRef"), "is required: the Secret holding the MISP API key")
    return MispServer(
        url=url.rstrip("/"),
        auth_key=_secret_ref(r.child("authKeySecretRef")),
        verify_tls=r.boolean("verifyTLS", True),
        ca_bundle=_secret_ref(r.child("caBundleSecretRef")) if r.has("caBundleSecretRef") else None,
        timeout_seconds=r.number("timeoutSeconds", 30.0, minimum=1, maximum=600),
        page_size=r.integer("pageSize", 5_000, minimum=1, maximum=100_000),
        zmq=_misp_zmq(r.child("zmq"), credentials=True) if r.has("zmq") else None,
    )


# tcp://host:port: a DNS name, an IPv4 address or a bracketed IPv6 address; the port without leading zeros.
_ZMQ_URL = re.compile(
    r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?):(?P<port>[1-9][0-9]{0,4})$"
)
MIN_DEBOUNCE_SECONDS, MAX_DEBOUNCE_SECONDS = 1, 300


def _misp_zmq(r: _Reader, *, credentials: bool = False) -> MispZmq:
    """``zmq``; ``credentials``: ``credentialsSecretRef`` allowed (server resources only: a feed must not send a
    Secret of its namespace to a publisher of its choosing)."""
    url = r.string("url")
    m = _ZMQ_URL.match(url)
    host = m.group("host") if m else ""
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            m = None
    if m is None or int(m.group("port")) > 65_535:
        raise SpecError(
            r.at("url"),
            f"expected tcp://host:port (MISP's ZeroMQ publisher, port 50000 by default), got {safe_url(url)!r}",
        )
    debounce = r.duration("debounce", 10) or 10
    if not MIN_DEBOUNCE_SECONDS <= debounce <= MAX_DEBOUNCE_SECONDS:
        raise SpecError(r.at("debounce"), f"must be between 1s and 5m, got {r.raw('debounce')!r}")
    secret = None
    if credentials and r.has("credentialsSecretRef"):
        ref = r.child("credentialsSecretRef")
        secret = ref.string("name", pattern=_DNS_SUBDOMAIN)
        ref.done()
    zmq = MispZmq(url=url, debounce_seconds=debounce, credentials_secret=secret)
    r.done()
    return zmq


def _location(r: _Reader) -> Location:
    loc = Location(
        url=r.string("url"),
        verify_tls=r.boolean("verifyTLS", True),
        timeout_seconds=r.number("timeoutSeconds", 30.0, minimum=1, maximum=600),
        headers_secret=_headers_secret(r),
    )
    r.done()
    return loc


def _headers_secret(r: _Reader) -> str | None:
    """``headersSecretRef: {name}`` (issue 15): credentials for a static feed, export or list, never in the URL."""
    if not r.has("headersSecretRef"):
        return None
    ref = r.child("headersSecretRef")
    name = ref.string("name", pattern=_DNS_SUBDOMAIN)
    ref.done()
    return name


def _types(r: _Reader, key: str) -> tuple[str, ...] | None:
    types = r.strings(key)
    if types is None:
        return None
    for i, t in enumerate(types):
        if t not in SUPPORTED_TYPES:
            raise SpecError(f"{r.at(key)}[{i}]", f"unsupported type {t!r}; supported: {', '.join(SUPPORTED_TYPES)}")
    if not types:
        raise SpecError(r.at(key), "must name at least one type")
    return tuple(dict.fromkeys(types))


def _text(r: _Reader) -> TextList:
    text = TextList(
        location=Location(
            url=r.string("url"),
            verify_tls=r.boolean("verifyTLS", True),
            timeout_seconds=r.number("timeoutSeconds", 30.0, minimum=1, maximum=600),
            headers_secret=_headers_secret(r),
        ),
        types=_types(r, "types") or ("ip-src", "ip-dst"),
        min_score=r.integer("minScore", 0, minimum=0, maximum=1_000_000) if r.has("minScore") else None,
    )
    r.done()
    return text


def _source(r: _Reader) -> Source:
    kinds = [k for k in ("misp", "mispFeed", "file", "text") if r.has(k)]
    if len(kinds) != 1:
        raise SpecError(r.path, f"exactly one of misp, mispFeed, file, text is required, got {kinds or 'none'}")
    kind = kinds[0]
    child = r.child(kind)
    r.done()
    if kind == "misp":
        return Source(misp=_misp_server(child))
    if kind == "mispFeed":
        return Source(misp_feed=_location(child))
    if kind == "file":
        return Source(file=_location(child))
    return Source(text=_text(child))


def _tags(r: _Reader) -> TagFilter:
    tags = TagFilter(any=r.strings("any") or (), all=r.strings("all") or (), none=r.strings("none") or ())
    r.done()
    return tags


def _threat_level(r: _Reader, key: str) -> int:
    value = r.raw(key)
    if value is None:
        return 4
    if isinstance(value, str) and value.lower() in THREAT_LEVELS:
        return THREAT_LEVELS[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4:
        return value
    raise SpecError(r.at(key), f"expected one of high, medium, low, undefined (or 1-4), got {value!r}")


def _filters(r: _Reader, *, server_side: bool) -> tuple[FilterSet, ...]:
    base = FilterSet(
        types=_types(r, "types") or DEFAULT_TYPES,
        orgs=r.strings("orgs") or (),
        categories=r.strings("categories") or (),
        tags=_tags(r.child("tags")),
        to_ids=r.optional_boolean("toIds") if "toIds" in r.data else True,  # explicit null: both
        published=r.optional_boolean("published"),
        max_threat_level_id=_threat_level(r, "minThreatLevel"),
        max_age_seconds=r.duration("maxAge", None),
        published_within_seconds=r.duration("publishedWithin", None),
        enforce_warninglist=r.boolean("enforceWarninglist", False),
        exclude_decayed=r.boolean("excludeDecayed", False),
    )
    if not server_side:
        for key, on in (("enforceWarninglist", base.enforce_warninglist), ("excludeDecayed", base.exclude_decayed)):
            if on:
                raise SpecError(r.at(key), "needs source.misp: only a MISP server knows warninglists and decay models")
    groups_raw = r.raw("anyOf")
    r.done()
    if groups_raw is None:
        return (base,)
    if isinstance(groups_raw, str | bytes) or not isinstance(groups_raw, Sequence) or not groups_raw:
        raise SpecError(r.at("anyOf"), "expected a non-empty list of filter groups")
    groups: list[FilterSet] = []
    for i, raw in enumerate(groups_raw):
        g = _Reader(raw, f"{r.at('anyOf')}[{i}]")
        tags = _tags(g.child("tags")) if g.has("tags") else base.tags
        groups.append(
            FilterSet(
                types=_types(g, "types") or base.types,
                orgs=g.strings("orgs") or base.orgs,
                categories=g.strings("categories") or base.categories,
                tags=tags,
                to_ids=base.to_ids,
                published=base.published,
                max_threat_level_id=base.max_threat_level_id,
                max_age_seconds=base.max_age_seconds,
                published_within_seconds=base.published_within_seconds,
                enforce_warninglist=base.enforce_warninglist,
                exclude_decayed=base.exclude_decayed,
            )
        )
        g.done()
    return tuple(groups)


#: ``spec.filters`` fields, in the order they are checked.
FILTER_FIELDS = (
    "types", "orgs", "categories", "tags", "toIds", "published", "minThreatLevel", "maxAge", "publishedWithin",
    "enforceWarninglist", "excludeDecayed", "anyOf",
)  # fmt: skip
#: ``spec.filters`` fields a ``source.text`` feed refuses (all of them): a line carries a value and maybe a score,
#: none of the MISP metadata (org, tags, category, to_ids, event, timestamps) these select on. Its types are
#: ``spec.source.text.types``; ``spec.exclusions`` and ``spec.limits`` apply to every source.
TEXT_UNSUPPORTED_FILTERS = FILTER_FIELDS


def _text_filters(r: _Reader, text: TextList) -> tuple[FilterSet, ...]:
    """A text list's filters: none may be set (each would be silently void); the one set is its types."""
    for key in TEXT_UNSUPPORTED_FILTERS:
        if not r.has(key):
            continue
        if key == "types":
            raise SpecError(r.at(key), "a text list's types are set in spec.source.text.types (each line stands "
                            "for every type listed there)")  # fmt: skip
        if key in ("enforceWarninglist", "excludeDecayed"):
            raise SpecError(r.at(key), "needs source.misp: only a MISP server knows warninglists and decay models")
        raise SpecError(r.at(key), "cannot apply to source.text: a plain list carries values (and a score, see "
                        "minScore), none of the MISP metadata this filter selects on; use spec.exclusions, spec.limits "
                        "or a MISP source")  # fmt: skip
    r.done()
    return (FilterSet(types=text.types, to_ids=None),)


def parse_network(value: str, path: str) -> IPNetwork:
    """An address or CIDR from the spec (host bits are an error here: the user wrote it)."""
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise SpecError(path, f"not an IP address or CIDR: {value!r} ({exc})") from None


def _exclusions(r: _Reader) -> Exclusions:
    cidrs = r.strings("cidrs") or ()
    networks = [parse_network(c, f"{r.at('cidrs')}[{i}]") for i, c in enumerate(cidrs)]
    domains: list[str] = []
    for i, v in enumerate(r.strings("values") or ()):
        try:
            networks.append(ipaddress.ip_network(v, strict=True))
            continue
        except ValueError:
            pass
        domain = normalise_domain(v)
        if domain is None:
            raise SpecError(f"{r.at('values')}[{i}]", f"neither an IP address, a CIDR nor a domain: {v!r}")
        domains.append(domain)
    exc = Exclusions(
        networks=tuple(sorted(set(networks), key=lambda n: (n.version, n))),
        domains=tuple(sorted(set(domains))),
        keep_non_global=r.boolean("keepNonGlobal", False),
        keep_documentation=r.boolean("keepDocumentation", False),
        allow_lists=_allow_lists(r),
    )
    r.done()
    return exc


MAX_ALLOW_LISTS = 16


def _allow_lists(r: _Reader) -> tuple[str, ...]:
    """``exclusions.allowLists``: MispAllowList names (cluster-scoped), each once, sorted."""
    names = r.strings("allowLists", pattern=_DNS_SUBDOMAIN) or ()
    if len(names) > MAX_ALLOW_LISTS:
        raise SpecError(r.at("allowLists"), f"at most {MAX_ALLOW_LISTS} allow-lists, got {len(names)}")
    return tuple(sorted(set(names)))  # merged in name order: the order they are named in changes nothing


def _list(r: _Reader, key: str, what: str, limit: int, *, required: bool = True) -> Sequence[Any] | None:
    """A list under ``key`` of 1 to ``limit`` entries (None when absent and not ``required``)."""
    value = r.raw(key)
    if value is None and not required:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not 1 <= len(value) <= limit:
        raise SpecError(r.at(key), f"expected a list of 1 to {limit} {what}, got {value!r}")
    return value


def _exception_cell(field: str, comp: str, value: object, path: str) -> ExceptionValue:
    if comp not in LIST_COMPS:
        if isinstance(value, list | tuple):
            raise SpecError(path, f"operator {comp!r} takes one value, got the list {value!r} (a list needs in)")
        return check_value(field, comp, value, path)
    items = value if isinstance(value, list | tuple) else [value]
    if not 1 <= len(items) <= MAX_LIST_ITEMS:
        raise SpecError(path, f"expected 1 to {MAX_LIST_ITEMS} values for {comp}, got {len(items)}")
    return tuple(dict.fromkeys(check_value(field, comp, v, f"{path}[{i}]") for i, v in enumerate(items)))


def parse_exceptions(r: _Reader, key: str = "exceptions") -> tuple[RuleException, ...]:
    """Falco rule exceptions (``name``, ``fields``, ``comps``, ``values``, ``appliesTo``), every value held to its
    field type's strict class (:mod:`falco_misp.feed.exceptions`); errors name the exact path and value."""
    raw = r.raw(key)
    if raw is None:
        return ()
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence) or len(raw) > MAX_EXCEPTIONS:
        raise SpecError(r.at(key), f"expected a list of at most {MAX_EXCEPTIONS} exceptions")
    out: list[RuleException] = []
    for i, item in enumerate(raw):
        e = _Reader(item, f"{r.at(key)}[{i}]")
        name = e.string("name", pattern=EXCEPTION_NAME)
        if any(x.name == name for x in out):
            raise SpecError(e.at("name"), f"duplicate exception name {name!r} (Falco needs unique names per rule)")
        fields_raw = _list(e, "fields", "fields", MAX_FIELDS) or ()
        fields = tuple(check_field(f, f"{e.at('fields')}[{j}]") for j, f in enumerate(fields_raw))
        if len(set(fields)) != len(fields):
            raise SpecError(e.at("fields"), f"a field appears twice in {list(fields)}")
        comps_raw = _list(e, "comps", "operators", MAX_FIELDS, required=False)
        if comps_raw is not None and len(comps_raw) != len(fields):
            raise SpecError(e.at("comps"), f"expected one operator per field ({len(fields)}), got {len(comps_raw)}")
        comps = tuple(
            check_comp(f, "=" if comps_raw is None else comps_raw[j], f"{e.at('comps')}[{j}]")
            for j, f in enumerate(fields)
        )
        rows: list[tuple[ExceptionValue, ...]] = []
        for j, row in enumerate(_list(e, "values", "rows of values", MAX_ROWS) or ()):
            at = f"{e.at('values')}[{j}]"
            if isinstance(row, str | bytes) or not isinstance(row, Sequence) or len(row) != len(fields):
                raise SpecError(at, f"expected a row of {len(fields)} value(s), one per field, got {row!r}")
            cells = zip(fields, comps, row, strict=True)
            rows.append(tuple(_exception_cell(f, c, v, f"{at}[{k}]") for k, (f, c, v) in enumerate(cells)))
        scope = e.child("appliesTo")
        directions = scope.strings("directions")
        for j, d in enumerate(directions or ()):
            if d not in ("inbound", "outbound"):
                raise SpecError(f"{scope.at('directions')}[{j}]", f"expected inbound or outbound, got {d!r}")
        kinds = scope.strings("kinds")
        for j, k in enumerate(kinds or ()):
            if k not in tuple(RuleKind):
                raise SpecError(f"{scope.at('kinds')}[{j}]", f"expected addresses, networks or domains, got {k!r}")
        for scoped, what in ((directions, "directions"), (kinds, "kinds")):
            if scoped is not None and not scoped:
                raise SpecError(scope.at(what), f"must name at least one of the {what} (omit it for all)")
        scope.done()
        e.done()
        out.append(
            RuleException(
                name=name,
                fields=fields,
                comps=comps,
                values=tuple(rows),
                directions=tuple(Direction(d) for d in sorted(set(directions or ()))) or RuleException.directions,
                kinds=tuple(k for k in RuleKind if k.value in set(kinds or ())) or RuleException.kinds,
            )
        )
    return tuple(out)


def _expand_prefix(r: _Reader, key: str, bits: int) -> int:
    """0 (off) or a prefix length; expanding broader than /16 (IPv4) or /112 (IPv6) would make huge lists."""
    value = r.integer(key, 0, minimum=0, maximum=bits)
    if value and value < bits - 16:
        raise SpecError(r.at(key), f"must be 0 (off) or between {bits - 16} and {bits}, got {value}")
    return value


def _limits(r: _Reader) -> Limits:
    limits = Limits(
        max_indicators=r.integer("maxIndicators", 1_000_000, minimum=1, maximum=10_000_000),
        max_drop_percent=r.integer("maxDropPercent", 50, minimum=0, maximum=100),
        min_prefix_v4=r.integer("minPrefixV4", 16, minimum=8, maximum=32),
        min_prefix_v6=r.integer("minPrefixV6", 32, minimum=16, maximum=128),
        max_domains=r.integer("maxDomains", 100, minimum=0, maximum=MAX_DOMAINS_HARD),
        cidr_warn_threshold=r.integer("cidrWarnThreshold", 1_000, minimum=0, maximum=FALCO_MAX_LIST_ITEMS),
        expand_prefix_v4=_expand_prefix(r, "expandPrefixV4", 32),
        expand_prefix_v6=_expand_prefix(r, "expandPrefixV6", 128),
        max_expanded_addresses=r.integer("maxExpandedAddresses", 100_000, minimum=0, maximum=1_000_000),
    )
    r.done()
    return limits


def _falco(r: _Reader) -> FalcoTarget:
    directions = r.strings("directions")
    if directions is not None:
        for i, d in enumerate(directions):
            if d not in ("inbound", "outbound"):
                raise SpecError(f"{r.at('directions')}[{i}]", f"expected inbound or outbound, got {d!r}")
        if not directions:
            raise SpecError(r.at("directions"), "must name at least one direction")
    priority = r.string("priority", "WARNING").upper()
    if priority not in PRIORITIES:
        raise SpecError(r.at("priority"), f"expected one of {', '.join(PRIORITIES)}, got {priority!r}")
    rollout_raw = r.string("rollout", "HotReload")
    try:
        rollout = Rollout(rollout_raw)
    except ValueError:
        raise SpecError(r.at("rollout"), f"expected Restart, HotReload or None, got {rollout_raw!r}") from None
    daemon_set = r.string("daemonSet", pattern=_DNS_SUBDOMAIN) if r.has("daemonSet") else None
    delivery = _delivery(r.child("delivery"))
    if delivery.mode is not DeliveryMode.CONFIG_MAPS and (daemon_set or rollout is Rollout.RESTART):
        field_name = "daemonSet" if daemon_set else "rollout"
        raise SpecError(r.at(field_name), f"does not apply with delivery.mode {delivery.mode.value}: no DaemonSet "
                        "is read or patched (the falco-operator or falcoctl loads the rules, no restarts)")  # fmt: skip
    target = FalcoTarget(
        namespace=r.string("namespace", "falco", pattern=_DNS_LABEL),
        daemon_set=daemon_set,
        selector=r.string("selector", "app.kubernetes.io/name=falco", pattern=_SELECTOR),
        config_map_prefix=_config_map_prefix(r),
        max_shards=r.integer("maxShards", 16, minimum=1, maximum=256),
        directions=tuple(Direction(d) for d in sorted(set(directions))) if directions else FalcoTarget.directions,
        priority=priority,
        tags=r.strings("tags", pattern=_TAG) or (),
        domains=r.boolean("domains", False),
        rollout=rollout,
        min_rollout_interval_seconds=r.duration("minRolloutInterval", 300) or 0,
        **_metrics(r),
        delivery_deadline_seconds=_deadline(r),
        shard_bytes=r.integer("shardBytes", DEFAULT_SHARD_BYTES, minimum=16 * 1024, maximum=MAX_SHARD_BYTES),
        exceptions=parse_exceptions(r),
        delivery=delivery,
    )
    r.done()
    return target


# Kubernetes label syntax: a key is an optional DNS-subdomain prefix and '/', then a name of at most 63 characters;
# a value is at most 63 characters, possibly empty.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")
_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def _delivery(r: _Reader) -> Delivery:
    mode_raw = r.string("mode", DeliveryMode.CONFIG_MAPS.value)
    try:
        mode = DeliveryMode(mode_raw)
    except ValueError:
        raise SpecError(r.at("mode"), f"expected ConfigMaps, Rulesfiles or OCI, got {mode_raw!r}") from None
    if r.has("oci") != (mode is DeliveryMode.OCI):
        raise SpecError(r.at("oci"), "is required with mode: OCI, and applies only to it")
    oci = _oci(r.child("oci")) if mode is DeliveryMode.OCI else None
    with_rulesfiles = mode is DeliveryMode.RULESFILES or (oci is not None and oci.rulesfile)
    if r.has("rulesfile") and not with_rulesfiles:
        raise SpecError(r.at("rulesfile"), "applies only with mode: Rulesfiles, or mode: OCI with oci.rulesfile: true")
    rulesfile = _rulesfile(r.child("rulesfile"))
    r.done()
    return Delivery(mode=mode, rulesfile=rulesfile, oci=oci)


# registry[:port]/repository[:tag], no scheme, no digest (a push names where to put content, not the content);
# the pusher checks it in full (delivery/registry.py parse_reference).
_OCI_REFERENCE = re.compile(
    r"^(localhost|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)(:[0-9]{1,5})?/[a-z0-9]+([._/-]+[a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)


def _oci(r: _Reader) -> OciDelivery:
    reference = r.string("reference")
    host = reference.split("/", 1)[0]
    registry_host = "." in host or ":" in host or host == "localhost"
    if not _OCI_REFERENCE.match(reference) or len(reference) > 512 or not registry_host:
        raise SpecError(r.at("reference"), f"expected REGISTRY[:PORT]/REPOSITORY[:TAG] (a registry host with a dot "
                        f"or a port, or localhost; no scheme, no digest), got {reference!r}")  # fmt: skip
    credentials = _secret_name(r.child("credentialsSecretRef")) if r.has("credentialsSecretRef") else None
    ca_bundle = _secret_ref(r.child("caSecretRef")) if r.has("caSecretRef") else None
    plain_http = r.boolean("plainHTTP", False)
    insecure = r.boolean("insecureSkipVerify", False)
    if plain_http and (ca_bundle is not None or insecure):
        raise SpecError(r.at("plainHTTP"), "excludes caSecretRef and insecureSkipVerify (no TLS to verify)")
    rulesfile = r.boolean("rulesfile", False)
    pull_secret = _secret_name(r.child("pullSecretRef")) if r.has("pullSecretRef") else None
    if pull_secret is not None and not rulesfile:
        raise SpecError(r.at("pullSecretRef"), "applies only with rulesfile: true (the falco-operator pulls with it)")
    r.done()
    return OciDelivery(
        reference=reference, credentials=credentials, ca_bundle=ca_bundle, plain_http=plain_http,
        insecure_skip_verify=insecure, rulesfile=rulesfile, pull_secret=pull_secret,
    )  # fmt: skip


def _secret_name(r: _Reader) -> str:
    name = r.string("name", pattern=_DNS_SUBDOMAIN)
    r.done()
    return name


def _rulesfile(r: _Reader) -> RulesfileDelivery:
    priority = r.integer("priority", DEFAULT_RULESFILE_PRIORITY, minimum=0, maximum=99)
    selector = _node_selector(r.child("selector")) if r.has("selector") else None
    r.done()
    return RulesfileDelivery(priority=priority, selector=selector)


def _label_key(value: object, path: str) -> str:
    if not isinstance(value, str) or not _LABEL_KEY.match(value) or len(value) > 317:
        raise SpecError(path, f"expected a label key such as topology.kubernetes.io/zone, got {value!r}")
    return value


def _label_value(value: object, path: str) -> str:
    if not isinstance(value, str) or not _LABEL_VALUE.match(value):
        raise SpecError(path, f"expected a label value (at most 63 letters, digits, '-', '_', '.'), got {value!r}")
    return value


def _node_selector(r: _Reader) -> NodeSelector:
    labels = r.raw("matchLabels")
    if labels is not None and not isinstance(labels, Mapping):
        raise SpecError(r.at("matchLabels"), f"expected a mapping of node labels, got {labels!r}")
    match_labels = tuple(
        sorted(
            (_label_key(k, f"{r.at('matchLabels')}.{k}"), _label_value(v, f"{r.at('matchLabels')}.{k}"))
            for k, v in (labels or {}).items()
        )
    )
    expressions = r.raw("matchExpressions")
    if expressions is not None and (isinstance(expressions, str) or not isinstance(expressions, Sequence)):
        raise SpecError(r.at("matchExpressions"), f"expected a list, got {expressions!r}")
    requirements: list[SelectorRequirement] = []
    for i, item in enumerate(expressions or ()):
        e = _Reader(item, f"{r.at('matchExpressions')}[{i}]")
        key = _label_key(e.raw("key"), e.at("key"))
        operator = e.string("operator")
        if operator not in _SELECTOR_OPERATORS:
            raise SpecError(e.at("operator"), f"expected In, NotIn, Exists or DoesNotExist, got {operator!r}")
        raw_values = e.raw("values")
        if raw_values is not None and (isinstance(raw_values, str) or not isinstance(raw_values, Sequence)):
            raise SpecError(e.at("values"), f"expected a list of label values, got {raw_values!r}")
        values = tuple(_label_value(v, f"{e.at('values')}[{j}]") for j, v in enumerate(raw_values or ()))
        if operator in ("In", "NotIn") and not values:
            raise SpecError(e.at("values"), f"must name at least one value with operator {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            raise SpecError(e.at("values"), f"must be empty with operator {operator}")
        e.done()
        requirements.append(SelectorRequirement(key=key, operator=operator, values=values))
    r.done()
    if not match_labels and not requirements:
        raise SpecError(r.path, "selects every node: set matchLabels or matchExpressions, or leave selector out")
    return NodeSelector(match_labels=match_labels, match_expressions=tuple(requirements))


_METRICS_PATH = re.compile(r"^/[-._~/A-Za-z0-9]{0,254}$")


def _metrics(r: _Reader) -> dict[str, Any]:
    """``falco.metrics``: where each Falco pod serves its Prometheus metrics (delivery is confirmed from them)."""
    m = r.child("metrics")
    out = {
        "metrics_port": m.integer("port", 8765, minimum=1, maximum=65535),
        "metrics_path": m.string("path", "/metrics", pattern=_METRICS_PATH),
    }
    m.done()
    return out


def _deadline(r: _Reader) -> int:
    seconds = r.duration("deliveryDeadline", 180) or 0
    if not 60 <= seconds <= 3600:
        raise SpecError(r.at("deliveryDeadline"), f"must be between 1m and 1h (the kubelet alone takes about a "
                        f"minute), got {seconds}s")  # fmt: skip
    return seconds


# configMapPrefix: `misp-` and a DNS label, at most 48 characters, no `.` or `_`: Feed.rule_prefix maps `-` to
# `_`, which must stay injective (rule names are unique exactly when ConfigMap names are), and every Falco name we
# emit starts with `misp_` (never an upstream name such as `outbound`: reference/FALCO.md).
_PREFIX = re.compile(r"^misp-[a-z0-9]([-a-z0-9]{0,41}[a-z0-9])?$")


def _config_map_prefix(r: _Reader) -> str:
    if not r.has("configMapPrefix"):
        return ""
    value = r.string("configMapPrefix")
    if not _PREFIX.match(value):
        raise SpecError(
            r.at("configMapPrefix"),
            f"expected misp- then lower-case letters, digits and '-', at most 48 characters (it names the ConfigMaps "
            f"and, with '-' as '_', the Falco rules), got {value!r}",
        )
    return value


# ---------------------------------------------------------------------- reporting: alerts -> MISP (issue 5)
_MISP_TAG = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
_SOURCE_TEXT = re.compile(r"^[^\x00-\x1f\x7f]{0,255}$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
MAX_DEDUP_WINDOW = 30 * 86400


def _sighting_source(r: _Reader) -> str:
    value = r.raw("source")
    if value is None:
        return ""
    if not isinstance(value, str) or not _SOURCE_TEXT.match(value):
        raise SpecError(r.at("source"), f"expected text of at most 255 characters, got {value!r}")
    for name in _PLACEHOLDER.findall(value):
        if name not in SOURCE_PLACEHOLDERS:
            raise SpecError(r.at("source"), f"unknown placeholder {{{name}}}; use {{cluster}}, {{node}}, "
                            "{namespace} or {feed}")  # fmt: skip
    if "{" in _PLACEHOLDER.sub("", value) or "}" in _PLACEHOLDER.sub("", value):
        raise SpecError(r.at("source"), f"unbalanced braces in {value!r}")
    return value


def _level(r: _Reader, key: str, names: Mapping[str, int], default: int) -> int:
    """A named level (case-insensitive) or its number."""
    value = r.raw(key)
    if value is None:
        return default
    if isinstance(value, str) and value.lower() in names:
        return names[value.lower()]
    numbers = sorted(names.values())
    if isinstance(value, int) and not isinstance(value, bool) and numbers[0] <= value <= numbers[-1]:
        return value
    choices = ", ".join(names)
    raise SpecError(r.at(key), f"expected one of {choices} (or {numbers[0]}-{numbers[-1]}), got {value!r}")


def _reporting(r: _Reader, *, server_side: bool) -> Reporting:
    s = r.child("sightings")
    window = s.duration("dedupWindow", 3600) or 3600
    if not 60 <= window <= MAX_DEDUP_WINDOW:
        raise SpecError(s.at("dedupWindow"), "must be between 1m and 30d")
    sightings = SightingsReporting(
        enabled=s.boolean("enabled", False), source=_sighting_source(s), dedup_window_seconds=window
    )
    s.done()
    e = r.child("events")
    tags = e.strings("tags", pattern=_MISP_TAG)
    events = EventsReporting(
        enabled=e.boolean("enabled", False),
        tags=tuple(dict.fromkeys(tags)) if tags is not None else DEFAULT_EVENT_TAGS,
        distribution=e.integer("distribution", 0, minimum=0, maximum=3),
        threat_level=_level(e, "threatLevel", THREAT_LEVELS, 4),
        analysis=_level(e, "analysis", ANALYSIS_LEVELS, 0),
        to_ids=e.boolean("toIds", False),
        published=e.boolean("published", False),
    )
    e.done()
    r.done()
    reporting = Reporting(sightings=sightings, events=events)
    if reporting.enabled and not server_side:
        raise SpecError(r.path, "needs source.misp: sightings and events are written to the MISP server the feed reads")
    return reporting


def parse_spec(spec: object, path: str = "spec") -> FeedSpec:
    """Parse and validate a MispFeed ``spec`` mapping."""
    r = _Reader(spec, path)
    source = _source(r.child("source"))
    refresh = r.child("refresh")
    refresh_seconds = refresh.duration("interval", 3600) or 3600
    if refresh_seconds < 60:
        raise SpecError(refresh.at("interval"), "must be at least 1m")
    full_refresh_seconds = refresh.duration("fullInterval", 86400) or 86400
    if full_refresh_seconds < 60:
        raise SpecError(refresh.at("fullInterval"), "must be at least 1m")
    refresh.done()
    parsed = FeedSpec(
        source=source,
        filters=_text_filters(r.child("filters"), source.text)
        if source.text is not None
        else _filters(r.child("filters"), server_side=source.misp is not None),
        exclusions=_exclusions(r.child("exclusions")),
        limits=_limits(r.child("limits")),
        falco=_falco(r.child("falco")),
        refresh_seconds=refresh_seconds,
        full_refresh_seconds=full_refresh_seconds,
        reporting=_reporting(r.child("reporting"), server_side=source.misp is not None),
        suspend=r.boolean("suspend", False),
    )
    r.done()
    return parsed


def parse_feed(document: object) -> Feed:
    """Parse a whole MispFeed manifest (``apiVersion``, ``kind``, ``metadata``, ``spec``)."""
    r = _Reader(document, "MispFeed")
    api_version = r.string("apiVersion", f"{API_GROUP}/{API_VERSION}")
    if not api_version.startswith(f"{API_GROUP}/"):
        raise SpecError("apiVersion", f"expected {API_GROUP}/{API_VERSION}, got {api_version!r}")
    kind = r.string("kind", KIND)
    if kind != KIND:
        raise SpecError("kind", f"expected {KIND}, got {kind!r}")
    meta = r.child("metadata")
    name = meta.string("name")
    if not _DNS_LABEL.match(name) or len(name) > 47:
        raise SpecError("metadata.name", f"expected a lower-case DNS label of at most 47 characters, got {name!r}")
    namespace = meta.string("namespace", "default", pattern=_DNS_LABEL)
    spec = parse_spec(r.raw("spec"), "spec")
    if spec.falco.config_map_prefix and spec.falco.namespace != namespace:
        # issue 15: names derive from the feed's identity (Feed.config_map_prefix), so no feed can take the names
        # another namespace's feed needs; only the Falco namespace's own feeds (its administrator's) choose theirs.
        raise SpecError(
            "spec.falco.configMapPrefix",
            f"only a feed in its Falco namespace ({spec.falco.namespace}) may choose its ConfigMap names; a feed of "
            f"namespace {namespace} writes {Feed(name=name, namespace=namespace, spec=spec).identity_prefix}-<n>",
        )
    return Feed(name=name, namespace=namespace, spec=spec)
