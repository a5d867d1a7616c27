"""What a change of a feed does to its indicators (rendering/changes.py): read back from rules files, by kind.

The old side is read from files `falco-misp render` wrote from the bundled sample data; the new side from the
indicators of a render of changed data. The two readings (files parsed, indicators straight from the render) are held
to each other for many feeds, so the operator and `falco-misp diff` may use either.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from falco_misp.cli import load_feed, main
from falco_misp.feed.model import Direction
from falco_misp.indicators.builder import IndicatorSet
from falco_misp.pipeline import fetch_and_render
from falco_misp.rendering.changes import (
    IndicatorChange,
    KindChange,
    RuleIndicators,
    UnreadableRules,
    change_between,
    describe_change,
    diff_indicators,
    read_rules,
    rendered_indicators,
)
from falco_misp.rendering.shards import render_rules
from falco_misp.sources.locations import FetchContext
from helpers import REPO, feed

OUT, IN = Direction.OUTBOUND, Direction.INBOUND
SAMPLE = REPO / "examples" / "sample-data" / "events.json"
SAMPLE_FEED = REPO / "examples" / "sample-feed.yaml"


def sample_copy(tmp: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The sample feed and data in ``tmp`` (the feed reads sample-data/events.json next to it)."""
    (tmp / "sample-data").mkdir()
    shutil.copy(SAMPLE, tmp / "sample-data" / "events.json")
    shutil.copy(SAMPLE_FEED, tmp / "feed.yaml")
    return tmp / "feed.yaml", json.loads(SAMPLE.read_text())


def rules_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.yaml"))}


def event(events: list[dict[str, Any]], event_id: str) -> dict[str, Any]:
    (found,) = [e["Event"] for e in events if e["Event"]["id"] == event_id]
    return found


def add_attribute(ev: dict[str, Any], type_: str, value: str) -> None:
    template = copy.deepcopy(ev["Attribute"][0])
    template.update(id=str(9000 + len(ev["Attribute"])), type=type_, value=value)
    template["uuid"] = f"5f0c0000-0000-4000-8000-{9000 + len(ev['Attribute']):012d}"
    ev["Attribute"].append(template)


def render_new(feed_path: Path) -> tuple[Any, IndicatorSet]:
    parsed = load_feed(feed_path)
    ctx = FetchContext(now=1_764_000_000, base_dir=feed_path.parent)
    return parsed, fetch_and_render(parsed, ctx).indicators


def test_changed_sample_data_gives_exactly_the_changed_indicators(tmp_path: Path) -> None:
    feed_path, events = sample_copy(tmp_path)
    out = tmp_path / "out"
    assert main(["render", "--feed", str(feed_path), "--out", str(out), "--quiet"]) == 0
    old_files = rules_in(out)
    assert old_files

    # One address gone, one added outbound; a CIDR gone inbound (so the address it covered is listed on its own
    # now), one IPv6 address added inbound.
    outbound, inbound = event(events, "101"), event(events, "102")
    outbound["Attribute"] = [a for a in outbound["Attribute"] if a["value"] != "203.0.113.11"]
    add_attribute(outbound, "ip-dst", "45.33.1.1")
    inbound["Attribute"] = [a for a in inbound["Attribute"] if a["value"] != "192.0.2.128/25"]
    add_attribute(inbound, "ip-src", "2001:db8:bad::2")
    (tmp_path / "sample-data" / "events.json").write_text(json.dumps(events))
    parsed, indicators = render_new(feed_path)

    change = change_between(old_files, parsed, indicators, parsed.rule_prefix)
    assert change.kinds == (
        KindChange("outbound_addresses", added=("45.33.1.1",), removed=("203.0.113.11",)),
        KindChange("inbound_addresses", added=("192.0.2.200", "2001:db8:bad::2"), removed=()),
        KindChange("inbound_networks", added=(), removed=("192.0.2.128/25",)),
    )
    assert change.added == {"outbound_addresses": 1, "inbound_addresses": 2}
    assert change.removed == {"outbound_addresses": 1, "inbound_networks": 1}
    assert change.summary() == (
        "+1 outbound addresses, +2 inbound addresses, -1 outbound addresses, -1 inbound networks"
    )

    # Reading the new render's files back gives the same change as the indicators do.
    new_out = tmp_path / "new"
    assert main(["render", "--feed", str(feed_path), "--out", str(new_out), "--quiet"]) == 0
    assert diff_indicators(read_rules(old_files), read_rules(rules_in(new_out))) == change


