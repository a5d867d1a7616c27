"""Shards: budget, self-contained subsets, the Falco list ceiling, determinism, bounds."""

from __future__ import annotations

import ipaddress
import random
import re
from dataclasses import replace
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from falco_misp.errors import RenderError
from falco_misp.feed.model import FALCO_MAX_LIST_ITEMS, Direction, Feed
from falco_misp.feed.parse import parse_feed
from falco_misp.indicators.builder import IndicatorBuilder, IndicatorSet
from falco_misp.rendering.shards import (
    BASE_TAGS,
    CapacityError,
    RulesBundle,
    _ShardWriter,
    render_rules,
    render_within_capacity,
)
from helpers import attr, feed
from rulecheck import block_items, falco_shape_errors, in_lists, load

OUT, IN = Direction.OUTBOUND, Direction.INBOUND


def fast_load(content: bytes) -> list[dict[str, Any]]:
    """libyaml's safe loader, for files of 100,000+ items (the pure-Python one takes seconds)."""
    docs = yaml.load(content, Loader=yaml.CSafeLoader)  # CSafeLoader: the safe loader, in C
    assert isinstance(docs, list)
    return docs


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
    assert shard.name == "misp-ns-shape-0" and shard.filename == "misp-ns-shape-0.yaml"
    docs = load(shard.content)
    assert falco_shape_errors(docs) == []
    names = [d.get("rule") or d.get("list") or d.get("macro") for d in docs]
    assert all(n.startswith(("misp_ns_shape_0_", "misp_ns_shape_0 ")) for n in names)
    rules = {d["rule"]: d for d in docs if "rule" in d}
    assert len(rules) == 3
    cond = {r["condition"] for r in rules.values()}
    # the hash lookup first: a miss costs one check (Falco runs these rules on connect/accept events only)
    assert "fd.sip in (misp_ns_shape_0_outbound_addresses) and misp_ns_shape_0_outbound" in cond
    assert "misp_ns_shape_0_outbound and misp_ns_shape_0_outbound_networks" in cond
    assert "fd.cip in (misp_ns_shape_0_inbound_addresses) and misp_ns_shape_0_inbound" in cond
    macros = {d["macro"]: d["condition"] for d in docs if "macro" in d}
    assert macros["misp_ns_shape_0_outbound_networks"] == 'fd.snet in ("1.2.3.0/24")'  # one network: no guard
    assert all("fd.net " not in c for c in [*cond, *macros.values()])
    assert b"items: [8.8.4.4]" in shard.content  # flow style, an IPv4 address bare


def test_list_items_read_back_as_the_same_strings_in_yaml_1_1_and_1_2() -> None:
    """IPv4 addresses are written bare, everything else quoted: PyYAML (YAML 1.1) and ruamel.yaml (YAML 1.2, the
    version Falco's yaml-cpp parses) read every item back as the string it was, never a number or a mapping."""
    from ruamel.yaml import YAML

    listed = ("1.1.1.1", "8.8.4.4", "100.64.0.1", "2001:4860:4860::8888", "2a00:1450::1")
    indicators = IndicatorSet(
        addresses={OUT: listed, IN: listed[:2]}, networks={OUT: ("198.18.0.0/15", "2001:db8::/32")}
    )
    (shard,) = render_rules(feed(name="yaml"), indicators).shards
    assert b"[1.1.1.1,8.8.4.4,100.64.0.1," in shard.content
    assert b'"2001:4860:4860::8888"' in shard.content
    yaml_12 = YAML(typ="safe", pure=True).load(shard.content)
    for docs in (load(shard.content), yaml_12):
        lists = {d["list"]: d["items"] for d in docs if "list" in d}
        assert lists["misp_ns_yaml_0_outbound_addresses"] == list(listed)
        assert all(isinstance(item, str) for items in lists.values() for item in items)


