"""A human-readable summary of one render (pure): what was emitted, what was dropped and why, where it went."""

from __future__ import annotations

from falco_misp.feed.model import Feed
from falco_misp.indicators.builder import ADJUSTMENTS, REJECT_REASONS, IndicatorSet
from falco_misp.rendering.shards import RulesBundle


def cidr_warning(feed: Feed, indicators: IndicatorSet) -> str | None:
    """A warning when the feed emits more CIDRs than ``limits.cidrWarnThreshold`` (each one costs every event)."""
    cidrs = sum(len(v) for v in indicators.networks.values())
    threshold = feed.spec.limits.cidr_warn_threshold
    if cidrs > threshold:
        return (
            f"{cidrs} CIDR entries exceed limits.cidrWarnThreshold ({threshold}): Falco scans every CIDR entry "
            "for each connection event; consider narrower filters"
        )
    return None


def format_summary(feed: Feed, fetched: int, indicators: IndicatorSet, bundle: RulesBundle) -> str:
    """A plain-text table for the CLI."""
    rows: list[tuple[str, str]] = [("feed", f"{feed.namespace}/{feed.name}"), ("attributes fetched", str(fetched))]
    rows += [(f"emitted {k.replace('_', ' ')}", str(v)) for k, v in indicators.counts().items()]
    rows.append(("emitted total", str(indicators.total)))
    rows += [(f"rejected {k}", f"{v}  ({REJECT_REASONS.get(k, k)})") for k, v in indicators.rejected.items()]
    rows += [(f"adjusted {k}", f"{v}  ({ADJUSTMENTS.get(k, k)})") for k, v in indicators.adjusted.items()]
    if bundle.capped:
        rows.append(("capped for capacity", f"{bundle.capped}  (oldest left out: beyond falco.maxShards shards)"))
    rows += [
        ("shards", str(len(bundle.shards))),
        ("bytes", str(bundle.total_bytes)),
        ("largest shard bytes", str(max(len(s.content) for s in bundle.shards))),
        ("rules hash", bundle.sha256),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    warning = cidr_warning(feed, indicators)
    if warning:
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)
