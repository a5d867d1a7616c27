"""The Helm chart: rendered by a real Helm (helm-python-sdk) with its defaults and with every non-default branch; every
object validates against the Kubernetes schemas; values.schema.json refuses wrong values at install time; the chart's
CRD is deploy/crds/ byte for byte; the Deployment runs the real ``falco-misp run`` command line.
"""

from __future__ import annotations

import copy
from typing import Any

import helm_python as helm
import pytest

from deploy.chartkit import (
    CHART,
    CRD_SOURCE,
    NAMESPACE,
    RELEASE,
    Rendered,
    chart,
    grants,
    kube_errors,
    load_yaml_docs,
    render,
)
from falco_misp.cli import build_parser

NETWORK_POLICY: dict[str, Any] = {
    "enabled": True,
    "apiServer": {"cidrs": ["172.18.0.2/32", "fd00:10::1/128"], "ports": [6443]},
    "misp": [
        {"cidr": "203.0.113.10/32", "ports": [443]},
        {"cidr": "198.51.100.0/24", "except": ["198.51.100.128/25"], "ports": [443, 8443]},
    ],
    "extraEgress": [{"to": [{"ipBlock": {"cidr": "192.0.2.8/32"}}], "ports": [{"protocol": "TCP", "port": 3128}]}],
}
# Every value that changes what the templates emit, grouped so each render takes a different branch.
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {
        "operator": {"watchNamespaces": ["security", "team-b", "security"], "logLevel": "debug", "logFormat": "plain"},
        "metrics": {"port": 9100, "scrapeAnnotations": True},
        "rbac": {"secrets": {"names": ["misp-auth", "misp-ca"]}},
        "falco": {"extraNamespaces": ["falco-b"], "daemonSetNames": []},
    },
    "cluster-wide-feeds-narrow-secrets": {"rbac": {"secrets": {"namespaces": ["security"]}}},
    "network-policy": {"networkPolicy": NETWORK_POLICY},
    "network-policy-no-dns": {
        "networkPolicy": {**NETWORK_POLICY, "dns": {"enabled": False}, "extraEgress": []},
    },
    "everything-else": {
        "fullnameOverride": "intel-operator",
        "image": {"repository": "registry.example.org/sec/falco-misp-operator", "digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": [{"name": "registry-creds"}],
        "serviceAccount": {"create": False, "name": "intel-sa"},
        "service": {"enabled": False},
        "livenessProbe": {"enabled": False},
        "readinessProbe": {"enabled": True, "periodSeconds": 3},
        "health": {"port": 8081, "path": "/health/live"},
        "metrics": {"enabled": False},
        "extraEnv": [
            {"name": "HTTPS_PROXY", "value": "http://proxy.example.org:3128"},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": 1, "memory": "2Gi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "security", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}
                    ]
                }
            }
        },
        "podAnnotations": {"prometheus.io/scrape": "false"},
        "podLabels": {"team": "secops"},
        "priorityClassName": "system-cluster-critical",
        "tmpSizeLimit": "16Mi",
        "operator": {"tickSeconds": 5},
    },
    "rbac-off": {"rbac": {"create": False}},
    "alerts": {
        "alerts": {
            "enabled": True,
            "port": 8443,
            "tokenSecret": {"name": "falco-alerts", "key": "token"},
            "clusterName": "prod-eu",
        }
    },
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, Rendered]:
    return {name: render(values) for name, values in CASES.items()}


