"""Metrics read off sync outcomes."""

from __future__ import annotations

from prometheus_client import generate_latest

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
