"""The chart's alert endpoint (issue 15): HTTPS from an existing kubernetes.io/tls Secret or a cert-manager Certificate,
the token only ever from a Secret (existing or created), the ingress NetworkPolicy that admits Falco and Falcosidekick
to the alert port and Prometheus to the metrics port and nothing else, and the examples/alerts/ values.

Rendered by the real Helm (deploy.chartkit); core objects validate against the Kubernetes schemas, cert-manager's
against the fields its documentation gives (written here: no cert-manager schema ships offline); the Deployment's
arguments are parsed by the real ``falco-misp run`` parser.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import helm_python as helm
import jsonschema
import pytest

from deploy.chartkit import CHART, NAMESPACE, RELEASE, REPO, Rendered, kube_errors, load_yaml_docs, render
from falco_misp.cli import build_parser
from falco_misp.reporting import TOKEN_ENV

ALERTS = REPO / "examples" / "alerts"
TOKEN_SECRET = {"name": "falco-misp-alerts-token", "key": "token"}
BASE: dict[str, Any] = {"alerts": {"enabled": True, "tokenSecret": TOKEN_SECRET}}
SERVICE_HOST = f"{RELEASE}.{NAMESPACE}.svc"
TLS_DIR = "/var/run/secrets/falco-misp-alerts-tls"
CERT_MANAGER = {"enabled": True, "issuerRef": {"name": "falco-misp-alerts-ca", "kind": "Issuer"}}


def values(**alerts: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out["alerts"].update(alerts)
    return out


def pod_spec(r: Rendered) -> dict[str, Any]:
    return dict(r.one("Deployment")["spec"]["template"]["spec"])


def run_args(r: Rendered) -> Any:
    (c,) = pod_spec(r)["containers"]
    return build_parser().parse_args(["run", *c["args"]])


def assert_all_valid(r: Rendered) -> None:
    """Core objects against the Kubernetes schemas, cert-manager's against CERT_MANAGER_SCHEMA; all labelled."""
    for obj in r.objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert obj["metadata"].get("namespace") or obj["kind"].startswith("Cluster")
        if obj["apiVersion"].startswith("cert-manager.io/"):
            assert cert_manager_errors(obj) == []
        else:
            assert kube_errors(obj) == []


# -------------------------------------------------------------------------------------------- cert-manager's shape
# cert-manager.io/v1 as its API reference documents it, for the fields the chart and the examples write.
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
GO_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|ns))+$"}
ISSUER_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": NAME, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": {"const": "cert-manager.io"}},
}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
KEY_USAGES = [
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
]
CERTIFICATE_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["secretName", "issuerRef"],
    "properties": {
        "secretName": NAME,
        "secretTemplate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"labels": LABELS, "annotations": LABELS},
        },
        "issuerRef": ISSUER_REF,
        "commonName": {"type": "string", "maxLength": 64},
        "dnsNames": {"type": "array", "minItems": 1, "uniqueItems": True, "items": NAME},
        "isCA": {"type": "boolean"},
        "duration": GO_DURATION,
        "renewBefore": GO_DURATION,
        "privateKey": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "size": {"type": "integer"},
                "rotationPolicy": {"enum": ["Never", "Always"]},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
            },
        },
        "usages": {"type": "array", "items": {"enum": KEY_USAGES}},
    },
}
ISSUER_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "selfSigned": {"type": "object"},
        "ca": {"type": "object", "required": ["secretName"], "properties": {"secretName": NAME}},
    },
}
CERT_MANAGER_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"enum": ["Certificate", "Issuer"]},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {"name": NAME, "namespace": NAME, "labels": LABELS},
        },
    },
    "if": {"properties": {"kind": {"const": "Certificate"}}},
    "then": {"properties": {"spec": CERTIFICATE_SPEC}},
    "else": {"properties": {"spec": ISSUER_SPEC}},
}


