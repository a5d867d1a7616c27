"""The MispFeed CRD: a CRD a real kube-apiserver accepts, whose structural schema accepts exactly what feed/parse.py
accepts, with the same defaults.

What the server checks is checked in one place, k8s/crdcheck.py (the apiextensions restrictions, the schema, the
CEL rules); here the real CRD goes through it, and copies of it with known defects show that it reports them. The
examples and the maximal specs go through the checker's admission (defaults, schema, CEL rules) and through
feed.parse.parse_feed. The field list comes from feed/parse.py itself: every key its parser reads while parsing a
spec that sets every field is recorded and compared with the schema's properties. The CEL rules: test_crd_cel.py.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from falco_misp.controller.handlers import FEEDS
from falco_misp.feed import parse as spec_module
from falco_misp.feed.model import API_GROUP, API_VERSION, KIND
from falco_misp.feed.parse import parse_feed, parse_spec
from k8s.crdcheck import (
    METADATA_FORBIDDEN,
    REPO,
    admission_errors,
    apply_defaults,
    convention_problems,
    crd_problems,
    example_feeds,
    load_crd,
    nodes,
    pruned_fields,
    schema_of,
    validate,
)

BASE = "spec.validation.openAPIV3Schema"  # where the server reports the schema of a one-version CRD


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return load_crd()


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    (_version,) = crd["spec"]["versions"]
    return schema_of(crd)


# ------------------------------------------------------------------------------------------------- the CRD
def test_crd_identity_and_printer_columns(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{names['plural']}.{API_GROUP}"
    assert (crd["spec"]["group"], names["kind"], crd["spec"]["scope"]) == (API_GROUP, KIND, "Namespaced")
    assert (API_GROUP, API_VERSION, names["plural"]) == FEEDS
    assert "mf" in names["shortNames"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == API_VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns)[:4] == ["Ready", "Indicators", "Last Sync", "Age"]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Serving"]["jsonPath"] == '.status.conditions[?(@.type=="Serving")].reason'
    assert "priority" not in columns["Serving"]  # shown by plain `kubectl get`: old rules serving is visible
    assert columns["Indicators"]["jsonPath"] == ".status.indicators.total"
    assert columns["Last Sync"]["type"] == "date"


def test_crd_passes_the_api_server_checks(crd: dict[str, Any]) -> None:
    assert crd_problems(crd) == []


def test_a_description_on_metadata_is_reported_as_the_server_does(crd: dict[str, Any]) -> None:
    """Issue 10, item 1: a real v1.32 server rejected the whole CRD for this description."""
    broken = copy.deepcopy(crd)
    schema_of(broken)["properties"]["metadata"]["description"] = "Standard object metadata."
    assert crd_problems(broken) == [f"{BASE}.properties[metadata]: {METADATA_FORBIDDEN}"]
    assert METADATA_FORBIDDEN == (
        "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"
    )


def test_restrictions_on_metadata_name_are_allowed(crd: dict[str, Any]) -> None:
    allowed = copy.deepcopy(crd)
    schema_of(allowed)["properties"]["metadata"]["properties"] = {"name": {"type": "string", "maxLength": 47}}
    assert crd_problems(allowed) == []


def node_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema node at a data path such as ``.spec.filters.types[]``."""
    node = schema
    for part in re.findall(r"\.[^.\[]+|\[\]", path):
        node = node["items"] if part == "[]" else node["properties"][part[1:]]
    return node


def _drop(key: str) -> Any:
    return lambda node: node.pop(key)


def _set(key: str, value: Any) -> Any:
    return lambda node: node.__setitem__(key, value)


P = f"{BASE}.properties[spec].properties"
NO_TYPE = "type: Required value: must not be empty for specified fields and items"


