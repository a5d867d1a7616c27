"""One sync of one MispFeed (a service): secret -> fetch and render -> drop check -> ConfigMaps -> rollout.

:func:`sync_feed` (fetch and apply) and :func:`rollout_feed` (only a pending rollout) return an outcome with the
complete new status, the Events to post and whose fault a failure is; the handlers map that to kopf. Nothing here
raises for an expected failure. The rules never get lost: any failure before the ConfigMaps are written leaves the
applied ones in place; ``Ready`` speaks of the current spec generation, ``Serving`` of whose rules Falco has.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from falco_misp.conditions import (
    CURRENT_GENERATION,
    DEGRADED,
    PREVIOUS_GENERATION,
    READY,
    REPORTING,
    SERVING,
    Condition,
    Notice,
    build_conditions,
    condition,
    format_time,
)
from falco_misp.controller.allow_lists import with_allow_lists
from falco_misp.controller.secrets import ResolvedSecrets, resolve_secrets
from falco_misp.controller.servers import ServerZmq
from falco_misp.controller.status import AppliedRules, applied_fields, applied_total, delivery_target, record_change
from falco_misp.delivery.apply import (
    RolloutResult,
    apply_configmaps,
    apply_rulesfiles,
    publish_oci,
    roll_out,
    unmounted,
    withdraw_rulesfiles,
)
from falco_misp.delivery.configmaps import ConfigMapPlan, feed_labels
from falco_misp.delivery.guard import check_drop
from falco_misp.delivery.kube import KubeClient, KubeError
from falco_misp.delivery.rollout import (
    RolloutState,
    rollout_fields,
    rollout_state,
)
from falco_misp.delivery.rulesfiles import DELIVERED
from falco_misp.delivery.rulesfiles import OCI_ROLLOUT_MODE as OCI_MODE
from falco_misp.delivery.rulesfiles import ROLLOUT_MODE as RULESFILES_MODE
from falco_misp.errors import RegistryError, RenderError, SourceError, SpecError
from falco_misp.feed.model import API_GROUP, API_VERSION, KIND, DeliveryMode, Feed
from falco_misp.feed.parse import parse_feed
from falco_misp.feed.policy import (
    POLICY_REASONS,
    Policy,
    check_feed,
    check_rendered,
    source_urls,
    within_ceilings,
)
from falco_misp.pipeline import IncrementalRefresh, fetch_and_render, refresh_and_render
from falco_misp.rendering.summary import cidr_warning
from falco_misp.reporting.index import IndexBuilder
from falco_misp.reporting.matching import MispTarget, ReportingFeed
from falco_misp.sources.locations import DEFAULT_MAX_RESPONSE_BYTES, FetchContext
from falco_misp.sources.misp import ca_file
from falco_misp.values import safe_url

log = logging.getLogger(__name__)

SYNCED = "Synced"
CONFLICT = "conflict"
"""Status key: the ConfigMap in the way (``{configMap: namespace/name, fingerprint}``) while a conflict lasts."""


@dataclass(frozen=True)
class FeedObject:
    """What a sync reads from the MispFeed object."""

    name: str
    """metadata.name."""
    namespace: str
    """metadata.namespace."""
    generation: int
    """metadata.generation (the spec version)."""
    spec: Mapping[str, Any]
    """The raw spec."""
    status: Mapping[str, Any]
    """The status as last written (the handler passes the freshest copy it has)."""


class Failure(StrEnum):
    """Whose fault a failed sync is, hence how it is retried."""

    NONE = "None"
    """Nothing to retry (the sync succeeded, or held a drop back and waits for the next refresh)."""
    TEMPORARY = "Temporary"
    """The source or the API failed: retry with backoff."""
    PERMANENT = "Permanent"
    """The spec must change: no retry until it does (the refresh timer still tries)."""
    WAIT = "Wait"
    """Someone else's object is in the way (``ConfigMapConflict``): no retry until the spec or that object changes
    (the timer checks the object, cheaply, each tick)."""


@dataclass(frozen=True)
class SyncOutcome:
    """What a sync did."""

    status: Mapping[str, Any]
    """The complete new status."""
    failure: Failure = Failure.NONE
    """Whether and how to retry."""
    message: str = ""
    """Why it failed (for the kopf error), secret-free."""
    notices: tuple[Notice, ...] = ()
    """Events to post."""
    secret_fingerprint: str | None = None
    """A digest of the Secret values used (kept in memory only, to notice a Secret change)."""
    writes: int = 0
    """Writes made to ConfigMaps and DaemonSets."""
    reporting: ReportingFeed | None = None
    """Alert matching for this feed (its provenance index and MISP target) when ``applied``."""
    applied: bool = False
    """Rules were applied (a sync, not a rollout, that got past the source and the drop check): ``reporting`` now
    replaces what alert matching knew of the feed (None: reporting off)."""
    synced: bool = True
    """A sync (a fetch), not only a rollout of rules already applied (a timer step): what metrics count as syncs."""
    allow_lists: Mapping[str, str | None] | None = None
    """The MispAllowLists the sync read (name -> spec digest, None: missing); None: none read. The timer syncs
    again when the watch reports one of them changed (:mod:`falco_misp.controller.allow_lists`)."""
    server_zmq: ServerZmq | None = None
    """The ZeroMQ publisher and credentials of the server resource the sync resolved (``serverRef``, issue 15), for
    live updates; None: none (or the server refused the feed)."""


# ------------------------------------------------------------------------------------------------- helpers
def parse_feed_object(obj: FeedObject) -> Feed:
    """Parse the spec as the CLI does, plus what only the operator needs (the auth key Secret)."""
    feed = parse_feed(
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": obj.name, "namespace": obj.namespace},
            "spec": dict(obj.spec),
        }
    )
    source = feed.spec.source
    if source.misp is not None and source.misp.auth_key is None and source.misp.server_ref is None:
        raise SpecError("spec.source.misp.authKeySecretRef", "is required: the operator reads the API key from it")
    for field_path, url in source_urls(feed):  # issue 15: credentials go in a Secret, never in a shown URL
        if "@" in urlsplit(url).netloc:
            raise SpecError(field_path, f"{safe_url(url)}: credentials in the URL are refused by the operator (it "
                            "shows URLs in status and Events); put them in a Secret (headersSecretRef)")  # fmt: skip
    location = source.misp_feed or source.file or (source.text.location if source.text else None)
    if location is not None and urlsplit(location.url).scheme not in ("http", "https"):
        # A feed author must not make the operator read files from its own pod (service account token...).
        raise SpecError(f"spec.source.{source.kind}.url", "the operator reads http(s) URLs only; local paths are for "
                        "`falco-misp render`")  # fmt: skip
    return feed


def _serving(status: Mapping[str, Any], generation: int) -> Condition:
    """Which spec generation's rules Falco's ConfigMaps hold (Ready speaks only of the current generation)."""
    applied = status.get("appliedGeneration")
    if not status.get("rulesHash"):
        return Condition(SERVING, False, "NoRules", "no rules applied yet")
    if applied == generation:
        return Condition(SERVING, True, CURRENT_GENERATION, f"the rules of spec generation {generation} are applied")
    return Condition(
        SERVING,
        True,
        PREVIOUS_GENERATION,
        f"the rules of spec generation {applied} still serve until generation {generation} syncs",
    )


def _finish(
    obj: FeedObject,
    now: datetime,
    *,
    ready: Condition,
    degraded: Condition,
    message: str,
    updates: Mapping[str, Any] | None = None,
    extra: tuple[Condition, ...] = (),
    remove: tuple[str, ...] = (),
) -> dict[str, Any]:
    status = dict(obj.status)
    status.pop(CONFLICT, None)  # set again below when the conflict persists
    status.update(updates or {})
    status["observedGeneration"] = obj.generation
    status["lastAttempt"] = format_time(now)
    status["message"] = message
    current = [ready, degraded, _serving(status, obj.generation), *extra]
    status["conditions"] = build_conditions(obj.status.get("conditions"), current, now, obj.generation, remove=remove)
    return status


def _kept(obj: FeedObject) -> str:
    total = (obj.status.get("indicators") or {}).get("total", 0)
    since = obj.status.get("lastSuccess", "?")
    return f"keeping the {total} indicators applied at {since}"


def _failed(
    obj: FeedObject,
    now: datetime,
    reason: str,
    detail: str,
    *,
    failure: Failure,
    fingerprint: str | None = None,
    updates: Mapping[str, Any] | None = None,
) -> SyncOutcome:
    """Nothing written: the applied ConfigMaps stay; Degraded says why, Ready whether they are this spec's."""
    has_rules = bool(obj.status.get("rulesHash"))
    current_spec = obj.status.get("appliedGeneration") == obj.generation
    if reason == "InvalidSpec" or reason in POLICY_REASONS:  # the spec (or the policy) must change
        ready = Condition(READY, False, reason, detail)
    elif has_rules and current_spec:
        ready = Condition(READY, True, "LastGoodRules", f"{_kept(obj)} (latest attempt failed: {reason})")
    elif has_rules:  # a changed spec never synced: the rules in Falco are an older spec's (condition Serving)
        gen = obj.status.get("appliedGeneration")
        ready = Condition(READY, False, reason, f"spec generation {obj.generation} not applied yet (generation "
                          f"{gen}'s rules still serve): {detail}")  # fmt: skip
    else:
        ready = Condition(READY, False, reason, f"no rules applied yet: {detail}")
    message = f"{detail}; {_kept(obj)}" if has_rules else detail
    degraded = Condition(DEGRADED, True, reason, message)
    status = _finish(obj, now, ready=ready, degraded=degraded, message=message, updates=updates)
    return SyncOutcome(
        status=status,
        failure=failure,
        message=f"{reason}: {detail}",
        notices=(Notice("Warning", reason, message),),
        secret_fingerprint=fingerprint,
    )


