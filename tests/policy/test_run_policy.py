"""``falco-misp run --policy FILE | --policy-json JSON [--egress-allow-loopback]``: the policy the operator enforces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from falco_misp.cli import build_parser
from falco_misp.errors import SpecError
from falco_misp.feed.policy import Ceilings, Egress, Policy, TargetRule
from falco_misp.runner import load_policy

DOC = {"targets": [{"feedNamespaces": ["*"], "falcoNamespaces": ["falco"]}], "ceilings": {"maxNetworks": 100}}


def _load(*argv: str) -> Policy:
    return load_policy(build_parser().parse_args(["run", *argv]))


def test_without_options_the_operator_still_refuses_loopback_and_link_local() -> None:
    assert _load() == Policy()
    assert Policy().egress == Egress(allow_loopback=False, allow_link_local=False, allow_private=True)


def test_a_file_and_inline_json_give_the_same_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("targets:\n  - feedNamespaces: ['*']\n    falcoNamespaces: [falco]\nceilings: {maxNetworks: 100}\n")
    expected = Policy(targets=(TargetRule(("*",), ("falco",)),), ceilings=Ceilings(max_networks=100))
    assert _load("--policy", str(path)) == expected == _load("--policy-json", json.dumps(DOC))
    assert _load("--policy-json", json.dumps(DOC), "--egress-allow-loopback").egress.allow_loopback is True


def test_both_or_a_bad_document_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps(DOC))
    with pytest.raises(SpecError):
        _load("--policy", str(path), "--policy-json", json.dumps(DOC))
    with pytest.raises(SpecError) as err:
        _load("--policy-json", json.dumps({"ceilings": {"maxNetwork": 1}}))
    assert err.value.field == "ceilings.maxNetwork"
