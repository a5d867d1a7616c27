"""Falco and Falcosidekick alert bodies -> Alert values, rule names -> feed prefix and direction (pure, tables)."""

from __future__ import annotations

from typing import Any

import pytest
from reportkit import ALERT_EPOCH, OUTBOUND, falco_alert, sidekick_alert

from falco_misp.feed.model import Direction
from falco_misp.reporting.alerts import (
    MAX_ALERTS_PER_BODY,
    AlertError,
    RuleRef,
    Sender,
    alert_timestamp,
    parse_address,
    parse_alerts,
    parse_rule,
    remote_domain,
)

NOW = float(ALERT_EPOCH + 60)


def test_falco_alert() -> None:
    (alert,) = parse_alerts(falco_alert(), NOW)
    assert alert.rule == f"misp_security_intel_0 {OUTBOUND}"
    assert alert.sender is Sender.FALCO and alert.uuid == ""
    assert alert.time == pytest.approx(ALERT_EPOCH + 0.123456)
    assert (alert.hostname, alert.priority) == ("node-1", "Warning")
    assert alert.tags == ("misp", "misp_feed:security/intel", "mitre_command_and_control", "network")
    assert alert.fields["fd.sip"] == "45.0.0.7"
    assert alert.fields["fd.sport"] == "443"  # numbers become strings
    assert "evt.time" not in alert.fields  # only the fields matching and context need


def test_falcosidekick_alert() -> None:
    (alert,) = parse_alerts(sidekick_alert("45.0.0.8"), NOW)
    assert alert.sender is Sender.FALCOSIDEKICK
    assert alert.uuid == "6f0b4a4e-8d0b-4a8b-9a86-7a2a8cd5c1e2"
    assert alert.fields["fd.sip"] == "45.0.0.8"


def test_a_list_of_alerts() -> None:
    alerts = parse_alerts([falco_alert("45.0.0.1"), sidekick_alert("45.0.0.2")], NOW)
    assert [a.fields["fd.sip"] for a in alerts] == ["45.0.0.1", "45.0.0.2"]


def test_long_values_are_cut_and_missing_values_dropped() -> None:
    (alert,) = parse_alerts(falco_alert(**{"proc.cmdline": "x" * 5000, "k8s.pod.name": "<NA>", "user.name": None}), NOW)
    assert len(alert.fields["proc.cmdline"]) == 512
    assert "k8s.pod.name" not in alert.fields and "user.name" not in alert.fields


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("a string", "expected a JSON object"),
        (42, "expected a JSON object"),
        (None, "expected a JSON object"),
        ({}, "alert.rule: expected the rule name"),
        ({"rule": ""}, "alert.rule"),
        ({"rule": 7}, "alert.rule"),
        ({"rule": "r" * 600}, "alert.rule"),
        ({"rule": "r", "output_fields": []}, "alert.output_fields: expected an object"),
        ({"rule": "r", "tags": "misp"}, "alert.tags: expected a list"),
        ([], "expected 1 to 100 alerts"),
        ([{"rule": "r"}] * (MAX_ALERTS_PER_BODY + 1), "expected 1 to 100 alerts"),
        ([{"rule": "r"}, "x"], "alerts[1]: expected a JSON object"),
    ],
)
def test_wrong_shapes_are_rejected(body: Any, error: str) -> None:
    with pytest.raises(AlertError, match=error.replace("[", r"\[").replace("]", r"\]")):
        parse_alerts(body, NOW)


