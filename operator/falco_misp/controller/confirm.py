"""Confirmed delivery (a service): does every ready Falco pod of the target run the rules this feed wrote?

On a timer step, while the current rules propagate (and every ``recheck`` seconds once the answer is settled, to
see restarted or new nodes and pods that recovered), the Falco pods of the target DaemonSet(s) are listed, each
pod's metrics are read (:mod:`falco_misp.delivery.probe`), and the sha256 of every shard file Falco loaded is
compared with the ``falco-misp.io/shard-sha256`` annotation of the ConfigMap we wrote
(:mod:`falco_misp.delivery.confirm`). The result goes into ``status.delivery`` and the ``Delivered`` condition;
a pod that stays stale past ``falco.deliveryDeadline`` gets one Warning Event.

With ``delivery.mode: Rulesfiles`` (or ``OCI`` with a pinned Rulesfile) no pod is asked: the falco-operator's
``ResolvedRefs`` and ``Programmed`` conditions on each Rulesfile give the answer
(:mod:`falco_misp.delivery.rulesfiles`, issue 16); a plain OCI push has no Falco to ask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from falco_misp.conditions import Condition, Notice, build_conditions, condition, format_time, parse_time
from falco_misp.controller.sync import FeedObject, SyncOutcome, parse_feed_object
from falco_misp.delivery.apply import check_rulesfiles
from falco_misp.delivery.configmaps import ANNOTATION_SHARD_HASH, feed_labels
from falco_misp.delivery.confirm import DELIVERED, PodProbe, compare, delivered_condition
from falco_misp.delivery.kube import KubeClient, KubeError, PodInfo
from falco_misp.delivery.probe import probe_pods
from falco_misp.delivery.rollout import rollout_state
from falco_misp.delivery.rulesfiles import OCI_ROLLOUT_MODE as OCI_MODE
from falco_misp.delivery.rulesfiles import ROLLOUT_MODE as RULESFILES_MODE
from falco_misp.errors import SpecError
from falco_misp.feed.model import DeliveryMode, Rollout

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
    """The ``Delivered`` condition and ``status.delivery`` from every ready Falco pod; None when there is nothing to
    check (``rollout: None``, no rules applied, an invalid spec)."""
    try:
        feed = parse_feed_object(obj)
    except SpecError:
        return None
    falco = feed.spec.falco
    rules_hash = obj.status.get("rulesHash")
    if falco.delivery.mode is not DeliveryMode.CONFIG_MAPS:  # the falco-operator's answer, not the pods' metrics
        written_as = RULESFILES_MODE if falco.delivery.mode is DeliveryMode.RULESFILES else OCI_MODE
        pinned = written_as == RULESFILES_MODE or (obj.status.get("push") or {}).get("rulesfile")
        if not rules_hash or rollout_state(obj.status).mode != written_as or not pinned:
            return None  # none written as Rulesfiles yet, or an OCI push that no Rulesfile follows
        try:
            delivered, delivery = check_rulesfiles(kube, feed, obj.status, now)
        except KubeError:
            return None  # the next step tries again; the sync reports API trouble
        return _delivered_outcome(obj, delivered, delivery, now)
    if falco.rollout is Rollout.NONE or not rules_hash or obj.status.get("falcoNamespace") != falco.namespace:
        return None
    try:
        expected = {
            key: str((cm["metadata"].get("annotations") or {}).get(ANNOTATION_SHARD_HASH, ""))
            for cm in kube.list_configmaps(falco.namespace, feed_labels(feed))
            for key in cm.get("data") or {}
        }
        pods: list[PodInfo] = []
        for ds in kube.find_daemonsets(falco.namespace, falco.daemon_set, falco.selector):
            pods += kube.list_pods(falco.namespace, ds.match_labels) if ds.match_labels else []
    except KubeError:
        return None  # the next step tries again; the sync reports API trouble
    report = compare(expected, probe(sorted(set(pods), key=lambda p: p.name), falco.metrics_port, falco.metrics_path))
    written = parse_time(obj.status.get("rulesWrittenAt")) or parse_time(obj.status.get("lastSuccess"))
    delivered = delivered_condition(
        report, written_at=written, now=now, deadline_seconds=falco.delivery_deadline_seconds,
        port=falco.metrics_port, path=falco.metrics_path,
    )  # fmt: skip
    delivery = {
        "hash": rules_hash,
        "pods": report.pods,
        "podsCurrent": len(report.current),
        "stale": list(report.stale),
        "unreachable": list(report.unreachable),
        "lastCheck": format_time(now),
    }
    return _delivered_outcome(obj, delivered, delivery, now)


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
