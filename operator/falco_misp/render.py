"""Indicators -> self-contained Falco rules files ("shards"), deterministic, each within a byte budget (pure).

Each shard holds its own header, direction macros, lists and rules, every name prefixed ``misp_<feed>_<n>_``,
so Falco loads any subset of a feed's shards (a missing optional ConfigMap never breaks Falco). Items are
pre-validated by :mod:`falco_misp.indicators` and checked again here against a strict character set before
they are joined into YAML: nothing from a feed reaches a rules file unchecked. No list reaches 65,536 items
(Falco 0.44 loops forever on such network/name lists: reference/FALCO.md). Same indicators -> same bytes ->
same hash, so an unchanged feed causes no write and no rollout.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template

from falco_misp.errors import RenderError
from falco_misp.indicators import IndicatorSet
from falco_misp.spec import FALCO_MAX_LIST_ITEMS, Direction, Feed

# Every item is an IP address, a CIDR or a lower-case domain: nothing else may be pasted between quotes.
_SAFE_ITEM = re.compile(r"^[0-9a-z:][0-9a-z.:/-]*$")
_ITEM_LINE = '    - "{}"\n'
_ITEM_OVERHEAD = len(_ITEM_LINE.format(""))

# (template, direction) in output order; the direction's macro precedes its first rule in each shard.
_GROUPS: tuple[tuple[str, Direction], ...] = (
    ("outbound-addresses", Direction.OUTBOUND),
    ("outbound-networks", Direction.OUTBOUND),
    ("outbound-domains", Direction.OUTBOUND),
    ("inbound-addresses", Direction.INBOUND),
    ("inbound-networks", Direction.INBOUND),
)
BASE_TAGS = ("network", "misp", "mitre_command_and_control")


@cache
def template(name: str) -> Template:
    """A rule template from the ``rules/`` folder (packaged as ``falco_misp.rules``)."""
    text = resources.files("falco_misp.rules").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return Template(text)


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


def _check_items(items: Sequence[str], group: str) -> None:
    for item in items:
        if not _SAFE_ITEM.match(item):
            raise RenderError(f"refusing to render unvalidated {group} item {item!r}")


class _ShardWriter:
    """Accumulates one shard's text, tracking its size and which direction macros it already holds."""

    def __init__(self, feed: Feed, index: int) -> None:
        self.feed = feed
        self.index = index
        self.name = f"{feed.config_map_prefix}-{index}"
        self.prefix = f"{feed.rule_prefix}{index}_"
        self.parts: list[str] = [self._fill("header", "")]
        self.size = len(self.parts[0])
        self.macros: set[Direction] = set()
        self.items = 0

    def _fill(self, name: str, items: str) -> str:
        falco = self.feed.spec.falco
        tags = (*BASE_TAGS, f"misp_{self.feed.name}", *falco.tags)
        return template(name).substitute(
            prefix=self.prefix,
            title=self.prefix.rstrip("_"),
            feed=self.feed.name,
            file=f"{self.name}.yaml",
            priority=falco.priority,
            tags=", ".join(dict.fromkeys(tags)),
            items=items,
        )

    def overhead(self, group: str, direction: Direction) -> int:
        """Bytes a block of ``group`` costs here before its items (including its macro if still missing)."""
        extra = 0 if direction in self.macros else len(self._fill(f"{direction.value}-macro", ""))
        return extra + len(self._fill(group, ""))

    def add(self, group: str, direction: Direction, items: Sequence[str]) -> None:
        if direction not in self.macros:
            macro = self._fill(f"{direction.value}-macro", "")
            self.parts.append(macro)
            self.size += len(macro)
            self.macros.add(direction)
        block = self._fill(group, "".join(_ITEM_LINE.format(i) for i in items))
        self.parts.append(block)
        self.size += len(block)
        self.items += len(items)

    def finish(self) -> Shard:
        if len(self.parts) == 1:  # no indicators: still a valid rules file (Falco rejects an empty `in ()`)
            for direction in self.feed.spec.falco.directions:
                self.parts.append(self._fill(f"{direction.value}-macro", ""))
        return Shard(index=self.index, name=self.name, content="".join(self.parts).encode(), items=self.items)


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


def render_rules(feed: Feed, indicators: IndicatorSet) -> RulesBundle:
    """Pack the indicators into as few shards as the byte budget allows (greedy, in a fixed order)."""
    budget = feed.spec.falco.shard_bytes
    shards: list[Shard] = []
    writer = _ShardWriter(feed, 0)
    for group, direction, items in _groups(indicators, feed):
        start = 0
        while start < len(items):
            room = budget - writer.size - writer.overhead(group, direction)
            take = 0
            while start + take < len(items) and take < FALCO_MAX_LIST_ITEMS:
                cost = len(items[start + take]) + _ITEM_OVERHEAD
                if cost > room:
                    break
                room -= cost
                take += 1
            if take == 0:
                if writer.items == 0:
                    raise RenderError(f"falco.shardBytes {budget} is too small for a single {group} rule")
                shards.append(writer.finish())
                writer = _ShardWriter(feed, len(shards))
                continue
            writer.add(group, direction, items[start : start + take])
            start += take
    shards.append(writer.finish())
    max_shards = feed.spec.falco.max_shards
    if len(shards) > max_shards:
        raise RenderError(
            f"{indicators.total} indicators need {len(shards)} rules files but spec.falco.maxShards is {max_shards}: "
            "raise falco.maxShards or lower limits.maxIndicators"
        )
    return RulesBundle(feed=feed.name, shards=tuple(shards))
