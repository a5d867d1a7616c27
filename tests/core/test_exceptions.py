"""spec.falco.exceptions: parsed strictly (errors name the field path and the value), rendered as Falco's own
``exceptions:`` on exactly the rules they scope to, deterministically, in every shard that holds such a rule."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from falco_misp.errors import RenderError, SpecError
from falco_misp.feed.exceptions import FIELDS, PLUGIN_FIELDS
from falco_misp.feed.model import Direction, RuleException, RuleKind
from falco_misp.rendering.shards import render_rules
from falcomodel import evaluate, with_exceptions
from helpers import feed, indicators
from rulecheck import block_items, expand, falco_shape_errors, load

SCANNER = {
    "name": "scanner",
    "fields": ["proc.name", "fd.sport"],
    "comps": ["=", "in"],
    "values": [["nessusd", [443, "8443"]]],
}
CORP = {"name": "corp_egress", "fields": ["fd.snet"], "comps": ["in"], "values": [[["10.20.0.0/16", "192.0.2.0/24"]]]}
VALUES = ["45.0.0.7", "45.0.0.8", "46.1.0.0/24", ("ip-src", "47.0.0.1"), ("ip-src", "47.2.0.0/24")]


def rules_of(content: bytes) -> dict[str, dict[str, Any]]:
    return {d["rule"]: d for d in load(content) if "rule" in d}


def render(*exceptions: dict[str, Any], **falco: Any) -> list[bytes]:
    f = feed(falco={"exceptions": list(exceptions), **falco})
    return [s.content for s in render_rules(f, indicators(VALUES, f)).shards]


def test_exceptions_go_on_the_rules_they_scope_to_in_falcos_structure() -> None:
    scoped = {**CORP, "appliesTo": {"directions": ["outbound"], "kinds": ["networks", "addresses"]}}
    (content,) = render(SCANNER, scoped)
    rules = rules_of(content)
    assert falco_shape_errors(load(content)) == []
    names = {rule: [e["name"] for e in r.get("exceptions", [])] for rule, r in rules.items()}
    assert names == {
        "misp_ns_test_0 outbound connection to a listed network": ["scanner", "corp_egress"],
        "misp_ns_test_0 outbound connection to a listed address": ["scanner", "corp_egress"],
        "misp_ns_test_0 inbound connection from a listed network": ["scanner"],
        "misp_ns_test_0 inbound connection from a listed address": ["scanner"],
    }
    (scanner, corp) = rules["misp_ns_test_0 outbound connection to a listed address"]["exceptions"]
    # Falco's keys; values are Falco strings in double quotes, a list for `in`, ports normalised to text
    assert scanner == {
        "name": "scanner",
        "fields": ["proc.name", "fd.sport"],
        "comps": ["=", "in"],
        "values": [['"nessusd"', ['"443"', '"8443"']]],
    }
    assert corp["values"] == [[['"10.20.0.0/16"', '"192.0.2.0/24"']]]


def test_no_exceptions_no_change_in_bytes() -> None:
    """A feed without exceptions renders exactly what it rendered before the feature (no key, no blank line)."""
    (content,) = render()
    assert b"exceptions" not in content
    for rule in rules_of(content).values():
        assert "exceptions" not in rule


def test_rendering_is_deterministic() -> None:
    f = feed(falco={"exceptions": [SCANNER, CORP]})
    first = render_rules(f, indicators(VALUES, f))
    again = render_rules(feed(falco={"exceptions": [SCANNER, CORP]}), indicators(VALUES, f))
    assert first.sha256 == again.sha256
    assert [s.content for s in first.shards] == [s.content for s in again.shards]
    other = render_rules(feed(falco={"exceptions": [CORP, SCANNER]}), indicators(VALUES, f))
    assert other.sha256 != first.sha256  # the order is the spec's: a different spec, a different hash
    without = render_rules(feed(), indicators(VALUES, f))
    assert without.sha256 != first.sha256


def test_domain_rules_carry_exceptions_scoped_to_domains_only() -> None:
    only_domains = {**SCANNER, "appliesTo": {"kinds": ["domains"]}}
    f = feed(filters={"types": ["ip-dst", "domain"]}, falco={"domains": True, "exceptions": [only_domains]})
    (shard,) = render_rules(f, indicators(["45.0.0.7", ("domain", "c2.example.net")], f)).shards
    carried = {rule for rule, r in rules_of(shard.content).items() if r.get("exceptions")}
    assert carried == {"misp_ns_test_0 outbound connection to a listed domain"}


def test_every_shard_is_loadable_alone_and_carries_the_exceptions() -> None:
    many = [f"45.{i // 250}.{i % 250}.9" for i in range(3000)]
    f = feed(falco={"shardBytes": 16 * 1024, "maxShards": 64, "exceptions": [SCANNER]})
    shards = render_rules(f, indicators(many, f)).shards
    assert len(shards) > 2
    for shard in shards:
        docs = load(shard.content)
        assert falco_shape_errors(docs) == [], shard.name  # every name it uses is defined in it
        assert len(shard.content) <= 16 * 1024
        for rule, condition in expand(docs).items():
            r = next(d for d in docs if d.get("rule") == rule)
            assert [e["name"] for e in r["exceptions"]] == ["scanner"]
            full = with_exceptions(condition, r)
            (address, *_) = block_items(docs)["misp_ns_test_" + shard.name.rsplit("-", 1)[1] + "_outbound_addresses"]
            event = {"evt.type": "connect", "evt.dir": "<", "fd.typechar": "4", "fd.sip": address,
                     "proc.name": "curl", "fd.sport": "443"}  # fmt: skip
            assert evaluate(full, event)
            assert not evaluate(full, {**event, "proc.name": "nessusd"})


# -------------------------------------------------------------------------------------------------- validation
def bad(exception: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as caught:
        feed(falco={"exceptions": [exception]})
    return caught.value


EXC = "spec.falco.exceptions[0]"


@pytest.mark.parametrize(
    ("exception", "path", "shown"),
    [
        ({**SCANNER, "fields": ["proc.cmdline", "fd.sport"]}, f"{EXC}.fields[0]", "'proc.cmdline'"),
        ({**SCANNER, "comps": ["=", "=="]}, f"{EXC}.comps[1]", "'=='"),
        ({**SCANNER, "comps": ["=", "startswith"]}, f"{EXC}.comps[1]", "'startswith'"),  # not on a port
        ({**SCANNER, "comps": ["="]}, f"{EXC}.comps", "one operator per field"),
        ({**SCANNER, "values": [["nessusd", ["99999"]]]}, f"{EXC}.values[0][1][0]", "'99999'"),
        ({**SCANNER, "values": [["nessusd", ["0443"]]]}, f"{EXC}.values[0][1][0]", "'0443'"),
        ({**SCANNER, "values": [["nessusd", [True]]]}, f"{EXC}.values[0][1][0]", "True"),
        ({**SCANNER, "values": [['curl" or proc.name="sh', [443]]]}, f"{EXC}.values[0][0]", 'curl" or proc.name="sh'),
        ({**SCANNER, "values": [["curl) or (evt.type=open", [443]]]}, f"{EXC}.values[0][0]", "curl) or (evt.type=open"),
        ({**SCANNER, "values": [["my proc", [443]]]}, f"{EXC}.values[0][0]", "'my proc'"),
        ({**SCANNER, "values": [["curl\n- rule: x", [443]]]}, f"{EXC}.values[0][0]", "'curl\\n- rule: x'"),
        ({**SCANNER, "values": [["curl,wget", [443]]]}, f"{EXC}.values[0][0]", "'curl,wget'"),
        ({**SCANNER, "values": [["curl*", [443]]]}, f"{EXC}.values[0][0]", "'curl*'"),  # a wildcard needs glob
        ({**SCANNER, "values": [[["curl"], [443]]]}, f"{EXC}.values[0][0]", "a list needs in"),
        ({**SCANNER, "values": [["nessusd"]]}, f"{EXC}.values[0]", "a row of 2 value(s)"),
        ({**SCANNER, "values": []}, f"{EXC}.values", "rows of values"),
        ({**SCANNER, "name": "has space"}, f"{EXC}.name", "'has space'"),
        ({**SCANNER, "typo": 1}, f"{EXC}.typo", "unknown field"),
        ({**SCANNER, "appliesTo": {"kinds": ["urls"]}}, f"{EXC}.appliesTo.kinds[0]", "'urls'"),
        ({**SCANNER, "appliesTo": {"directions": ["sideways"]}}, f"{EXC}.appliesTo.directions[0]", "'sideways'"),
        ({**SCANNER, "appliesTo": {"directions": []}}, f"{EXC}.appliesTo.directions", "at least one"),
        ({"name": "a", "fields": ["fd.sip"], "values": [["10.0.0.0/8"]]}, f"{EXC}.values[0][0]", "'10.0.0.0/8'"),
        ({"name": "a", "fields": ["fd.sip"], "values": [["::ffff:1.2.3.4"]]}, f"{EXC}.values[0][0]", "::ffff:1.2.3.4"),
        ({"name": "a", "fields": ["fd.cip"], "values": [["fe80::1%eth0"]]}, f"{EXC}.values[0][0]", "fe80::1%eth0"),
        ({"name": "a", "fields": ["fd.snet"], "values": [["10.0.0.1/8"]]}, f"{EXC}.values[0][0]", "'10.0.0.1/8'"),
        ({"name": "a", "fields": ["fd.snet"], "values": [["10.0.0.1"]]}, f"{EXC}.values[0][0]", "'10.0.0.1'"),
        ({"name": "a", "fields": ["proc.exepath"], "values": [["bin/curl"]]}, f"{EXC}.values[0][0]", "'bin/curl'"),
        ({"name": "a", "fields": ["k8s.ns.name"], "values": [["Kube_System"]]}, f"{EXC}.values[0][0]", "Kube_System"),
        ({"name": "a", "fields": ["fd.l4proto"], "values": [["sctp"]]}, f"{EXC}.values[0][0]", "'sctp'"),
        ({"name": "a", "fields": ["container.image.repository"], "values": [["ghcr.io/x'y"]]}, f"{EXC}.values[0][0]",
         "ghcr.io/x'y"),
        ({"name": "a", "fields": ["proc.name", "proc.name"], "values": [["a", "b"]]}, f"{EXC}.fields", "twice"),
    ],
)  # fmt: skip
def test_bad_exceptions_name_the_field_and_the_value(exception: dict[str, Any], path: str, shown: str) -> None:
    error = bad(exception)
    assert error.field == path
    assert shown in error.message


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(SpecError) as caught:
        feed(falco={"exceptions": [SCANNER, SCANNER]})
    assert caught.value.field == "spec.falco.exceptions[1].name"


def test_good_values_are_read_in_canonical_form() -> None:
    exceptions = [
        {"name": "a", "fields": ["fd.sip", "fd.snet"], "comps": ["in", "="],
         "values": [[["2001:DB8:0::1", "45.0.0.1"], "2001:db8:1::/48"]]},
        {"name": "b", "fields": ["proc.exepath", "k8s.pod.name", "user.name"], "comps": ["pmatch", "glob", "!="],
         "values": [["/usr/bin", "scanner-*", "root"]]},
        {"name": "c", "fields": ["fd.sport"], "comps": ["<"], "values": [[1024]], "appliesTo": {"kinds": ["domains"]}},
    ]  # fmt: skip
    a, b, c = feed(falco={"exceptions": exceptions}).spec.falco.exceptions
    assert a.values == ((("2001:db8::1", "45.0.0.1"), "2001:db8:1::/48"),)
    assert b.values == ((("/usr/bin",), "scanner-*", "root"),)  # a single pmatch value is a one-item list
    assert (c.comps, c.values, c.kinds, c.directions) == (("<",), (("1024",),), (RuleKind.DOMAINS,), tuple(Direction))


def test_every_allowed_field_renders_and_the_plugin_fields_are_the_container_ones() -> None:
    assert {"container.image.repository", "k8s.ns.name", "k8s.pod.name"} == PLUGIN_FIELDS
    sample = {"fd.sport": "443", "fd.cport": "1", "fd.lport": "2", "fd.rport": "3", "fd.sip": "45.0.0.1",
              "fd.cip": "45.0.0.2", "fd.lip": "::1", "fd.rip": "45.0.0.3", "fd.snet": "45.1.0.0/16",
              "fd.cnet": "45.2.0.0/16", "fd.lnet": "10.0.0.0/8", "fd.rnet": "2001:db8::/32", "fd.l4proto": "tcp",
              "proc.name": "curl", "proc.pname": "bash", "proc.exepath": "/usr/bin/curl", "user.name": "root",
              "container.image.repository": "ghcr.io/acme/scanner", "k8s.ns.name": "kube-system",
              "k8s.pod.name": "scanner-0.x"}  # fmt: skip
    assert set(sample) == set(FIELDS)
    exception = {"name": "all", "fields": list(sample), "values": [list(sample.values())]}
    with pytest.raises(SpecError):  # at most 8 fields per exception
        feed(falco={"exceptions": [exception]})
    names = list(sample)
    chunks = [{"name": f"e{i}", "fields": names[i : i + 8], "values": [[sample[n] for n in names[i : i + 8]]]}
              for i in range(0, len(names), 8)]  # fmt: skip
    (content,) = render(*chunks)
    rule = rules_of(content)["misp_ns_test_0 outbound connection to a listed address"]
    assert [f for e in rule["exceptions"] for f in e["fields"]] == names


def test_a_hand_built_feed_with_an_unsafe_value_is_refused_at_rendering() -> None:
    """The renderer checks every value again: a Feed built without the parser cannot inject a condition."""
    f = feed()
    unsafe = RuleException(name="x", fields=("proc.name",), comps=("=",), values=(('sh" or evt.type="open',),))
    forged = dataclasses.replace(f, spec=dataclasses.replace(f.spec, falco=dataclasses.replace(f.spec.falco,
                                 exceptions=(unsafe,))))  # fmt: skip
    with pytest.raises(RenderError, match="refusing to render exception value"):
        render_rules(forged, indicators(["45.0.0.7"], forged))
    bad_field = dataclasses.replace(unsafe, fields=("proc.cmdline",), values=(("sh",),))
    forged = dataclasses.replace(forged, spec=dataclasses.replace(forged.spec, falco=dataclasses.replace(
        forged.spec.falco, exceptions=(bad_field,))))  # fmt: skip
    with pytest.raises(RenderError, match=r"proc\.cmdline"):
        render_rules(forged, indicators(["45.0.0.7"], forged))


def test_rendered_exceptions_stay_yaml_strings() -> None:
    """Values such as a port or `true`-looking names come back from YAML as the strings Falco reads."""
    (content,) = render({"name": "n", "fields": ["user.name", "fd.sport"], "values": [["true", 22], ["null", "0"]]})
    rule = rules_of(content)["misp_ns_test_0 outbound connection to a listed address"]
    assert rule["exceptions"][0]["values"] == [['"true"', '"22"'], ['"null"', '"0"']]
    assert yaml.safe_load(yaml.safe_dump(rule)) == rule
