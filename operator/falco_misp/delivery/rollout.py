"""Whether and when the Falco DaemonSet rolls (pure): one decision, one annotation per feed, the rollout state."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from falco_misp.conditions import (
    format_time,
    parse_time,
)
from falco_misp.feed.model import API_GROUP

# An annotation key's name part is at most 63 characters (a qualified name).
_ANNOTATION_NAME_MAX = 63


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


@dataclass(frozen=True)
class RolloutState:
    """Where the rollout of the applied rules stands."""

    mode: str
    """``Restart``, ``HotReload`` or ``None``."""
    annotation: str | None = None
    """The pod-template annotation key this feed owns (Restart only)."""
    daemon_sets: tuple[str, ...] = ()
    """Falco DaemonSets found."""
    hash: str | None = None
    """The rules hash last rolled out."""
    last_time: datetime | None = None
    """When this feed last rolled Falco."""
    pending: bool = False
    """A roll is due and not done yet (deferred, or the DaemonSet is missing)."""
    not_before: datetime | None = None
    """When a pending roll may happen."""


def rollout_fields(state: RolloutState) -> dict[str, Any]:
    """The ``status.rollout`` object."""
    out: dict[str, Any] = {"mode": state.mode, "pending": state.pending, "daemonSets": list(state.daemon_sets)}
    if state.annotation:
        out["annotation"] = state.annotation
    if state.hash:
        out["hash"] = state.hash
    if state.last_time is not None:
        out["lastTime"] = format_time(state.last_time)
    if state.not_before is not None:
        out["notBefore"] = format_time(state.not_before)
    return out


def rollout_state(status: Mapping[str, Any]) -> RolloutState:
    """Read ``status.rollout`` back."""
    raw = status.get("rollout")
    if not isinstance(raw, Mapping):
        return RolloutState(mode="")
    return RolloutState(
        mode=str(raw.get("mode", "")),
        annotation=raw.get("annotation") or None,
        daemon_sets=tuple(str(d) for d in raw.get("daemonSets") or ()),
        hash=raw.get("hash") or None,
        last_time=parse_time(raw.get("lastTime")),
        pending=bool(raw.get("pending", False)),
        not_before=parse_time(raw.get("notBefore")),
    )
