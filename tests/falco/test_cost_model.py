"""bench/falco_cost.py counts what Falco evaluates: checked on a tiny hand-made rules file (counts, not timings)."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from falco_cost import BASE_NS, CHECK_NS, ITEM_NS, ConditionError, Counter, Ruleset

TINY = b"""
- macro: m_out
  condition: (evt.type = connect and evt.dir = < and (fd.typechar = 4 or fd.typechar = 6))
- list: m_addr
  items: ["1.1.1.1"]
- rule: m address
  desc: d
  condition: fd.sip in (m_addr) and m_out
  output: o
  priority: WARNING
- rule: m net
  desc: d
  condition: >-
    m_out and ((fd.snet in ("11.0.0.0/8") and fd.snet in ("11.1.0.0/16","11.2.0.0/16"))
    or fd.snet in ("12.0.0.0/8"))
  output: o
  priority: WARNING
- macro: m_in
  condition: (evt.type in (accept, accept4) and evt.dir = <)
- rule: m inbound
  desc: d
  condition: m_in and fd.cnet in ("11.0.0.0/8")
  output: o
  priority: WARNING
"""


def connect(address: str) -> tuple[str | None, Counter]:
    rs = Ruleset.load([TINY])
    counter = Counter()
    return rs.connect(ipaddress.ip_address(address), counter), counter


@pytest.mark.parametrize(
    ("address", "fired", "checks", "items"),
    [
        # enter: address rule 1 (the lookup), net rule 2 (type, dir); exit: address 1, net 3 + guard + leaf (2nd item)
        ("11.2.3.4", "m net", 3 + 1 + 3 + 2, 1 + 2),
        # unlisted: both guards fail, one item each
        ("8.8.8.8", None, 3 + 1 + 3 + 2, 2),
        # the address rule matches on the exit (lookup, type, dir, typechar) and ends the event: rule_matching first
        ("1.1.1.1", "m address", 3 + 2 + 4, 0),
        # 11.9.0.0 passes the /8 guard, the leaf scans both items, the /8 of 12 fails
        ("11.9.0.1", None, 3 + 1 + 3 + 3, 1 + 2 + 1),
    ],
)
def test_counts_per_connect(address: str, fired: str | None, checks: int, items: int) -> None:
    got, counter = connect(address)
    assert (got, counter.checks, counter.items) == (fired, checks, items)
    assert counter.ns == BASE_NS + CHECK_NS * checks + ITEM_NS * items


def test_inbound_rules_never_run_on_a_connect_and_load_counts_items() -> None:
    rs = Ruleset.load([TINY])
    types = {r.name: r.types for r in rs.rules}
    assert types == {"m address": {"connect"}, "m net": {"connect"}, "m inbound": {"accept", "accept4"}}
    assert rs.files == 1 and rs.items_per_file == [1 + 4 + 1]
    two = Ruleset.load([TINY, TINY.replace(b"m_", b"n_").replace(b"- rule: m", b"- rule: n")])
    assert two.items_per_file == [6, 6]
    assert two.load_seconds() == pytest.approx((3.522 * 12 + 1.227 * (6 + 12)) / 1e6)


def test_a_name_used_before_its_definition_is_refused() -> None:
    bad = b"- rule: r\n  desc: d\n  condition: misp_x_outbound and fd.sip in (misp_x_list)\n  output: o\n"
    with pytest.raises(ConditionError, match="misp_x_outbound"):
        Ruleset.load([bad])
