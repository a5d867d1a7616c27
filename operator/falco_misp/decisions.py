"""The operator's decisions, as pure functions of what it read (no I/O, no kopf, no kubernetes client).

One sync asks four questions, each answered here so it can be tested with tables:

- may the new list replace the applied one, or did it shrink suspiciously (``limits.maxDropPercent``)?
- which ConfigMaps must be created, patched or deleted so the cluster holds exactly the rendered shards
  (nothing written when the bytes are already there)?
- must the Falco DaemonSet roll now, later (``falco.minRolloutInterval``), or not at all?
- on a timer tick: is a full sync due, only a deferred rollout, or nothing?
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from falco_misp.spec import API_GROUP

# An annotation key's name part is at most 63 characters (a qualified name).
_ANNOTATION_NAME_MAX = 63


# ------------------------------------------------------------------------------------------------ drop check
@dataclass(frozen=True)
class DropCheck:
    """Whether a freshly rendered list may replace the applied one."""

    allowed: bool
    """False: the list shrank by more than ``limits.maxDropPercent``; keep the applied rules."""
    previous: int | None
    """Indicators applied now (None: nothing applied yet for this spec generation)."""
    current: int
    """Indicators in the new render."""
    percent: float
    """How much the list shrank, in percent of ``previous`` (0 when it grew)."""
    limit: int
    """``limits.maxDropPercent``."""

    @property
    def message(self) -> str:
        """One line for status and events."""
        if self.previous is None:
            return f"{self.current} indicators (nothing applied before)"
        verdict = "held back" if not self.allowed else "accepted"
        return (
            f"{self.current} indicators fetched, {self.percent:.0f}% fewer than the {self.previous} applied "
            f"(limits.maxDropPercent is {self.limit}): {verdict}"
        )


def check_drop(previous_total: int | None, current_total: int, max_drop_percent: int) -> DropCheck:
    """Refuse a render that shrinks the applied list by more than ``max_drop_percent`` percent.

    ``previous_total`` is None when nothing was applied for the current spec (a spec change may shrink the list
    on purpose); a previous total of 0 can never shrink.
    """
    if previous_total is None or previous_total <= 0 or current_total >= previous_total:
        return DropCheck(True, previous_total, current_total, 0.0, max_drop_percent)
    percent = (previous_total - current_total) * 100.0 / previous_total
    return DropCheck(percent <= max_drop_percent, previous_total, current_total, percent, max_drop_percent)


# ------------------------------------------------------------------------------------------- ConfigMap plan
@dataclass(frozen=True)
class ConfigMapPlan:
    """What to write so the namespace holds exactly the desired ConfigMaps of one feed."""

    create: tuple[Mapping[str, Any], ...] = ()
    """Whole ConfigMaps to create."""
    update: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    """(name, merge patch) for owned ConfigMaps whose bytes differ."""
    delete: tuple[str, ...] = ()
    """Owned ConfigMaps no longer rendered (surplus shards, an old prefix)."""
    unchanged: tuple[str, ...] = ()
    """Owned ConfigMaps already holding the desired bytes."""

    @property
    def writes(self) -> int:
        """Number of API writes the plan needs."""
        return len(self.create) + len(self.update) + len(self.delete)


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _contains(have: Mapping[str, Any] | None, want: Mapping[str, Any]) -> bool:
    have = have or {}
    return all(have.get(k) == v for k, v in want.items())


def plan_configmaps(desired: Sequence[Mapping[str, Any]], owned: Sequence[Mapping[str, Any]]) -> ConfigMapPlan:
    """Compare the rendered ConfigMaps with the ones this feed owns (found by its labels).

    A ConfigMap is rewritten only when its data, or a label or annotation we set, differs; labels and
    annotations others added are left alone. Owned ConfigMaps not rendered any more are deleted.
    """
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
        meta_want, meta_have = want.get("metadata", {}), have.get("metadata", {})
        data_want: Mapping[str, str] = want.get("data", {})
        data_have: Mapping[str, str] = have.get("data") or {}
        same = (
            dict(data_have) == dict(data_want)
            and not have.get("binaryData")
            and _contains(meta_have.get("labels"), meta_want.get("labels", {}))
            and _contains(meta_have.get("annotations"), meta_want.get("annotations", {}))
        )
        if same:
            unchanged.append(name)
            continue
        data_patch: dict[str, str | None] = {k: None for k in data_have if k not in data_want}
        data_patch.update(data_want)
        patch: dict[str, Any] = {
            "metadata": {
                "labels": dict(meta_want.get("labels", {})),
                "annotations": dict(meta_want.get("annotations", {})),
            },
            "data": data_patch,
        }
        if have.get("binaryData"):
            patch["binaryData"] = None
        update.append((name, patch))
    wanted = {_name(w) for w in desired}
    delete = sorted(name for name in existing if name not in wanted)
    return ConfigMapPlan(tuple(create), tuple(update), tuple(delete), tuple(unchanged))


# ---------------------------------------------------------------------------------------------------- rollout
def rollout_annotation_key(namespace: str, name: str) -> str:
    """The pod-template annotation one feed owns on the Falco DaemonSet.

    One key per feed (``falco-misp.io/rules-hash-<namespace>.<name>``), so several feeds can share one Falco
    without overwriting each other's hash. Names longer than an annotation key allows are cut and suffixed
    with a hash of the full identity, so two feeds never share a key.
    """
    full = f"rules-hash-{namespace}.{name}"
    if len(full) <= _ANNOTATION_NAME_MAX:
        return f"{API_GROUP}/{full}"
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:10]
    head = full[: _ANNOTATION_NAME_MAX - len(digest) - 1].rstrip("-.")
    return f"{API_GROUP}/{head}-{digest}"


class RolloutAction(StrEnum):
    """What to do with the Falco DaemonSet."""

    PATCH = "Patch"
    """Set the annotation to the new hash now: the pods roll."""
    DEFER = "Defer"
    """A roll is due but the last one is too recent; a later sync or timer tick does it."""
    UP_TO_DATE = "UpToDate"
    """The DaemonSet already carries the hash."""


@dataclass(frozen=True)
class RolloutDecision:
    """The answer of :func:`decide_rollout`."""

    action: RolloutAction
    """What to do."""
    not_before: datetime | None = None
    """For DEFER: when the roll may happen."""


def decide_rollout(
    *,
    desired_hash: str,
    current_hashes: Sequence[str | None],
    last_rollout: datetime | None,
    now: datetime,
    min_interval_seconds: int,
) -> RolloutDecision:
    """Roll (``rollout: Restart``) when, and only when, a DaemonSet's annotation differs from the applied rules hash.

    ``current_hashes`` holds the annotation value of each Falco DaemonSet found (None: not set). A roll due
    less than ``min_interval_seconds`` after the previous one is deferred, not dropped.
    """
    if all(h == desired_hash for h in current_hashes):
        return RolloutDecision(RolloutAction.UP_TO_DATE)
    if last_rollout is not None:
        not_before = last_rollout + timedelta(seconds=min_interval_seconds)
        if now < not_before:
            return RolloutDecision(RolloutAction.DEFER, not_before)
    return RolloutDecision(RolloutAction.PATCH)


def selector_matches(selector: str, labels: Mapping[str, str] | None) -> bool:
    """Whether ``labels`` satisfy an equality selector such as ``app.kubernetes.io/name=falco,tier=x``."""
    labels = labels or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


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


def retry_delay(retry: int, base_seconds: float, max_seconds: float) -> float:
    """Exponential backoff for the ``retry``-th retry (0 for the first): base, 2*base, 4*base... capped."""
    return float(min(max_seconds, base_seconds * (2 ** min(retry, 30))))