def test_the_same_data_changes_nothing(tmp_path: Path) -> None:
    feed_path, _ = sample_copy(tmp_path)
    out = tmp_path / "out"
    assert main(["render", "--feed", str(feed_path), "--out", str(out), "--quiet"]) == 0
    parsed, indicators = render_new(feed_path)
    change = change_between(rules_in(out), parsed, indicators, parsed.rule_prefix)
    assert change == IndicatorChange()
    assert not change
    assert change.summary() == "no indicator changed"
    assert describe_change(change, 10) == []
    old = read_rules(rules_in(out), parsed.rule_prefix)
    assert old.counts() == {
        "outbound_addresses": 8, "outbound_networks": 6, "outbound_domains": 0, "inbound_addresses": 3,
        "inbound_networks": 1,
    }  # fmt: skip


def test_nothing_before_means_everything_is_added() -> None:
    f = feed(name="fresh")
    ind = IndicatorSet(addresses={OUT: ("8.8.4.4", "9.9.9.9")}, networks={IN: ("20.0.0.0/24",)})
    change = change_between({}, f, ind)
    assert change.added == {"outbound_addresses": 2, "inbound_networks": 1}
    assert change.removed == {}


# ---------------------------------------------------------------------------------------- reading by meaning
def addresses(n: int, start: str = "11.0.0.0", step: int = 1) -> tuple[str, ...]:
    base = int(ipaddress.ip_address(start))
    return tuple(str(ipaddress.ip_address(base + step * i)) for i in range(n))


def networks(n: int, start: str = "20.0.0.0", prefix: int = 24) -> tuple[str, ...]:
    base = int(ipaddress.ip_address(start))
    size = 1 << ((32 if ipaddress.ip_address(start).version == 4 else 128) - prefix)
    return tuple(str(ipaddress.ip_network((base + size * i, prefix))) for i in range(n))


