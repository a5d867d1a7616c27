"""Metrics read off sync outcomes."""

from __future__ import annotations

import urllib.request

import kopf
from prometheus_client import generate_latest

from falco_misp.controller.feeds import Tuning, report_outcome
from falco_misp.controller.sync import SyncOutcome
from falco_misp.metrics import Metrics


def text(m: Metrics) -> str:
    return generate_latest(m.registry).decode()


def test_applied_failed_and_rollout() -> None:
    m = Metrics()
    ok = {
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "Degraded", "status": "False"}],
        "lastSuccess": "2026-11-24T10:00:00Z",
        "indicators": {"byKind": {"outbound_addresses": 5}, "rejected": {"private": 2, "too_broad": 1}},
    }
    m.observe_sync("ns/a", ok, ("RulesApplied", "RolloutTriggered"), 1.5, applied=True)
    out = text(m)
    assert 'falco_misp_indicators{feed="ns/a",kind="outbound_addresses"} 5.0' in out
    assert 'falco_misp_rejected_values{feed="ns/a",reason="too_broad"} 1.0' in out
    assert 'falco_misp_rollouts_total{feed="ns/a"} 1.0' in out
    assert 'falco_misp_last_success_timestamp_seconds{feed="ns/a"} 1.7955144e+09' in out
    m.observe_sync("ns/a", {**ok, "indicators": {"byKind": {}, "rejected": {"private": 1}}}, (), 0.2, applied=True)
    assert 'reason="too_broad"' not in text(m)  # a reason that no longer occurs is dropped
    failed = {"conditions": [{"type": "Degraded", "status": "True", "reason": "SourceFailed"}]}
    m.observe_sync("ns/a", failed, ("SyncFailed",), 0.1, applied=False)
    out = text(m)
    assert 'falco_misp_sync_failures_total{feed="ns/a",reason="SourceFailed"} 1.0' in out
    assert 'falco_misp_sync_duration_seconds_count{feed="ns/a"} 3.0' in out
    assert 'falco_misp_rejected_values{feed="ns/a",reason="private"} 1.0' in out  # last applied values kept


def test_rules_applied_with_a_rollout_problem_is_no_sync_failure() -> None:
    m = Metrics()
    missing = {
        "conditions": [{"type": "Degraded", "status": "True", "reason": "DaemonSetNotFound"}],
        "indicators": {"byKind": {"outbound_addresses": 3}},
    }
    m.observe_sync("ns/a", missing, ("RulesApplied",), 0.3, applied=True)
    m.observe_rollout("ns/a", ("RolloutTriggered",))
    out = text(m)
    assert "falco_misp_sync_failures_total{" not in out
    assert 'falco_misp_sync_duration_seconds_count{feed="ns/a"} 1.0' in out
    assert 'falco_misp_rollouts_total{feed="ns/a"} 1.0' in out


def test_forget_removes_every_series_of_one_feed() -> None:
    m = Metrics()
    ok = {
        "lastSuccess": "2026-11-24T10:00:00Z",
        "indicators": {"byKind": {"outbound_addresses": 5}, "rejected": {"x": 1}},
    }
    m.observe_sync("ns/a", ok, ("RolloutTriggered",), 1.0, applied=True)
    m.observe_sync("ns/b", ok, (), 1.0, applied=True)
    m.observe_sync("ns/a", {}, (), 1.0, applied=False)
    m.forget("ns/a")
    out = text(m)
    assert 'feed="ns/a"' not in out
    assert 'falco_misp_indicators{feed="ns/b",kind="outbound_addresses"} 5.0' in out


def conditions(ready: str, degraded: str | None = None) -> list[dict[str, str]]:
    out = [{"type": "Ready", "status": ready}]
    out.append(
        {"type": "Degraded", "status": "True", "reason": degraded}
        if degraded
        else {"type": "Degraded", "status": "False", "reason": "Synced"}
    )
    return out


