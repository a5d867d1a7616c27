"""The administrator's policy, pure: Falco namespaces, ceilings, the host allow-list and address classes (issue 15)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from falco_misp.errors import SpecError
from falco_misp.feed.policy import (
    ADDRESS_NOT_ALLOWED,
    FALCO_NAMESPACE_NOT_ALLOWED,
    HOST_NOT_ALLOWED,
    OVER_CEILING,
    UNRESTRICTED,
    Ceilings,
    Egress,
    Policy,
    TargetRule,
    address_refused,
    check_feed,
    check_rendered,
    check_url,
    parse_policy,
    within_ceilings,
)
from helpers import feed

TEAMS = Policy(
    targets=(
        TargetRule(feed_namespaces=("security",), falco_namespaces=("*",)),
        TargetRule(feed_namespaces=("team-*",), falco_namespaces=("falco-teams",)),
    )
)


def _feed(namespace: str = "ns", **spec: Any) -> Any:
    f = feed({"source": {"text": {"url": "https://lists.example.org/ips.txt"}}, **spec})
    return type(f)(name=f.name, namespace=namespace, spec=f.spec)


@pytest.mark.parametrize(
    ("namespace", "falco", "refused"),
    [
        ("security", "falco", False),
        ("security", "anything", False),
        ("team-a", "falco-teams", False),
        ("team-a", "falco", True),  # a team may not write into the platform's Falco
        ("other", "falco", True),  # no rule names the namespace at all
    ],
)
def test_feed_namespaces_target_only_the_falco_namespaces_the_policy_names(
    namespace: str, falco: str, refused: bool
) -> None:
    got = check_feed(TEAMS, _feed(namespace, falco={"namespace": falco}))
    if not refused:
        assert got is None
        return
    assert got is not None and got.reason == FALCO_NAMESPACE_NOT_ALLOWED
    assert repr(falco) in got.message and repr(namespace) in got.message


def test_without_targets_any_namespace_may_write_anywhere() -> None:
    assert check_feed(Policy(), _feed("anyone", falco={"namespace": "kube-system"})) is None


CEILINGS = Policy(
    ceilings=Ceilings(max_indicators=1000, max_networks=10, max_domains=5, min_prefix_v4=20, min_prefix_v6=48)
)


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"maxIndicators": 1001}, "spec.limits.maxIndicators"),
        ({"minPrefixV4": 19}, "spec.limits.minPrefixV4"),
        ({"minPrefixV6": 40}, "spec.limits.minPrefixV6"),
    ],
)
def test_a_feed_asking_beyond_a_ceiling_is_refused_naming_the_field(limits: dict[str, int], field: str) -> None:
    ok = {"maxIndicators": 1000, "minPrefixV4": 20, "minPrefixV6": 48}
    assert check_feed(CEILINGS, _feed(limits=ok)) is None
    got = check_feed(CEILINGS, _feed(limits={**ok, **limits}))
    assert got is not None and got.reason == OVER_CEILING and got.message.startswith(field)


def test_max_domains_counts_only_when_domains_are_emitted() -> None:
    ok = {"maxIndicators": 1000, "minPrefixV4": 20, "minPrefixV6": 48, "maxDomains": 50}
    assert check_feed(CEILINGS, _feed(limits=ok)) is None  # falco.domains is off: no domain is ever emitted
    got = check_feed(CEILINGS, _feed(limits=ok, falco={"domains": True}))
    assert got is not None and got.reason == OVER_CEILING and "maxDomains" in got.message


def test_the_rendered_rules_are_checked_against_the_ceilings() -> None:
    counts = {"inbound_networks": 6, "outbound_networks": 4, "outbound_domains": 5, "outbound_addresses": 900}
    assert check_rendered(CEILINGS, counts, 915) is None
    over = check_rendered(CEILINGS, {**counts, "outbound_networks": 5}, 916)
    assert over is not None and over.reason == OVER_CEILING and "11 networks" in over.message
    assert check_rendered(CEILINGS, counts, 1001) is not None
    assert check_rendered(Policy(), {"inbound_networks": 10**6}, 10**6) is None


ALLOW = Policy(egress=Egress(allowed_hosts=("misp.example.org", "*.feeds.example.org", "192.0.2.7")))


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://misp.example.org/", True),
        ("https://MISP.example.org./x", True),
        ("https://a.feeds.example.org/manifest.json", True),
        ("https://a.b.feeds.example.org/x", True),
        ("https://feeds.example.org/x", False),  # *.domain is subdomains only
        ("https://evilfeeds.example.org/x", False),
        ("https://misp.example.org.evil.net/", False),
        ("http://192.0.2.7:8080/list.txt", True),
        ("http://192.0.2.8/list.txt", False),
        ("https://user:pw@other.example.org/", False),
    ],
)
def test_the_host_allow_list(url: str, allowed: bool) -> None:
    why = check_url(ALLOW, url)
    assert (why is None) is allowed
    if not allowed:
        assert why is not None and "allow-list" in why and "pw" not in why


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("0.0.0.0", True),
        ("::", True),
        ("169.254.169.254", True),  # cloud metadata
        ("fe80::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped loopback is loopback
        ("::ffff:169.254.169.254", True),
        ("224.0.0.1", True),
        ("10.0.0.5", False),  # in-cluster MISP: private ranges allowed by default
        ("192.168.1.1", False),
        ("fd00::1", False),
        ("93.184.216.34", False),
    ],
)
def test_address_classes_refused_by_default(address: str, refused: bool) -> None:
    why = address_refused(Policy(), ipaddress.ip_address(address), "h")
    assert (why is not None) is refused


def test_address_classes_can_be_allowed_and_private_refused() -> None:
    lo, meta, private = (ipaddress.ip_address(a) for a in ("127.0.0.1", "169.254.169.254", "10.1.2.3"))
    assert address_refused(Policy(egress=Egress(allow_loopback=True)), lo, "h") is None
    assert address_refused(Policy(egress=Egress(allow_loopback=True)), meta, "h") is not None
    assert address_refused(Policy(egress=Egress(allow_link_local=True)), meta, "h") is None
    assert address_refused(Policy(egress=Egress(allow_private=False)), private, "h") is not None
    assert address_refused(UNRESTRICTED, lo, "h") is None


def test_a_literal_address_in_a_source_url_is_refused_before_any_fetch() -> None:
    got = check_feed(Policy(), _feed(source={"text": {"url": "http://169.254.169.254/latest/meta-data/"}}))
    assert got is not None and got.reason == ADDRESS_NOT_ALLOWED
    assert got.message.startswith("spec.source.text.url")
    got = check_feed(ALLOW, _feed(source={"mispFeed": {"url": "https://elsewhere.example.net/feed/"}}))
    assert got is not None and got.reason == HOST_NOT_ALLOWED and got.message.startswith("spec.source.mispFeed.url")


def test_parse_policy_reads_the_chart_document() -> None:
    doc = {
        "targets": [{"feedNamespaces": ["*"], "falcoNamespaces": ["falco"]}],
        "ceilings": {"maxIndicators": 500000, "maxNetworks": 2000, "minPrefixV4": 16},
        "egress": {"allowedHosts": ["misp.example.org", "*.example.net"], "allowLoopback": True},
    }
    got = parse_policy(doc)
    assert got.targets == (TargetRule(("*",), ("falco",)),)
    assert got.ceilings == Ceilings(max_indicators=500000, max_networks=2000, min_prefix_v4=16)
    assert got.egress == Egress(allowed_hosts=("misp.example.org", "*.example.net"), allow_loopback=True)
    assert parse_policy({}) == Policy() and parse_policy(None) == Policy()


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"target": []}, "target"),
        ({"targets": [{"feedNamespaces": [], "falcoNamespaces": ["falco"]}]}, "targets[0].feedNamespaces"),
        ({"ceilings": {"maxIndicators": 0}}, "ceilings.maxIndicators"),
        ({"ceilings": {"minPrefixV4": 33}}, "ceilings.minPrefixV4"),
        ({"egress": {"allowedHosts": ["https://misp.example.org"]}}, "egress.allowedHosts"),
        ({"egress": {"allowLoopback": "yes"}}, "egress.allowLoopback"),
    ],
)
def test_parse_policy_names_the_bad_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_policy(doc)
    assert err.value.field == field


def test_limits_left_unset_take_the_ceilings_and_only_an_explicit_ask_is_refused() -> None:
    unset = _feed()  # limits default: maxIndicators 1,000,000, minPrefixV4 16
    assert check_feed(CEILINGS, unset) is not None
    tightened = within_ceilings(CEILINGS, unset, set_limits=())
    limits = tightened.spec.limits
    assert (limits.max_indicators, limits.min_prefix_v4, limits.min_prefix_v6, limits.max_domains) == (1000, 20, 48, 5)
    assert check_feed(CEILINGS, tightened) is None
    asked = _feed(limits={"maxIndicators": 5000})
    assert check_feed(CEILINGS, within_ceilings(CEILINGS, asked, set_limits=("maxIndicators",))) is not None
    assert within_ceilings(Policy(), unset, ()) is unset