def container(r: Rendered) -> dict[str, Any]:
    (c,) = r.one("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def run_args(r: Rendered) -> Any:
    """The container's arguments parsed by the real ``falco-misp`` parser (the image's entrypoint is ``run``)."""
    return build_parser().parse_args(["run", *container(r)["args"]])


def test_alert_endpoint(rendered: dict[str, Rendered]) -> None:
    r = rendered["alerts"]
    args = run_args(r)
    assert (args.alerts_port, str(args.alerts_token_file), args.cluster_name) == (
        8443, "/var/run/secrets/falco-misp-alerts/token", "prod-eu"
    )  # fmt: skip
    c = container(r)
    assert {"name": "alerts", "containerPort": 8443, "protocol": "TCP"} in c["ports"]
    assert {"name": "alerts-token", "mountPath": "/var/run/secrets/falco-misp-alerts", "readOnly": True} in c[
        "volumeMounts"
    ]
    volumes = r.one("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "alerts-token", "secret": {"secretName": "falco-alerts", "defaultMode": 0o400}} in volumes
    assert {"name": "alerts", "port": 8443, "targetPort": "alerts", "protocol": "TCP"} in r.one("Service")["spec"][
        "ports"
    ]
    assert rendered["defaults"].one("Deployment") and run_args(rendered["defaults"]).alerts_port == 0
    with pytest.raises(Exception, match=r"tokenSecret\.name is required"):
        render({"alerts": {"enabled": True}})
    with pytest.raises(Exception, match=r"alerts\.port must differ"):
        render({"alerts": {"enabled": True, "port": 9090, "tokenSecret": {"name": "t", "key": "token"}}})


# ---------------------------------------------------------------------------------------------- every branch
@pytest.mark.parametrize("case", list(CASES))
def test_every_rendered_object_validates(rendered: dict[str, Rendered], case: str) -> None:
    r = rendered[case]
    assert r.objects
    errors = [e for obj in r.objects for e in kube_errors(obj)]
    assert errors == []
    for obj in r.objects:
        meta = obj["metadata"]
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert meta.get("namespace"), f"{obj['kind']} {meta['name']}: no namespace"
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_defaults(rendered: dict[str, Rendered]) -> None:
    r = rendered["defaults"]
    kinds = sorted(o["kind"] for o in r.objects)
    assert kinds == sorted(
        ["Deployment", "ServiceAccount", "Service", "Role", "RoleBinding"] + ["ClusterRole", "ClusterRoleBinding"] * 3
    )
    deployment = r.one("Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == r.one("ServiceAccount")["metadata"]["name"] == RELEASE
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    c = container(r)
    assert c["image"] == "falco-misp-operator:0.1.0"  # the chart's appVersion
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert c["resources"]["limits"]["memory"] == "1Gi"
    assert "cpu" not in c["resources"]["limits"]  # no CPU throttling of a bursty sync
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    args = run_args(r)
    assert args.all_namespaces and args.namespaces == []
    assert (args.log_format, args.verbose, args.tick_seconds) == ("json", False, 30.0)
    assert args.max_response_bytes == 256 * 1024 * 1024  # fits the 1Gi memory limit with room
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert args.metrics_port == 9090
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}

    service = r.one("Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"},
    ]
    assert "annotations" not in deployment["spec"]["template"]["metadata"]
    assert not r.of_kind("NetworkPolicy")

    assert "kubectl apply -f examples/connector-defaults.yaml" in r.notes
    assert "examples/falco-chart/values-misp.yaml" in r.notes
    assert "It watches MispFeeds in every namespace." in r.notes


# ClusterMispServers (issue 15): read by syncs, watched and their status written (kopf's finalizer: patch), whatever
# the namespaces watched; namespaces read for a server's allowedNamespaces.selector.
SERVER_GRANTS = {
    ("get", "falco-misp.io/clustermispservers", None, None),
    ("list", "falco-misp.io/clustermispservers", None, None),
    ("watch", "falco-misp.io/clustermispservers", None, None),
    ("patch", "falco-misp.io/clustermispservers", None, None),
    ("patch", "falco-misp.io/clustermispservers/status", None, None),
    ("get", "namespaces", None, None),
}


def test_default_rbac_is_cluster_wide_for_feeds_and_scoped_for_falco(rendered: dict[str, Rendered]) -> None:
    granted = grants(rendered["defaults"].objects, account=RELEASE, namespace=NAMESPACE)
    table = {(g.verb, g.resource, g.namespace, g.names) for g in granted}
    assert table == {
        ("list", "apiextensions.k8s.io/customresourcedefinitions", None, None),
        ("watch", "apiextensions.k8s.io/customresourcedefinitions", None, None),
        ("list", "falco-misp.io/mispfeeds", None, None),
        ("watch", "falco-misp.io/mispfeeds", None, None),
        ("patch", "falco-misp.io/mispfeeds", None, None),
        ("patch", "falco-misp.io/mispfeeds/status", None, None),
        ("get", "falco-misp.io/mispallowlists", None, None),  # cluster-scoped: read before a sync, watched
        ("list", "falco-misp.io/mispallowlists", None, None),
        ("watch", "falco-misp.io/mispallowlists", None, None),
        *SERVER_GRANTS,  # issue 15
        ("get", "falco-misp.io/mispservers", None, None),  # with the feeds: cluster-wide here
        ("list", "falco-misp.io/mispservers", None, None),
        ("watch", "falco-misp.io/mispservers", None, None),
        ("patch", "falco-misp.io/mispservers", None, None),
        ("patch", "falco-misp.io/mispservers/status", None, None),
        ("create", "events", None, None),
        ("get", "secrets", None, None),
        ("list", "configmaps", "falco", None),
        ("create", "configmaps", "falco", None),
        ("patch", "configmaps", "falco", None),
        ("delete", "configmaps", "falco", None),
        ("list", "pods", "falco", None),  # the Falco pods whose metrics confirm delivery
        ("list", "apps/daemonsets", "falco", None),
        ("get", "apps/daemonsets", "falco", frozenset({"falco"})),
        ("patch", "apps/daemonsets", "falco", frozenset({"falco"})),
    }


def test_namespaced(rendered: dict[str, Rendered]) -> None:
    r = rendered["namespaced"]
    args = run_args(r)
    assert args.namespaces == ["security", "team-b"] and not args.all_namespaces
    assert (args.log_format, args.verbose, args.metrics_port) == ("plain", True, 9100)
    assert {p["name"]: p["containerPort"] for p in container(r)["ports"]} == {"http": 8080, "metrics": 9100}
    assert r.one("Deployment")["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9100",
        "prometheus.io/path": "/metrics",
    }
    assert {p["name"]: p["port"] for p in r.one("Service")["spec"]["ports"]} == {"http": 8080, "metrics": 9100}
    granted = grants(r.objects, account=RELEASE, namespace=NAMESPACE)
    cluster = {(g.verb, g.resource) for g in granted if g.namespace is None}
    assert cluster == {
        ("list", "apiextensions.k8s.io/customresourcedefinitions"),
        ("watch", "apiextensions.k8s.io/customresourcedefinitions"),
        ("list", "namespaces"),  # kopf matches the namespaces it serves against the cluster's
        ("watch", "namespaces"),
        ("get", "falco-misp.io/mispallowlists"),  # cluster-scoped whatever the namespaces watched
        ("list", "falco-misp.io/mispallowlists"),
        ("watch", "falco-misp.io/mispallowlists"),
        *{(verb, resource) for verb, resource, _, _ in SERVER_GRANTS},
    }
    for namespace in ("security", "team-b"):
        local = {(g.verb, g.resource, g.names) for g in granted if g.namespace == namespace}
        assert local == {
            ("list", "falco-misp.io/mispfeeds", None),
            ("watch", "falco-misp.io/mispfeeds", None),
            ("patch", "falco-misp.io/mispfeeds", None),
            ("patch", "falco-misp.io/mispfeeds/status", None),
            ("get", "falco-misp.io/mispservers", None),
            ("list", "falco-misp.io/mispservers", None),
            ("watch", "falco-misp.io/mispservers", None),
            ("patch", "falco-misp.io/mispservers", None),
            ("patch", "falco-misp.io/mispservers/status", None),
            ("create", "events", None),
            ("get", "secrets", frozenset({"misp-auth", "misp-ca"})),
        }
    # ClusterMispServers' Secrets: in the release namespace (issue 15), narrowed by the same names.
    assert {(g.verb, g.resource, g.names) for g in granted if g.namespace == NAMESPACE} == {
        ("get", "secrets", frozenset({"misp-auth", "misp-ca"}))
    }
    for namespace in ("falco", "falco-b"):
        local = {(g.verb, g.resource, g.names) for g in granted if g.namespace == namespace}
        assert local == {
            ("list", "configmaps", None),
            ("create", "configmaps", None),
            ("patch", "configmaps", None),
            ("delete", "configmaps", None),
            ("list", "pods", None),
            ("get", "apps/daemonsets", None),  # falco.daemonSetNames: [] -> any DaemonSet there
            ("list", "apps/daemonsets", None),
            ("patch", "apps/daemonsets", None),
        }
    assert {g.namespace for g in granted} == {None, "security", "team-b", "falco", "falco-b", NAMESPACE}
    assert "It watches MispFeeds in: security, team-b." in r.notes
    assert "falco, falco-b" in r.notes


def test_secrets_narrowed_while_feeds_are_cluster_wide(rendered: dict[str, Rendered]) -> None:
    granted = grants(rendered["cluster-wide-feeds-narrow-secrets"].objects, account=RELEASE, namespace=NAMESPACE)
    secrets = {(g.verb, g.namespace) for g in granted if g.resource == "secrets"}
    assert secrets == {("get", "security"), ("get", NAMESPACE)}  # and the ClusterMispServers' (issue 15)
    assert ("list", "falco-misp.io/mispfeeds", None) in {(g.verb, g.resource, g.namespace) for g in granted}


def test_no_wildcards_and_no_secret_listing(rendered: dict[str, Rendered]) -> None:
    for case, r in rendered.items():
        for g in grants(r.objects, account=RELEASE, namespace=NAMESPACE):
            assert "*" not in (g.verb, g.resource) and not g.resource.startswith("*/"), (case, g)
            assert g.verb in {"get", "list", "watch", "create", "patch", "delete"}, (case, g)
            if g.resource == "secrets":
                assert g.verb == "get", (case, g)


def test_network_policy(rendered: dict[str, Rendered]) -> None:
    r = rendered["network-policy"]
    policy = r.one("NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == r.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Egress"]
    api, misp_a, misp_b, dns, falco_metrics, extra = spec["egress"]
    assert api == {
        "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}, {"ipBlock": {"cidr": "fd00:10::1/128"}}],
        "ports": [{"protocol": "TCP", "port": 6443}],
    }
    assert misp_a == {"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    assert misp_b["to"] == [{"ipBlock": {"cidr": "198.51.100.0/24", "except": ["198.51.100.128/25"]}}]
    assert [p["port"] for p in misp_b["ports"]] == [443, 8443]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]
    assert falco_metrics == {  # each Falco pod's metrics: which rules it loaded (condition Delivered)
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "falco"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "falco"}},
        }],
        "ports": [{"protocol": "TCP", "port": 8765}],
    }  # fmt: skip
    assert extra == NETWORK_POLICY["extraEgress"][0]
    assert "WARNING" not in r.notes

    no_dns = rendered["network-policy-no-dns"].one("NetworkPolicy")["spec"]["egress"]
    assert len(no_dns) == 4 and all("ipBlock" in e["to"][0] for e in no_dns[:3])


