"""The Secrets a feed references, read from its namespace (a service; values never logged)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from falco_misp.delivery.kube import KubeClient, KubeError
from falco_misp.delivery.registry import RegistryAuth, auth_from_docker_config
from falco_misp.errors import RegistryError
from falco_misp.feed.model import Feed, OciDelivery


@dataclass(frozen=True)
class ResolvedSecrets:
    """Secret values a fetch needs; never logged (``repr`` hides them)."""

    auth_key: str | None = field(default=None, repr=False)
    """The MISP API key."""
    ca_bundle: str | None = field(default=None, repr=False)
    """A PEM CA bundle."""
    registry_auth: RegistryAuth | None = field(default=None, repr=False)
    """Push credentials for ``delivery.oci`` (issue 16)."""
    registry_ca: str | None = field(default=None, repr=False)
    """The PEM CAs of ``delivery.oci.caSecretRef``."""

    @property
    def fingerprint(self) -> str | None:
        """A digest telling whether the values changed (None: the feed references no Secret)."""
        auth = self.registry_auth
        values = (self.auth_key, self.ca_bundle, auth.username if auth else None, auth.password if auth else None,
                  self.registry_ca)  # fmt: skip
        if all(value is None for value in values):
            return None
        digest = hashlib.sha256()
        for value in values:
            digest.update(b"\x00" if value is None else b"\x01" + value.encode())
        return digest.hexdigest()


def resolve_secrets(kube: KubeClient, feed: Feed) -> ResolvedSecrets:
    """Read the auth key and CA bundle Secrets in the feed's namespace (and a registry's, ``delivery.oci``)."""
    misp = feed.spec.source.misp
    oci = feed.spec.falco.delivery.oci
    registry: dict[str, Any] = {}
    if oci is not None:
        registry["registry_auth"] = _registry_auth(kube, feed.namespace, oci) if oci.credentials else None
        ref = oci.ca_bundle
        registry["registry_ca"] = kube.read_secret_value(feed.namespace, ref.name, ref.key) if ref else None
    if misp is None:
        return ResolvedSecrets(**registry)
    auth = kube.read_secret_value(feed.namespace, misp.auth_key.name, misp.auth_key.key) if misp.auth_key else None
    ca = kube.read_secret_value(feed.namespace, misp.ca_bundle.name, misp.ca_bundle.key) if misp.ca_bundle else None
    if misp.auth_key is not None and not auth:
        raise KubeError(
            "SecretKeyEmpty", f"Secret {feed.namespace}/{misp.auth_key.name} key {misp.auth_key.key!r} is empty"
        )
    return ResolvedSecrets(auth_key=auth, ca_bundle=ca, **registry)


def _registry_auth(kube: KubeClient, namespace: str, oci: OciDelivery) -> RegistryAuth:
    """``credentialsSecretRef``: a ``kubernetes.io/dockerconfigjson`` Secret (its entry for the registry), else the
    keys ``username`` and ``password``."""
    assert oci.credentials is not None
    name, host = oci.credentials, oci.reference.split("/", 1)[0]
    try:
        config = kube.read_secret_value(namespace, name, ".dockerconfigjson")
    except KubeError as exc:
        if exc.reason != "SecretKeyNotFound":
            raise
    else:
        try:
            found = auth_from_docker_config(config, host)
        except RegistryError as exc:
            raise KubeError("SecretInvalid", f"Secret {namespace}/{name}: {exc.message}") from None
        if found is None:
            raise KubeError("SecretInvalid", f"Secret {namespace}/{name}: no .dockerconfigjson entry for {host}")
        return found
    username = kube.read_secret_value(namespace, name, "username")
    return RegistryAuth(username=username, password=kube.read_secret_value(namespace, name, "password"))
