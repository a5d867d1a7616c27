"""A feed's rule exceptions as the ``exceptions:`` block of each rule they scope to (pure, deterministic).

Falco's own structure is emitted (``name``, ``fields``, ``comps``, ``values``): Falco appends ``and not ((f1 c1 v1
and f2 c2 v2) or ...)`` to the rule's condition when it loads the file, so the exception costs nothing until the
rule's own condition matched, references no list or macro (every shard stays loadable alone) and shows in
``falco --list`` output as the rule's exception. Each value is validated again here (a Feed may be built without
the parser) and written as a double-quoted Falco string inside a single-quoted YAML scalar (``'"curl"'``): Falco
pastes values into the condition unescaped and replaces any bare word that names a list with its items, so a quoted
value can never turn into a list or break out of the condition (its characters were checked against the field's
class: no quote, space, comma or parenthesis ever reaches this file).

Order is the spec's (the feed's exceptions, then each allow-list's in name order): same spec, same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from falco_misp.errors import RenderError, SpecError
from falco_misp.feed.exceptions import LIST_COMPS, check_comp, check_field, check_value
from falco_misp.feed.model import Direction, Feed, RuleException, RuleKind

# The feed's own names, or `<allow-list>:<name>` (a DNS subdomain, then the name) for a MispAllowList's.
_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?:)?[A-Za-z][A-Za-z0-9_]{0,62}$")
MAX_RULE_EXCEPTION_BYTES = 64 * 1024
"""The ``exceptions:`` text of one rule at most (it is repeated in every rule of every shard)."""
_COMMENT = (
    "  # Falco appends `and not (...)` per exception to the condition; values are Falco strings in double quotes\n"
    "  # (never read as a list name), checked against a strict character class per field.\n"
)


def _value(field: str, comp: str, value: str) -> str:
    try:
        checked = check_value(field, comp, value, "exception")
    except SpecError as exc:
        raise RenderError(f"refusing to render exception value {value!r} of {field}: {exc.message}") from None
    if checked != value:
        raise RenderError(f"refusing to render exception value {value!r} of {field}: not in canonical form")
    return f"'\"{value}\"'"


def _cell(field: str, comp: str, cell: str | tuple[str, ...]) -> str:
    if comp in LIST_COMPS:
        if isinstance(cell, str) or not cell:
            raise RenderError(f"refusing to render exception value {cell!r}: {comp} takes a list")
        return "[" + ", ".join(_value(field, comp, v) for v in cell) + "]"
    if not isinstance(cell, str):
        raise RenderError(f"refusing to render exception value {cell!r}: {comp} takes one value")
    return _value(field, comp, cell)


def render_exception(exception: RuleException) -> str:
    """One exception as an item of a rule's ``exceptions:`` sequence (indented for a top-level rule)."""
    if not _NAME.match(exception.name):
        raise RenderError(f"refusing to render exception name {exception.name!r}")
    fields, comps = exception.fields, exception.comps
    if not fields or len(comps) != len(fields) or not exception.values:
        raise RenderError(f"refusing to render exception {exception.name!r}: fields, comps and values do not match")
    try:
        for field, comp in zip(fields, comps, strict=True):
            check_comp(check_field(field, "exception"), comp, "exception")
    except SpecError as exc:
        raise RenderError(f"refusing to render exception {exception.name!r}: {exc.message}") from None
    lines = [
        f"    - name: {json.dumps(exception.name)}",
        f"      fields: [{', '.join(fields)}]",
        f"      comps: [{', '.join(json.dumps(c) for c in comps)}]",
        "      values:",
    ]
    for row in exception.values:
        if len(row) != len(fields):
            raise RenderError(f"refusing to render exception {exception.name!r}: a row of {len(row)} values")
        cells = (_cell(f, c, v) for f, c, v in zip(fields, comps, row, strict=True))
        lines.append(f"        - [{', '.join(cells)}]")
    return "\n".join(lines)


def exceptions_block(exceptions: Sequence[RuleException], direction: Direction, kind: RuleKind) -> str:
    """The text appended to the ``tags:`` line of the rule of ``direction`` and ``kind`` ("" when none applies)."""
    scoped = [e for e in exceptions if e.applies_to(direction, kind)]
    if not scoped:
        return ""
    names = [e.name for e in scoped]
    if len(set(names)) != len(names):
        raise RenderError(f"refusing to render exceptions {names}: Falco needs unique names per rule")
    text = "\n" + _COMMENT + "  exceptions:\n" + "\n".join(render_exception(e) for e in scoped)
    if len(text.encode()) > MAX_RULE_EXCEPTION_BYTES:
        raise RenderError(
            f"spec.falco.exceptions (with the allow-lists') take {len(text.encode())} bytes per rule, at most "
            f"{MAX_RULE_EXCEPTION_BYTES}: each rule of each shard repeats them; use in lists or networks"
        )
    return text


def rule_exceptions(feed: Feed) -> Mapping[str, str]:
    """Rule template name (``outbound-addresses``...) -> its ``exceptions:`` text, for the templates that get any."""
    exceptions = feed.spec.falco.exceptions
    out: dict[str, str] = {}
    if not exceptions:
        return out
    for direction in Direction:
        for kind in RuleKind:
            text = exceptions_block(exceptions, direction, kind)
            if text:
                out[f"{direction.value}-{kind.value}"] = text
    return out
