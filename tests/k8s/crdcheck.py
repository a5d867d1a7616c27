"""The one place the tests check the MispFeed CRD the way a real kube-apiserver (v1.32) does.

kmock checks none of this (shared/reference/KUBERNETES.md), so what a real server rejects is re-checked here:

* :func:`crd_problems`: the CRD itself. The ``metadata`` restriction (only ``type: object`` and restrictions on
  ``name``/``generateName``), the structural-schema rules (every node typed unless ``x-kubernetes-int-or-string`` or
  ``x-kubernetes-preserve-unknown-fields`` allows otherwise, no ``nullable`` without a type, arrays with typed
  ``items``, ...), defaults valid against their own node (schema and CEL rules) and none inside ``metadata``, and
  every ``x-kubernetes-validations`` rule compiled with a real CEL implementation (PyPI
  ``common-expression-language``). Since that library has no type checker, two checks stand in for the server's:
  every ``self.a.b`` chain must name fields of the schema, and every function must be one Kubernetes declares.
  The cost budget is not estimated.
* :func:`admission_errors`: what the server says when an object is created: defaults applied, then the OpenAPI
  schema (:func:`validate`) and every CEL rule (:func:`rule_failures`), each evaluated with ``self`` bound to the
  value of the node the rule sits on, only where that node is present (``oldSelf`` absent: transition rules are
  skipped, as on create).

Problems of the CRD are reported in the server's words where they were measured (the metadata one), with paths in
the server's form (``spec.validation.openAPIV3Schema.properties[metadata]``).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cel
import yaml
from cel import stdlib as cel_stdlib

from falco_misp.feed.model import KIND

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "deploy" / "crds" / "mispfeeds.falco-misp.io.yaml"

METADATA_FORBIDDEN = (
    "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"
)

# Functions of the CEL environment of a v1.32 kube-apiserver that this checker knows (CEL's standard definitions,
# cel-go's strings extension, the Kubernetes list, regex, URL, IP/CIDR, quantity and format libraries). A rule
# calling anything else is reported: it is a typo, or a function to add here once checked against the docs.
KUBERNETES_CEL_FUNCTIONS = frozenset(
    {
        # standard definitions and macros
        "size", "matches", "contains", "startsWith", "endsWith", "int", "uint", "double", "string", "bytes", "bool",
        "type", "dyn", "duration", "timestamp", "has", "all", "exists", "exists_one", "map", "filter",
        "getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getHours",
        "getMinutes", "getSeconds", "getMilliseconds",
        # cel-go strings extension
        "charAt", "indexOf", "lastIndexOf", "lowerAscii", "upperAscii", "replace", "split", "substring", "trim",
        "join", "format",
        # Kubernetes libraries
        "isSorted", "sum", "min", "max", "find", "findAll", "url", "isURL", "getScheme", "getHost", "getHostname",
        "getPort", "getEscapedPath", "getQuery", "ip", "isIP", "cidr", "isCIDR", "quantity", "isQuantity",
    }
)  # fmt: skip
# Identifiers CEL itself binds (type names), besides the rule's variables.
CEL_TYPE_NAMES = frozenset({"int", "uint", "double", "string", "bool", "bytes", "list", "map", "null_type", "type"})
RULE_VARIABLES = frozenset({"self", "oldSelf"})

# Schema keywords a v1 CRD accepts on a node; anything else is rejected by the server or unsupported here.
_KNOWN_KEYWORDS = frozenset(
    {
        "type", "description", "properties", "additionalProperties", "items", "required", "enum", "pattern",
        "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength",
        "maxLength", "minItems", "maxItems", "minProperties", "maxProperties", "nullable", "default", "example",
        "title", "externalDocs", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
        "x-kubernetes-embedded-resource", "uniqueItems", "anyOf", "oneOf", "allOf", "not",
    }
)  # fmt: skip
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ValueError(f"{path}: expected one CustomResourceDefinition document")
    return docs[0]


def schema_of(crd: dict[str, Any], version: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][version]["schema"]["openAPIV3Schema"]
    return schema


def example_feeds() -> list[tuple[str, dict[str, Any]]]:
    """(path under examples/, document) of every MispFeed document under examples/, subfolders included."""
    out = []
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        namespace = _kustomized_namespace(path)
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == KIND:
                if namespace and "namespace" not in (doc.get("metadata") or {}):  # as `kubectl apply -k` sets it
                    doc["metadata"] = {**doc["metadata"], "namespace": namespace}
                out.append((str(path.relative_to(REPO / "examples")), doc))
    return out


def _kustomized_namespace(path: Path) -> str | None:
    """The ``namespace`` of the nearest kustomization.yaml above ``path`` under examples/ (None: none)."""
    for folder in path.parents:
        if folder == REPO or REPO / "examples" not in (folder, *folder.parents):
            return None
        kustomization = folder / "kustomization.yaml"
        if kustomization.is_file():
            found = yaml.safe_load(kustomization.read_text(encoding="utf-8")) or {}
            return str(found["namespace"]) if found.get("namespace") else None
    return None


# ------------------------------------------------------------------------------------------- schema walking
def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its data path (``.spec.filters.anyOf[].tags.any[]``, ``.status.indicators.byKind.*``)."""
    yield path, schema
    for key, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}.*")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")