def cert_manager_errors(obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(CERT_MANAGER_SCHEMA)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in validator.iter_errors(obj))


def test_the_cert_manager_check_has_teeth() -> None:
    good = render(values(tls={"certManager": CERT_MANAGER})).one("Certificate")
    assert cert_manager_errors(good) == []
    bad = copy.deepcopy(good)
    bad["spec"]["issuerRef"]["kind"] = "Issuers"
    bad["spec"]["dnsName"] = ["x"]
    bad["spec"]["duration"] = "90d"
    errors = cert_manager_errors(bad)
    assert any(e.startswith("spec.issuerRef.kind") for e in errors), errors
    assert any("dnsName" in e for e in errors) and any(e.startswith("spec.duration") for e in errors), errors


# ------------------------------------------------------------------------------------------------------- TLS
def test_tls_from_an_existing_secret() -> None:
    r = render(values(tls={"secretName": "alerts-tls"}))
    args = run_args(r)
    assert (str(args.alerts_tls_cert), str(args.alerts_tls_key)) == (f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key")
    spec = pod_spec(r)
    assert {"name": "alerts-tls", "secret": {"secretName": "alerts-tls", "defaultMode": 0o400}} in spec["volumes"]
    (c,) = spec["containers"]
    assert {"name": "alerts-tls", "mountPath": TLS_DIR, "readOnly": True} in c["volumeMounts"]
    assert not r.of_kind("Certificate")
    assert f"https://{SERVICE_HOST}:8443/alerts" in r.notes and "WARNING" not in r.notes
    assert_all_valid(r)


def test_tls_from_a_cert_manager_certificate_for_the_service_names() -> None:
    r = render(values(tls={"certManager": {**CERT_MANAGER, "extraDnsNames": ["alerts.example.org"]}}))
    cert = r.one("Certificate")
    service = r.one("Service")["metadata"]["name"]
    assert cert["spec"]["dnsNames"] == [
        service, f"{service}.{NAMESPACE}", f"{service}.{NAMESPACE}.svc", f"{service}.{NAMESPACE}.svc.cluster.local",
        "alerts.example.org",
    ]  # fmt: skip
    assert cert["spec"]["issuerRef"] == {"name": "falco-misp-alerts-ca", "kind": "Issuer", "group": "cert-manager.io"}
    assert "server auth" in cert["spec"]["usages"]
    # the Secret cert-manager writes is the one the Deployment mounts and serves
    volumes = {v["name"]: v for v in pod_spec(r)["volumes"]}
    assert volumes["alerts-tls"]["secret"]["secretName"] == cert["spec"]["secretName"] == f"{RELEASE}-alerts-tls"
    assert str(run_args(r).alerts_tls_cert) == f"{TLS_DIR}/tls.crt"
    assert_all_valid(r)
    # a Secret name given: cert-manager writes that one
    named = render(values(tls={"secretName": "mine", "certManager": CERT_MANAGER}))
    assert named.one("Certificate")["spec"]["secretName"] == "mine"
    assert {v["name"]: v for v in pod_spec(named)["volumes"]}["alerts-tls"]["secret"]["secretName"] == "mine"
    cluster = render(values(tls={"certManager": {**CERT_MANAGER, "issuerRef": {"name": "corp", "kind": "ClusterIssuer"},
                                                 "clusterDomain": "corp.local"}}))  # fmt: skip
    assert cluster.one("Certificate")["spec"]["issuerRef"]["kind"] == "ClusterIssuer"
    assert cluster.one("Certificate")["spec"]["dnsNames"][-1] == f"{service}.{NAMESPACE}.svc.corp.local"


def test_cert_manager_needs_an_issuer_and_the_service() -> None:
    with pytest.raises(helm.HelmError, match="issuerRef"):
        render(values(tls={"certManager": {"enabled": True, "issuerRef": {"name": ""}}}))
    with pytest.raises(helm.HelmError, match=r"needs service\.enabled"):
        render({**values(tls={"certManager": CERT_MANAGER}), "service": {"enabled": False}})
    assert not render({"alerts": {"tls": {"certManager": CERT_MANAGER}}}).of_kind("Certificate")  # alerts off


def test_without_tls_the_notes_warn() -> None:
    r = render(values())
    args = run_args(r)
    assert args.alerts_tls_cert is None and args.alerts_tls_key is None
    assert "alerts-tls" not in {v["name"] for v in pod_spec(r)["volumes"]}
    assert f"http://{SERVICE_HOST}:8443/alerts" in r.notes
    assert "WARNING: alerts.tls is not set" in r.notes


# ----------------------------------------------------------------------------------------------------- token
def env_values(r: Rendered) -> list[dict[str, Any]]:
    return [e for obj in r.objects if obj["kind"] == "Deployment" for c in pod_spec(r)["containers"] for e in c["env"]]


def test_the_token_comes_from_a_secret_never_from_the_deployment() -> None:
    r = render(values(rateLimit={"perSecond": 5, "burst": 20}))
    args = run_args(r)
    assert str(args.alerts_token_file) == "/var/run/secrets/falco-misp-alerts/token"
    assert (args.alerts_rate, args.alerts_burst) == (5.0, 20)
    assert {"name": "alerts-token", "secret": {"secretName": TOKEN_SECRET["name"], "defaultMode": 0o400}} in pod_spec(
        r
    )["volumes"]
    assert all(e["name"] != TOKEN_ENV for e in env_values(r))
    assert not r.of_kind("Secret")  # an existing Secret: the chart creates none


def test_a_created_token_is_shared_with_the_sender_namespaces() -> None:
    r = render(values(tokenSecret={"name": "", "key": "token", "create": True, "senderNamespaces": ["falco"]}))
    secrets = r.of_kind("Secret")
    assert sorted(s["metadata"]["namespace"] for s in secrets) == sorted([NAMESPACE, "falco"])
    assert {s["metadata"]["name"] for s in secrets} == {f"{RELEASE}-alerts-token"}
    tokens = {s["data"]["token"] for s in secrets}
    assert len(tokens) == 1, "the operator and the senders hold the same token"
    token = base64.b64decode(tokens.pop()).decode()
    assert len(token) == 48 and token.isalnum()  # URL-safe: Falco sends it inside its URL
    volumes = {v["name"]: v for v in pod_spec(r)["volumes"]}
    assert volumes["alerts-token"]["secret"]["secretName"] == f"{RELEASE}-alerts-token"
    assert all(token not in str(e) for e in env_values(r))  # never a value in the Deployment
    assert token not in str(r.one("Deployment"))
    assert_all_valid(r)
    named = render(values(tokenSecret={"name": "given", "key": "t", "create": True}))
    assert [(s["metadata"]["name"], list(s["data"])) for s in named.of_kind("Secret")] == [("given", ["t"])]
    with pytest.raises(helm.HelmError, match=r"tokenSecret\.name is required"):
        render(values(tokenSecret={"name": "", "key": "token"}))


# ------------------------------------------------------------------------------------------- NetworkPolicy
def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, vals = expr["key"], expr["operator"], expr.get("values", [])
        if not {"In": key in labels and labels[key] in vals, "NotIn": labels.get(key) not in vals,
                "Exists": key in labels, "DoesNotExist": key not in labels}[op]:  # fmt: skip
            return False
    return True


def admits(policy: dict[str, Any], namespace: str, labels: dict[str, str], port: int) -> bool:
    """Whether ``policy`` lets a pod (``labels`` in ``namespace``) connect to ``port``, as the API defines it."""
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    own = policy["metadata"]["namespace"]
    for rule in policy["spec"].get("ingress") or []:
        if rule.get("ports") and not any(p.get("port") == port for p in rule["ports"]):
            continue
        peers = rule.get("from")
        if not peers:
            return True  # no "from": every source
        for peer in peers:
            if "ipBlock" in peer:
                continue
            ns_ok = selector_matches(peer["namespaceSelector"], ns_labels) if "namespaceSelector" in peer else (
                namespace == own)  # fmt: skip
            if ns_ok and selector_matches(peer.get("podSelector", {}), labels):
                return True
    return False


FALCO = {"app.kubernetes.io/name": "falco", "app.kubernetes.io/instance": "falco"}
SIDEKICK = {"app.kubernetes.io/name": "falcosidekick", "app.kubernetes.io/instance": "falco"}
PROMETHEUS = {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack-prometheus"}
OTHER = {"app": "web"}


def ingress_policy(r: Rendered) -> dict[str, Any]:
    (policy,) = [p for p in r.of_kind("NetworkPolicy") if p["metadata"]["name"].endswith("-ingress")]
    return policy


def test_ingress_admits_falco_and_sidekick_to_the_alert_port_and_prometheus_to_metrics() -> None:
    r = render(values())
    policy = ingress_policy(r)
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["podSelector"]["matchLabels"] == r.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert all(rule.get("from") for rule in spec["ingress"]), "an empty from would admit every source"
    table = [
        ("falco", FALCO, 8443, True),
        ("falco", SIDEKICK, 8443, True),
        ("falco", OTHER, 8443, False),  # another pod of the Falco namespace
        ("default", FALCO, 8443, False),  # a pod labelled like Falco elsewhere
        (NAMESPACE, OTHER, 8443, False),  # the operator's own namespace
        ("monitoring", PROMETHEUS, 8443, False),
        ("monitoring", PROMETHEUS, 9090, True),
        ("falco", FALCO, 9090, False),
        ("falco", FALCO, 8080, False),  # health: the kubelet's probes only (always allowed)
    ]
    assert [(ns, port, admits(policy, ns, labels, port)) for ns, labels, port, _ in table] == [
        (ns, port, ok) for ns, _, port, ok in table
    ]
    assert_all_valid(r)


def test_ingress_senders_are_configurable() -> None:
    r = render({**values(), "falco": {"namespace": "falco", "extraNamespaces": ["falco-b"]}})
    assert admits(ingress_policy(r), "falco-b", FALCO, 8443)
    custom = render({
        **values(),
        "metrics": {"port": 9100},
        "networkPolicy": {"ingress": {
            "alertSenders": {"namespaces": ["security"], "podSelectors": [{"matchLabels": {"app": "relay"}}],
                             "extraFrom": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]},
            "metrics": {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "obs"}}}]},
            "extraIngress": [{"from": [{"podSelector": {"matchLabels": {"app": "debug"}}}],
                              "ports": [{"protocol": "TCP", "port": 8080}]}],
        }},
    })  # fmt: skip
    policy = ingress_policy(custom)
    assert admits(policy, "security", {"app": "relay"}, 8443)
    assert not admits(policy, "falco", FALCO, 8443)  # the defaults are replaced
    assert admits(policy, "obs", OTHER, 9100) and not admits(policy, "monitoring", PROMETHEUS, 9100)
    assert admits(policy, NAMESPACE, {"app": "debug"}, 8080)
    assert {"ipBlock": {"cidr": "10.20.0.0/16"}} in policy["spec"]["ingress"][0]["from"]
    assert_all_valid(custom)


