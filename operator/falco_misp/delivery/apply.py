"""Applying the delivery stage's decisions through the Kubernetes API (a service: the only I/O of the stage).

:func:`apply_configmaps` writes what :func:`~falco_misp.delivery.configmaps.plan_configmaps` planned and prunes the
rest, :func:`withdraw` removes a feed's ConfigMaps (and its DaemonSet annotation), :func:`roll_out` patches the Falco
DaemonSet when :func:`~falco_misp.delivery.rollout.decide_rollout` says so (``rollout: Restart``).
With ``delivery.mode: Rulesfiles``, :func:`apply_rulesfiles` writes the ConfigMaps and the falco-operator's Rulesfiles
in the order it needs and :func:`withdraw_rulesfiles` removes them, Rulesfiles first (issue 16). With ``OCI``,
:func:`publish_oci` pushes the falcoctl artifact and keeps the Rulesfile pinned to its digest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from falco_misp.conditions import Condition, Notice, format_time, parse_time
from falco_misp.delivery.artifact import build_artifact
from falco_misp.delivery.configmaps import ConfigMapPlan, build_configmaps, feed_labels, plan_configmaps
from falco_misp.delivery.confirm import config_maps_at, rules_files_of, unmounted_shards
from falco_misp.delivery.kube import DaemonSetInfo, KubeClient, KubeError
from falco_misp.delivery.registry import PushResult, RegistryAuth, RegistryTarget, parse_reference, push_artifact
from falco_misp.delivery.rollout import (
    RolloutAction,
    RolloutState,
    decide_rollout,
    rollout_annotation_key,
    rollout_state,
)
from falco_misp.delivery.rulesfiles import (
    DELIVERED,
    OCI_ROLLOUT_MODE,
    RulesfilePlan,
    build_oci_rulesfile,
    delivery_fields,
    foreign_finalizers,
    is_terminating,
    plan_rulesfile_objects,
    plan_rulesfiles,
    rulesfile_report,
)
from falco_misp.delivery.rulesfiles import ROLLOUT_MODE as RULESFILES_MODE
from falco_misp.delivery.rulesfiles import delivered_condition as rulesfiles_delivered
from falco_misp.feed.model import Feed, Rollout
from falco_misp.rendering.shards import RulesBundle


# --------------------------------------------------------------------------------------------------- apply
def apply_configmaps(kube: KubeClient, feed: Feed, bundle: RulesBundle, status: Mapping[str, Any]) -> ConfigMapPlan:
    """Create/patch the shards whose bytes differ, then prune this feed's surplus ConfigMaps."""
    target = feed.spec.falco.namespace
    labels = feed_labels(feed)
    desired = build_configmaps(feed, bundle)
    plan = plan_configmaps(desired, kube.list_configmaps(target, labels))
    _write_configmaps(kube, target, plan)
    for name in plan.delete:
        kube.delete_configmap(target, name)
    old_namespace = _moved_from(status, target)
    if old_namespace:  # moved to another Falco
        withdraw(kube, old_namespace, labels, rollout_state(status), from_daemonsets=True)
    return plan


def _write_configmaps(kube: KubeClient, namespace: str, plan: ConfigMapPlan) -> None:
    """Create and patch what ``plan`` says; its deletes are the caller's (last, in Rulesfiles mode)."""
    for body in plan.create:
        kube.create_configmap(body)
    for name, patch in plan.update:
        kube.patch_configmap(namespace, name, patch)


def _write_rulesfiles(
    kube: KubeClient,
    namespace: str,
    create: Sequence[Mapping[str, Any]],
    update: Sequence[tuple[str, Mapping[str, Any]]],
    delete: Sequence[str],
) -> int:
    """Create, patch, then delete Rulesfiles; the number of writes."""
    for body in create:
        kube.create_rulesfile(body)
    for name, patch in update:
        kube.patch_rulesfile(namespace, name, patch)
    for name in delete:
        kube.delete_rulesfile(namespace, name)
    return len(create) + len(update) + len(delete)


def _moved_from(status: Mapping[str, Any], target: str) -> str | None:
    """The namespace the rules were written to before, when it is not ``target`` (the feed moved to another Falco)."""
    old = status.get("falcoNamespace")
    return old if isinstance(old, str) and old and old != target else None


