"""Shards: budget, self-contained subsets, the Falco list ceiling, determinism, bounds."""

from __future__ import annotations

import ipaddress
import random

import pytest

from falco_misp.errors import RenderError
from falco_misp.indicators import IndicatorSet
from falco_misp.render import render_rules
from falco_misp.spec import FALCO_MAX_LIST_ITEMS, Direction
from helpers import feed
from rulecheck import falco_shape_errors, load

OUT, IN = Direction.OUTBOUND, Direction.INBOUND


def addresses(n: int, start: str = "11.0.0.0") -> tuple[str, ...]:
    base = int(ipaddress.IPv4Address(start))
    return tuple(str(ipaddress.IPv4Address(base + i)) for i in range(n))


def networks(n: int) -> tuple[str, ...]:
    base = int(ipaddress.IPv4Address("20.0.0.0"))
    return tuple(str(ipaddress.IPv4Network((base + 256 * i, 24))) for i in range(n))


def test_one_small_shard_has_falco_shape() -> None:
    ind = IndicatorSet(addresses={OUT: ("8.8.4.4",), IN: ("9.9.9.9",)}, networks={OUT: ("1.2.3.0/24",)})
    bundle = render_rules(feed(name="shape"), ind)
    (shard,) = bundle.shards
    assert shard.name == "misp-shape-0" and shard.filename == "misp-shape-0.yaml"
    docs = load(shard.content)
    assert falco_shape_errors(docs) == []
    names = [d.get("rule") or d.get("list") or d.get("macro") for d in docs]
    assert all(n.startswith("misp_shape_0") for n in names)
    rules = {d["rule"]: d for d in docs if "rule" in d}
    assert len(rules) == 3
    cond = {r["condition"] for r in rules.values()}
    assert "misp_shape_0_outbound and fd.sip in (misp_shape_0_outbound_addresses)" in cond
    assert "misp_shape_0_outbound and fd.snet in (misp_shape_0_outbound_networks)" in cond
    assert "misp_shape_0_inbound and fd.cip in (misp_shape_0_inbound_addresses)" in cond
    assert all("fd.net " not in c for c in cond)
    assert b'- "8.8.4.4"' in shard.content  # items quoted


def test_empty_feed_is_still_a_valid_rules_file() -> None:
    bundle = render_rules(feed(name="empty"), IndicatorSet(addresses={}, networks={}))
    (shard,) = bundle.shards
    docs = load(shard.content)
    assert [d["macro"] for d in docs] == ["misp_empty_0_inbound", "misp_empty_0_outbound"]
    assert falco_shape_errors(docs) == []


def test_shards_respect_budget_and_are_self_contained() -> None:
    budget = 16 * 1024
    f = feed(name="big", falco={"shardBytes": budget, "maxShards": 256})
    ind = IndicatorSet(
        addresses={OUT: addresses(3000), IN: addresses(1500, "12.0.0.0")},
        networks={OUT: networks(700)},
    )
    bundle = render_rules(f, ind)
    assert len(bundle.shards) > 5
    seen: dict[str, list[str]] = {}
    for shard in bundle.shards:
        assert len(shard.content) <= budget
        docs = load(shard.content)
        assert falco_shape_errors(docs) == [], shard.name  # every name it uses, it defines
        for d in docs:
            if "list" in d:
                seen.setdefault(d["list"].split("_", 3)[-1], []).extend(d["items"])
    assert seen["outbound_addresses"] == list(addresses(3000))  # every item once, in order
    assert seen["inbound_addresses"] == list(addresses(1500, "12.0.0.0"))
    assert seen["outbound_networks"] == list(networks(700))
    # no two shards define the same name: any subset loads without one silently overriding another
    names = [d.get("list") or d.get("macro") or d.get("rule") for s in bundle.shards for d in load(s.content)]
    assert len(names) == len(set(names))
    # any subset: each shard alone passes the shape check (which includes "defined before use")
    rng = random.Random(7)
    subset = rng.sample(list(bundle.shards), 3)
    combined = [d for s in subset for d in load(s.content)]
    assert falco_shape_errors(combined) == []


def test_no_list_reaches_falco_ceiling() -> None:
    n = FALCO_MAX_LIST_ITEMS + 10
    f = feed(name="ceiling", falco={"shardBytes": 1000 * 1024, "maxShards": 10})
    bundle = render_rules(f, IndicatorSet(addresses={}, networks={OUT: networks(n)}))
    sizes = [len(d["items"]) for s in bundle.shards for d in load(s.content) if "list" in d]
    assert sum(sizes) == n
    assert max(sizes) <= FALCO_MAX_LIST_ITEMS


def test_deterministic_bytes_and_hash() -> None:
    ind = IndicatorSet(addresses={OUT: addresses(2000)}, networks={IN: networks(50)})
    f = feed(name="det", falco={"shardBytes": 20 * 1024, "maxShards": 50})
    a, b = render_rules(f, ind), render_rules(f, ind)
    assert [s.content for s in a.shards] == [s.content for s in b.shards]
    assert a.sha256 == b.sha256
    changed = render_rules(f, IndicatorSet(addresses={OUT: addresses(2001)}, networks={IN: networks(50)}))
    assert changed.sha256 != a.sha256


def test_max_shards_is_a_clear_error() -> None:
    f = feed(name="many", falco={"shardBytes": 16 * 1024, "maxShards": 2})
    with pytest.raises(RenderError, match=r"need \d+ rules files but spec.falco.maxShards is 2"):
        render_rules(f, IndicatorSet(addresses={OUT: addresses(5000)}, networks={}))


def test_unvalidated_item_is_refused() -> None:
    bad = IndicatorSet(addresses={OUT: ('1.2.3.4") or (proc.name=sh',)}, networks={})
    with pytest.raises(RenderError, match="unvalidated"):
        render_rules(feed(), bad)


def test_priority_tags_and_directions_from_spec() -> None:
    f = feed(name="p", falco={"priority": "critical", "tags": ["team_x"], "directions": ["inbound"]})
    ind = IndicatorSet(addresses={OUT: ("8.8.4.4",), IN: ("9.9.9.9",)}, networks={})
    docs = load(render_rules(f, ind).shards[0].content)
    rules = [d for d in docs if "rule" in d]
    assert len(rules) == 1 and rules[0]["priority"] == "CRITICAL"
    assert rules[0]["tags"] == ["network", "misp", "mitre_command_and_control", "misp_p", "team_x"]