def test_ingress_with_nobody_listed_closes_the_ports() -> None:
    closed = render({
        **values(),
        "metrics": {"enabled": False},
        "networkPolicy": {"ingress": {"alertSenders": {"namespaces": ["falco"], "podSelectors": [], "extraFrom": []},
                                      "metrics": {"from": []}}},
    })  # fmt: skip
    policy = ingress_policy(closed)
    assert policy["spec"]["ingress"] == []
    assert not admits(policy, "falco", FALCO, 8443)
    assert_all_valid(closed)
    no_metrics = ingress_policy(render({**values(), "metrics": {"enabled": False}}))
    assert [r["ports"][0]["port"] for r in no_metrics["spec"]["ingress"]] == [8443]


def test_ingress_policy_sits_next_to_the_egress_one() -> None:
    egress = {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}, "misp": [{"cidr": "203.0.113.10/32"}]}
    r = render({**values(), "networkPolicy": egress})
    kinds = {p["metadata"]["name"]: p["spec"]["policyTypes"] for p in r.of_kind("NetworkPolicy")}
    assert kinds == {RELEASE: ["Egress"], f"{RELEASE}-ingress": ["Ingress"]}
    assert_all_valid(r)
    assert not render({**values(), "networkPolicy": {"ingress": {"enabled": False}}}).of_kind("NetworkPolicy")
    assert not render({}).of_kind("NetworkPolicy")  # alerts off: nothing listens for them


