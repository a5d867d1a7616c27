"""The falco-operator's Rulesfiles, pure (issue 16): the spec, the manifests against the real Rulesfile CRD, the
plan (what is written, what is kept, what is left Terminating), and Delivered from the Rulesfiles' conditions.

The CRD and the falco-operator's own example are read from ../shared/reference/falco-operator/ (never copied here).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from falco_misp.controller.status import delivery_target, record_change
from falco_misp.delivery.configmaps import ANNOTATION_SHARD_HASH, feed_labels
from falco_misp.delivery.rulesfiles import (
    RULES_KEY,
    build_oci_rulesfile,
    build_rules_configmap,
    build_rulesfile,
    delivered_condition,
    plan_rulesfiles,
    rulesfile_report,
)
from falco_misp.errors import SpecError
from falco_misp.feed.model import DEFAULT_RULESFILE_PRIORITY, DeliveryMode, Feed
from falco_misp.rendering.shards import RulesBundle, render_rules
from helpers import feed, indicators, shared_dir

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
OCI = {"reference": "registry.example.org/security/misp-rules"}
FALCO_OPERATOR = shared_dir() / "reference" / "falco-operator"


@cache
def rulesfile_schema() -> dict[str, Any]:
    crd = yaml.safe_load((FALCO_OPERATOR / "artifact.falcosecurity.dev_rulesfiles.yaml").read_text(encoding="utf-8"))
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def rulesfile_errors(body: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(rulesfile_schema())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


def rulesfile_feed(name: str = "intel", **rulesfile: Any) -> Feed:
    delivery: dict[str, Any] = {"mode": "Rulesfiles"}
    if rulesfile:
        delivery["rulesfile"] = rulesfile
    return feed(name=name, falco={"namespace": "falco", "delivery": delivery})


def bundle_of(f: Feed, count: int = 3, shard_bytes: int | None = None) -> RulesBundle:
    if shard_bytes is not None:
        f = feed(
            name=f.name,
            falco={"namespace": "falco", "shardBytes": shard_bytes, "delivery": {"mode": "Rulesfiles"}},
        )
    return render_rules(f, indicators([f"45.0.{i // 250}.{i % 250 + 1}" for i in range(count)], f))


def as_listed(body: dict[str, Any], **meta: Any) -> dict[str, Any]:
    """An object as the API server lists it (uid, resourceVersion, whatever else ``meta`` adds)."""
    out = copy.deepcopy(body)
    out["metadata"].update({"uid": "u-" + out["metadata"]["name"], "resourceVersion": "7", **meta})
    return out


# ---------------------------------------------------------------------------------------------------- spec
def test_the_spec_parses_into_the_delivery_settings() -> None:
    f = rulesfile_feed(
        priority=40,
        selector={
            "matchLabels": {"kubernetes.io/os": "linux"},
            "matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]},
                {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"},
            ],
        },
    )
    delivery = f.spec.falco.delivery
    assert delivery.mode is DeliveryMode.RULESFILES
    assert delivery.rulesfile.priority == 40
    assert delivery.rulesfile.selector is not None
    assert delivery.rulesfile.selector.match_labels == (("kubernetes.io/os", "linux"),)
    assert [e.operator for e in delivery.rulesfile.selector.match_expressions] == ["In", "DoesNotExist"]
    default = feed()
    assert default.spec.falco.delivery.mode is DeliveryMode.CONFIG_MAPS
    assert rulesfile_feed().spec.falco.delivery.rulesfile.priority == DEFAULT_RULESFILE_PRIORITY == 60


@pytest.mark.parametrize(
    ("falco", "field", "says"),
    [
        ({"delivery": {"mode": "Helm"}}, "spec.falco.delivery.mode", "ConfigMaps, Rulesfiles or OCI"),
        ({"delivery": {"mode": "OCI"}}, "spec.falco.delivery.oci", "required with mode: OCI"),
        ({"delivery": {"oci": OCI}}, "spec.falco.delivery.oci", "applies only to it"),
        ({"delivery": {"mode": "OCI", "oci": {"reference": "misp-rules:latest"}}}, "spec.falco.delivery.oci.reference",
         "REGISTRY[:PORT]/REPOSITORY[:TAG]"),
        ({"delivery": {"mode": "OCI", "oci": {"reference": "https://r.example.org/x"}}},
         "spec.falco.delivery.oci.reference", "no scheme"),
        ({"delivery": {"mode": "OCI", "oci": {"reference": "r.example.org/x@sha256:" + "0" * 64}}},
         "spec.falco.delivery.oci.reference", "no digest"),
        ({"delivery": {"mode": "OCI", "oci": {**OCI, "plainHTTP": True, "insecureSkipVerify": True}}},
         "spec.falco.delivery.oci.plainHTTP", "excludes"),
        ({"delivery": {"mode": "OCI", "oci": {**OCI, "pullSecretRef": {"name": "p"}}}},
         "spec.falco.delivery.oci.pullSecretRef", "rulesfile: true"),
        ({"delivery": {"mode": "OCI", "oci": OCI, "rulesfile": {"priority": 1}}}, "spec.falco.delivery.rulesfile",
         "oci.rulesfile: true"),
        ({"daemonSet": "falco", "delivery": {"mode": "OCI", "oci": OCI}}, "spec.falco.daemonSet", "mode OCI"),
        ({"delivery": {"rulesfile": {"priority": 1}}}, "spec.falco.delivery.rulesfile", "mode: Rulesfiles"),
        ({"delivery": {"mode": "Rulesfiles", "rulesfile": {"priority": 100}}}, "spec.falco.delivery.rulesfile.priority",
         "between 0 and 99"),
        ({"daemonSet": "falco", "delivery": {"mode": "Rulesfiles"}}, "spec.falco.daemonSet", "does not apply"),
        ({"rollout": "Restart", "delivery": {"mode": "Rulesfiles"}}, "spec.falco.rollout", "does not apply"),
        ({"delivery": {"mode": "Rulesfiles", "rulesfile": {"selector": {}}}}, "spec.falco.delivery.rulesfile.selector",
         "selects every node"),
        ({"delivery": {"mode": "Rulesfiles", "rulesfile": {"selector": {"matchLabels": {"a b": "x"}}}}},
         "spec.falco.delivery.rulesfile.selector.matchLabels.a b", "label key"),
        ({"delivery": {"mode": "Rulesfiles", "rulesfile": {"selector": {"matchExpressions": [
            {"key": "zone", "operator": "In"}]}}}},
         "spec.falco.delivery.rulesfile.selector.matchExpressions[0].values", "at least one value"),
        ({"delivery": {"mode": "Rulesfiles", "rulesfile": {"selector": {"matchExpressions": [
            {"key": "zone", "operator": "Exists", "values": ["a"]}]}}}},
         "spec.falco.delivery.rulesfile.selector.matchExpressions[0].values", "must be empty"),
        ({"delivery": {"mode": "Rulesfiles", "rulesfile": {"selector": {"matchExpressions": [
            {"key": "zone", "operator": "Gt", "values": ["1"]}]}}}},
         "spec.falco.delivery.rulesfile.selector.matchExpressions[0].operator", "In, NotIn, Exists or DoesNotExist"),
    ],
)  # fmt: skip
def test_a_bad_delivery_spec_names_the_field(falco: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(SpecError) as caught:
        feed(falco=falco)
    assert caught.value.field == field
    assert says in caught.value.message


# ----------------------------------------------------------------------------------------------- manifests
def test_every_shard_gets_a_configmap_with_rules_yaml_and_a_rulesfile_naming_it() -> None:
    f = rulesfile_feed(selector={"matchLabels": {"falco": "on"}})
    bundle = bundle_of(f, count=4000, shard_bytes=16 * 1024)
    assert len(bundle.shards) >= 2
    for shard in bundle.shards:
        cm = build_rules_configmap(f, bundle, shard)
        rf = build_rulesfile(f, bundle, shard)
        assert cm["metadata"]["name"] == rf["metadata"]["name"] == f"misp-ns-intel-{shard.index}"
        assert cm["metadata"]["namespace"] == rf["metadata"]["namespace"] == "falco"
        assert cm["data"] == {RULES_KEY: shard.content.decode()}
        assert cm["metadata"]["labels"] == rf["metadata"]["labels"] == feed_labels(f)
        assert rf["metadata"]["annotations"][ANNOTATION_SHARD_HASH] == shard.sha256
        assert rf["spec"] == {
            "configMapRef": {"name": cm["metadata"]["name"]},
            "priority": 60,
            "selector": {"matchLabels": {"falco": "on"}},
        }
        assert rulesfile_errors(rf) == []


def test_rulesfiles_validate_against_the_real_crd_and_the_check_has_teeth() -> None:
    f = rulesfile_feed(
        priority=0,
        selector={"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "NotIn", "values": ["arm64"]}]},
    )
    bundle = bundle_of(f)
    rf = build_rulesfile(f, bundle, bundle.shards[0])
    assert rulesfile_errors(rf) == []
    assert rf["spec"]["selector"] == {
        "matchExpressions": [{"key": "kubernetes.io/arch", "operator": "NotIn", "values": ["arm64"]}]
    }
    broken = copy.deepcopy(rf)
    broken["spec"]["priority"] = 100
    broken["spec"]["configMapRef"] = {}
    errors = rulesfile_errors(broken)
    assert any(e.startswith("spec.priority") for e in errors), errors
    assert any(e.startswith("spec.configMapRef") and "'name'" in e for e in errors), errors


def test_the_falco_operators_own_example_has_our_shape() -> None:
    """Our Rulesfile has the same fields as the falco-operator's ConfigMap example, and its ConfigMap the same key."""
    docs = list(yaml.safe_load_all((FALCO_OPERATOR / "artifact_v1alpha1_rulesfile_configmap.yaml").read_text()))
    example_cm = next(d for d in docs if d and d["kind"] == "ConfigMap")
    example_rf = next(d for d in docs if d and d["kind"] == "Rulesfile")
    f = rulesfile_feed()
    bundle = bundle_of(f)
    rf = build_rulesfile(f, bundle, bundle.shards[0])
    assert rf["apiVersion"] == example_rf["apiVersion"] and rf["kind"] == example_rf["kind"]
    assert set(rf["spec"]) == set(example_rf["spec"])  # configMapRef and priority (no selector set)
    assert set(build_rules_configmap(f, bundle, bundle.shards[0])["data"]) == set(example_cm["data"])
    assert rulesfile_errors(example_rf) == []


