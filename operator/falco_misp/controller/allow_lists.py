"""The MispAllowLists a feed names: read before each sync, and watched so a change syncs the feeds again (a service).

:func:`with_allow_lists` reads each list a feed names (``get`` on the cluster-scoped object) and merges it with
the pure :func:`~falco_misp.feed.allowlist.merge_allow_lists` that ``falco-misp render --allow-list`` uses, so both
render the same bytes; it also returns the digest of every spec it read. :class:`AllowListWatch` (one per operator,
in kopf's memo) holds the digest of every MispAllowList the watch reported (the kopf event handler in
:mod:`falco_misp.controller.handlers` feeds it); :func:`allow_lists_changed` tells a feed's timer that a list it
synced with changed, appeared or went away since, so the timer syncs at its next tick.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from falco_misp.delivery.kube import KubeClient
from falco_misp.errors import SpecError
from falco_misp.feed.allowlist import (
    AllowList,
    AllowListNotFound,
    merge_allow_lists,
    parse_allow_list_spec,
    spec_digest,
)
from falco_misp.feed.model import Feed

ALLOW_LIST_NOT_FOUND = "AllowListNotFound"
INVALID_ALLOW_LIST = "InvalidAllowList"
MEMO_KEY = "allow_lists"
Seen = Mapping[str, str | None]
"""MispAllowList name -> the digest of the spec a sync read (None: it did not exist)."""


@dataclass(frozen=True)
class AllowListsRead:
    """What reading a feed's MispAllowLists gave: the merged feed, or why it cannot be synced."""

    feed: Feed
    """The feed with the lists merged in (the feed as parsed when ``reason`` is set)."""
    seen: dict[str, str | None]
    """Name -> the digest of the spec read (None: the list does not exist)."""
    reason: str | None = None
    """``AllowListNotFound`` or ``InvalidAllowList``: nothing is fetched or written, the last good rules stay."""
    detail: str = ""
    """The message naming the list (and the field and value when invalid)."""


def with_allow_lists(kube: KubeClient, feed: Feed) -> AllowListsRead:
    """Read every MispAllowList the feed names (``get``) and merge them in; raises only
    :class:`~falco_misp.delivery.kube.KubeError` (the API failed)."""
    seen: dict[str, str | None] = {}
    lists: dict[str, AllowList] = {}
    invalid: list[str] = []
    for name in feed.spec.exclusions.allow_lists:
        obj = kube.read_allow_list(name)
        if obj is None:
            seen[name] = None
            continue
        spec = obj.get("spec")
        seen[name] = spec_digest(spec)
        try:
            lists[name] = parse_allow_list_spec(name, spec)
        except SpecError as exc:
            invalid.append(str(exc))
    if invalid:
        return AllowListsRead(feed, seen, INVALID_ALLOW_LIST, "; ".join(invalid))
    try:
        return AllowListsRead(merge_allow_lists(feed, lists), seen)
    except AllowListNotFound as exc:
        return AllowListsRead(feed, seen, ALLOW_LIST_NOT_FOUND, str(exc))
    except SpecError as exc:  # too many exceptions together
        return AllowListsRead(feed, seen, INVALID_ALLOW_LIST, str(exc))


class AllowListWatch:
    """The spec digest of every MispAllowList the watch reported (None: deleted), shared by every feed (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._digests: dict[str, str | None] = {}

    def note(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Record one watch event of a MispAllowList (``ADDED``, ``MODIFIED``, ``DELETED``, or None when listed)."""
        name = str((body.get("metadata") or {}).get("name") or "")
        if not name:
            return
        digest = None if event_type == "DELETED" else spec_digest(body.get("spec"))
        with self._lock:
            self._digests[name] = digest

    def changed(self, seen: Seen) -> bool:
        """Whether a list differs from what a sync read (a list the watch has not reported yet counts as unchanged)."""
        with self._lock:
            return any(name in self._digests and self._digests[name] != digest for name, digest in seen.items())


def allow_list_watch(memo: MutableMapping[str, Any]) -> AllowListWatch:
    """The operator's watch, in kopf's memo (``configure`` puts it in the operator memo every feed's memo copies)."""
    watch = memo.get(MEMO_KEY)
    if not isinstance(watch, AllowListWatch):
        watch = AllowListWatch()
        memo[MEMO_KEY] = watch
    return watch


def allow_lists_changed(memo: Mapping[str, Any], seen: Seen | None) -> bool:
    """Whether the feed whose last sync read ``seen`` must sync again for a MispAllowList change."""
    watch = memo.get(MEMO_KEY)
    return bool(seen) and isinstance(watch, AllowListWatch) and watch.changed(seen or {})
