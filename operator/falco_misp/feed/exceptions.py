"""Falco rule exceptions as data: the fields a feed may except on and how strictly each value is read (pure).

``spec.falco.exceptions`` (and a MispAllowList's ``spec.exceptions``) are Falco's own rule ``exceptions`` (``name``,
``fields``, ``comps``, ``values``): Falco appends ``and not ((f1 c1 v1 and f2 c2 v2) or ...)`` to the condition of
each rule that carries them, so an excepted connection raises no alert (and so never becomes a MISP sighting).
Falco pastes every value into the condition text unescaped, so each value is held to a strict character class
for its field's type here, the way indicators are (numbers for ports, ``ipaddress`` for addresses and networks, a
short safe charset for names and paths): nothing a spec holds can break out of the YAML or the condition. The
fields are a fixed allow-list (:data:`FIELDS`) of what a network rule can sensibly be excepted on; the operators
are Falco's, restricted to those meaningful for each field type.

The container and Kubernetes fields (``container.image.repository``, ``k8s.ns.name``, ``k8s.pod.name``) come from
Falco's container plugin (loaded by default by the falcosecurity chart): a rule naming them fails to load in a
Falco without it (reference/FALCO.md), which is why only exceptions, never our conditions, use them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from falco_misp.errors import SpecError

#: Operators whose value is a list (``in``) or a set of path prefixes (``pmatch``): Falco writes ``f op (a, b)``.
LIST_COMPS = frozenset({"in", "pmatch"})
MAX_EXCEPTIONS = 64
"""Exceptions per feed, its allow-lists' included (each is pasted into every rule of every shard)."""
MAX_FIELDS = 8
"""Fields per exception."""
MAX_ROWS = 256
"""Value rows per exception."""
MAX_LIST_ITEMS = 256
"""Items of one ``in``/``pmatch`` value."""
EXCEPTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
"""An exception's name as written in a spec (unique within its feed or allow-list)."""


@dataclass(frozen=True)
class FieldType:
    """How the values of one kind of Falco field are read."""

    name: str
    """What the values are, for error messages (``a port 0-65535``)."""
    comps: tuple[str, ...]
    """The Falco operators allowed on it (the first is the default when ``comps`` is omitted: ``=``)."""
    pattern: re.Pattern[str] | None = None
    """The strict character class of a value (None: parsed instead, see :func:`check_value`)."""
    glob: re.Pattern[str] | None = None
    """The wider class a ``glob`` value may use (``*`` and ``?`` added)."""
    absolute: bool = False
    """Paths: ``=``, ``!=``, ``in``, ``startswith`` and ``pmatch`` values must start with ``/``."""


_STRING_COMPS = ("=", "!=", "in", "startswith", "endswith", "contains", "glob")
PORT = FieldType("a port 0-65535", ("=", "!=", "<", "<=", ">", ">=", "in"), re.compile(r"^[0-9]{1,5}$"))
ADDRESS = FieldType("an IPv4 or IPv6 address", ("=", "!=", "in"))
NETWORK = FieldType("an IPv4 or IPv6 CIDR (no host bits)", ("=", "in"))
PROTO = FieldType("one of tcp, udp, icmp, raw", ("=", "!=", "in"), re.compile(r"^(tcp|udp|icmp|raw)$"))
PROCESS = FieldType(
    "a process name of letters, digits and . _ + @ : - (at most 255)",
    _STRING_COMPS,
    re.compile(r"^[A-Za-z0-9._+@:-]{1,255}$"),
    re.compile(r"^[A-Za-z0-9._+@:*?-]{1,255}$"),
)
PATH = FieldType(
    "a path of letters, digits and / . _ + @ : - (at most 1024)",
    (*_STRING_COMPS, "pmatch"),
    re.compile(r"^[A-Za-z0-9/._+@:-]{1,1024}$"),
    re.compile(r"^[A-Za-z0-9/._+@:*?-]{1,1024}$"),
    absolute=True,
)
USER = FieldType(
    "a user name of letters, digits and . _ - (at most 64)",
    _STRING_COMPS,
    re.compile(r"^[A-Za-z0-9._-]{1,64}$"),
    re.compile(r"^[A-Za-z0-9._*?-]{1,64}$"),
)
IMAGE = FieldType(
    "an image repository of lower-case letters, digits and / . _ : - (at most 255)",
    _STRING_COMPS,
    re.compile(r"^[a-z0-9][a-z0-9/._:-]{0,254}$"),
    re.compile(r"^[a-z0-9*?][a-z0-9/._:*?-]{0,254}$"),
)
DNS_LABEL = FieldType(
    "a lower-case DNS label (at most 63)",
    _STRING_COMPS,
    re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"),
    re.compile(r"^[-a-z0-9*?]{1,63}$"),
)
DNS_SUBDOMAIN = FieldType(
    "a lower-case DNS subdomain (at most 253)",
    _STRING_COMPS,
    re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"),
    re.compile(r"^[-a-z0-9.*?]{1,253}$"),
)