def test_an_oci_feed_parses_and_its_pinned_rulesfile_validates_against_the_real_crd() -> None:
    oci = {
        "reference": "127.0.0.1:5000/security/misp-rules:stable",
        "credentialsSecretRef": {"name": "push"},
        "insecureSkipVerify": True,
        "rulesfile": True,
        "pullSecretRef": {"name": "pull"},
    }
    delivery = {"mode": "OCI", "oci": oci, "rulesfile": {"priority": 65, "selector": {"matchLabels": {"a": "b"}}}}
    f = feed(name="intel", falco={"namespace": "falco", "delivery": delivery})
    settings = f.spec.falco.delivery.oci
    assert settings is not None and settings.rulesfile and settings.pull_secret == "pull"
    assert (settings.credentials, settings.insecure_skip_verify, settings.plain_http) == ("push", True, False)
    bundle = bundle_of(f)
    digest = "sha256:" + "a" * 64
    rf = build_oci_rulesfile(f, bundle, "127.0.0.1:5000", "security/misp-rules", digest)
    assert rulesfile_errors(rf) == []
    assert rf["metadata"]["name"] == f.config_map_prefix == "misp-ns-intel"
    assert rf["spec"] == {
        "ociArtifact": {
            "image": {"repository": "security/misp-rules", "tag": digest},
            "registry": {
                "name": "127.0.0.1:5000",
                "tls": {"insecureSkipVerify": True},
                "auth": {"secretRef": {"name": "pull"}},
            },
        },
        "priority": 65,
        "selector": {"matchLabels": {"a": "b"}},
    }
    plain = feed(falco={"delivery": {"mode": "OCI", "oci": {**OCI, "plainHTTP": True, "rulesfile": True}}})
    registry = build_oci_rulesfile(plain, bundle, "r.example.org", "x", digest)["spec"]["ociArtifact"]["registry"]
    assert registry == {"name": "r.example.org", "plainHTTP": True}  # never with tls: the CRD refuses both


