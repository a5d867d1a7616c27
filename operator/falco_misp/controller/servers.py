"""MISP server resources, the operator's side (a service; issue 15): resolve a feed's ``serverRef`` before anything
is fetched, read a Secret only where its owner paired it, and check each server's reachability and key.

:func:`resolve_server` turns ``source.misp.serverRef`` into the server's connection settings, refusing with a
reason naming the server (``ServerNotFound``, ``InvalidServer``) or the rule (``ServerNotAllowed``) before any
MISP request; :func:`read_paired_value` reads a Secret value only when its ``falco-misp.io/allowed-url``
annotation names the origin it is for (``SecretNotPaired`` otherwise: the value is never sent);
:func:`check_server` (a kopf timer on both kinds, :mod:`falco_misp.controller.handlers`) asks MISP
``/servers/getVersion`` and ``/users/view/me`` with the server's key and writes ``Reachable``, ``KeyValid``,
``mispVersion`` and ``lastCheck``. Secret values are never logged or written.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from falco_misp.conditions import Condition, build_conditions, format_time
from falco_misp.delivery.kube import KubeClient, KubeError
from falco_misp.errors import SourceError, SpecError
from falco_misp.feed.model import Feed, MispServer, MispZmq, SecretRef, ServerKind, ServerRef
from falco_misp.feed.policy import HOST_NOT_ALLOWED, Policy, check_url
from falco_misp.feed.servers import (
    PLURALS,
    ServerSpec,
    ZmqCredentials,
    namespace_denial,
    pairing_problem,
    parse_server,
    spec_digest,
)
from falco_misp.sources.misp import ca_file, connect_misp, failure_reason
from falco_misp.values import safe_url

log = logging.getLogger(__name__)

REACHABLE = "Reachable"
KEY_VALID = "KeyValid"
KEY_REJECTED = "KeyRejected"
CHECK_TIMEOUT_SECONDS = 10.0
"""Longest wait per request of a status check (PyMISP's start-up makes four): a hung server cannot hold the timer."""
_REJECTED = ("HTTP401", "HTTP403", "Unauthorized")


@dataclass(frozen=True)
class ServerZmq:
    """A server resource's ZeroMQ publisher with its PLAIN credentials, for the feed's live updates."""

    zmq: MispZmq
    """URL and debounce."""
    credentials: ZmqCredentials | None = dataclasses.field(default=None, repr=False)
    """From ``zmq.credentialsSecretRef`` (None: the publisher takes anyone)."""


@dataclass(frozen=True)
class ResolvedServer:
    """A feed's ``serverRef``, resolved."""

    server: MispServer
    """The server's settings, ``server_ref`` and ``secret_namespace`` set."""
    digest: str
    """The digest of the server's spec (a change makes the feed sync again at its next tick)."""


def server_location(kind: ServerKind, feed_namespace: str) -> str | None:
    """The namespace a reference of ``kind`` resolves in (None: cluster-scoped)."""
    return None if kind is ServerKind.CLUSTER else feed_namespace


def resolve_server(kube: KubeClient, feed: Feed) -> ResolvedServer:
    """The server a feed refers to, once the feed's namespace is checked against it; raises :class:`KubeError`
    (``ServerNotFound``, ``InvalidServer``, ``ServerNotAllowed``, or the API's)."""
    misp = feed.spec.source.misp
    assert misp is not None and misp.server_ref is not None
    ref = misp.server_ref
    namespace = server_location(ref.kind, feed.namespace)
    where = f"{ref.kind.value} {ref.name}" if namespace is None else f"{ref.kind.value} {namespace}/{ref.name}"
    obj = kube.read_misp_server(PLURALS[ref.kind], namespace, ref.name)
    if obj is None:
        raise KubeError("ServerNotFound", f"{where} (spec.source.misp.serverRef) not found: nothing was fetched")
    try:
        spec = parse_server(ref.kind, ref.name, namespace, obj.get("spec"))
    except SpecError as exc:
        raise KubeError("InvalidServer", f"{where} is invalid: {exc}") from None
    labels = None
    if spec.allowed.selector is not None and feed.namespace not in spec.allowed.names:
        labels = kube.namespace_labels(feed.namespace)
    denial = namespace_denial(spec, feed.namespace, labels)
    if denial is not None:
        raise KubeError("ServerNotAllowed", f"feed {feed.ref}: {denial}; nothing was fetched")
    secret_namespace = kube.namespace if ref.kind is ServerKind.CLUSTER else feed.namespace
    server = dataclasses.replace(spec.server, server_ref=ref, secret_namespace=secret_namespace)
    return ResolvedServer(server=server, digest=spec_digest(obj.get("spec")))


def needs_pairing(server: MispServer) -> bool:
    """Whether the Secrets ``server`` names live where a feed author may write (the inline form, a MispServer):
    then each must name the origin it may go to. A ClusterMispServer's live in the operator's namespace."""
    return server.server_ref is None or server.server_ref.kind is ServerKind.NAMESPACED


def read_paired_value(kube: KubeClient, namespace: str, ref: SecretRef, url: str, *, paired: bool) -> str:
    """One Secret value, read only if its owner paired the Secret with ``url`` (``paired``: the check applies);
    raises :class:`KubeError` (``SecretNotPaired``: the value is never returned, so never sent)."""
    value, annotations = kube.read_secret_entry(namespace, ref.name, ref.key)
    if paired:
        problem = pairing_problem(f"{namespace}/{ref.name}", annotations, url)
        if problem is not None:
            raise KubeError("SecretNotPaired", problem)
    return value


def read_zmq(kube: KubeClient, server: MispServer) -> ServerZmq | None:
    """A server resource's ZeroMQ settings with their credentials (keys ``username`` and ``password``)."""
    zmq = server.zmq
    if zmq is None:
        return None
    if zmq.credentials_secret is None:
        return ServerZmq(zmq)
    namespace = server.secret_namespace or ""
    paired = needs_pairing(server)
    user = read_paired_value(kube, namespace, SecretRef(zmq.credentials_secret, "username"), zmq.url, paired=paired)
    word = read_paired_value(kube, namespace, SecretRef(zmq.credentials_secret, "password"), zmq.url, paired=paired)
    return ServerZmq(zmq, ZmqCredentials(username=user, password=word))


# --------------------------------------------------------------------------------------------- server status
@dataclass(frozen=True)
class ServerObject:
    """What a status check reads from a server resource."""

    kind: ServerKind
    """ClusterMispServer or MispServer."""
    name: str
    """metadata.name."""
    namespace: str | None
    """metadata.namespace (None: cluster-scoped)."""
    generation: int
    """metadata.generation."""
    spec: Mapping[str, Any]
    """The raw spec."""
    status: Mapping[str, Any]
    """The status as last written."""


def server_object(kind: ServerKind, body: Mapping[str, Any]) -> ServerObject:
    """What a status check reads from a server resource's body (kopf's, or a plain dict)."""
    meta = body.get("metadata") or {}
    status = body.get("status")
    return ServerObject(
        kind=kind,
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace")) if kind is ServerKind.NAMESPACED else None,
        generation=int(meta.get("generation") or 0),
        spec=dict(body.get("spec") or {}),
        status=dict(status) if isinstance(status, Mapping) else {},
    )


def check_server(kube: KubeClient, obj: ServerObject, now: datetime, policy: Policy | None = None) -> dict[str, Any]:
    """Ask the server whether it answers and accepts its key; the complete new status. ``policy``: the operator's
    egress allow-list, applied as to a feed's fetch (a MispServer's URL is a namespace owner's choice)."""
    reachable, key_valid, version = _probe(kube, obj, policy)
    status = dict(obj.status)
    status["observedGeneration"] = obj.generation
    status["lastCheck"] = format_time(now)
    if version is not None:
        status["mispVersion"] = version
    status["conditions"] = build_conditions(obj.status.get("conditions"), [reachable, key_valid], now, obj.generation)
    return status


def _probe(kube: KubeClient, obj: ServerObject, policy: Policy | None) -> tuple[Condition, Condition, str | None]:
    unchecked = "not checked: "
    try:
        spec: ServerSpec = parse_server(obj.kind, obj.name, obj.namespace, obj.spec)
    except SpecError as exc:
        detail = f"invalid spec: {exc}"
        return (Condition(REACHABLE, None, "InvalidSpec", unchecked + detail),
                Condition(KEY_VALID, None, "InvalidSpec", unchecked + detail), None)  # fmt: skip
    namespace = kube.namespace if obj.kind is ServerKind.CLUSTER else (obj.namespace or "")
    server = dataclasses.replace(
        spec.server, secret_namespace=namespace, server_ref=ServerRef(kind=obj.kind, name=obj.name)
    )
    url = safe_url(server.url)
    refused = check_url(policy, server.url) if policy is not None else None
    if refused is not None:  # outside the egress allow-list: no Secret read, no connection
        return (Condition(REACHABLE, False, HOST_NOT_ALLOWED, refused),
                Condition(KEY_VALID, None, "NotChecked", f"{unchecked}{refused}"), None)  # fmt: skip
    assert server.auth_key is not None
    try:  # the key, and a CA, read exactly as a feed's sync reads them (a MispServer's only where paired)
        key = read_paired_value(kube, namespace, server.auth_key, server.url, paired=needs_pairing(server))
        ca = None
        if server.ca_bundle is not None:
            ca = kube.read_secret_value(namespace, server.ca_bundle.name, server.ca_bundle.key)
    except KubeError as exc:
        return (Condition(REACHABLE, None, "NotChecked", f"{unchecked}the key cannot be read ({exc.reason})"),
                Condition(KEY_VALID, False, exc.reason, exc.message), None)  # fmt: skip
    bounded = dataclasses.replace(server, timeout_seconds=min(server.timeout_seconds, CHECK_TIMEOUT_SECONDS))
    try:
        with ca_file(ca) as ca_path:
            client = connect_misp(bounded, key, ca_path, policy=policy)  # getVersion, getPyMISPVersion, users/me
            answer = client.misp_instance_version
    except Exception as exc:  # PyMISP raises many types; classified the way a sync classifies them
        reason = exc.reason if isinstance(exc, SourceError) else failure_reason(exc)
        if reason in _REJECTED:
            return (Condition(REACHABLE, True, "Answered", f"MISP at {url} answered"),
                    Condition(KEY_VALID, False, KEY_REJECTED, f"MISP at {url} rejected the API key ({reason})"),
                    None)  # fmt: skip
        log.info("%s: MISP at %s unreachable (%s)", obj.kind.value, url, reason)
        return (Condition(REACHABLE, False, reason, f"MISP at {url}: {reason}"),
                Condition(KEY_VALID, None, "NotChecked", f"{unchecked}MISP at {url} did not answer"), None)  # fmt: skip
    version = answer.get("version") if isinstance(answer, dict) else None
    version = str(version)[:64] if version else None
    return (Condition(REACHABLE, True, "Answered", f"MISP {version or '(version unknown)'} at {url} answered"),
            Condition(KEY_VALID, True, "KeyAccepted", f"MISP at {url} accepted the API key (/users/view/me)"),
            version)  # fmt: skip
