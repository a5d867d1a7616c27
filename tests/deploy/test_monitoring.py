"""The chart's monitoring (issue 17): ServiceMonitor, PrometheusRule and Grafana dashboard, each rendered only when
enabled and structurally valid; the alert rules pass ``promtool check rules`` and ``promtool test rules`` (each alert
fires on series made for it and stays quiet on the near misses); every metric the rules and the dashboard name is
served by the operator's real metrics endpoint; every alert's runbook is a section of docs/operations.md.

promtool is Debian's ``prometheus`` package (the test script installs it).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from deploy.chartkit import CHART, NAMESPACE, RELEASE, REPO, Rendered, kube_errors, render
from falco_misp.metrics import LiveMetrics, Metrics, ReportingMetrics

OPERATIONS = REPO / "docs" / "operations.md"
SELECTOR = {"job": RELEASE, "namespace": NAMESPACE}
"""The labels Prometheus gives the operator's series when the chart's ServiceMonitor scrapes them."""
ENABLED: dict[str, Any] = {
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "interval": "1m"},
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "alertLabels": {"team": "secops"},
        },
        "dashboard": {"enabled": True},
    }
}
ALERTS = {
    "FalcoMispOperatorDown",
    "FalcoMispFeedNotReady",
    "FalcoMispFeedStale",
    "FalcoMispDropHeldBack",
    "FalcoMispSyncFailures",
    "FalcoMispFeedDegraded",
    "FalcoMispDeliveryLagging",
    "FalcoMispLiveUpdatesDown",
    "FalcoMispSightingsBacklog",
    "FalcoMispSightingsDropped",
    "FalcoMispSightingsKeyRejected",
}
KINDS = ("ServiceMonitor", "PrometheusRule", "ConfigMap")


@pytest.fixture(scope="module")
def monitored() -> Rendered:
    return render(ENABLED)


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (apt-get install prometheus)")
    return found


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def rules_of(r: Rendered) -> list[dict[str, Any]]:
    (group,) = r.one("PrometheusRule")["spec"]["groups"]
    return list(group["rules"])


def alert(r: Rendered, name: str) -> dict[str, Any]:
    (found,) = [rule for rule in rules_of(r) if rule["alert"] == name]
    return found


# ------------------------------------------------------------------------------------------ only when enabled
def test_nothing_by_default() -> None:
    kinds = {o["kind"] for o in render().objects}
    assert not kinds & set(KINDS)


@pytest.mark.parametrize(
    ("part", "kind"),
    [("serviceMonitor", "ServiceMonitor"), ("prometheusRule", "PrometheusRule"), ("dashboard", "ConfigMap")],
)
def test_each_part_alone(part: str, kind: str) -> None:
    r = render({"monitoring": {part: {"enabled": True}}})
    assert [o["kind"] for o in r.objects if o["kind"] in KINDS] == [kind]


def test_every_object_is_labelled_and_the_core_ones_validate(monitored: Rendered) -> None:
    for obj in monitored.objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert obj["metadata"].get("namespace") or obj["kind"].startswith("Cluster")
    # The monitoring.coreos.com kinds have no Kubernetes schema: SERVICE_MONITOR and PROMETHEUS_RULE below.
    core = [o for o in monitored.objects if not o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert [e for obj in core for e in kube_errors(obj)] == []


def test_service_monitor_needs_the_metrics_service() -> None:
    for off in ({"metrics": {"enabled": False}}, {"service": {"enabled": False}}):
        with pytest.raises(helm.HelmRenderError, match=r"monitoring\.serviceMonitor needs metrics\.enabled"):
            render({**copy.deepcopy(ENABLED), **off})
    with pytest.raises(helm.HelmRenderError, match=r"monitoring\.prometheusRule needs metrics\.enabled"):
        render({"monitoring": {"prometheusRule": {"enabled": True}}, "metrics": {"enabled": False}})
    # Scraped through pod annotations instead of the Service: the rules alone are fine.
    alone = render({"monitoring": {"prometheusRule": {"enabled": True}}, "service": {"enabled": False}})
    assert alone.one("PrometheusRule")


# ------------------------------------------------------------------------------------------------ structure
# The fields of the monitoring.coreos.com/v1 objects the chart writes, as the Prometheus Operator documents them
# (written here, not copied from its CRDs): a wrong type or a missing required field fails.
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    r"(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
META = {
    "type": "object",
    "required": ["name", "namespace", "labels"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
        "namespace": {"type": "string", "minLength": 1},
        "labels": STRINGS,
        "annotations": STRINGS,
    },
}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": {**STRINGS, "minProperties": 1}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr", "labels", "annotations"],
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": DURATION,
                                        "labels": {**STRINGS, "required": ["severity"]},
                                        "annotations": {
                                            **STRINGS,
                                            "required": ["summary", "description", "runbook_url"],
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_service_monitor(monitored: Rendered) -> None:
    monitor = monitored.one("ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = monitored.one("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "scheme": "http",
        "interval": "1m",
        "scrapeTimeout": "10s",
    }
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    relabel = [{"action": "replace", "targetLabel": "cluster", "replacement": "prod-eu"}]
    tuned = render(
        {"monitoring": {"serviceMonitor": {"enabled": True, "relabelings": relabel, "metricRelabelings": relabel}}}
    ).one("ServiceMonitor")
    jsonschema.validate(tuned, SERVICE_MONITOR)
    assert tuned["spec"]["endpoints"][0]["relabelings"] == tuned["spec"]["endpoints"][0]["metricRelabelings"] == relabel


def test_prometheus_rule(monitored: Rendered) -> None:
    rule = monitored.one("PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert {r["alert"] for r in rules_of(monitored)} == ALERTS
    for r in rules_of(monitored):
        assert r["labels"]["team"] == "secops", r["alert"]
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
        assert r["annotations"]["runbook_url"] == f"docs/operations.md#{r['alert'].lower()}"
        assert f'job="{RELEASE}",namespace="{NAMESPACE}"' in r["expr"], r["alert"]  # this operator's series only


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page (lower case, punctuation dropped, spaces to -)."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m:
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def test_every_runbook_is_a_section_of_the_operations_guide(monitored: Rendered) -> None:
    anchors = github_anchors(OPERATIONS.read_text(encoding="utf-8"))
    for r in rules_of(monitored):
        page, _, anchor = r["annotations"]["runbook_url"].partition("#")
        assert (REPO / page).resolve() == OPERATIONS.resolve()
        assert anchor in anchors, f"{r['alert']}: docs/operations.md has no section #{anchor}"
    base = render(
        {
            "monitoring": {
                "prometheusRule": {
                    "enabled": True,
                    "runbookBaseUrl": "https://git.example.org/sec/falco-misp-operator/-/blob/main/docs/operations.md",
                }
            }
        }
    )
    assert alert(base, "FalcoMispFeedStale")["annotations"]["runbook_url"] == (
        "https://git.example.org/sec/falco-misp-operator/-/blob/main/docs/operations.md#falcomispfeedstale"
    )


def test_the_operations_guide_links_resolve() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([\w./-]*)#([\w-]+)\)", text)
    assert len(links) >= 5
    for page, anchor in links:
        target = OPERATIONS.parent / page if page else OPERATIONS
        assert anchor in github_anchors(target.read_text(encoding="utf-8")), f"{page}#{anchor}"


def test_selector_disabled_alerts_and_thresholds() -> None:
    r = render(
        {
            "monitoring": {
                "prometheusRule": {
                    "enabled": True,
                    "selector": "",
                    "staleFactor": 5,
                    "sightingsQueueThreshold": 250,
                    "disabled": ["FalcoMispLiveUpdatesDown"],
                }
            }
        }
    )
    names = {rule["alert"] for rule in rules_of(r)}
    # Without a selector there is no way to tell which `up` series is the operator's: no OperatorDown.
    assert names == ALERTS - {"FalcoMispLiveUpdatesDown", "FalcoMispOperatorDown"}
    assert all("job=" not in rule["expr"] for rule in rules_of(r))
    assert "> 5 * falco_misp_feed_refresh_interval_seconds{}" in alert(r, "FalcoMispFeedStale")["expr"]
    assert alert(r, "FalcoMispSightingsBacklog")["expr"] == "falco_misp_sightings_queued{} > 250"
    custom = render({"monitoring": {"prometheusRule": {"enabled": True, "selector": 'job="falco-misp"'}}})
    assert alert(custom, "FalcoMispOperatorDown")["expr"] == 'absent(up{job="falco-misp"} == 1)'


BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"prometheusRule": {"staleFactor": 1}}, "/monitoring/prometheusRule/staleFactor"),
    ({"prometheusRule": {"disabled": ["FeedStale"]}}, "/monitoring/prometheusRule/disabled/0"),
    ({"prometheusRule": {"runbookBaseUrl": "docs/operations.md#x"}}, "/monitoring/prometheusRule/runbookBaseUrl"),
    ({"prometheusRule": {"sightingsQueueThreshold": 0}}, "/monitoring/prometheusRule/sightingsQueueThreshold"),
    ({"serviceMonitor": {"interval": "30"}}, "/monitoring/serviceMonitor/interval"),
    ({"serviceMonitor": {"labels": {"release": 1}}}, "/monitoring/serviceMonitor/labels/release"),
    ({"dashboard": {"namespace": "Monitoring"}}, "/monitoring/dashboard/namespace"),
    ({"dashboard": {"label": {"grafana_dashboard": "1"}}}, "label"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_wrong_monitoring_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render({"monitoring": values})
    assert where in str(caught.value), str(caught.value)


def test_chart_with_monitoring_lints() -> None:
    report = helm.lint(CHART, copy.deepcopy(ENABLED), strict=True, namespace=NAMESPACE, kube_version="v1.37.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


# ------------------------------------------------------------------------------------------------ dashboard
def dashboard_of(r: Rendered) -> tuple[dict[str, Any], dict[str, Any]]:
    cm = r.one("ConfigMap")
    (key,) = cm["data"]
    assert key.endswith(".json")
    return cm, json.loads(cm["data"][key])


def targets(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, query) of every panel and template variable."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            yield panel["title"], target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":  # Grafana's label_values(<series selector>, <label>)
            m = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_]\w*)\)", var["definition"])
            assert m, var["definition"]
            yield f"${var['name']}", m.group(1)


def test_dashboard(monitored: Rendered) -> None:
    cm, dashboard = dashboard_of(monitored)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert dashboard["uid"] == "falco-misp-operator" and dashboard["title"]
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in (
        "Indicators by kind",
        "Sync duration",
        "Sync failures by reason",
        "Last success age",
        "Sightings",
        "Live-update latency",
    ):
        assert wanted in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "job", "feed"}
    elsewhere = render(
        {
            "monitoring": {
                "dashboard": {
                    "enabled": True,
                    "namespace": "monitoring",
                    "labels": {"grafana_dashboard": "falco"},
                    "annotations": {"grafana_folder": "Security"},
                }
            }
        }
    )
    cm, again = dashboard_of(elsewhere)
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "falco"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Security"}
    assert again == dashboard


# -------------------------------------------------------------------------------------------------- promtool
def write_rules(r: Rendered, path: Path, *, annotations: bool = True) -> Path:
    spec = copy.deepcopy(r.one("PrometheusRule")["spec"])
    if not annotations:
        for group in spec["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_promtool_checks_the_rules(monitored: Rendered, tmp_path: Path) -> None:
    write_rules(monitored, tmp_path / "rules.yaml")
    done = run_promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout
    # promtool does check: a broken expression or annotation template fails.
    spec = yaml.safe_load((tmp_path / "rules.yaml").read_text(encoding="utf-8"))
    spec["groups"][0]["rules"][0]["expr"] = "sum by (feed (falco_misp_feed_ready)"
    spec["groups"][0]["rules"][1]["annotations"]["summary"] = "{{ $labels.feed "
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    broken = run_promtool("check", "rules", "broken.yaml", cwd=tmp_path)
    assert broken.returncode != 0 and "FAILED" in broken.stdout + broken.stderr


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    """One input series of a promtool test, with the labels the ServiceMonitor scrape gives."""
    every = {**SELECTOR, "instance": "10.0.0.5:9090", **labels}
    return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in every.items()) + "}", "values": values}


ALERT_LABELS = {"team": "secops"}
FEED = {**SELECTOR, "instance": "10.0.0.5:9090", "feed": "sec/intel"}
OTHER_OPERATOR = {"job": "another-operator"}
"""Series of another release: each rule's selector keeps them out."""