def test_empty_feed_is_still_a_valid_rules_file() -> None:
    bundle = render_rules(feed(name="empty"), IndicatorSet(addresses={}, networks={}))
    (shard,) = bundle.shards
    docs = load(shard.content)
    assert [d["macro"] for d in docs] == ["misp_ns_empty_0_inbound", "misp_ns_empty_0_outbound"]
    assert falco_shape_errors(docs) == []


def test_shards_respect_budget_and_are_self_contained() -> None:
    budget = 16 * 1024
    f = feed(name="big", falco={"shardBytes": budget, "maxShards": 256})
    ind = IndicatorSet(
        addresses={OUT: addresses(3000), IN: addresses(1500, "12.0.0.0")},
        networks={OUT: networks(700)},
    )
    bundle = render_rules(f, ind)
    assert len(bundle.shards) >= 4  # dense lists: 5 (one item a line took 8)
    seen: dict[str, list[str]] = {}
    for shard in bundle.shards:
        assert len(shard.content) <= budget
        docs = load(shard.content)
        assert falco_shape_errors(docs) == [], shard.name  # every name it uses, it defines
        for name, items in block_items(docs).items():
            seen.setdefault(name.removeprefix("misp_ns_big_").split("_", 1)[-1], []).extend(items)
    assert seen["outbound_addresses"] == list(addresses(3000))  # every item once, in order
    assert seen["inbound_addresses"] == list(addresses(1500, "12.0.0.0"))
    assert seen["outbound_networks"] == list(networks(700))  # in address order, behind guards
    assert sum(1 for s in bundle.shards for d in load(s.content) if d.get("macro", "").endswith("_networks")) == 1
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
    docs = [d for s in bundle.shards for d in fast_load(s.content)]
    sizes = [len(v) for d in docs if "macro" in d for v in in_lists(d["condition"])]
    assert sum(len(v) for d in docs for v in block_items([d]).values()) == n
    assert max(sizes) <= 64 < FALCO_MAX_LIST_ITEMS  # trie leaves, whatever the number of networks


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
    assert rules[0]["tags"] == ["network", "misp", "mitre_command_and_control", "misp_feed:ns/p", "team_x"]


# ------------------------------------------------------------------------------ 11.6: every spec value quoted
HOSTILE_TAGS = ["true", "null", "=", "yes", "No", "on", "OFF", "1e3", "0x1F", "0o17", "1_000", "1:20", "-1", ".5",
                ".inf", ".NaN", "2001-01-01", ":", "-", "=x", "a:b", "..."]  # fmt: skip


def test_hostile_tags_and_priority_load_back_as_the_same_strings() -> None:
    f = feed(name="tags", falco={"tags": HOSTILE_TAGS, "priority": "notice"})
    ind = IndicatorSet(addresses={OUT: ("8.8.4.4",), IN: ("9.9.9.9",)}, networks={OUT: ("1.2.3.0/24",)})
    (shard,) = render_rules(f, ind).shards
    docs = yaml.safe_load(shard.content)
    rules = [d for d in docs if "rule" in d]
    assert len(rules) == 3 and falco_shape_errors(docs) == []
    for rule in rules:
        assert rule["tags"] == [*BASE_TAGS, "misp_feed:ns/tags", *HOSTILE_TAGS]
        assert all(type(t) is str for t in rule["tags"])
        assert rule["priority"] == "NOTICE"
        assert "feed=ns/tags " in rule["output"] and "MISP feed ns/tags " in rule["desc"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.from_regex(r"\A[A-Za-z0-9_.:=-]{1,64}\Z"), min_size=1, max_size=6, unique=True))
