"""Indicators -> self-contained Falco rules files ("shards"), deterministic, each within a byte budget (pure).

Each shard holds its own header, direction macros, lists and rules, every name prefixed ``<rule prefix><n>_``
(:attr:`Feed.rule_prefix`: the ConfigMap prefix with ``-`` -> ``_``, default ``misp_<namespace>_<name>_``), so
Falco loads any subset of a feed's shards (a missing optional ConfigMap never breaks Falco) and two feeds never
define the same name (Falco keeps the last definition of a name: reference/FALCO.md). Items are pre-validated by
:mod:`falco_misp.indicators.builder` and checked again here against a strict character set before they are joined into
YAML; every other value from the spec (tags, priority, names) is validated again and quoted: nothing from a feed
reaches a rules file unchecked. A shard holds at most one block per kind and direction, so no name is defined twice.
Same indicators -> same bytes -> same hash, so an unchanged feed causes no write and no rollout.

Cost and size (issue 14, reference/FALCO.md "Measured 2026-12-01"):

- a direction's networks are one guarded trie in one macro (:mod:`.networks`): a connect walks one path of a few
  dozen comparisons instead of scanning every network; the trie stays in one shard unless it alone exceeds one;
- network tries are placed first, then the address lists (hash sets, bounded by the byte budget only) fill every
  shard to the budget, then the domains; fewer files load faster (Falco compiles each file with all before it);
- lists are flow sequences, 64 items to a line; an IPv4 address is written bare (``len + 1`` bytes: digits and dots
  are a string to every YAML parser), any other item double-quoted (``len + 3``), instead of ``len + 9`` one per line;
- shards are filled to ``falco.shardBytes`` (default 1,040,000: a ConfigMap's data may hold 1,048,576 bytes), so
  300,000 attributes fit in 4 files;
- no ``in`` over a network or name field reaches 65,536 items (Falco 0.44 loops forever on such lists): network
  leaves hold at most 64, the domain list is capped at :data:`FALCO_MAX_LIST_ITEMS`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from itertools import accumulate
from string import Template

from falco_misp.errors import RenderError
from falco_misp.feed.model import FALCO_MAX_LIST_ITEMS, PRIORITIES, Direction, Feed
from falco_misp.indicators.builder import IndicatorSet
from falco_misp.rendering.exceptions import rule_exceptions
from falco_misp.rendering.networks import network_condition

# Every item is an IP address, a CIDR or a lower-case domain: nothing else may be pasted between quotes.
_SAFE_ITEM = re.compile(r"^[0-9a-z:][0-9a-z.:/-]*$")
# A flow sequence, a line break every _PER_LINE items: `1.2.3.4,` costs len + 1 bytes, `"2001:db8::1",` len + 3.
_PER_LINE = 64
_BARE = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")  # an IPv4 address: a string, unquoted, in YAML 1.1 and 1.2
_LINE_BREAK = ",\n    "
# What may reach a template outside a quoted scalar (names appear in comments, desc and output text).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME_MAX = 47
_CONFIG_MAP_NAME_MAX = 253
# [a-z0-9-] only (no `_`, no `.`): Feed.rule_prefix maps `-` to `_`, which must stay injective.
_CONFIG_MAP_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TAG = re.compile(r"^[A-Za-z0-9_.:=-]{1,64}$")  # spec.falco.tags: no `/`, so no tag can pass for a feed tag

# (template, direction) in packing order: the network tries first (each kept whole in one shard where it fits),
# then the address lists fill the shards; the direction's macro precedes its first rule in each shard.
_GROUPS: tuple[tuple[str, Direction], ...] = (
    ("outbound-networks", Direction.OUTBOUND),
    ("inbound-networks", Direction.INBOUND),
    ("outbound-addresses", Direction.OUTBOUND),
    ("outbound-domains", Direction.OUTBOUND),
    ("inbound-addresses", Direction.INBOUND),
)
_NET_FIELD = {Direction.OUTBOUND: "fd.snet", Direction.INBOUND: "fd.cnet"}
BASE_TAGS = ("network", "misp", "mitre_command_and_control")


@cache
def template(name: str) -> Template:
    """A rule template from the ``rules/`` folder (packaged as ``falco_misp.rules``)."""
    text = resources.files("falco_misp.rules").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return Template(text)


def quoted(value: str) -> str:
    """A YAML double-quoted scalar (JSON's escaping is valid YAML): ``true``, ``null``, ``=`` stay strings."""
    return json.dumps(value)


@dataclass(frozen=True)
class Shard:
    """One rules file: what one ConfigMap holds."""

    index: int
    """Position in the feed's output, from 0."""
    name: str
    """``<prefix>-<index>``: the ConfigMap name."""
    content: bytes
    """The rules file, UTF-8 YAML."""
    items: int
    """List items in this shard."""

    @property
    def filename(self) -> str:
        """File name in the rules folder (and ConfigMap key): unique across feeds and shards."""
        return f"{self.name}.yaml"

    @property
    def sha256(self) -> str:
        """Hash of the content."""
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class RulesBundle:
    """Every shard of a feed and the hash over all of them."""

    feed: str
    """Feed name."""
    shards: tuple[Shard, ...]
    """The rules files, in index order."""
    capped: int = 0
    """Indicators left out because they did not fit in ``falco.maxShards`` shards (the oldest go first):
    the effective cap is what fits, not only ``limits.maxIndicators``. Not a failure."""

    @property
    def sha256(self) -> str:
        """Hash over every shard's file name and content: unchanged hash, unchanged rules."""
        h = hashlib.sha256()
        for shard in self.shards:
            h.update(shard.filename.encode() + b"\0" + shard.sha256.encode() + b"\n")
        return h.hexdigest()

    @property
    def total_bytes(self) -> int:
        """Bytes over all shards."""
        return sum(len(s.content) for s in self.shards)


class CapacityError(RenderError):
    """The indicators need more rules files than ``falco.maxShards``."""

    def __init__(self, message: str, *, total: int, fitting: int) -> None:
        super().__init__(message)
        self.total = total
        """List items the indicators make."""
        self.fitting = fitting
        """How many of them fit in ``falco.maxShards`` shards (in rendering order)."""


def _item(value: str) -> str:
    """One validated item as written: an IPv4 address bare, anything else double-quoted."""
    return value if _BARE.match(value) else f'"{value}"'


def _item_text(items: Sequence[str]) -> str:
    """The inside of a flow sequence: validated items, ``_PER_LINE`` to a line."""
    lines = (",".join(map(_item, items[s : s + _PER_LINE])) for s in range(0, len(items), _PER_LINE))
    return _LINE_BREAK.join(lines)


def _item_costs(items: Sequence[str]) -> list[int]:
    """Cumulative byte costs: an upper bound of :func:`_item_text` for any slice ``items[s:e]``
    (``cum[e] - cum[s]``): each item as :func:`_item` writes it plus a comma, and a line break at every multiple of
    ``_PER_LINE``."""
    brk = len(_LINE_BREAK) - 1
    return list(accumulate((len(_item(i)) + 1 + (brk if n % _PER_LINE == 0 else 0) for n, i in enumerate(items)),
                           initial=0))  # fmt: skip


def _network_body(direction: Direction, items: Sequence[str]) -> str:
    """The guarded trie of ``items`` as the macro's folded condition (every line indented like ``${items}``)."""
    return network_condition(_NET_FIELD[direction], items).text.replace("\n", "\n    ")


def _check_items(items: Sequence[str], group: str) -> None:
    for item in items:
        if not _SAFE_ITEM.match(item):
            raise RenderError(f"refusing to render unvalidated {group} item {item!r}")


def _check_feed(feed: Feed) -> None:
    """Every spec value that reaches a template, checked again (a Feed may be built without parse_feed)."""
    if not _DNS_LABEL.match(feed.name) or len(feed.name) > _NAME_MAX:
        raise RenderError(f"refusing to render feed name {feed.name!r}: not a DNS label of at most {_NAME_MAX}")
    if not _DNS_LABEL.match(feed.namespace):
        raise RenderError(f"refusing to render feed namespace {feed.namespace!r}: not a DNS label")
    prefix = feed.config_map_prefix
    longest = f"{prefix}-{max(feed.spec.falco.max_shards - 1, 0)}"
    if not _CONFIG_MAP_PREFIX.match(prefix) or len(longest) > _CONFIG_MAP_NAME_MAX:
        raise RenderError(f"refusing to render ConfigMap prefix {prefix!r}: expected [a-z0-9-], {longest!r} <= 253")
    falco = feed.spec.falco
    if falco.priority not in PRIORITIES:
        raise RenderError(f"refusing to render priority {falco.priority!r}: expected one of {', '.join(PRIORITIES)}")
    for tag in falco.tags:
        if not _TAG.match(tag):
            raise RenderError(f"refusing to render tag {tag!r}")


class _ShardWriter:
    """One shard: its blocks (slices of the groups' items), size, and which macros and groups it already holds.

    Sizes are counted without building the text, so the packing can be tried cheaply; :meth:`finish` builds it.
    """

    def __init__(self, feed: Feed, index: int) -> None:
        self.feed = feed
        self.index = index
        self.name = f"{feed.config_map_prefix}-{index}"
        self.prefix = f"{feed.rule_prefix}{index}_"
        falco = feed.spec.falco
        self._values = {
            "prefix": self.prefix,
            "title": self.prefix.rstrip("_"),
            "feed": feed.ref,
            "file": f"{self.name}.yaml",
            "priority": quoted(falco.priority),
            "tags": ", ".join(quoted(t) for t in dict.fromkeys((*BASE_TAGS, feed.tag, *falco.tags))),
        }
        self._exceptions = rule_exceptions(feed)  # per rule template: its `exceptions:` block (spec.falco.exceptions)
        self.size = len(self._fill("header", ""))
        self.macros: set[Direction] = set()
        self.groups: set[str] = set()
        self.blocks: list[tuple[str, Direction, Sequence[str], int, int, str | None]] = []
        self.items = 0

    def _fill(self, name: str, items: str) -> str:
        return template(name).substitute(self._values, items=items, exceptions=self._exceptions.get(name, ""))

    def overhead(self, group: str, direction: Direction) -> int:
        """Bytes a block of ``group`` costs here before its items (including its macro if still missing)."""
        extra = 0 if direction in self.macros else len(self._fill(f"{direction.value}-macro", ""))
        return extra + len(self._fill(group, ""))

    def add(
        self,
        group: str,
        direction: Direction,
        items: Sequence[str],
        *,
        start: int,
        end: int,
        cost: int,
        body: str | None = None,
    ) -> None:
        """Place ``items[start:end]`` (``cost`` bytes of items, ``body`` their text if already built) as this
        shard's one block of ``group``."""
        self.size += self.overhead(group, direction) + cost
        self.macros.add(direction)
        self.groups.add(group)
        self.blocks.append((group, direction, items, start, end, body))
        self.items += end - start

    def finish(self) -> Shard:
        parts = [self._fill("header", "")]
        macros: set[Direction] = set()
        for group, direction, items, start, end, body in self.blocks:
            if direction not in macros:
                parts.append(self._fill(f"{direction.value}-macro", ""))
                macros.add(direction)
            if body is None:
                chunk = items[start:end]
                text = _network_body(direction, chunk) if group.endswith("networks") else _item_text(chunk)
            else:
                text = body
            parts.append(self._fill(group, text))
        if not self.blocks:  # no indicators: still a valid rules file (Falco rejects an empty `in ()`)
            parts.extend(self._fill(f"{d.value}-macro", "") for d in self.feed.spec.falco.directions)
        return Shard(index=self.index, name=self.name, content="".join(parts).encode(), items=self.items)


def _groups(indicators: IndicatorSet, feed: Feed) -> Iterator[tuple[str, Direction, tuple[str, ...]]]:
    wanted = set(feed.spec.falco.directions)
    for group, direction in _GROUPS:
        if direction not in wanted:
            continue
        if group.endswith("addresses"):
            items = indicators.addresses.get(direction, ())
        elif group.endswith("networks"):
            items = indicators.networks.get(direction, ())
        else:
            items = indicators.domains if feed.spec.falco.domains else ()
        if items:
            _check_items(items, group)
            yield group, direction, items


def _item_cap(group: str) -> int | None:
    """Falco's 16-bit loop bounds `in` over name (fd.sip.name) fields (and network fields, whose leaves hold at
    most 64: :mod:`.networks`); fd.sip/fd.cip lists are hash sets, bounded here by the byte budget alone."""
    return None if group.endswith("addresses") else FALCO_MAX_LIST_ITEMS


def _network_key(item: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(item)
    return net.version, int(net.network_address), net.prefixlen


def _network_chunks(
    feed: Feed, group: str, direction: Direction, items: Sequence[str], room: int
) -> list[tuple[Sequence[str], str]]:
    """The direction's networks in address order, as few tries as fit ``room`` bytes each (one, unless a single
    trie exceeds a whole shard): contiguous ranges of the address space, so an event walks one deep trie."""
    ordered = sorted(items, key=_network_key)
    parts = 1
    while True:
        size = -(-len(ordered) // parts)
        chunks = [ordered[s : s + size] for s in range(0, len(ordered), size)]
        bodies = [_network_body(direction, c) for c in chunks]
        if all(len(b) <= room for b in bodies):
            return list(zip(chunks, bodies, strict=True))
        if size == 1:
            raise RenderError(f"falco.shardBytes {feed.spec.falco.shard_bytes} is too small for a single {group} rule")
        parts = max(parts + 1, -(-parts * max(len(b) for b in bodies) // max(room, 1)))


def _pack(
    feed: Feed, groups: Sequence[tuple[str, Direction, tuple[str, ...]]], limit: int | None
) -> tuple[list[_ShardWriter], int]:
    """Greedy, in a fixed order: each network trie whole in the current shard if it fits, else in the next; then
    the address and domain lists fill each shard up to the byte budget, a list that does not fit (bytes or item
    cap) going on in the next shard, so a shard never holds two blocks of one name. Stops before shard
    ``limit + 1``. Returns the shards and how many items they hold."""
    budget = feed.spec.falco.shard_bytes
    writers = [_ShardWriter(feed, 0)]
    placed = 0
    for group, direction, items in groups:
        if group.endswith("networks"):
            widest = _ShardWriter(feed, max(feed.spec.falco.max_shards, len(writers)) + 1)  # longest names
            room = budget - widest.size - widest.overhead(group, direction)
            for chunk, body in _network_chunks(feed, group, direction, items, room):
                writer = writers[-1]
                if group in writer.groups or writer.size + writer.overhead(group, direction) + len(body) > budget:
                    if limit is not None and len(writers) >= limit:
                        return writers, placed
                    writer = _ShardWriter(feed, len(writers))
                    writers.append(writer)
                writer.add(group, direction, chunk, start=0, end=len(chunk), cost=len(body), body=body)
                placed += len(chunk)
            continue
        cum = _item_costs(items)
        cap = _item_cap(group)
        start = 0
        while start < len(items):
            writer = writers[-1]
            take = 0
            if group not in writer.groups:
                room = budget - writer.size - writer.overhead(group, direction)
                if room >= 0:
                    take = bisect_right(cum, cum[start] + room, lo=start) - 1 - start
                take = min(take, len(items) - start, cap if cap is not None else take)
            if take <= 0:
                if writer.items == 0:
                    raise RenderError(f"falco.shardBytes {budget} is too small for a single {group} rule")
                if limit is not None and len(writers) >= limit:
                    return writers, placed
                writers.append(_ShardWriter(feed, len(writers)))
                continue
            writer.add(group, direction, items, start=start, end=start + take, cost=cum[start + take] - cum[start])
            start += take
            placed += take
    return writers, placed


def render_rules(feed: Feed, indicators: IndicatorSet) -> RulesBundle:
    """Pack the indicators into as few shards as the byte budget allows (greedy, in a fixed order).

    Raises :class:`CapacityError` when they need more than ``falco.maxShards`` shards (see
    :func:`render_within_capacity`, which keeps the newest that fit instead), :class:`RenderError` for a value
    that is not safe to render.
    """
    _check_feed(feed)
    groups = list(_groups(indicators, feed))
    max_shards = feed.spec.falco.max_shards
    writers, placed = _pack(feed, groups, max_shards)
    total = sum(len(items) for _, _, items in groups)
    if placed < total:
        needed = len(_pack(feed, groups, None)[0])
        raise CapacityError(
            f"{total} indicators need {needed} rules files but spec.falco.maxShards is {max_shards}: "
            "raise falco.maxShards or lower limits.maxIndicators",
            total=total,
            fitting=placed,
        )
    return RulesBundle(feed=feed.name, shards=tuple(w.finish() for w in writers))


def render_within_capacity(feed: Feed, build: Callable[[int | None], IndicatorSet]) -> tuple[IndicatorSet, RulesBundle]:
    """Render the newest indicators that fit in ``falco.maxShards``: the effective cap is what fits.

    ``build(cap)`` returns the feed's indicators capped to the ``cap`` newest (``None``: ``limits.maxIndicators``
    alone), the way :class:`~falco_misp.indicators.builder.IndicatorBuilder` caps them. When they do not fit, the cap
    becomes the share of items that fits and the indicators are rebuilt; the newest items may be longer than the
    ones that fitted, so a pass that still overflows lowers the cap by twice its overflow. Each pass lowers the cap
    strictly, so it ends (at 1M IPv4 addresses and the default 16 shards: two or three builds, within ~0.5 % of the most
    that fits). Deterministic: same indicators, same cap, same bytes. :attr:`RulesBundle.capped` counts the
    indicators left out for capacity.
    """
    indicators = build(None)
    first = cap = indicators.total
    passes = 0
    while True:
        try:
            bundle = render_rules(feed, indicators)
        except CapacityError as exc:
            share = exc.fitting / max(exc.total, 1)
            # The cap counts the builder's entries, which carving and expansion turn into somewhat more or fewer
            # items: scale it, and lower it strictly on every pass so the loop always ends.
            cap = min(cap - 1, int(cap * (share if passes == 0 else max(0.0, 2 * share - 1))))
            if cap <= 0:
                raise
            indicators = build(cap)
            passes += 1
            continue
        return indicators, replace(bundle, capped=first - indicators.total)