CASES = {
    "guarded network tries, both families": (
        {},
        IndicatorSet(
            addresses={OUT: addresses(300), IN: addresses(5, "2a00::1")},
            networks={OUT: networks(200) + networks(70, "2a01::", 48), IN: networks(65, "30.0.0.0", 20)},
        ),
    ),
    "many shards": (
        {"falco": {"shardBytes": 16384}},
        IndicatorSet(addresses={OUT: addresses(3000, step=3)}, networks={OUT: networks(500)}),
    ),
    "domains, outbound only": (
        {"falco": {"domains": True, "directions": ["outbound"]}},
        IndicatorSet(
            addresses={OUT: ("8.8.4.4",), IN: ("9.9.9.9",)},  # inbound is not rendered: not in the files
            networks={IN: ("20.0.0.0/24",)},
            domains=("c2.example.net", "evil.example.org"),
        ),
    ),
    "domains off": (
        {},
        IndicatorSet(addresses={OUT: ("8.8.4.4",)}, networks={}, domains=("c2.example.net",)),
    ),
    "empty": ({}, IndicatorSet(addresses={}, networks={})),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rendered_indicators_are_what_the_files_list(name: str) -> None:
    spec, ind = CASES[name]
    f = feed(name="read", **spec)
    bundle = render_rules(f, ind)
    files = {s.filename: s.content for s in bundle.shards}
    assert read_rules(files, f.rule_prefix) == rendered_indicators(f, ind)
    assert read_rules(files) == rendered_indicators(f, ind)
    if name == "many shards":
        assert len(bundle.shards) > 2
    if name.startswith("guarded"):  # the guards are not indicators
        assert read_rules(files).values("outbound_networks") == set(ind.networks[OUT])


_V4 = st.integers(min_value=int(ipaddress.ip_address("11.0.0.0")), max_value=int(ipaddress.ip_address("99.0.0.0")))


def _strings(values: set[int]) -> tuple[str, ...]:
    return tuple(str(ipaddress.IPv4Address(v)) for v in sorted(values))


@settings(max_examples=40, deadline=None)
@given(
    outbound=st.sets(_V4, max_size=150),
    inbound=st.sets(_V4, max_size=20),
    nets=st.sets(st.integers(min_value=0, max_value=4000), max_size=150),
)
def test_reading_files_back_matches_the_indicators(outbound: set[int], inbound: set[int], nets: set[int]) -> None:
    f = feed(name="prop")
    ind = IndicatorSet(
        addresses={OUT: _strings(outbound), IN: _strings(inbound)},
        networks={OUT: tuple(str(ipaddress.ip_network((0x64000000 + 256 * n, 24))) for n in sorted(nets))},
    )
    files = {s.filename: s.content for s in render_rules(f, ind).shards}
    assert read_rules(files, f.rule_prefix) == rendered_indicators(f, ind)


def test_the_layout_of_the_lists_does_not_matter() -> None:
    """Block sequences, bare items, another order: the same indicators (shards.py may change its encoding)."""
    f = feed(name="layout")
    ind = IndicatorSet(addresses={OUT: ("8.8.4.4", "2a00::1"), IN: ("9.9.9.9",)}, networks={OUT: networks(100)})
    (shard,) = render_rules(f, ind).shards
    docs = yaml.safe_load(shard.content)
    for doc in docs:
        if "list" in doc:
            doc["items"] = list(reversed(doc["items"]))
    block = yaml.safe_dump(docs, default_flow_style=False)  # block style, plain scalars where YAML allows
    assert '"8.8.4.4"' not in block and "- 8.8.4.4" in block
    assert read_rules({"x.yaml": block}) == read_rules({"x.yaml": shard.content}) == rendered_indicators(f, ind)


def test_only_this_feeds_lists_with_a_prefix() -> None:
    mine, theirs = feed(name="mine"), feed(name="theirs")
    files = {
        "a.yaml": render_rules(mine, IndicatorSet(addresses={OUT: ("8.8.4.4",)}, networks={})).shards[0].content,
        "b.yaml": render_rules(theirs, IndicatorSet(addresses={OUT: ("9.9.9.9",)}, networks={})).shards[0].content,
        "c.yaml": b"- list: unrelated_outbound_addresses\n  items: [1.1.1.1]\n- rule: x\n",
    }
    assert read_rules(files, mine.rule_prefix).by_kind == {"outbound_addresses": {"8.8.4.4"}}
    assert read_rules(files).values("outbound_addresses") == {"8.8.4.4", "9.9.9.9"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [("- list: [unclosed\n", "not valid YAML"), ("list: x\n", "not a Falco rules file")],
)
def test_unreadable_files_are_reported(content: str, problem: str) -> None:
    with pytest.raises(UnreadableRules, match=problem):
        read_rules({"bad.yaml": content})


def test_describe_shows_the_first_values_in_address_order() -> None:
    old = RuleIndicators({"outbound_addresses": frozenset({"9.9.9.9", "1.1.1.1"})})
    new = RuleIndicators({"outbound_addresses": frozenset((*addresses(5, "45.0.0.10"), "45.0.0.9", "2a00::1"))})
    change = diff_indicators(old, new)
    assert describe_change(change, 2) == [
        "outbound addresses: +7 -2",
        "  + 45.0.0.9",
        "  + 45.0.0.10",
        "  ... 5 more added",
        "  - 1.1.1.1",
        "  - 9.9.9.9",
    ]
    assert describe_change(change, 0) == ["outbound addresses: +7 -2"]
