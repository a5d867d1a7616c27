"""An incremental refresh of a MISP feed (a service; issue 14, goal 3): one small request when MISP is unchanged.

Each refresh reads MISP's slim event index (one request). Unchanged: that is all. Otherwise only the changed events
are asked for again, with the feed's own filters (so MISP judges tags, ``to_ids``, publication and soft deletes
exactly as in a full fetch), merged into the snapshot (:mod:`falco_misp.sources.incremental`, pure), and each filter
set's count checked against MISP's ``X-Result-Count``. A full fetch instead when there is no snapshot, the spec or
key changed, ``refresh.fullInterval`` passed, the index is in doubt, or a count does not match.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from falco_misp.errors import SourceError
from falco_misp.feed.model import Feed
from falco_misp.sources.filters import build_restsearch_params
from falco_misp.sources.incremental import (
    EventChanges,
    EventMark,
    Member,
    MispSnapshot,
    age_out,
    diff_events,
    event_marks,
    group_counts,
    members_from_pages,
    merge,
    snapshot_key,
    unsettled_events,
)
from falco_misp.sources.locations import FetchContext
from falco_misp.sources.misp import DEFAULT_PREFETCH_PAGES, MispApi, fetch_pages, misp_api
from falco_misp.sources.prefetch import prefetched

log = logging.getLogger(__name__)

FULL = "full"
DELTA = "delta"
UNCHANGED = "unchanged"


@dataclass(frozen=True)
class RefreshOutcome:
    """What one refresh did."""

    snapshot: MispSnapshot
    """The feed's attributes now."""
    mode: str
    """``full``, ``delta`` (some events asked for again) or ``unchanged`` (the attributes are the snapshot's)."""
    reason: str
    """Why a full fetch (or what changed), for the log."""
    requests: int
    """Requests made to MISP (PyMISP's start-up calls not counted)."""


def _index(api: MispApi) -> tuple[dict[str, EventMark], int | None]:
    answer, read_at = api.event_index()
    try:
        return event_marks(answer), read_at
    except ValueError as exc:
        raise SourceError("InvalidJSON", f"MISP at {api.url}: {exc}") from None


def full_reason(snapshot: MispSnapshot | None, key: str, feed: Feed, now: int) -> str | None:
    """Why this refresh must fetch everything (before looking at MISP), or None."""
    if snapshot is None:
        return "no earlier fetch kept"
    if snapshot.key != key:
        return "the spec or the API key changed"
    if now - snapshot.full_at >= feed.spec.full_refresh_seconds:
        return "refresh.fullInterval passed"
    if now < snapshot.full_at:
        return "the clock went back"
    return None


def _counts(feed: Feed, ctx: FetchContext, api: MispApi) -> list[int | None]:
    counts: list[int | None] = []
    for filters in feed.spec.filters:
        api.search_attributes(build_restsearch_params(filters, ctx.now), 1, 1)
        counts.append(api.result_count)
    return counts


def refresh_misp(
    feed: Feed, ctx: FetchContext, snapshot: MispSnapshot | None, api: MispApi | None = None
) -> RefreshOutcome:
    """The feed's attributes now, from ``snapshot`` and what MISP changed since (raises SourceError)."""
    api = api or misp_api(feed, ctx)
    depth = DEFAULT_PREFETCH_PAGES if ctx.prefetch_pages is None else ctx.prefetch_pages
    key = snapshot_key(feed, ctx.auth_key)
    reason = full_reason(snapshot, key, feed, ctx.now)
    events, read_at = _index(api)  # before the attributes: a change made meanwhile shows up next time
    requests = 1
    unsettled = unsettled_events(events, read_at)
    if reason is None and snapshot is not None:
        aged = age_out(snapshot, feed, ctx.now)
        changes = diff_events(aged, events)
        if changes.doubt is None and not changes.changed and not changes.deleted:
            mode = UNCHANGED if aged is snapshot else DELTA
            done = dataclasses.replace(aged, unsettled=unsettled)
            return RefreshOutcome(done, mode, "no event changed", requests)
        if changes.doubt is None:
            merged, used = _delta(feed, ctx, api, aged, events, changes, unsettled, depth)
            requests += used
            counts = _counts(feed, ctx, api)
            requests += len(counts)
            expected = group_counts(merged, len(feed.spec.filters))
            if all(c is None or c == e for c, e in zip(counts, expected, strict=True)):
                what = f"{len(changes.changed)} event(s) changed, {len(changes.deleted)} deleted"
                return RefreshOutcome(merged, DELTA, what, requests)
            reason = f"count mismatch: MISP counts {counts}, the merged attributes {expected}"
        else:
            reason = changes.doubt
    reason = reason or "no earlier fetch kept"
    log.info("feed %s/%s: full MISP fetch (%s)", feed.namespace, feed.name, reason)
    pages = prefetched(fetch_pages(feed, ctx, api), depth)
    fetched = 0

    def counted() -> Iterator[tuple[int, list[dict[str, Any]]]]:
        nonlocal fetched
        for page in pages:
            fetched += 1
            yield page.group, page.rows

    members = members_from_pages(counted(), dedupe=len(feed.spec.filters) > 1)
    full = MispSnapshot(key, events, members, ctx.now, unsettled)
    return RefreshOutcome(full, FULL, reason, requests + fetched)


def _delta(  # noqa: PLR0917 (one private step of refresh_misp)
    feed: Feed,
    ctx: FetchContext,
    api: MispApi,
    snapshot: MispSnapshot,
    events: dict[str, EventMark],
    changes: EventChanges,
    unsettled: frozenset[str],
    depth: int,
) -> tuple[MispSnapshot, int]:
    """The changed events asked for again (the feed's filters, restricted to their ids) and merged."""
    used = 0
    fetched: dict[str, Member] = {}
    if changes.changed:
        ids = sorted((events[u].id for u in changes.changed), key=int)
        pages = list(prefetched(fetch_pages(feed, ctx, api, {"eventid": ids}), depth))
        used = len(pages)
        fetched = members_from_pages(((p.group, p.rows) for p in pages), dedupe=len(feed.spec.filters) > 1)
        fetched = {u: m for u, m in fetched.items() if m.attribute.event_uuid in changes.changed}
    return merge(snapshot, events, changes, fetched, unsettled), used
