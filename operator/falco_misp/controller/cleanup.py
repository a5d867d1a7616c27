"""A deleted feed: its ConfigMaps and its DaemonSet annotation removed, gone objects fine (a service).

With Rulesfiles (issue 16) the falco-operator's Rulesfiles go first, then their ConfigMaps; one still held by that
operator's finalizer is left to it and reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from falco_misp.conditions import (
    Notice,
)
from falco_misp.controller.sync import FeedObject
from falco_misp.delivery.apply import withdraw, withdraw_rulesfiles
from falco_misp.delivery.configmaps import owner_labels
from falco_misp.delivery.kube import KubeClient, KubeError
from falco_misp.delivery.rollout import (
    rollout_state,
)
from falco_misp.delivery.rulesfiles import OCI_ROLLOUT_MODE as OCI_MODE
from falco_misp.delivery.rulesfiles import ROLLOUT_MODE as RULESFILES_MODE


@dataclass(frozen=True)
class CleanupOutcome:
    """What deleting a feed removed."""

    deleted: tuple[str, ...] = ()
    """ConfigMaps (and Rulesfiles) deleted (``namespace/name``)."""
    notices: tuple[Notice, ...] = ()
    """Events to post."""
    error: str | None = None
    """Set when a call failed (the handler retries a few times, then lets the deletion finish)."""


def cleanup_feed(kube: KubeClient, obj: FeedObject) -> CleanupOutcome:
    """Delete the feed's ConfigMaps (found by its labels) and its DaemonSet annotation; gone is fine."""
    falco_raw = obj.spec.get("falco")
    falco: Mapping[str, Any] = falco_raw if isinstance(falco_raw, Mapping) else {}
    namespaces = {
        ns for ns in (obj.status.get("falcoNamespace"), falco.get("namespace") or "falco") if isinstance(ns, str) and ns
    }
    labels = owner_labels(obj.name, obj.namespace)
    rollout = rollout_state(obj.status)
    rolled_in = obj.status.get("falcoNamespace")
    deleted: list[str] = []
    held: list[str] = []
    # Rulesfiles written (or asked for): the falco-operator's go first, then their ConfigMaps; no DaemonSet is touched
    pinned = rollout.mode == OCI_MODE and (obj.status.get("push") or {}).get("rulesfile")  # a pushed artifact stays
    asked = (falco.get("delivery") or {}).get("mode") == "Rulesfiles"
    rulesfiles = rollout.mode == RULESFILES_MODE or bool(pinned) or asked
    try:
        for ns in sorted(namespaces):
            if rulesfiles:
                gone = withdraw_rulesfiles(kube, ns, labels)
                deleted += gone.deleted
                held += gone.terminating
            else:
                deleted += withdraw(kube, ns, labels, rollout, from_daemonsets=ns == rolled_in)
    except KubeError as exc:
        return CleanupOutcome(tuple(deleted), (Notice("Warning", exc.reason, exc.message),), exc.message)
    kinds = "Rulesfiles and ConfigMaps" if rulesfiles else "ConfigMaps"
    notices: tuple[Notice, ...] = ()
    if deleted:
        notices = (Notice("Normal", "RulesRemoved", f"deleted {kinds} {', '.join(deleted)}"),)
    if held:
        notices += (Notice("Normal", "ConfigMapsTerminating", f"{', '.join(held)} Terminating: the falco-operator's "
                           "finalizer holds them until it sees their Rulesfile gone (left to it)"),)  # fmt: skip
    return CleanupOutcome(tuple(deleted), notices)
