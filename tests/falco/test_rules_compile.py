"""Rendered rules have Falco's shape and every rule's expanded condition compiles with sysdig's filter compiler."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from falco_misp.feed.model import Direction, Feed
from falco_misp.feed.parse import parse_feed
from falco_misp.indicators.builder import IndicatorSet
from falco_misp.pipeline import render_attributes
from falco_misp.rendering.shards import render_rules
from falco_misp.sources.attributes import attributes_from_document
from helpers import REPO, feed
from rulecheck import drop_ipv6_networks, expand, falco_shape_errors, load, sysdig_compile

pytestmark = pytest.mark.sysdig

OUT, IN = Direction.OUTBOUND, Direction.INBOUND
ALL_TYPES = ["ip-src", "ip-dst", "ip-src|port", "ip-dst|port", "domain", "hostname", "domain|ip"]


def _render(doc: object, **spec: object) -> list[bytes]:
    f = feed(filters={"types": ALL_TYPES}, falco={"domains": True}, exclusions={"keepDocumentation": True}, **spec)
    return [s.content for s in render_attributes(f, attributes_from_document(doc)).bundle.shards]


def _sources(reference: Path) -> dict[str, object]:
    docs: dict[str, object] = {
        name: json.loads((reference / name).read_text())
        for name in (
            "misp-tests/misp_indicators_test.json",
            "pymisp-tests/existing_event.json",
            "pymisp-tests/to_delete1.json",
        )
    }
    docs["examples/sample-data/events.json"] = json.loads((REPO / "examples/sample-data/events.json").read_text())
    return docs


def test_rendered_files_compile(reference: Path) -> None:
    compiled = 0
    for name, doc in _sources(reference).items():
        for content in _render(doc):
            docs = load(content)
            assert falco_shape_errors(docs) == [], name
            for rule, condition in expand(drop_ipv6_networks(docs)).items():
                assert sysdig_compile(condition) is None, f"{name}: {rule}"
                compiled += 1
    assert compiled >= 8  # every reference file yields rules


def test_every_kind_and_direction_compiles() -> None:
    event = {
        "Event": {
            "info": "all kinds",
            "Attribute": [
                {"type": "ip-src", "value": "8.8.4.4"},
                {"type": "ip-src", "value": "2a00:1450::1"},
                {"type": "ip-src", "value": "9.9.0.0/16"},
                {"type": "ip-dst|port", "value": "1.1.1.1|53"},
                {"type": "ip-dst", "value": "1.0.0.0/24"},
                {"type": "ip-dst", "value": "2a00:1450::/48"},
                {"type": "domain", "value": "c2.example.net"},
            ],
        }
    }
    (content,) = _render(event)
    docs = load(content)
    rules = expand(drop_ipv6_networks(docs))
    assert len(rules) == 5
    for rule, condition in rules.items():
        assert sysdig_compile(condition) is None, rule


def test_compiler_catches_a_broken_condition() -> None:
    """The check has teeth: sysdig rejects what Falco would reject."""
    assert sysdig_compile("fd.sip in (1.2.3.4) and (") is not None
    assert sysdig_compile('fd.sip in ("10.0.0.0/8")') is not None  # a CIDR in an address field
    assert sysdig_compile("fd.sip in (1.2.3.4) or (proc.name=sh") is not None


def _feed_in(namespace: str) -> Feed:
    return parse_feed({"metadata": {"name": "intel", "namespace": namespace},
                       "spec": {"source": {"file": {"url": "x.json"}}, "filters": {"types": ALL_TYPES},
                                "falco": {"domains": True}, "exclusions": {"keepDocumentation": True}}})  # fmt: skip


def _event(*values: tuple[str, str]) -> dict[str, object]:
    return {"Event": {"info": "team", "Attribute": [{"type": t, "value": v} for t, v in values]}}


def test_same_named_feeds_of_two_namespaces_compile_together_and_keep_their_items() -> None:
    """Falco loads both teams' files into one engine, where the last definition of a name wins (reference/FALCO.md):
    modelled by merging the documents by name, then every rule's expanded condition compiles and still holds its
    own feed's items."""
    team_a = _event(
        ("ip-dst", "45.0.0.1"), ("ip-dst", "45.1.0.0/24"), ("ip-src", "46.0.0.1"), ("domain", "a.example.org")
    )
    team_b = _event(
        ("ip-dst", "47.0.0.2"), ("ip-dst", "47.1.0.0/24"), ("ip-src", "48.0.0.2"), ("domain", "b.example.org")
    )
    merged: dict[tuple[str, str], dict[str, object]] = {}
    for namespace, event in (("team-a", team_a), ("team-b", team_b)):
        for shard in render_attributes(_feed_in(namespace), attributes_from_document(event)).bundle.shards:
            for d in load(shard.content):
                kind = next(k for k in ("list", "macro", "rule") if k in d)
                merged[(kind, str(d[kind]))] = d
    docs = list(merged.values())
    assert falco_shape_errors(docs) == []
    rules = expand(docs)
    assert len(rules) == 8  # 4 per feed (no inbound networks): nothing overridden
    expected = {"team_a": ("45.0.0.1", "45.1.0.0/24", "46.0.0.1", "a.example.org"),
                "team_b": ("47.0.0.2", "47.1.0.0/24", "48.0.0.2", "b.example.org")}  # fmt: skip
    for rule, condition in rules.items():
        assert sysdig_compile(condition) is None, rule
        team = "team_a" if rule.startswith("misp_team__a_intel_0 ") else "team_b"
        assert rule.startswith(f"misp_{team.replace('_', '__')}_intel_0 ")  # a namespace's "-" doubled (issue 15)
        own, other = expected[team], expected["team_b" if team == "team_a" else "team_a"]
        assert any(v in condition for v in own) and not any(v in condition for v in other), rule


def test_guarded_network_tries_compile_in_both_directions() -> None:
    """A trie several levels deep (300 networks per direction, IPv4 and IPv6) compiles as Falco would expand it;
    sysdig 0.29 cannot read IPv6 CIDRs, so those values get an IPv4 stand-in and the structure still compiles."""
    v4 = tuple(str(ipaddress.IPv4Network((int(ipaddress.IPv4Address("45.0.0.0")) + 65536 * i * 37, 24)))
               for i in range(300))  # fmt: skip
    v6 = tuple(str(ipaddress.IPv6Network((int(ipaddress.IPv6Address("2a00::")) + (i << 90), 48))) for i in range(80))
    nets = v4 + v6
    ind = IndicatorSet(addresses={OUT: ("8.8.4.4",), IN: ("9.9.9.9",)}, networks={OUT: nets, IN: nets})
    (shard,) = render_rules(feed(name="tries"), ind).shards
    docs = load(shard.content)
    assert falco_shape_errors(docs) == []
    macros = {d["macro"]: d["condition"] for d in docs if "macro" in d}
    assert macros["misp_ns_tries_0_outbound_networks"].count(" and") >= 8  # guards, several levels
    assert "fd.cnet in (" in macros["misp_ns_tries_0_inbound_networks"]
    assert all("fd.snet" not in c for n, c in macros.items() if "inbound" in n)
    rules = expand(drop_ipv6_networks(docs))
    assert len(rules) == 4
    for rule, condition in rules.items():
        assert sysdig_compile(condition) is None, rule
    # the stand-in is what lets it compile: the IPv6 CIDRs as rendered do not (sysdig 0.29)
    raw = expand(docs)["misp_ns_tries_0 outbound connection to a listed network"]
    assert sysdig_compile(raw) is not None
