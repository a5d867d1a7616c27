"""What a timer tick does for one feed: a sync, a deferred rollout, or nothing; and a conflict's wait.

:func:`decide_tick` is the pure rule; :func:`tick_action` reads what it needs (the Secret each tick: ``get`` only)
and :func:`conflict_resolved` whether the ConfigMap in the way changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from falco_misp.conditions import parse_time
from falco_misp.controller.secrets import resolve_secrets
from falco_misp.controller.sync import CONFLICT, FeedObject, parse_feed_object
from falco_misp.delivery.kube import KubeClient, KubeError
from falco_misp.delivery.rollout import rollout_state
from falco_misp.errors import SpecError


# ---------------------------------------------------------------------------------------------- timer ticks
class TickAction(StrEnum):
    """What a timer tick does for one feed."""

    SKIP = "Skip"
    """Nothing is due."""
    SYNC = "Sync"
    """Fetch, render and apply (the refresh interval passed, or the referenced Secret changed)."""
    ROLLOUT = "Rollout"
    """Only a deferred or pending rollout of rules already applied."""


def decide_tick(
    *,
    now: datetime,
    last_attempt: datetime | None,
    refresh_seconds: int,
    secret_changed: bool,
    rollout_not_before: datetime | None,
) -> TickAction:
    """A full sync when the refresh interval passed since the last attempt or the Secret changed; else a
    pending rollout when its time came; else nothing."""
    if secret_changed or last_attempt is None or now >= last_attempt + timedelta(seconds=refresh_seconds):
        return TickAction.SYNC
    if rollout_not_before is not None and now >= rollout_not_before:
        return TickAction.ROLLOUT
    return TickAction.SKIP


def conflict_resolved(kube: KubeClient, status: Mapping[str, Any]) -> bool:
    """Whether the ConfigMap a conflict waits for changed or went away (True when there is no conflict)."""
    record = status.get(CONFLICT)
    if not isinstance(record, Mapping):
        return True
    namespace, _, name = str(record.get("configMap", "")).partition("/")
    if not record.get("fingerprint") or not name:
        return True
    try:
        return bool(kube.configmap_fingerprint(namespace, name) != record["fingerprint"])
    except KubeError:
        return False  # cannot tell: keep waiting, ask again next tick


def tick_action(
    kube: KubeClient, obj: FeedObject, last_fingerprint: str | None, now: datetime
) -> tuple[TickAction, str | None]:
    """What a timer tick should do, and the current Secret fingerprint (read each tick: ``get`` only)."""
    try:
        feed = parse_feed_object(obj)
    except SpecError:
        return TickAction.SKIP, last_fingerprint
    if obj.status.get("observedGeneration") == obj.generation and not conflict_resolved(kube, obj.status):
        return TickAction.SKIP, last_fingerprint  # a foreign ConfigMap is in the way: nothing changed, nothing to do
    try:
        fingerprint = resolve_secrets(kube, feed).fingerprint
    except KubeError as exc:
        fingerprint = f"error:{exc.reason}"
    rollout = rollout_state(obj.status)
    action = decide_tick(
        now=now,
        last_attempt=parse_time(obj.status.get("lastAttempt")),
        refresh_seconds=feed.spec.refresh_seconds,
        secret_changed=fingerprint != last_fingerprint,
        rollout_not_before=rollout.not_before if rollout.pending else None,
    )
    return action, fingerprint