def test_network_policy_without_misp_warns() -> None:
    r = render({"networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}}})
    assert len(r.one("NetworkPolicy")["spec"]["egress"]) == 3  # API server, DNS, Falco's metrics
    assert "networkPolicy.misp is empty" in r.notes


def test_everything_else(rendered: dict[str, Rendered]) -> None:
    r = rendered["everything-else"]
    values = CASES["everything-else"]
    deployment = r.one("Deployment")
    assert deployment["metadata"]["name"] == "intel-operator"
    pod = deployment["spec"]["template"]["spec"]
    c = container(r)
    assert c["image"] == f"registry.example.org/sec/falco-misp-operator@sha256:{'ab' * 32}"
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert pod["serviceAccountName"] == "intel-sa" and not r.of_kind("ServiceAccount")
    assert not r.of_kind("Service")
    assert "livenessProbe" not in c
    assert c["readinessProbe"]["periodSeconds"] == 3
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8081, "protocol": "TCP"}]
    assert run_args(r).liveness == "http://0.0.0.0:8081/health/live"
    assert run_args(r).metrics_port == 0  # metrics off
    assert run_args(r).tick_seconds == 5.0
    assert c["env"][2:] == values["extraEnv"]
    assert c["resources"] == values["resources"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert pod[key] == values[key]
    template_meta = deployment["spec"]["template"]["metadata"]
    assert template_meta["annotations"] == values["podAnnotations"]
    assert template_meta["labels"]["team"] == "secops"
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}} in pod["volumes"]
    subjects = [s for o in r.objects if o["kind"].endswith("Binding") for s in o["subjects"]]
    assert subjects and all(
        s == {"kind": "ServiceAccount", "name": "intel-sa", "namespace": NAMESPACE} for s in subjects
    )
    assert all(o["metadata"]["name"].startswith("intel-operator") for o in r.objects if o["kind"] != "Deployment")


