"""The Secrets a feed references, read from its namespace, or a server resource's (a service; values never logged).

A Secret of the feed's namespace is read for a URL only when its owner paired it with that URL (issue 15,
:mod:`falco_misp.controller.servers`)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from falco_misp.controller.servers import ServerZmq, needs_pairing, read_paired_value, read_zmq, resolve_server
from falco_misp.delivery.kube import KubeClient, KubeError
from falco_misp.delivery.registry import RegistryAuth, auth_from_docker_config
from falco_misp.errors import RegistryError
from falco_misp.feed.model import Feed, MispServer, OciDelivery
from falco_misp.feed.servers import pairing_problem


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
    server: MispServer | None = None
    """``source.misp.serverRef`` resolved: the server resource's settings (issue 15); None: the inline form."""
    server_digest: str | None = None
    """The digest of that server's spec (it changed: the feed syncs again)."""
    zmq: ServerZmq | None = field(default=None, repr=False)
    """That server's ZeroMQ publisher and PLAIN credentials, for live updates."""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """``headersSecretRef`` of a static feed, export or list: HTTP headers for the URL's origin (issue 15)."""

    @property
    def fingerprint(self) -> str | None:
        """A digest telling whether the values changed (None: the feed references no Secret)."""
        auth = self.registry_auth
        creds = self.zmq.credentials if self.zmq is not None else None
        values = (self.auth_key, self.ca_bundle, auth.username if auth else None, auth.password if auth else None,
                  self.registry_ca, self.server_digest, creds.username if creds else None,
                  creds.password if creds else None,
                  "\n".join(f"{k}: {v}" for k, v in sorted(self.headers.items())) or None)  # fmt: skip
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
    location = feed.spec.source.location
    if location is not None and location.headers_secret:  # issue 15: paired with the URL's origin, like a key
        registry["headers"] = read_headers(kube, feed.namespace, location.headers_secret, location.url)
    if misp is None:
        return ResolvedSecrets(**registry)
    if misp.server_ref is not None:  # issue 15: the server resource, checked against the feed's namespace first
        resolved = resolve_server(kube, feed)
        misp = resolved.server
        registry.update(server=misp, server_digest=resolved.digest, zmq=read_zmq(kube, misp))
    namespace = misp.secret_namespace or feed.namespace
    ref = misp.auth_key  # sent to misp.url only where its owner paired it (issue 15)
    auth = read_paired_value(kube, namespace, ref, misp.url, paired=needs_pairing(misp)) if ref else None
    ca = kube.read_secret_value(namespace, misp.ca_bundle.name, misp.ca_bundle.key) if misp.ca_bundle else None
    if ref is not None and not auth:
        raise KubeError("SecretKeyEmpty", f"Secret {namespace}/{ref.name} key {ref.key!r} is empty")
    return ResolvedSecrets(auth_key=auth, ca_bundle=ca, **registry)


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")  # an RFC 9110 token


def read_headers(kube: KubeClient, namespace: str, name: str, url: str) -> dict[str, str]:
    """The Secret ``name`` as HTTP headers (each key a header name), read only when its owner paired it with the
    origin of ``url`` (``SecretNotPaired``); a key that is no header name or a value with a line break:
    ``SecretInvalid`` (the value is never shown)."""
    values, annotations = kube.read_secret_entries(namespace, name)
    problem = pairing_problem(f"{namespace}/{name}", annotations, url)
    if problem is not None:
        raise KubeError("SecretNotPaired", problem)
    for key, value in values.items():
        if not _HEADER_NAME.match(key) or any(c in value for c in "\r\n\0"):
            raise KubeError("SecretInvalid", f"Secret {namespace}/{name} key {key!r} is not a valid HTTP header")
    if not values:
        raise KubeError("SecretKeyEmpty", f"Secret {namespace}/{name} holds no header")
    return values


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
