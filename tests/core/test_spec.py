"""The feed spec: defaults, strict parsing, errors that name the field."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from falco_misp.errors import SpecError
from falco_misp.feed import parse as spec_module
from falco_misp.feed.model import DEFAULT_SHARD_BYTES, Direction, Rollout
from falco_misp.feed.parse import parse_feed, parse_spec
from helpers import feed

MISP = {"misp": {"url": "https://misp.example.org", "authKeySecretRef": {"name": "misp", "key": "key"}}}


def test_defaults() -> None:
    f = feed()
    s = f.spec
    assert s.source.kind == "file"
    assert len(s.filters) == 1
    fs = s.filters[0]
    assert fs.types == ("ip-src", "ip-dst")
    assert fs.to_ids is True and fs.published is None and fs.max_threat_level_id == 4
    assert s.exclusions.keep_non_global is False and s.exclusions.keep_documentation is False
    assert (s.limits.min_prefix_v4, s.limits.min_prefix_v6) == (16, 32)
    assert s.falco.directions == (Direction.INBOUND, Direction.OUTBOUND)
    assert s.falco.rollout is Rollout.HOT_RELOAD and s.falco.domains is False  # issue 13: no pod restarts by default
    assert (s.falco.metrics_port, s.falco.metrics_path, s.falco.delivery_deadline_seconds) == (8765, "/metrics", 180)
    assert s.falco.shard_bytes == DEFAULT_SHARD_BYTES
    assert s.refresh_seconds == 3600
    assert f.rule_prefix == "misp_ns_test_" and f.config_map_prefix == "misp-ns-test"
    assert (f.ref, f.tag) == ("ns/test", "misp_feed:ns/test")


def test_full_misp_spec() -> None:
    s = parse_spec(
        {
            "source": MISP,
            "filters": {
                "types": ["ip-dst", "domain"],
                "orgs": ["CIRCL"],
                "tags": {"any": ["tlp:white"], "none": ["tlp:red"]},
                "toIds": None,
                "published": True,
                "minThreatLevel": "Medium",
                "maxAge": "30d",
                "publishedWithin": "12h",
                "enforceWarninglist": True,
                "excludeDecayed": True,
            },
            "exclusions": {"cidrs": ["192.0.2.0/24"], "values": ["8.8.8.8", "Example.COM."]},
            "falco": {"directions": ["outbound"], "priority": "critical", "rollout": "HotReload", "domains": True},
            "refresh": {"interval": "15m"},
        }
    )
    fs = s.filters[0]
    assert fs.types == ("ip-dst", "domain")
    assert fs.to_ids is None and fs.published is True and fs.max_threat_level_id == 2
    assert fs.max_age_seconds == 30 * 86400 and fs.published_within_seconds == 12 * 3600
    assert fs.tags.any == ("tlp:white",) and fs.tags.none == ("tlp:red",)
    assert s.exclusions.networks == (ipaddress.ip_network("8.8.8.8/32"), ipaddress.ip_network("192.0.2.0/24"))
    assert s.exclusions.domains == ("example.com",)
    assert s.falco.directions == (Direction.OUTBOUND,) and s.falco.priority == "CRITICAL"
    assert s.falco.rollout is Rollout.HOT_RELOAD
    assert s.refresh_seconds == 900


def test_any_of_groups_inherit_top_level_fields() -> None:
    s = feed(
        filters={
            "types": ["ip-dst"],
            "orgs": ["A"],
            "minThreatLevel": "high",
            "anyOf": [{"orgs": ["B"], "tags": {"all": ["x"]}}, {"types": ["ip-src"]}],
        }
    ).spec
    assert [(g.types, g.orgs, g.tags.all, g.max_threat_level_id) for g in s.filters] == [
        (("ip-dst",), ("B",), ("x",), 1),
        (("ip-src",), ("A",), (), 1),
    ]


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"source": {}}, "spec.source", "exactly one of"),
    ({"source": {"file": {"url": "a"}, "text": {"url": "b"}}}, "spec.source", "exactly one of"),
    ({"source": {"misp": {"url": "ftp://x"}}}, "spec.source.misp.url", "http(s) URL"),
    ({"source": {"misp": {"url": "https://x", "pageSize": 0}}}, "spec.source.misp.pageSize", "between"),
    ({"filters": {"types": ["md5"]}}, "spec.filters.types[0]", "unsupported type"),
    ({"filters": {"types": []}}, "spec.filters.types", "at least one"),
    ({"filters": {"minThreatLevel": "severe"}}, "spec.filters.minThreatLevel", "high, medium, low"),
    ({"filters": {"maxAge": "30 days"}}, "spec.filters.maxAge", "duration"),
    ({"filters": {"toIds": "yes"}}, "spec.filters.toIds", "true or false"),
    ({"filters": {"tags": {"some": ["x"]}}}, "spec.filters.tags.some", "unknown field"),
    ({"filters": {"enforceWarninglist": True}}, "spec.filters.enforceWarninglist", "needs source.misp"),
    ({"filters": {"anyOf": []}}, "spec.filters.anyOf", "non-empty list"),
    ({"filters": {"anyOf": [{"org": ["x"]}]}}, "spec.filters.anyOf[0].org", "unknown field"),
    ({"exclusions": {"cidrs": ["10.0.0.1/8"]}}, "spec.exclusions.cidrs[0]", "not an IP address or CIDR"),
    ({"exclusions": {"values": ["not a value!"]}}, "spec.exclusions.values[0]", "neither"),
    ({"limits": {"minPrefixV4": 4}}, "spec.limits.minPrefixV4", "between 8 and 32"),
    ({"limits": {"maxDomains": 5000}}, "spec.limits.maxDomains", "between 0 and 1000"),
    ({"falco": {"directions": ["sideways"]}}, "spec.falco.directions[0]", "inbound or outbound"),
    ({"falco": {"priority": "LOUD"}}, "spec.falco.priority", "expected one of"),
    ({"falco": {"rollout": "Sometimes"}}, "spec.falco.rollout", "Restart, HotReload or None"),
    ({"falco": {"tags": ["bad tag"]}}, "spec.falco.tags[0]", "invalid value"),
    ({"falco": {"namespace": "Falco_NS"}}, "spec.falco.namespace", "invalid value"),
    ({"refresh": {"interval": "30s"}}, "spec.refresh.interval", "at least 1m"),
    ({"sauce": {}}, "spec.sauce", "unknown field"),
]


@pytest.mark.parametrize(("spec", "field", "words"), BAD, ids=[b[1] for b in BAD])
def test_bad_spec_names_the_field(spec: dict[str, Any], field: str, words: str) -> None:
    body: dict[str, Any] = {"source": {"file": {"url": "x.json"}}}
    body.update(spec)
    with pytest.raises(SpecError) as err:
        parse_spec(body)
    assert err.value.field == field
    assert words in err.value.message


def test_manifest_checks() -> None:
    with pytest.raises(SpecError, match="kind"):
        parse_feed({"kind": "ConfigMap", "metadata": {"name": "x"}, "spec": {}})
    with pytest.raises(SpecError, match=r"metadata\.name"):
        parse_feed({"metadata": {"name": "Bad_Name"}, "spec": {"source": {"file": {"url": "x"}}}})
    f = parse_feed({"metadata": {"name": "a-b.c"[:3]}, "spec": {"source": {"file": {"url": "x"}}}, "status": {}})
    assert f.rule_prefix == "misp_default_a_b_"


# ------------------------------------------------------------------ text lists take no filters (issue 11 item 1)
TEXT = {"text": {"url": "https://lists.example/ipsum.txt", "types": ["ip-dst", "domain"], "minScore": 3}}
# one value per spec.filters field; every one of them is refused on a text list
TEXT_FILTER_VALUES: dict[str, Any] = {
    "types": ["ip-dst"],
    "orgs": ["CIRCL"],
    "categories": ["Network activity"],
    "tags": {"none": ["tlp:red"]},
    "toIds": True,
    "published": True,
    "minThreatLevel": "high",
    "maxAge": "30d",
    "publishedWithin": "7d",
    "enforceWarninglist": True,
    "excludeDecayed": True,
    "anyOf": [{"orgs": ["CIRCL"]}],
}


def test_every_filter_field_is_listed_as_unsupported_on_text() -> None:
    assert set(TEXT_FILTER_VALUES) == set(spec_module.FILTER_FIELDS) == set(spec_module.TEXT_UNSUPPORTED_FILTERS)
    for key, value in TEXT_FILTER_VALUES.items():  # each name is a real filter field (a MISP source takes it)
        parse_spec({"source": MISP, "filters": {key: value}})


@pytest.mark.parametrize(("key", "value"), TEXT_FILTER_VALUES.items(), ids=list(TEXT_FILTER_VALUES))
def test_text_lists_refuse_filters_naming_the_field(key: str, value: Any) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"source": TEXT, "filters": {key: value}})
    assert caught.value.field == f"spec.filters.{key}"
    hint = {"types": "spec.source.text.types", "enforceWarninglist": "needs source.misp",
            "excludeDecayed": "needs source.misp"}.get(key, "cannot apply to source.text")  # fmt: skip
    assert hint in caught.value.message


def test_text_list_filters_are_its_types() -> None:
    for filters in (None, {}, {"toIds": None}):
        spec = parse_spec({"source": TEXT, **({} if filters is None else {"filters": filters})})
        assert len(spec.filters) == 1
        only = spec.filters[0]
        assert only.types == ("ip-dst", "domain") and only.to_ids is None and not only.orgs and not only.tags
        assert spec.types == frozenset({"ip-dst", "domain"})
    with pytest.raises(SpecError, match=r"spec\.filters\.typo: unknown field"):
        parse_spec({"source": TEXT, "filters": {"typo": 1}})


def test_exported_and_static_feeds_still_take_local_filters() -> None:
    for source in ({"file": {"url": "x.json"}}, {"mispFeed": {"url": "https://feeds.example/circl/"}}):
        spec = parse_spec({"source": source, "filters": {"orgs": ["CIRCL"], "tags": {"any": ["tlp:white"]}}})
        assert spec.filters[0].orgs == ("CIRCL",) and spec.filters[0].tags.any == ("tlp:white",)


@pytest.mark.parametrize("prefix", ["ipsum", "outbound", "misp", "misp-", "misp-a_b", "misp-a.b", "misp-" + "a" * 44])
def test_config_map_prefixes_start_with_misp_and_map_to_rule_names(prefix: str) -> None:
    # the prefix names the Falco rules too: every name we emit starts with misp_ (never an upstream name)
    with pytest.raises(SpecError) as caught:
        parse_spec({"source": {"text": {"url": "x"}}, "falco": {"configMapPrefix": prefix}}, "spec")
    assert caught.value.field == "spec.falco.configMapPrefix"
    assert "expected misp-" in str(caught.value)
