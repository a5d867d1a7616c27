"""The applied part of a MispFeed's status, built from what a sync did (pure).

What is applied: ``indicators`` (counts by kind, rejected by reason), ``rulesHash``, ``configMaps``,
``falcoNamespace``, ``appliedGeneration``, ``lastSuccess``, ``capped``; kept as they were when a later attempt
fails. Nothing here sees a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from falco_misp.conditions import format_time


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
