"""Whether Falco has the rules we wrote, pod by pod, and whether its DaemonSet mounts them at all (pure).

Falco exports ``falcosecurity_falco_sha256_rules_files_info{file_name,sha256}`` for every rules file it loaded
(reference/FALCO.md; ``file_name`` is the base name) on its Prometheus endpoint (the falcosecurity chart:
``metrics.enabled: true``, port 8765, ``/metrics``). Each shard's sha256 is compared with what the operator wrote:

- every ready pod lists every shard with its current sha256: ``Delivered=True``;
- some do not, within the deadline after the write (the kubelet refreshes ConfigMap volumes in about a minute):
  ``Unknown``, ``Propagating``;
- past the deadline, a pod that lists our files with another sha256 kept its old rules (a hot reload Falco refused:
  it keeps the old rules and emits ``Falco internal: hot restart failure``; or a ``subPath`` mount, which never
  updates): ``False``, ``FalcoKeptOldRules``; a pod that lists none of them never loaded them: ``False``,
  ``RulesNotLoaded``;
- no pod answers with the metric: ``Unknown``, ``MetricsOff``, with the chart values that turn it on.

:func:`unmounted_shards` reads the DaemonSet's pod template: a shard ConfigMap that no volume mounted into the Falco
container carries never reaches Falco (``Degraded``, ``ShardsNotMounted``); :func:`falco_values` is the
falcosecurity chart values snippet that mounts every shard a feed may write.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from falco_misp.conditions import Condition
from falco_misp.feed.model import Feed, Rollout

DELIVERED = "Delivered"
RULES_FILES_METRIC = "falcosecurity_falco_sha256_rules_files_info"
METRICS_VALUES = "metrics:\n  enabled: true"
"""The falcosecurity chart values that make Falco serve the metric (webserver on port 8765, ``/metrics``)."""
MISP_RULES_DIR = "/etc/falco/misp.d"
DEFAULT_RULES_FILES = ("/etc/falco/falco_rules.yaml", "/etc/falco/falco_rules.local.yaml", "/etc/falco/rules.d")


def loaded_rules_files(text: str) -> dict[str, str]:
    """``file_name -> sha256`` of the rules files one Falco loaded, from its Prometheus text (``ValueError`` if the
    text is not Prometheus' format)."""
    out: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        if family.name != RULES_FILES_METRIC:
            continue
        for sample in family.samples:
            name, sha = sample.labels.get("file_name"), sample.labels.get("sha256")
            if name and sha:
                out[posixpath.basename(name)] = sha.lower()
    return out


@dataclass(frozen=True)
class PodProbe:
    """What one Falco pod said."""

    name: str
    """Pod name."""
    ready: bool
    """The pod is Ready (only ready pods are expected to run the rules)."""
    files: Mapping[str, str] | None = None
    """``file_name -> sha256`` it loaded; None when its metrics could not be read (or lack the metric)."""
    error: str = ""
    """Why its metrics could not be read."""


@dataclass(frozen=True)
class DeliveryReport:
    """Every ready Falco pod against the shards written."""

    pods: int
    """Ready pods."""
    current: tuple[str, ...] = ()
    """Pods that loaded every shard with its current sha256."""
    kept_old: tuple[str, ...] = ()
    """Pods that list our files with another sha256."""
    not_loaded: tuple[str, ...] = ()
    """Pods that list none of our files."""
    unreachable: tuple[str, ...] = ()
    """Pods whose metrics could not be read."""
    errors: Mapping[str, str] = field(default_factory=dict)
    """Why, per unreachable pod."""

    @property
    def stale(self) -> tuple[str, ...]:
        """Ready pods that do not run the current rules (unreachable ones excluded: nothing is known of them)."""
        return tuple(sorted((*self.kept_old, *self.not_loaded)))


def compare(expected: Mapping[str, str], probes: Iterable[PodProbe]) -> DeliveryReport:
    """``expected``: ``file_name -> sha256`` of every shard written."""
    current: list[str] = []
    kept_old: list[str] = []
    not_loaded: list[str] = []
    unreachable: list[str] = []
    errors: dict[str, str] = {}
    pods = 0
    for probe in sorted(probes, key=lambda p: p.name):
        if not probe.ready:
            continue
        pods += 1
        if probe.files is None:
            unreachable.append(probe.name)
            errors[probe.name] = probe.error
        elif all(probe.files.get(f) == sha for f, sha in expected.items()):
            current.append(probe.name)
        elif any(f in probe.files for f in expected):
            kept_old.append(probe.name)
        else:
            not_loaded.append(probe.name)
    return DeliveryReport(pods, tuple(current), tuple(kept_old), tuple(not_loaded), tuple(unreachable), errors)


def _names(pods: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(pods) - limit} more" if len(pods) > limit else ""
    return ", ".join(pods[:limit]) + more


def delivered_condition(
    report: DeliveryReport, *, written_at: datetime | None, now: datetime, deadline_seconds: int, port: int, path: str
) -> Condition:
    """The ``Delivered`` condition: True/False/None (Unknown) with a reason and a message an on-call person can act
    on. ``written_at``: when the current rules were written (the deadline counts from there)."""
    if report.pods == 0:
        return Condition(DELIVERED, None, "NoFalcoPods", "no ready Falco pod of the target DaemonSet")
    known = report.pods - len(report.unreachable)
    if known == 0:
        return Condition(
            DELIVERED, None, "MetricsOff",
            f"no Falco pod serves {RULES_FILES_METRIC} on port {port} {path} (first error: "
            f"{next(iter(report.errors.values()), '?')}); set in the falcosecurity chart's values: {METRICS_VALUES!r}",
        )  # fmt: skip
    if not report.stale and not report.unreachable:
        return Condition(DELIVERED, True, "AllPodsCurrent", f"{report.pods}/{report.pods} Falco pods run the rules")
    summary = f"{len(report.current)}/{report.pods} Falco pods run the current rules"
    if written_at is not None and now < written_at + timedelta(seconds=deadline_seconds):
        return Condition(DELIVERED, None, "Propagating", f"{summary}; the kubelet refreshes the mounted ConfigMaps "
                         "within about a minute, then Falco reloads")  # fmt: skip
    if report.kept_old:
        return Condition(
            DELIVERED, False, "FalcoKeptOldRules",
            f"{summary}; Falco kept its old rules on {_names(report.kept_old)} (a hot reload Falco refused: see its "
            "log for 'hot restart failure'; or a subPath mount, which never updates)",
        )  # fmt: skip
    if report.not_loaded:
        return Condition(
            DELIVERED, False, "RulesNotLoaded",
            f"{summary}; {_names(report.not_loaded)} loaded none of this feed's rules files (mounts and "
            f"falco.rules_files: see falco-misp render --format falco-values)",
        )  # fmt: skip
    return Condition(DELIVERED, None, "MetricsPartial", f"{summary}; no metrics from {_names(report.unreachable)}")


# ------------------------------------------------------------------------------------------------- mounts
def _container(spec: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The Falco container of a pod spec (by name, else the first)."""
    containers = spec.get("containers") or []
    return next((c for c in containers if c.get("name") == name), containers[0] if containers else {})


def mounted_configmaps(template: Mapping[str, Any], container: str = "falco") -> dict[str, str]:
    """``ConfigMap name -> mount path`` of the ConfigMaps mounted into the Falco container of a pod template
    (``configMap`` volumes and ``projected`` ones; a ``subPath`` mount is left out: it never updates)."""
    spec = template.get("spec") or {}
    chosen = _container(spec, container)
    mounts = {m.get("name"): m.get("mountPath", "") for m in chosen.get("volumeMounts") or () if not m.get("subPath")}
    out: dict[str, str] = {}
    for volume in spec.get("volumes") or ():
        path = mounts.get(volume.get("name"))
        if not path:
            continue
        if isinstance(volume.get("configMap"), Mapping):
            out[str(volume["configMap"].get("name"))] = path
        for source in (volume.get("projected") or {}).get("sources") or ():
            if isinstance(source.get("configMap"), Mapping):
                out[str(source["configMap"].get("name"))] = path
    return out


def config_maps_at(template: Mapping[str, Any], directory: str = "/etc/falco", container: str = "falco") -> list[str]:
    """ConfigMaps mounted into the Falco container at or below ``directory`` (``subPath`` mounts included): where
    its falco.yaml comes from."""
    spec = template.get("spec") or {}
    mounts = _container(spec, container).get("volumeMounts") or ()
    names = {m.get("name") for m in mounts if _loaded_from(m.get("mountPath", ""), [directory])}
    return sorted(
        str(v["configMap"].get("name"))
        for v in spec.get("volumes") or ()
        if v.get("name") in names and isinstance(v.get("configMap"), Mapping)
    )


def rules_files_of(falco_yaml: str | None) -> tuple[str, ...] | None:
    """``rules_files`` of a falco.yaml (None when unknown)."""
    if not falco_yaml:
        return None
    try:
        doc = yaml.safe_load(falco_yaml)
    except yaml.YAMLError:
        return None
    files = doc.get("rules_files") if isinstance(doc, Mapping) else None
    return tuple(str(f) for f in files) if isinstance(files, list) else None


def unmounted_shards(
    shards: Sequence[str], template: Mapping[str, Any], rules_files: Sequence[str] | None
) -> list[str]:
    """The shard ConfigMaps Falco cannot load from this pod template: not mounted into the Falco container, or
    mounted at a directory its ``rules_files`` (when known) does not list."""
    mounted = mounted_configmaps(template)
    missing = []
    for name in shards:
        path = mounted.get(name)
        if path is None or (rules_files is not None and not _loaded_from(path, rules_files)):
            missing.append(name)
    return missing


def _loaded_from(path: str, rules_files: Sequence[str]) -> bool:
    path = path.rstrip("/")
    return any(path == f.rstrip("/") or path.startswith(f.rstrip("/") + "/") for f in rules_files)


def falco_values(feed: Feed, mount_path: str = MISP_RULES_DIR) -> str:
    """The falcosecurity chart values that mount every ConfigMap the feed may write (``maxShards``, each optional so
    Falco starts with any subset) and load them (``falco.rules_files``), with the metrics the operator reads."""
    prefix, shards = feed.config_map_prefix, feed.spec.falco.max_shards
    sources = [{"configMap": {"name": f"{prefix}-{i}", "optional": True}} for i in range(shards)]
    values = {
        "mounts": {
            "volumes": [{"name": f"{prefix}-rules", "projected": {"sources": sources}}],
            "volumeMounts": [{"name": f"{prefix}-rules", "mountPath": mount_path, "readOnly": True}],
        },
        # HotReload relies on Falco watching its files; with Restart the watch would reload a second time
        "falco": {
            "rules_files": [*DEFAULT_RULES_FILES, mount_path],
            "watch_config_files": feed.spec.falco.rollout is not Rollout.RESTART,
        },
        "metrics": {"enabled": True},
    }
    return yaml.safe_dump(values, sort_keys=False)
