"""Every example under examples/ is usable as written: MispFeeds pass the CRD's schema (through a JSON-schema validator)
and the operator's own parser, other manifests pass the Kubernetes schemas, the falcosecurity/falco chart values mount
exactly the ConfigMaps the feeds produce, and the GitOps layout points at real files.

The falcosecurity chart itself is not available offline, so its values files are checked for the keys and shapes
shared/reference/FALCO.md describes (mounts.volumes / mounts.volumeMounts, falco.rules_files, customRules), and their
volumes and mounts are validated as a real Pod spec.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.version import Version

from deploy.chartkit import CRD_SOURCE, REPO, chart, kube_errors, load_yaml_docs
from falco_misp.feed.allowlist import ALLOW_LIST_KIND, parse_allow_list
from falco_misp.feed.model import KIND, ServerKind
from falco_misp.feed.parse import parse_feed
from falco_misp.feed.servers import PLURALS, parse_server

EXAMPLES = REPO / "examples"
GITOPS = EXAMPLES / "gitops"
# Which feeds each falcosecurity/falco values file mounts (each must mount all their shards, nothing else).
MOUNTED_FEEDS = {
    "falco-values.yaml": ["misp-feed.yaml"],
    "falco-values-restart.yaml": ["misp-feed.yaml"],
    "falco-values-with-customrules.yaml": ["misp-feed.yaml"],
    "falco-chart/values-misp.yaml": ["connector-defaults.yaml"],
    "falco-chart/values-two-feeds.yaml": ["two-feeds.yaml"],
    "falco-chart/values-two-feeds-customrules.yaml": ["two-feeds.yaml"],
}
# The falcosecurity chart's default falco.rules_files (FALCO.md) and where customRules are mounted.
DEFAULT_RULES_FILES = ["/etc/falco/falco_rules.yaml", "/etc/falco/falco_rules.local.yaml", "/etc/falco/rules.d"]
CUSTOM_RULES_DIR = "/etc/falco/rules.d"


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 (structural) CRD schema as JSON Schema; unknown fields are errors, as with kubectl's strict
    field validation. CEL rules (x-kubernetes-validations) are left to spec.parse_feed, which enforces the same."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_json_schema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key.startswith("x-kubernetes-") or key in ("nullable", "default", "description"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node and not preserve:
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def feed_validator() -> jsonschema.Draft202012Validator:
    (crd,) = load_yaml_docs(CRD_SOURCE)
    (version,) = crd["spec"]["versions"]
    schema = to_json_schema(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator: jsonschema.Draft202012Validator, doc: dict[str, Any]) -> list[str]:
    return sorted(
        f"{'.'.join(str(p) for p in e.absolute_path) or '.'}: {e.message}" for e in validator.iter_errors(doc)
    )


def kustomization() -> dict[str, Any]:
    (doc,) = load_yaml_docs(GITOPS / "kustomization.yaml")
    return dict(doc)


def falco_values_files() -> list[str]:
    """Every falcosecurity/falco values file under examples/."""
    found = [*EXAMPLES.glob("falco-values*.yaml"), *(EXAMPLES / "falco-chart").glob("*.yaml")]
    return sorted(str(p.relative_to(EXAMPLES)) for p in found)


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    """(path, document) of every manifest under examples/ (Falco chart values and the kustomization excluded), with
    the kustomization's namespace applied to the GitOps feeds as `kubectl apply -k` would."""
    out: list[tuple[str, dict[str, Any]]] = []
    kustomized = {str((GITOPS / r).relative_to(EXAMPLES)) for r in kustomization()["resources"]}
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        rel = str(path.relative_to(EXAMPLES))
        # examples/alerts/ (chart values and cert-manager objects): tests/deploy/test_alert_endpoint_chart.py
        if rel in falco_values_files() or path.name == "kustomization.yaml" or rel.startswith("alerts/"):
            continue
        for doc in load_yaml_docs(path):
            assert isinstance(doc, dict) and "kind" in doc, f"{rel}: not a manifest"
            manifest = copy.deepcopy(doc)
            if rel in kustomized:
                manifest["metadata"]["namespace"] = kustomization()["namespace"]
            out.append((rel, manifest))
    return out


def feeds_in(name: str) -> list[dict[str, Any]]:
    return [d for d in load_yaml_docs(EXAMPLES / name) if d.get("kind") == KIND]