# ------------------------------------------------------------------------------------------------ services
@dataclass(frozen=True)
class SyncOptions:
    """How the operator runs, as far as one sync cares (operator-wide, not per feed)."""

    provenance: bool = False
    """Alerts are matched (``falco-misp run --alerts-port``): for a feed with ``spec.reporting`` on, index where each
    fetched value came from (``outcome.reporting``)."""
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    """The largest answer read from a source (``--max-response-bytes``)."""
    key_problem: str | None = None
    """Why MISP refuses this feed's reports (its API key was rejected), from the sightings reporter; None: fine."""
    incremental: IncrementalRefresh | None = None
    """This feed's incremental MISP refresh state, kept by the caller between syncs (issue 14); None: full fetch."""
    policy: Policy | None = None
    """The administrator's policy (issue 15; the operator always passes one, ``Tuning.policy``): a feed outside it
    is refused before anything is fetched, rules over its ceilings before anything is written; every connection is
    checked against its egress rules. None: no restriction."""


def sync_feed(kube: KubeClient, obj: FeedObject, now: datetime, options: SyncOptions = SyncOptions()) -> SyncOutcome:
    """Fetch, render and apply one feed; the outcome holds the new status whatever happened.

    The ``Reporting`` condition says whether a feed that asks for reporting gets it.
    """
    try:
        feed = parse_feed_object(obj)
    except SpecError as exc:
        return _failed(obj, now, "InvalidSpec", str(exc), failure=Failure.PERMANENT)
    outcome = _sync_parsed(kube, obj, feed, now, options)
    status = dict(outcome.status)
    status["conditions"] = with_reporting(status, feed, now, obj.generation, options)
    return dataclasses.replace(outcome, status=status)