def test_feed_state_gauges_follow_the_status_and_spec() -> None:
    """What the chart's alerts read: Ready, the Degraded reason, a held-back drop, last success, refresh interval."""
    m = Metrics()
    spec = {"refresh": {"interval": "15m"}}
    m.observe_feed("ns/a", spec, {"conditions": conditions("True"), "lastSuccess": "2026-11-24T10:00:00Z"})
    out = text(m)
    assert 'falco_misp_feed_ready{feed="ns/a"} 1.0' in out
    assert 'falco_misp_drop_held_back{feed="ns/a"} 0.0' in out
    assert 'falco_misp_feed_refresh_interval_seconds{feed="ns/a"} 900.0' in out
    assert 'falco_misp_feed_suspended{feed="ns/a"} 0.0' in out
    assert 'falco_misp_last_success_timestamp_seconds{feed="ns/a"} 1.7955144e+09' in out
    assert "falco_misp_feed_degraded{" not in out

    # A drop held back: Ready stays True (the last good rules), the gauge says so; lastSuccess is kept.
    held = {"conditions": conditions("True", "DropLimitExceeded"), "lastSuccess": "2026-11-24T10:00:00Z"}
    m.observe_feed("ns/a", spec, held)
    out = text(m)
    assert 'falco_misp_drop_held_back{feed="ns/a"} 1.0' in out
    assert 'falco_misp_feed_degraded{feed="ns/a",reason="DropLimitExceeded"} 1.0' in out

    # Another reason replaces the series of the previous one; not Ready; suspended; an unreadable interval.
    m.observe_feed(
        "ns/a", {"refresh": {"interval": "soon"}, "suspend": True}, {"conditions": conditions("False", "SourceFailed")}
    )
    out = text(m)
    assert 'falco_misp_feed_ready{feed="ns/a"} 0.0' in out
    assert 'reason="DropLimitExceeded"' not in out
    assert 'falco_misp_feed_degraded{feed="ns/a",reason="SourceFailed"} 1.0' in out
    assert 'falco_misp_drop_held_back{feed="ns/a"} 0.0' in out
    assert 'falco_misp_feed_suspended{feed="ns/a"} 1.0' in out
    assert 'falco_misp_feed_refresh_interval_seconds{feed="ns/a"} 3600.0' in out  # the default
    assert 'falco_misp_last_success_timestamp_seconds{feed="ns/a"}' in out  # not forgotten by a failure

    m.observe_feed("ns/a", {}, {"conditions": conditions("True")})
    assert "falco_misp_feed_degraded{" not in text(m)
    m.observe_feed("ns/a", {}, {"conditions": conditions("True", "ShardsNotMounted")})
    m.forget("ns/a")
    assert 'feed="ns/a"' not in text(m)


def test_last_success_survives_a_restart_whose_first_sync_fails() -> None:
    """A fresh operator whose first sync fails still exports the age of the rules kept in the status."""
    m = Metrics()
    status = {"conditions": conditions("True", "SourceFailed"), "lastSuccess": "2026-11-24T10:00:00Z"}
    m.observe_sync("ns/a", status, ("SourceFailed",), 0.1, applied=False)
    assert "falco_misp_last_success_timestamp_seconds{" not in text(m)  # a failed sync alone says nothing of it
    m.observe_feed("ns/a", {}, status)
    assert 'falco_misp_last_success_timestamp_seconds{feed="ns/a"} 1.7955144e+09' in text(m)


def test_serve_answers_on_loopback_and_stops() -> None:
    m = Metrics()
    m.observe_feed("ns/a", {}, {"conditions": conditions("True")})
    server = m.serve(0, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'falco_misp_feed_ready{feed="ns/a"} 1.0' in body


def test_every_reported_outcome_updates_the_feed_state() -> None:
    """The handlers' one reporting path (report_outcome) feeds observe_feed: a rollout-only step counts too."""
    m = Metrics()
    body = kopf.Body(
        {"metadata": {"namespace": "ns", "name": "a"}, "spec": {"refresh": {"interval": "2h"}, "suspend": True}}
    )
    status = {"conditions": conditions("True", "DaemonSetNotFound"), "lastSuccess": "2026-11-24T10:00:00Z"}
    outcome = SyncOutcome(status=status, synced=False)
    report_outcome(body, kopf.Patch(), {}, outcome, retry=0, tuning=Tuning(), metrics=m, seconds=0.0)
    out = text(m)
    assert 'falco_misp_feed_degraded{feed="ns/a",reason="DaemonSetNotFound"} 1.0' in out
    assert 'falco_misp_feed_refresh_interval_seconds{feed="ns/a"} 7200.0' in out
    assert 'falco_misp_feed_suspended{feed="ns/a"} 1.0' in out
    assert "falco_misp_sync_duration_seconds_count{" not in out  # not a sync
