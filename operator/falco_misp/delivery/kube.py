"""The Kubernetes calls the operator makes, through the official ``kubernetes`` client (a service: I/O only).

Every call the operator makes against the API server is a method here, which keeps the RBAC it needs easy to
read: get Secrets in feed namespaces; get the MispAllowLists feeds name (cluster-scoped); list/create/patch/delete
ConfigMaps and get/list/patch DaemonSets in Falco's namespace (or, with ``delivery.mode: Rulesfiles``,
list/create/patch/delete the falco-operator's Rulesfiles there, and no DaemonSet); create Events on MispFeeds
(matched Falco alerts); get, list, watch ClusterMispServers and MispServers and patch their status, get Secrets in
the operator's namespace (a ClusterMispServer's) and, for a server's namespace selector, get namespaces. Label
selectors are also checked client-side, so an object this feed does not own is never written even if a server
ignored the selector.

Failures become :class:`KubeError` with a short reason and a message naming the object, never a secret value
and never the API server's response body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config

from falco_misp.delivery.rulesfiles import RULESFILE_GROUP, RULESFILE_PLURAL, RULESFILE_VERSION
from falco_misp.feed.model import API_GROUP, API_VERSION

MERGE_PATCH = "application/merge-patch+json"
DEFAULT_OPERATOR_NAMESPACE = "falco-misp"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Seconds one API call may take (connect, read): a hung API server must not hang a sync forever.
REQUEST_TIMEOUT = (10.0, 60.0)
_NO_RULESFILE_CRD = (
    "the API server has no Rulesfile resource (artifact.falcosecurity.dev/v1alpha1): install the falco-operator, "
    "or set spec.falco.delivery.mode to ConfigMaps"
)
_NO_RBAC = "forbidden (Helm chart: falco.rulesfiles=true grants it in Falco's namespace)"


class KubeError(Exception):
    """A Kubernetes call failed. ``reason``: ``SecretNotFound``, ``ConfigMapConflict``, ``KubernetesAPI``..."""

    def __init__(self, reason: str, message: str, *, subject: tuple[str, str] | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.subject = subject
        """``(namespace, name)`` of the object in the way (``ConfigMapConflict``)."""


@dataclass(frozen=True)
class DaemonSetInfo:
    """A Falco DaemonSet as far as the rollout cares."""

    namespace: str
    """Its namespace."""
    name: str
    """Its name."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Its pod template's annotations."""
    match_labels: Mapping[str, str] = field(default_factory=dict)
    """Its ``spec.selector.matchLabels``: how its pods are found."""
    template: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """Its pod template (plain dict, camelCase keys): the volumes and mounts the rules reach Falco through."""


@dataclass(frozen=True)
class PodInfo:
    """A Falco pod as far as the delivery check cares."""

    name: str
    """Its name."""
    ip: str
    """``status.podIP`` (empty before it has one)."""
    ready: bool
    """Its ``Ready`` condition is True."""


def _conflict(reason: str, what: str, meta: Mapping[str, Any], more: str = "") -> KubeError:
    """An object of our name that is not ours: the user's to resolve (``subject`` names it)."""
    return KubeError(
        reason,
        f"{what} exists and is not managed by this feed; delete or rename that object (the names come from the "
        f"feed's namespace and name{more})",
        subject=(meta["namespace"], meta["name"]),
    )


def _api_error(exc: client.ApiException, what: str) -> KubeError:
    return KubeError("KubernetesAPI", f"{what}: HTTP {exc.status} {exc.reason or ''}".rstrip())


