"""ConfigMap names derive from the feed's identity (issue 15): no two feeds produce the same name, so no feed can
squat the names another namespace's feed needs. ``misp-<namespace>-<name>`` alone would not do: ``team-a``/``x`` and
``team``/``a-x`` both give ``misp-team-a-x``; the namespace's ``-`` are doubled, which makes the mapping injective."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falco_misp.errors import SpecError
from falco_misp.feed.model import Feed
from falco_misp.feed.parse import parse_feed

LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?\Z")  # DNS labels, short, with runs of '-'
SPEC = {"source": {"file": {"url": "x.json"}}, "falco": {"namespace": "falco", "maxShards": 12}}


def _feed(namespace: str, name: str, **falco: object) -> Feed:
    spec = {**SPEC, "falco": {**SPEC["falco"], **falco}}
    return parse_feed({"metadata": {"name": name, "namespace": namespace}, "spec": spec})


def names(f: Feed) -> set[str]:
    return {f"{f.config_map_prefix}-{i}" for i in range(f.spec.falco.max_shards)}


def test_the_ambiguous_pair_gets_two_names() -> None:
    a, b = _feed("team-a", "x"), _feed("team", "a-x")
    assert (a.config_map_prefix, b.config_map_prefix) == ("misp-team--a-x", "misp-team-a-x")
    assert _feed("falco", "sample").config_map_prefix == "misp-falco-sample"  # a namespace without '-': as before


@settings(max_examples=400, deadline=None)
@given(LABEL, LABEL, LABEL, LABEL)
def test_two_feeds_never_share_a_config_map_name(ns1: str, n1: str, ns2: str, n2: str) -> None:
    a, b = _feed(ns1, n1), _feed(ns2, n2)
    if (ns1, n1) == (ns2, n2):
        assert names(a) == names(b)
    else:
        assert names(a).isdisjoint(names(b))
        assert a.rule_prefix != b.rule_prefix  # and their Falco names never meet in one Falco


@settings(max_examples=200, deadline=None)
@given(LABEL, LABEL)
def test_the_namespace_is_read_back_from_the_name(namespace: str, name: str) -> None:
    """The decoding that makes the mapping injective: after ``misp-``, ``--`` is a namespace ``-`` and the first
    single ``-`` ends the namespace (a namespace never ends with ``-``, a name never starts with one)."""
    rest, i, out = _feed(namespace, name).config_map_prefix.removeprefix("misp-"), 0, []
    while True:
        if rest.startswith("--", i):
            out.append("-")
            i += 2
        elif rest[i] == "-":
            break
        else:
            out.append(rest[i])
            i += 1
    assert ("".join(out), rest[i + 1 :]) == (namespace, name)


def test_only_a_feed_in_its_falco_namespace_may_choose_its_names() -> None:
    assert _feed("falco", "circl", configMapPrefix="misp-circl").config_map_prefix == "misp-circl"
    with pytest.raises(SpecError) as err:
        _feed("team-a", "intel", configMapPrefix="misp-falco-sample")  # another feed's names
    assert err.value.field == "spec.falco.configMapPrefix"
    assert "misp-team--a-intel-<n>" in err.value.message