@pytest.mark.parametrize(
    ("path", "change", "problem"),
    [
        (
            ".spec.limits.maxIndicators",
            _drop("type"),
            f"{P}[limits].properties[maxIndicators].{NO_TYPE}",
        ),
        (
            ".spec.filters.types[]",
            _drop("type"),
            f"{P}[filters].properties[types].items.{NO_TYPE}",
        ),
        (
            ".spec.filters.types",
            _drop("items"),
            f"{P}[filters].properties[types].items: Required value: must be specified (one typed schema) for an array",
        ),
        (
            ".spec.filters.minThreatLevel",
            _set("nullable", True),
            f"{P}[filters].properties[minThreatLevel].nullable: Forbidden: nullable needs a type",
        ),
        (
            ".spec.filters.minThreatLevel",
            _set("type", "string"),
            f"{P}[filters].properties[minThreatLevel].type: Forbidden: must be empty with x-kubernetes-int-or-string",
        ),
        (
            ".spec.limits.maxDropPercent",
            _set("default", 150),
            f"{P}[limits].properties[maxDropPercent].default: Invalid value: "
            ".spec.limits.maxDropPercent: 150 out of bounds",
        ),
        (
            ".spec.refresh.interval",
            _set("default", "30s"),  # valid for the pattern, not for the node's CEL rule
            f"{P}[refresh].properties[interval].default: Invalid value: '30s': x-kubernetes-validations[0]: "
            "refresh.interval must be at least 1m",
        ),
        (
            ".spec.falco",
            _set("default", {"namespace": "falco", "typo": 1}),
            f"{P}[falco].default: Invalid value: .spec.falco.typo: unknown field",
        ),
        (
            ".spec.falco",
            _set("additionalProperties", {"type": "string"}),
            f"{P}[falco].additionalProperties: Forbidden: additionalProperties and properties are mutually exclusive",
        ),
        (
            ".spec.source.misp",
            _set("required", ["url", "authKey"]),
            f"{P}[source].properties[misp].required: Invalid value: 'authKey' is not a property",
        ),
        (
            ".spec.filters",
            _set("oneOf", [{"required": ["types"]}]),
            f"{P}[filters].oneOf: not supported by this checker (structural only with care)",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith(".") else None,
)
def test_structural_problems_are_reported(crd: dict[str, Any], path: str, change: Any, problem: str) -> None:
    broken = copy.deepcopy(crd)
    change(node_at(schema_of(broken), path))
    assert crd_problems(broken) == [problem]


def test_a_default_inside_metadata_is_reported(crd: dict[str, Any]) -> None:
    broken = copy.deepcopy(crd)
    schema_of(broken)["properties"]["metadata"]["properties"] = {"name": {"type": "string", "default": "feed"}}
    problems = crd_problems(broken)
    assert (
        f"{BASE}.properties[metadata].properties[name].default: Forbidden: must not be set inside metadata" in problems
    )
    assert (
        f"{BASE}.properties[metadata].properties[name]: Forbidden: only type string and its restrictions are allowed"
        in problems
    )


def test_schema_follows_our_conventions(schema: dict[str, Any]) -> None:
    assert convention_problems(schema) == []
    status = schema["properties"]["status"]
    assert {"conditions", "observedGeneration", "indicators", "lastAttempt", "lastSuccess", "rulesHash"} <= set(
        status["properties"]
    )
    assert status["properties"]["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_validation_rules_are_present(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    rules = {
        path: [r["rule"] for r in node.get("x-kubernetes-validations", [])]
        for path, node in nodes(schema)
        if node.get("x-kubernetes-validations")
    }
    assert "has(self.misp)" in rules[".spec.source"][0]  # exactly one source
    assert ">= 60" in rules[".spec.refresh.interval"][0]  # refresh at least 1m
    assert "enforceWarninglist" in rules[".spec"][0]
    assert "size() <= 47" in rules[""][0]
    misp_rules = rules[".spec.source.misp"]  # issue 15: url + key, or a server resource
    assert misp_rules[:2] == ["has(self.url) != has(self.serverRef)", "!has(self.url) || has(self.authKeySecretRef)"]
    duration = spec["properties"]["refresh"]["properties"]["interval"]["pattern"]
    assert [bool(re.search(duration, d)) for d in ("90s", "15m", "1h", "30d", "2w", "0m", "1y", "1.5h")] == [
        True, True, True, True, True, False, False, False
    ]  # fmt: skip
    cidr = spec["properties"]["exclusions"]["properties"]["cidrs"]["items"]["pattern"]
    assert all(re.search(cidr, c) for c in ("10.0.0.0/8", "203.0.113.7", "2001:db8::/32", "::1"))
    assert not any(re.search(cidr, c) for c in ("example.org", "10.0.0.0/8 ", ""))


# ---------------------------------------------------------------------------------- the same fields as feed/parse.py
MAXIMAL_FILTERS: dict[str, Any] = {
    "types": ["ip-src", "ip-dst"],
    "orgs": ["CIRCL"],
    "categories": ["Network activity"],
    "tags": {"any": ["tlp:white"], "all": ["osint"], "none": ["tlp:red"]},
    "toIds": True,
    "published": True,
    "minThreatLevel": "medium",
    "maxAge": "30d",
    "publishedWithin": "90d",
    "enforceWarninglist": True,
    "excludeDecayed": True,
    "anyOf": [
        {"types": ["domain"], "orgs": ["A"], "categories": ["X"], "tags": {"any": ["a"], "all": ["b"], "none": ["c"]}}
    ],
}
MAXIMAL_REST: dict[str, Any] = {
    "exclusions": {
        "cidrs": ["198.51.100.0/24"], "values": ["example.org"], "keepNonGlobal": False, "keepDocumentation": False,
        "allowLists": ["corp-egress"],
    },
    "limits": {
        "maxIndicators": 1000, "maxDropPercent": 50, "minPrefixV4": 16, "minPrefixV6": 32, "maxDomains": 10,
        "cidrWarnThreshold": 100, "expandPrefixV4": 24, "expandPrefixV6": 120, "maxExpandedAddresses": 1000,
    },
    "falco": {
        "namespace": "falco", "daemonSet": "falco", "selector": "app.kubernetes.io/name=falco",
        "configMapPrefix": "misp-all", "maxShards": 4, "directions": ["inbound", "outbound"], "priority": "warning",
        "tags": ["misp"], "domains": True, "rollout": "HotReload", "minRolloutInterval": "10m", "shardBytes": 65536,
        "exceptions": [{"name": "scanner", "fields": ["proc.name", "fd.sport"], "comps": ["=", "in"],
                        "values": [["nessusd", [443, "8443"]]],
                        "appliesTo": {"directions": ["outbound"], "kinds": ["addresses", "networks"]}}],
    },
    "refresh": {"interval": "1h"},
    "suspend": False,
    "reporting": {
        "sightings": {"enabled": True, "source": "{cluster}/{node}", "dedupWindow": "30m"},
        "events": {
            "enabled": True, "tags": ["tlp:amber"], "distribution": 1, "threatLevel": "high", "analysis": 1,
            "toIds": False, "published": False,
        },
    },
}  # fmt: skip
MAXIMAL_DELIVERY: dict[str, Any] = {
    "mode": "Rulesfiles",
    "rulesfile": {
        "priority": 70,
        "selector": {
            "matchLabels": {"kubernetes.io/os": "linux"},
            "matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": ["z"]}],
        },
    },
}
MAXIMAL_OCI: dict[str, Any] = {
    "reference": "registry.example.org:5000/security/misp-rules:stable",
    "credentialsSecretRef": {"name": "push-creds"},
    "caSecretRef": {"name": "registry-ca", "key": "ca.crt"},
    "plainHTTP": False,
    "insecureSkipVerify": False,
    "rulesfile": True,
    "pullSecretRef": {"name": "pull-creds"},
}
LOCATION = {
    "url": "https://feeds.example.org/x", "verifyTLS": True, "timeoutSeconds": 10,
    "headersSecretRef": {"name": "feed-headers"},  # issue 15: credentials as headers, never in the URL
}  # fmt: skip
MAXIMAL_SOURCES: list[dict[str, Any]] = [
    {
        "misp": {
            "url": "https://misp.example.org",
            "authKeySecretRef": {"name": "misp-auth", "key": "authkey"},
            "verifyTLS": True,
            "caBundleSecretRef": {"name": "misp-ca", "key": "ca.pem"},
            "timeoutSeconds": 30,
            "pageSize": 1000,
            "zmq": {"url": "tcp://misp.example.org:50000", "debounce": "10s"},
        }
    },
    {"misp": {"serverRef": {"kind": "ClusterMispServer", "name": "circl"}}},  # issue 15: a server resource
    {"mispFeed": dict(LOCATION)},
    {"file": dict(LOCATION)},
    {"text": {**LOCATION, "types": ["ip-src"], "minScore": 3}},
]


