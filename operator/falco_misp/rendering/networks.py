"""A direction's networks as one guarded Falco condition whose cost per event barely grows with their number (pure).

``fd.snet in (list)`` (``fd.cnet`` inbound) compares the event's address with every entry, ~3 ns each, and a guard
(one more comparison against a single CIDR) costs ~40 ns (reference/FALCO.md, "Measured 2026-12-01"). So the
networks become a binary trie over the address bits, compressed to the longest common prefix of each subtree:

- a subtree of more than :data:`LEAF_MAX` networks splits into its two halves, each behind a guard
  ``fd.snet in ("<its common prefix>")``; a subtree of at most :data:`LEAF_MAX` is one ``in (...)`` leaf;
- an event walks one path: two guards per level, then one leaf; at 13,000 networks about 9 levels, 20 checks
  (~1 µs) instead of 13,000 comparisons (~40 µs);
- a guard contains every network below it, so the condition matches exactly the union of the networks, no more
  and no less (a network equal to its subtree's common prefix is that whole subtree: it alone is kept);
- IPv4 and IPv6 have separate tries joined with ``or``: a guard never mixes families;
- every ``in`` holds at most :data:`LEAF_MAX` items, far below Falco's 65,535 (reference/FALCO.md).

Split when a scan costs more than the two guards that halve it: ``3 n > 2 * 43 + 3 n / 2 + 40``, ``n > ~57`` ns by
the figures above; 64 keeps the leaves full. Same networks -> same text (sorted, canonical ``ipaddress`` strings).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

LEAF_MAX = 64
"""Most networks in one ``in (...)`` leaf."""
_BITS = {4: 32, 6: 128}


@dataclass(frozen=True)
class NetworkCondition:
    """A Falco condition matching an address field against a set of networks."""

    text: str
    """The condition, one leaf or guard per line (newlines are whitespace to Falco)."""
    items: int
    """Networks in the leaves (after merging those inside another listed one)."""
    guards: int
    """Single-CIDR guard comparisons."""
    leaves: int
    """``in (...)`` leaves."""


class _Emitter:
    def __init__(self, field: str, version: int) -> None:
        self.field = field
        self.version = version
        self.bits = _BITS[version]
        self.items = self.guards = self.leaves = 0

    def _cidr(self, addr: int, plen: int) -> str:
        net = ipaddress.IPv4Network((addr, plen)) if self.version == 4 else ipaddress.IPv6Network((addr, plen))
        return f'"{net}"'

    def leaf(self, nets: Sequence[tuple[int, int]]) -> str:
        self.items += len(nets)
        self.leaves += 1
        return f"{self.field} in ({','.join(self._cidr(a, p) for a, p in nets)})"

    def hull(self, nets: Sequence[tuple[int, int]]) -> tuple[int, int, bool]:
        """The longest common prefix (address, length) of sorted ``nets``; True when one of them is it."""
        lo = nets[0][0]
        hi = max(a + (1 << (self.bits - p)) - 1 for a, p in nets)
        length = self.bits - (lo ^ hi).bit_length()
        base = (lo >> (self.bits - length)) << (self.bits - length) if length else 0
        return base, length, any(p <= length for _, p in nets)

    def child(self, nets: Sequence[tuple[int, int]]) -> str:
        """``nets`` behind a guard of their common prefix (none where it would test the same thing)."""
        base, length, covered = self.hull(nets)
        if covered or len(nets) == 1:
            return self.leaf([(base, length)] if covered else nets)
        inner = self.node(nets, base, length)
        if length == 0:
            return inner
        self.guards += 1
        return f"({self.field} in ({self._cidr(base, length)}) and\n{inner})"

    def node(self, nets: Sequence[tuple[int, int]], base: int, length: int) -> str:
        if len(nets) <= LEAF_MAX:
            return self.leaf(nets)
        split = bisect_left(nets, (base + (1 << (self.bits - length - 1)), -1))
        return f"({self.child(nets[:split])}\nor {self.child(nets[split:])})"


def network_condition(field: str, networks: Sequence[str]) -> NetworkCondition:
    """The guarded condition for ``field in (networks)``; ``networks`` are canonical CIDR strings (not empty)."""
    parsed = sorted({(n.version, int(n.network_address), n.prefixlen) for n in map(ipaddress.ip_network, networks)})
    parts: list[str] = []
    items = guards = leaves = 0
    for version in (4, 6):
        nets = [(a, p) for v, a, p in parsed if v == version]
        if not nets:
            continue
        emitter = _Emitter(field, version)
        parts.append(emitter.child(nets))
        items, guards, leaves = items + emitter.items, guards + emitter.guards, leaves + emitter.leaves
    if not parts:
        raise ValueError("network_condition needs at least one network")
    text = parts[0] if len(parts) == 1 else f"({parts[0]}\nor {parts[1]})"
    return NetworkCondition(text=text, items=items, guards=guards, leaves=leaves)
