"""Kubernetes objects for rendered rules (pure): the ConfigMaps the operator applies and the CLI can write.

The operator and ``falco-misp render --format configmaps`` share this, so the same feed gives the same objects.
Ownership is tracked by labels (feeds may live in another namespace than Falco: no cross-namespace owner refs).
"""

from __future__ import annotations

from typing import Any

from falco_misp.render import RulesBundle, Shard
from falco_misp.spec import API_GROUP, Feed

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
