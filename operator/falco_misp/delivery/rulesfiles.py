"""The falco-operator's Rulesfiles that carry a feed's rules (pure): manifests, the plan, and the delivery answer.

With ``falco.delivery.mode: Rulesfiles`` each shard becomes a ConfigMap holding the key ``rules.yaml`` (the name the
falco-operator requires) and a ``Rulesfile`` (``artifact.falcosecurity.dev/v1alpha1``) whose ``configMapRef`` names
it, both in the Falco instance's namespace, both named ``<configMapPrefix>-<shard>`` and labelled like the
ConfigMaps of the other mode (:mod:`falco_misp.delivery.configmaps`: ownership by labels, never by owner refs).
The falco-operator's artifact sidecar in every Falco pod writes the rules where Falco loads them, without restarts:
no DaemonSet is read or patched (reference/FALCO-OPERATOR.md).

Order matters both ways, and :class:`RulesfilePlan` keeps the steps apart so the applier can follow it: ConfigMaps
are written before the Rulesfiles that reference them; a Rulesfile is deleted before its ConfigMap (the
falco-operator holds a finalizer on every ConfigMap a Rulesfile references, so a ConfigMap deleted first would
hang in Terminating). A ConfigMap still Terminating is never written again; a desired one that is (the feed grew
back to a shard just pruned) blocks the sync until the falco-operator lets it go. Foreign finalizers are never
touched.

Delivery is read back from each Rulesfile's ``ResolvedRefs`` (the ConfigMap was found) and ``Programmed`` (the
rules were written for Falco) conditions into the ``Delivered`` condition. With ``delivery.mode: OCI`` and
``oci.rulesfile``, one Rulesfile's ``ociArtifact`` is pinned to the digest just pushed (:func:`build_oci_rulesfile`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from falco_misp.conditions import Condition, format_time, status_patch
from falco_misp.delivery.configmaps import (
    ANNOTATION_RULES_HASH,
    ANNOTATION_SHARD_HASH,
    ConfigMapPlan,
    build_configmap,
    feed_labels,
    plan_configmaps,
)
from falco_misp.feed.model import Feed, NodeSelector
from falco_misp.rendering.shards import RulesBundle, Shard

RULESFILE_GROUP = "artifact.falcosecurity.dev"
RULESFILE_VERSION = "v1alpha1"
RULESFILE_PLURAL = "rulesfiles"
RULESFILE_KIND = "Rulesfile"
RULES_KEY = "rules.yaml"
"""The ConfigMap key a Rulesfile's ``configMapRef`` reads (the falco-operator requires this name)."""
ROLLOUT_MODE = "Rulesfiles"
"""``status.rollout.mode`` of a feed whose rules are in Rulesfiles (no DaemonSet): how a later sync or the cleanup
knows Rulesfiles may exist, even after the spec changed."""
OCI_ROLLOUT_MODE = "OCI"
"""``status.rollout.mode`` of a feed whose rules are pushed to a registry (a pinned Rulesfile may exist)."""
PROGRAMMED = "Programmed"
RESOLVED_REFS = "ResolvedRefs"
DELIVERED = "Delivered"
_CONDITIONS = (RESOLVED_REFS, PROGRAMMED)  # the cause first: a ConfigMap not found is why nothing is programmed
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


# ---------------------------------------------------------------------------------------------- manifests
def build_rules_configmap(feed: Feed, bundle: RulesBundle, shard: Shard) -> dict[str, Any]:
    """The ConfigMap holding one shard under the key ``rules.yaml`` (labels and annotations as in ConfigMaps mode)."""
    body = build_configmap(feed, bundle, shard)
    body["data"] = {RULES_KEY: shard.content.decode()}
    return body


def selector_body(selector: NodeSelector) -> dict[str, Any]:
    """A Rulesfile's ``spec.selector`` (a Kubernetes LabelSelector over node labels)."""
    out: dict[str, Any] = {}
    if selector.match_labels:
        out["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        out["matchExpressions"] = [
            {"key": e.key, "operator": e.operator, **({"values": list(e.values)} if e.values else {})}
            for e in selector.match_expressions
        ]
    return out


def build_rulesfile(feed: Feed, bundle: RulesBundle, shard: Shard) -> dict[str, Any]:
    """The Rulesfile that makes the falco-operator load one shard's ConfigMap (same name, same namespace)."""
    annotations = {ANNOTATION_RULES_HASH: bundle.sha256, ANNOTATION_SHARD_HASH: shard.sha256}
    return _rulesfile(feed, shard.name, {"configMapRef": {"name": shard.name}}, annotations)


