"""The MispFeed status, built from what a sync did (pure).

The status is the operator's honest account of one feed (see the CRD for every field):

- ``conditions``: ``Ready`` (rules of the current spec generation are in Falco's ConfigMaps), ``Degraded`` (the
  latest attempt had a problem: source down, drop held back, DaemonSet missing...) and ``Serving`` (whose rules
  Falco has: the current generation's, a previous one's after a failed sync of a changed spec, or none), each with
  a reason and a message;
  ``lastTransitionTime`` changes only when the condition's status does; with live updates, ``LiveUpdates``
  (written by the ZeroMQ subscriber, kept as it is by syncs);
- what is applied: ``indicators`` (counts by kind, rejected by reason), ``rulesHash``, ``configMaps``,
  ``falcoNamespace``, ``appliedGeneration``, ``lastSuccess``; kept as they were when a later attempt fails;
- ``rollout``: the DaemonSet(s), the hash last rolled and whether a roll is pending;
- ``observedGeneration``, ``lastAttempt``, ``message``, ``warnings``.

Nothing here sees a secret: callers pass counts, names and messages only.
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
    """``Ready`` or ``Degraded``."""
    status: bool
    """True or False."""
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
        status = "True" if cond.status else "False"
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


@dataclass(frozen=True)
class AppliedRules:
    """What Falco's ConfigMaps hold after a successful sync."""

    fetched: int
    """Attributes the source returned after its filters."""
    total: int
    """Emitted indicators."""
    by_kind: Mapping[str, int]
    """Emitted indicators by ``<direction>_<kind>`` (``IndicatorSet.counts()``)."""
    rejected: Mapping[str, int]
    """Dropped values by reason."""
    rules_hash: str
    """Hash over every shard (``RulesBundle.sha256``)."""
    config_maps: tuple[str, ...]
    """ConfigMap names, in shard order."""
    namespace: str
    """Falco's namespace, where the ConfigMaps live."""
    warnings: tuple[str, ...] = ()
    """Advice such as too many CIDRs."""
    capped: int = 0
    """The oldest indicators left out because no more fit in ``falco.maxShards`` (the effective cap)."""


def applied_fields(applied: AppliedRules, generation: int, now: datetime) -> dict[str, Any]:
    """Status fields describing the rules now in place."""
    return {
        "appliedGeneration": generation,
        "lastSuccess": format_time(now),
        "rulesHash": applied.rules_hash,
        "configMaps": list(applied.config_maps),
        "falcoNamespace": applied.namespace,
        "indicators": {
            "total": applied.total,
            "fetched": applied.fetched,
            "byKind": dict(applied.by_kind),
            "rejected": dict(applied.rejected),
        },
        "warnings": list(applied.warnings),
        "capped": applied.capped,
    }


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


def applied_total(status: Mapping[str, Any], generation: int) -> int | None:
    """Indicators applied for this spec generation (None if none, or applied for another spec)."""
    if status.get("appliedGeneration") != generation:
        return None
    total = (status.get("indicators") or {}).get("total")
    return total if isinstance(total, int) else None


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
