"""Delivery confirmation and the mounts check, pure (issue 13): Falco's metric, pod by pod; the pod template."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from falco_misp.cli import main
from falco_misp.delivery.confirm import (
    METRICS_VALUES,
    PodProbe,
    compare,
    delivered_condition,
    falco_values,
    loaded_rules_files,
    mounted_configmaps,
    rules_files_of,
    unmounted_shards,
)
from falco_misp.feed.parse import parse_feed
from helpers import REPO

FALCO_MD = REPO.parent / "shared" / "reference" / "FALCO.md"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
NEW = {"misp-a-0.yaml": "1" * 64, "misp-a-1.yaml": "2" * 64}
OLD = {"misp-a-0.yaml": "9" * 64, "misp-a-1.yaml": "2" * 64}


def test_the_metric_is_read_as_falco_prints_it() -> None:
    # The exact lines of reference/FALCO.md (measured on Falco 0.44.1), plus a file of ours with a path.
    block = re.search(r"```\n( *# HELP falcosecurity_falco_sha256_rules_files_info.*?)```", FALCO_MD.read_text(), re.S)
    assert block, "FALCO.md's metric sample"
    text = (
        "\n".join(line.strip() for line in block.group(1).splitlines())
        + "\n"
        + (
            'falcosecurity_falco_sha256_rules_files_info{file_name="/etc/falco/rules.d/misp-a-0.yaml",sha256="AB"} 1\n'
            'falcosecurity_falco_sha256_config_files_info{file_name="falco.yaml",sha256="cd"} 1\n'
        )
    )
    files = loaded_rules_files(text)
    assert files == {
        "falco_rules.yaml": "6f0078862a26528cb50a860f9ebebbfbe3162e5009187089c73cb0cdf91d0b06",
        "misp-a-0.yaml": "ab",
    }
    with pytest.raises(ValueError):
        loaded_rules_files("not {prometheus text")


def probes(**files: dict[str, str] | None) -> list[PodProbe]:
    return [PodProbe(name, True, f, "" if f is not None else "ConnectionError") for name, f in files.items()]


@pytest.mark.parametrize(
    ("pods", "minutes", "status", "reason", "named"),
    [
        (probes(a=NEW, b={**NEW, "falco_rules.yaml": "x"}), 0, True, "AllPodsCurrent", ""),
        (probes(a=NEW, b=OLD), 1, None, "Propagating", ""),  # within the deadline
        (probes(a=NEW, b=OLD), 4, False, "FalcoKeptOldRules", "b"),
        (probes(a=NEW, b={"falco_rules.yaml": "x"}), 4, False, "RulesNotLoaded", "b"),
        (probes(a=None, b=None), 4, None, "MetricsOff", ""),
        (probes(a=NEW, b=None), 4, None, "MetricsPartial", "b"),
        ([PodProbe("a", False, None)], 4, None, "NoFalcoPods", ""),  # a pod that is not ready does not count
    ],
)
def test_delivered_condition(pods: list[PodProbe], minutes: int, status: bool | None, reason: str, named: str) -> None:
    report = compare(NEW, pods)
    got = delivered_condition(
        report, written_at=T0, now=T0 + timedelta(minutes=minutes), deadline_seconds=180, port=8765, path="/metrics"
    )
    assert (got.status, got.reason) == (status, reason)
    if named:
        assert named in got.message
    if reason == "MetricsOff":
        assert repr(METRICS_VALUES) in got.message and "8765 /metrics" in got.message


def template(volumes: list[dict], mounts: list[dict]) -> dict:
    return {
        "spec": {"containers": [{"name": "sidecar"}, {"name": "falco", "volumeMounts": mounts}], "volumes": volumes}
    }


def test_mounts_configmap_and_projected_volumes_subpath_never() -> None:
    t = template(
        [
            {"name": "one", "configMap": {"name": "misp-a-0"}},
            {
                "name": "many",
                "projected": {"sources": [{"configMap": {"name": "misp-a-1"}}, {"secret": {"name": "s"}}]},
            },
            {"name": "pinned", "configMap": {"name": "misp-a-2"}},
            {"name": "unmounted", "configMap": {"name": "misp-a-3"}},
        ],
        [
            {"name": "one", "mountPath": "/etc/falco/rules.d"},
            {"name": "many", "mountPath": "/etc/falco/misp.d"},
            {"name": "pinned", "mountPath": "/etc/falco/rules.d/x.yaml", "subPath": "x.yaml"},
        ],
    )
    assert mounted_configmaps(t) == {"misp-a-0": "/etc/falco/rules.d", "misp-a-1": "/etc/falco/misp.d"}
    shards = ["misp-a-0", "misp-a-1", "misp-a-2", "misp-a-3"]
    assert unmounted_shards(shards, t, None) == ["misp-a-2", "misp-a-3"]
    rules_files = rules_files_of("rules_files: [/etc/falco/falco_rules.yaml, /etc/falco/rules.d]\n")
    assert unmounted_shards(shards, t, rules_files) == ["misp-a-1", "misp-a-2", "misp-a-3"]  # misp.d is not loaded


@pytest.mark.parametrize(("rollout", "watch"), [("HotReload", True), ("Restart", False), ("None", True)])
def test_the_printed_falco_values_mount_every_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rollout: str, watch: bool
) -> None:
    doc = yaml.safe_load((REPO / "examples" / "misp-feed.yaml").read_text())
    doc["spec"]["falco"]["rollout"] = rollout
    path = tmp_path / "feed.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["render", "--feed", str(path), "--format", "falco-values", "--out", str(tmp_path / "o")]) == 0
    assert not (tmp_path / "o").exists()  # nothing fetched, nothing written
    values = yaml.safe_load(capsys.readouterr().out)
    feed = parse_feed(doc)
    assert values["falco"]["watch_config_files"] is watch  # one reload, never two
    assert values["metrics"] == {"enabled": True}
    t = template(values["mounts"]["volumes"], values["mounts"]["volumeMounts"])
    every = [f"{feed.config_map_prefix}-{i}" for i in range(feed.spec.falco.max_shards)]
    assert unmounted_shards(every, t, values["falco"]["rules_files"]) == []
    assert yaml.safe_load(falco_values(feed)) == values


CHART_RULES_FILES = ["/etc/falco/falco_rules.yaml", "/etc/falco/falco_rules.local.yaml", "/etc/falco/rules.d"]


@pytest.mark.parametrize(
    ("values_file", "rollout", "watch"),
    [("falco-values.yaml", "HotReload", True), ("falco-values-restart.yaml", "Restart", False)],
)
def test_the_example_falco_values_match_each_rollout_mode(values_file: str, rollout: str, watch: bool) -> None:
    values = yaml.safe_load((REPO / "examples" / values_file).read_text())
    doc = yaml.safe_load((REPO / "examples" / "misp-feed.yaml").read_text())
    doc["spec"]["falco"]["rollout"] = rollout
    feed = parse_feed(doc)
    assert values["falco"]["watch_config_files"] is watch
    assert values["metrics"]["enabled"] is True  # the operator confirms delivery from Falco's metrics
    t = template(values["mounts"]["volumes"], values["mounts"]["volumeMounts"])
    every = [f"{feed.config_map_prefix}-{i}" for i in range(feed.spec.falco.max_shards)]
    assert unmounted_shards(every, t, values["falco"].get("rules_files", CHART_RULES_FILES)) == []
    assert rollout in (REPO / "examples" / values_file).read_text()
