"""The applied part of a MispFeed's status, built from what a sync did (pure).

What is applied: ``indicators`` (counts by kind, rejected by reason), ``rulesHash``, ``configMaps``,
``falcoNamespace``, ``appliedGeneration``, ``lastSuccess``, ``capped``; kept as they were when a later attempt
fails. ``lastChange``: what the latest sync that rewrote the rules added and removed (issue 17), against what the
ConfigMaps held before it, as read from the cluster (or, mode OCI, the registry: issue 16): right after an operator
restart too. Nothing here sees a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from falco_misp.conditions import Notice, format_time
from falco_misp.feed.model import Feed
from falco_misp.indicators.builder import IndicatorSet
from falco_misp.rendering.changes import UnreadableRules, change_between


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


def applied_total(status: Mapping[str, Any], generation: int) -> int | None:
    """Indicators applied for this spec generation (None if none, or applied for another spec)."""
    if status.get("appliedGeneration") != generation:
        return None
    total = (status.get("indicators") or {}).get("total")
    return total if isinstance(total, int) else None


def delivery_target(status: Mapping[str, Any]) -> tuple[str, ...]:
    """What ``status.delivery`` and the ``Delivered`` condition speak of: how the rules were written
    (``rollout.mode``: Restart, HotReload, None, Rulesfiles or OCI), where (Falco's namespace, the registry) and the
    Rulesfile that follows a push. A sync that changes it drops the old answer: it says nothing of the new way."""
    rollout, push = status.get("rollout"), status.get("push")
    mode = rollout.get("mode") if isinstance(rollout, Mapping) else None
    pushed = push if isinstance(push, Mapping) else {}
    where = (status.get("falcoNamespace"), pushed.get("reference"), pushed.get("rulesfile"))
    return tuple(str(v or "") for v in (mode, *where))


log = logging.getLogger(__name__)
RULES_CHANGED = "RulesChanged"
"""The Normal Event of a sync whose new rules add or remove indicators."""


@dataclass(frozen=True)
class ChangeRecord:
    """What a sync that wrote rules says about its change."""

    fields: dict[str, Any] = field(default_factory=dict)
    """Status updates: ``lastChange`` (nothing when no rules were written or the old ones could not be read)."""
    notices: tuple[Notice, ...] = ()
    """The ``RulesChanged`` Event, when indicators were added or removed."""


def record_change(
    feed: Feed, indicators: IndicatorSet, previous: Mapping[str, str | bytes] | None, now: datetime
) -> ChangeRecord:
    """``lastChange`` and its Event for a sync that wrote rules: the indicators added and removed against the rules
    files they replace (``previous``: what the feed's ConfigMaps held, :attr:`ConfigMapPlan.previous`, or the files
    of the artifact a push replaced, :attr:`PushResult.previous`), by kind. Nothing when ``previous`` is None (no
    rules written, or what they replace is unknown)."""
    if previous is None:
        return ChangeRecord()
    try:
        change = change_between(previous, feed, indicators)
    except UnreadableRules as exc:  # someone edited our ConfigMaps: what they held cannot be told
        log.warning("feed %s: cannot tell what the change replaces: %s", feed.ref, exc)
        return ChangeRecord()
    fields = {"lastChange": {"time": format_time(now), "added": change.added, "removed": change.removed}}
    if not change:
        return ChangeRecord(fields)
    message = f"{change.summary()} ({indicators.total} indicators now)"
    return ChangeRecord(fields, (Notice("Normal", RULES_CHANGED, message),))