def maximal_specs() -> Iterator[dict[str, Any]]:
    """Specs that, together, set every field feed/parse.py knows."""
    for source in MAXIMAL_SOURCES:
        filters = copy.deepcopy(MAXIMAL_FILTERS)
        if "misp" not in source:
            filters.pop("enforceWarninglist")
            filters.pop("excludeDecayed")
        rest = copy.deepcopy(MAXIMAL_REST)
        if "misp" not in source:  # reporting writes to the MISP server the feed reads
            rest["reporting"] = {"sightings": {"enabled": False}, "events": {"enabled": False}}
        if "file" in source:  # the falco-operator's Rulesfiles: no DaemonSet (issue 16)
            rest["falco"].pop("daemonSet")
            rest["falco"]["delivery"] = copy.deepcopy(MAXIMAL_DELIVERY)
        if "mispFeed" in source:  # an OCI registry, and a Rulesfile pinned to the pushed digest (issue 16)
            rest["falco"].pop("daemonSet")
            rest["falco"]["delivery"] = {**copy.deepcopy(MAXIMAL_DELIVERY), "mode": "OCI", "oci": dict(MAXIMAL_OCI)}
        if "text" in source:  # a text list takes no filters (its types are source.text.types)
            yield {"source": copy.deepcopy(source), **rest}
        else:
            yield {"source": copy.deepcopy(source), "filters": filters, **rest}


