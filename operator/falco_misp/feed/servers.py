"""MISP servers as resources, and who may send a Secret where (pure; issue 15).

Credentials and reach belong to the administrator, filters to the feed's author (cert-manager's Issuer and
ClusterIssuer split). A ``ClusterMispServer`` (cluster-scoped, its Secrets in the operator's namespace) says which
feed namespaces may use it (``allowedNamespaces``: names or a namespace label selector; neither: none); a
``MispServer`` serves the feeds of its own namespace, its Secrets there too. A feed names one in
``source.misp.serverRef``.

A Secret of a feed's namespace is sent only to a URL its owner paired with it: the annotation
:data:`ALLOWED_URL_ANNOTATION` lists the origins (``scheme://host[:port]``, space-separated) the Secret may go to.
The inline form (``source.misp.url`` + ``authKeySecretRef``) and a MispServer's Secrets need it; a
ClusterMispServer's live in the operator's namespace, where only the administrator writes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from falco_misp.errors import SpecError
from falco_misp.feed.model import MispServer, NodeSelector, ServerKind
from falco_misp.feed.parse import _node_selector, _Reader, parse_server_settings

CLUSTER_PLURAL = "clustermispservers"
NAMESPACED_PLURAL = "mispservers"
PLURALS = {ServerKind.CLUSTER: CLUSTER_PLURAL, ServerKind.NAMESPACED: NAMESPACED_PLURAL}
ALLOWED_URL_ANNOTATION = "falco-misp.io/allowed-url"
"""On a Secret: the origins (space-separated) it may be sent to."""
MAX_ALLOWED_NAMES = 256
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class AllowedNamespaces:
    """Which feed namespaces may use a ClusterMispServer: those named, and those the selector matches (neither:
    none)."""

    names: tuple[str, ...] = ()
    """Namespaces allowed by name."""
    selector: NodeSelector | None = None
    """A namespace label selector (``matchLabels``, ``matchExpressions``); None: no selector."""
    everything: bool = False
    """``selector: {}``: every namespace (Kubernetes' empty selector)."""


@dataclass(frozen=True)
class ServerSpec:
    """One parsed ClusterMispServer or MispServer."""

    kind: ServerKind
    """Which resource."""
    name: str
    """metadata.name."""
    namespace: str | None
    """metadata.namespace (None: cluster-scoped)."""
    server: MispServer
    """The connection settings, as the inline form would give them (``secret_namespace`` not set yet)."""
    allowed: AllowedNamespaces = field(default_factory=AllowedNamespaces)
    """ClusterMispServer only: the feed namespaces that may use it."""

    @property
    def ref(self) -> str:
        """``ClusterMispServer/<name>`` or ``MispServer/<namespace>/<name>``, as messages name it."""
        return (
            f"{self.kind.value}/{self.name}"
            if self.namespace is None
            else f"{self.kind.value}/{self.namespace}/{self.name}"
        )


@dataclass(frozen=True)
class ZmqCredentials:
    """ZeroMQ PLAIN credentials (MISP's ``ZeroMQ_username`` and ``ZeroMQ_password``); never logged."""

    username: str = field(repr=False)
    """The user name."""
    password: str = field(repr=False)
    """The password."""


def parse_server(kind: ServerKind, name: str, namespace: str | None, spec: object) -> ServerSpec:
    """A server resource's ``spec``; errors name ``<plural>/<name>.spec.<field>`` and the value."""
    plural = PLURALS[kind]
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecError(f"{plural}/{name}", f"expected a lower-case DNS subdomain as the name, got {name!r}")
    r = _Reader(spec, f"{plural}/{name}.spec")
    server = parse_server_settings(r)
    allowed = AllowedNamespaces()
    if kind is ServerKind.CLUSTER:
        allowed = _allowed_namespaces(r.child("allowedNamespaces"))
    r.done()
    return ServerSpec(kind=kind, name=name, namespace=namespace, server=server, allowed=allowed)


def _allowed_namespaces(r: _Reader) -> AllowedNamespaces:
    names = r.strings("names", pattern=_NAMESPACE) or ()
    if len(names) > MAX_ALLOWED_NAMES:
        raise SpecError(r.at("names"), f"at most {MAX_ALLOWED_NAMES} names, got {len(names)}")
    raw = r.raw("selector")
    selector, everything = None, False
    if isinstance(raw, Mapping) and not raw:
        everything = True
    elif raw is not None:
        selector = _node_selector(_Reader(raw, r.at("selector")))
    r.done()
    return AllowedNamespaces(names=tuple(sorted(set(names))), selector=selector, everything=everything)


def spec_digest(spec: object) -> str:
    """A digest of a server's raw spec (a change makes the feeds using it sync again)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------- who may use a server
def selector_matches(selector: NodeSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: every matchLabels pair and every matchExpressions requirement holds."""
    if any(labels.get(k) != v for k, v in selector.match_labels):
        return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "In" and labels.get(req.key) not in req.values:
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def namespace_denial(server: ServerSpec, namespace: str, labels: Mapping[str, str] | None) -> str | None:
    """Why a feed in ``namespace`` may not use ``server`` (None: it may). ``labels``: the namespace's labels (None:
    not read, as no selector needs them)."""
    allowed = server.allowed
    if server.kind is ServerKind.NAMESPACED:
        return (
            None if server.namespace == namespace else f"{server.ref} serves only feeds of namespace {server.namespace}"
        )
    if allowed.everything or namespace in allowed.names:
        return None
    if allowed.selector is not None and labels is not None and selector_matches(allowed.selector, labels):
        return None
    if not allowed.names and allowed.selector is None:
        return f"{server.ref} allows no namespace (spec.allowedNamespaces names none and has no selector)"
    rule = []
    if allowed.names:
        rule.append(f"names {', '.join(allowed.names)}")
    if allowed.selector is not None:
        rule.append(f"selector {describe_selector(allowed.selector)}")
    return f"{server.ref} does not allow namespace {namespace} (spec.allowedNamespaces: {'; '.join(rule)})"


def describe_selector(selector: NodeSelector) -> str:
    """``k=v,k2 in (a,b)``: a selector as kubectl writes one."""
    terms = [f"{k}={v}" for k, v in selector.match_labels]
    for req in selector.match_expressions:
        if req.operator in ("In", "NotIn"):
            terms.append(f"{req.key} {req.operator.lower()} ({','.join(req.values)})")
        else:
            terms.append(req.key if req.operator == "Exists" else f"!{req.key}")
    return ",".join(terms)


# ------------------------------------------------------------------------------------------ Secret pairing
def origin(url: str) -> str | None:
    """``scheme://host:port`` of a URL, lower-cased, the default port made explicit (None: not a URL with a host)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not scheme or not host:
        return None
    port = port or _DEFAULT_PORTS.get(scheme)
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def pairing_problem(secret: str, annotations: Mapping[str, str] | None, url: str) -> str | None:
    """Why the Secret ``namespace/name`` may not be sent to ``url`` (None: its owner paired it with that origin).

    The annotation lists origins, space-separated; a path, a trailing slash or a default port make no difference
    (the key goes to the origin whatever the path)."""
    wanted = origin(url)
    raw = (annotations or {}).get(ALLOWED_URL_ANNOTATION)
    how = f"kubectl annotate secret -n {secret.replace('/', ' ', 1)} {ALLOWED_URL_ANNOTATION}={wanted}"
    if raw is None:
        return f"Secret {secret} is not paired with a server: set the annotation {ALLOWED_URL_ANNOTATION} to the " \
               f"server's origin ({how}); it is never sent to a URL its owner did not name"  # fmt: skip
    listed = [origin(entry) for entry in raw.split()]
    if wanted is not None and wanted in listed:
        return None
    return f"Secret {secret} is paired with {raw.strip() or 'nothing'} ({ALLOWED_URL_ANNOTATION}), not with " \
           f"{wanted}: it is not sent there (add the origin to the annotation if its owner agrees: {how})"  # fmt: skip