def withdraw(
    kube: KubeClient, namespace: str, labels: Mapping[str, str], rollout: RolloutState, *, from_daemonsets: bool
) -> list[str]:
    """Delete a feed's ConfigMaps in one namespace and, optionally, its annotation on the DaemonSets it rolled."""
    deleted: list[str] = []
    for cm in kube.list_configmaps(namespace, labels):
        name = cm["metadata"]["name"]
        kube.delete_configmap(namespace, name)
        deleted.append(f"{namespace}/{name}")
    if from_daemonsets and rollout.annotation:
        for name in rollout.daemon_sets:
            for ds in kube.find_daemonsets(namespace, name, ""):
                if rollout.annotation in ds.annotations:  # removing it rolls Falco once more, without our rules
                    kube.patch_pod_template_annotations(namespace, ds.name, {rollout.annotation: None})
    return deleted


# ------------------------------------------------------------------------ Rulesfiles (falco-operator, issue 16)
@dataclass(frozen=True)
class RulesfilesApplied:
    """What :func:`apply_rulesfiles` wrote."""

    plan: RulesfilePlan
    """The plan it followed."""
    terminating: tuple[str, ...] = ()
    """The feed's ConfigMaps (``namespace/name``) deleted but held by a foreign finalizer (the falco-operator's
    in-use finalizer, released once no Rulesfile references them): left to that operator, reported."""
    notices: tuple[Notice, ...] = ()
    """Events to post."""


def apply_rulesfiles(kube: KubeClient, feed: Feed, bundle: RulesBundle, status: Mapping[str, Any]) -> RulesfilesApplied:
    """Make Falco's namespace hold exactly this feed's ConfigMaps (key ``rules.yaml``) and Rulesfiles, in the order
    the falco-operator needs: ConfigMaps written before the Rulesfiles that reference them, Rulesfiles deleted before
    their ConfigMaps. No DaemonSet is read. ``ConfigMapTerminating`` while a desired ConfigMap or Rulesfile is still
    being deleted (the next sync writes it)."""
    target = feed.spec.falco.namespace
    labels = feed_labels(feed)
    plan = plan_rulesfiles(feed, bundle, kube.list_configmaps(target, labels), kube.list_rulesfiles(target, labels))
    if plan.blocked:
        raise KubeError(
            "ConfigMapTerminating",
            f"{', '.join(f'{target}/{n}' for n in plan.blocked)} still Terminating (the falco-operator holds its "
            "ConfigMap until no Rulesfile references it); the rules are written once it is gone",
        )
    _write_configmaps(kube, target, plan.configmaps)  # before the Rulesfiles that reference them
    _write_rulesfiles(kube, target, plan.create, plan.update, plan.delete)
    for name in plan.configmaps.delete:  # after the Rulesfiles that referenced them
        kube.delete_configmap(target, name)
    held = _still_held(kube, target, labels, plan.configmaps.delete)
    old_namespace = _moved_from(status, target)
    if old_namespace:  # moved to another Falco
        held += withdraw_rulesfiles(kube, old_namespace, labels).terminating
    return RulesfilesApplied(plan, tuple(held), _held_notices(held))


def written_at(status: Mapping[str, Any]) -> datetime | None:
    """When the current rules were written: the delivery deadline counts from there."""
    return parse_time(status.get("rulesWrittenAt")) or parse_time(status.get("lastSuccess"))


def check_rulesfiles(
    kube: KubeClient, feed: Feed, status: Mapping[str, Any], now: datetime
) -> tuple[Condition, dict[str, Any]]:
    """The ``Delivered`` condition and ``status.delivery`` from the Rulesfiles the feed wrote (``status.configMaps``:
    one Rulesfile of the same name each) and the ConfigMaps still Terminating; no pod and no DaemonSet is asked."""
    target = feed.spec.falco.namespace
    labels = feed_labels(feed)
    pinned = (status.get("push") or {}).get("rulesfile")  # mode OCI: the one Rulesfile pinned to the digest
    expected = [str(pinned)] if pinned else [str(name) for name in status.get("configMaps") or ()]
    rulesfiles, configmaps = kube.list_rulesfiles(target, labels), kube.list_configmaps(target, labels)
    report = rulesfile_report(target, expected, rulesfiles, configmaps)
    written = written_at(status)
    deadline = feed.spec.falco.delivery_deadline_seconds
    delivered = rulesfiles_delivered(report, written_at=written, now=now, deadline_seconds=deadline)
    return delivered, delivery_fields(report, str(status.get("rulesHash") or ""), now)


