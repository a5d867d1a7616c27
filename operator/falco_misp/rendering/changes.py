"""What a change of a feed's rules does to its indicators: added and removed, by kind (pure).

"What will this feed change do before it lands, and what did it do?" (issue 17, item 2). ``falco-misp diff``
compares a fresh render with a folder of rules files; the operator compares what it is about to apply with what
the feed's ConfigMaps hold (read from the cluster, so an operator restart changes nothing: the first sync after it
still reports only what really changed).

The old side is read back from rules files we rendered, by meaning, not by layout: each file is parsed as YAML and
the indicators are taken from our lists (``<prefix><n>_<direction>_addresses`` and ``..._domains``) by name, and
from the ``in (...)`` leaves of our network macros (``<prefix><n>_<direction>_networks``: a guarded trie,
:mod:`.networks`, whose guards contain the leaves and are not indicators). How the items are spelled (flow or block
sequences, quoted or bare) does not matter. The new side comes straight from the rendered
:class:`~falco_misp.indicators.builder.IndicatorSet` (:func:`rendered_indicators`, the selection
:mod:`.shards` renders: wanted directions, domains only when enabled), so nothing just rendered is parsed again.
Kinds are named as ``status.indicators.byKind`` names them (``outbound_addresses``...).

Cost: reading files back is a YAML parse, about 1.3 s per 100,000 items with libyaml on the (busy) test machine
(600,000 addresses in 8 shards: 7.8 s, against 1.4 s to render them); the operator reads the old side only when a sync
writes, and renders nothing twice.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from falco_misp.feed.model import Direction, Feed
from falco_misp.indicators.builder import IndicatorSet

KINDS = ("outbound_addresses", "outbound_networks", "outbound_domains", "inbound_addresses", "inbound_networks")
"""Every kind, in the order changes are reported."""
# Our names end in `<shard index>_<direction>_<kind>`; the rule prefix before them is the feed's.
_NAME = re.compile(r"^(?P<prefix>.*?)(?P<index>[0-9]+)_(?P<kind>(?:in|out)bound_(?:addresses|networks|domains))$")
# One `<field> in (<items>)` of a network condition; followed by `and` it is a guard (a trie node), else a leaf.
_IN = re.compile(r"\bfd\.[a-z]+\s+in\s+\(([^()]*)\)(\s+and\b)?")
# The YAML loader: libyaml's when present (a full set of shards is several MB), the same safe constructors.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UnreadableRules(ValueError):
    """A rules file that is not YAML or not a Falco rules list (so its indicators cannot be read back)."""


@dataclass(frozen=True)
class RuleIndicators:
    """The indicators a set of rules files lists, by kind."""

    by_kind: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Kind (``outbound_addresses``...) -> its values; kinds without values may be absent."""

    def values(self, kind: str) -> frozenset[str]:
        """The values of one kind (empty when there are none)."""
        return self.by_kind.get(kind, frozenset())

    def counts(self) -> dict[str, int]:
        """Values by kind, every kind included."""
        return {kind: len(self.values(kind)) for kind in KINDS}


@dataclass(frozen=True)
class KindChange:
    """What changed in one kind."""

    kind: str
    """``outbound_addresses``, ``inbound_networks``..."""
    added: tuple[str, ...]
    """Values in the new rules only, in address (or name) order."""
    removed: tuple[str, ...]
    """Values in the old rules only, in address (or name) order."""


@dataclass(frozen=True)
class IndicatorChange:
    """Added and removed indicators between two sets of rules, for the kinds that changed."""

    kinds: tuple[KindChange, ...] = ()
    """One entry per kind with a change, in :data:`KINDS` order."""

    def __bool__(self) -> bool:
        return bool(self.kinds)

    @property
    def added(self) -> dict[str, int]:
        """Added values by kind (kinds with none left out)."""
        return {k.kind: len(k.added) for k in self.kinds if k.added}

    @property
    def removed(self) -> dict[str, int]:
        """Removed values by kind (kinds with none left out)."""
        return {k.kind: len(k.removed) for k in self.kinds if k.removed}

    def summary(self) -> str:
        """``+12 outbound addresses, -3 inbound networks``; ``no indicator changed`` when there is nothing."""
        parts = [f"+{n} {_label(kind)}" for kind, n in self.added.items()]
        parts += [f"-{n} {_label(kind)}" for kind, n in self.removed.items()]
        return ", ".join(parts) if parts else "no indicator changed"


def _label(kind: str) -> str:
    return kind.replace("_", " ")


