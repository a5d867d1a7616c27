"""A deleted feed: its ConfigMaps and its DaemonSet annotation removed, gone objects fine (a service)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from falco_misp.conditions import (
    Notice,
)
from falco_misp.controller.sync import FeedObject
from falco_misp.delivery.apply import withdraw
from falco_misp.delivery.configmaps import owner_labels
from falco_misp.delivery.kube import KubeClient, KubeError
from falco_misp.delivery.rollout import (
    rollout_state,
)


@dataclass(frozen=True)
class CleanupOutcome:
    """What deleting a feed removed."""

    deleted: tuple[str, ...] = ()
    """ConfigMaps deleted (``namespace/name``)."""
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
    try:
        for ns in sorted(namespaces):
            deleted += withdraw(kube, ns, labels, rollout, from_daemonsets=ns == rolled_in)
    except KubeError as exc:
        return CleanupOutcome(tuple(deleted), (Notice("Warning", exc.reason, exc.message),), exc.message)
    notices = (Notice("Normal", "RulesRemoved", f"deleted ConfigMaps {', '.join(deleted)}"),) if deleted else ()
    return CleanupOutcome(tuple(deleted), notices)
