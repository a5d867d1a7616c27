"""The ConfigMaps that carry a feed's rules (pure): labels, manifests, and the plan that makes the cluster match.

Ownership is tracked by labels (feeds may live in another namespace than Falco: no cross-namespace owner refs).
A ConfigMap is rewritten only when its data, or a label or annotation we set, differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from falco_misp.feed.model import API_GROUP, Feed
from falco_misp.rendering.shards import RulesBundle, Shard

MANAGED_BY = "falco-misp-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_FEED = f"{API_GROUP}/feed"
LABEL_FEED_NAMESPACE = f"{API_GROUP}/feed-namespace"
ANNOTATION_RULES_HASH = f"{API_GROUP}/rules-hash"
ANNOTATION_SHARD_HASH = f"{API_GROUP}/shard-sha256"


def owner_labels(name: str, namespace: str) -> dict[str, str]:
    """Labels identifying every object of the feed ``namespace/name`` (usable when its spec no longer parses)."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_FEED: name, LABEL_FEED_NAMESPACE: namespace}


def feed_labels(feed: Feed) -> dict[str, str]:
    """Labels identifying every object a feed owns."""
    return owner_labels(feed.name, feed.namespace)


def build_configmap(feed: Feed, bundle: RulesBundle, shard: Shard) -> dict[str, Any]:
    """The ConfigMap holding one shard, keyed by its file name (unique across feeds in a projected volume)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": shard.name,
            "namespace": feed.spec.falco.namespace,
            "labels": feed_labels(feed),
            "annotations": {ANNOTATION_RULES_HASH: bundle.sha256, ANNOTATION_SHARD_HASH: shard.sha256},
        },
        "data": {shard.filename: shard.content.decode()},
    }


def build_configmaps(feed: Feed, bundle: RulesBundle) -> list[dict[str, Any]]:
    """One ConfigMap per shard, in index order."""
    return [build_configmap(feed, bundle, shard) for shard in bundle.shards]


# ------------------------------------------------------------------------------------------- ConfigMap plan
@dataclass(frozen=True)
class ConfigMapPlan:
    """What to write so the namespace holds exactly the desired ConfigMaps of one feed."""

    create: tuple[Mapping[str, Any], ...] = ()
    """Whole ConfigMaps to create."""
    update: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    """(name, merge patch) for owned ConfigMaps whose bytes differ."""
    delete: tuple[str, ...] = ()
    """Owned ConfigMaps no longer rendered (surplus shards, an old prefix)."""
    unchanged: tuple[str, ...] = ()
    """Owned ConfigMaps already holding the desired bytes."""
    previous: Mapping[str, str] = field(default_factory=dict)
    """What the owned ConfigMaps held before (``<name>/<key>`` -> text): the rules a change replaces (issue 17)."""

    @property
    def writes(self) -> int:
        """Number of API writes the plan needs."""
        return len(self.create) + len(self.update) + len(self.delete)


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _contains(have: Mapping[str, Any] | None, want: Mapping[str, Any]) -> bool:
    have = have or {}
    return all(have.get(k) == v for k, v in want.items())


def plan_configmaps(desired: Sequence[Mapping[str, Any]], owned: Sequence[Mapping[str, Any]]) -> ConfigMapPlan:
    """Compare the rendered ConfigMaps with the ones this feed owns (found by its labels).

    A ConfigMap is rewritten only when its data, or a label or annotation we set, differs; labels and
    annotations others added are left alone. Owned ConfigMaps not rendered any more are deleted.
    """
    existing = {_name(o): o for o in owned}
    create: list[Mapping[str, Any]] = []
    update: list[tuple[str, Mapping[str, Any]]] = []
    unchanged: list[str] = []
    for want in desired:
        name = _name(want)
        have = existing.get(name)
        if have is None:
            create.append(want)
            continue
        meta_want, meta_have = want.get("metadata", {}), have.get("metadata", {})
        data_want: Mapping[str, str] = want.get("data", {})
        data_have: Mapping[str, str] = have.get("data") or {}
        same = (
            dict(data_have) == dict(data_want)
            and not have.get("binaryData")
            and _contains(meta_have.get("labels"), meta_want.get("labels", {}))
            and _contains(meta_have.get("annotations"), meta_want.get("annotations", {}))
        )
        if same:
            unchanged.append(name)
            continue
        data_patch: dict[str, str | None] = {k: None for k in data_have if k not in data_want}
        data_patch.update(data_want)
        patch: dict[str, Any] = {
            "metadata": {
                "labels": dict(meta_want.get("labels", {})),
                "annotations": dict(meta_want.get("annotations", {})),
            },
            "data": data_patch,
        }
        if have.get("binaryData"):
            patch["binaryData"] = None
        update.append((name, patch))
    wanted = {_name(w) for w in desired}
    delete = sorted(name for name in existing if name not in wanted)
    previous = {f"{name}/{k}": v for name, o in existing.items() for k, v in (o.get("data") or {}).items()}
    return ConfigMapPlan(tuple(create), tuple(update), tuple(delete), tuple(unchanged), previous)
