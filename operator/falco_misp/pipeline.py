"""One feed fetched and rendered: source -> indicators -> rules (the service both front doors call).

:func:`render_attributes` is the pure part (attributes in, rules out); :func:`fetch_and_render` adds the fetch;
:func:`refresh_and_render` fetches only what MISP changed since the :class:`IncrementalRefresh` the caller keeps.

``falco-misp render`` and the operator call :func:`fetch_and_render`, so they produce the same bytes from the same
spec and the same source data (STYLE.md #7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from falco_misp.feed.model import Feed
from falco_misp.indicators.builder import IndicatorBuilder, IndicatorSet
from falco_misp.rendering.shards import RulesBundle, render_within_capacity
from falco_misp.sources.attributes import Attribute
from falco_misp.sources.fetch import fetch_attributes
from falco_misp.sources.incremental import MispSnapshot, incremental_blocker, ordered_attributes
from falco_misp.sources.locations import FetchContext
from falco_misp.sources.refresh import UNCHANGED, RefreshOutcome, refresh_misp


@dataclass(frozen=True)
class RenderResult:
    """What one render produced."""

    fetched: int
    """Attributes that passed the source's filters."""
    indicators: IndicatorSet
    """The validated indicators."""
    bundle: RulesBundle
    """The rules files."""


def render_attributes(
    feed: Feed,
    attributes: Iterable[Attribute],
    builder: IndicatorBuilder | None = None,
    observe: Callable[[Attribute], None] | None = None,
) -> RenderResult:
    """The pure part: attributes -> indicators -> rules. ``observe`` sees every attribute on its way through."""
    builder = builder or IndicatorBuilder(feed.spec)
    fetched = 0

    def counted() -> Iterator[Attribute]:
        nonlocal fetched
        for attr in attributes:
            fetched += 1
            if observe is not None:
                observe(attr)
            yield attr

    builder.add_all(counted())
    indicators, bundle = render_within_capacity(feed, builder.build)  # the newest that fit in falco.maxShards
    return RenderResult(fetched=fetched, indicators=indicators, bundle=bundle)


def fetch_and_render(feed: Feed, ctx: FetchContext, observe: Callable[[Attribute], None] | None = None) -> RenderResult:
    """Fetch (streaming) and render. Raises SourceError, RenderError; nothing is written here.

    ``observe`` sees every fetched attribute (e.g. to index where each indicator came from).
    """
    builder = IndicatorBuilder(feed.spec)
    return render_attributes(feed, fetch_attributes(feed, ctx, builder.rejected), builder, observe)


@dataclass
class IncrementalRefresh:
    """What the caller keeps between syncs of one feed for incremental MISP refreshes (issue 14, goal 3).

    The operator keeps one per feed in memory (lost on restart: the next sync is a full fetch); the CLI keeps none.
    Only :func:`refresh_and_render` changes it, and only after a refresh that succeeded.
    """

    snapshot: MispSnapshot | None = None
    """The feed's attributes and MISP's event index at the last refresh."""
    result: RenderResult | None = None
    """What that refresh rendered (reused while MISP is unchanged)."""
    last: RefreshOutcome | None = None
    """What the last refresh did (mode, reason, requests), for logs and tests."""


def refresh_and_render(
    feed: Feed, ctx: FetchContext, refresh: IncrementalRefresh, observe: Callable[[Attribute], None] | None = None
) -> RenderResult:
    """:func:`fetch_and_render`, asking MISP only for what changed since ``refresh`` was last updated.

    The same bytes as a full fetch (the property tests hold it to that); a feed that cannot be refreshed
    incrementally (:func:`~falco_misp.sources.incremental.incremental_blocker`) is fetched in full each time.
    """
    blocker = incremental_blocker(feed)
    if blocker is not None:
        refresh.snapshot = refresh.result = refresh.last = None
        return fetch_and_render(feed, ctx, observe)
    outcome = refresh_misp(feed, ctx, refresh.snapshot)
    if outcome.mode == UNCHANGED and refresh.result is not None:  # nothing to sort or render again
        result = refresh.result
        if observe is not None:
            for attr in ordered_attributes(outcome.snapshot):
                observe(attr)
    else:
        result = render_attributes(feed, ordered_attributes(outcome.snapshot), observe=observe)
    refresh.snapshot, refresh.result, refresh.last = outcome.snapshot, result, outcome
    return result
