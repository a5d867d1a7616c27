"""The MispAllowList CRD: cluster-scoped, a CRD a real kube-apiserver accepts (k8s/crdcheck.py), documented, whose
schema has exactly the fields feed/allowlist.py reads; and the merge into a feed (the same code for the CLI and the
operator) in name order, with the lists' exceptions qualified by the list's name."""

from __future__ import annotations

import copy
import ipaddress
import re
from typing import Any

import pytest

from falco_misp.errors import SpecError
from falco_misp.feed import parse as spec_module
from falco_misp.feed.allowlist import (
    ALLOW_LIST_KIND,
    AllowListNotFound,
    merge_allow_lists,
    parse_allow_list,
    spec_digest,
)
from falco_misp.feed.model import API_GROUP, API_VERSION
from helpers import feed
from k8s.crdcheck import REPO, admission_errors, convention_problems, crd_problems, load_crd, nodes, schema_of, validate

CRD = load_crd(REPO / "deploy" / "crds" / "mispallowlists.falco-misp.io.yaml")
SCHEMA = schema_of(CRD)
MAXIMAL: dict[str, Any] = {
    "description": "egress NAT and the scanner (owner: secops)",
    "networks": ["198.51.100.0/24", "203.0.113.7", "2001:db8:100::/48"],
    "domains": ["updates.example.com"],
    "exceptions": [
        {"name": "scanner", "fields": ["proc.name", "fd.sport"], "comps": ["=", "in"],
         "values": [["nessusd", [443, "8443"]]], "appliesTo": {"directions": ["outbound"], "kinds": ["addresses"]}},
    ],
}  # fmt: skip


def manifest(spec: dict[str, Any], name: str = "corp-egress") -> dict[str, Any]:
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": ALLOW_LIST_KIND, "metadata": {"name": name},
            "spec": copy.deepcopy(spec)}  # fmt: skip


def test_the_crd_is_cluster_scoped_structural_and_documented() -> None:
    assert crd_problems(CRD) == []
    assert convention_problems(SCHEMA) == []
    assert CRD["spec"]["scope"] == "Cluster"
    assert CRD["spec"]["names"]["kind"] == ALLOW_LIST_KIND
    assert CRD["metadata"]["name"] == f"{CRD['spec']['names']['plural']}.{API_GROUP}"
    columns = {c["name"]: c["jsonPath"] for c in CRD["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Description"] == ".spec.description"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_the_maximal_list_is_admitted_and_parsed() -> None:
    doc = manifest(MAXIMAL)
    assert validate(doc, SCHEMA) == []
    assert admission_errors(doc, SCHEMA) == []
    allow_list = parse_allow_list(doc)
    assert allow_list.networks == tuple(
        ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.7/32", "2001:db8:100::/48")
    )
    assert [e.name for e in allow_list.exceptions] == ["scanner"]


def test_the_schema_has_exactly_the_fields_the_parser_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    read: set[str] = set()
    for method in ("raw", "has"):
        original = getattr(spec_module._Reader, method)

        def recording(self: Any, key: str, _original: Any = original) -> Any:
            read.add(re.sub(r"\[\d+\]", "[]", self.at(key)))
            return _original(self, key)

        monkeypatch.setattr(spec_module._Reader, method, recording)
    parse_allow_list(manifest(MAXIMAL))
    read = {p.removeprefix("mispallowlists/corp-egress.") for p in read if p.startswith("mispallowlists/")}
    in_schema = {p for p, _ in nodes(SCHEMA["properties"]["spec"], "spec") if p != "spec" and not p.endswith("[]")}
    assert sorted(in_schema ^ read) == []


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"networks": ["10.0.0.1/8"]}, "mispallowlists/corp-egress.spec.networks[0]"),
        ({"domains": ["not a domain"]}, "mispallowlists/corp-egress.spec.domains[0]"),
        ({"networkz": []}, "mispallowlists/corp-egress.spec.networkz"),
        ({"exceptions": [{"name": "x", "fields": ["fd.sport"], "values": [["http"]]}]},
         "mispallowlists/corp-egress.spec.exceptions[0].values[0][0]"),
    ],
)  # fmt: skip
def test_bad_lists_name_the_field(spec: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_allow_list(manifest(spec))
    assert caught.value.field == path


def test_the_merge_is_deterministic_and_qualifies_exception_names() -> None:
    corp = parse_allow_list(manifest(MAXIMAL))
    lab = parse_allow_list(manifest({"networks": ["192.0.2.0/24"], "exceptions": MAXIMAL["exceptions"]}, "lab"))
    own = {"name": "own", "fields": ["proc.name"], "values": [["curl"]]}
    f = feed(exclusions={"cidrs": ["192.0.2.0/25"], "allowLists": ["lab", "corp-egress"]}, falco={"exceptions": [own]})
    merged = merge_allow_lists(f, {"lab": lab, "corp-egress": corp, "unused": lab})
    assert [e.name for e in merged.spec.falco.exceptions] == ["own", "corp-egress:scanner", "lab:scanner"]
    assert [str(n) for n in merged.spec.exclusions.networks] == [
        "192.0.2.0/24", "192.0.2.0/25", "198.51.100.0/24", "203.0.113.7/32", "2001:db8:100::/48",
    ]  # fmt: skip
    assert merged.spec.exclusions.domains == ("updates.example.com",)
    reordered = feed(exclusions={"cidrs": ["192.0.2.0/25"], "allowLists": ["corp-egress", "lab"]},
                     falco={"exceptions": [own]})  # fmt: skip
    assert merge_allow_lists(reordered, {"lab": lab, "corp-egress": corp}).spec == merged.spec
    assert merge_allow_lists(feed(), {"lab": lab}) == feed()  # names none: unchanged


def test_a_missing_list_is_named() -> None:
    f = feed(exclusions={"allowLists": ["corp-egress", "gone"]})
    with pytest.raises(AllowListNotFound, match="gone") as caught:
        merge_allow_lists(f, {"corp-egress": parse_allow_list(manifest(MAXIMAL))})
    assert caught.value.missing == ("gone",)


def test_too_many_exceptions_after_the_merge_are_refused() -> None:
    many = [{"name": f"e{i}", "fields": ["proc.name"], "values": [["curl"]]} for i in range(40)]
    corp = parse_allow_list(manifest({"exceptions": many}))
    f = feed(exclusions={"allowLists": ["corp-egress"]}, falco={"exceptions": many})
    with pytest.raises(SpecError) as caught:
        merge_allow_lists(f, {"corp-egress": corp})
    assert caught.value.field == "spec.exclusions.allowLists"


def test_the_digest_changes_with_the_spec_only() -> None:
    assert spec_digest(MAXIMAL) == spec_digest(copy.deepcopy(MAXIMAL))
    assert spec_digest(MAXIMAL) != spec_digest({**MAXIMAL, "networks": []})
