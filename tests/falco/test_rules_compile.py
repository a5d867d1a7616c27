"""Rendered rules have Falco's shape and every rule's expanded condition compiles with sysdig's filter compiler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from falco_misp.attributes import attributes_from_document
from falco_misp.pipeline import build_result
from helpers import REPO, feed
from rulecheck import drop_ipv6_networks, expand, falco_shape_errors, load, sysdig_compile

pytestmark = pytest.mark.sysdig

ALL_TYPES = ["ip-src", "ip-dst", "ip-src|port", "ip-dst|port", "domain", "hostname", "domain|ip"]


def _render(doc: object, **spec: object) -> list[bytes]:
    f = feed(filters={"types": ALL_TYPES}, falco={"domains": True}, exclusions={"keepDocumentation": True}, **spec)
    return [s.content for s in build_result(f, attributes_from_document(doc)).bundle.shards]


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