def test_rbac_off(rendered: dict[str, Rendered]) -> None:
    kinds = {o["kind"] for o in rendered["rbac-off"].objects}
    assert kinds == {"Deployment", "ServiceAccount", "Service"}


# ------------------------------------------------------------------------------------------ values.schema.json
BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"imagee": {"tag": "1"}}, "imagee"),
    ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
    ({"operator": {"logLevel": "trace"}}, "/operator/logLevel"),
    ({"operator": {"watchNamespaces": ["team-*"]}}, "/operator/watchNamespaces/0"),
    ({"operator": {"watchNamespaces": "security"}}, "/operator/watchNamespaces"),
    ({"operator": {"tickSeconds": 0}}, "/operator/tickSeconds"),
    ({"alerts": {"port": 0}}, "/alerts/port"),
    ({"alerts": {"tokenSecret": {"name": "Bad_Name"}}}, "/alerts/tokenSecret/name"),
    ({"operator": {"namespaces": ["a"]}}, "namespaces"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"falco": {"namespace": "Falco_NS"}}, "/falco/namespace"),
    ({"falco": {"daemonSetNames": "falco"}}, "/falco/daemonSetNames"),
    ({"rbac": {"secrets": {"names": "misp-auth"}}}, "/rbac/secrets/names"),
    ({"rbac": {"create": "yes"}}, "/rbac/create"),
    ({"health": {"port": 70000}}, "/health/port"),
    ({"health": {"path": "healthz"}}, "/health/path"),
    ({"service": {"type": "ExternalName"}}, "/service/type"),
    ({"livenessProbe": {"periodSeconds": "10"}}, "/livenessProbe/periodSeconds"),
    ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
    ({"extraEnv": [{"value": "no name"}]}, "/extraEnv/0"),
    ({"extraEnv": {"HTTPS_PROXY": "x"}}, "/extraEnv"),
    ({"networkPolicy": {"enabled": True}}, "/networkPolicy/apiServer/cidrs"),
    ({"networkPolicy": {"misp": [{"cidr": "misp.example.org"}]}}, "/networkPolicy/misp/0/cidr"),
    ({"networkPolicy": {"misp": [{"cidr": "203.0.113.10/32", "ports": [0]}]}}, "/networkPolicy/misp/0/ports/0"),
    ({"networkPolicy": {"misp": [{"cidr": "203.0.113.10/32", "port": 443}]}}, "port"),
    ({"metrics": {"port": "9090"}}, "/metrics/port"),
    ({"metrics": {"scrape": True}}, "scrape"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_wrong_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render(values)
    message = str(caught.value)
    assert "values don't meet the specifications of the schema" in message
    assert where in message, message


def test_health_and_metrics_ports_must_differ() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"metrics\.port and health\.port must differ"):
        render({"metrics": {"port": 8080}})
    assert render({"metrics": {"enabled": False, "port": 8080}}).one("Deployment")


