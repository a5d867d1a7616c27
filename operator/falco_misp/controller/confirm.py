"""Confirmed delivery (a service): does every ready Falco pod of the target run the rules this feed wrote?

On a timer step, while the current rules propagate (and every ``recheck`` seconds once the answer is settled, to
see restarted or new nodes and pods that recovered), the Falco pods of the target DaemonSet(s) are listed, each
pod's metrics are read (:mod:`falco_misp.delivery.probe`), and the sha256 of every shard file Falco loaded is
compared with the ``falco-misp.io/shard-sha256`` annotation of the ConfigMap we wrote
(:mod:`falco_misp.delivery.confirm`). The result goes into ``status.delivery`` and the ``Delivered`` condition;
a pod that stays stale past ``falco.deliveryDeadline`` gets one Warning Event.

With ``delivery.mode: Rulesfiles`` (or ``OCI`` with a pinned Rulesfile) no pod is asked: the falco-operator's
``ResolvedRefs`` and ``Programmed`` conditions on each Rulesfile give the answer
(:mod:`falco_misp.delivery.rulesfiles`, issue 16); a plain OCI push has no Falco to ask (its falcoctl followers
report to no one: the sync sets ``Delivered`` Unknown, ``PushedToRegistry``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from falco_misp.conditions import Condition, Notice, build_conditions, condition, format_time, parse_time
from falco_misp.controller.sync import FeedObject, SyncOutcome, parse_feed_object
from falco_misp.delivery.apply import check_rulesfiles, written_at
from falco_misp.delivery.configmaps import ANNOTATION_SHARD_HASH, feed_labels
from falco_misp.delivery.confirm import DELIVERED, PodProbe, compare, delivered_condition
from falco_misp.delivery.kube import KubeClient, KubeError, PodInfo
from falco_misp.delivery.probe import probe_pods
from falco_misp.delivery.rollout import rollout_state
from falco_misp.delivery.rulesfiles import OCI_ROLLOUT_MODE as OCI_MODE
from falco_misp.delivery.rulesfiles import ROLLOUT_MODE as RULESFILES_MODE
from falco_misp.errors import SpecError
from falco_misp.feed.model import DeliveryMode, Feed, Rollout

Probe = Callable[[Sequence[PodInfo], int, str], list[PodProbe]]


def delivery_due(status: dict[str, Any], now: datetime, recheck_seconds: float) -> bool:
    """Whether a timer step should check the Falco pods now."""
    rules_hash = status.get("rulesHash")
    if not rules_hash:
        return False
    delivery = status.get("delivery") or {}
    last = parse_time(delivery.get("lastCheck"))
    # Every tick while new rules propagate; once the answer is settled (all current, stale past the deadline,
    # metrics off), every ``recheck_seconds``: a fleet's pods are not asked every tick for an unchanged answer.
    propagating = (condition(status, DELIVERED) or {}).get("reason") == "Propagating"
    settled = delivery.get("hash") == rules_hash and not propagating
    return last is None or not settled or now >= last + timedelta(seconds=recheck_seconds)


def check_delivery(kube: KubeClient, obj: FeedObject, now: datetime, probe: Probe = probe_pods) -> SyncOutcome | None:
    """The ``Delivered`` condition and ``status.delivery`` from every ready Falco pod, or from the falco-operator's
    Rulesfiles; None when there is nothing to check (``rollout: None``, no rules applied, an invalid spec, a plain
    OCI push: the sync says what can be said of that) or the API failed (the next step tries again; the sync reports
    API trouble)."""
    try:
        feed = parse_feed_object(obj)
    except SpecError:
        return None
    if not obj.status.get("rulesHash"):
        return None
    try:
        if feed.spec.falco.delivery.mode is DeliveryMode.CONFIG_MAPS:
            checked = _check_pods(kube, feed, obj.status, now, probe)
        else:  # the falco-operator's answer, not the pods' metrics
            checked = _check_rulesfiles(kube, feed, obj.status, now)
    except KubeError:
        return None
    return None if checked is None else _delivered_outcome(obj, *checked, now)


def _check_rulesfiles(
    kube: KubeClient, feed: Feed, status: Mapping[str, Any], now: datetime
) -> tuple[Condition, dict[str, Any]] | None:
    """From the Rulesfiles written (mode Rulesfiles, or the one pinned to an OCI push)."""
    written_as = RULESFILES_MODE if feed.spec.falco.delivery.mode is DeliveryMode.RULESFILES else OCI_MODE
    pinned = written_as == RULESFILES_MODE or (status.get("push") or {}).get("rulesfile")
    if rollout_state(status).mode != written_as or not pinned:
        return None  # none written as Rulesfiles yet, or an OCI push that no Rulesfile follows
    return check_rulesfiles(kube, feed, status, now)


def _check_pods(
    kube: KubeClient, feed: Feed, status: Mapping[str, Any], now: datetime, probe: Probe
) -> tuple[Condition, dict[str, Any]] | None:
    """From the metrics of every ready Falco pod of the target DaemonSet(s) (mode ConfigMaps)."""
    falco = feed.spec.falco
    if falco.rollout is Rollout.NONE or status.get("falcoNamespace") != falco.namespace:
        return None
    expected = {
        key: str((cm["metadata"].get("annotations") or {}).get(ANNOTATION_SHARD_HASH, ""))
        for cm in kube.list_configmaps(falco.namespace, feed_labels(feed))
        for key in cm.get("data") or {}
    }
    pods: list[PodInfo] = []
    for ds in kube.find_daemonsets(falco.namespace, falco.daemon_set, falco.selector):
        pods += kube.list_pods(falco.namespace, ds.match_labels) if ds.match_labels else []
    report = compare(expected, probe(sorted(set(pods), key=lambda p: p.name), falco.metrics_port, falco.metrics_path))
    delivered = delivered_condition(
        report, written_at=written_at(status), now=now, deadline_seconds=falco.delivery_deadline_seconds,
        port=falco.metrics_port, path=falco.metrics_path,
    )  # fmt: skip
    delivery = {
        "hash": status.get("rulesHash"),
        "pods": report.pods,
        "podsCurrent": len(report.current),
        "stale": list(report.stale),
        "unreachable": list(report.unreachable),
        "lastCheck": format_time(now),
    }
    return delivered, delivery


def _delivered_outcome(obj: FeedObject, delivered: Condition, delivery: dict[str, Any], now: datetime) -> SyncOutcome:
    """``status.delivery`` and the ``Delivered`` condition written, an Event when it turns False or True."""
    status = dict(obj.status)
    status["delivery"] = delivery
    status["conditions"] = build_conditions(obj.status.get("conditions"), [delivered], now, obj.generation)
    before = condition(obj.status, DELIVERED) or {}
    notices: tuple[Notice, ...] = ()
    if delivered.status is False and (before.get("status"), before.get("reason")) != ("False", delivered.reason):
        notices = (Notice("Warning", delivered.reason, delivered.message),)
    elif delivered.status is True and before.get("status") != "True":
        notices = (Notice("Normal", "RulesDelivered", delivered.message),)
    return SyncOutcome(status=status, notices=notices, synced=False)
