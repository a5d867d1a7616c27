"""A model of what Falco does with a rule's ``exceptions`` and how it evaluates the conditions we emit (tests only).

- :func:`with_exceptions`: the condition Falco compiles for a rule with exceptions. It follows Falco's rule loader
  (userspace/engine/rule_loader_compiler.cpp, ``build_rule_exception_infos``, read in falco 0.44): the condition in
  parentheses, then per exception `` and not (( f1 c1 v1 and f2 c2 v2) or ( ...))``; a value is wrapped in double
  quotes only when it holds a space and is not quoted yet, a list value becomes ``(a, b)``, a single value of a
  list operator (``in``, ``pmatch``, ``intersects``) is put in parentheses.
- :func:`evaluate`: the boolean value of such a condition for one event (a mapping of field to value) for the subset
  of Falco's filter language our rules and exceptions use: ``and``/``or``/``not``, parentheses, ``=``, ``!=``,
  ``<``..``>=``, ``in``, ``pmatch``, ``startswith``, ``endswith``, ``contains``, ``glob``; ``fd.*net`` fields test
  the event's address of that side against networks. A field the event lacks makes its comparison false, as in Falco.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

LIST_OPERATORS = {"in", "pmatch", "intersects"}
_NET_SIDE = {"fd.snet": "fd.sip", "fd.cnet": "fd.cip", "fd.lnet": "fd.lip", "fd.rnet": "fd.rip"}
_NUMERIC = {"fd.sport", "fd.cport", "fd.lport", "fd.rport", "fd.typechar"}
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\(|\)|,|!=|<=|>=|=|<|>|[^\s(),=<>!"]+)')
_OPERATORS = {"=", "!=", "<", "<=", ">", ">=", "in", "pmatch", "startswith", "endswith", "contains", "glob"}


def _quote_item(value: str) -> str:
    return f'"{value}"' if " " in value and value[:1] not in ('"', "'") else value


def with_exceptions(condition: str, rule: Mapping[str, Any]) -> str:
    """``condition`` (the rule's, lists and macros expanded) as Falco builds it with the rule's exceptions."""
    exceptions = rule.get("exceptions") or []
    if not exceptions:
        return condition
    out = f"({condition})"
    for ex in exceptions:
        fields = ex["fields"]
        if isinstance(fields, str):  # Falco's single-field form: `field comp (v1, v2)`
            comp = ex.get("comps") or "in"
            icond = f"({fields} {comp} ({', '.join(_quote_item(str(v)) for v in ex['values'])}))"
        else:
            comps = ex.get("comps") or ["="] * len(fields)
            rows = []
            for row in ex["values"]:
                assert len(row) == len(fields), "Falco: fields and values lists must have equal length"
                parts = []
                for field, comp, value in zip(fields, comps, row, strict=True):
                    if isinstance(value, list):
                        text = "(" + ", ".join(_quote_item(str(v)) for v in value) + ")"
                    elif comp in LIST_OPERATORS:
                        text = value if str(value).startswith("(") else f"({value})"
                    else:
                        text = _quote_item(str(value))
                    parts.append(f" {field} {comp} {text}")
                rows.append("(" + " and ".join(parts) + ")")
            icond = "(" + " or ".join(rows) + ")"
            if icond == "()":
                continue
        out += f" and not {icond}"
    return out


# ------------------------------------------------------------------------------------------------ evaluation
def _tokens(condition: str) -> list[str]:
    out, pos = [], 0
    while pos < len(condition):
        if condition[pos:].strip() == "":
            break
        m = _TOKEN.match(condition, pos)
        assert m, f"cannot read the condition at {condition[pos : pos + 40]!r}"
        out.append(m.group(1))
        pos = m.end()
    return out


def _unquote(token: str) -> str:
    return token[1:-1] if token.startswith('"') else token


class _Parser:
    def __init__(self, condition: str, event: Mapping[str, str]) -> None:
        self.tokens = _tokens(condition)
        self.pos = 0
        self.event = event

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        assert token is not None and (expected is None or token == expected), f"expected {expected}, got {token}"
        self.pos += 1
        return token

    def expr(self) -> bool:
        value = self.conjunction()
        while self.peek() == "or":
            self.take()
            right = self.conjunction()
            value = value or right
        return value

    def conjunction(self) -> bool:
        value = self.negation()
        while self.peek() == "and":
            self.take()
            right = self.negation()
            value = value and right
        return value

    def negation(self) -> bool:
        if self.peek() == "not":
            self.take()
            return not self.negation()
        if self.peek() == "(":
            self.take()
            value = self.expr()
            self.take(")")
            return value
        return self.comparison()

    def comparison(self) -> bool:
        field = self.take()
        op = self.take()
        assert op in _OPERATORS, f"unsupported operator {op!r} after {field}"
        if op in LIST_OPERATORS:
            self.take("(")
            values = []
            while self.peek() != ")":
                values.append(_unquote(self.take()))
                if self.peek() == ",":
                    self.take()
            self.take(")")
        else:
            values = [_unquote(self.take())]
        return _compare(field, op, values, self.event)


def _compare(field: str, op: str, values: list[str], event: Mapping[str, str]) -> bool:
    if field in _NET_SIDE:
        address = event.get(_NET_SIDE[field])
        if address is None:
            return False
        ip = ipaddress.ip_address(address)
        return any(ip in ipaddress.ip_network(v) for v in values)
    actual = event.get(field)
    if actual is None:
        return False
    if field.endswith(("ip", ".sip", ".cip")) and op in ("=", "!=", "in"):
        same = any(ipaddress.ip_address(actual) == ipaddress.ip_address(v) for v in values)
        return not same if op == "!=" else same
    if op in ("<", "<=", ">", ">="):
        a, b = int(actual), int(values[0])
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if field in _NUMERIC and op in ("=", "!=", "in"):
        same = any(int(actual) == int(v) for v in values)
        return not same if op == "!=" else same
    value = values[0]
    results = {
        "=": actual == value,
        "!=": actual != value,
        "startswith": actual.startswith(value),
        "endswith": actual.endswith(value),
        "contains": value in actual,
        "glob": fnmatch.fnmatchcase(actual, value),
    }
    if op == "in":
        return actual in values
    if op == "pmatch":
        return any(actual == p or actual.startswith(p.rstrip("/") + "/") for p in values)
    return results[op]


def evaluate(condition: str, event: Mapping[str, str]) -> bool:
    """Whether ``condition`` matches ``event`` (field -> value as Falco would extract it)."""
    parser = _Parser(condition, event)
    value = parser.expr()
    assert parser.peek() is None, f"trailing tokens from {parser.peek()!r}"
    return value
