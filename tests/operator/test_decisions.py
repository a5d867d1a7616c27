"""The operator's pure decisions and status building, table-driven (no kopf, no cluster)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from falco_misp.backoff import retry_delay
from falco_misp.conditions import Condition, build_conditions, format_time, parse_time, status_patch
from falco_misp.controller.status import AppliedRules, applied_fields, applied_total
from falco_misp.controller.ticks import TickAction, decide_tick
from falco_misp.delivery.configmaps import plan_configmaps
from falco_misp.delivery.guard import check_drop
from falco_misp.delivery.kube import selector_matches
from falco_misp.delivery.rollout import (
    RolloutAction,
    RolloutState,
    decide_rollout,
    rollout_annotation_key,
    rollout_fields,
    rollout_state,
)

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("previous", "current", "limit", "allowed", "percent"),
    [
        (None, 0, 50, True, 0.0),  # nothing applied yet (or a new spec): anything goes
        (0, 0, 0, True, 0.0),
        (100, 100, 0, True, 0.0),
        (100, 150, 0, True, 0.0),  # growth is never a drop
        (100, 50, 50, True, 50.0),  # exactly at the limit: accepted
        (100, 49, 50, False, 51.0),
        (100, 0, 99, False, 100.0),
        (100, 0, 100, True, 100.0),  # 100 never refuses
        (100, 99, 0, False, 1.0),  # 0 refuses any shrink
    ],
)
def test_drop_check(previous: int | None, current: int, limit: int, allowed: bool, percent: float) -> None:
    check = check_drop(previous, current, limit)
    assert (check.allowed, check.percent) == (allowed, percent)
    if previous:
        assert f"{current} indicators fetched" in check.message
        assert ("held back" in check.message) == (not allowed)


def cm(name: str, data: dict[str, str], labels: dict[str, str] | None = None, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": labels if labels is not None else {"feed": "x"},
            "annotations": annotations,
        },
        "data": data,
    }


def test_configmap_plan_writes_only_what_differs() -> None:
    desired = [
        cm("p-0", {"p-0.yaml": "a"}, h="1"),
        cm("p-1", {"p-1.yaml": "b"}, h="1"),
        cm("p-2", {"p-2.yaml": "c"}, h="1"),
    ]
    owned = [
        cm("p-0", {"p-0.yaml": "a"}, {"feed": "x", "extra": "kept"}, h="1", other="kept"),  # same bytes, extra metadata
        cm("p-1", {"p-1.yaml": "old", "stale.yaml": "z"}, h="1"),  # data differs
        cm("p-3", {"p-3.yaml": "d"}, h="1"),  # surplus shard
        cm("old-0", {"old-0.yaml": "e"}, h="1"),  # an older prefix of the same feed
    ]
    plan = plan_configmaps(desired, owned)
    assert plan.unchanged == ("p-0",)
    assert [c["metadata"]["name"] for c in plan.create] == ["p-2"]
    assert plan.delete == ("old-0", "p-3")
    ((name, patch),) = plan.update
    assert name == "p-1"
    assert patch["data"] == {"stale.yaml": None, "p-1.yaml": "b"}
    assert patch["metadata"] == {"labels": {"feed": "x"}, "annotations": {"h": "1"}}
    assert plan.writes == 4


def test_configmap_plan_rewrites_on_changed_annotation_and_binary_data() -> None:
    desired = [cm("p-0", {"p-0.yaml": "a"}, h="2")]
    assert plan_configmaps(desired, [cm("p-0", {"p-0.yaml": "a"}, h="1")]).update
    binary = cm("p-0", {"p-0.yaml": "a"}, h="2")
    binary["binaryData"] = {"x": "AA=="}
    ((_, patch),) = plan_configmaps(desired, [binary]).update
    assert patch["binaryData"] is None
    assert plan_configmaps(desired, [cm("p-0", {"p-0.yaml": "a"}, h="2")]).writes == 0


@pytest.mark.parametrize(
    ("current", "last", "now", "action", "not_before"),
    [
        (["new"], T0, T0, RolloutAction.UP_TO_DATE, None),
        (["new", "new"], None, T0, RolloutAction.UP_TO_DATE, None),
        ([None], None, T0, RolloutAction.PATCH, None),  # first rollout ever
        (["old"], T0, T0 + timedelta(minutes=5), RolloutAction.PATCH, None),
        (["old"], T0, T0 + timedelta(minutes=4), RolloutAction.DEFER, T0 + timedelta(minutes=5)),
        (["new", "old"], T0, T0 + timedelta(hours=1), RolloutAction.PATCH, None),
    ],
)
def test_rollout_decision(
    current: list[str | None],
    last: datetime | None,
    now: datetime,
    action: RolloutAction,
    not_before: datetime | None,
) -> None:
    decision = decide_rollout(
        desired_hash="new", current_hashes=current, last_rollout=last, now=now, min_interval_seconds=300
    )
    assert (decision.action, decision.not_before) == (action, not_before)


def test_rollout_annotation_keys_are_valid_and_distinct() -> None:
    qualified = re.compile(r"^[a-z0-9.-]+/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
    assert rollout_annotation_key("security", "intel") == "falco-misp.io/rules-hash-security.intel"
    long_ns, long_name = "n" * 63, "f" * 47
    keys = {rollout_annotation_key(long_ns, long_name), rollout_annotation_key(long_ns, long_name[:-1] + "g")}
    assert len(keys) == 2
    for key in keys | {rollout_annotation_key("a-" * 20 + "b", "c-" * 20 + "d")}:
        assert qualified.match(key), key


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("app.kubernetes.io/name=falco", {"app.kubernetes.io/name": "falco", "x": "y"}, True),
        ("app.kubernetes.io/name=falco", {"app.kubernetes.io/name": "falcosidekick"}, False),
        ("a=1,b=2", {"a": "1"}, False),
        ("a=1,b=2", {"a": "1", "b": "2"}, True),
        ("a=1", None, False),
    ],
)
def test_selector(selector: str, labels: dict[str, str] | None, matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


@pytest.mark.parametrize(
    ("last", "secret_changed", "not_before", "action"),
    [
        (None, False, None, TickAction.SYNC),
        (T0, False, None, TickAction.SKIP),
        (T0 - timedelta(hours=1), False, None, TickAction.SYNC),  # refresh 1h passed
        (T0 - timedelta(minutes=59), True, None, TickAction.SYNC),  # the Secret changed
        (T0 - timedelta(minutes=59), False, T0, TickAction.ROLLOUT),  # a deferred rollout came due
        (T0 - timedelta(minutes=59), False, T0 + timedelta(seconds=1), TickAction.SKIP),
    ],
)
def test_tick_decision(
    last: datetime | None, secret_changed: bool, not_before: datetime | None, action: TickAction
) -> None:
    assert (
        decide_tick(
            now=T0,
            last_attempt=last,
            refresh_seconds=3600,
            secret_changed=secret_changed,
            rollout_not_before=not_before,
        )
        is action
    )


def test_retry_delay_doubles_and_caps() -> None:
    assert [retry_delay(n, 15, 600) for n in range(7)] == [15, 30, 60, 120, 240, 480, 600]
    assert retry_delay(10_000, 1, 60) == 60


# ------------------------------------------------------------------------------------------------ status
def test_conditions_keep_transition_time_while_status_stays() -> None:
    first = build_conditions(None, [Condition("Ready", True, "RulesApplied", "ok")], T0, 1)
    assert first == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "RulesApplied",
            "message": "ok",
            "lastTransitionTime": "2026-01-05T12:00:00Z",
            "observedGeneration": 1,
        }
    ]
    later = T0 + timedelta(hours=1)
    same = build_conditions(first, [Condition("Ready", True, "LastGoodRules", "kept")], later, 2)
    assert same[0]["lastTransitionTime"] == "2026-01-05T12:00:00Z"
    assert (same[0]["reason"], same[0]["observedGeneration"]) == ("LastGoodRules", 2)
    flipped = build_conditions(same, [Condition("Ready", False, "InvalidSpec", "bad")], later, 3)
    assert flipped[0]["lastTransitionTime"] == "2026-01-05T13:00:00Z"


def test_status_fields_round_trip() -> None:
    applied = AppliedRules(
        fetched=12,
        total=10,
        by_kind={"outbound_addresses": 10},
        rejected={"private": 2},
        rules_hash="abc",
        config_maps=("misp-x-0",),
        namespace="falco",
    )
    fields = applied_fields(applied, 3, T0)
    assert fields["indicators"] == {
        "total": 10,
        "fetched": 12,
        "byKind": {"outbound_addresses": 10},
        "rejected": {"private": 2},
    }
    assert applied_total(fields, 3) == 10
    assert applied_total(fields, 4) is None  # another spec generation: the drop check does not apply
    state = RolloutState("Restart", "k", ("falco",), "abc", T0, True, T0 + timedelta(minutes=5))
    assert rollout_state({"rollout": rollout_fields(state)}) == state
    assert parse_time(format_time(T0)) == T0
    assert parse_time("garbage") is None


def test_status_patch_removes_vanished_keys() -> None:
    old = {"a": 1, "b": {"x": 1, "y": 2}, "gone": True, "same": [1]}
    new = {"a": 2, "b": {"x": 1}, "same": [1], "added": "v"}
    assert status_patch(old, new) == {"gone": None, "a": 2, "b": {"y": None}, "added": "v"}
    assert status_patch(new, new) == {}