def test_schema_accepts_the_defaults_and_every_case() -> None:
    for values in CASES.values():
        chart().validate_schema(copy.deepcopy(values))
    assert chart().merge_values({})["operator"]["watchNamespaces"] == []


# ------------------------------------------------------------------------------------------- chart, CRD, lint
def test_crd_is_deploy_crds_byte_for_byte() -> None:
    sources = sorted(CRD_SOURCE.parent.glob("*.yaml"))  # MispFeed and MispAllowList
    files = sorted(p.name for p in (CHART / "crds").iterdir())
    assert files == [p.name for p in sources]
    assert CRD_SOURCE in sources
    loaded = sorted(chart().crds, key=lambda c: c["filename"])  # what Helm installs before the templates
    assert len(loaded) == len(sources)
    for source, installed in zip(sources, loaded, strict=True):
        assert (CHART / "crds" / source.name).read_bytes() == source.read_bytes()
        assert installed["filename"].endswith(f"crds/{source.name}")
        assert installed["data"] == source.read_text(encoding="utf-8")
        (crd,) = load_yaml_docs(source)
        assert kube_errors(crd) == []


def test_chart_metadata_and_lint() -> None:
    meta = chart().metadata
    assert (meta["name"], meta["apiVersion"], meta["type"]) == ("falco-misp-operator", "v2", "application")
    assert meta["appVersion"] == "0.1.0"
    report = helm.lint(CHART, strict=True, namespace=NAMESPACE, kube_version="v1.37.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_install_namespace_is_respected() -> None:
    r = render(namespace="security-tools", release="intel")
    assert {o["metadata"].get("namespace") for o in r.of_kind("Deployment") + r.of_kind("ServiceAccount")} == {
        "security-tools"
    }
    assert r.one("Deployment")["metadata"]["name"] == "intel-falco-misp-operator"
    subjects = {(s["name"], s["namespace"]) for o in r.objects if o["kind"].endswith("Binding") for s in o["subjects"]}
    assert subjects == {("intel-falco-misp-operator", "security-tools")}
