"""One render of one feed: fetch -> indicators -> rules (the service both front doors call).

``falco-misp render`` and the operator call :func:`render_feed`, so they produce the same bytes from the same
spec and the same source data (STYLE.md #7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from falco_misp.attributes import Attribute
from falco_misp.indicators import IndicatorBuilder, IndicatorSet
from falco_misp.render import RulesBundle, render_within_capacity
from falco_misp.sources import FetchContext, fetch_attributes
from falco_misp.spec import Feed


@dataclass(frozen=True)
class RenderResult:
    """What one render produced."""

    fetched: int
    """Attributes that passed the source's filters."""
    indicators: IndicatorSet
    """The validated indicators."""
    bundle: RulesBundle
    """The rules files."""


def build_result(
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


def render_feed(feed: Feed, ctx: FetchContext, observe: Callable[[Attribute], None] | None = None) -> RenderResult:
    """Fetch (streaming) and render. Raises SourceError, RenderError; nothing is written here.

    ``observe`` sees every fetched attribute (e.g. to index where each indicator came from).
    """
    builder = IndicatorBuilder(feed.spec)
    return build_result(feed, fetch_attributes(feed, ctx, builder.rejected), builder, observe)