#: The fields an exception may name, and how each one's values are read. Syscall fields are always there;
#: container.* and k8s.* need Falco's container plugin (see the module docstring).
FIELDS: Mapping[str, FieldType] = {
    "proc.name": PROCESS,
    "proc.pname": PROCESS,
    "proc.exepath": PATH,
    "user.name": USER,
    "fd.sport": PORT,
    "fd.cport": PORT,
    "fd.lport": PORT,
    "fd.rport": PORT,
    "fd.sip": ADDRESS,
    "fd.cip": ADDRESS,
    "fd.lip": ADDRESS,
    "fd.rip": ADDRESS,
    "fd.snet": NETWORK,
    "fd.cnet": NETWORK,
    "fd.lnet": NETWORK,
    "fd.rnet": NETWORK,
    "fd.l4proto": PROTO,
    "container.image.repository": IMAGE,
    "k8s.ns.name": DNS_LABEL,
    "k8s.pod.name": DNS_SUBDOMAIN,
}
#: Fields that exist only with Falco's container plugin.
PLUGIN_FIELDS = frozenset(f for f in FIELDS if f.startswith(("container.", "k8s.")))


def check_field(field: object, path: str) -> str:
    """A field name from the allow-list."""
    if not isinstance(field, str) or field not in FIELDS:
        raise SpecError(path, f"unsupported field {field!r}; supported: {', '.join(FIELDS)}")
    return field


def check_comp(field: str, comp: object, path: str) -> str:
    """A Falco operator allowed on ``field``."""
    allowed = FIELDS[field].comps
    if not isinstance(comp, str) or comp not in allowed:
        raise SpecError(path, f"operator {comp!r} is not allowed on {field}; use one of {', '.join(allowed)}")
    return comp


def check_value(field: str, comp: str, value: object, path: str) -> str:
    """One value of ``field`` compared with ``comp``, in its canonical text (addresses and networks normalised).

    Raises :class:`SpecError` naming ``path`` and the value unless it matches the field type's strict class.
    """
    kind = FIELDS[field]
    if kind is PORT and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise SpecError(path, f"expected {kind.name} for {field}, got {value!r}")
    if kind is ADDRESS:
        return _address(field, value, path)
    if kind is NETWORK:
        return _network(field, value, path)
    pattern = kind.glob if comp == "glob" and kind.glob is not None else kind.pattern
    assert pattern is not None
    if not pattern.match(value):
        raise SpecError(path, f"expected {kind.name} for {field}, got {value!r}")
    if kind is PORT and (int(value) > 65535 or (len(value) > 1 and value.startswith("0"))):
        raise SpecError(path, f"expected {kind.name} for {field}, got {value!r}")
    if kind.absolute and comp in ("=", "!=", "in", "startswith", "pmatch") and not value.startswith("/"):
        raise SpecError(path, f"expected an absolute path (starting with /) for {field} {comp}, got {value!r}")
    return value


def _address(field: str, value: str, path: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise SpecError(path, f"expected {ADDRESS.name} for {field}, got {value!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and (address.ipv4_mapped is not None or address.scope_id):
        # Falco reads a value with a '.' as IPv4 and knows no zone ids (reference/FALCO.md)
        raise SpecError(path, f"write the IPv4 address itself (no ::ffff: form, no zone id) for {field}, got {value!r}")
    return str(address)


def _network(field: str, value: str, path: str) -> str:
    if "/" not in value:
        raise SpecError(path, f"expected {NETWORK.name} for {field} (a single address: /32 or /128), got {value!r}")
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise SpecError(path, f"expected {NETWORK.name} for {field}, got {value!r} ({exc})") from None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
        raise SpecError(path, f"write the IPv4 network itself (no ::ffff: form) for {field}, got {value!r}")
    return str(network)