def test_any_tag_the_spec_accepts_loads_back_unchanged(tags: list[str]) -> None:
    f = feed(name="t", falco={"tags": tags})
    (shard,) = render_rules(f, IndicatorSet(addresses={OUT: ("8.8.4.4",)}, networks={})).shards
    (rule,) = [d for d in yaml.safe_load(shard.content) if "rule" in d]
    assert rule["tags"] == list(dict.fromkeys([*BASE_TAGS, "misp_feed:ns/t", *tags]))


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"tags": ("ok", "x]\n- rule: injected")}, "tag"),
        ({"tags": ('a"b',)}, "tag"),
        ({"tags": ("misp_feed:other/feed",)}, "tag"),  # another feed's tag
        ({"priority": "WARNING\n  enabled: false"}, "priority"),
        ({"priority": "warning"}, "priority"),
        ({"config_map_prefix": "a_b"}, "ConfigMap prefix"),
        ({"config_map_prefix": "a.b"}, "ConfigMap prefix"),
        ({"config_map_prefix": "a" * 251}, "ConfigMap prefix"),  # + "-15" > 253,
    ],
)
def test_a_feed_built_without_the_parser_is_checked_again(change: dict[str, object], what: str) -> None:
    f = feed(name="direct")
    bad = replace(f, spec=replace(f.spec, falco=replace(f.spec.falco, **change)))  # type: ignore[arg-type]
    with pytest.raises(RenderError, match=what):
        render_rules(bad, IndicatorSet(addresses={OUT: ("8.8.4.4",)}, networks={}))


@pytest.mark.parametrize(("name", "namespace"), [("x\n- rule: y", "ns"), ("x", "ns #"), ("a" * 48, "ns"), ("x", "")])
def test_feed_names_are_checked_again(name: str, namespace: str) -> None:
    bad = replace(feed(name="direct"), name=name, namespace=namespace)
    with pytest.raises(RenderError, match="refusing"):
        render_rules(bad, IndicatorSet(addresses={OUT: ("8.8.4.4",)}, networks={}))


# ------------------------------------------------------------------- 11.7: the item cap binds, not the budget
def big_feed(name: str = "cap", shard_bytes: int = 2_000_000, max_shards: int = 10) -> Feed:
    """shardBytes beyond what the spec allows (1,000 KiB), so FALCO_MAX_LIST_ITEMS ends a block first."""
    f = feed(name=name)
    return replace(f, spec=replace(f.spec, falco=replace(f.spec.falco, shard_bytes=shard_bytes, max_shards=max_shards)))


def names_per_shard(bundle: RulesBundle) -> list[list[str]]:
    return [[d.get("list") or d.get("macro") or d.get("rule") for d in fast_load(s.content)] for s in bundle.shards]


def test_item_cap_ends_a_shard_instead_of_repeating_a_list() -> None:
    n = FALCO_MAX_LIST_ITEMS + 4_465  # 70,000
    f = big_feed()
    ind = IndicatorSet(addresses={IN: addresses(10)}, networks={OUT: networks(n), IN: networks(n)})
    bundle = render_rules(f, ind)
    for names in names_per_shard(bundle):
        assert len(names) == len(set(names)), "a name defined twice in one file: Falco keeps only the last"
    all_names = [n for names in names_per_shard(bundle) for n in names]
    assert len(all_names) == len(set(all_names))
    items: dict[str, list[str]] = {}
    for shard in bundle.shards:
        assert len(shard.content) <= f.spec.falco.shard_bytes
        docs = fast_load(shard.content)
        assert falco_shape_errors(docs) == []
        for name, listed in block_items(docs).items():
            assert name.endswith("_networks") or len(listed) <= FALCO_MAX_LIST_ITEMS  # a trie: its leaves are bound
            items.setdefault(name.split("_", 4)[-1], []).extend(listed)
        assert all(len(v) <= 64 for d in docs if "macro" in d for v in in_lists(d["condition"]))
    # nothing lost, nothing repeated
    assert items == {"outbound_networks": list(networks(n)), "inbound_networks": list(networks(n)),
                     "inbound_addresses": list(addresses(10))}  # fmt: skip


def test_address_lists_are_hash_sets_without_the_item_cap() -> None:
    n = FALCO_MAX_LIST_ITEMS + 4_465
    bundle = render_rules(big_feed(), IndicatorSet(addresses={OUT: addresses(n)}, networks={}))
    (shard,) = bundle.shards  # 70,000 addresses fit 2,000,000 bytes: one list, one rule
    (listed,) = [d for d in fast_load(shard.content) if "list" in d]
    assert listed["items"] == list(addresses(n))


