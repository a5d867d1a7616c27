"""MispAllowList: what a company never wants alerts on, written once and named by many feeds (pure).

A MispAllowList (cluster-scoped, group ``falco-misp.io``) holds ``networks`` and ``domains`` (merged into each naming
feed's ``exclusions``: never emitted, broader indicator CIDRs carved around them) and ``exceptions`` (merged into
the feed's ``falco.exceptions``, named ``<list>:<name>``). A feed names them in ``spec.exclusions.allowLists``.

:func:`merge_allow_lists` is the one merge (feed + allow-lists -> the effective feed) that ``falco-misp render
--allow-list FILE`` and the operator's sync both use, so both render the same bytes from the same objects.
The lists are merged in name order whatever the order the feed names them in: same objects, same rules hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from falco_misp.errors import FalcoMispError, SpecError
from falco_misp.feed.exceptions import MAX_EXCEPTIONS
from falco_misp.feed.model import API_GROUP, API_VERSION, Feed, IPNetwork, RuleException
from falco_misp.feed.parse import _Reader, parse_exceptions, parse_network
from falco_misp.values import normalise_domain

ALLOW_LIST_KIND = "MispAllowList"
ALLOW_LIST_PLURAL = "mispallowlists"
MAX_NETWORKS = 4096
"""Networks per allow-list (each excluded network is carved out of the feed's CIDRs when they overlap)."""
MAX_DOMAINS = 4096
"""Domains per allow-list."""
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DESCRIPTION = re.compile(r"^[^\x00-\x1f\x7f]{0,256}$")


class AllowListNotFound(FalcoMispError):
    """A feed names MispAllowLists that do not exist (operator: reason ``AllowListNotFound``)."""

    def __init__(self, feed: str, missing: Iterable[str]) -> None:
        self.missing = tuple(missing)
        """The names not found."""
        names = ", ".join(self.missing)
        super().__init__(
            f"feed {feed} names MispAllowList(s) {names} in spec.exclusions.allowLists, which do not exist "
            "(create them, or remove the names)"
        )


@dataclass(frozen=True)
class AllowList:
    """One parsed MispAllowList."""

    name: str
    """metadata.name (cluster-scoped: no namespace)."""
    networks: tuple[IPNetwork, ...] = ()
    """Addresses and CIDRs never emitted by the feeds that name the list."""
    domains: tuple[str, ...] = ()
    """Domains (and their subdomains) never emitted."""
    exceptions: tuple[RuleException, ...] = ()
    """Falco rule exceptions added to those feeds' rules (their names as written, unqualified)."""
    description: str = ""
    """What the list is for (shown by ``kubectl get mispallowlists``)."""


def spec_digest(spec: object) -> str:
    """A digest of a MispAllowList's raw spec: the operator compares it to notice a change (None-safe JSON)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_allow_list_spec(name: str, spec: object) -> AllowList:
    """A MispAllowList's ``spec``; errors name ``mispallowlists/<name>.spec.<field>`` and the value."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecError(f"mispallowlists/{name}", f"expected a lower-case DNS subdomain as the name, got {name!r}")
    r = _Reader(spec, f"mispallowlists/{name}.spec")
    networks_raw = r.strings("networks") or ()
    if len(networks_raw) > MAX_NETWORKS:
        raise SpecError(r.at("networks"), f"at most {MAX_NETWORKS} networks, got {len(networks_raw)}")
    networks = [parse_network(v, f"{r.at('networks')}[{i}]") for i, v in enumerate(networks_raw)]
    domains_raw = r.strings("domains") or ()
    if len(domains_raw) > MAX_DOMAINS:
        raise SpecError(r.at("domains"), f"at most {MAX_DOMAINS} domains, got {len(domains_raw)}")
    domains: list[str] = []
    for i, value in enumerate(domains_raw):
        domain = normalise_domain(value)
        if domain is None:
            raise SpecError(f"{r.at('domains')}[{i}]", f"not a domain name: {value!r}")
        domains.append(domain)
    description = r.raw("description")
    if description is not None and (not isinstance(description, str) or not _DESCRIPTION.match(description)):
        raise SpecError(r.at("description"), f"expected one line of at most 256 characters, got {description!r}")
    allow_list = AllowList(
        name=name,
        networks=tuple(sorted(set(networks), key=lambda n: (n.version, n))),
        domains=tuple(sorted(set(domains))),
        exceptions=parse_exceptions(r),
        description=description or "",
    )
    r.done()
    return allow_list


def parse_allow_list(document: object) -> AllowList:
    """A whole MispAllowList manifest (``apiVersion``, ``kind``, ``metadata.name``, ``spec``)."""
    r = _Reader(document, ALLOW_LIST_KIND)
    api_version = r.string("apiVersion", f"{API_GROUP}/{API_VERSION}")
    if not api_version.startswith(f"{API_GROUP}/"):
        raise SpecError("apiVersion", f"expected {API_GROUP}/{API_VERSION}, got {api_version!r}")
    kind = r.string("kind", ALLOW_LIST_KIND)
    if kind != ALLOW_LIST_KIND:
        raise SpecError("kind", f"expected {ALLOW_LIST_KIND}, got {kind!r}")
    name = r.child("metadata").string("name")
    return parse_allow_list_spec(name, r.raw("spec"))


def merge_allow_lists(feed: Feed, lists: Mapping[str, AllowList]) -> Feed:
    """The effective feed: ``feed`` with the allow-lists it names merged in (name order; others ignored).

    Raises :class:`AllowListNotFound` when a named list is missing from ``lists``, :class:`SpecError` when the
    merged exceptions exceed :data:`~falco_misp.feed.exceptions.MAX_EXCEPTIONS`.
    """
    names = feed.spec.exclusions.allow_lists
    if not names:
        return feed
    missing = [n for n in names if n not in lists]
    if missing:
        raise AllowListNotFound(feed.ref, missing)
    used = [lists[n] for n in sorted(names)]
    exclusions = feed.spec.exclusions
    networks = {*exclusions.networks, *(n for a in used for n in a.networks)}
    domains = {*exclusions.domains, *(d for a in used for d in a.domains)}
    exceptions = list(feed.spec.falco.exceptions)
    for allow_list in used:
        exceptions += [dataclasses.replace(e, name=f"{allow_list.name}:{e.name}") for e in allow_list.exceptions]
    if len(exceptions) > MAX_EXCEPTIONS:
        raise SpecError(
            "spec.exclusions.allowLists",
            f"{len(exceptions)} exceptions with those of {', '.join(sorted(names))}, at most {MAX_EXCEPTIONS}",
        )
    spec = dataclasses.replace(
        feed.spec,
        exclusions=dataclasses.replace(
            exclusions,
            networks=tuple(sorted(networks, key=lambda n: (n.version, n))),
            domains=tuple(sorted(domains)),
        ),
        falco=dataclasses.replace(feed.spec.falco, exceptions=tuple(exceptions)),
    )
    return dataclasses.replace(feed, spec=spec)


def allow_list_documents(documents: Iterable[Any]) -> dict[str, AllowList]:
    """The MispAllowLists among manifests (other kinds skipped), by name; a name given twice is an error."""
    out: dict[str, AllowList] = {}
    for doc in documents:
        if not isinstance(doc, Mapping) or doc.get("kind") != ALLOW_LIST_KIND:
            continue
        allow_list = parse_allow_list(doc)
        if allow_list.name in out:
            raise SpecError(f"mispallowlists/{allow_list.name}", "defined twice")
        out[allow_list.name] = allow_list
    return out