# ---------------------------------------------------------------------------------------------------- plan
def test_first_sync_creates_both_kinds_then_nothing_changes() -> None:
    f = rulesfile_feed()
    bundle = bundle_of(f)
    plan = plan_rulesfiles(f, bundle, [], [])
    assert [b["kind"] for b in plan.configmaps.create] == ["ConfigMap"]
    assert [b["kind"] for b in plan.create] == ["Rulesfile"]
    assert plan.writes == 2 and plan.blocked == () and plan.terminating == ()
    listed_cms = [as_listed(dict(b)) for b in plan.configmaps.create]
    # what the falco-operator adds: its finalizer, the CRD's default status, an example label of its own
    listed_rfs = [
        as_listed(dict(b), finalizers=["x.artifact.falcosecurity.dev/finalizer"], generation=1) for b in plan.create
    ]
    listed_rfs[0]["status"] = {"conditions": [{"type": "Programmed", "status": "True"}]}
    listed_rfs[0]["metadata"]["labels"]["team"] = "sec"
    again = plan_rulesfiles(f, bundle, listed_cms, listed_rfs)
    assert again.writes == 0
    assert again.unchanged == ("misp-ns-intel-0",) and again.configmaps.unchanged == ("misp-ns-intel-0",)


def test_a_changed_priority_and_a_foreign_source_are_patched_away() -> None:
    f = rulesfile_feed(priority=70, selector={"matchLabels": {"b": "2"}})
    bundle = bundle_of(f)
    old = rulesfile_feed(selector={"matchLabels": {"a": "1"}})
    have = as_listed(build_rulesfile(old, bundle, bundle.shards[0]))
    have["spec"]["inlineRules"] = [{"rule": "someone else's"}]
    plan = plan_rulesfiles(f, bundle, [as_listed(build_rules_configmap(f, bundle, bundle.shards[0]))], [have])
    ((name, patch),) = plan.update
    assert name == "misp-ns-intel-0"
    # a merge patch: the old label selector key removed, not merged with the new one
    assert patch["spec"] == {"priority": 70, "selector": {"matchLabels": {"a": None, "b": "2"}}, "inlineRules": None}
    assert plan.configmaps.writes == 0