# ------------------------------------------------------------- 10.3: same-named feeds in two namespaces
def team_feed(namespace: str, **falco: object) -> Feed:
    spec = {"source": {"file": {"url": "x.json"}}, "falco": {"shardBytes": 16 * 1024, **falco}}
    return parse_feed({"metadata": {"name": "intel", "namespace": namespace}, "spec": spec})


def merged_by_name(bundles: list[RulesBundle]) -> dict[tuple[str, str], dict[str, object]]:
    """What Falco keeps after loading every file in order: the last definition of each name wins."""
    kept: dict[tuple[str, str], dict[str, object]] = {}
    for bundle in bundles:
        for shard in bundle.shards:
            for d in load(shard.content):
                kind = next(k for k in ("list", "macro", "rule") if k in d)
                kept[(kind, str(d[kind]))] = d
    return kept


def test_same_named_feeds_of_two_namespaces_keep_both_lists_in_one_falco() -> None:
    a, b = team_feed("team-a"), team_feed("team-b")
    assert (a.config_map_prefix, b.config_map_prefix) == ("misp-team--a-intel", "misp-team--b-intel")
    ind_a = IndicatorSet(addresses={OUT: addresses(2000)}, networks={IN: networks(30)})
    ind_b = IndicatorSet(addresses={OUT: addresses(1500, "12.0.0.0")}, networks={IN: networks(5)})
    bundle_a, bundle_b = render_rules(a, ind_a), render_rules(b, ind_b)
    assert len(bundle_a.shards) > 1 and len(bundle_b.shards) > 1
    names_a = {n for names in names_per_shard(bundle_a) for n in names}
    names_b = {n for names in names_per_shard(bundle_b) for n in names}
    assert not names_a & names_b
    assert not {s.name for s in bundle_a.shards} & {s.name for s in bundle_b.shards}
    # Falco loads both feeds' files into one engine: every list of each feed survives, with its own items
    kept = merged_by_name([bundle_a, bundle_b])
    docs = list(kept.values())
    assert falco_shape_errors(docs) == []
    for bundle, ind, ref in ((bundle_a, ind_a, "team-a/intel"), (bundle_b, ind_b, "team-b/intel")):
        prefix = bundle.shards[0].name.rsplit("-", 1)[0].replace("-", "_")
        listed = [i for name, items in block_items(docs).items() if name.startswith(prefix + "_") for i in items]
        assert sorted(listed) == sorted([*ind.addresses[OUT], *ind.networks[IN]])
        rules = [d for (kind, name), d in kept.items() if kind == "rule" and name.startswith(prefix + "_")]
        assert rules and all(f"misp_feed:{ref}" in d["tags"] and f"feed={ref} " in d["output"] for d in rules)  # type: ignore[operator]
    assert sum(len(v) for v in block_items(docs).values()) == ind_a.total + ind_b.total


def test_default_config_map_names_fit_kubernetes_at_their_longest() -> None:
    f = parse_feed({"metadata": {"name": "n" * 47, "namespace": "s" * 63},
                    "spec": {"source": {"file": {"url": "x"}}, "falco": {"maxShards": 256}}})  # fmt: skip
    longest = f"{f.config_map_prefix}-255"
    assert len(longest) <= 253 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", longest)
    assert len(f"{longest}.yaml") <= 253 and re.fullmatch(r"[-._a-zA-Z0-9]+", f"{longest}.yaml")  # a ConfigMap key
    (shard,) = render_rules(f, IndicatorSet(addresses={OUT: ("8.8.4.4",)}, networks={})).shards
    assert shard.name == f"misp-{'s' * 63}-{'n' * 47}-0"


