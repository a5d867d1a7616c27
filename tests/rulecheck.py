"""Test helpers that look at rendered rules the way Falco does.

- :func:`falco_shape_errors`: every item is a list, macro or rule with Falco's keys and types;
- :func:`expand`: each rule's condition with macros and lists substituted (Falco expands them before compiling);
- :func:`in_lists` / :func:`network_leaves`: the value lists of a condition's ``in (...)``, and the networks in the
  leaves of a guarded network macro (the guards, ``in ("<prefix>") and``, left out);
- :func:`sysdig_compile`: Debian's ``sysdig`` (same libs filter compiler) compiles a condition;
  ``sysdig -r /dev/null "<filter>"`` says ``filter error`` for a bad one and fails to open the file otherwise.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from typing import Any

import yaml

PRIORITIES = {"EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFORMATIONAL", "DEBUG"}
SYSDIG_ARG_LIMIT = 128 * 1024
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def load(content: bytes) -> list[dict[str, Any]]:
    docs = yaml.safe_load(content)
    assert isinstance(docs, list), "a rules file is a YAML sequence"
    return docs


def falco_shape_errors(docs: list[dict[str, Any]]) -> list[str]:
    errors: list[str] = []
    defined: set[str] = set()
    for item in docs:
        if "list" in item:
            if set(item) != {"list", "items"} or not isinstance(item["items"], list):
                errors.append(f"bad list {item.get('list')}")
            elif not all(isinstance(i, str) for i in item["items"]):
                errors.append(f"non-string item in {item['list']}")
            defined.add(item["list"])
        elif "macro" in item:
            if set(item) != {"macro", "condition"} or not isinstance(item["condition"], str):
                errors.append(f"bad macro {item.get('macro')}")
            defined.add(item["macro"])
        elif "rule" in item:
            required = {"rule", "desc", "condition", "output", "priority"}
            if not required <= set(item) or set(item) - required - {"tags", "enabled", "exceptions", "source"}:
                errors.append(f"bad rule keys {sorted(item)}")
            if item.get("priority") not in PRIORITIES:
                errors.append(f"priority {item.get('priority')!r} not an upper-case Falco priority")
            for name in _IDENT.findall(item["condition"]):
                if name.startswith("misp_") and name not in defined:
                    errors.append(f"rule {item['rule']!r} uses {name} before (or without) defining it")
            if "container." in item["output"] or "k8s." in item["output"]:
                errors.append("output hard-codes container/k8s fields (needs plugins)")
        else:
            errors.append(f"unknown item {sorted(item)}")
    return errors


def expand(docs: list[dict[str, Any]], max_items: int | None = None) -> dict[str, str]:
    """Rule name -> condition with macros and lists expanded (lists truncated to ``max_items`` if given)."""
    lists: dict[str, list[str]] = {}
    macros: dict[str, str] = {}
    out: dict[str, str] = {}
    for item in docs:
        if "list" in item:
            items = [str(i) for i in item["items"]]
            lists[item["list"]] = items if max_items is None else items[:max_items]
        elif "macro" in item:
            macros[item["macro"]] = _substitute(item["condition"], lists, macros)
        elif "rule" in item:
            out[item["rule"]] = _substitute(item["condition"], lists, macros)
    return out


def _substitute(condition: str, lists: dict[str, list[str]], macros: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(0)
        if name in macros:
            return f"({macros[name]})"
        if name in lists:
            return ", ".join(lists[name])
        return name

    return _IDENT.sub(repl, condition)


_IN = re.compile(r"\bin \(([^()]*)\)( and\b)?")
_V6_CIDR = re.compile(r'"[0-9a-f.]*:[0-9a-f:.]*/[0-9]+"')
# A placeholder of the same shape (TEST-NET-1) where sysdig 0.29 cannot compile an IPv6 CIDR.
_V4_STAND_IN = '"192.0.2.0/24"'


def in_lists(condition: str) -> list[list[str]]:
    """The values of every ``in (...)`` of a condition, quotes removed."""
    return [[v.strip().strip('"') for v in m.group(1).split(",")] for m in _IN.finditer(condition)]


def network_leaves(condition: str) -> list[str]:
    """The networks a guarded network macro lists: every ``in (...)`` but the guards (followed by ``and``)."""
    return [v.strip().strip('"') for m in _IN.finditer(condition) if not m.group(2) for v in m.group(1).split(",")]


def block_items(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per list or network macro name, its items (lists) or the networks of its leaves (``*_networks`` macros)."""
    out: dict[str, list[str]] = {}
    for d in docs:
        if "list" in d:
            out[d["list"]] = [str(i) for i in d["items"]]
        elif "macro" in d and d["macro"].endswith("_networks"):
            out[d["macro"]] = network_leaves(d["condition"])
    return out


def drop_ipv6_networks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Debian's sysdig 0.29 predates IPv6 CIDRs in fd.snet/fd.cnet (Falco 0.44 has them): leave them out of
    network lists, and in the guarded network macros put an IPv4 CIDR in their place (the structure still
    compiles; tests/core/test_scale_correctness.py checks what the IPv6 parts match)."""
    out: list[dict[str, Any]] = []
    for d in docs:
        if "list" in d and d["list"].endswith("_networks"):
            out.append({"list": d["list"], "items": [i for i in d["items"] if ipaddress.ip_network(i).version == 4]})
        elif "macro" in d and d["macro"].endswith("_networks"):
            out.append({"macro": d["macro"], "condition": _V6_CIDR.sub(_V4_STAND_IN, d["condition"])})
        else:
            out.append(d)
    return out


def sysdig() -> str:
    path = shutil.which("sysdig")
    assert path, "sysdig not installed: run scripts/test.sh (apt-get install -y --no-install-recommends sysdig)"
    return path


def sysdig_compile(condition: str) -> str | None:
    """``None`` when sysdig's filter compiler accepts the condition, else its error line."""
    assert len(condition.encode()) < SYSDIG_ARG_LIMIT, "keep sysdig samples under 128 KiB"
    cmd = [sysdig(), "-r", "/dev/null", condition]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    text = proc.stdout + proc.stderr
    if "filter error" in text:
        return next(line for line in text.splitlines() if "filter error" in line)
    assert "Could not initialize reader" in text, f"unexpected sysdig output: {text[:500]}"
    return None