def reporting_condition(feed: Feed, options: SyncOptions) -> Condition | None:
    """Whether the alerts of a feed with ``spec.reporting`` on can reach MISP (None: reporting off)."""
    if not feed.spec.reporting.enabled:
        return None
    if not options.provenance:
        return Condition(
            REPORTING, False, "AlertEndpointOff",
            "spec.reporting is on but the operator runs without --alerts-port (Helm chart: alerts.enabled=true): "
            "no Falco alert of this feed reaches MISP",
        )  # fmt: skip
    if options.key_problem:
        return Condition(REPORTING, False, "KeyRejected", options.key_problem)
    return Condition(REPORTING, True, "AlertEndpointOn", "Falco alerts posted to the operator are reported to MISP")


def with_reporting(
    status: Mapping[str, Any], feed: Feed, now: datetime, generation: int, options: SyncOptions
) -> list[dict[str, Any]]:
    """The conditions with ``Reporting`` as ``options`` make it (removed when reporting is off)."""
    reporting = reporting_condition(feed, options)
    return build_conditions(
        status.get("conditions"), [reporting] if reporting else [], now, generation,
        remove=() if reporting else (REPORTING,),
    )  # fmt: skip


def refresh_reporting(obj: FeedObject, now: datetime, options: SyncOptions) -> SyncOutcome | None:
    """A timer step between syncs: the ``Reporting`` condition updated (MISP began or stopped refusing the key);
    None when it is unchanged."""
    try:
        feed = parse_feed_object(obj)
    except SpecError:
        return None
    wanted = reporting_condition(feed, options)
    have = condition(obj.status, REPORTING)
    if wanted is None or (
        have is not None and (have.get("status"), have.get("reason")) == (str(wanted.status), wanted.reason)
    ):
        return None
    status = {**obj.status, "conditions": with_reporting(obj.status, feed, now, obj.generation, options)}
    return SyncOutcome(status=status, synced=False)