def test_a_shrinking_feed_deletes_rulesfile_and_configmap_of_the_surplus_shard() -> None:
    f = rulesfile_feed()
    big = bundle_of(f, count=4000, shard_bytes=16 * 1024)
    small = bundle_of(f, count=3)
    cms = [as_listed(build_rules_configmap(f, big, s)) for s in big.shards]
    rfs = [as_listed(build_rulesfile(f, big, s)) for s in big.shards]
    plan = plan_rulesfiles(f, small, cms, rfs)
    surplus = tuple(s.name for s in big.shards[1:])
    assert plan.delete == surplus and plan.configmaps.delete == surplus
    assert [n for n, _ in plan.configmaps.update] == ["misp-ns-intel-0"]  # its content changed
    # shard 0's Rulesfile: its spec stays, its hash annotations follow the content (an update event, after the
    # ConfigMap's, for a falco-operator that reconciles on it)
    ((name, patch),) = plan.update
    assert name == "misp-ns-intel-0" and set(patch) == {"metadata"}
    assert patch["metadata"]["annotations"][ANNOTATION_SHARD_HASH] == small.shards[0].sha256
    assert plan.create == ()


def test_configmaps_held_by_a_finalizer_are_left_alone_and_block_only_when_wanted_again() -> None:
    f = rulesfile_feed()
    bundle = bundle_of(f)
    cm0 = as_listed(build_rules_configmap(f, bundle, bundle.shards[0]))
    held = as_listed(
        build_rules_configmap(f, bundle, bundle.shards[0]),
        name="misp-ns-intel-1",
        deletionTimestamp="2026-01-05T11:59:00Z",
        finalizers=["artifact.falcosecurity.dev/in-use"],
    )
    plan = plan_rulesfiles(f, bundle, [cm0, held], [as_listed(build_rulesfile(f, bundle, bundle.shards[0]))])
    assert plan.terminating == ("misp-ns-intel-1",)
    assert plan.configmaps.delete == () and plan.blocked == () and plan.writes == 0  # never deleted twice
    held0 = dict(cm0, metadata={**cm0["metadata"], "deletionTimestamp": "2026-01-05T11:59:00Z"})
    blocked = plan_rulesfiles(f, bundle, [held0], [])
    assert blocked.blocked == ("misp-ns-intel-0",)