@dataclass(frozen=True)
class RulesfilesWithdrawn:
    """What :func:`withdraw_rulesfiles` deleted."""

    deleted: tuple[str, ...] = ()
    """Rulesfiles and ConfigMaps deleted (``namespace/name``), Rulesfiles first."""
    terminating: tuple[str, ...] = ()
    """ConfigMaps (``namespace/name``) left Terminating for a foreign finalizer."""


def withdraw_rulesfiles(
    kube: KubeClient, namespace: str, labels: Mapping[str, str], *, configmaps: bool = True
) -> RulesfilesWithdrawn:
    """Delete a feed's Rulesfiles in one namespace, then (``configmaps``) its ConfigMaps there (a foreign finalizer on
    one is left to its owner and reported); no Rulesfile resource at all (the CRD is not installed) is fine.
    Without ``configmaps`` (back to ConfigMaps mode), the ConfigMaps stay for the DaemonSet to mount."""
    deleted: list[str] = []
    try:
        rulesfiles = kube.list_rulesfiles(namespace, labels)
    except KubeError as exc:
        if exc.reason != "RulesfileCRDNotFound":
            raise
        rulesfiles = []
    for rf in rulesfiles:
        if not is_terminating(rf):
            kube.delete_rulesfile(namespace, rf["metadata"]["name"])
        deleted.append(f"{namespace}/{rf['metadata']['name']}")
    names: list[str] = []
    for cm in kube.list_configmaps(namespace, labels) if configmaps else ():
        if not is_terminating(cm):
            kube.delete_configmap(namespace, cm["metadata"]["name"])
            deleted.append(f"{namespace}/{cm['metadata']['name']}")
        names.append(cm["metadata"]["name"])
    return RulesfilesWithdrawn(tuple(deleted), tuple(_still_held(kube, namespace, labels, names)))


def _still_held(kube: KubeClient, namespace: str, labels: Mapping[str, str], deleted: Sequence[str]) -> list[str]:
    """Of the ConfigMaps just deleted, those still there, Terminating with a finalizer (``namespace/name``)."""
    if not deleted:
        return []
    wanted = set(deleted)
    return [
        f"{namespace}/{cm['metadata']['name']}"
        for cm in kube.list_configmaps(namespace, labels)
        if cm["metadata"]["name"] in wanted and is_terminating(cm) and foreign_finalizers(cm)
    ]


def _held_notices(held: Sequence[str]) -> tuple[Notice, ...]:
    if not held:
        return ()
    message = (
        f"ConfigMap(s) {', '.join(held)} deleted and Terminating: a finalizer (the falco-operator's) holds them until "
        "it sees their Rulesfile gone; left to it, never removed by this operator"
    )
    return (Notice("Normal", "ConfigMapsTerminating", message),)


# --------------------------------------------------------------------------- OCI registry (falcoctl, issue 16)
@dataclass(frozen=True)
class OciPublished:
    """What :func:`publish_oci` did."""

    result: PushResult
    """The push (digest, tags, writes; ``pushed`` False when the registry already held these rules)."""
    reference: str
    """``registry/repository`` pushed to."""
    rulesfile_writes: int = 0
    """Writes to the pinned Rulesfile (``oci.rulesfile``)."""
    rulesfile: str | None = None
    """The pinned Rulesfile's name, when kept."""
    notices: tuple[Notice, ...] = ()
    """Events to post."""

    @property
    def previous(self) -> Mapping[str, bytes] | None:
        """The files the push replaced (for ``lastChange``); None when it pushed nothing or they are unknown."""
        return self.result.previous if self.result.pushed else None

    def delivered(self) -> Condition | None:
        """``Delivered`` when no Rulesfile follows the push: Unknown (``PushedToRegistry``), as the falcoctl followers
        pull on their own schedule and tell no one. None with a pinned Rulesfile: its conditions answer
        (:func:`check_rulesfiles`)."""
        if self.rulesfile:
            return None
        return Condition(
            DELIVERED, None, "PushedToRegistry",
            f"the registry serves {self.reference}@{self.result.digest} ({', '.join(self.result.tags)}); falcoctl "
            "followers pull it on their own schedule and report to no one: their delivery cannot be observed",
        )  # fmt: skip

    def fields(self, now: datetime) -> dict[str, Any]:
        """``status.push``."""
        out: dict[str, Any] = {
            "reference": self.reference,
            "digest": self.result.digest,
            "tags": list(self.result.tags),
            "time": format_time(now),
            "pushed": self.result.pushed,
        }
        if self.rulesfile:
            out["rulesfile"] = self.rulesfile
        return out


