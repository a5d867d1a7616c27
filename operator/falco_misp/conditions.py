"""Kubernetes status conventions (pure): conditions, times, merge patches and the Events to post.

``Ready`` (the current spec generation's rules are in Falco's ConfigMaps), ``Degraded`` (the latest attempt had a
problem), ``Serving`` (whose rules Falco has), ``Reporting`` and ``LiveUpdates``; ``lastTransitionTime`` changes
only when a condition's status does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

READY = "Ready"
DEGRADED = "Degraded"
SERVING = "Serving"
"""Which spec generation's rules are in Falco's ConfigMaps (reason ``CurrentGeneration``/``PreviousGeneration``)."""
REPORTING = "Reporting"
"""Whether alerts of a feed with ``spec.reporting`` on can reach MISP (absent when reporting is off)."""
CURRENT_GENERATION = "CurrentGeneration"
PREVIOUS_GENERATION = "PreviousGeneration"


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, to the second (what Kubernetes writes)."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """The inverse of :func:`format_time`; None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Condition:
    """One condition as the sync decided it."""

    type: str
    """``Ready``, ``Degraded``, ``Serving``, ``Delivered``..."""
    status: bool | None
    """True, False, or None for Unknown."""
    reason: str
    """CamelCase machine-readable cause."""
    message: str
    """One human-readable line."""


def build_conditions(
    previous: object, current: Sequence[Condition], now: datetime, generation: int, *, remove: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Kubernetes-style conditions; ``lastTransitionTime`` is kept while a condition's status stays the same.

    Conditions of other types in ``previous`` (another writer's, such as ``LiveUpdates``) stay as they are, in their
    place, unless their type is in ``remove``; types new to the list come last.
    """
    entries: list[Mapping[str, Any]] = []
    if isinstance(previous, Sequence):
        entries = [c for c in previous if isinstance(c, Mapping)]
    before = {str(c.get("type")): c for c in entries}
    fresh: dict[str, dict[str, Any]] = {}
    for cond in current:
        status = "Unknown" if cond.status is None else "True" if cond.status else "False"
        old = before.get(cond.type)
        since = old.get("lastTransitionTime") if old is not None and old.get("status") == status else None
        fresh[cond.type] = {
            "type": cond.type,
            "status": status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": since or format_time(now),
            "observedGeneration": generation,
        }
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for old in entries:
        type_ = str(old.get("type"))
        if type_ in seen or type_ in remove:
            continue
        seen.add(type_)
        out.append(fresh.pop(type_) if type_ in fresh else dict(old))
    out.extend(fresh.values())
    return out


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    """A condition of a status by type."""
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return None


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning ``old`` into ``new``: changed keys set, vanished keys set to None (recursively)."""
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = status_patch(before, value)
            if sub:
                patch[key] = sub
        elif before != value:
            patch[key] = value
    return patch


@dataclass(frozen=True)
class Notice:
    """A Kubernetes Event to post on the MispFeed."""

    type: str
    """``Normal`` or ``Warning``."""
    reason: str
    """CamelCase reason."""
    message: str
    """One line, secret-free."""