def _sync_parsed(kube: KubeClient, obj: FeedObject, feed: Feed, now: datetime, options: SyncOptions) -> SyncOutcome:
    if options.policy is not None:  # limits the spec leaves unset take the ceilings; set above them: refused
        feed = within_ceilings(options.policy, feed, dict(obj.spec.get("limits") or {}))
    refused = check_feed(options.policy, feed) if options.policy is not None else None
    if refused is not None:  # outside the administrator's policy (issue 15): no Secret read, nothing fetched
        return _failed(obj, now, refused.reason, refused.message, failure=Failure.PERMANENT)
    try:  # a serverRef resolved (and the namespace checked) before anything is fetched (issue 15)
        secrets = resolve_secrets(kube, feed)
    except KubeError as exc:
        return _failed(obj, now, exc.reason, exc.message, failure=Failure.TEMPORARY, fingerprint=f"error:{exc.reason}")
    if secrets.server is not None:
        source = dataclasses.replace(feed.spec.source, misp=secrets.server)
        feed = dataclasses.replace(feed, spec=dataclasses.replace(feed.spec, source=source))
        refused = check_feed(options.policy, feed) if options.policy is not None else None  # the server's URL too
        if refused is not None:
            return _failed(obj, now, refused.reason, refused.message, failure=Failure.PERMANENT)
    try:  # the MispAllowLists it names, merged in before anything is fetched (the CLI's --allow-list merge)
        read = with_allow_lists(kube, feed)
    except KubeError as exc:
        return _failed(obj, now, exc.reason, exc.message, failure=Failure.TEMPORARY, fingerprint=secrets.fingerprint)
    if read.reason is not None:  # nothing written; the watch syncs again once the list is created or fixed
        outcome = _failed(obj, now, read.reason, read.detail, failure=Failure.WAIT, fingerprint=secrets.fingerprint)
    else:
        outcome = _sync_merged(kube, obj, read.feed, now, options=options, secrets=secrets)
    outcome = dataclasses.replace(outcome, server_zmq=secrets.zmq)
    return dataclasses.replace(outcome, allow_lists=read.seen) if read.seen else outcome


