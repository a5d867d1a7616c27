"""The Helm chart as the tests see it: rendered by a real Helm (helm-python-sdk: Helm 4's Go SDK as a shared library,
no helm binary), validated against the Kubernetes schemas (kubernetes-validate), and its RBAC read as the API server
would evaluate it for the operator's ServiceAccount.

Used by tests/deploy (the chart, the examples) and by tests/k8s/test_rbac.py (the RBAC against the calls the operator
really makes). Import it as ``deploy.chartkit``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "falco-misp-operator"
CRD_SOURCE = REPO / "deploy" / "crds" / "mispfeeds.falco-misp.io.yaml"
RELEASE = "falco-misp-operator"
NAMESPACE = "falco-misp"
# Kubernetes versions whose schemas every rendered object must satisfy: the oldest the chart supports (Chart.yaml
# kubeVersion, CEL rules with fieldPath in the CRD) and the newest kubernetes-validate ships.
KUBE_VERSIONS = ("1.28.0", "1.37.0")


@dataclass(frozen=True)
class Rendered:
    """One render of the chart."""

    objects: tuple[dict[str, Any], ...]
    """Every Kubernetes object of the templates (CRDs excluded: Helm installs crds/ as they are)."""
    notes: str
    """NOTES.txt as the user sees it after install."""

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The objects of one kind."""
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        """The single object of one kind."""
        (found,) = self.of_kind(kind)
        return found


@functools.cache
def chart() -> helm.Chart:
    """The chart, loaded once per test session (a Chart handle is immutable and thread-safe)."""
    return helm.Chart.load(CHART)


def render(values: Mapping[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    """Render the chart like ``helm install`` would (values.schema.json checked); raises helm.HelmError."""
    manifests = chart().render(dict(values or {}), name=release, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                assert isinstance(doc, dict), f"{path}: not an object"
                objects.append(doc)
    return Rendered(tuple(objects), notes)


def kube_errors(obj: Mapping[str, Any], versions: Iterable[str] = KUBE_VERSIONS) -> list[str]:
    """Errors of one object against the strict Kubernetes schemas of each version (unknown fields are errors)."""
    errors: list[str] = []
    what = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    for version in versions:
        try:
            kubernetes_validate.validate(dict(obj), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            errors.append(f"{what} (k8s {version}) at {where or '.'}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{what} (k8s {version}): {exc.message}")
    return errors


# ---------------------------------------------------------------------------------------------------------- RBAC
@dataclass(frozen=True)
class Grant:
    """One (verb, resource) the operator's ServiceAccount is granted, cluster-wide or in one namespace."""

    verb: str
    """A Kubernetes verb (get, list, watch, create, patch, update, delete...)."""
    resource: str
    """``<group>/<plural>[/<subresource>]``, the core group without a prefix: ``configmaps``, ``apps/daemonsets``."""
    namespace: str | None
    """The namespace of the RoleBinding; None: a ClusterRoleBinding (every namespace, and cluster-scoped objects)."""
    names: frozenset[str] | None = None
    """resourceNames the rule is limited to; None: any name."""
    source: str = ""
    """The (Cluster)Role it comes from, for messages."""


def resource_key(group: str, resource: str) -> str:
    """The key of an RBAC (apiGroup, resource) pair, in the form the Kubernetes-emulator recorder uses."""
    return f"{group}/{resource}" if group else resource


def grants(objects: Iterable[Mapping[str, Any]], *, account: str, namespace: str) -> list[Grant]:
    """Everything the ServiceAccount ``namespace/account`` may do, from the rendered (Cluster)Roles and bindings."""
    objects = list(objects)
    roles: dict[tuple[str, str | None, str], Mapping[str, Any]] = {}
    for obj in objects:
        if obj.get("kind") in ("ClusterRole", "Role"):
            meta = obj["metadata"]
            roles[(obj["kind"], meta.get("namespace") if obj["kind"] == "Role" else None, meta["name"])] = obj
    out: list[Grant] = []
    for obj in objects:
        kind = obj.get("kind")
        if kind not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = obj.get("subjects") or []
        if not any(
            s.get("kind") == "ServiceAccount" and s.get("name") == account and s.get("namespace") == namespace
            for s in subjects
        ):
            continue
        bound_ns = obj["metadata"].get("namespace") if kind == "RoleBinding" else None
        ref = obj["roleRef"]
        role = roles.get((ref["kind"], bound_ns if ref["kind"] == "Role" else None, ref["name"]))
        assert role is not None, f"{kind} {obj['metadata']['name']} refers to a missing {ref['kind']} {ref['name']}"
        for rule in role.get("rules") or []:
            names = frozenset(rule["resourceNames"]) if rule.get("resourceNames") else None
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        out.append(
                            Grant(verb, resource_key(group, resource), bound_ns, names, f"{ref['kind']} {ref['name']}")
                        )
    return out


def allows(granted: Iterable[Grant], verb: str, resource: str, namespace: str | None, name: str | None) -> bool:
    """Whether a call is allowed. ``namespace`` None: cluster-scoped, or across all namespaces (list/watch)."""
    for grant in granted:
        if grant.verb != verb or grant.resource != resource:
            continue
        if grant.namespace is not None and grant.namespace != namespace:
            continue
        if grant.names is not None and name not in grant.names:
            continue
        return True
    return False


def load_yaml_docs(path: Path) -> list[Any]:
    """The non-empty YAML documents of a file."""
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