def publish_oci(
    kube: KubeClient,
    feed: Feed,
    bundle: RulesBundle,
    status: Mapping[str, Any],
    *,
    auth: RegistryAuth | None,
    ca_bundle: str | None,
) -> OciPublished:
    """Push the rules as a falcoctl rulesfile artifact (nothing when the registry holds them already; before a push,
    the files it replaces are read back for ``lastChange``), then keep the Rulesfile pinned to its digest
    (``oci.rulesfile``) and remove what another mode left (ConfigMaps, Rulesfiles, the DaemonSet annotation).
    :class:`~falco_misp.errors.RegistryError` when the push fails: nothing else is touched, the registry still serves
    the last good rules."""
    oci = feed.spec.falco.delivery.oci
    assert oci is not None, "a feed of mode OCI always has its oci settings"
    reference = parse_reference(oci.reference)
    target = RegistryTarget(
        reference=reference, plain_http=oci.plain_http, verify_tls=not oci.insecure_skip_verify, ca_bundle=ca_bundle
    )
    result = push_artifact(target, build_artifact(feed, bundle), auth, read_previous=True)
    where, labels = feed.spec.falco.namespace, feed_labels(feed)
    previous = rollout_state(status)
    old_namespace = str(status.get("falcoNamespace") or where)
    if previous.mode == RULESFILES_MODE:  # from Rulesfiles: theirs first, then the ConfigMaps
        withdraw_rulesfiles(kube, old_namespace, labels)
    elif previous.mode not in ("", OCI_ROLLOUT_MODE):  # from ConfigMaps: those and the DaemonSet annotation
        withdraw(kube, old_namespace, labels, previous, from_daemonsets=True)
    pinned = (status.get("push") or {}).get("rulesfile") if previous.mode == OCI_ROLLOUT_MODE else None
    if pinned and (not oci.rulesfile or old_namespace != where):
        withdraw_rulesfiles(kube, old_namespace, labels, configmaps=False)
    writes = 0
    name = None
    if oci.rulesfile:
        desired = build_oci_rulesfile(feed, bundle, reference.registry, reference.repository, result.digest)
        name = str(desired["metadata"]["name"])
        owned = [o for o in kube.list_rulesfiles(where, labels) if not is_terminating(o)]
        create, update, delete, _ = plan_rulesfile_objects([desired], owned)
        writes = _write_rulesfiles(kube, where, create, update, delete)
    shown = f"{reference.registry}/{reference.repository}"
    notices: tuple[Notice, ...] = ()
    if result.pushed:
        message = f"pushed {shown}:{', '.join(result.tags)} = {result.digest} ({result.writes} registry writes)"
        notices = (Notice("Normal", "RulesPushed", message),)
    return OciPublished(result, shown, writes, name, notices)


@dataclass(frozen=True)
class RolloutResult:
    """What :func:`roll_out` did."""

    state: RolloutState
    """Where the rollout stands now."""
    problem: tuple[str, str] | None = None
    """(reason, message) for ``Degraded``, e.g. ``DaemonSetNotFound``."""
    notices: tuple[Notice, ...] = ()
    """Events to post."""
    writes: int = 0
    """DaemonSets patched."""
    daemon_sets: tuple[DaemonSetInfo, ...] = ()
    """The Falco DaemonSets found (their pod templates: mounts and pods)."""