DOCUMENTS = example_documents()
FEEDS = [(p, d) for p, d in DOCUMENTS if d["kind"] == KIND]
ALLOW_LISTS = [(p, d) for p, d in DOCUMENTS if d["kind"] == ALLOW_LIST_KIND]
SERVER_KINDS = {k.value: k for k in ServerKind}  # ClusterMispServer, MispServer (issue 15)
SERVERS = [(p, d) for p, d in DOCUMENTS if d["kind"] in SERVER_KINDS]
OTHERS = [
    (p, d)
    for p, d in DOCUMENTS
    if d["kind"] not in (KIND, ALLOW_LIST_KIND, *SERVER_KINDS) and d["apiVersion"] != "argoproj.io/v1alpha1"
]


def _id(value: object) -> str:
    return value if isinstance(value, str) else ""


# -------------------------------------------------------------------------------------------------- MispFeeds
def test_there_are_the_examples_the_docs_name() -> None:
    names = {(p, d["metadata"]["name"]) for p, d in FEEDS}
    assert {
        ("connector-defaults.yaml", "connector-defaults"),
        ("sample-text-feed.yaml", "sample-ipsum"),
        ("two-feeds.yaml", "misp-circl"),
        ("two-feeds.yaml", "ipsum"),
        ("gitops/feeds/misp-circl.yaml", "misp-circl"),
        ("gitops/feeds/ipsum.yaml", "ipsum"),
    } <= names


@pytest.mark.parametrize(("path", "doc"), FEEDS, ids=[f"{p}:{d['metadata']['name']}" for p, d in FEEDS])
def test_feed_passes_the_crd_schema_and_the_parser(
    feed_validator: jsonschema.Draft202012Validator, path: str, doc: dict[str, Any]
) -> None:
    assert schema_errors(feed_validator, doc) == []
    feed = parse_feed(doc)
    assert (feed.name, feed.namespace) == (doc["metadata"]["name"], doc["metadata"]["namespace"])
    assert len(feed.name) <= 47


def test_the_schema_check_has_teeth(feed_validator: jsonschema.Draft202012Validator) -> None:
    (doc,) = feeds_in("connector-defaults.yaml")
    bad = copy.deepcopy(doc)
    bad["spec"]["filters"]["toIDs"] = True
    bad["spec"]["falco"]["rollout"] = "Sometimes"
    bad["spec"]["source"]["misp"]["timeoutSeconds"] = "30"
    errors = schema_errors(feed_validator, bad)
    assert any("toIDs" in e and "Additional properties" in e for e in errors), errors
    assert any(e.startswith("spec.falco.rollout:") for e in errors), errors
    assert any(e.startswith("spec.source.misp.timeoutSeconds:") for e in errors), errors


def test_connector_defaults_reproduce_the_original_connector() -> None:
    (feed,) = feeds_in("connector-defaults.yaml")
    spec = feed["spec"]
    misp = spec["source"]["misp"]
    assert misp["url"].startswith("https://")
    assert misp["authKeySecretRef"] == {"name": "misp-auth", "key": "authkey"}
    assert spec["filters"]["types"] == ["ip-src", "ip-dst"]
    assert spec["filters"]["toIds"] is True and spec["filters"]["published"] is True
    assert spec["filters"]["excludeDecayed"] is True
    secrets = [d for d in load_yaml_docs(EXAMPLES / "connector-defaults.yaml") if d["kind"] == "Secret"]
    assert [(s["metadata"]["name"], s["metadata"]["namespace"], list(s["stringData"])) for s in secrets] == [
        ("misp-auth", feed["metadata"]["namespace"], ["authkey"])
    ]
    parsed = parse_feed(feed)
    assert parsed.spec.source.misp is not None and parsed.spec.source.misp.auth_key is not None


def test_two_feeds_share_one_falco_without_colliding() -> None:
    feeds = [parse_feed(d) for d in feeds_in("two-feeds.yaml")]
    assert len(feeds) == 2
    assert len({f.spec.falco.namespace for f in feeds}) == 1
    assert len({f.config_map_prefix for f in feeds}) == 2
    names = [{f"{f.config_map_prefix}-{i}" for i in range(f.spec.falco.max_shards)} for f in feeds]
    assert not names[0] & names[1]
    assert len({f.rule_prefix for f in feeds}) == 2 and len({f.tag for f in feeds}) == 2