def _sync_merged(
    kube: KubeClient, obj: FeedObject, feed: Feed, now: datetime, *, options: SyncOptions, secrets: ResolvedSecrets
) -> SyncOutcome:
    fingerprint = secrets.fingerprint
    try:
        with ca_file(secrets.ca_bundle) as ca_path:
            ctx = FetchContext(
                now=int(now.timestamp()),
                auth_key=secrets.auth_key,
                ca_bundle=ca_path,
                max_response_bytes=options.max_response_bytes,
                policy=options.policy,
                headers=secrets.headers,
            )
            index = _index_builder(feed, secrets) if options.provenance else None
            observe = index.add if index is not None else None
            if options.incremental is not None:  # only what MISP changed since the last sync (issue 14)
                result = refresh_and_render(feed, ctx, options.incremental, observe=observe)
            else:
                result = fetch_and_render(feed, ctx, observe=observe)
    except SourceError as exc:
        return _failed(
            obj, now, "SourceFailed", f"{exc.reason}: {exc.message}", failure=Failure.TEMPORARY, fingerprint=fingerprint
        )
    except RenderError as exc:  # the data outgrew a bound: a later fetch may fit again, retry with backoff
        return _failed(obj, now, "RenderFailed", str(exc), failure=Failure.TEMPORARY, fingerprint=fingerprint)
    except Exception as exc:  # a bug or an unmapped client error: keep the rules, report the type only
        log.exception("feed %s/%s: render failed", obj.namespace, obj.name)
        detail = f"unexpected {type(exc).__name__} while fetching"
        return _failed(obj, now, "InternalError", detail, failure=Failure.TEMPORARY, fingerprint=fingerprint)

    indicators = result.indicators
    over = check_rendered(options.policy, indicators.counts(), indicators.total) if options.policy else None
    if over is not None:  # the policy's ceilings bound what is written, whatever the spec asked
        return _failed(obj, now, over.reason, over.message, failure=Failure.NONE, fingerprint=fingerprint)
    drop = check_drop(applied_total(obj.status, obj.generation), indicators.total, feed.spec.limits.max_drop_percent)
    if not drop.allowed:
        outcome = _failed(obj, now, "DropLimitExceeded", drop.message, failure=Failure.NONE, fingerprint=fingerprint)
        return outcome

    try:
        missing: Mapping[str, Sequence[str]] = {}
        delivered: tuple[Condition, ...] = ()  # set here only when nothing can be checked later (a plain OCI push)
        replaced: Mapping[str, str | bytes] | None = None  # the rules files this sync replaced (for lastChange)
        push: dict[str, Any] | None = None
        mode = feed.spec.falco.delivery.mode
        if mode is DeliveryMode.RULESFILES:  # the falco-operator loads them: no DaemonSet
            written = apply_rulesfiles(kube, feed, result.bundle, obj.status)
            plan = written.plan.summary()
            rolled = RolloutResult(RolloutState(mode=RULESFILES_MODE), notices=written.notices)
        elif mode is DeliveryMode.OCI:  # a registry every falcoctl follows (and a pinned Rulesfile): no DaemonSet
            with ca_file(secrets.registry_ca) as registry_ca:
                published = publish_oci(
                    kube, feed, result.bundle, obj.status, auth=secrets.registry_auth, ca_bundle=registry_ca
                )
            plan, push = ConfigMapPlan(), published.fields(now)  # no ConfigMap: registry and Rulesfile writes below
            replaced = published.previous  # what the registry served before (None: nothing pushed, or unknown)
            delivered = tuple(c for c in (published.delivered(),) if c is not None)
            writes = published.result.writes + published.rulesfile_writes
            rolled = RolloutResult(RolloutState(mode=OCI_MODE), notices=published.notices, writes=writes)
        else:
            pinned = (obj.status.get("push") or {}).get("rulesfile")
            if rollout_state(obj.status).mode == RULESFILES_MODE or pinned:  # back from Rulesfiles: those first
                gone = str(obj.status.get("falcoNamespace") or feed.spec.falco.namespace)
                withdraw_rulesfiles(kube, gone, feed_labels(feed), configmaps=False)
            plan = apply_configmaps(kube, feed, result.bundle, obj.status)
            previous = rollout_state(obj.status)
            moved = obj.status.get("falcoNamespace") not in (None, feed.spec.falco.namespace)
            if moved or previous.mode in (RULESFILES_MODE, OCI_MODE):
                previous = RolloutState(mode=previous.mode)  # another Falco: it never had these rules, roll now
            rolled = roll_out(kube, feed, result.bundle.sha256, previous, now)
            missing = unmounted(kube, [shard.name for shard in result.bundle.shards], rolled.daemon_sets)
    except KubeError as exc:
        if exc.reason == "ConfigMapConflict" and exc.subject is not None:
            return _conflict(kube, obj, now, exc, fingerprint=fingerprint)
        return _failed(obj, now, exc.reason, exc.message, failure=Failure.TEMPORARY, fingerprint=fingerprint)
    except RegistryError as exc:  # the registry keeps serving the last good push (status.push says which)
        return _failed(obj, now, exc.reason, exc.message, failure=Failure.TEMPORARY, fingerprint=fingerprint)

    bundle = result.bundle
    warning = cidr_warning(feed, indicators)
    applied = AppliedRules(
        fetched=result.fetched,
        total=indicators.total,
        by_kind=indicators.counts(),
        rejected=indicators.rejected,
        rules_hash=bundle.sha256,
        config_maps=tuple(s.name for s in bundle.shards) if push is None else (),
        namespace=feed.spec.falco.namespace,
        warnings=(warning,) if warning else (),
        capped=bundle.capped,
    )
    summary = f"{indicators.total} indicators in {len(bundle.shards)} ConfigMap(s), rules hash {bundle.sha256[:12]}"
    if bundle.capped:
        summary += f" ({bundle.capped} oldest left out: no more fit in falco.maxShards)"
    notices: list[Notice] = []
    if plan.writes:
        notices.append(
            Notice(
                "Normal",
                "RulesApplied",
                f"{summary}: created {len(plan.create)}, updated {len(plan.update)}, deleted {len(plan.delete)}",
            )
        )
    if push is None and plan.writes:  # ConfigMaps (either mode): what they held, as read from the cluster
        replaced = plan.previous
    change = record_change(feed, indicators, replaced, now)  # added/removed against the rules files replaced
    notices.extend(change.notices)
    notices.extend(rolled.notices)
    ready = Condition(READY, True, "RulesApplied", summary)
    problem = rolled.problem or _mount_problem(feed, missing)
    if problem is not None:
        reason, detail = problem
        degraded = Condition(DEGRADED, True, reason, detail)
        notices.append(Notice("Warning", reason, detail))
        message = f"{summary}; {detail}"
    else:
        degraded = Condition(DEGRADED, False, SYNCED, "the latest sync succeeded")
        message = summary
        if rolled.state.pending and rolled.state.not_before is not None:
            message += f"; rollout deferred until {format_time(rolled.state.not_before)}"
    updates = applied_fields(applied, obj.generation, now) | change.fields
    updates["rollout"] = rollout_fields(rolled.state)
    if push is not None:
        updates["push"] = push
    if plan.writes or rolled.writes or not obj.status.get("rulesWrittenAt"):  # the delivery deadline counts from here
        updates["rulesWrittenAt"] = format_time(now)
    # Another way to Falco (mode, namespace, registry, pinned Rulesfile): the old Delivered says nothing of it.
    moved = delivery_target(obj.status) != delivery_target({**updates, "push": push})
    status = _finish(
        obj, now, ready=ready, degraded=degraded, message=message, updates=updates, extra=delivered,
        remove=(DELIVERED,) if moved else (),
    )  # fmt: skip
    if moved:
        status.pop("delivery", None)  # the next delivery check answers for the new way
    if push is None:
        status.pop("push", None)  # no (longer a) registry: its Rulesfile went above
    return SyncOutcome(
        status=status,
        notices=tuple(notices),
        secret_fingerprint=fingerprint,
        writes=plan.writes + rolled.writes,
        reporting=_reporting_feed(feed, secrets, index, options.policy),
        applied=True,
    )