def _server_nodes(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Every node with its path as the server writes it (``...properties[spec].items``) and its data path."""

    def walk(node: dict[str, Any], at: str, data: str) -> Iterator[tuple[str, dict[str, Any], str]]:
        yield at, node, data
        for key, child in (node.get("properties") or {}).items():
            if isinstance(child, dict):
                yield from walk(child, f"{at}.properties[{key}]", f"{data}.{key}")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{at}.additionalProperties", f"{data}.*")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{at}.items", f"{data}[]")

    yield from walk(schema, path, "")


def rules_of(schema: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(data path of the node, index, rule) of every ``x-kubernetes-validations`` rule."""
    return [
        (path, i, rule)
        for path, node in nodes(schema)
        for i, rule in enumerate(node.get("x-kubernetes-validations", []))
    ]


# ------------------------------------------------------------------------------------- OpenAPI validation
def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Errors of ``value`` against an OpenAPI v3 (structural) schema node; CEL rules are :func:`rule_failures`."""
    if value is None:
        return [] if schema.get("nullable") else [f"{path}: must not be null"]
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        return [] if ok else [f"{path}: expected an integer or a string"]
    kind = schema.get("type")
    if kind is None:
        return []  # x-kubernetes-preserve-unknown-fields without a type: anything
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if not checks[kind](value):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if kind == "string":
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 10**9):
            errors.append(f"{path}: length {len(value)} out of bounds")
    if kind in ("integer", "number") and not schema.get("minimum", -(10**18)) <= value <= schema.get("maximum", 10**18):
        errors.append(f"{path}: {value} out of bounds")
    if kind == "array":
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 10**9):
            errors.append(f"{path}: {len(value)} items out of bounds")
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    if kind == "object":
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}.{key}: required")
        for key, item in value.items():
            if key in props:
                errors += validate(item, props[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(item, schema["additionalProperties"], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and path != ".metadata":
                errors.append(f"{path}.{key}: unknown field")
    return errors


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """What the API server's defaulting does before validation: fill absent properties that have a default."""
    if isinstance(value, dict) and schema.get("type") == "object":
        out = dict(value)
        for key, child in schema.get("properties", {}).items():
            if out.get(key, 0) is None and not child.get("nullable") and "default" in child:
                del out[key]  # a null where null is not allowed is pruned, then defaulted
            if key not in out and "default" in child:
                out[key] = copy.deepcopy(child["default"])
            if key in out:
                out[key] = apply_defaults(out[key], child)
        if isinstance(schema.get("additionalProperties"), dict):
            extra = schema["additionalProperties"]
            for key in set(out) - set(schema.get("properties", {})):
                out[key] = apply_defaults(out[key], extra)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- CEL rules
@dataclass(frozen=True)
class RuleFailure:
    """A rule that rejected a value: where (the node's path plus the rule's fieldPath), and the server's message."""

    path: str
    message: str
    rule: str


@functools.cache
def compiled(expression: str) -> Any:
    """The CEL program of a rule; raises ValueError on a syntax error."""
    return cel.compile(expression)


def _context(value: Any) -> Any:
    ctx = cel.Context(variables={"self": value})
    # substring, lowerAscii... (cel-go's strings extension, as in Kubernetes). It adds functions Kubernetes lacks
    # too (first, math.*): rule_problems refuses those at compile time (KUBERNETES_CEL_FUNCTIONS).
    cel_stdlib.add_stdlib_to_context(ctx)
    return ctx


_METADATA_CEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
}