def test_config_map_names_in_docs_and_examples_are_those_the_feeds_write() -> None:
    """Every ``configMap: {name: ...}`` in the examples and docs is a shard an example feed writes (default prefix
    ``misp-<namespace>-<name>``): a stale name mounts nothing, silently (the sources are optional)."""
    written = {
        f"{feed.config_map_prefix}-{i}"
        for _, doc in FEEDS
        for feed in [parse_feed(doc)]
        for i in range(feed.spec.falco.max_shards)
    }
    texts = [*EXAMPLES.rglob("*.yaml"), REPO / "README.md", *(REPO / "docs").glob("*.md")]
    found = {
        (path.relative_to(REPO).as_posix(), name)
        for path in texts
        for name in re.findall(r"configMap: \{name: ([a-z0-9-]+)", path.read_text(encoding="utf-8"))
    }
    assert len(found) > 20
    assert sorted(f"{p}: {n}" for p, n in found if n not in written) == []


def test_example_feeds_work_with_the_default_chart_rbac() -> None:
    values = chart().values
    falco_namespaces = {values["falco"]["namespace"], *values["falco"]["extraNamespaces"]}
    for path, doc in FEEDS:
        feed = parse_feed(doc)
        assert feed.spec.falco.namespace in falco_namespaces, path
        if feed.spec.falco.daemon_set and values["falco"]["daemonSetNames"]:
            assert feed.spec.falco.daemon_set in values["falco"]["daemonSetNames"], path


# ----------------------------------------------------------------------------------------------- MispAllowLists
def test_allow_lists_pass_their_crd_schema_and_the_parser() -> None:
    (crd,) = load_yaml_docs(CRD_SOURCE.parent / "mispallowlists.falco-misp.io.yaml")
    (version,) = crd["spec"]["versions"]
    validator = jsonschema.Draft202012Validator(to_json_schema(version["schema"]["openAPIV3Schema"]))
    assert ALLOW_LISTS, "examples/allow-list.yaml holds one"
    for path, doc in ALLOW_LISTS:
        assert schema_errors(validator, doc) == [], path
        assert parse_allow_list(doc).name == doc["metadata"]["name"]
    bad = copy.deepcopy(ALLOW_LISTS[0][1])
    bad["spec"]["networkz"] = []
    assert schema_errors(validator, bad) != []


# ------------------------------------------------------------------------------- ClusterMispServer, MispServer
def test_servers_pass_their_crd_schema_and_the_parser() -> None:
    assert {d["kind"] for _, d in SERVERS} == set(SERVER_KINDS), "one example of each (docs name them)"
    for path, doc in SERVERS:
        kind = SERVER_KINDS[doc["kind"]]
        (crd,) = load_yaml_docs(CRD_SOURCE.parent / f"{PLURALS[kind]}.falco-misp.io.yaml")
        (version,) = crd["spec"]["versions"]
        validator = jsonschema.Draft202012Validator(to_json_schema(version["schema"]["openAPIV3Schema"]))
        assert schema_errors(validator, doc) == [], path
        meta = doc["metadata"]
        assert parse_server(kind, meta["name"], meta.get("namespace"), doc["spec"]).name == meta["name"]
        bad = copy.deepcopy(doc)
        bad["spec"]["urll"] = "typo"
        assert schema_errors(validator, bad) != []


# ------------------------------------------------------------------------------------------- other manifests
@pytest.mark.parametrize(("path", "doc"), OTHERS, ids=[f"{p}:{d['kind']}" for p, d in OTHERS])
def test_other_manifests_pass_the_kubernetes_schemas(path: str, doc: dict[str, Any]) -> None:
    assert kube_errors(doc) == []


# -------------------------------------------------------------------------------------- falcosecurity values
def falco_values(name: str) -> dict[str, Any]:
    (doc,) = load_yaml_docs(EXAMPLES / name)
    return dict(doc)


def test_every_falco_values_file_is_checked() -> None:
    assert falco_values_files() == sorted(MOUNTED_FEEDS)
    assert {bool(falco_values(n).get("customRules")) for n in MOUNTED_FEEDS} == {True, False}


