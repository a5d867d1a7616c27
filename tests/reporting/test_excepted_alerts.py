"""An excepted connection raises no alert, so it is matched to no MISP attribute and becomes no sighting; one the
exception does not cover still alerts and is matched. The rules are those rendered for the feed; which of them fire
for an event is modelled the way Falco builds and evaluates each rule's condition with its exceptions
(tests/falcomodel.py); each alert goes through the operator's own parsing and matching."""

from __future__ import annotations

from typing import Any

import pytest
from reportkit import ALERT_EPOCH, attribute, falco_alert, make_feed, reporting_feed

from falco_misp.pipeline import render_attributes
from falco_misp.reporting.alerts import parse_alerts
from falco_misp.reporting.matching import FeedRegistry, Outcome, match_alert
from falcomodel import evaluate, with_exceptions
from rulecheck import expand, load

EXCEPTIONS = [
    # the vulnerability scanner in its namespace may reach anything on 443
    {"name": "scanner", "fields": ["proc.name", "k8s.ns.name", "fd.sport"], "comps": ["=", "=", "in"],
     "values": [["nessusd", "security", [443, 8443]]]},
    # the company's egress proxy range, outbound only
    {"name": "proxy", "fields": ["fd.cnet"], "comps": ["in"], "values": [[["10.20.0.0/16"]]],
     "appliesTo": {"directions": ["outbound"]}},
]  # fmt: skip
ATTRIBUTES = [
    attribute("45.0.0.7", "ip-dst", 1),
    attribute("45.1.0.0/24", "ip-dst", 2),
    attribute("46.0.0.1", "ip-src", 3),
]
FEED = make_feed(falco={"exceptions": EXCEPTIONS})
REGISTRY = FeedRegistry().with_feed(reporting_feed(FEED, ATTRIBUTES))
BASE = {"evt.dir": "<", "fd.typechar": "4", "fd.l4proto": "tcp", "proc.exepath": "/usr/bin/curl", "user.name": "root"}


def firing_rules(event: dict[str, str]) -> list[str]:
    """The rules of the feed whose condition, with Falco's exceptions appended, matches ``event``."""
    fired: list[str] = []
    for shard in render_attributes(FEED, iter(ATTRIBUTES)).bundle.shards:
        docs = load(shard.content)
        rules = {d["rule"]: d for d in docs if "rule" in d}
        fired += [name for name, cond in expand(docs).items() if evaluate(with_exceptions(cond, rules[name]), event)]
    return fired


def outbound(remote: str, **fields: str) -> dict[str, str]:
    return {**BASE, "evt.type": "connect", "fd.sip": remote, "fd.sport": "443", "fd.cip": "10.0.0.5",
            "fd.cport": "51234", "proc.name": "curl", "k8s.ns.name": "shop", **fields}  # fmt: skip


def inbound(remote: str, **fields: str) -> dict[str, str]:
    return {**BASE, "evt.type": "accept", "fd.cip": remote, "fd.cport": "51234", "fd.sip": "10.0.0.5",
            "fd.sport": "8443", "proc.name": "nginx", "k8s.ns.name": "shop", **fields}  # fmt: skip


def sightings_for(event: dict[str, str]) -> list[str]:
    """The MISP attribute uuids the alerts of ``event`` are matched to (what would be sighted)."""
    uuids: list[str] = []
    for rule in firing_rules(event):
        fields: dict[str, Any] = {k: v for k, v in event.items() if k.startswith(("fd.", "proc.", "k8s.", "evt.type"))}
        remote = event["fd.cip"] if " inbound " in rule else event["fd.sip"]
        (alert,) = parse_alerts(falco_alert(remote, rule=rule, **fields), float(ALERT_EPOCH + 60))
        result = match_alert(alert, REGISTRY)
        assert result.outcome is Outcome.MATCHED, rule
        uuids += [a.uuid for hit in result.hits for a in hit.attributes]
    return uuids


@pytest.mark.parametrize(
    ("event", "sighted"),
    [
        (outbound("45.0.0.7"), 1),  # curl from the shop: alert, matched
        (outbound("45.0.0.7", **{"proc.name": "nessusd", "k8s.ns.name": "security"}), 0),  # the scanner: excepted
        (outbound("45.0.0.7", **{"proc.name": "nessusd", "k8s.ns.name": "shop"}), 1),  # every field must match
        (outbound("45.0.0.7", **{"proc.name": "nessusd", "k8s.ns.name": "security", "fd.sport": "22"}), 1),
        (outbound("45.1.0.9", **{"proc.name": "nessusd", "k8s.ns.name": "security", "fd.sport": "8443"}), 0),
        (outbound("45.1.0.9", **{"fd.cip": "10.20.3.4"}), 0),  # from the proxy range: excepted outbound
        (outbound("45.1.0.9", **{"fd.cip": "10.21.3.4"}), 1),
        (inbound("46.0.0.1"), 1),  # a listed address connecting in: alert
        (inbound("46.0.0.1", **{"proc.name": "nessusd", "k8s.ns.name": "security"}), 0),  # accept on 8443, excepted
    ],
)
def test_an_excepted_connection_is_matched_to_no_sighting(event: dict[str, str], sighted: int) -> None:
    assert len(sightings_for(event)) == sighted


def test_without_the_exceptions_every_event_alerts() -> None:
    """The modelled evaluation has teeth: the same events fire the same rules once the exceptions are gone."""
    plain = make_feed()
    event = outbound("45.0.0.7", **{"proc.name": "nessusd", "k8s.ns.name": "security"})
    (shard,) = render_attributes(plain, iter(ATTRIBUTES)).bundle.shards
    fired = [name for name, cond in expand(load(shard.content)).items() if evaluate(cond, event)]
    assert fired == ["misp_security_intel_0 outbound connection to a listed address"]
    assert firing_rules(event) == []
