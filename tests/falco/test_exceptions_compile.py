"""Rules with exceptions compile: each rule's condition, lists and macros expanded, with its exceptions turned into the
condition Falco builds from them (``and not (( f1 c1 v1 and ...) or ...)``: tests/falcomodel.py), passes Debian's
sysdig filter compiler, for every allowed field and operator, on every kind and direction of rule."""

from __future__ import annotations

from typing import Any

import pytest

from falco_misp.errors import SpecError
from falco_misp.feed.exceptions import FIELDS
from falco_misp.pipeline import render_attributes
from falco_misp.sources.attributes import attributes_from_document
from falcomodel import evaluate, with_exceptions
from helpers import feed
from rulecheck import drop_ipv6_networks, expand, falco_shape_errors, load, sysdig_compile

pytestmark = pytest.mark.sysdig

ALL_TYPES = ["ip-src", "ip-dst", "ip-src|port", "ip-dst|port", "domain", "hostname", "domain|ip"]
# One value per field (sysdig 0.29 reads no IPv6 CIDR: the network fields get IPv4 ones), per operator below.
SAMPLE = {
    "fd.sport": "443", "fd.cport": "1", "fd.lport": "2", "fd.rport": "3", "fd.sip": "45.0.0.1", "fd.cip": "45.0.0.2",
    "fd.lip": "::1", "fd.rip": "2001:db8::7", "fd.snet": "45.1.0.0/16", "fd.cnet": "45.2.0.0/16",
    "fd.lnet": "10.0.0.0/8", "fd.rnet": "192.0.2.0/24", "fd.l4proto": "tcp", "proc.name": "nessusd",
    "proc.pname": "bash", "proc.exepath": "/usr/bin/curl", "user.name": "root",
    "container.image.repository": "ghcr.io/acme/scanner", "k8s.ns.name": "kube-system", "k8s.pod.name": "scanner-0",
}  # fmt: skip
EVENT = {
    "Event": {
        "info": "all kinds",
        "Attribute": [
            {"type": "ip-src", "value": "8.8.4.4"},
            {"type": "ip-src", "value": "9.9.0.0/16"},
            {"type": "ip-dst|port", "value": "1.1.1.1|53"},
            {"type": "ip-dst", "value": "1.0.0.0/24"},
            {"type": "domain", "value": "c2.example.net"},
        ],
    }
}


def exceptions_for_every_operator() -> list[dict[str, Any]]:
    """Exceptions that together use every field with every operator it allows (one field per exception row)."""
    out: list[dict[str, Any]] = []
    for field, kind in FIELDS.items():
        value = SAMPLE[field]
        for comp in kind.comps:
            cell: Any = value
            if comp in ("in", "pmatch"):
                cell = [value, value] if comp == "in" else [value]
            elif comp == "glob":
                cell = value[:-1] + "*"
            elif comp in ("startswith", "endswith", "contains") and field == "proc.exepath":
                cell = "/usr" if comp == "startswith" else "curl"
            out.append({"fields": [field], "comps": [comp], "values": [[cell]]})
    return [{"name": f"e{i}", **e} for i, e in enumerate(out)]


def compiled_rules(exceptions: list[dict[str, Any]]) -> dict[str, str]:
    f = feed(
        filters={"types": ALL_TYPES},
        falco={"domains": True, "exceptions": exceptions},
        exclusions={"keepDocumentation": True},
    )
    (shard,) = render_attributes(f, attributes_from_document(EVENT)).bundle.shards
    docs = load(shard.content)
    assert falco_shape_errors(docs) == []
    rules = {d["rule"]: d for d in docs if "rule" in d}
    return {name: with_exceptions(cond, rules[name]) for name, cond in expand(drop_ipv6_networks(docs)).items()}


def test_every_field_and_operator_compiles_in_every_rule() -> None:
    exceptions = exceptions_for_every_operator()
    assert len(exceptions) > 60
    # at most 64 exceptions per feed: two renders cover them all
    for part in (exceptions[:40], exceptions[40:]):
        rules = compiled_rules(part)
        assert len(rules) == 5  # addresses and networks both ways, domains outbound
        for rule, condition in rules.items():
            assert condition.count(" and not ") == len(part), rule
            assert sysdig_compile(condition) is None, rule


def test_multi_field_rows_and_scopes_compile() -> None:
    exceptions = [
        {"name": "scanner", "fields": ["proc.name", "fd.sport", "k8s.ns.name"], "comps": ["=", "in", "startswith"],
         "values": [["nessusd", [443, 8443], "security"], ["openvas", [22], "kube"]]},
        {"name": "egress", "fields": ["fd.snet"], "comps": ["in"], "values": [[["10.20.0.0/16", "192.0.2.0/24"]]],
         "appliesTo": {"directions": ["outbound"], "kinds": ["networks", "addresses"]}},
    ]  # fmt: skip
    rules = compiled_rules(exceptions)
    for rule, condition in rules.items():
        assert sysdig_compile(condition) is None, rule
    outbound_address = rules["misp_ns_test_0 outbound connection to a listed address"]
    assert ' proc.name = "nessusd" and  fd.sport in ("443", "8443") and  k8s.ns.name startswith "security"' in (
        outbound_address
    )
    assert 'fd.snet in ("10.20.0.0/16", "192.0.2.0/24")' in outbound_address
    assert 'fd.snet in ("10.20' not in rules["misp_ns_test_0 outbound connection to a listed domain"]


def test_the_check_has_teeth() -> None:
    """Without the strict classes a value would rewrite the condition Falco builds from it: unbalanced, sysdig
    rejects it; balanced, it compiles and silently excepts every shell (what the parser refuses)."""
    rule = {"exceptions": [{"name": "x", "fields": ["fd.sport"], "comps": ["in"], "values": [[["443", "a(b"]]]}]}
    assert sysdig_compile(with_exceptions("evt.type = connect", rule)) is not None
    rule = {"exceptions": [{"name": "x", "fields": ["proc.name"], "values": [["curl)or(proc.name=sh"]]}]}
    injected = with_exceptions("evt.type = connect", rule)
    assert sysdig_compile(injected) is None
    assert not evaluate(injected, {"evt.type": "connect", "proc.name": "sh"})
    with pytest.raises(SpecError) as caught:
        feed(falco={"exceptions": rule["exceptions"]})
    assert caught.value.field == "spec.falco.exceptions[0].values[0][0]"