@pytest.mark.parametrize("name", sorted(MOUNTED_FEEDS))
def test_falco_values_mount_every_shard_of_their_feeds(name: str) -> None:
    values = falco_values(name)
    # FALCO.md: the chart's mounts, falco.yaml settings, customRules, and metrics.enabled (Falco's rules sha256)
    assert set(values) <= {"mounts", "falco", "customRules", "metrics"}, "keys FALCO.md does not describe"
    mounts = values["mounts"]
    assert set(mounts) == {"volumes", "volumeMounts"}
    (volume,) = mounts["volumes"]
    (mount,) = mounts["volumeMounts"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True

    sources = volume["projected"]["sources"]
    assert all(set(s) == {"configMap"} and s["configMap"]["optional"] is True for s in sources), (
        "every shard must be optional: Falco starts before the first sync and with any subset"
    )
    mounted = [s["configMap"]["name"] for s in sources]
    expected = [
        f"{feed.config_map_prefix}-{i}"
        for file in MOUNTED_FEEDS[name]
        for feed in map(parse_feed, feeds_in(file))
        for i in range(feed.spec.falco.max_shards)
    ]
    assert mounted == expected

    rules_files = values.get("falco", {}).get("rules_files", DEFAULT_RULES_FILES)
    assert mount["mountPath"] in rules_files, "Falco must read the mounted directory"
    assert rules_files[: len(DEFAULT_RULES_FILES)] == DEFAULT_RULES_FILES, "keep the chart's own rules"
    if values.get("customRules"):
        assert mount["mountPath"] != CUSTOM_RULES_DIR, "the chart mounts customRules there"
        assert all(isinstance(v, str) for v in values["customRules"].values())
        for content in values["customRules"].values():
            for item in load_yaml_docs_text(content):
                assert not any(str(v).startswith("misp_") for v in item.values()), "misp_ names are the feeds'"

    # The volume and the mount as the Falco DaemonSet gets them: a valid pod spec.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "falco", "namespace": "falco"},
        "spec": {
            "containers": [{"name": "falco", "image": "falcosecurity/falco:0.44.1", "volumeMounts": [mount]}],
            "volumes": [volume],
        },
    }
    assert kube_errors(pod) == []


def load_yaml_docs_text(text: str) -> list[dict[str, Any]]:
    docs = yaml.safe_load(text)
    assert isinstance(docs, list)
    return [dict(d) for d in docs]


# ------------------------------------------------------------------------------------------------------ GitOps
def test_kustomization_lists_the_feeds() -> None:
    k = kustomization()
    assert (k["apiVersion"], k["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    assert k["namespace"] == chart().values["falco"]["namespace"]
    listed = sorted(GITOPS / r for r in k["resources"])
    on_disk = sorted(p for p in GITOPS.rglob("*.yaml") if p.name not in ("kustomization.yaml",))
    application = GITOPS / "argocd-application.yaml"
    assert listed == sorted(set(on_disk) - {application}), "every feed file is listed; the Application is not"
    for path in listed:
        docs = load_yaml_docs(path)
        assert [d["kind"] for d in docs] == [KIND]
        assert "namespace" not in docs[0]["metadata"], "the kustomization sets it"


def test_argocd_application_points_at_the_gitops_folder() -> None:
    (app,) = load_yaml_docs(GITOPS / "argocd-application.yaml")
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert app["metadata"]["namespace"] == "argocd"
    spec = app["spec"]
    source = spec["source"]
    assert (REPO / source["path"] / "kustomization.yaml").is_file()
    assert source["repoURL"].startswith("https://") and source["targetRevision"]
    assert spec["destination"] == {
        "server": "https://kubernetes.default.svc",
        "namespace": kustomization()["namespace"],
    }
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "ServerSideApply=true" in spec["syncPolicy"]["syncOptions"]
    assert "ignoreDifferences" not in spec  # the operator changes nothing of a MispFeed that Git holds


def test_kubernetes_validate_is_recent() -> None:
    assert Version(kubernetes_validate.__version__) >= Version("1.37.0")


def test_examples_folder_has_no_stray_files() -> None:
    allowed_suffixes = {".yaml", ".json", ".txt"}
    stray = [p for p in EXAMPLES.rglob("*") if p.is_file() and Path(p).suffix not in allowed_suffixes]
    assert stray == []
