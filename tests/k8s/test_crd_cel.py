"""Every x-kubernetes-validations rule of the MispFeed CRD compiled and evaluated with a real CEL implementation
(PyPI common-expression-language), as the API server does: ``self`` is the value of the node the rule sits on, a
rule runs only where its node is present, after defaulting.

Every example feed and this file's own sample feeds pass every rule, every rule is evaluated by at least one of
them, and for every rule at least one crafted feed, valid against the schema otherwise, fails with exactly that
rule's message at that rule's path. The evaluator (k8s/crdcheck.py) is shown to surface evaluation errors, and the
compile checks to report syntax errors, unknown fields, functions and variables.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from falco_misp.feed.model import API_GROUP, API_VERSION, KIND
from falco_misp.feed.parse import parse_feed
from k8s.crdcheck import (
    RuleFailure,
    admission_errors,
    apply_defaults,
    crd_problems,
    example_feeds,
    load_crd,
    rule_failures,
    rule_problems,
    rules_of,
    schema_of,
    validate,
)

SCHEMA = schema_of(load_crd())
RULES = {(path, i): rule for path, i, rule in rules_of(SCHEMA)}
BASE = "spec.validation.openAPIV3Schema"

FILE = {"file": {"url": "x.json"}}
MISP = {"misp": {"url": "https://misp.example.org", "authKeySecretRef": {"name": "misp-auth", "key": "authkey"}}}
ZMQ = "tcp://misp.example.org:50000"
SERVER_REF = {"kind": "ClusterMispServer", "name": "circl"}  # issue 15: a server resource instead of url + key


def doc(spec: dict[str, Any], name: str = "x") -> dict[str, Any]:
    source = spec.pop("source", FILE)
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"source": copy.deepcopy(source), **spec},
    }


def misp(**fields: Any) -> dict[str, Any]:
    return {"misp": {**copy.deepcopy(MISP["misp"]), **fields}}


OCI = {"reference": "registry.example.org/security/misp-rules"}


def selecting(selector: dict[str, Any]) -> dict[str, Any]:
    """A feed delivering Rulesfiles to the nodes ``selector`` matches."""
    return doc({"falco": {"delivery": {"mode": "Rulesfiles", "rulesfile": {"selector": selector}}}})


# Feeds that pass every rule, at the rules' bounds.
SAMPLES: dict[str, dict[str, Any]] = {
    "minimal-file": doc({}),
    "name-of-47": doc({}, name="a" * 47),
    "misp-at-upper-bounds": doc(
        {
            "source": misp(zmq={"url": ZMQ, "debounce": "5m"}),
            "filters": {"minThreatLevel": 4, "enforceWarninglist": True, "excludeDecayed": True},
            "limits": {"expandPrefixV4": 32, "expandPrefixV6": 128},
            "refresh": {"interval": "30d"},
            "reporting": {
                "sightings": {"enabled": True, "dedupWindow": "30d"},
                "events": {"enabled": True, "threatLevel": "Undefined", "analysis": 2},
            },
        }
    ),
    "misp-at-lower-bounds": doc(
        {
            "source": misp(zmq={"url": ZMQ, "debounce": "1s"}),
            "filters": {"minThreatLevel": "LOW"},
            "limits": {"expandPrefixV4": 16, "expandPrefixV6": 112},
            "refresh": {"interval": "60s"},
            "reporting": {
                "sightings": {"enabled": True, "dedupWindow": "1m"},
                "events": {"enabled": True, "threatLevel": 1, "analysis": "Completed"},
            },
        }
    ),
    "misp-defaults": doc(  # defaulted: debounce 10s, interval 1h, dedupWindow 1h, expandPrefix 0
        {"source": misp(zmq={"url": ZMQ}), "limits": {}, "refresh": {}, "reporting": {"sightings": {}, "events": {}}}
    ),
    "rulesfiles-with-a-node-selector": doc(
        {
            "falco": {
                "rollout": "HotReload",
                "delivery": {
                    "mode": "Rulesfiles",
                    "rulesfile": {
                        "priority": 99,
                        "selector": {
                            "matchLabels": {"falco": "on"},
                            "matchExpressions": [
                                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]},
                                {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"},
                            ],
                        },
                    },
                },
            }
        }
    ),
    "oci-with-a-pinned-rulesfile": doc(
        {
            "falco": {
                "delivery": {
                    "mode": "OCI",
                    "oci": {
                        "reference": "registry.example.org:5000/security/misp-rules:stable",
                        "credentialsSecretRef": {"name": "push-creds"},
                        "caSecretRef": {"name": "registry-ca", "key": "ca.crt"},
                        "rulesfile": True,
                        "pullSecretRef": {"name": "pull-creds"},
                    },
                    "rulesfile": {"priority": 61},
                }
            }
        }
    ),
    "oci-over-plain-http": doc(
        {"falco": {"delivery": {"mode": "OCI", "oci": {"reference": "localhost/misp-rules", "plainHTTP": True}}}}
    ),
    "configmaps-delivery-with-a-daemonset": doc(
        {"falco": {"daemonSet": "falco", "rollout": "Restart", "delivery": {"mode": "ConfigMaps"}}}
    ),
    "misp-server-reference": doc({"source": {"misp": {"serverRef": SERVER_REF}}, "reporting": {"sightings": {}}}),
    "static-feed-with-reporting-off": doc(
        {
            "source": {"mispFeed": {"url": "https://feeds.example.org/circl"}},
            "filters": {"minThreatLevel": 1, "enforceWarninglist": False},
            "reporting": {"sightings": {"enabled": False}, "events": {"enabled": False, "analysis": 0}},
        }
    ),
}
PASSING = [(f"examples/{name}", d) for name, d in example_feeds()] + [(f"sample:{k}", d) for k, d in SAMPLES.items()]

# (the rule's node, its index) -> crafted feeds, each valid against the schema, that only this rule rejects, with
# the data path the failure is reported at.
FAILING: dict[tuple[str, int], list[tuple[dict[str, Any], str]]] = {
    ("", 0): [(doc({}, name="a" * 48), ""), (doc({}, name="misp.feed"), ""), (doc({}, name="Feed"), "")],
    (".spec", 0): [
        (doc({"filters": {"enforceWarninglist": True}}), ".spec.filters"),
        (doc({"source": {"mispFeed": {"url": "f"}}, "filters": {"excludeDecayed": True}}), ".spec.filters"),
    ],
    (".spec", 1): [
        (doc({"source": {"text": {"url": "l"}}, "filters": {f: v}}), ".spec.filters")
        for f, v in (("orgs", ["CIRCL"]), ("toIds", True), ("types", ["ip-dst"]), ("maxAge", "30d"))
    ],
    (".spec", 2): [
        (doc({"reporting": {"sightings": {"enabled": True}}}), ".spec.reporting"),
        (doc({"source": {"mispFeed": {"url": "f"}}, "reporting": {"events": {"enabled": True}}}), ".spec.reporting"),
    ],
    (".spec.falco", 0): [
        (doc({"falco": {"daemonSet": "falco", "delivery": {"mode": "Rulesfiles"}}}), ".spec.falco"),
        (doc({"falco": {"rollout": "Restart", "delivery": {"mode": "Rulesfiles"}}}), ".spec.falco"),
        (doc({"falco": {"daemonSet": "falco", "delivery": {"mode": "OCI", "oci": OCI}}}), ".spec.falco"),
    ],
    (".spec.falco.delivery", 0): [
        (doc({"falco": {"delivery": {"rulesfile": {"priority": 10}}}}), ".spec.falco.delivery.rulesfile"),
        (doc({"falco": {"delivery": {"mode": "ConfigMaps", "rulesfile": {}}}}), ".spec.falco.delivery.rulesfile"),
        (doc({"falco": {"delivery": {"mode": "OCI", "oci": OCI, "rulesfile": {}}}}), ".spec.falco.delivery.rulesfile"),
    ],
    (".spec.falco.delivery", 1): [
        (doc({"falco": {"delivery": {"mode": "OCI"}}}), ".spec.falco.delivery"),
        (doc({"falco": {"delivery": {"mode": "Rulesfiles", "oci": OCI}}}), ".spec.falco.delivery"),
        (doc({"falco": {"delivery": {"oci": OCI}}}), ".spec.falco.delivery"),
    ],
    (".spec.falco.delivery.oci", 0): [
        (
            doc({"falco": {"delivery": {"mode": "OCI", "oci": {**OCI, "plainHTTP": True, **tls}}}}),
            ".spec.falco.delivery.oci",
        )
        for tls in ({"caSecretRef": {"name": "ca", "key": "ca.crt"}}, {"insecureSkipVerify": True})
    ],
    (".spec.falco.delivery.oci", 1): [
        (
            doc({"falco": {"delivery": {"mode": "OCI", "oci": {**OCI, "pullSecretRef": {"name": "pull"}}}}}),
            ".spec.falco.delivery.oci.pullSecretRef",
        )
    ],
    (".spec.falco.delivery.rulesfile.selector", 0): [
        (selecting({"matchExpressions": [e]}), ".spec.falco.delivery.rulesfile.selector")
        for e in (
            {"key": "zone", "operator": "In"},
            {"key": "zone", "operator": "NotIn", "values": []},
            {"key": "zone", "operator": "Exists", "values": ["a"]},
        )
    ],
    (".spec.falco.delivery.rulesfile.selector", 1): [
        (selecting(s), ".spec.falco.delivery.rulesfile.selector")
        for s in ({}, {"matchLabels": {}}, {"matchExpressions": []})
    ],
    (".spec.source", 0): [
        (doc({"source": {}}), ".spec.source"),
        (doc({"source": {**FILE, "text": {"url": "l"}}}), ".spec.source"),
        (doc({"source": {**MISP, "mispFeed": {"url": "f"}, **FILE}}), ".spec.source"),
    ],
    (".spec.source.misp", 0): [
        (doc({"source": {"misp": {"authKeySecretRef": {"name": "k", "key": "k"}}}}), ".spec.source.misp"),
        (doc({"source": {"misp": {}}}), ".spec.source.misp"),
    ],
    (".spec.source.misp", 1): [(doc({"source": {"misp": {"url": "https://misp.example.org"}}}), ".spec.source.misp")],
    (".spec.source.misp", 2): [
        (doc({"source": {"misp": {"serverRef": SERVER_REF, **extra}}}), ".spec.source.misp")
        for extra in (
            {"authKeySecretRef": {"name": "k", "key": "k"}},
            {"caBundleSecretRef": {"name": "c", "key": "c"}},
            {"zmq": {"url": ZMQ}},
        )
    ],
    (".spec.source.misp.zmq.debounce", 0): [
        (doc({"source": misp(zmq={"url": ZMQ, "debounce": d})}), ".spec.source.misp.zmq.debounce")
        for d in ("6m", "301s", "1h", "1w")
    ],
    (".spec.filters.minThreatLevel", 0): [
        (doc({"filters": {"minThreatLevel": v}}), ".spec.filters.minThreatLevel") for v in ("severe", "", 0, 5, "1")
    ],
    (".spec.limits.expandPrefixV4", 0): [
        (doc({"limits": {"expandPrefixV4": v}}), ".spec.limits.expandPrefixV4") for v in (1, 15)
    ],
    (".spec.limits.expandPrefixV6", 0): [
        (doc({"limits": {"expandPrefixV6": v}}), ".spec.limits.expandPrefixV6") for v in (1, 64, 111)
    ],
    (".spec.refresh.interval", 0): [
        (doc({"refresh": {"interval": v}}), ".spec.refresh.interval") for v in ("59s", "1s", "001s")
    ],
    (".spec.refresh.fullInterval", 0): [
        (doc({"refresh": {"fullInterval": v}}), ".spec.refresh.fullInterval") for v in ("59s", "1s")
    ],
    (".spec.reporting.sightings.dedupWindow", 0): [
        (doc({"source": MISP, "reporting": {"sightings": {"dedupWindow": v}}}), ".spec.reporting.sightings.dedupWindow")
        for v in ("59s", "31d", "5w")
    ],
    (".spec.reporting.events.threatLevel", 0): [
        (doc({"source": MISP, "reporting": {"events": {"threatLevel": v}}}), ".spec.reporting.events.threatLevel")
        for v in ("critical", 0, 5)
    ],
    (".spec.reporting.events.analysis", 0): [
        (doc({"source": MISP, "reporting": {"events": {"analysis": v}}}), ".spec.reporting.events.analysis")
        for v in ("done", -1, 3)
    ],
}
FAILING_CASES = [
    pytest.param(key, feed, path, id=f"{key[0] or 'root'}[{key[1]}]-{n}")
    for key, cases in FAILING.items()
    for n, (feed, path) in enumerate(cases)
]


def _id(value: object) -> str:
    return value if isinstance(value, str) else ""


# ------------------------------------------------------------------------------------------------ compiling
def test_the_crd_has_the_rules_this_file_covers() -> None:
    assert len(RULES) >= 12
    assert set(FAILING) == set(RULES)  # a new rule needs failing feeds here


@pytest.mark.parametrize("key", sorted(RULES), ids=lambda k: f"{k[0] or 'root'}[{k[1]}]")
def test_every_rule_compiles(key: tuple[str, int]) -> None:
    path, _index = key
    node = SCHEMA
    for name in path.split(".")[1:]:
        node = node["properties"][name]
    assert rule_problems(RULES[key]["rule"], node, at_root=path == "") == []


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("self == 0 ||", "compilation failed: Failed to parse expression"),
        ("self.lowerAsci() == 'x'", "undeclared function 'lowerAsci' (not in Kubernetes' CEL environment)"),
        ("self.first() == 'x'", "undeclared function 'first' (not in Kubernetes' CEL environment)"),
        ("oldself == self", "undeclared reference to 'oldself'"),
    ],
)
def test_rule_problems_reports_what_would_not_compile(rule: str, problem: str) -> None:
    interval = SCHEMA["properties"]["spec"]["properties"]["refresh"]["properties"]["interval"]
    problems = rule_problems(rule, interval)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("has(self.source.mispp)", "undefined field 'mispp' of self.source"),
        ("self.filters.tags.anyy.size() > 0", "undefined field 'anyy' of self.filters.tags"),
        ("self.refresh.interval.size > 0", "self.refresh.interval is not an object, it has no field 'size'"),
        ("self.metadata.namespace == 'x'", "undefined field 'metadata' of self"),  # metadata is the root's only
    ],
)
def test_rule_problems_reports_fields_the_schema_does_not_have(rule: str, problem: str) -> None:
    assert rule_problems(rule, SCHEMA["properties"]["spec"]) == [problem]


def test_rule_problems_knows_the_roots_metadata() -> None:
    assert rule_problems("self.metadata.name.size() < 9 && !has(self.metadata.generateName)", SCHEMA, True) == []
    assert rule_problems("self.metadata.namespace == 'x'", SCHEMA, True) == [
        "undefined field 'namespace' of self.metadata"
    ]
    assert rule_problems("'self.nope' == self.kind", SCHEMA, True) == []  # inside a string literal


def test_the_crd_with_a_broken_rule_is_reported() -> None:
    crd = load_crd()
    limits = schema_of(crd)["properties"]["spec"]["properties"]["limits"]["properties"]
    limits["expandPrefixV4"]["x-kubernetes-validations"][0]["rule"] = "self == 0 || self >="
    spec = schema_of(crd)["properties"]["spec"]
    spec["x-kubernetes-validations"][0]["rule"] = spec["x-kubernetes-validations"][0]["rule"].replace(
        "has(self.source.misp)", "has(self.sources.misp)"
    )
    spec["x-kubernetes-validations"][1]["fieldPath"] = ".reportingg"
    problems = crd_problems(crd)
    at = f"{BASE}.properties[spec]"
    assert len(problems) == 3, problems
    assert problems[0] == f"{at}.x-kubernetes-validations[0].rule: Invalid value: undefined field 'sources' of self"
    assert (
        problems[1]
        == f"{at}.x-kubernetes-validations[1].fieldPath: Invalid value: '.reportingg' is not a field of this node"
    )
    assert problems[2].startswith(
        f"{at}.properties[limits].properties[expandPrefixV4].x-kubernetes-validations[0].rule: Invalid value: "
        "compilation failed: Failed to parse expression"
    )


# ----------------------------------------------------------------------------------------------- evaluating
def test_every_example_feed_and_sample_is_here() -> None:
    names = {name for name, _d in PASSING}
    assert {"examples/misp-feed.yaml", "examples/two-feeds.yaml", "examples/gitops/feeds/ipsum.yaml"} <= names
    assert len(example_feeds()) >= 8


@pytest.mark.parametrize(("name", "feed"), PASSING, ids=_id)
def test_passing_feeds_pass_every_rule(name: str, feed: dict[str, Any]) -> None:
    defaulted = apply_defaults(feed, SCHEMA)
    assert validate(defaulted, SCHEMA) == [], name
    assert rule_failures(defaulted, SCHEMA) == [], name
    parse_feed(feed)  # and the operator takes them


def test_every_rule_is_evaluated_by_a_passing_feed() -> None:
    evaluated: set[tuple[str, int]] = set()
    for _name, feed in PASSING:
        rule_failures(apply_defaults(feed, SCHEMA), SCHEMA, evaluated)
    assert sorted(set(RULES) - evaluated) == []


@pytest.mark.parametrize(("key", "feed", "path"), FAILING_CASES)
def test_each_rule_rejects_its_crafted_feeds_with_its_message(
    key: tuple[str, int], feed: dict[str, Any], path: str
) -> None:
    defaulted = apply_defaults(feed, SCHEMA)
    assert validate(defaulted, SCHEMA) == []  # only the rule stands in the way
    rule = RULES[key]
    assert rule_failures(defaulted, SCHEMA) == [RuleFailure(path, rule["message"], rule["rule"])]
    assert admission_errors(feed, SCHEMA) == [f"{path}: {rule['message']}"]


def test_rules_run_only_where_their_node_is_present_after_defaulting() -> None:
    evaluated: set[tuple[str, int]] = set()
    assert rule_failures(apply_defaults(doc({}), SCHEMA), SCHEMA, evaluated) == []
    assert evaluated == {("", 0), (".spec", 0), (".spec", 1), (".spec", 2), (".spec.source", 0)}
    evaluated.clear()
    assert rule_failures(apply_defaults(doc({"refresh": {}, "limits": {}}), SCHEMA), SCHEMA, evaluated) == []
    assert {(".spec.refresh.interval", 0), (".spec.limits.expandPrefixV4", 0)} <= evaluated  # defaulted 1h, 0
    # Without defaulting, the spec-level rule still sees the filters' booleans only where set.
    assert rule_failures(doc({"filters": {"enforceWarninglist": False}}), SCHEMA) == []


def test_the_evaluator_reports_evaluation_errors_and_binds_self_per_item() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"n": {"type": "number"}},
                    "x-kubernetes-validations": [{"rule": "self.n > 1.5", "message": "n must exceed 1.5"}],
                },
            },
            "m": {
                "type": "object",
                "properties": {},
                "x-kubernetes-validations": [{"rule": "self.x == 1", "message": "x"}],
            },
        },
    }
    failures = rule_failures({"items": [{"n": 2}, {"n": 1}], "m": {}}, schema)
    assert [f.path for f in failures] == [".items[1]", ".m"]
    assert failures[0].message == "n must exceed 1.5"  # an integer value of a number field is a double in CEL
    assert failures[1].message.startswith("evaluation error: KeyError")


def test_the_roots_rule_sees_only_name_and_generate_name_of_metadata() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"metadata": {"type": "object"}},
        "x-kubernetes-validations": [{"rule": "!has(self.metadata.namespace)", "message": "namespace visible"}],
    }
    assert rule_failures({"metadata": {"name": "a", "namespace": "ns"}}, schema) == []
