"""Filters, two ways from one :class:`~falco_misp.feed.model.FilterSet`: MISP restSearch parameters (sent server-side)
and a local predicate (for static feeds, exports and lists). Both follow MISP's semantics:

- different fields AND together; values inside a field OR together (``orgs: [A, B]`` is A or B);
- tags match attribute or event tags, case-insensitively, ``%`` is a wildcard (SQL LIKE, as MISP does);
- ``minThreatLevel`` is a minimum severity: ``low`` keeps High, Medium and Low (threat_level_id 1..3);
- ``maxAge`` bounds the attribute timestamp, ``publishedWithin`` the event publish timestamp;
- ``anyOf`` groups are separate filter sets joined by OR (one restSearch query each, results merged by uuid).

Pure: ``now`` is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from typing import Any

from falco_misp.feed.model import FilterSet, TagFilter
from falco_misp.sources.attributes import Attribute


def build_restsearch_params(filters: FilterSet, now: int) -> dict[str, Any]:
    """Keyword arguments for ``PyMISP.search(controller="attributes", ...)`` (without ``limit``/``page``)."""
    params: dict[str, Any] = {
        "type_attribute": list(filters.types),
        "include_event_tags": True,
    }
    if filters.orgs:
        params["org"] = list(filters.orgs)
    if filters.categories:
        params["category"] = list(filters.categories)
    if filters.tags:
        tags: dict[str, list[str]] = {}
        for key, values in (("OR", filters.tags.any), ("AND", filters.tags.all), ("NOT", filters.tags.none)):
            if values:
                tags[key] = list(values)
        params["tags"] = tags
    if filters.to_ids is not None:
        params["to_ids"] = 1 if filters.to_ids else 0
    if filters.published is not None:
        params["published"] = filters.published
    if filters.max_threat_level_id < 4:
        params["threat_level_id"] = [str(level) for level in range(1, filters.max_threat_level_id + 1)]
    if filters.max_age_seconds is not None:
        params["timestamp"] = now - filters.max_age_seconds
    if filters.published_within_seconds is not None:
        params["publish_timestamp"] = now - filters.published_within_seconds
    if filters.enforce_warninglist:
        params["enforce_warninglist"] = True
    if filters.exclude_decayed:
        params["exclude_decayed"] = True
    return params


@cache
def _like(pattern: str) -> re.Pattern[str]:
    """SQL LIKE with ``%`` as the wildcard, case-insensitive."""
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("%")) + "$", re.IGNORECASE | re.DOTALL)


def _has_tag(tags: Sequence[str], pattern: str) -> bool:
    rx = _like(pattern)
    return any(rx.match(t) for t in tags)


def org_matches(orgs: tuple[str, ...], org: str, org_id: str) -> bool:
    """Whether an org (its name, any case, or its id) is one of ``orgs``, as MISP's ``org`` filter matches."""
    return any(o.lower() in (org.lower(), org_id) for o in orgs)


def matches(attr: Attribute, filters: FilterSet, now: int) -> bool:
    """Whether one attribute passes one filter set."""
    return _fields_pass(attr, filters, now) and (not filters.tags or _tags_pass(filters.tags, attr.tags))


def _fields_pass(attr: Attribute, filters: FilterSet, now: int) -> bool:
    """Every condition of ``filters`` but the tags."""
    if attr.type not in filters.types:
        return False
    if filters.to_ids is not None and attr.to_ids != filters.to_ids:
        return False
    if filters.published is not None and attr.published != filters.published:
        return False
    if attr.threat_level > filters.max_threat_level_id:
        return False
    if filters.orgs and not org_matches(filters.orgs, attr.org, attr.org_id):
        return False
    if filters.categories and attr.category.lower() not in {c.lower() for c in filters.categories}:
        return False
    if filters.max_age_seconds is not None and attr.timestamp < now - filters.max_age_seconds:
        return False
    return not (
        filters.published_within_seconds is not None and attr.publish_timestamp < now - filters.published_within_seconds
    )


def _tags_pass(tags: TagFilter, have: Sequence[str]) -> bool:
    if tags.any and not any(_has_tag(have, p) for p in tags.any):
        return False
    if tags.all and not all(_has_tag(have, p) for p in tags.all):
        return False
    return not (tags.none and any(_has_tag(have, p) for p in tags.none))


_MEMO_MAX = 16_384


def _predicate(filters: FilterSet, now: int) -> Callable[[Attribute], bool]:
    """:func:`matches` for one filter set, the tag check remembered per tag tuple (a feed's attributes share few)."""
    if not filters.tags:
        return lambda a: _fields_pass(a, filters, now)
    seen: dict[tuple[str, ...], bool] = {}

    def predicate(a: Attribute) -> bool:
        if not _fields_pass(a, filters, now):
            return False
        passed = seen.get(a.tags)
        if passed is None:
            if len(seen) >= _MEMO_MAX:
                seen.clear()
            passed = seen[a.tags] = _tags_pass(filters.tags, a.tags)
        return passed

    return predicate


def select(attributes: Iterable[Attribute], filter_sets: tuple[FilterSet, ...], now: int) -> Iterator[Attribute]:
    """Attributes passing any of the filter sets (OR), in input order."""
    predicates = [_predicate(f, now) for f in filter_sets]
    if len(predicates) == 1:
        return filter(predicates[0], attributes)
    return (a for a in attributes if any(p(a) for p in predicates))
