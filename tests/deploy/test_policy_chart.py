"""The chart's ``policy`` values (issue 15): rendered into ``falco-misp run --policy-json``, read back by the real
parser and policy reader, so what the chart renders is what the operator enforces; a default install keeps today's
reach (every feed namespace into the Falco namespaces the RBAC grants) and refuses loopback and link-local."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from deploy.chartkit import Rendered, kube_errors, render
from falco_misp.cli import build_parser
from falco_misp.feed.policy import Ceilings, Egress, Policy, TargetRule, check_feed
from falco_misp.runner import load_policy
from helpers import feed


def policy_of(r: Rendered) -> Policy:
    (c,) = r.one("Deployment")["spec"]["template"]["spec"]["containers"]
    return load_policy(build_parser().parse_args(["run", *c["args"]]))


def test_a_default_install_targets_the_granted_falco_namespaces_and_guards_addresses() -> None:
    r = render()
    got = policy_of(r)
    assert got.targets == (TargetRule(("*",), ("falco",)),)
    assert got.ceilings == Ceilings()
    assert got.egress == Egress()  # any host; loopback and link-local refused, private allowed
    for obj in r.objects:
        assert kube_errors(obj) == []


def test_extra_falco_namespaces_join_the_default_targets() -> None:
    got = policy_of(render({"falco": {"namespace": "falco", "extraNamespaces": ["falco-edge", "falco"]}}))
    assert got.targets == (TargetRule(("*",), ("falco", "falco-edge")),)


def test_the_policy_values_reach_the_operator() -> None:
    values: dict[str, Any] = {
        "policy": {
            "targets": [
                {"feedNamespaces": ["security"], "falcoNamespaces": ["*"]},
                {"feedNamespaces": ["team-*"], "falcoNamespaces": ["falco-teams"]},
            ],
            "ceilings": {"maxIndicators": 200000, "maxNetworks": 500, "minPrefixV4": 20},
            "egress": {"allowedHosts": ["misp.example.org", "*.feeds.example.org"], "allowLoopback": True},
        }
    }
    got = policy_of(render(values))
    assert got.targets == (TargetRule(("security",), ("*",)), TargetRule(("team-*",), ("falco-teams",)))
    assert got.ceilings == Ceilings(max_indicators=200000, max_networks=500, min_prefix_v4=20)
    assert got.egress == Egress(allowed_hosts=("misp.example.org", "*.feeds.example.org"), allow_loopback=True)
    team = feed({"source": {"mispFeed": {"url": "https://a.feeds.example.org/"}}, "falco": {"namespace": "falco"}})
    refused = check_feed(got, type(team)(name="x", namespace="team-a", spec=team.spec))
    assert refused is not None and refused.reason == "FalcoNamespaceNotAllowed"


@pytest.mark.parametrize(
    "policy",
    [
        {"ceilings": {"maxIndicators": 0}},
        {"ceilings": {"minPrefixV4": 33}},
        {"targets": [{"feedNamespaces": []}]},
        {"egress": {"allowedHosts": ["https://misp.example.org/"]}},
        {"egress": {"allowLoopback": "yes"}},
        {"unknown": 1},
    ],
)
def test_the_schema_refuses_bad_policy_values(policy: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError):
        render({"policy": policy})