def _rulesfile(feed: Feed, name: str, source: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
    """A Rulesfile of the feed: its rules ``source``, the feed's priority and node selector, labels and ``name``."""
    settings = feed.spec.falco.delivery.rulesfile
    spec: dict[str, Any] = {**source, "priority": settings.priority}
    if settings.selector is not None:
        spec["selector"] = selector_body(settings.selector)
    return {
        "apiVersion": f"{RULESFILE_GROUP}/{RULESFILE_VERSION}",
        "kind": RULESFILE_KIND,
        "metadata": {
            "name": name,
            "namespace": feed.spec.falco.namespace,
            "labels": feed_labels(feed),
            "annotations": annotations,
        },
        "spec": spec,
    }


def build_oci_rulesfile(feed: Feed, bundle: RulesBundle, registry: str, repository: str, digest: str) -> dict[str, Any]:
    """Mode OCI with ``oci.rulesfile``: one Rulesfile (named like the ConfigMap prefix) whose ``ociArtifact`` is
    pinned to the manifest ``digest`` just pushed. The falco-operator pulls again only when a Rulesfile's spec changes
    (reference/FALCO-OPERATOR.md): a new digest is a new spec, a moving tag would never be seen."""
    oci = feed.spec.falco.delivery.oci
    assert oci is not None, "a feed of mode OCI always has its oci settings"
    where: dict[str, Any] = {"name": registry}
    if oci.plain_http:
        where["plainHTTP"] = True
    elif oci.insecure_skip_verify:
        where["tls"] = {"insecureSkipVerify": True}
    if oci.pull_secret:
        where["auth"] = {"secretRef": {"name": oci.pull_secret}}
    source = {"ociArtifact": {"image": {"repository": repository, "tag": digest}, "registry": where}}
    return _rulesfile(feed, feed.config_map_prefix, source, {ANNOTATION_RULES_HASH: bundle.sha256})


# ---------------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class RulesfilePlan:
    """What to write so the namespace holds exactly one feed's ConfigMaps and Rulesfiles, step by step.

    The applier runs, in this order: ``configmaps.create``/``update``, then ``create``/``update`` (Rulesfiles), then
    ``delete`` (Rulesfiles), then ``configmaps.delete``.
    """

    configmaps: ConfigMapPlan
    """The ConfigMaps (key ``rules.yaml``); Terminating ones are left out of it."""
    create: tuple[Mapping[str, Any], ...] = ()
    """Whole Rulesfiles to create."""
    update: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    """(name, merge patch) for owned Rulesfiles whose spec, or a label or annotation we set, differs."""
    delete: tuple[str, ...] = ()
    """Owned Rulesfiles no longer rendered."""
    unchanged: tuple[str, ...] = ()
    """Owned Rulesfiles already as desired."""
    terminating: tuple[str, ...] = ()
    """Owned ConfigMaps already deleted and held by a finalizer (the falco-operator's): left alone."""
    blocked: tuple[str, ...] = ()
    """Desired ConfigMaps or Rulesfiles still Terminating: nothing may be written until they are gone."""

    @property
    def writes(self) -> int:
        """Number of API writes the plan needs (ConfigMaps and Rulesfiles)."""
        return self.configmaps.writes + len(self.create) + len(self.update) + len(self.delete)

    def summary(self) -> ConfigMapPlan:
        """Both kinds in one plan shape (for the sync's counts and Events): creates, updates and deletes of each."""
        cms = self.configmaps
        return dataclasses.replace(  # the ConfigMaps' other facts (what they held before) carried over
            cms,
            create=(*cms.create, *self.create),
            update=(*cms.update, *self.update),
            delete=(*cms.delete, *self.delete),
            unchanged=(*cms.unchanged, *self.unchanged),
        )


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name", ""))


def is_terminating(obj: Mapping[str, Any]) -> bool:
    """Deleted, and held by a finalizer until its owner lets it go."""
    return bool(_meta(obj).get("deletionTimestamp"))


def foreign_finalizers(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """The finalizers on an object (the operator sets none of its own on ConfigMaps or Rulesfiles)."""
    return tuple(str(f) for f in _meta(obj).get("finalizers") or ())


def _contains(have: object, want: Mapping[str, Any]) -> bool:
    return isinstance(have, Mapping) and all(have.get(k) == v for k, v in want.items())


def plan_rulesfile_objects(
    desired: Sequence[Mapping[str, Any]], owned: Sequence[Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], list[tuple[str, Mapping[str, Any]]], list[str], list[str]]:
    """(create, update, delete, unchanged) for the Rulesfiles: the spec is ours entirely (a source someone added,
    ``inlineRules`` or ``ociArtifact``, is removed); labels and annotations others added are left alone."""
    existing = {_name(o): o for o in owned}
    create: list[Mapping[str, Any]] = []
    update: list[tuple[str, Mapping[str, Any]]] = []
    unchanged: list[str] = []
    for want in desired:
        name = _name(want)
        have = existing.get(name)
        if have is None:
            create.append(want)
            continue
        meta_want, meta_have = _meta(want), _meta(have)
        spec_raw = have.get("spec")
        spec_have: Mapping[str, Any] = spec_raw if isinstance(spec_raw, Mapping) else {}
        spec_patch = status_patch(spec_have, want["spec"])
        labels, annotations = dict(meta_want.get("labels", {})), dict(meta_want.get("annotations", {}))
        same_meta = _contains(meta_have.get("labels"), labels) and _contains(meta_have.get("annotations"), annotations)
        if not spec_patch and same_meta:
            unchanged.append(name)
            continue
        patch: dict[str, Any] = {"metadata": {"labels": labels, "annotations": annotations}}
        if spec_patch:
            patch["spec"] = spec_patch
        update.append((name, patch))
    wanted = {_name(w) for w in desired}
    delete = sorted(name for name in existing if name not in wanted)
    return create, update, delete, unchanged


def plan_rulesfiles(
    feed: Feed,
    bundle: RulesBundle,
    owned_configmaps: Sequence[Mapping[str, Any]],
    owned_rulesfiles: Sequence[Mapping[str, Any]],
) -> RulesfilePlan:
    """Compare the rendered ConfigMaps and Rulesfiles with the ones this feed owns (found by its labels)."""
    cms = [build_rules_configmap(feed, bundle, shard) for shard in bundle.shards]
    rfs = [build_rulesfile(feed, bundle, shard) for shard in bundle.shards]
    terminating_cms = sorted(_name(o) for o in owned_configmaps if is_terminating(o))
    terminating_rfs = {_name(o) for o in owned_rulesfiles if is_terminating(o)}
    wanted = {shard.name for shard in bundle.shards}
    blocked = sorted((set(terminating_cms) | terminating_rfs) & wanted)
    configmaps = plan_configmaps(cms, [o for o in owned_configmaps if not is_terminating(o)])
    create, update, delete, unchanged = plan_rulesfile_objects(
        rfs, [o for o in owned_rulesfiles if not is_terminating(o)]
    )
    return RulesfilePlan(
        configmaps=configmaps,
        create=tuple(create),
        update=tuple(update),
        delete=tuple(delete),
        unchanged=tuple(unchanged),
        terminating=tuple(terminating_cms),
        blocked=tuple(blocked),
    )


# ------------------------------------------------------------------------------------------------ delivered
@dataclass(frozen=True)
class RulesfileState:
    """What the falco-operator said of one Rulesfile."""

    name: str
    """The Rulesfile's name."""
    programmed: bool = False
    """``ResolvedRefs`` and ``Programmed`` are both True, for the Rulesfile's current generation."""
    failed: tuple[str, str, str] | None = None
    """(condition type, reason, message) of the first of them that is False."""
    waiting: str = ""
    """Why it counts as neither: missing, not reported on yet, or reported for an older generation."""


@dataclass(frozen=True)
class RulesfileReport:
    """Every Rulesfile the feed wrote, against what the falco-operator reported."""

    namespace: str
    """Where they live (the Falco instance's namespace)."""
    states: tuple[RulesfileState, ...] = ()
    """One per expected Rulesfile, by name."""
    terminating: tuple[str, ...] = field(default=())
    """The feed's ConfigMaps deleted but still held by a finalizer (the falco-operator's)."""

    @property
    def programmed(self) -> tuple[str, ...]:
        """Names of the Rulesfiles the falco-operator programmed."""
        return tuple(s.name for s in self.states if s.programmed)

    @property
    def failing(self) -> tuple[str, ...]:
        """Names of the Rulesfiles with a False condition."""
        return tuple(s.name for s in self.states if s.failed is not None)


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for entry in status.get("conditions") or ():
        if isinstance(entry, Mapping) and entry.get("type") == type_:
            return entry
    return None


def rulesfile_state(name: str, obj: Mapping[str, Any] | None) -> RulesfileState:
    """One Rulesfile's answer from its ``status.conditions`` (None: it does not exist)."""
    if obj is None:
        return RulesfileState(name, waiting="it does not exist")
    raw = obj.get("status")
    status: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    generation = _meta(obj).get("generation")
    unknown: list[str] = []
    for type_ in _CONDITIONS:
        cond = _condition(status, type_)
        if cond is None:
            unknown.append(f"no {type_} condition yet")
            continue
        seen = cond.get("observedGeneration")
        if isinstance(generation, int) and isinstance(seen, int) and seen < generation:
            unknown.append(f"{type_} is for generation {seen}, not {generation}")
        elif cond.get("status") == "False":
            return RulesfileState(name, failed=(type_, str(cond.get("reason") or ""), str(cond.get("message") or "")))
        elif cond.get("status") != "True":
            detail = ": ".join(str(v) for v in (cond.get("reason"), cond.get("message")) if v)
            unknown.append(f"{type_} is {cond.get('status') or 'Unknown'}" + (f" ({detail})" if detail else ""))
    if unknown:
        return RulesfileState(name, waiting="; ".join(unknown))
    return RulesfileState(name, programmed=True)


def rulesfile_report(
    namespace: str,
    expected: Sequence[str],
    rulesfiles: Sequence[Mapping[str, Any]],
    configmaps: Sequence[Mapping[str, Any]] = (),
) -> RulesfileReport:
    """``expected``: the Rulesfile names the feed wrote; ``rulesfiles``/``configmaps``: the feed's, as listed."""
    by_name = {_name(o): o for o in rulesfiles if not is_terminating(o)}
    states = tuple(rulesfile_state(name, by_name.get(name)) for name in sorted(expected))
    terminating = tuple(sorted(_name(o) for o in configmaps if is_terminating(o)))
    return RulesfileReport(namespace=namespace, states=states, terminating=terminating)


def delivered_condition(
    report: RulesfileReport, *, written_at: datetime | None, now: datetime, deadline_seconds: int
) -> Condition:
    """``Delivered`` from the Rulesfiles: True when the falco-operator programmed every one; False with the reason
    and message of the first failing one; Unknown (``Propagating``) while it has not answered yet, False
    (``NotProgrammed``) once that lasts past the deadline."""
    total = len(report.states)
    done = len(report.programmed)
    where = report.namespace
    if total and done == total:
        return Condition(DELIVERED, True, "AllProgrammed", f"{done}/{total} Rulesfiles in {where} programmed by the "
                         "falco-operator (ResolvedRefs and Programmed True)")  # fmt: skip
    summary = f"{done}/{total} Rulesfiles programmed"
    for state in report.states:
        if state.failed is not None:
            type_, reason, message = state.failed
            cause = reason if _REASON.match(reason) else f"{type_}False"
            said = f"{type_} is False ({reason or '?'})" + (f": {message}" if message else "")
            return Condition(DELIVERED, False, cause, f"Rulesfile {where}/{state.name}: {said}; {summary}")
    waiting = next((s for s in report.states if not s.programmed), None)
    detail = f"Rulesfile {where}/{waiting.name}: {waiting.waiting}" if waiting else "no Rulesfile written"
    if written_at is not None and now < written_at + timedelta(seconds=deadline_seconds):
        return Condition(DELIVERED, None, "Propagating", f"{summary}; waiting for the falco-operator ({detail})")
    return Condition(
        DELIVERED, False, "NotProgrammed",
        f"{summary}; {detail}; is the falco-operator running, with a Falco instance in namespace {where} on nodes "
        "the selector matches?",
    )  # fmt: skip


def delivery_fields(report: RulesfileReport, rules_hash: str, now: datetime) -> dict[str, Any]:
    """``status.delivery`` in Rulesfiles mode."""
    return {
        "hash": rules_hash,
        "rulesfiles": len(report.states),
        "rulesfilesProgrammed": len(report.programmed),
        "failing": list(report.failing),
        "terminating": list(report.terminating),
        "lastCheck": format_time(now),
    }
