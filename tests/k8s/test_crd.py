"""The MispFeed CRD: a valid structural schema that accepts exactly what spec.py accepts, with the same defaults.

No JSON-schema library is installed, so a small validator for the OpenAPI subset the CRD uses (types, required,
enum, pattern, bounds, nullable, int-or-string, unknown fields) checks the examples; each example also goes
through spec.parse_feed. The field list comes from spec.py itself: every key its parser reads while parsing a
spec that sets every field is recorded and compared with the schema's properties.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from falco_misp import spec as spec_module
from falco_misp.handlers import FEEDS
from falco_misp.spec import API_GROUP, API_VERSION, KIND, parse_feed, parse_spec

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "deploy" / "crds" / "mispfeeds.falco-misp.io.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    docs = list(yaml.safe_load_all(CRD_PATH.read_text(encoding="utf-8")))
    assert len(docs) == 1
    return docs[0]


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


# ----------------------------------------------------------------------------------------- a small validator
def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Errors of ``value`` against an OpenAPI v3 (structural) schema node; CEL rules are not evaluated."""
    if value is None:
        return [] if schema.get("nullable") else [f"{path}: must not be null"]
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        return [] if ok else [f"{path}: expected an integer or a string"]
    kind = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if not checks[kind](value):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if kind == "string":
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 10**9):
            errors.append(f"{path}: length {len(value)} out of bounds")
    if kind in ("integer", "number") and not schema.get("minimum", -(10**18)) <= value <= schema.get("maximum", 10**18):
        errors.append(f"{path}: {value} out of bounds")
    if kind == "array":
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 10**9):
            errors.append(f"{path}: {len(value)} items out of bounds")
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    if kind == "object":
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}.{key}: required")
        for key, item in value.items():
            if key in props:
                errors += validate(item, props[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(item, schema["additionalProperties"], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and path != ".metadata":
                errors.append(f"{path}.{key}: unknown field")
    return errors


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (``.spec.filters.anyOf[].tags.any[]``)."""
    yield path, schema
    for key, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")


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
    assert columns["Indicators"]["jsonPath"] == ".status.indicators.total"
    assert columns["Last Sync"]["type"] == "date"


def test_schema_is_structural_and_documented(schema: dict[str, Any]) -> None:
    problems: list[str] = []
    for path, node in nodes(schema):
        if not node.get("x-kubernetes-int-or-string") and "type" not in node:
            problems.append(f"{path}: no type")
        if path and not path.endswith(".*") and not node.get("description"):
            problems.append(f"{path}: no description")
        for banned in ("anyOf", "oneOf", "allOf", "not", "$ref", "definitions"):
            if banned in node:  # a property *named* anyOf lives under "properties", not here
                problems.append(f"{path}: {banned} (not structural without care)")
        typed = bool(node.get("properties")) or isinstance(node.get("additionalProperties"), dict)
        if node.get("type") == "object" and path not in ("", ".metadata") and not typed:
            problems.append(f"{path}: an object without properties")
        if "default" in node:
            problems += [f"{path} default: {e}" for e in validate(node["default"], node, path)]
        for rule in node.get("x-kubernetes-validations", []):
            if not rule.get("rule") or not rule.get("message"):
                problems.append(f"{path}: a validation rule without a message")
    assert problems == []
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
    assert spec["properties"]["source"]["properties"]["misp"]["required"] == ["url", "authKeySecretRef"]
    duration = spec["properties"]["refresh"]["properties"]["interval"]["pattern"]
    assert [bool(re.search(duration, d)) for d in ("90s", "15m", "1h", "30d", "2w", "0m", "1y", "1.5h")] == [
        True, True, True, True, True, False, False, False
    ]  # fmt: skip
    cidr = spec["properties"]["exclusions"]["properties"]["cidrs"]["items"]["pattern"]
    assert all(re.search(cidr, c) for c in ("10.0.0.0/8", "203.0.113.7", "2001:db8::/32", "::1"))
    assert not any(re.search(cidr, c) for c in ("example.org", "10.0.0.0/8 ", ""))


# ---------------------------------------------------------------------------------- the same fields as spec.py
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
    },
    "limits": {
        "maxIndicators": 1000, "maxDropPercent": 50, "minPrefixV4": 16, "minPrefixV6": 32, "maxDomains": 10,
        "cidrWarnThreshold": 100, "expandPrefixV4": 24, "expandPrefixV6": 120, "maxExpandedAddresses": 1000,
    },
    "falco": {
        "namespace": "falco", "daemonSet": "falco", "selector": "app.kubernetes.io/name=falco",
        "configMapPrefix": "misp", "maxShards": 4, "directions": ["inbound", "outbound"], "priority": "warning",
        "tags": ["misp"], "domains": True, "rollout": "HotReload", "minRolloutInterval": "10m", "shardBytes": 65536,
    },
    "refresh": {"interval": "1h"},
    "reporting": {
        "sightings": {"enabled": True, "source": "{cluster}/{node}", "dedupWindow": "30m"},
        "events": {
            "enabled": True, "tags": ["tlp:amber"], "distribution": 1, "threatLevel": "high", "analysis": 1,
            "toIds": False, "published": False,
        },
    },
}  # fmt: skip
LOCATION = {"url": "https://feeds.example.org/x", "verifyTLS": True, "timeoutSeconds": 10}
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
    {"mispFeed": dict(LOCATION)},
    {"file": dict(LOCATION)},
    {"text": {**LOCATION, "types": ["ip-src"], "minScore": 3}},
]


def maximal_specs() -> Iterator[dict[str, Any]]:
    """Specs that, together, set every field spec.py knows."""
    for source in MAXIMAL_SOURCES:
        filters = copy.deepcopy(MAXIMAL_FILTERS)
        if "misp" not in source:
            filters.pop("enforceWarninglist")
            filters.pop("excludeDecayed")
        rest = copy.deepcopy(MAXIMAL_REST)
        if "misp" not in source:  # reporting writes to the MISP server the feed reads
            rest["reporting"] = {"sightings": {"enabled": False}, "events": {"enabled": False}}
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
        if path != "spec" and not path.endswith("[]"):
            in_schema.add(re.sub(r"\[\]\.", "[].", path))
    # spec.py reads list items through the list's key; the schema names the items' properties with "[]".
    assert sorted(in_schema - read) == []
    assert sorted(read - in_schema) == []


def test_maximal_specs_validate_against_the_schema(schema: dict[str, Any]) -> None:
    for spec in maximal_specs():
        doc = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {"name": "x"}, "spec": spec}
        assert validate(doc, schema) == []


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """What the API server's defaulting does: fill absent properties that have a default (recursively)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        out = dict(value)
        for key, child in schema.get("properties", {}).items():
            if key not in out and "default" in child:
                out[key] = copy.deepcopy(child["default"])
            if key in out:
                out[key] = apply_defaults(out[key], child)
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


@pytest.mark.parametrize("source", MAXIMAL_SOURCES, ids=lambda s: next(iter(s)))
def test_schema_defaults_are_spec_py_defaults(schema: dict[str, Any], source: dict[str, Any]) -> None:
    ((kind, cfg),) = source.items()
    required = {"url": cfg["url"]}
    if kind == "misp":
        required["authKeySecretRef"] = cfg["authKeySecretRef"]
    sparse: dict[str, Any] = {"source": {kind: required}}
    sparse.update({"filters": {}, "exclusions": {}, "limits": {}, "falco": {}, "refresh": {}})
    sparse["reporting"] = {"sightings": {}, "events": {}}
    defaulted = apply_defaults(sparse, schema["properties"]["spec"])
    assert defaulted != sparse
    assert parse_spec(defaulted) == parse_spec(sparse)


# ------------------------------------------------------------------------------------------------ examples
def example_feeds() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == KIND:
                out.append((path.name, doc))
    return out


def test_there_are_example_feeds() -> None:
    assert len(example_feeds()) >= 3


@pytest.mark.parametrize(("name", "doc"), example_feeds(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_feeds_validate_and_parse(schema: dict[str, Any], name: str, doc: dict[str, Any]) -> None:
    assert validate(doc, schema) == [], name
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