def roll_out(kube: KubeClient, feed: Feed, desired_hash: str, previous: RolloutState, now: datetime) -> RolloutResult:
    """Find the Falco DaemonSet(s) and, with ``rollout: Restart`` only, patch them when the applied hash differs from
    their annotation. ``HotReload`` never touches them (Falco's ``watch_config_files`` reloads); ``None`` does not
    look for them."""
    falco = feed.spec.falco
    if falco.rollout is Rollout.NONE:
        return RolloutResult(RolloutState(mode=falco.rollout.value))
    found = tuple(kube.find_daemonsets(falco.namespace, falco.daemon_set, falco.selector))
    names = tuple(d.name for d in found)
    if falco.rollout is Rollout.HOT_RELOAD:  # never touched: Falco's watch_config_files reloads (checked by Delivered)
        state = RolloutState(falco.rollout.value, None, names, desired_hash if found else None)
        if not found:
            return RolloutResult(state, ("DaemonSetNotFound", f"{_wanted(feed)} not found: rules are in the "
                                         "ConfigMaps, Falco loads them once it runs"))  # fmt: skip
        return RolloutResult(state, daemon_sets=found)
    key = rollout_annotation_key(feed.namespace, feed.name)
    if not found:
        state = RolloutState(
            falco.rollout.value, key, (), previous.hash, previous.last_time, pending=True, not_before=now
        )
        problem = f"{_wanted(feed)} not found: rules are in the ConfigMaps, Falco rolls once it appears"
        return RolloutResult(state, ("DaemonSetNotFound", problem))
    decision = decide_rollout(
        desired_hash=desired_hash,
        current_hashes=[d.annotations.get(key) for d in found],
        last_rollout=previous.last_time,
        now=now,
        min_interval_seconds=falco.min_rollout_interval_seconds,
    )
    if decision.action is RolloutAction.UP_TO_DATE:
        state = RolloutState(falco.rollout.value, key, names, desired_hash, previous.last_time)
        return RolloutResult(state, daemon_sets=found)
    if decision.action is RolloutAction.DEFER:
        state = RolloutState(
            falco.rollout.value, key, names, previous.hash, previous.last_time, True, decision.not_before
        )
        when = format_time(decision.not_before) if decision.not_before else "later"
        note = Notice("Normal", "RolloutDeferred", f"rollout deferred until {when} (falco.minRolloutInterval)")
        return RolloutResult(state, notices=(note,), daemon_sets=found)
    patched: list[str] = []
    vanished: list[str] = []
    for ds in found:
        if ds.annotations.get(key) == desired_hash:
            continue
        if kube.patch_pod_template_annotations(ds.namespace, ds.name, {key: desired_hash}):
            patched.append(ds.name)
        else:
            vanished.append(ds.name)
    last_time = now if patched else previous.last_time
    if vanished:  # deleted between the lookup and the patch: try again on the next tick
        state = RolloutState(falco.rollout.value, key, names, previous.hash, last_time, pending=True, not_before=now)
    else:
        state = RolloutState(falco.rollout.value, key, names, desired_hash, last_time)
    notes = tuple(
        Notice("Normal", "RolloutTriggered", f"DaemonSet {falco.namespace}/{n}: {key}={desired_hash[:12]}")
        for n in patched
    )
    return RolloutResult(state, notices=notes, writes=len(patched), daemon_sets=found)


def _wanted(feed: Feed) -> str:
    falco = feed.spec.falco
    if falco.daemon_set:
        return f"DaemonSet {falco.namespace}/{falco.daemon_set}"
    return f"no DaemonSet matching {falco.selector} in namespace {falco.namespace}"


def unmounted(kube: KubeClient, shards: Sequence[str], daemon_sets: Sequence[DaemonSetInfo]) -> dict[str, list[str]]:
    """``DaemonSet name -> shard ConfigMaps`` its Falco cannot load (not mounted, or mounted outside its
    ``rules_files`` when its falco.yaml is readable); DaemonSets that load every shard are left out."""
    out: dict[str, list[str]] = {}
    for ds in daemon_sets:
        rules_files = None
        for name in config_maps_at(ds.template):
            data = kube.configmap_data(ds.namespace, name) or {}
            rules_files = rules_files_of(data.get("falco.yaml"))
            if rules_files is not None:
                break
        missing = unmounted_shards(shards, ds.template, rules_files)
        if missing:
            out[ds.name] = missing
    return out