def cel_value(value: Any, schema: dict[str, Any]) -> Any:
    """The value as Kubernetes gives it to CEL: a ``type: number`` value is a double even when written as an integer
    (the root's ``metadata``, of which CEL sees only name and generateName: :func:`_root_cel_value`)."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and schema.get("type") == "object":
        props = dict(schema.get("properties", {}))
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            child = props.get(key, extra if isinstance(extra, dict) else {})
            out[key] = cel_value(item, child)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [cel_value(v, schema["items"]) for v in value]
    return value


def _root_cel_value(doc: Any, schema: dict[str, Any]) -> Any:
    value = cel_value(doc, schema)
    if isinstance(value, dict) and isinstance(value.get("metadata"), dict):
        value["metadata"] = {k: v for k, v in value["metadata"].items() if k in _METADATA_CEL_SCHEMA["properties"]}
    return value


def _uses_old_self(rule: dict[str, Any]) -> bool:
    return "oldSelf" in compiled(rule["rule"]).references()["variables"]


def evaluate_rule(rule: dict[str, Any], value: Any) -> bool | str:
    """True or False, or the evaluation error as text (the server rejects the object then too)."""
    try:
        result = compiled(rule["rule"]).execute(_context(value))
    except Exception as error:  # the library raises KeyError, TypeError, RuntimeError... for runtime errors
        return f"evaluation error: {type(error).__name__}: {error}"
    if not isinstance(result, bool):
        return f"evaluation error: the rule gave {type(result).__name__}, not bool"
    return result


def _message(rule: dict[str, Any], value: Any) -> str:
    if "messageExpression" in rule:
        try:
            text = compiled(rule["messageExpression"]).execute(_context(value))
            if isinstance(text, str) and text:
                return text
        except Exception:  # the server then falls back to message (or a generic one)
            pass
    return str(rule.get("message") or f"failed rule: {rule['rule']}")


def rule_failures(doc: Any, schema: dict[str, Any], evaluated: set[tuple[str, int]] | None = None) -> list[RuleFailure]:
    """Every rule of ``schema`` that rejects ``doc`` (taken as it is: apply defaults first, see
    :func:`admission_errors`). ``evaluated`` collects (schema path, index) of the rules that were evaluated."""
    failures: list[RuleFailure] = []

    def walk(value: Any, node: dict[str, Any], data_path: str, schema_path: str, cel_self: Any) -> None:
        if value is None:
            return
        for i, rule in enumerate(node.get("x-kubernetes-validations", [])):
            if _uses_old_self(rule):
                continue  # a transition rule: evaluated on update only
            if evaluated is not None:
                evaluated.add((schema_path, i))
            outcome = evaluate_rule(rule, cel_self)
            if outcome is not True:
                where = data_path + rule.get("fieldPath", "")
                text = _message(rule, cel_self) if outcome is False else f"{outcome} ({rule['rule']})"
                failures.append(RuleFailure(where, text, rule["rule"]))
        if isinstance(value, dict) and node.get("type") == "object":
            props = node.get("properties", {})
            extra = node.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    child, child_path = props[key], f"{schema_path}.{key}"
                elif isinstance(extra, dict):
                    child, child_path = extra, f"{schema_path}.*"
                else:
                    continue
                walk(item, child, f"{data_path}.{key}", child_path, cel_value(item, child))
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            items = node["items"]
            for i, item in enumerate(value):
                walk(item, items, f"{data_path}[{i}]", f"{schema_path}[]", cel_value(item, items))

    walk(doc, schema, "", "", _root_cel_value(doc, schema))
    return failures


def admission_errors(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """What creating ``doc`` would be refused for: defaults applied, then the schema and the CEL rules."""
    defaulted = apply_defaults(doc, schema)
    errors = validate(defaulted, schema)
    errors += [f"{f.path}: {f.message}" for f in rule_failures(defaulted, schema)]
    return errors


# --------------------------------------------------------------------------------- the CRD, as the server
_STRING_LITERAL = re.compile(r"""[rR]?('''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")""", re.S)
_SELF_CHAIN = re.compile(r"(?<![.\w])(self|oldSelf)((?:\s*\.\s*[A-Za-z_]\w*)+)(\s*\()?")
_COMPREHENSION_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


def _field_problems(expression: str, node: dict[str, Any], at_root: bool) -> list[str]:
    """Fields a rule reads that its node's schema does not have (the server's type checker rejects them)."""
    problems = []
    text = _STRING_LITERAL.sub("''", expression)
    for match in _SELF_CHAIN.finditer(text):
        names = re.findall(r"[A-Za-z_]\w*", match.group(2))
        if match.group(3):
            names = names[:-1]  # the last one is a method: self.x.size()
        current: dict[str, Any] | None = node
        reached = match.group(1)
        for depth, name in enumerate(names):
            if current is None or current.get("x-kubernetes-preserve-unknown-fields"):
                break
            if current.get("x-kubernetes-int-or-string") or current.get("type") not in (None, "object"):
                problems.append(f"{reached} is not an object, it has no field {name!r}")
                break
            if at_root and depth == 0 and name == "metadata":
                current = _METADATA_CEL_SCHEMA
            elif name in current.get("properties", {}):
                current = current["properties"][name]
            elif isinstance(current.get("additionalProperties"), dict):
                current = current["additionalProperties"]
            else:
                problems.append(f"undefined field {name!r} of {reached}")
                break
            reached = f"{reached}.{name}"
    return problems


def rule_problems(expression: str, node: dict[str, Any], at_root: bool = False) -> list[str]:
    """Why the server would refuse to compile ``expression`` on ``node`` (empty when it compiles)."""
    try:
        program = compiled(expression)
    except Exception as error:
        return [f"compilation failed: {error}"]
    references = program.references()
    bound = set(_COMPREHENSION_VARIABLE.findall(expression))
    problems = [
        f"undeclared reference to {name!r}"
        for name in references["variables"]
        if name not in RULE_VARIABLES | CEL_TYPE_NAMES | bound
    ]
    problems += [
        f"undeclared function {name!r} (not in Kubernetes' CEL environment)"
        for name in references["functions"]
        if re.fullmatch(r"[A-Za-z_][\w.]*", name) and name not in KUBERNETES_CEL_FUNCTIONS
    ]
    return problems + _field_problems(expression, node, at_root)


def _schema_base(crd: dict[str, Any], version: int) -> str:
    """The server's path to a version's schema: spec.validation when every version has the same one."""
    versions = crd["spec"]["versions"]
    schemas = [v.get("schema") for v in versions]
    if all(s == schemas[0] for s in schemas):
        return "spec.validation.openAPIV3Schema"
    return f"spec.versions[{version}].schema.openAPIV3Schema"


def _metadata_problems(metadata: Any, at: str) -> list[str]:
    if not isinstance(metadata, dict):
        return [f"{at}: Invalid value: must be a schema"]
    props = metadata.get("properties", {})
    only_restrictions = set(metadata) <= {"type", "properties"} and metadata.get("type", "object") == "object"
    if not only_restrictions or not isinstance(props, dict) or not set(props) <= {"name", "generateName"}:
        return [f"{at}: {METADATA_FORBIDDEN}"]
    problems = []
    for key, child in props.items():
        allowed = {"type", "pattern", "maxLength", "minLength", "format", "enum"}
        if not isinstance(child, dict) or not set(child) <= allowed or child.get("type", "string") != "string":
            problems.append(f"{at}.properties[{key}]: Forbidden: only type string and its restrictions are allowed")
    return problems


def _structural_problems(at: str, node: dict[str, Any], data: str, is_root: bool) -> list[str]:
    problems = [f"{at}.{key}: Forbidden: not a CRD schema keyword" for key in node if key not in _KNOWN_KEYWORDS]
    for junctor in ("anyOf", "oneOf", "allOf", "not"):
        if junctor in node:  # a property *named* anyOf lives under "properties", not here
            problems.append(f"{at}.{junctor}: not supported by this checker (structural only with care)")
    kind = node.get("type")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        problems.append(f"{at}.x-kubernetes-preserve-unknown-fields: Invalid value: must be true or undefined")
    if kind is not None and kind not in _TYPES:
        problems.append(f"{at}.type: Unsupported value: {kind!r}")
    if is_root and kind != "object":
        problems.append(f"{at}.type: Invalid value: must be object at the root")
    if int_or_string and kind is not None:
        problems.append(f"{at}.type: Forbidden: must be empty with x-kubernetes-int-or-string")
    if kind is None and not int_or_string and preserve is not True:
        problems.append(f"{at}.type: Required value: must not be empty for specified fields and items")
    if node.get("nullable") and kind is None:
        problems.append(f"{at}.nullable: Forbidden: nullable needs a type")
    if kind == "array" and not isinstance(node.get("items"), dict):
        problems.append(f"{at}.items: Required value: must be specified (one typed schema) for an array")
    if "items" in node and kind != "array":
        problems.append(f"{at}.items: Forbidden: only for type array")
    if ("properties" in node or "additionalProperties" in node) and kind != "object" and preserve is not True:
        problems.append(f"{at}.properties: Forbidden: only for type object")
    if "properties" in node and "additionalProperties" in node:
        problems.append(
            f"{at}.additionalProperties: Forbidden: additionalProperties and properties are mutually exclusive"
        )
    if node.get("additionalProperties") is False:
        problems.append(f"{at}.additionalProperties: Forbidden: must not be false")
    if node.get("uniqueItems") is True:
        problems.append(f"{at}.uniqueItems: Forbidden: uniqueItems cannot be set to true")
    for key in node.get("required", []):
        if key not in node.get("properties", {}) and not isinstance(node.get("additionalProperties"), dict):
            problems.append(f"{at}.required: Invalid value: {key!r} is not a property")
    list_type = node.get("x-kubernetes-list-type")
    if list_type is not None:
        items = node.get("items") or {}
        if list_type not in ("atomic", "set", "map"):
            problems.append(f"{at}.x-kubernetes-list-type: Unsupported value: {list_type!r}")
        if list_type == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            if items.get("type") != "object" or not keys:
                problems.append(f"{at}: x-kubernetes-list-type map needs object items and x-kubernetes-list-map-keys")
            for key in keys:
                field = items.get("properties", {}).get(key)
                if field is None or field.get("type") not in ("string", "integer", "boolean", "number"):
                    problems.append(f"{at}.x-kubernetes-list-map-keys: Invalid value: {key!r} is not a scalar property")
                elif key not in items.get("required", []) and "default" not in field:
                    problems.append(
                        f"{at}.x-kubernetes-list-map-keys: Invalid value: {key!r} must be required or defaulted"
                    )
        if list_type == "set" and items.get("type") in ("object", "array"):
            problems.append(f"{at}.x-kubernetes-list-type: Invalid value: a set needs scalar items")
    return problems


def _default_problems(at: str, node: dict[str, Any], data: str) -> list[str]:
    if "default" not in node:
        return []
    if data == ".metadata" or data.startswith(".metadata."):
        return [f"{at}.default: Forbidden: must not be set inside metadata"]
    value = node["default"]
    problems = [f"{at}.default: Invalid value: {e}" for e in validate(value, node, data)]
    if not problems:
        cel_self = cel_value(value, node)
        for i, rule in enumerate(node.get("x-kubernetes-validations", [])):
            if rule_problems(rule.get("rule", ""), node) or _uses_old_self(rule):
                continue
            outcome = evaluate_rule(rule, cel_self)
            if outcome is not True:
                text = rule.get("message") if outcome is False else outcome
                problems.append(f"{at}.default: Invalid value: {value!r}: x-kubernetes-validations[{i}]: {text}")
    return problems


def _validation_rule_problems(at: str, node: dict[str, Any], is_root: bool) -> list[str]:
    problems = []
    rules = node.get("x-kubernetes-validations", [])
    if not isinstance(rules, list):
        return [f"{at}.x-kubernetes-validations: Invalid value: must be a list"]
    for i, rule in enumerate(rules):
        where = f"{at}.x-kubernetes-validations[{i}]"
        if not isinstance(rule, dict) or not isinstance(rule.get("rule"), str) or not rule["rule"].strip():
            problems.append(f"{where}.rule: Required value")
            continue
        problems += [f"{where}.rule: Invalid value: {p}" for p in rule_problems(rule["rule"], node, is_root)]
        if "messageExpression" in rule:
            try:
                compiled(rule["messageExpression"])
            except Exception as error:
                problems.append(f"{where}.messageExpression: Invalid value: compilation failed: {error}")
        if "fieldPath" in rule:
            target: dict[str, Any] | None = node
            for name in re.findall(r"\.([A-Za-z_][\w-]*)", rule["fieldPath"]):
                target = (target or {}).get("properties", {}).get(name)
            if not re.fullmatch(r"(\.[A-Za-z_][\w-]*)+", rule["fieldPath"]) or target is None:
                problems.append(f"{where}.fieldPath: Invalid value: {rule['fieldPath']!r} is not a field of this node")
        reason = rule.get("reason")
        if reason is not None and reason not in (
            "FieldValueInvalid",
            "FieldValueForbidden",
            "FieldValueRequired",
            "FieldValueDuplicate",
        ):
            problems.append(f"{where}.reason: Unsupported value: {reason!r}")
    return problems


def crd_problems(crd: dict[str, Any]) -> list[str]:
    """Why a real kube-apiserver would reject ``crd`` (empty when this checker finds nothing)."""
    problems: list[str] = []
    for v, version in enumerate(crd.get("spec", {}).get("versions", [])):
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        base = _schema_base(crd, v)
        if not isinstance(schema, dict):
            problems.append(f"{base}: Required value: a structural schema is required")
            continue
        if "metadata" in schema.get("properties", {}):
            problems += _metadata_problems(schema["properties"]["metadata"], f"{base}.properties[metadata]")
        for at, node, data in _server_nodes(schema, base):
            if data == ".metadata" or data.startswith(".metadata."):
                problems += _default_problems(at, node, data)
                continue  # the restriction above says all about metadata's schema
            problems += _structural_problems(at, node, data, is_root=data == "")
            problems += _default_problems(at, node, data)
            problems += _validation_rule_problems(at, node, is_root=data == "")
    return list(dict.fromkeys(problems))


def convention_problems(schema: dict[str, Any]) -> list[str]:
    """This project's own rules for the schema (the server does not require them): every field documented, every
    object's fields listed (except the root's metadata), every CEL rule with a message."""
    problems: list[str] = []
    for path, node in nodes(schema):
        if path and not path.endswith(".*") and not node.get("description") and path != ".metadata":
            problems.append(f"{path}: no description")
        typed = bool(node.get("properties")) or isinstance(node.get("additionalProperties"), dict)
        if node.get("type") == "object" and path not in ("", ".metadata") and not typed:
            problems.append(f"{path}: an object without properties")
        for rule in node.get("x-kubernetes-validations", []):
            if not rule.get("message"):
                problems.append(f"{path}: a validation rule without a message")
    return problems


def pruned_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of ``value`` (an object or a merge patch) that a real API server would silently prune: not in the
    schema and not under ``x-kubernetes-preserve-unknown-fields`` (reference/KUBERNETES.md)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, list) and "items" in schema:
        return [f for i, item in enumerate(value) for f in pruned_fields(item, schema["items"], f"{path}[{i}]")]
    if not isinstance(value, dict) or schema.get("type") != "object":
        return []
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    found: list[str] = []
    for key, item in value.items():
        if key in props:
            found += pruned_fields(item, props[key], f"{path}.{key}")
        elif isinstance(extra, dict):
            found += pruned_fields(item, extra, f"{path}.{key}")
        elif extra is not True:
            found.append(f"{path}.{key}")
    return found