# alert -> (fire: series, eval minutes, expected labels of the one alert), (quiet: series, eval minutes)
CASES: dict[str, tuple[tuple[list[dict[str, str]], int, dict[str, str]], tuple[list[dict[str, str]], int]]] = {
    "FalcoMispOperatorDown": (
        ([series("up", "0x20")], 15, {"severity": "critical"}),
        ([series("up", "1x20"), series("up", "0x20", **OTHER_OPERATOR)], 15),
    ),
    "FalcoMispFeedNotReady": (
        (
            [
                series("falco_misp_feed_ready", "1x5 0x30", feed="sec/intel"),
                series("falco_misp_feed_suspended", "0x35", feed="sec/intel"),
            ],
            25,
            {**FEED, "severity": "warning"},
        ),
        (
            [
                series("falco_misp_feed_ready", "1x30", feed="sec/intel"),
                series("falco_misp_feed_ready", "0x30", feed="sec/paused"),
                series("falco_misp_feed_suspended", "1x30", feed="sec/paused"),
                series("falco_misp_feed_ready", "1x20 0x10", feed="sec/flaky"),  # not Ready for 10 minutes only
                series("falco_misp_feed_ready", "0x30", feed="sec/elsewhere", **OTHER_OPERATOR),
            ],
            30,
        ),
    ),
    "FalcoMispFeedStale": (
        # last success at the epoch, refreshed hourly: at 4h it is more than 3 intervals old
        (
            [
                series("falco_misp_last_success_timestamp_seconds", "0x300", feed="sec/intel"),
                series("falco_misp_feed_refresh_interval_seconds", "3600x300", feed="sec/intel"),
            ],
            240,
            {**FEED, "severity": "warning"},
        ),
        (
            [
                series("falco_misp_last_success_timestamp_seconds", "0x300", feed="sec/slow"),
                series("falco_misp_feed_refresh_interval_seconds", "7200x300", feed="sec/slow"),
                series("falco_misp_last_success_timestamp_seconds", "0x300", feed="sec/paused"),
                series("falco_misp_feed_refresh_interval_seconds", "3600x300", feed="sec/paused"),
                series("falco_misp_feed_suspended", "1x300", feed="sec/paused"),
            ],
            240,
        ),
    ),
    "FalcoMispDropHeldBack": (
        ([series("falco_misp_drop_held_back", "0 0 1 1", feed="sec/intel")], 3, {**FEED, "severity": "warning"}),
        ([series("falco_misp_drop_held_back", "0x5", feed="sec/intel")], 3),
    ),
    "FalcoMispSyncFailures": (
        (
            [series("falco_misp_sync_failures_total", "0+1x70", feed="sec/intel", reason="SourceFailed")],
            70,
            {**SELECTOR, "feed": "sec/intel", "reason": "SourceFailed", "severity": "warning"},
        ),
        (
            [
                series("falco_misp_sync_failures_total", "0x30 1x40", feed="sec/intel", reason="SourceFailed"),
                series("falco_misp_sync_failures_total", "0+1x70", feed="sec/shrunk", reason="DropLimitExceeded"),
            ],
            70,
        ),
    ),
    "FalcoMispFeedDegraded": (
        (
            [series("falco_misp_feed_degraded", "1x30", feed="sec/intel", reason="ShardsNotMounted")],
            20,
            {**FEED, "reason": "ShardsNotMounted", "severity": "warning"},
        ),
        ([series("falco_misp_feed_degraded", "1x30", feed="sec/intel", reason="SourceFailed")], 20),
    ),
    "FalcoMispDeliveryLagging": (
        (
            [
                series("falco_misp_delivery_pods", "3x30", feed="sec/intel"),
                series("falco_misp_delivery_pods_current", "2x30", feed="sec/intel"),
            ],
            20,
            {**FEED, "severity": "warning"},
        ),
        (
            [
                series("falco_misp_delivery_pods", "3x30", feed="sec/intel"),
                series("falco_misp_delivery_pods_current", "2x10 3x20", feed="sec/intel"),
            ],
            20,
        ),
    ),
    "FalcoMispLiveUpdatesDown": (
        ([series("falco_misp_live_up", "0x30", feed="sec/intel")], 20, {**FEED, "severity": "info"}),
        ([series("falco_misp_live_up", "1x30", feed="sec/intel")], 20),
    ),
    "FalcoMispSightingsBacklog": (
        (
            [series("falco_misp_sightings_queued", "5000x30")],
            20,
            {**SELECTOR, "instance": "10.0.0.5:9090", "severity": "warning"},
        ),
        ([series("falco_misp_sightings_queued", "500x30")], 20),
    ),
    "FalcoMispSightingsDropped": (
        (
            [
                series(
                    "falco_misp_sightings_dropped_total",
                    "0 0 0+5x20",
                    feed="sec/intel",
                    kind="sighting",
                    reason="queue_full",
                )
            ],
            10,
            {**SELECTOR, "feed": "sec/intel", "kind": "sighting", "reason": "queue_full", "severity": "warning"},
        ),
        (
            [
                series(
                    "falco_misp_sightings_dropped_total", "3x20", feed="sec/intel", kind="sighting", reason="queue_full"
                )
            ],
            10,
        ),
    ),
    "FalcoMispSightingsKeyRejected": (
        (
            [series("falco_misp_sightings_waiting_for_key", "4x20", feed="sec/intel")],
            15,
            {**FEED, "severity": "warning"},
        ),
        ([series("falco_misp_sightings_waiting_for_key", "0x20", feed="sec/intel")], 15),
    ),
}


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    assert set(CASES) == ALERTS