def _order(value: str) -> tuple[int, int, int, str]:
    """Addresses and networks in numeric order (IPv4 first), then anything else by name."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return 2, 0, 0, value
    return net.version // 6, int(net.network_address), net.prefixlen, value


def diff_indicators(old: RuleIndicators, new: RuleIndicators) -> IndicatorChange:
    """What turns ``old`` into ``new``, by kind."""
    kinds: list[KindChange] = []
    for kind in KINDS:
        before, after = old.values(kind), new.values(kind)
        added, removed = after - before, before - after
        if added or removed:
            kinds.append(KindChange(kind, tuple(sorted(added, key=_order)), tuple(sorted(removed, key=_order))))
    return IndicatorChange(tuple(kinds))


def rendered_indicators(feed: Feed, indicators: IndicatorSet) -> RuleIndicators:
    """The indicators :func:`~falco_misp.rendering.shards.render_rules` puts in the feed's rules files: only the
    wanted directions, domains only with ``falco.domains`` (and the outbound direction)."""
    falco = feed.spec.falco
    out: dict[str, frozenset[str]] = {}
    for direction in falco.directions:
        out[f"{direction.value}_addresses"] = frozenset(indicators.addresses.get(direction, ()))
        out[f"{direction.value}_networks"] = frozenset(indicators.networks.get(direction, ()))
    if falco.domains and Direction.OUTBOUND in falco.directions:
        out["outbound_domains"] = frozenset(indicators.domains)
    return RuleIndicators({k: v for k, v in out.items() if v})


def _network_leaves(condition: str) -> list[str]:
    """The networks of a guarded network condition: the items of every ``in (...)`` that is not a guard."""
    items: list[str] = []
    for match in _IN.finditer(condition):
        if match.group(2) is None:
            items.extend(_items(match.group(1)))
    return items


def _items(text: str) -> list[str]:
    return [i.strip().strip("\"'") for i in text.split(",") if i.strip().strip("\"'")]


def _entries(content: str | bytes, where: str) -> list[Any]:
    try:
        doc = yaml.load(content, Loader=_LOADER)  # noqa: S506 - a safe loader (SafeLoader or libyaml's CSafeLoader)
    except yaml.YAMLError as exc:
        raise UnreadableRules(f"{where}: not valid YAML ({type(exc).__name__})") from None
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise UnreadableRules(f"{where}: not a Falco rules file (expected a list of lists, macros and rules)")
    return doc


def read_rules(files: Mapping[str, str | bytes], rule_prefix: str | None = None) -> RuleIndicators:
    """The indicators our rules files list (``files``: name -> content), by kind.

    ``rule_prefix`` (:attr:`Feed.rule_prefix`): only this feed's lists and macros; None: those of any feed (the
    operator's ConfigMaps are the feed's own, found by their labels, whatever prefix they were written with).
    Raises :class:`UnreadableRules` for a file that is not a YAML list.
    """
    found: dict[str, set[str]] = {}
    for where, content in sorted(files.items()):
        for entry in _entries(content, where):
            if not isinstance(entry, dict):
                continue
            kind, values = _entry_values(entry, rule_prefix)
            if kind is not None:
                found.setdefault(kind, set()).update(values)
    return RuleIndicators({k: frozenset(v) for k, v in found.items() if v})


def _entry_values(entry: Mapping[str, Any], rule_prefix: str | None) -> tuple[str | None, Iterable[str]]:
    """(kind, values) of one of our lists or network macros; (None, ()) for anything else."""
    if "list" in entry:
        name, body = entry.get("list"), entry.get("items")
    elif "macro" in entry:
        name, body = entry.get("macro"), entry.get("condition")
    else:
        return None, ()
    match = _NAME.match(name) if isinstance(name, str) else None
    if match is None or (rule_prefix is not None and match.group("prefix") != rule_prefix):
        return None, ()
    kind = match.group("kind")
    if "list" in entry:
        values = [str(i) for i in body] if isinstance(body, list) else []
        return kind, values
    if not kind.endswith("_networks") or not isinstance(body, str):
        return None, ()
    return kind, _network_leaves(body)


def change_between(
    old_files: Mapping[str, str | bytes], feed: Feed, indicators: IndicatorSet, rule_prefix: str | None = None
) -> IndicatorChange:
    """What applying ``indicators`` changes compared with the rules in ``old_files``."""
    return diff_indicators(read_rules(old_files, rule_prefix), rendered_indicators(feed, indicators))


def _shown(value: str) -> str:
    """A value for a terminal: ours are plain, anything else (a hand-edited file) is shown escaped."""
    return value if _PLAIN.match(value) else repr(value)


_PLAIN = re.compile(r"^[0-9A-Za-z:./_-]{1,255}$")


def describe_change(change: IndicatorChange, show: int) -> list[str]:
    """Lines for a person: per changed kind its counts, then the first ``show`` added and removed values."""
    lines: list[str] = []
    for entry in change.kinds:
        lines.append(f"{_label(entry.kind)}: +{len(entry.added)} -{len(entry.removed)}")
        for sign, values, verb in (("+", entry.added, "added"), ("-", entry.removed, "removed")):
            lines.extend(f"  {sign} {_shown(v)}" for v in values[:show])
            if show and len(values) > show:
                lines.append(f"  ... {len(values) - show} more {verb}")
    return lines
