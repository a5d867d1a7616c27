"""``spec.suspend``: a feed the operator leaves alone, like a suspended CronJob (a service of the handlers; issue 17).

While a feed is suspended nothing is fetched, written or rolled out, no delivery check runs and live updates are
ignored, but nothing is deleted either: the ConfigMaps applied before keep serving Falco. The status says so
(condition ``Suspended`` True, the message, a ``Suspended`` Event once). Setting it back to false is a spec change,
so the change handler syncs at once; that sync turns the condition False (reason ``NotSuspended``, a ``Resumed``
Event). Deleting a suspended feed still cleans up (the delete handler does not look at ``suspend``).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from falco_misp.conditions import Condition, Notice, build_conditions, condition
from falco_misp.controller.sync import FeedObject, SyncOptions, SyncOutcome, parse_feed_object, sync_feed
from falco_misp.delivery.kube import KubeClient
from falco_misp.errors import SpecError

SUSPENDED = "Suspended"
"""The condition: True while ``spec.suspend`` stops the syncs; False once it no longer does (absent before)."""


def is_suspended(obj: FeedObject) -> bool:
    """``spec.suspend`` of a spec that parses (an invalid spec is the sync's to report, suspended or not)."""
    try:
        return parse_feed_object(obj).spec.suspend
    except SpecError:
        return False


def _serving(obj: FeedObject) -> str:
    total = (obj.status.get("indicators") or {}).get("total", 0)
    if not obj.status.get("rulesHash"):
        return "no rules were applied before, so Falco has none of this feed"
    return f"the {total} indicators applied at {obj.status.get('lastSuccess', '?')} keep serving"


def hold(obj: FeedObject, now: datetime) -> SyncOutcome | None:
    """What a suspended feed's sync or timer step does: only the status saying so. None: not suspended."""
    if not is_suspended(obj):
        return None
    message = f"spec.suspend is true: nothing is fetched, written or rolled out; {_serving(obj)}"
    before = condition(obj.status, SUSPENDED)
    status = dict(obj.status)
    status["observedGeneration"] = obj.generation
    status["message"] = message
    status["conditions"] = build_conditions(
        obj.status.get("conditions"), [Condition(SUSPENDED, True, "SpecSuspend", message)], now, obj.generation
    )
    newly = before is None or before.get("status") != "True"
    return SyncOutcome(status=status, notices=(Notice("Normal", SUSPENDED, message),) if newly else (), synced=False)


def sync_unless_suspended(kube: KubeClient, obj: FeedObject, now: datetime, options: SyncOptions) -> SyncOutcome:
    """:func:`~falco_misp.controller.sync.sync_feed`, or :func:`hold` for a suspended feed; the first sync after a
    suspension turns ``Suspended`` False."""
    held = hold(obj, now)
    if held is not None:
        return held
    outcome = sync_feed(kube, obj, now, options)
    was = condition(outcome.status, SUSPENDED)
    if was is None or was.get("status") != "True":
        return outcome
    message = "spec.suspend is false: the feed syncs again"
    status = dict(outcome.status)
    status["conditions"] = build_conditions(
        status.get("conditions"), [Condition(SUSPENDED, False, "NotSuspended", message)], now, obj.generation
    )
    return dataclasses.replace(outcome, status=status, notices=(Notice("Normal", "Resumed", message), *outcome.notices))