def test_promtool_unit_tests_fire_each_alert_and_only_then(monitored: Rendered, tmp_path: Path) -> None:
    write_rules(monitored, tmp_path / "rules.yaml", annotations=False)  # logic here; annotations below
    tests: list[dict[str, Any]] = []
    for name, ((fire, fire_at, labels), (quiet, quiet_at)) in CASES.items():
        tests.append(
            {
                "interval": "1m",
                "input_series": fire,
                "alert_rule_test": [
                    {
                        "eval_time": f"{fire_at}m",
                        "alertname": name,
                        "exp_alerts": [{"exp_labels": {**labels, **ALERT_LABELS}}],
                    }
                ],
            }
        )
        tests.append(
            {
                "interval": "1m",
                "input_series": quiet,
                "alert_rule_test": [{"eval_time": f"{quiet_at}m", "alertname": name, "exp_alerts": []}],
            }
        )
    unit = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(unit, sort_keys=False), encoding="utf-8")
    done = run_promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_expands_the_annotations(monitored: Rendered, tmp_path: Path) -> None:
    """What the on-call person reads: the feed, the kubectl command for it, how stale it is."""
    write_rules(monitored, tmp_path / "rules.yaml")
    expanded = {
        '{{ reReplaceAll "/.*" "" $labels.feed }}': "sec",
        '{{ reReplaceAll ".*/" "" $labels.feed }}': "intel",
        "{{ $labels.feed }}": "sec/intel",
        "{{ $value | humanizeDuration }}": "4h 0m 0s",
    }

    def expected(name: str) -> dict[str, str]:
        out = {}
        for key, template in alert(monitored, name)["annotations"].items():
            text = template
            for action, value in expanded.items():
                text = text.replace(action, value)
            assert "{{" not in text, (name, key, text)
            out[key] = text
        return out

    stale = expected("FalcoMispFeedStale")
    assert "kubectl -n sec describe mispfeed intel" in stale["description"]
    assert "applied 4h 0m 0s ago" in stale["description"]
    cases = [("FalcoMispFeedNotReady", 25), ("FalcoMispFeedStale", 240)]
    tests = [
        {
            "interval": "1m",
            "input_series": CASES[name][0][0],
            "alert_rule_test": [
                {
                    "eval_time": f"{at}m",
                    "alertname": name,
                    "exp_alerts": [
                        {"exp_labels": {**CASES[name][0][2], **ALERT_LABELS}, "exp_annotations": expected(name)}
                    ],
                }
            ],
        }
        for name, at in cases
    ]
    unit = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(unit, sort_keys=False), encoding="utf-8")
    done = run_promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# -------------------------------------------------------------------------------- every metric name exists
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, label matchers, ranges, grouping clauses, functions
    and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes, Grafana variables)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # range and subquery durations, $__rate_interval
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def test_metric_names_reads_promql() -> None:
    assert metric_names(
        'sum by (le, feed) (rate(falco_misp_sync_duration_seconds_bucket{job=~"$job",feed=~"$feed"}[$__rate_interval]))'
    ) == {"falco_misp_sync_duration_seconds_bucket"}
    assert metric_names(
        '(time() - a_seconds{x="y"}) > 3 * b_seconds unless on(feed) (c{d!="e"} == 1) or vector(0) offset 5m'
    ) == {"a_seconds", "b_seconds", "c"}
    assert metric_names('count(falco_misp_feed_degraded{reason=~"A|B"} == 1) or vector(0)') == {
        "falco_misp_feed_degraded"
    }