def _normal(path: str) -> str:
    return re.sub(r"\[\d+\]", "[]", path)


def test_schema_has_exactly_the_fields_spec_py_reads(schema: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    read: set[str] = set()
    for method in ("raw", "has"):  # every key the parser looks at goes through one of these
        original = getattr(spec_module._Reader, method)

        def recording(self: Any, key: str, _original: Any = original) -> Any:
            read.add(_normal(self.at(key)))
            return _original(self, key)

        monkeypatch.setattr(spec_module._Reader, method, recording)
    for spec in maximal_specs():
        parse_spec(spec)
    read = {p for p in read if p.startswith("spec.")}
    in_schema: set[str] = set()
    for path, _node in nodes(schema["properties"]["spec"], "spec"):
        if path != "spec" and not path.endswith(("[]", ".*")):  # a map's values are read through its key
            in_schema.add(re.sub(r"\[\]\.", "[].", path))
    # feed/parse.py reads list items through the list's key; the schema names the items' properties with "[]".
    assert sorted(in_schema - read) == []
    assert sorted(read - in_schema) == []


def test_maximal_specs_are_admitted(schema: dict[str, Any]) -> None:
    """Schema and every CEL rule (the tests' own sample feeds)."""
    for spec in maximal_specs():
        doc = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {"name": "x"}, "spec": spec}
        assert validate(doc, schema) == []
        assert admission_errors(doc, schema) == []


@pytest.mark.parametrize("source", MAXIMAL_SOURCES, ids=lambda s: next(iter(s)))
def test_schema_defaults_are_spec_py_defaults(schema: dict[str, Any], source: dict[str, Any]) -> None:
    ((kind, cfg),) = source.items()
    required = {"url": cfg["url"]} if "url" in cfg else dict(cfg)  # serverRef: nothing else
    if kind == "misp" and "url" in cfg:
        required["authKeySecretRef"] = cfg["authKeySecretRef"]
    sparse: dict[str, Any] = {"source": {kind: required}}
    sparse.update({"filters": {}, "exclusions": {}, "limits": {}, "falco": {}, "refresh": {}})
    sparse["reporting"] = {"sightings": {}, "events": {}}
    defaulted = apply_defaults(sparse, schema["properties"]["spec"])
    assert defaulted != sparse
    assert parse_spec(defaulted) == parse_spec(sparse)