def test_minimal_alert_and_unusable_hostname() -> None:
    (alert,) = parse_alerts({"rule": "Terminal shell in container", "hostname": "bad host;rm"}, NOW)
    assert (alert.fields, alert.tags, alert.hostname, alert.time) == ({}, None, "", NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-05T12:00:00Z", ALERT_EPOCH),
        ("2026-01-05T12:00:00.5Z", ALERT_EPOCH + 0.5),
        ("2026-01-05T12:00:00.123456789Z", ALERT_EPOCH + 0.123456),
        ("2026-01-05T13:00:00+01:00", ALERT_EPOCH),
        ("2026-01-05 12:00:00", NOW),  # not RFC 3339
        ("2026-13-05T12:00:00Z", NOW),  # no 13th month
        ("2027-01-05T12:00:00Z", NOW),  # a year ahead: a wrong clock, not the future
        (1767614400, NOW),
        (None, NOW),
    ],
)
def test_times(value: Any, expected: float) -> None:
    assert alert_timestamp(value, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (f"misp_intel_0 {OUTBOUND}", RuleRef("misp_intel", 0, Direction.OUTBOUND, "address")),
        ("misp_intel_eu_12 outbound connection to a listed network",
         RuleRef("misp_intel_eu", 12, Direction.OUTBOUND, "network")),
        ("misp_feed_2_3 inbound connection from a listed address",
         RuleRef("misp_feed_2", 3, Direction.INBOUND, "address")),
        ("misp_x_0 inbound connection from a listed network", RuleRef("misp_x", 0, Direction.INBOUND, "network")),
        ("misp_dns_1 outbound connection to a listed domain", RuleRef("misp_dns", 1, Direction.OUTBOUND, "domain")),
        # the default prefix misp-<namespace>-<name>, a configMapPrefix, a prefix ending in digits
        (f"misp_team_a_intel_0 {OUTBOUND}", RuleRef("misp_team_a_intel", 0, Direction.OUTBOUND, "address")),
        (f"ipsum_2 {OUTBOUND}", RuleRef("ipsum", 2, Direction.OUTBOUND, "address")),
        (f"intel_v2_1_15 {OUTBOUND}", RuleRef("intel_v2_1", 15, Direction.OUTBOUND, "address")),
        (f"_0 {OUTBOUND}", None),
        (f"misp-intel_0 {OUTBOUND}", None),
        ("misp_intel outbound connection to a listed address", None),  # no shard number
        ("misp_intel_0 inbound connection to a listed address", None),  # inbound is "from"
        ("misp_intel_0 outbound connection to a listed address!", None),
        ("Terminal shell in container", None),
        ("Outbound Connection to C2 Servers", None),
        ("MISP_intel_0 outbound connection to a listed address", None),
    ],
)  # fmt: skip
def test_rule_names(rule: str, expected: RuleRef | None) -> None:
    assert parse_rule(rule) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45.0.0.7", "45.0.0.7"),
        (" 45.0.0.7 ", "45.0.0.7"),
        ("2001:db8::7", "2001:db8::7"),
        ("::ffff:45.0.0.7", "45.0.0.7"),  # unmapped, like the rules
        ("fe80::1%eth0", None),
        ("45.0.0.0/24", None),
        ("45.0.0.7/32", None),
        ("::ffff:45.0.0.7/128", None),
        ("2001:db8::7%0", None),
        ("1.2.3.4) or (proc.name=sh", None),
        ("2001:db8:0:0:0:0:0:0:7", None),
        ("a" * 5000, None),
        ("045.0.0.7", None),
        ("<NA>", None),
        ("", None),
        (None, None),
    ],
)
def test_addresses(text: str | None, expected: str | None) -> None:
    address = parse_address(text)
    assert (str(address) if address else None) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("evil.example.org", "evil.example.org"),
        ("Evil.Example.ORG.", "evil.example.org"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("bücher.example", "xn--bcher-kva.example"),  # Unicode in the alert, punycode in the rules
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("*.evil.example", None),
        ("ev_il.example", None),
        ("localhost", None),
        (None, None),
    ],
)
def test_remote_domains_are_read_like_the_rules(name: str | None, expected: str | None) -> None:
    body = falco_alert()
    body["output_fields"]["fd.sip.name"] = name
    (alert,) = parse_alerts(body, NOW)
    assert remote_domain(alert) == expected