def test_the_summary_counts_both_kinds() -> None:
    f = rulesfile_feed()
    bundle = bundle_of(f)
    summary = plan_rulesfiles(f, bundle, [], []).summary()
    assert (len(summary.create), len(summary.update), len(summary.delete)) == (2, 0, 0)


def test_the_summary_carries_what_the_configmaps_held_so_last_change_counts_only_the_change() -> None:
    """The first lastChange in Rulesfiles mode counts against the ConfigMaps' ``rules.yaml`` as listed (the cluster,
    not memory: the same after a restart), not against nothing."""
    f = rulesfile_feed()
    old_values = [f"45.0.0.{i}" for i in range(1, 6)]
    new_values = [*old_values[1:], "45.0.9.1", "45.0.9.2"]
    old = render_rules(f, indicators(old_values, f))
    listed_cms = [as_listed(build_rules_configmap(f, old, s)) for s in old.shards]
    listed_rfs = [as_listed(build_rulesfile(f, old, s)) for s in old.shards]
    new_indicators = indicators(new_values, f)
    summary = plan_rulesfiles(f, render_rules(f, new_indicators), listed_cms, listed_rfs).summary()
    assert summary.writes == 2  # the ConfigMap's rules.yaml and the Rulesfile's hash annotations
    assert summary.previous == {f"{s.name}/{RULES_KEY}": s.content.decode() for s in old.shards}
    record = record_change(f, new_indicators, summary.previous, T0)
    assert record.fields["lastChange"] == {
        "time": "2026-01-05T12:00:00Z", "added": {"outbound_addresses": 2}, "removed": {"outbound_addresses": 1}
    }  # fmt: skip
    (notice,) = record.notices
    assert (notice.reason, notice.message) == ("RulesChanged", "+2 outbound addresses, -1 outbound addresses "
                                               "(6 indicators now)")  # fmt: skip


def test_a_mode_switch_or_a_new_registry_drops_the_old_delivery_answer() -> None:
    configmaps = {"rollout": {"mode": "HotReload"}, "falcoNamespace": "falco"}
    rulesfiles = {"rollout": {"mode": "Rulesfiles"}, "falcoNamespace": "falco"}
    oci = {"rollout": {"mode": "OCI"}, "falcoNamespace": "falco", "push": {"reference": "r.example.org/a"}}
    pinned = {**oci, "push": {"reference": "r.example.org/a", "rulesfile": "misp-ns-intel"}}
    elsewhere = {**oci, "push": {"reference": "r.example.org/b"}}
    moved = {**rulesfiles, "falcoNamespace": "falco-2"}
    targets = [delivery_target(s) for s in (configmaps, rulesfiles, oci, pinned, elsewhere, moved, {})]
    assert len(set(targets)) == len(targets)
    same_push_later = {**oci, "push": {"reference": "r.example.org/a", "digest": "sha256:1", "time": "t"}}
    assert delivery_target(same_push_later) == delivery_target(oci)


