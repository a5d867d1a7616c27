"""Applying the delivery stage's decisions through the Kubernetes API (a service: the only I/O of the stage).

:func:`apply_configmaps` writes what :func:`~falco_misp.delivery.configmaps.plan_configmaps` planned and prunes the
rest, :func:`withdraw` removes a feed's ConfigMaps (and its DaemonSet annotation), :func:`roll_out` patches the Falco
DaemonSet when :func:`~falco_misp.delivery.rollout.decide_rollout` says so (``rollout: Restart``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from falco_misp.conditions import Notice, format_time
from falco_misp.delivery.configmaps import ConfigMapPlan, build_configmaps, feed_labels, plan_configmaps
from falco_misp.delivery.confirm import config_maps_at, rules_files_of, unmounted_shards
from falco_misp.delivery.kube import DaemonSetInfo, KubeClient
from falco_misp.delivery.rollout import (
    RolloutAction,
    RolloutState,
    decide_rollout,
    rollout_annotation_key,
    rollout_state,
)
from falco_misp.feed.model import Feed, Rollout
from falco_misp.rendering.shards import RulesBundle


# --------------------------------------------------------------------------------------------------- apply
def apply_configmaps(kube: KubeClient, feed: Feed, bundle: RulesBundle, status: Mapping[str, Any]) -> ConfigMapPlan:
    """Create/patch the shards whose bytes differ, then prune this feed's surplus ConfigMaps."""
    target = feed.spec.falco.namespace
    labels = feed_labels(feed)
    desired = build_configmaps(feed, bundle)
    plan = plan_configmaps(desired, kube.list_configmaps(target, labels))
    for body in plan.create:
        kube.create_configmap(body)
    for name, patch in plan.update:
        kube.patch_configmap(target, name, patch)
    for name in plan.delete:
        kube.delete_configmap(target, name)
    old_namespace = status.get("falcoNamespace")
    if isinstance(old_namespace, str) and old_namespace and old_namespace != target:  # moved to another Falco
        withdraw(kube, old_namespace, labels, rollout_state(status), from_daemonsets=True)
    return plan


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