def scraped_names() -> set[str]:
    """Every sample name on the real metrics endpoint after one of each thing the operator observes."""
    metrics = Metrics()
    reporting = ReportingMetrics(metrics.registry)
    live = LiveMetrics(metrics.registry)
    feed = "sec/intel"
    applied = {
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "Degraded", "status": "False"}],
        "lastSuccess": "2026-11-24T10:00:00Z",
        "indicators": {"byKind": {"outbound_addresses": 5}, "rejected": {"private": 2}},
        "delivery": {"pods": 3, "podsCurrent": 2},
    }
    held = {
        **applied,
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Degraded", "status": "True", "reason": "DropLimitExceeded"},
        ],
    }
    metrics.observe_sync(feed, applied, ("RulesApplied", "RolloutTriggered"), 1.5, applied=True)
    metrics.observe_sync(feed, held, ("DropLimitExceeded",), 0.5, applied=False)
    metrics.observe_delivery(feed, applied)
    metrics.observe_feed(feed, {"refresh": {"interval": "1h"}, "suspend": False}, held)
    reporting.requests.labels("202").inc()
    reporting.alerts.labels("matched").inc()
    reporting.matched.labels(feed).inc()
    reporting.deduplicated.labels(feed).inc()
    reporting.sent.labels(feed, "sighting").inc()
    reporting.failed.labels(feed, "sighting", "Timeout").inc()
    reporting.dropped.labels(feed, "sighting", "queue_full").inc()
    reporting.queued.set(4)
    reporting.auth_failures.labels(feed).inc()
    reporting.waiting_for_key.labels(feed).set(1)
    reporting.notices.labels("posted").inc()
    live.messages.labels(feed, "misp_json_attribute").inc()
    live.invalid.labels(feed, "not_json").inc()
    live.relevant.labels(feed).inc()
    live.syncs.labels(feed).inc()
    live.latency.labels(feed).observe(2.0)
    live.heard(feed, True)

    server = metrics.serve(0, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    return {sample.name for family in text_string_to_metric_families(body) for sample in family.samples}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return scraped_names()


def test_every_metric_of_the_rules_is_exported(monitored: Rendered, exported: set[str]) -> None:
    assert "falco_misp_sync_failures_total" in exported and "falco_misp_live_update_latency_seconds_bucket" in exported
    used: set[str] = set()
    for rule in rules_of(monitored):
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        missing = names - exported - ({"up"} if rule["alert"] == "FalcoMispOperatorDown" else set())
        assert not missing, f"{rule['alert']} uses metrics the operator does not export: {sorted(missing)}"
        used |= names
    assert {
        "falco_misp_feed_ready",
        "falco_misp_drop_held_back",
        "falco_misp_feed_refresh_interval_seconds",
        "falco_misp_sightings_queued",
        "falco_misp_delivery_pods_current",
    } <= used


def test_every_metric_of_the_dashboard_is_exported(monitored: Rendered, exported: set[str]) -> None:
    _, dashboard = dashboard_of(monitored)
    used: set[str] = set()
    for title, expr in targets(dashboard):
        names = metric_names(expr)
        assert names, (title, expr)
        assert not names - exported, f"panel {title!r} queries metrics the operator does not export: {names - exported}"
        used |= names
    for wanted in (
        "falco_misp_indicators",
        "falco_misp_sync_duration_seconds_bucket",
        "falco_misp_sync_failures_total",
        "falco_misp_last_success_timestamp_seconds",
        "falco_misp_sightings_sent_total",
        "falco_misp_live_update_latency_seconds_bucket",
    ):
        assert wanted in used