# ---------------------------------------------------------------------------------------------- delivered
def rulesfile_with(name: str, *conditions: tuple[str, str, str, str], generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": generation},
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": m, "observedGeneration": generation,
                 "lastTransitionTime": "2026-01-05T12:00:00Z"}
                for t, s, r, m in conditions
            ]
        },
    }  # fmt: skip


OK = (("ResolvedRefs", "True", "ReferenceResolved", "resolved"), ("Programmed", "True", "Reconciled", "done"))


def delivered(rulesfiles: list[dict[str, Any]], names: tuple[str, ...] = ("a-0", "a-1"), minutes: float = 10) -> Any:
    report = rulesfile_report("falco", names, rulesfiles)
    return delivered_condition(report, written_at=T0, now=T0 + timedelta(minutes=minutes), deadline_seconds=180)


def test_all_programmed_is_delivered() -> None:
    cond = delivered([rulesfile_with("a-0", *OK), rulesfile_with("a-1", *OK)])
    assert (cond.type, cond.status, cond.reason) == ("Delivered", True, "AllProgrammed")
    assert "2/2 Rulesfiles" in cond.message


def test_a_reference_not_resolved_is_not_delivered_and_named() -> None:
    failing = rulesfile_with(
        "a-1",
        (
            "ResolvedRefs",
            "False",
            "ReferenceResolutionFailed",
            'Failed to resolve Reference: configmap "a-1" not found',
        ),
        ("Programmed", "False", "ReconcileFailed", "nothing to program"),
    )
    cond = delivered([rulesfile_with("a-0", *OK), failing])
    assert (cond.status, cond.reason) == (False, "ReferenceResolutionFailed")  # the cause, not its consequence
    assert cond.message.startswith("Rulesfile falco/a-1: ResolvedRefs is False (ReferenceResolutionFailed)")
    assert "1/2 Rulesfiles programmed" in cond.message


def test_a_program_failure_with_a_bad_reason_gets_a_clean_one() -> None:
    failing = rulesfile_with("a-0", OK[0], ("Programmed", "False", "not camel case!", "disk full"))
    cond = delivered([failing], names=("a-0",))
    assert (cond.status, cond.reason) == (False, "ProgrammedFalse")
    assert "disk full" in cond.message


def test_waiting_for_the_falco_operator_then_past_the_deadline() -> None:
    pending = rulesfile_with("a-0", ("Programmed", "Unknown", "Pending", "Waiting for controller"))
    early = delivered([pending, rulesfile_with("a-1", *OK)], minutes=1)
    assert (early.status, early.reason) == (None, "Propagating")
    assert "a-0" in early.message and "no ResolvedRefs condition yet" in early.message
    late = delivered([pending, rulesfile_with("a-1", *OK)], minutes=10)
    assert (late.status, late.reason) == (False, "NotProgrammed")
    assert "falco-operator running" in late.message


def test_a_condition_for_an_older_generation_or_a_missing_rulesfile_does_not_count() -> None:
    stale = rulesfile_with("a-0", *OK)
    stale["metadata"]["generation"] = 2
    cond = delivered([stale, rulesfile_with("a-1", *OK)], minutes=1)
    assert (cond.status, cond.reason) == (None, "Propagating")
    assert "for generation 1, not 2" in cond.message
    missing = delivered([rulesfile_with("a-1", *OK)], minutes=1)
    assert "a-0: it does not exist" in missing.message


def test_the_report_lists_configmaps_left_terminating() -> None:
    cms = [
        {"metadata": {"name": "a-2", "deletionTimestamp": "2026-01-05T12:00:00Z", "finalizers": ["x/in-use"]}},
        {"metadata": {"name": "a-0"}},
    ]
    report = rulesfile_report("falco", ["a-0"], [rulesfile_with("a-0", *OK)], cms)
    assert report.terminating == ("a-2",) and report.programmed == ("a-0",) and report.failing == ()
