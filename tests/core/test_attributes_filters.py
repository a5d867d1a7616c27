"""Parsing real MISP JSON into attributes, and the local filters (static feeds, exports)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from falco_misp.feed.model import Direction, FilterSet, TagFilter
from falco_misp.pipeline import fetch_and_render
from falco_misp.sources.attributes import attributes_from_document, attributes_from_text
from falco_misp.sources.filters import build_restsearch_params, matches, select
from falco_misp.sources.locations import FetchContext
from helpers import attr, feed

NOW = 1_800_000_000


def load(reference: Path, name: str) -> object:
    return json.loads((reference / name).read_text())


def test_event_with_objects(reference: Path) -> None:
    attrs = list(attributes_from_document(load(reference, "misp-tests/misp_indicators_test.json")))
    ip_src = [a for a in attrs if a.type == "ip-src"]
    assert {a.value for a in ip_src} == {"1.2.3.4", "8.8.8.8"}  # 8.8.8.8 only inside an asn object
    assert all(a.org == "ORGNAME_387" and a.threat_level == 2 and a.event_id == "1255" for a in attrs)
    first = next(a for a in attrs if a.type == "ip-dst|port")
    assert first.value == "12.34.56.78|2510" and first.to_ids is True and first.timestamp > 0
    assert 'misp-galaxy:mitre-attack-pattern="DLL Injection"' in first.tags  # event tags inherited


def test_bare_event_and_list_of_events(reference: Path) -> None:
    bare = load(reference, "pymisp-tests/existing_event.json")  # no {"Event": ...} wrapper
    attrs = list(attributes_from_document(bare))
    assert sum(a.type == "domain" for a in attrs) == 19 and sum(a.type == "ip-dst" for a in attrs) == 12
    assert {a.org for a in attrs} == {"CIRCL"}
    both = list(attributes_from_document([bare, load(reference, "pymisp-tests/to_delete1.json")]))
    assert len(both) > len(attrs)


def test_restsearch_answer_shape() -> None:
    doc = {
        "response": {
            "Attribute": [
                {
                    "id": "7",
                    "event_id": "3",
                    "type": "ip-dst",
                    "value": "8.8.4.4",
                    "to_ids": "1",
                    "timestamp": "1700000000",
                    "Event": {"id": "3", "info": "x", "orgc_id": "2", "uuid": "u", "threat_level_id": "1"},
                    "Tag": [{"name": "tlp:white"}],
                },
                {"type": "ip-dst", "value": "8.8.8.8", "deleted": True},
                {"value": 5},
            ]
        }
    }
    attrs = list(attributes_from_document(doc))
    assert len(attrs) == 1
    a = attrs[0]
    assert (a.event_id, a.org_id, a.threat_level, a.to_ids, a.tags) == ("3", "2", 1, True, ("tlp:white",))


@pytest.mark.parametrize("doc", [{"foo": 1}, "text", 42, [1, 2]])
def test_not_an_export(doc: object) -> None:
    with pytest.raises(ValueError, match="MISP"):
        list(attributes_from_document(doc))


def test_text_list_ipsum_format() -> None:
    rejected: Counter[str] = Counter()
    text = "# header\n8.8.4.4\t7\n8.8.8.8\t2\n\n9.9.9.9 # no score\n1.1.1.1\tx\n1.0.0.1 3 extra\n"
    got = list(attributes_from_text(text, ("ip-dst",), 3, rejected))
    assert [a.value for a in got] == ["8.8.4.4"]
    assert rejected == {"invalid_line": 3}
    rejected.clear()
    got = list(attributes_from_text(text, ("ip-src", "ip-dst"), None, rejected))
    assert [(a.value, a.type) for a in got][:2] == [("8.8.4.4", "ip-src"), ("8.8.4.4", "ip-dst")]
    assert len(got) == 6 and rejected == {"invalid_line": 2}


def test_threat_level_is_a_minimum() -> None:
    f = FilterSet(max_threat_level_id=3)  # low: High, Medium, Low
    assert [matches(attr("8.8.4.4", threat_level=lvl), f, NOW) for lvl in (1, 2, 3, 4)] == [True, True, True, False]


def test_tags_any_all_none_with_wildcards() -> None:
    f = FilterSet(tags=TagFilter(any=["tlp:%"], all=["type:OSINT"], none=["%red%"]))
    assert matches(attr("x", tags=("TLP:WHITE", "type:osint")), f, NOW)
    assert not matches(attr("x", tags=("tlp:white",)), f, NOW)
    assert not matches(attr("x", tags=("tlp:red", "type:OSINT")), f, NOW)
    assert not matches(attr("x", tags=("type:OSINT",)), f, NOW)


def test_time_and_flags() -> None:
    f = FilterSet(max_age_seconds=100, published_within_seconds=50, published=True, to_ids=True)
    ok = attr("x", ts=NOW - 10, publish_timestamp=NOW - 10)
    assert matches(ok, f, NOW)
    assert not matches(attr("x", ts=NOW - 101, publish_timestamp=NOW), f, NOW)
    assert not matches(attr("x", ts=NOW, publish_timestamp=NOW - 51), f, NOW)
    assert not matches(attr("x", ts=NOW, publish_timestamp=NOW, published=False), f, NOW)
    assert not matches(attr("x", ts=NOW, publish_timestamp=NOW, to_ids=False), f, NOW)
    assert matches(attr("x", to_ids=False), FilterSet(to_ids=None), NOW)


def test_orgs_categories_and_any_of() -> None:
    spec = feed(filters={"anyOf": [{"orgs": ["CIRCL"], "types": ["ip-dst"]}, {"orgs": ["7"], "types": ["ip-src"]}]})
    attrs = [
        attr("1", "ip-dst", org="circl"),
        attr("2", "ip-src", org="CIRCL"),
        attr("3", "ip-src", org="Other", org_id="7"),
        attr("4", "ip-dst", org="Other", org_id="7"),
    ]
    assert [a.value for a in select(attrs, spec.spec.filters, NOW)] == ["1", "3"]
    assert not matches(attr("x", category="Payload delivery"), FilterSet(categories=("Network activity",)), NOW)


def test_restsearch_params() -> None:
    f = FilterSet(
        types=("ip-dst",),
        orgs=("CIRCL",),
        categories=("Network activity",),
        tags=TagFilter(any=("a",), none=("b",)),
        to_ids=True,
        published=True,
        max_threat_level_id=2,
        max_age_seconds=86400,
        published_within_seconds=3600,
        enforce_warninglist=True,
        exclude_decayed=True,
    )
    assert build_restsearch_params(f, NOW) == {
        "type_attribute": ["ip-dst"],
        "include_event_tags": True,
        "org": ["CIRCL"],
        "category": ["Network activity"],
        "tags": {"OR": ["a"], "NOT": ["b"]},
        "to_ids": 1,
        "published": True,
        "threat_level_id": ["1", "2"],
        "timestamp": NOW - 86400,
        "publish_timestamp": NOW - 3600,
        "enforce_warninglist": True,
        "exclude_decayed": True,
    }
    assert build_restsearch_params(FilterSet(to_ids=None), NOW) == {
        "type_attribute": ["ip-src", "ip-dst"],
        "include_event_tags": True,
    }


def test_a_text_list_applies_exclusions_and_limits(tmp_path: Path) -> None:
    """What a text list can carry is applied (issue 11 item 1): its types, minScore, exclusions and limits."""
    lines = ["45.0.0.1\t9", "45.0.0.2\t9", "45.0.0.4\t9", "45.0.1.7\t9", "46.0.0.0/8\t9", "10.0.0.1\t9", "45.0.0.3\t1"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    text = {"text": {"url": "list.txt", "types": ["ip-dst"], "minScore": 2}}
    f = feed(source=text, exclusions={"cidrs": ["45.0.1.0/24"]}, limits={"maxIndicators": 2})
    got = fetch_and_render(f, FetchContext(now=NOW, base_dir=tmp_path)).indicators
    assert len(got.addresses[Direction.OUTBOUND]) == 2 and Direction.INBOUND not in got.addresses  # ip-dst only
    assert set(got.addresses[Direction.OUTBOUND]) <= {"45.0.0.1", "45.0.0.2", "45.0.0.4"}  # 45.0.0.3 scores 1
    assert got.rejected == {"allowlisted": 1, "private": 1, "too_broad": 1, "over_limit": 1}