def _mount_problem(feed: Feed, missing: Mapping[str, Sequence[str]]) -> tuple[str, str] | None:
    """``ShardsNotMounted`` when a Falco DaemonSet cannot load some of the shards just written."""
    if not missing:
        return None
    namespace = feed.spec.falco.namespace
    where = "; ".join(f"DaemonSet {namespace}/{ds}: {', '.join(names)}" for ds, names in missing.items())
    return "ShardsNotMounted", (
        f"Falco cannot load these rules ConfigMaps (not mounted into the falco container, or outside its "
        f"rules_files): {where}; `falco-misp render --feed FEED --format falco-values` prints the chart values "
        f"that mount all {feed.spec.falco.max_shards}"
    )


def _conflict(
    kube: KubeClient, obj: FeedObject, now: datetime, exc: KubeError, *, fingerprint: str | None
) -> SyncOutcome:
    """A foreign ConfigMap holds one of our names: the user's to resolve; wait for it (or the spec) to change."""
    assert exc.subject is not None
    namespace, name = exc.subject
    try:
        seen = kube.configmap_fingerprint(namespace, name)
    except KubeError:
        seen = None  # unknown: the next tick looks again and syncs
    record = {"configMap": f"{namespace}/{name}", "fingerprint": seen or ""}
    return _failed(
        obj, now, exc.reason, exc.message, failure=Failure.WAIT, fingerprint=fingerprint, updates={CONFLICT: record}
    )


