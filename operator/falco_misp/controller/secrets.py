"""The Secrets a feed references, read from its namespace (a service; values never logged)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from falco_misp.delivery.kube import KubeClient, KubeError
from falco_misp.feed.model import Feed


@dataclass(frozen=True)
class ResolvedSecrets:
    """Secret values a fetch needs; never logged (``repr`` hides them)."""

    auth_key: str | None = field(default=None, repr=False)
    """The MISP API key."""
    ca_bundle: str | None = field(default=None, repr=False)
    """A PEM CA bundle."""

    @property
    def fingerprint(self) -> str | None:
        """A digest telling whether the values changed (None: the feed references no Secret)."""
        if self.auth_key is None and self.ca_bundle is None:
            return None
        digest = hashlib.sha256()
        for value in (self.auth_key, self.ca_bundle):
            digest.update(b"\x00" if value is None else b"\x01" + value.encode())
        return digest.hexdigest()


def resolve_secrets(kube: KubeClient, feed: Feed) -> ResolvedSecrets:
    """Read the auth key and CA bundle Secrets in the feed's namespace."""
    misp = feed.spec.source.misp
    if misp is None:
        return ResolvedSecrets()
    auth = kube.read_secret_value(feed.namespace, misp.auth_key.name, misp.auth_key.key) if misp.auth_key else None
    ca = kube.read_secret_value(feed.namespace, misp.ca_bundle.name, misp.ca_bundle.key) if misp.ca_bundle else None
    if misp.auth_key is not None and not auth:
        raise KubeError(
            "SecretKeyEmpty", f"Secret {feed.namespace}/{misp.auth_key.name} key {misp.auth_key.key!r} is empty"
        )
    return ResolvedSecrets(auth_key=auth, ca_bundle=ca)