class KubeClient:
    """The operator's Kubernetes calls over one ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: client.ApiClient, namespace: str = DEFAULT_OPERATOR_NAMESPACE) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.namespace = namespace
        """The operator's own namespace: where a ClusterMispServer's Secrets live (``--operator-namespace``)."""

    @classmethod
    def from_environment(cls, namespace: str | None = None) -> KubeClient:
        """In-cluster service account credentials, else the local kubeconfig; ``namespace``: the operator's (default:
        the service account's, else ``$POD_NAMESPACE``, else :data:`DEFAULT_OPERATOR_NAMESPACE`)."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls(client.ApiClient(configuration), namespace or own_namespace())

    def _plain(self, model: object) -> dict[str, Any]:
        plain = self.api_client.sanitize_for_serialization(model)  # type: ignore[no-untyped-call]
        return plain if isinstance(plain, dict) else {}

    # ----------------------------------------------------------------------------------------------- Secrets
    def read_secret_value(self, namespace: str, name: str, key: str) -> str:
        """The decoded value of one key of a Secret (the caller must never log or store it)."""
        return self.read_secret_entry(namespace, name, key)[0]

    def read_secret_entry(self, namespace: str, name: str, key: str) -> tuple[str, dict[str, str]]:
        """The decoded value of one key of a Secret and the Secret's annotations (its pairing, issue 15)."""
        secret, what, annotations = self._read_secret(namespace, name)
        return self._secret_value(secret, what, key), annotations

    def read_secret_entries(self, namespace: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """Every key of a Secret, decoded, and its annotations (``headersSecretRef``, issue 15; never logged)."""
        secret, what, annotations = self._read_secret(namespace, name)
        return {key: self._secret_value(secret, what, key) for key in sorted(secret.data or {})}, annotations

    def _read_secret(self, namespace: str, name: str) -> tuple[client.V1Secret, str, dict[str, str]]:
        what = f"Secret {namespace}/{name}"
        try:
            secret = self.core.read_namespaced_secret(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        except client.ApiException as exc:
            if exc.status == 404:
                raise KubeError("SecretNotFound", f"{what} not found") from None
            raise _api_error(exc, f"reading {what}") from None
        annotations = dict((secret.metadata.annotations if secret.metadata is not None else None) or {})
        return secret, what, annotations

    @staticmethod
    def _secret_value(secret: client.V1Secret, what: str, key: str) -> str:
        data = secret.data or {}
        if key in data and data[key] is not None:
            try:
                return base64.b64decode(data[key], validate=True).decode("utf-8").strip()
            except (binascii.Error, UnicodeDecodeError):
                raise KubeError("SecretInvalid", f"{what} key {key!r} is not base64-encoded UTF-8") from None
        raise KubeError("SecretKeyNotFound", f"{what} has no key {key!r}")

    # -------------------------------------------------------------------------------------------- ConfigMaps
    def list_configmaps(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """ConfigMaps in ``namespace`` carrying every one of ``labels`` (plain dicts, camelCase keys)."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        items = self._list_configmaps(namespace, label_selector=selector)
        return [i for i in items if selector_matches(selector, i.get("metadata", {}).get("labels"))]

    def _list_configmaps(
        self, namespace: str, *, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """ConfigMaps of a namespace by a label or field selector (plain dicts); [] when the namespace is gone."""
        try:
            found = self.core.list_namespaced_config_map(
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return []
            raise _api_error(exc, f"listing ConfigMaps in {namespace}") from None
        return [self._plain(item) for item in found.items or ()]

    def create_configmap(self, body: Mapping[str, Any]) -> None:
        """Create one ConfigMap; an existing one of the same name (not ours) is a conflict."""
        meta = body["metadata"]
        what = f"ConfigMap {meta['namespace']}/{meta['name']}"
        try:
            # The client serialises a plain dict as it is (no round trip through the model).
            self.core.create_namespaced_config_map(
                meta["namespace"],
                dict(body),  # type: ignore[arg-type]
                _request_timeout=REQUEST_TIMEOUT,
            )
        except client.ApiException as exc:
            if exc.status == 409:
                raise _conflict(
                    "ConfigMapConflict", what, meta, "; the feed waits for it or its spec to change"
                ) from None
            if exc.status == 404:
                raise KubeError("NamespaceNotFound", f"namespace {meta['namespace']} not found") from None
            raise _api_error(exc, f"creating {what}") from None

    def configmap_fingerprint(self, namespace: str, name: str) -> str | None:
        """A digest of one ConfigMap's identity and labels (None: it does not exist), to notice it changed."""
        item = self._configmap(namespace, name)
        if item is None:
            return None
        meta = item.get("metadata", {})
        identity = [meta.get("uid"), meta.get("resourceVersion"), sorted((meta.get("labels") or {}).items())]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]

    def _configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One ConfigMap (None: it does not exist), read with ``list`` (the verb the operator has on ConfigMaps),
        narrowed to the one name."""
        for item in self._list_configmaps(namespace, field_selector=f"metadata.name={name}"):
            if item.get("metadata", {}).get("name") == name:
                return item
        return None

    def patch_configmap(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """Merge-patch one ConfigMap."""
        try:
            self.core.patch_namespaced_config_map(
                name, namespace, dict(patch), _content_type=MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT
            )
        except client.ApiException as exc:
            raise _api_error(exc, f"patching ConfigMap {namespace}/{name}") from None

    def delete_configmap(self, namespace: str, name: str) -> None:
        """Delete one ConfigMap; already gone is fine."""
        try:
            self.core.delete_namespaced_config_map(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        except client.ApiException as exc:
            if exc.status != 404:
                raise _api_error(exc, f"deleting ConfigMap {namespace}/{name}") from None

    # ----------------------------------------------------- Rulesfiles (the falco-operator's, issue 16)
    def _rulesfiles_api(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)

    def list_rulesfiles(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Rulesfiles in ``namespace`` carrying every one of ``labels`` (their status included).

        ``RulesfileCRDNotFound`` when the API server does not serve the resource (the falco-operator's CRDs are not
        installed)."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        try:
            found = self._rulesfiles_api().list_namespaced_custom_object(
                RULESFILE_GROUP, RULESFILE_VERSION, namespace, RULESFILE_PLURAL,
                label_selector=selector, _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        except client.ApiException as exc:
            if exc.status == 404:
                raise KubeError("RulesfileCRDNotFound", _NO_RULESFILE_CRD) from None
            if exc.status == 403:
                raise KubeError("RulesfileForbidden", f"listing Rulesfiles in {namespace}: {_NO_RBAC}") from None
            raise _api_error(exc, f"listing Rulesfiles in {namespace}") from None
        items = found.get("items") if isinstance(found, dict) else None
        return [i for i in items or () if selector_matches(selector, (i.get("metadata") or {}).get("labels"))]

    def create_rulesfile(self, body: Mapping[str, Any]) -> None:
        """Create one Rulesfile; an existing one of the same name (not ours) is a conflict."""
        meta = body["metadata"]
        what = f"Rulesfile {meta['namespace']}/{meta['name']}"
        try:
            self._rulesfiles_api().create_namespaced_custom_object(
                RULESFILE_GROUP, RULESFILE_VERSION, meta["namespace"], RULESFILE_PLURAL, dict(body),
                _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        except client.ApiException as exc:
            if exc.status == 409:
                raise _conflict("RulesfileConflict", what, meta) from None
            if exc.status == 404:
                raise KubeError("RulesfileCRDNotFound", f"creating {what}: {_NO_RULESFILE_CRD}") from None
            raise _api_error(exc, f"creating {what}") from None

    def patch_rulesfile(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """Merge-patch one Rulesfile."""
        try:
            self._rulesfiles_api().patch_namespaced_custom_object(
                RULESFILE_GROUP, RULESFILE_VERSION, namespace, RULESFILE_PLURAL, name, dict(patch),
                _content_type=MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        except client.ApiException as exc:
            raise _api_error(exc, f"patching Rulesfile {namespace}/{name}") from None

    def delete_rulesfile(self, namespace: str, name: str) -> None:
        """Delete one Rulesfile; already gone is fine."""
        try:
            self._rulesfiles_api().delete_namespaced_custom_object(
                RULESFILE_GROUP, RULESFILE_VERSION, namespace, RULESFILE_PLURAL, name,
                _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        except client.ApiException as exc:
            if exc.status != 404:
                raise _api_error(exc, f"deleting Rulesfile {namespace}/{name}") from None

    # ------------------------------------------------------------------------------------------- DaemonSets
    def _daemonset_info(self, obj: object) -> DaemonSetInfo:
        plain = self._plain(obj)
        meta = plain.get("metadata", {})
        template_meta = plain.get("spec", {}).get("template", {}).get("metadata") or {}
        spec = plain.get("spec", {})
        return DaemonSetInfo(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            annotations=dict(template_meta.get("annotations") or {}),
            match_labels=dict((spec.get("selector") or {}).get("matchLabels") or {}),
            template=spec.get("template") or {},
        )

    # --------------------------------------------------------------------------------------------------- Pods
    def list_pods(self, namespace: str, match_labels: Mapping[str, str]) -> list[PodInfo]:
        """Pods in ``namespace`` carrying every one of ``match_labels`` (a DaemonSet's pods), by name."""
        selector = ",".join(f"{k}={v}" for k, v in match_labels.items())
        try:
            found = self.core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT)
        except client.ApiException as exc:
            if exc.status == 404:
                return []
            raise _api_error(exc, f"listing the Falco pods in {namespace}") from None
        out = []
        for item in found.items or ():
            plain = self._plain(item)
            meta, status = plain.get("metadata", {}), plain.get("status", {})
            if selector and not selector_matches(selector, meta.get("labels")):
                continue
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())
            out.append(PodInfo(str(meta.get("name", "")), str(status.get("podIP") or ""), ready))
        return sorted(out, key=lambda p: p.name)

    def configmap_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The data of one ConfigMap (None: it does not exist)."""
        item = self._configmap(namespace, name)
        return None if item is None else dict(item.get("data") or {})

    def find_daemonsets(self, namespace: str, name: str | None, selector: str) -> list[DaemonSetInfo]:
        """The Falco DaemonSet named ``name``, else every DaemonSet matching ``selector``; [] when none."""
        try:
            if name:
                found = self.apps.read_namespaced_daemon_set(name, namespace, _request_timeout=REQUEST_TIMEOUT)
                return [self._daemonset_info(found)]
            listed = self.apps.list_namespaced_daemon_set(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return []
            raise _api_error(exc, f"finding the Falco DaemonSet in {namespace}") from None
        out: list[DaemonSetInfo] = []
        for item in listed.items or ():
            labels = item.metadata.labels if item.metadata is not None else None
            if selector_matches(selector, labels):
                out.append(self._daemonset_info(item))
        return sorted(out, key=lambda d: d.name)

    def patch_pod_template_annotations(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> bool:
        """Set (or, with None, remove) pod-template annotations of a DaemonSet; False if it is gone."""
        patch = {"spec": {"template": {"metadata": {"annotations": dict(annotations)}}}}
        try:
            self.apps.patch_namespaced_daemon_set(
                name, namespace, patch, _content_type=MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise _api_error(exc, f"patching DaemonSet {namespace}/{name}") from None
        return True

    # --------------------------------------------------------------------------- Events (alerts, issue 5)
    def create_event(self, involved: Mapping[str, str], type_: str, reason: str, message: str, now: datetime) -> None:
        """Post a core/v1 Event about ``involved`` (``apiVersion``, ``kind``, ``namespace``, ``name``, ``uid``).

        What kopf posts for its own Events, for code that runs outside a kopf handler (the alert endpoint).
        """
        namespace = involved["namespace"]
        stamp = now.astimezone(UTC).isoformat()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"namespace": namespace, "generateName": f"{involved['name']}."},
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "involvedObject": {k: v for k, v in involved.items() if v},
            "reportingComponent": "falco-misp-operator",
            "reportingInstance": "falco-misp-operator",
            "source": {"component": "falco-misp-operator"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(
                namespace,
                body,  # type: ignore[arg-type]
                _request_timeout=REQUEST_TIMEOUT,
            )
        except client.ApiException as exc:
            raise _api_error(exc, f"posting an Event in {namespace}") from None

    # ------------------------------------------------------------------------------------------- MispAllowLists
    def read_allow_list(self, name: str) -> dict[str, Any] | None:
        """One cluster-scoped MispAllowList as a plain dict (None: it does not exist)."""
        try:
            found = client.CustomObjectsApi(self.api_client).get_cluster_custom_object(
                API_GROUP, API_VERSION, "mispallowlists", name, _request_timeout=REQUEST_TIMEOUT
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading MispAllowList {name}") from None
        return found if isinstance(found, dict) else {}

    # ------------------------------------------------------------------------- MISP server resources (issue 15)
    def read_misp_server(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A ClusterMispServer (``namespace`` None) or MispServer as a plain dict (None: it does not exist)."""
        api = client.CustomObjectsApi(self.api_client)
        what = f"{plural}/{name}" if namespace is None else f"{plural} {namespace}/{name}"
        try:
            if namespace is None:
                found = api.get_cluster_custom_object(
                    API_GROUP, API_VERSION, plural, name, _request_timeout=REQUEST_TIMEOUT
                )
            else:
                found = api.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, plural, name, _request_timeout=REQUEST_TIMEOUT
                )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading {what}") from None
        return found if isinstance(found, dict) else {}

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """The labels of a namespace (None: it does not exist), for a ClusterMispServer's namespace selector."""
        try:
            found = self.core.read_namespace(name, _request_timeout=REQUEST_TIMEOUT)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading namespace {name}") from None
        return dict((found.metadata.labels if found.metadata is not None else None) or {})

    def patch_server_status(self, plural: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch a server resource's status; False if it is gone."""
        api = client.CustomObjectsApi(self.api_client)
        body = {"status": dict(status)}
        try:
            if namespace is None:
                api.patch_cluster_custom_object_status(
                    API_GROUP, API_VERSION, plural, name, body, _content_type=MERGE_PATCH,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
            else:
                api.patch_namespaced_custom_object_status(
                    API_GROUP, API_VERSION, namespace, plural, name, body, _content_type=MERGE_PATCH,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise _api_error(exc, f"patching the status of {plural} {namespace or ''}/{name}") from None
        return True

    # ------------------------------------------------------------------------------------------------ MispFeeds
    def patch_feed_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch a MispFeed's status (what kopf does after a handler, for the live-updates daemon, whose
        patch kopf would apply only when it exits); False if the feed is gone."""
        try:
            client.CustomObjectsApi(self.api_client).patch_namespaced_custom_object_status(
                API_GROUP,
                API_VERSION,
                namespace,
                "mispfeeds",
                name,
                {"status": dict(status)},
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise _api_error(exc, f"patching the status of MispFeed {namespace}/{name}") from None
        return True


def own_namespace() -> str:
    """The operator's namespace: ``$POD_NAMESPACE``, else the service account's, else the default."""
    found = os.environ.get("POD_NAMESPACE", "").strip()
    if not found:
        try:
            found = SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
        except OSError:
            found = ""
    return found or DEFAULT_OPERATOR_NAMESPACE


def selector_matches(selector: str, labels: Mapping[str, str] | None) -> bool:
    """Whether ``labels`` satisfy an equality selector such as ``app.kubernetes.io/name=falco,tier=x``."""
    labels = labels or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True