# ------------------------------------------------------------------------- alert provenance (issue 5)
def _index_builder(feed: Feed, secrets: ResolvedSecrets) -> IndexBuilder | None:
    """An index of the fetched attributes, when the feed reports alerts to its MISP server."""
    if not feed.spec.reporting.enabled or feed.spec.source.misp is None or not secrets.auth_key:
        return None
    return IndexBuilder(feed)


def _reporting_feed(
    feed: Feed, secrets: ResolvedSecrets, index: IndexBuilder | None, policy: Policy | None = None
) -> ReportingFeed | None:
    if index is None or feed.spec.source.misp is None or not secrets.auth_key:
        return None
    built = index.build()
    log.info(
        "feed %s/%s: %d attributes indexed for alert matching (~%d KiB)",
        feed.namespace, feed.name, built.attributes, built.approx_bytes() // 1024,
    )  # fmt: skip
    target = MispTarget(
        server=feed.spec.source.misp, auth_key=secrets.auth_key, ca_bundle=secrets.ca_bundle, policy=policy
    )
    return ReportingFeed(feed=feed, index=built, target=target)


def rollout_feed(kube: KubeClient, obj: FeedObject, now: datetime) -> SyncOutcome | None:
    """Only the pending rollout of rules already applied (deferred, or the DaemonSet was missing).

    None when there is nothing to do (invalid spec, nothing applied). The sync's other findings stay as they are:
    only a ``DaemonSetNotFound`` Degraded condition is set or cleared here.
    """
    rules_hash = obj.status.get("rulesHash")
    if not isinstance(rules_hash, str) or not rules_hash:
        return None
    try:
        feed = parse_feed_object(obj)
    except SpecError:
        return None
    try:
        rolled = roll_out(kube, feed, rules_hash, rollout_state(obj.status), now)
    except KubeError as exc:
        return SyncOutcome(
            status=obj.status, failure=Failure.TEMPORARY, message=f"{exc.reason}: {exc.message}", synced=False
        )
    status = dict(obj.status)
    status["rollout"] = rollout_fields(rolled.state)
    degraded = condition(obj.status, DEGRADED)
    reason = degraded.get("reason") if degraded else None
    if reason in (None, SYNCED, "DaemonSetNotFound"):
        current = (
            Condition(DEGRADED, True, *rolled.problem)
            if rolled.problem
            else Condition(DEGRADED, False, SYNCED, "the latest sync succeeded")
        )
        ready_raw = condition(obj.status, READY) or {}
        ready = Condition(
            READY,
            ready_raw.get("status") == "True",
            str(ready_raw.get("reason", "RulesApplied")),
            str(ready_raw.get("message", "")),
        )
        status["conditions"] = build_conditions(obj.status.get("conditions"), [ready, current], now, obj.generation)
    notices = rolled.notices
    if rolled.problem is not None and reason != "DaemonSetNotFound":
        notices += (Notice("Warning", *rolled.problem),)
    return SyncOutcome(status=status, notices=notices, writes=rolled.writes, synced=False)
