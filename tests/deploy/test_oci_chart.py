"""The chart for OCI delivery (issue 16): the egress NetworkPolicy lets the operator reach the registries it pushes to
(``networkPolicy.registries``), and only those; by default nothing changes.

Rendered by a real Helm and checked against the Kubernetes schemas (tests/deploy/chartkit.py).
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from deploy.chartkit import kube_errors, render

API = {"cidrs": ["10.0.0.1/32"]}
MISP = [{"cidr": "203.0.113.10/32"}]


def egress(values: dict[str, Any]) -> list[dict[str, Any]]:
    policy = render({"networkPolicy": {"enabled": True, "apiServer": API, "misp": MISP, **values}}).one("NetworkPolicy")
    assert kube_errors(policy) == []
    rules: list[dict[str, Any]] = policy["spec"]["egress"]
    return rules


def by_cidr(rules: list[dict[str, Any]]) -> dict[str, list[int]]:
    """ipBlock CIDR -> its TCP ports, for the rules that name addresses."""
    out: dict[str, list[int]] = {}
    for rule in rules:
        for peer in rule["to"]:
            if "ipBlock" in peer:
                out[peer["ipBlock"]["cidr"]] = [p["port"] for p in rule["ports"] if p["protocol"] == "TCP"]
    return out


def test_by_default_no_registry_is_reachable() -> None:
    assert by_cidr(egress({})) == {"10.0.0.1/32": [443, 6443], "203.0.113.10/32": [443]}


def test_registries_are_allowed_on_their_ports_https_by_default() -> None:
    registries = [
        {"cidr": "198.51.100.20/32"},  # ghcr.io or Harbor: HTTPS
        {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"], "ports": [5000]},  # a plain-HTTP registry
    ]
    rules = egress({"registries": registries})
    assert by_cidr(rules) == {
        "10.0.0.1/32": [443, 6443],
        "203.0.113.10/32": [443],
        "198.51.100.20/32": [443],
        "192.0.2.0/24": [5000],
    }
    (plain,) = [r for r in rules if r["to"][0].get("ipBlock", {}).get("cidr") == "192.0.2.0/24"]
    assert plain["to"] == [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}]
    # DNS stays allowed: a registry is named by its host.
    assert any(p.get("port") == 53 for r in rules for p in r["ports"])


@pytest.mark.parametrize(
    ("registries", "where"),
    [
        ([{"cidr": "ghcr.io"}], "/networkPolicy/registries/0/cidr"),
        ([{"cidr": "198.51.100.20/32", "ports": [0]}], "/networkPolicy/registries/0/ports/0"),
        ([{"cidr": "198.51.100.20/32", "port": 443}], "port"),
    ],
)
def test_the_schema_refuses_a_bad_registry_entry(registries: list[dict[str, Any]], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render({"networkPolicy": {"registries": registries}})
    assert where in str(caught.value)