@pytest.mark.parametrize(
    ("alerts", "where"),
    [
        ({"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "x", "kind": "Issuers"}}}}, "kind"),
        ({"tls": {"secretName": "Bad_Name"}}, "secretName"),
        ({"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "x"}, "duration": "90d"}}}, "duration"),
        ({"rateLimit": {"perSecond": 0, "burst": 1}}, "perSecond"),
        ({"rateLimit": {"perSecond": 1, "burst": 0}}, "burst"),
        ({"tokenSecret": {"name": "t", "key": "token", "senderNamespaces": ["Falco"]}}, "senderNamespaces"),
        ({"tls": {"secretName": "x", "certfile": "y"}}, "certfile"),  # a typo is an error, not ignored
    ],
)
def test_schema_rejects_wrong_alert_values(alerts: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmError, match=where):
        render(values(**alerts))


def test_chart_with_every_alert_option_lints() -> None:
    every = values(
        tokenSecret={"name": "", "key": "token", "create": True, "senderNamespaces": ["falco"]},
        tls={"certManager": {**CERT_MANAGER, "extraDnsNames": ["alerts.example.org"]}},
    )
    report = helm.lint(CHART, every, strict=True, namespace=NAMESPACE, kube_version="v1.37.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


# ------------------------------------------------------------------------------------------------- examples
def example(name: str) -> dict[str, Any]:
    (doc,) = load_yaml_docs(ALERTS / name)
    return dict(doc)


def test_examples_folder_holds_what_the_docs_name() -> None:
    assert sorted(p.name for p in ALERTS.iterdir()) == [
        "cert-manager-issuer.yaml", "falco-values.yaml", "falcosidekick-values.yaml", "operator-values.yaml",
    ]  # fmt: skip


def test_operator_values_example_renders_https_and_the_ingress_policy() -> None:
    r = render(example("operator-values.yaml"))
    assert r.one("Certificate")["spec"]["issuerRef"]["name"] == "falco-misp-alerts-ca"
    assert str(run_args(r).alerts_tls_cert) == f"{TLS_DIR}/tls.crt"
    assert admits(ingress_policy(r), "falco", FALCO, 8443) and admits(ingress_policy(r), "falco", SIDEKICK, 8443)
    assert_all_valid(r)
    # the Issuer it names is the CA Issuer of cert-manager-issuer.yaml, in the operator's namespace
    issuers = load_yaml_docs(ALERTS / "cert-manager-issuer.yaml")
    assert all(cert_manager_errors(d) == [] for d in issuers)
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in issuers)
    (ca_issuer,) = [d for d in issuers if d["kind"] == "Issuer" and "ca" in d["spec"]]
    assert ca_issuer["metadata"]["name"] == r.one("Certificate")["spec"]["issuerRef"]["name"]
    (ca_cert,) = [d for d in issuers if d["kind"] == "Certificate"]
    assert ca_cert["spec"]["isCA"] and ca_cert["spec"]["secretName"] == ca_issuer["spec"]["ca"]["secretName"]


def token_env(env: list[dict[str, Any]]) -> dict[str, Any]:
    (entry,) = [e for e in env if e["name"] == "FALCO_MISP_TOKEN"]
    return dict(entry)


def operator_url() -> str:
    """Where the operator-values example serves alerts (release falco-misp-operator in falco-misp)."""
    r = render(example("operator-values.yaml"))
    port = example("operator-values.yaml")["alerts"].get("port", 8443)
    return f"https://{r.one('Service')['metadata']['name']}.{NAMESPACE}.svc:{port}/alerts"


def test_falco_values_send_the_token_from_a_secret_over_https() -> None:
    values_ = example("falco-values.yaml")
    assert set(values_) <= {"falco", "extra", "certs"}, "keys of the falcosecurity chart this example uses"
    falco = values_["falco"]
    assert falco["json_output"] is True and falco["json_include_tags_property"] is True
    http = falco["http_output"]
    assert http["enabled"] is True and http["insecure"] is False
    # Falco's http_output has no header option: the token is the URL's Basic password, expanded from the env
    assert http["url"] == operator_url().replace("https://", "https://falco:${FALCO_MISP_TOKEN}@")
    env = token_env(values_["extra"]["env"])
    assert env == {"name": "FALCO_MISP_TOKEN", "valueFrom": {"secretKeyRef": TOKEN_SECRET}}
    assert http["ca_cert"] == "/etc/falco/certs/ca.crt"  # the chart mounts certs.existingSecret at /etc/falco/certs
    assert values_["certs"] == {"existingSecret": "falco-misp-alerts-ca"}
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "falco", "namespace": "falco"},
        "spec": {
            "containers": [{"name": "falco", "image": "falcosecurity/falco:0.44.1", "env": values_["extra"]["env"],
                            "volumeMounts": [{"name": "certs-volume", "mountPath": "/etc/falco/certs",
                                              "readOnly": True}]}],
            "volumes": [{"name": "certs-volume", "secret": {"secretName": values_["certs"]["existingSecret"]}}],
        },
    }  # fmt: skip
    assert kube_errors(pod) == []


def test_falcosidekick_values_send_a_bearer_header_from_a_secret_over_https() -> None:
    values_ = example("falcosidekick-values.yaml")
    sidekick = values_["falcosidekick"]
    assert sidekick["enabled"] is True
    webhook = sidekick["config"]["webhook"]
    assert webhook["address"] == operator_url() and webhook["checkcert"] is True
    assert "customheaders" not in webhook, "the header is built from the Secret, never written in the values"
    env = sidekick["config"]["extraEnv"]
    names = [e["name"] for e in env]
    assert token_env(env) == {"name": "FALCO_MISP_TOKEN", "valueFrom": {"secretKeyRef": TOKEN_SECRET}}
    # Kubernetes expands $(VAR) only from variables defined before it in the same container
    assert names.index("FALCO_MISP_TOKEN") < names.index("WEBHOOK_CUSTOMHEADERS")
    headers = {e["name"]: e.get("value") for e in env}
    assert headers["WEBHOOK_CUSTOMHEADERS"] == "Authorization:Bearer $(FALCO_MISP_TOKEN)"
    (mount,) = sidekick["extraVolumeMounts"]
    assert headers["TLSCLIENT_CACERTFILE"] == f"{mount['mountPath']}/ca.crt"
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "falcosidekick", "namespace": "falco"},
        "spec": {
            "containers": [{"name": "falcosidekick", "image": "falcosecurity/falcosidekick:2.31.1", "env": env,
                            "volumeMounts": sidekick["extraVolumeMounts"]}],
            "volumes": sidekick["extraVolumes"],
        },
    }  # fmt: skip
    assert kube_errors(pod) == []
    assert sidekick["extraVolumes"][0]["secret"]["secretName"] == "falco-misp-alerts-ca"