PREFIX = r"\Amisp-[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z"  # what spec.falco.configMapPrefix allows, shorter
EVERY_GROUP = (
    ("outbound-addresses", OUT, ("8.8.4.4",)),
    ("outbound-networks", OUT, ("1.2.3.0/24",)),
    ("outbound-domains", OUT, ("c2.example.org",)),
    ("inbound-addresses", IN, ("9.9.9.9",)),
    ("inbound-networks", IN, ("5.6.0.0/16",)),
)


@settings(max_examples=100, deadline=None)
@given(st.from_regex(PREFIX), st.from_regex(PREFIX), st.integers(0, 20), st.integers(0, 20))
def test_rule_names_collide_exactly_when_config_map_names_do(p: str, q: str, i: int, j: int) -> None:
    """configMapPrefix -> rule prefix is injective: one Falco namespace (where ConfigMap names are unique) never
    gets two definitions of one name from two shards."""

    def shard(prefix: str, index: int) -> tuple[str, set[str]]:
        f = feed(name="x", falco={"configMapPrefix": prefix, "namespace": "ns", "maxShards": 21, "domains": True})
        writer = _ShardWriter(f, index)  # shard ``index`` with one block of every group
        for group, direction, items in EVERY_GROUP:
            writer.add(group, direction, items, start=0, end=1, cost=0)
        docs = load(writer.finish().content)
        assert len(docs) == 12  # 3 lists, 5 rules, 2 direction macros, 2 network macros
        return writer.name, {str(d.get("list") or d.get("macro") or d.get("rule")) for d in docs}

    (cm_a, names_a), (cm_b, names_b) = shard(p, i), shard(q, j)
    assert (cm_a == cm_b) == bool(names_a & names_b)


# ------------------------------------------------------------- 10.7: the effective cap is what fits
def test_indicators_beyond_max_shards_keep_the_newest_that_fit() -> None:
    f = feed(name="full", falco={"shardBytes": 16 * 1024, "maxShards": 2}, limits={"maxIndicators": 100_000})
    values = [str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("11.0.0.0")) + 7919 * i)) for i in range(5000)]
    attrs = [attr(v, "ip-dst", ts=1_000 + i) for i, v in enumerate(values)]  # later in the list: newer

    def build(cap: int | None) -> IndicatorSet:  # the builder's own newest-first cap
        spec = f.spec if cap is None else replace(f.spec, limits=replace(f.spec.limits, max_indicators=cap))
        return IndicatorBuilder(spec).add_all(attrs).build()

    with pytest.raises(RenderError):  # today's behaviour of render_rules alone: a failure
        render_rules(f, build(None))
    ind, bundle = render_within_capacity(f, build)
    assert len(bundle.shards) <= 2 and all(len(s.content) <= 16 * 1024 for s in bundle.shards)
    kept = ind.addresses[OUT]
    assert bundle.capped == len(values) - len(kept) > 0
    assert set(kept) == set(values[-len(kept) :])  # the newest
    listed = [i for s in bundle.shards for d in load(s.content) if "list" in d for i in d["items"]]
    assert sorted(listed) == sorted(kept)
    with pytest.raises(RenderError):  # close to the most that fits: 2 % more does not
        render_rules(f, build(len(kept) + len(kept) // 50))
    again = render_within_capacity(f, build)
    assert again[1].sha256 == bundle.sha256 and again[1].capped == bundle.capped  # deterministic


def test_capacity_cap_is_not_applied_when_everything_fits() -> None:
    f = feed(name="fits")
    ind = IndicatorSet(addresses={OUT: addresses(100)}, networks={})
    got, bundle = render_within_capacity(f, lambda cap: ind)
    assert got is ind and bundle.capped == 0 and bundle.sha256 == render_rules(f, ind).sha256


def test_a_builder_ignoring_the_cap_cannot_loop_forever() -> None:
    f = feed(name="stuck", falco={"shardBytes": 16 * 1024, "maxShards": 1})
    ind = IndicatorSet(addresses={OUT: addresses(5000)}, networks={})
    with pytest.raises(CapacityError) as err:
        render_within_capacity(f, lambda cap: ind)
    assert err.value.total == 5000 and 0 < err.value.fitting < 5000