# ------------------------------------------------------------------------------------------------ examples
def test_there_are_example_feeds() -> None:
    assert len(example_feeds()) >= 3
    assert "gitops/feeds/ipsum.yaml" in {name for name, _doc in example_feeds()}  # subfolders too


@pytest.mark.parametrize(("name", "doc"), example_feeds(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_feeds_validate_and_parse(schema: dict[str, Any], name: str, doc: dict[str, Any]) -> None:
    assert validate(doc, schema) == [], name
    assert admission_errors(doc, schema) == [], name  # defaults applied, CEL rules evaluated
    feed = parse_feed(doc)
    assert feed.name == doc["metadata"]["name"]


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        ({"refresh": {"interval": "5"}}, ".spec.refresh.interval"),
        ({"falco": {"rollout": "Sometimes"}}, ".spec.falco.rollout"),
        ({"limits": {"maxDropPercent": 101}}, ".spec.limits.maxDropPercent"),
        ({"filters": {"typo": 1}}, ".spec.filters.typo: unknown field"),
        ({"falco": {"shardBytes": 1024}}, ".spec.falco.shardBytes"),
        ({"exclusions": {"cidrs": ["example.org"]}}, ".spec.exclusions.cidrs[0]"),
        ({"filters": {"minThreatLevel": 2.5}}, ".spec.filters.minThreatLevel"),
    ],
)
def test_schema_rejects_what_spec_py_rejects(schema: dict[str, Any], patch: dict[str, Any], error: str) -> None:
    spec: dict[str, Any] = {"source": {"file": {"url": "x.json"}}, **patch}
    doc = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {"name": "x"}, "spec": spec}
    errors = validate(doc, schema)
    assert any(e.startswith(error) for e in errors), errors
    with pytest.raises(spec_module.SpecError):
        parse_spec(spec)


@pytest.mark.parametrize(
    ("values", "mount"),
    [("falco-values.yaml", "/etc/falco/rules.d"), ("falco-values-with-customrules.yaml", "/etc/falco/misp.d")],
)
def test_falco_values_mount_every_possible_shard(values: str, mount: str) -> None:
    """The falco chart values list one optional ConfigMap per shard the example feed can write, where Falco reads."""
    (feed_doc,) = [doc for name, doc in example_feeds() if name == "misp-feed.yaml"]
    feed = parse_feed(feed_doc)
    doc = yaml.safe_load((REPO / "examples" / values).read_text(encoding="utf-8"))
    (volume,) = doc["mounts"]["volumes"]
    sources = volume["projected"]["sources"]
    names = [f"{feed.config_map_prefix}-{i}" for i in range(feed.spec.falco.max_shards)]
    assert [s["configMap"]["name"] for s in sources] == names
    assert all(s["configMap"]["optional"] is True for s in sources)
    (volume_mount,) = doc["mounts"]["volumeMounts"]
    assert volume_mount == {"name": volume["name"], "mountPath": mount, "readOnly": True}
    if "customRules" in doc:
        assert mount in doc["falco"]["rules_files"]
        assert doc["falco"]["rules_files"].index(mount) > doc["falco"]["rules_files"].index("/etc/falco/rules.d")


def test_status_fields_outside_the_schema_are_found_as_a_server_prunes_them() -> None:
    status = schema_of(load_crd())["properties"]["status"]
    written = {
        "conflict": {"configMap": "falco/x-0", "fingerprint": "ab"},
        "indicators": {"byKind": {"outbound_addresses": 1}, "bogus": 2},
        "conditions": [{"type": "Serving", "status": "True", "extra": 1}],
        "kopf": {"progress": {}},
    }
    assert pruned_fields(written, status, ".status") == [
        ".status.indicators.bogus",
        ".status.conditions[0].extra",
        ".status.kopf",
    ]
