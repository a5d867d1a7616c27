"""A MISP server emulator for tests: real HTTP on 127.0.0.1, driven by the real PyMISP client.

Why it exists: the operator's MISP sources must be tested against something that answers like MISP
does, including the ways MISP and the network fail. Mocking PyMISP would only test our guesses about
PyMISP; this emulator lets the real client build its real requests and parse real answers.

What it serves (everything JSON is shaped after MISP 2.5, see ``<shared>/reference/misp``):

* what ``pymisp.PyMISP(...)`` fetches on construction: ``/servers/getVersion``,
  ``/servers/getPyMISPVersion.json``, ``/users/view/me``, ``/attributes/describeTypes.json``;
* ``POST /attributes/restSearch`` with MISP's filter semantics (see :meth:`MispEmulator.search`);
* ``POST /sightings/add`` and ``/sightings/add/<attribute id|uuid>``;
* ``POST /events/index`` (``minimal``: MISP's slim list of every event's id, uuid, timestamp, published);
* changes as MISP makes them, timestamps included (:meth:`MispEmulator.edit_attribute`, ``delete_attribute``,
  ``add_attribute``, ``edit_event``, ``publish_event``, ``delete_event``; issue 14);
* writing events (issue 5): ``POST /events/add``, ``HEAD``/``GET /events/view/<id|uuid>``,
  ``POST /attributes/add/<event id|uuid>`` (one attribute or a list), ``POST /events/publish/<id|uuid>``;
* a MISP static feed built from the loaded events: ``/feed/manifest.json``, ``/feed/hashes.csv``,
  ``/feed/<event uuid>.json`` (no authentication, like a plain web server);
* ``/text/<name>``: plain-text bodies set in :attr:`MispEmulator.texts` (no authentication).

Every request is recorded in :attr:`MispEmulator.requests`. A :class:`Fault` set on
:attr:`MispEmulator.fault` makes the server misbehave: refuse connections, answer too late, answer an
HTTP error, answer non-JSON, cut the body short, answer a JSON of its choosing (a MISP-compatible server
that answers PyMISP's start-up calls without the keys PyMISP expects), or stream a huge body — optionally
only after N successful data requests, so that a fault can hit page 2 of a paged fetch.

Settings for servers that are not quite MISP (issue 11): :attr:`MispEmulator.paging` makes restSearch ignore
``page`` (or ``page`` and ``limit``), :attr:`MispEmulator.result_count` drops the ``X-Result-Count`` header, and
:attr:`MispEmulator.auth_failure_status` answers a wrong key with 401 instead of MISP's 403.

Reference data is never copied into the repository: :meth:`MispEmulator.load_reference` reads it from
the shared directory (``$FALCO_MISP_SHARED`` or ``<repo root>/../shared``).
"""

from __future__ import annotations

import contextlib
import copy
import enum
import functools
import hashlib
import importlib.resources
import ipaddress
import json
import os
import re
import socket
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "DEFAULT_API_KEY",
    "Fault",
    "FaultKind",
    "MispEmulator",
    "Paging",
    "RecordedRequest",
    "iter_reference_events",
    "reference_dir",
    "shared_dir",
]

DEFAULT_API_KEY = "emulator-test-key"
MISP_VERSION = "2.5.1"  # the version of the reference openapi.yaml (MISP/MISP @ bb0909a3)
SHARED_ENV = "FALCO_MISP_SHARED"

AUTH_FAILED = (
    "Authentication failed. Please make sure you pass the API key of an API enabled user along in the "
    "Authorization header."
)
# Messages MISP (CakePHP) puts in "name"/"message" of its JSON error bodies.
_STATUS_MESSAGES: dict[int, str] = {
    400: "Bad Request",
    401: AUTH_FAILED,
    403: AUTH_FAILED,
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "An Internal Error Has Occurred.",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# What a PHP fatal error in front of a JSON answer looks like: 200, JSON content type, not JSON.
INVALID_JSON_BODY = (
    b"<br />\n<b>Fatal error</b>:  Allowed memory size of 134217728 bytes exhausted (tried to allocate "
    b"20480 bytes) in <b>/var/www/MISP/app/Model/Attribute.php</b> on line <b>2421</b><br />\n"
    b'{"response": {"Attribute": ['
)
DEFAULT_WARNINGLIST = frozenset({"8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "google.com", "www.google.com"})

_THREAT_LEVELS = {"high": 1, "medium": 2, "low": 3, "undefined": 4}
_TIME_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_FEED_EVENT_FIELDS = (
    "uuid", "info", "threat_level_id", "analysis", "timestamp", "publish_timestamp", "published", "date",
    "extends_uuid", "protected",
)  # fmt: skip
_FEED_ATTRIBUTE_FIELDS = (
    "uuid", "value", "category", "type", "comment", "data", "deleted", "timestamp", "to_ids",
    "disable_correlation", "first_seen", "last_seen", "object_relation",
)  # fmt: skip
_FEED_OBJECT_FIELDS = (
    "name", "meta-category", "description", "template_uuid", "template_version", "uuid", "timestamp",
    "comment", "first_seen", "last_seen", "deleted",
)  # fmt: skip
# Event fields MISP adds to each attribute's Event with includeContext (besides Tag and Orgc).
_CONTEXT_EVENT_FIELDS = (
    "date", "threat_level_id", "published", "analysis", "timestamp", "publish_timestamp", "sharing_group_id",
    "extends_uuid",
)  # fmt: skip
# restSearch parameters the emulator understands; anything else is ignored and reported.
_SEARCH_PARAMS = frozenset({
    "returnFormat", "page", "limit", "value", "value1", "value2", "type", "category", "org", "tags",
    "event_tags", "eventid", "uuid", "timestamp", "attribute_timestamp", "publish_timestamp", "last",
    "event_timestamp", "from", "to", "published", "to_ids", "deleted", "threat_level_id",
    "enforceWarninglist", "excludeDecayed", "includeEventTags", "includeEventUuid", "includeContext",
    "includeSightings",
})  # fmt: skip
# Parameters PyMISP always sends (as 0 or an empty value) that have no effect on JSON output here.
_NO_OP_PARAMS = frozenset({
    "withAttachments", "metadata", "sgReferenceOnly", "headerless", "includeDecayScore",
    "includeCorrelations", "includeWarninglistHits", "includeProposals",
})  # fmt: skip


def shared_dir() -> Path:
    """The shared directory: ``$FALCO_MISP_SHARED``, else ``<repo root>/../shared``."""
    override = os.environ.get(SHARED_ENV)
    if override:
        return Path(override)
    repo_root = Path(__file__).resolve().parents[2]  # tests/emulators/misp.py -> repo root
    return repo_root.parent / "shared"


def reference_dir() -> Path:
    """Where the real MISP fixtures live (``<shared>/reference/misp``)."""
    return shared_dir() / "reference" / "misp"


def iter_reference_events() -> Iterator[Path]:
    """Every event fixture under the reference directory (what ``load_reference()`` loads)."""
    yield from sorted(p for p in reference_dir().rglob("*.json") if p.name != "manifest.json")


# --------------------------------------------------------------------------------------------- faults


class FaultKind(enum.StrEnum):
    """How the emulator misbehaves."""

    REFUSED = "refused"  # the listening socket is closed: connecting gives ECONNREFUSED
    TIMEOUT = "timeout"  # the answer comes after `delay` seconds (longer than the client waits)
    STATUS = "status"  # an HTTP error status with MISP's JSON error body
    INVALID_JSON = "invalid_json"  # 200 with a body that is not JSON
    TRUNCATED = "truncated"  # 200, Content-Length larger than what is sent, then the connection closes
    JSON = "json"  # `status_code` with the JSON `body` given (e.g. an answer without the keys PyMISP expects)
    LARGE_BODY = "large_body"  # 200, `size` bytes of `body` repeated, streamed (chunked unless `declare_length`)


class Paging(enum.StrEnum):
    """How restSearch treats ``page`` and ``limit`` (:attr:`MispEmulator.paging`)."""

    HONOUR = "honour"  # like MISP: `limit` rows of page `page`, over ascending attribute id
    IGNORE_PAGE = "ignore_page"  # `limit` applies, `page` does not: every page is page 1
    IGNORE = "ignore"  # neither: every page holds every match


@dataclass(frozen=True)
class Fault:
    """A failure mode for :attr:`MispEmulator.fault`.

    ``after_requests``: the fault starts after this many successful *data* requests (restSearch,
    feed files, text lists) within ``paths``, counted from the moment the fault is set. Requests
    PyMISP makes on construction are not data requests, so they neither count nor shift the fault.
    ``paths``: path prefixes the fault applies to (and counts); empty means every path.
    """

    kind: FaultKind
    status_code: int = 500
    delay: float = 5.0
    after_requests: int = 0
    paths: tuple[str, ...] = ()
    body: bytes = b""  # JSON: the answer; LARGE_BODY: the piece repeated
    size: int = 0  # LARGE_BODY: bytes sent in all (when the client reads them all)
    declare_length: bool = False  # LARGE_BODY: send Content-Length (else chunked transfer encoding)

    @classmethod
    def refused(cls, *, after_requests: int = 0, paths: tuple[str, ...] = ()) -> Fault:
        return cls(FaultKind.REFUSED, after_requests=after_requests, paths=paths)

    @classmethod
    def timeout(cls, delay: float = 5.0, *, after_requests: int = 0, paths: tuple[str, ...] = ()) -> Fault:
        return cls(FaultKind.TIMEOUT, delay=delay, after_requests=after_requests, paths=paths)

    @classmethod
    def status(cls, code: int = 500, *, after_requests: int = 0, paths: tuple[str, ...] = ()) -> Fault:
        return cls(FaultKind.STATUS, status_code=code, after_requests=after_requests, paths=paths)

    @classmethod
    def invalid_json(cls, *, after_requests: int = 0, paths: tuple[str, ...] = ()) -> Fault:
        return cls(FaultKind.INVALID_JSON, after_requests=after_requests, paths=paths)

    @classmethod
    def truncated(cls, *, after_requests: int = 0, paths: tuple[str, ...] = ()) -> Fault:
        return cls(FaultKind.TRUNCATED, after_requests=after_requests, paths=paths)

    @classmethod
    def json(cls, payload: Any, status: int = 200, *, after_requests: int = 0, paths: tuple[str, ...] = ()) -> Fault:
        """Answer ``payload`` (any JSON value) with ``status``: MISP-compatible servers answering oddly."""
        body = json.dumps(payload).encode("utf-8")
        return cls(FaultKind.JSON, status_code=status, body=body, after_requests=after_requests, paths=paths)

    @classmethod
    def large_body(
        cls,
        size: int,
        piece: bytes = b"45.0.0.1\n",
        *,
        declare_length: bool = False,
        after_requests: int = 0,
        paths: tuple[str, ...] = (),
    ) -> Fault:
        """A 200 answer of ``size`` bytes (``piece`` repeated), streamed as the client reads it.

        The bytes actually written before the client hung up are in :attr:`MispEmulator.large_body_sent`.
        """
        return cls(FaultKind.LARGE_BODY, body=piece, size=size, declare_length=declare_length,
                   after_requests=after_requests, paths=paths)  # fmt: skip

    def applies_to(self, path: str) -> bool:
        return not self.paths or any(path.startswith(prefix) for prefix in self.paths)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator received it (headers raw, Authorization included)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    json: dict[str, Any] | None
    ignored_params: tuple[str, ...] = ()  # restSearch parameters the emulator did not interpret


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _StoredAttribute:
    attribute: dict[str, Any]  # normalised MISP attribute, without Tag
    tags: list[dict[str, Any]]
    event: dict[str, Any]  # the normalised event it belongs to
    object: dict[str, Any] | None  # {"id", "distribution", "sharing_group_id"} for object attributes


_Predicate = Callable[[_StoredAttribute], bool]


class _SearchError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------------------------------- emulator


class MispEmulator:
    """An in-process MISP server on ``127.0.0.1`` with an ephemeral port.

    Usage::

        with MispEmulator() as misp_server:
            misp_server.load_reference("misp-tests/misp_indicators_test.json")
            client = pymisp.PyMISP(misp_server.url, misp_server.api_key, ssl=False, timeout=5)
            client.search(controller="attributes", type_attribute="ip-src")
    """

    def __init__(self, api_key: str = DEFAULT_API_KEY, *, events: Iterable[Mapping[str, Any]] = ()) -> None:
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.sightings: list[dict[str, Any]] = []  # bodies accepted by POST /sightings/add
        self.texts: dict[str, str] = {}  # served as GET /text/<name>
        # Values (or CIDR ranges) dropped when a search asks for enforceWarninglist.
        self.warninglist: set[str] = set(DEFAULT_WARNINGLIST)
        # Attribute uuids or values dropped when a search asks for excludeDecayed.
        self.decayed: set[str] = set()
        # Real MISP 2.5 embeds only Event{id, info, org_id, orgc_id, uuid} in restSearch attributes
        # unless includeContext is set. By default the emulator adds published, publish_timestamp,
        # threat_level_id, distribution and Orgc; True makes it answer exactly like MISP 2.5.
        self.minimal_event_context = False
        # Servers that are not quite MISP (issue 11): paging ignored, no X-Result-Count, 401 for a wrong key.
        self.paging = Paging.HONOUR
        self.result_count = True
        self.auth_failure_status = 403  # what MISP answers a wrong, expired or revoked key
        self.large_body_sent: list[int] = []  # LARGE_BODY faults: bytes written per answer, until the client left
        self.clock: Callable[[], float] = time.time  # "now" of the changes below (add_attribute, edit_event...)

        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._fault: Fault | None = None
        self._fault_successes = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._running = False
        self._connections: set[socket.socket] = set()

        self._events: dict[str, dict[str, Any]] = {}  # event uuid -> normalised event
        self._raw_events: dict[str, dict[str, Any]] = {}  # event uuid -> event as loaded (for the feed)
        self._attributes: dict[int, _StoredAttribute] = {}
        self._event_ids: set[int] = set()
        self._attribute_ids: set[int] = set()  # keys of _attributes, kept as a set for _claim_id
        self._object_ids: set[int] = set()
        self._org_ids: dict[str, str] = {}  # org uuid or lower-cased name -> id
        self._objects_of: dict[str, list[int]] = {}  # event uuid -> ids of its objects
        self._tag_ids: dict[str, str] = {}  # lower-cased tag name -> id
        self._sighting_records: list[dict[str, Any]] = []
        self._describe_types: dict[str, Any] | None = None
        self._data_version = 0  # bumped on every data change; keys the search cache
        self._search_cache: dict[str, tuple[int, list[_StoredAttribute]]] = {}
        self._stamps: dict[str, int] = {}  # event uuid -> the newest timestamp it ever had (kept by clear())

        for event in events:
            self.add_event(event)

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("the emulator is not started")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> Self:
        with self._lock:
            if self._running:
                return self
            self._stopping.clear()
            self._running = True
        self._listen()  # binds the port, so that `url` is known even when refusing from the start
        self._sync_listener()
        return self

    def stop(self) -> None:
        with self._lock:
            self._running = False
        self._stopping.set()  # wakes handlers sleeping for a timeout fault
        self._close_listener()
        self._drop_connections(keep=None)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --------------------------------------------------------------------------------------- faults

    @property
    def fault(self) -> Fault | None:
        return self._fault

    @fault.setter
    def fault(self, value: Fault | None) -> None:
        with self._lock:
            self._fault = value
            self._fault_successes = 0
        self._sync_listener()

    def _sync_listener(self) -> None:
        """Listen unless stopped or refusing right now (a refused fault with after_requests=0)."""
        fault = self._fault
        if not self._running:
            return
        if fault is not None and fault.kind is FaultKind.REFUSED and fault.after_requests == 0:
            self._close_listener()
            self._drop_connections(keep=None)
        else:
            self._listen()

    def refuse(self) -> None:
        """Close the listening socket (and open connections): clients get ECONNREFUSED."""
        self.fault = Fault.refused()

    def resume(self) -> None:
        """Clear any fault and listen again on the same port."""
        self.fault = None

    # ----------------------------------------------------------------------------------------- data

    def add_event(self, event: Mapping[str, Any]) -> None:
        """Add (or replace, by uuid) one event: ``{"Event": {...}}`` or the bare event dict.

        An event added again (replaced, or after :meth:`clear`) is stamped newer than before (now, or one second after
        its last timestamp), as MISP does.

        Events in feed form (no numeric ids) get ids assigned; ids that collide with another event's
        are replaced. Attributes of the event's Objects are stored too: MISP's attribute restSearch
        returns object attributes as well.
        """
        raw = copy.deepcopy(dict(event.get("Event", event)))
        event_uuid = str(raw.get("uuid") or uuidlib.uuid4())
        raw["uuid"] = event_uuid
        with self._lock:
            self._data_version += 1
            last = self._stamps.get(event_uuid)
            if last is not None and (_as_int(raw.get("timestamp"), "timestamp") or 0) <= last:
                # MISP saves a changed event with a newer timestamp (an edit stamps it now; a sync refuses an
                # event that is not newer than the stored one): replacing (or re-adding) one here does the same.
                raw["timestamp"] = str(max(last + 1, self._now()))
            self._remove_event(event_uuid)
            normalised = self._normalise_event(raw)
            self._stamps[event_uuid] = int(normalised["timestamp"])
            self._events[event_uuid] = normalised
            self._raw_events[event_uuid] = raw
            for attribute in raw.get("Attribute") or []:
                self._store_attribute(attribute, normalised, None)
            self._objects_of[event_uuid] = []
            for obj in raw.get("Object") or []:
                object_id = self._claim_id(obj.get("id"), self._object_ids)
                self._objects_of[event_uuid].append(object_id)
                object_ref = {
                    "id": str(object_id),
                    "distribution": str(obj.get("distribution", "5")),
                    "sharing_group_id": str(obj.get("sharing_group_id", "0")),
                }
                for attribute in obj.get("Attribute") or []:
                    self._store_attribute(attribute, normalised, object_ref)

    def load_reference(self, *relative_paths: str) -> None:
        """Load event fixtures from ``<shared>/reference/misp``; no argument loads every event file."""
        base = reference_dir()
        paths = [base / relative for relative in relative_paths] if relative_paths else iter_reference_events()
        for path in paths:
            document = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(document, dict) or not isinstance(document.get("Event", document), dict):
                raise ValueError(f"{path} is not a MISP event")
            self.add_event(document)

    def clear(self) -> None:
        """Forget all events, attributes and sightings (recorded requests and settings stay)."""
        with self._lock:
            self._data_version += 1
            self._events.clear()
            self._raw_events.clear()
            self._attributes.clear()
            self._attribute_ids.clear()
            self._event_ids.clear()
            self._object_ids.clear()
            self._org_ids.clear()
            self._objects_of.clear()
            self._sighting_records.clear()
            self.sightings.clear()

    @property
    def events(self) -> list[dict[str, Any]]:
        """The normalised events (copies), in load order."""
        with self._lock:
            return [copy.deepcopy(event) for event in self._events.values()]

    def attribute_ids(self) -> list[str]:
        """Ids of every stored attribute (deleted included), ascending."""
        with self._lock:
            return [str(i) for i in sorted(self._attributes)]

    def restsearch_requests(self) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if r.path.startswith("/attributes/restSearch")]

    # ------------------------------------------------------------------------- changes, as MISP makes them
    # What MISP 2.5 does to timestamps (Attribute::beforeSave, Event::unpublishEvent, Event::publish): saving an
    # attribute (add, edit, soft delete, tag change) sets its `timestamp` and its event's `timestamp` to now; an
    # event edit (tags, threat level, info) sets the event's `timestamp`; publishing sets `published` and
    # `publish_timestamp` only; unpublishing sets `published` only; deleting an event removes it and its attributes
    # (MISP deletes events for good). `clock` is "now" for these (tests pass a counter).

    def _now(self) -> int:
        return int(self.clock())

    def _stored_by_uuid(self, attribute_uuid: str) -> _StoredAttribute:
        for stored in self._attributes.values():
            if stored.attribute["uuid"] == attribute_uuid:
                return stored
        raise KeyError(attribute_uuid)

    def _touch(self, event: dict[str, Any], now: int) -> None:
        now = max(now, self._stamps.get(event["uuid"], 0))  # an event's timestamp never goes back
        event["timestamp"] = str(now)
        self._stamps[event["uuid"]] = now
        self._raw_events[event["uuid"]]["timestamp"] = str(now)
        self._data_version += 1

    def add_attribute(self, event_uuid: str, attribute: Mapping[str, Any]) -> str:
        """Add one attribute to an event (``/attributes/add``); returns its uuid."""
        with self._lock:
            now = self._now()
            event = self._events[event_uuid]
            raw = {**attribute, "timestamp": str(now)}
            raw.setdefault("uuid", str(uuidlib.uuid4()))
            self._store_attribute(raw, event, None)
            self._raw_events[event_uuid].setdefault("Attribute", []).append(copy.deepcopy(raw))
            self._touch(event, now)
            return str(raw["uuid"])

    def edit_attribute(self, attribute_uuid: str, **changes: Any) -> None:
        """Change an attribute's fields (``value``, ``type``, ``to_ids``, ``category``; ``Tag``: its tags) and
        save it (``/attributes/edit``, ``/attributes/addTag``, ``/attributes/removeTag``)."""
        with self._lock:
            now = self._now()
            stored = self._stored_by_uuid(attribute_uuid)
            tags = changes.pop("Tag", None)
            if tags is not None:
                stored.tags = [self._tag(t) for t in tags]
            for key, value in changes.items():
                stored.attribute[key] = _to_bool(value) if key in ("to_ids", "deleted") else str(value)
            stored.attribute["timestamp"] = str(now)
            self._touch(stored.event, now)

    def delete_attribute(self, attribute_uuid: str) -> None:
        """Soft-delete an attribute (``/attributes/delete``): ``deleted`` true, timestamp now."""
        self.edit_attribute(attribute_uuid, deleted=True)

    def edit_event(self, event_uuid: str, **changes: Any) -> None:
        """Change an event's ``threat_level_id``, ``info`` or tags (``Tag``) (``/events/edit``, ``/events/addTag``)."""
        with self._lock:
            now = self._now()
            event = self._events[event_uuid]
            tags = changes.pop("Tag", None)
            if tags is not None:
                event["Tag"] = [self._tag(t) for t in tags]
            for key, value in changes.items():
                event[key] = str(value)
            self._touch(event, now)

    def publish_event(self, event_uuid: str, published: bool = True) -> None:
        """``/events/publish`` (``published``, ``publish_timestamp`` now) or ``/events/unpublish``."""
        with self._lock:
            event = self._events[event_uuid]
            event["published"] = published
            if published:
                event["publish_timestamp"] = str(self._now())
            self._data_version += 1

    def delete_event(self, event_uuid: str) -> None:
        """``/events/delete``: the event and its attributes are gone."""
        with self._lock:
            self._data_version += 1
            self._remove_event(event_uuid)

    def event_index(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``/events/index``: every event's metadata, by ascending id; ``minimal`` gives MISP's slim form
        (id, timestamp, sighting_timestamp, published, uuid, orgc_uuid); ``limit``/``page`` page it."""
        with self._lock:
            events = sorted(self._events.values(), key=lambda e: int(e["id"]))
            limit = _as_int(params.get("limit"), "limit")
            if limit:
                page = max(_as_int(params.get("page"), "page") or 1, 1)
                events = events[(page - 1) * limit : page * limit]
            if _truthy(params.get("minimal")):
                return [
                    {"id": e["id"], "timestamp": e["timestamp"], "sighting_timestamp": "0",
                     "published": e["published"], "uuid": e["uuid"], "orgc_uuid": e["Orgc"]["uuid"]}
                    for e in events
                ]  # fmt: skip
            return [{k: copy.deepcopy(v) for k, v in e.items()} for e in events]

    # ------------------------------------------------------------------------------- normalisation

    def _remove_event(self, event_uuid: str) -> None:
        old = self._events.pop(event_uuid, None)
        self._raw_events.pop(event_uuid, None)
        if old is None:
            return
        self._event_ids.discard(int(old["id"]))
        self._object_ids.difference_update(self._objects_of.pop(event_uuid, []))
        for attribute_id in [i for i, s in self._attributes.items() if s.event is old]:
            del self._attributes[attribute_id]
            self._attribute_ids.discard(attribute_id)

    @staticmethod
    def _claim_id(explicit: Any, used: set[int]) -> int:
        """The explicit numeric id if free, else the next free one."""
        if explicit is not None and str(explicit).isdigit() and int(explicit) not in used:
            claimed = int(explicit)
        else:
            claimed = max(used, default=0) + 1
        used.add(claimed)
        return claimed

    def _org_key(self, org: Mapping[str, Any]) -> str:
        return str(org.get("uuid") or "").lower() or str(org.get("name") or "").lower()

    def _register_org(self, org: Mapping[str, Any]) -> None:
        key = self._org_key(org)
        if not key:
            return
        explicit = org.get("id")
        if explicit is not None and str(explicit).isdigit():
            # An explicit id wins over one the emulator assigned earlier.
            self._org_ids[key] = str(explicit)
        elif key not in self._org_ids:
            used = {int(v) for v in self._org_ids.values()}
            self._org_ids[key] = str(max(used | {999}) + 1)  # assigned ids start at 1000

    def _orgc_id(self, event: Mapping[str, Any]) -> str:
        return self._org_ids.get(self._org_key(event["Orgc"]), "0")

    def _tag(self, tag: Mapping[str, Any]) -> dict[str, Any]:
        name = str(tag.get("name", ""))
        key = name.lower()
        if key not in self._tag_ids:
            explicit = tag.get("id")
            used = {int(v) for v in self._tag_ids.values()}
            if explicit is not None and str(explicit).isdigit() and int(explicit) not in used:
                self._tag_ids[key] = str(explicit)
            else:
                self._tag_ids[key] = str(max(used | {9999}) + 1)
        numerical_value = tag.get("numerical_value")
        return {
            "id": self._tag_ids[key],
            "name": name,
            "colour": str(tag.get("colour", "#ffffff")),
            "numerical_value": None if numerical_value is None else str(numerical_value),
            "is_galaxy": name.startswith("misp-galaxy:"),
            "local": _to_bool(tag.get("local", False)),
            "exportable": _to_bool(tag.get("exportable", True)),
        }

    def _normalise_event(self, raw: dict[str, Any]) -> dict[str, Any]:
        event_id = self._claim_id(raw.get("id"), self._event_ids)
        orgc = dict(raw.get("Orgc") or {"name": "ORGNAME", "uuid": "00000000-0000-4000-8000-000000000001"})
        self._register_org(orgc)
        return {
            "id": str(event_id),
            "uuid": raw["uuid"],
            "info": str(raw.get("info", "")),
            "date": str(raw.get("date") or date.today().isoformat()),
            "threat_level_id": str(raw.get("threat_level_id", "4")),
            "analysis": str(raw.get("analysis", "0")),
            "published": _to_bool(raw.get("published", False)),
            "publish_timestamp": str(raw.get("publish_timestamp", "0")),
            "timestamp": str(raw.get("timestamp", "0")),
            "distribution": str(raw.get("distribution", "3")),
            "sharing_group_id": str(raw.get("sharing_group_id", "0")),
            "extends_uuid": str(raw.get("extends_uuid", "")),
            "org_id": str(raw.get("org_id", (raw.get("Org") or {}).get("id", "1"))),
            "Orgc": {"name": str(orgc.get("name", "")), "uuid": str(orgc.get("uuid", ""))},
            "Tag": [self._tag(t) for t in raw.get("Tag") or []],
        }

    def _store_attribute(
        self, raw: Mapping[str, Any], event: dict[str, Any], object_ref: dict[str, Any] | None
    ) -> None:
        attribute_id = self._claim_id(raw.get("id"), self._attribute_ids)
        value = str(raw.get("value", ""))
        self._attributes[attribute_id] = _StoredAttribute(
            attribute={
                "id": str(attribute_id),
                "event_id": event["id"],
                "object_id": object_ref["id"] if object_ref else "0",
                "object_relation": raw.get("object_relation"),
                "category": str(raw.get("category", "Other")),
                "type": str(raw.get("type", "text")),
                "to_ids": _to_bool(raw.get("to_ids", False)),
                "uuid": str(raw.get("uuid") or uuidlib.uuid4()),
                "timestamp": str(raw.get("timestamp", event["timestamp"])),
                "distribution": str(raw.get("distribution", "5")),
                "sharing_group_id": str(raw.get("sharing_group_id", "0")),
                "comment": str(raw.get("comment", "")),
                "deleted": _to_bool(raw.get("deleted", False)),
                "disable_correlation": _to_bool(raw.get("disable_correlation", False)),
                "first_seen": raw.get("first_seen"),
                "last_seen": raw.get("last_seen"),
                "value": value,
            },
            tags=[self._tag(t) for t in raw.get("Tag") or []],
            event=event,
            object=object_ref,
        )

    # -------------------------------------------------------------------------------------- search

    def search(self, params: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """Run an attribute restSearch body; returns (page of MISP-shaped attributes, X-Result-Count).

        Semantics follow MISP 2.5 (``Attribute::fetchAttributes`` and the ``set_filter_*`` helpers):

        * filters on different parameters are ANDed; ``type``, ``category``, ``value``, ``org``,
          ``eventid``, ``threat_level_id`` take a value, a list (ORed), ``!x`` negations or
          ``{"OR": [...], "NOT": [...], "AND": [...]}``; ``%`` at either end makes a LIKE match;
          string comparisons are case-insensitive (MySQL collation);
        * ``tags``: names matched case-insensitively with SQL LIKE (``%``, ``_``); an attribute
          matches when it *or its event* carries the tag (``event_tags`` looks at event tags only);
        * ``org`` is the creator org (Orgc) by name, uuid or id;
        * ``timestamp`` (attribute), ``publish_timestamp``/``last`` and ``event_timestamp`` (event) take
          epoch, ``Nd``/``Nh``/``Nm``/``Ns`` or a two-item [from, to] range;
        * ``deleted`` absent → only live attributes; ``1``/``"only"`` → only deleted; ``[0, 1]`` → both;
        * the count (``X-Result-Count``) and paging (``limit``/``page`` over ascending attribute id)
          happen in SQL, *before* ``enforceWarninglist`` and ``excludeDecayed`` drop attributes from the
          page, exactly as in MISP: such a page may be short although more pages follow.
        """
        with self._lock:
            # Paging through a large data set asks the same question once per page: answer it once per data
            # version (the benchmark serves a million attributes this way).
            key = json.dumps({k: v for k, v in params.items() if k not in ("page", "limit")}, sort_keys=True,
                             default=str)  # fmt: skip
            cached = self._search_cache.get(key)
            if cached is not None and cached[0] == self._data_version:
                matches = cached[1]
            else:
                predicates = self._predicates(params)
                matches = [
                    stored
                    for _, stored in sorted(self._attributes.items())
                    if all(predicate(stored) for predicate in predicates)
                ]
                self._search_cache = {key: (self._data_version, matches)}
            count = len(matches)
            limit = _as_int(params.get("limit"), "limit")
            if limit and self.paging is not Paging.IGNORE:
                page = max(_as_int(params.get("page"), "page") or 1, 1) if self.paging is Paging.HONOUR else 1
                matches = matches[(page - 1) * limit : page * limit]
            if _truthy(params.get("enforceWarninglist")):
                matches = [s for s in matches if not self._on_warninglist(s.attribute)]
            if _truthy(params.get("excludeDecayed")):
                matches = [
                    s
                    for s in matches
                    if s.attribute["uuid"] not in self.decayed and s.attribute["value"] not in self.decayed
                ]
            return [self._render_attribute(s, params) for s in matches], count

    def _predicates(self, params: Mapping[str, Any]) -> list[_Predicate]:
        predicates: list[_Predicate] = []
        now = int(time.time())

        def add(param: str, build: Callable[[Any], _Predicate]) -> None:
            raw = params.get(param)
            if raw is not None and raw not in ("", []):
                predicates.append(build(raw))

        add("type", lambda raw: _field_filter(raw, lambda s: [s.attribute["type"]]))
        add("category", lambda raw: _field_filter(raw, lambda s: [s.attribute["category"]]))
        add("value", lambda raw: _field_filter(raw, _value_parts))
        add("value1", lambda raw: _field_filter(raw, lambda s: [_value_parts(s)[0]]))
        add("value2", lambda raw: _field_filter(raw, lambda s: [_value_parts(s)[-1]]))
        add("eventid", lambda raw: _field_filter(raw, lambda s: [s.event["id"]]))
        add("uuid", lambda raw: _field_filter(raw, lambda s: [s.attribute["uuid"], s.event["uuid"]]))
        add("org", self._org_filter)
        add("threat_level_id", _threat_level_filter)
        add("to_ids", lambda raw: _flag_filter(raw, lambda s: s.attribute["to_ids"], "to_ids"))
        add("published", lambda raw: _flag_filter(raw, lambda s: s.event["published"], "published"))
        add("timestamp", lambda raw: _time_filter(raw, now, lambda s: s.attribute["timestamp"]))
        add("attribute_timestamp", lambda raw: _time_filter(raw, now, lambda s: s.attribute["timestamp"]))
        add("publish_timestamp", lambda raw: _time_filter(raw, now, lambda s: s.event["publish_timestamp"]))
        add("last", lambda raw: _time_filter(raw, now, lambda s: s.event["publish_timestamp"]))
        add("event_timestamp", lambda raw: _time_filter(raw, now, lambda s: s.event["timestamp"]))
        add("from", lambda raw: _date_filter(raw, now, lower=True))
        add("to", lambda raw: _date_filter(raw, now, lower=False))
        if params.get("tags"):
            predicates.append(_tag_filter(params["tags"], lambda s: [*s.tags, *s.event["Tag"]]))
        elif params.get("event_tags"):
            predicates.append(_tag_filter(params["event_tags"], lambda s: s.event["Tag"]))
        if "deleted" in params and params["deleted"] is not None:
            wanted = params["deleted"]
            wanted = 1 if wanted == "only" else wanted
            predicates.append(_flag_filter(wanted, lambda s: s.attribute["deleted"], "deleted"))
        else:
            predicates.append(lambda s: not s.attribute["deleted"])
        return predicates

    def _org_filter(self, raw: Any) -> _Predicate:
        any_of, none_of, all_of = _split_filter(raw)

        def resolve(values: list[Any]) -> set[str]:
            ids: set[str] = set()
            for value in values:
                text = str(value)
                if text.isdigit():
                    ids.add(text)
                    continue
                for event in self._events.values():
                    orgc = event["Orgc"]
                    if text.casefold() in (orgc["name"].casefold(), orgc["uuid"].casefold()):
                        ids.add(self._orgc_id(event))
            return ids

        wanted, unwanted, required = resolve(any_of), resolve(none_of), [resolve([v]) for v in all_of]

        def predicate(stored: _StoredAttribute) -> bool:
            orgc_id = self._orgc_id(stored.event)
            if any_of and orgc_id not in wanted:
                return False
            if orgc_id in unwanted:
                return False
            return all(orgc_id in ids for ids in required)

        return predicate

    def _on_warninglist(self, attribute: Mapping[str, Any]) -> bool:
        candidates = {attribute["value"], *attribute["value"].split("|")}
        for entry in self.warninglist:
            if "/" in entry:
                try:
                    network = ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    continue
                for candidate in candidates:
                    try:
                        if ipaddress.ip_address(candidate) in network:
                            return True
                    except ValueError:
                        continue
            elif entry.casefold() in {c.casefold() for c in candidates}:
                return True
        return False

    def _render_attribute(self, stored: _StoredAttribute, params: Mapping[str, Any]) -> dict[str, Any]:
        event = stored.event
        rendered: dict[str, Any] = dict(stored.attribute)
        # Real MISP 2.5 embeds Event{id, info, org_id, orgc_id, uuid}; the rest is version-dependent
        # and only guaranteed with includeContext. See `minimal_event_context`.
        embedded: dict[str, Any] = {
            "org_id": event["org_id"],
            "distribution": event["distribution"],
            "id": event["id"],
            "info": event["info"],
            "orgc_id": self._orgc_id(event),
            "uuid": event["uuid"],
        }
        if _truthy(params.get("includeContext")):
            embedded.update({key: event[key] for key in _CONTEXT_EVENT_FIELDS})
            embedded["Tag"] = [_tag_out(t) for t in event["Tag"] if t["exportable"]]
            embedded["Orgc"] = {"id": self._orgc_id(event), **event["Orgc"]}
        elif self.minimal_event_context:
            del embedded["distribution"]
        else:
            embedded.update(
                {
                    "publish_timestamp": event["publish_timestamp"],
                    "published": event["published"],
                    "threat_level_id": event["threat_level_id"],
                    "Orgc": {"id": self._orgc_id(event), **event["Orgc"]},
                }
            )
        rendered["Event"] = embedded
        if stored.object is not None:
            rendered["Object"] = dict(stored.object)
        tags = [_tag_out(t) for t in stored.tags if t["exportable"]]
        if _truthy(params.get("includeEventTags")):
            # MISP marks tags coming from the event with "inherited".
            tags += [{**_tag_out(t), "inherited": True} for t in event["Tag"] if t["exportable"]]
        if tags:  # like MISP's JsonExport, no "Tag" key when there is no tag
            rendered["Tag"] = tags
        if _truthy(params.get("includeEventUuid")):
            rendered["event_uuid"] = event["uuid"]
        if _truthy(params.get("includeSightings")):
            rendered["Sighting"] = [
                copy.deepcopy(s) for s in self._sighting_records if s["attribute_id"] == stored.attribute["id"]
            ]
        return rendered

    # ------------------------------------------------------------------------------------ sightings

    def _add_sighting(self, body: Mapping[str, Any], attribute_ref: str | None) -> _Response:
        sighting_type = str(body.get("type", "0"))
        if sighting_type not in {"0", "1", "2"}:
            return _save_failed("Invalid sighting type.", "/sightings/add")
        with self._lock:
            live = [s for s in self._attributes.values() if not s.attribute["deleted"]]
            ref = attribute_ref or body.get("id") or body.get("uuid")
            if ref:
                targets = [s for s in live if str(ref) in (s.attribute["id"], s.attribute["uuid"])]
            else:
                values = body.get("values") or ([body["value"]] if "value" in body else [])
                values = [str(v) for v in (values if isinstance(values, list) else [values])]
                targets = [s for s in live if any(v in _value_parts(s) for v in values)]
            if not targets:
                return _save_failed("No valid attributes found.", "/sightings/add")
            self.sightings.append(copy.deepcopy(dict(body)))
            timestamp = str(body.get("timestamp") or int(time.time()))
            record: dict[str, Any] = {}
            for stored in targets:
                record = {
                    "id": str(len(self._sighting_records) + 1),
                    "attribute_id": stored.attribute["id"],
                    "event_id": stored.attribute["event_id"],
                    "org_id": "1",
                    "date_sighting": timestamp,
                    "uuid": str(uuidlib.uuid4()),
                    "source": str(body.get("source", "")),
                    "type": sighting_type,
                    "attribute_uuid": stored.attribute["uuid"],
                }
                self._sighting_records.append(record)
            return _json_response(200, {"Sighting": record})

    # ---------------------------------------------------------------- events written through the API
    # What the operator's events mode (issue 5) calls through PyMISP: add_event (POST /events/add),
    # event_exists/get_event (HEAD/GET /events/view/<id|uuid>), add_attribute (POST /attributes/add/<event>, one
    # attribute or a list; a same type/category/value already in the event is refused like MISP does) and publish
    # (POST /events/publish/<event>). Added events and attributes are searchable like loaded ones.

    def _event_by_ref(self, ref: str) -> dict[str, Any] | None:
        """The normalised event with this id or uuid (under the lock)."""
        for event in self._events.values():
            if ref in (event["id"], event["uuid"]):
                return event
        return None

    def event_view(self, ref: str) -> dict[str, Any] | None:
        """``{"Event": ...}`` as ``/events/view`` answers it (tags and live attributes included), or None."""
        with self._lock:
            event = self._event_by_ref(ref)
            if event is None:
                return None
            attributes = [
                {**s.attribute, "Tag": [_tag_out(t) for t in s.tags]}
                for _, s in sorted(self._attributes.items())
                if s.event is event and s.object is None and not s.attribute["deleted"]
            ]
            view = {**copy.deepcopy(event), "Tag": [_tag_out(t) for t in event["Tag"]], "Attribute": attributes}
            return {"Event": view}

    def _route_writes(self, request: RecordedRequest, endpoint: str) -> _Response | None:
        method = request.method
        if method in {"GET", "HEAD"} and endpoint.startswith("/events/view/"):
            view = self.event_view(endpoint.removeprefix("/events/view/"))
            return _json_response(200, view) if view else _error_response(404, request.path, "Invalid event")
        if method == "POST" and (endpoint == "/events/add" or endpoint.startswith("/events/add/")):
            return self._add_event_api(request)
        if method == "POST" and endpoint.startswith("/attributes/add/"):
            return self._add_attributes_api(request, endpoint.removeprefix("/attributes/add/"))
        if method == "POST" and endpoint.startswith("/events/publish/"):
            return self._publish_api(request, endpoint.removeprefix("/events/publish/"))
        return None

    def _add_event_api(self, request: RecordedRequest) -> _Response:
        body = request.json
        raw = body.get("Event", body) if isinstance(body, dict) else None
        if not isinstance(raw, dict) or not str(raw.get("info") or "").strip():
            return _json_response(
                403, {"name": "The event could not be saved.", "message": "The event could not be saved.",
                      "url": request.path, "errors": {"Event": {"info": ["Info cannot be empty."]}}},
            )  # fmt: skip
        now = str(int(time.time()))
        with self._lock:
            if raw.get("uuid") and str(raw["uuid"]) in self._events:
                message = "Event already exists, if you would like to edit it, use the url in the location header."
                response = _json_response(403, {"name": message, "message": message, "url": request.path})
                response.headers["Location"] = f"/events/view/{raw['uuid']}"
                return response
            event = {k: v for k, v in raw.items() if k not in {"id", "Object"}}
            event["uuid"] = str(raw.get("uuid") or uuidlib.uuid4())
            event.setdefault("Orgc", {"name": _ME["Organisation"]["name"], "uuid": _ME["Organisation"]["uuid"]})
            event.setdefault("timestamp", now)
            attributes = raw.get("Attribute") or []
            event["Attribute"] = [self._api_attribute(a, now) for a in attributes if isinstance(a, dict)]
            self.add_event(event)
        return _json_response(200, self.event_view(event["uuid"]))

    @staticmethod
    def _api_attribute(raw: Mapping[str, Any], now: str) -> dict[str, Any]:
        attribute = {k: v for k, v in raw.items() if k not in {"id", "event_id"}}
        attribute.setdefault("uuid", str(uuidlib.uuid4()))
        attribute.setdefault("timestamp", now)
        attribute.setdefault("category", "Network activity")
        return attribute

    def _add_attributes_api(self, request: RecordedRequest, ref: str) -> _Response:
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        items = body if isinstance(body, list) else [body]
        if not items or not all(isinstance(i, dict) and i.get("type") and "value" in i for i in items):
            return _error_response(400, request.path, "Invalid attribute.")
        now = str(int(time.time()))
        saved: list[dict[str, Any]] = []
        errors: dict[str, Any] = {}
        with self._lock:
            event = self._event_by_ref(ref)
            if event is None:
                return _error_response(404, request.path, "Invalid event.")
            raw_event = self._raw_events[event["uuid"]]
            for i, item in enumerate(items):
                key = (str(item["type"]), str(item.get("category", "Network activity")), str(item["value"]))
                if any(
                    s.event is event and not s.attribute["deleted"]
                    and (s.attribute["type"], s.attribute["category"], s.attribute["value"]) == key
                    for s in self._attributes.values()
                ):  # fmt: skip
                    errors[str(i)] = {"value": ["A similar attribute already exists for this event."]}
                    continue
                attribute = self._api_attribute(item, now)
                raw_event.setdefault("Attribute", []).append(attribute)
                self._store_attribute(attribute, event, None)
                saved.append(dict(self._attributes[max(self._attribute_ids)].attribute))
            if saved:
                self._data_version += 1
                event["timestamp"] = now
                event["published"] = False  # MISP unpublishes an event when it changes
        if not isinstance(body, list):
            if not saved:
                return _save_failed_attribute(errors["0"], request.path)
            return _json_response(200, {"Attribute": saved[0]})
        if not saved:
            return _save_failed_attribute(errors, request.path)
        answer: dict[str, Any] = {"Attribute": saved}
        if errors:
            answer["errors"] = errors
        return _json_response(200, answer)

    def _publish_api(self, request: RecordedRequest, ref: str) -> _Response:
        with self._lock:
            event = self._event_by_ref(ref)
            if event is None:
                return _error_response(404, request.path, "Invalid event.")
            event["published"] = True
            event["publish_timestamp"] = str(int(time.time()))
            self._data_version += 1
            event_id = event["id"]
        return _json_response(200, {"name": "Job queued", "message": "Job queued", "url": request.path, "id": event_id})

    # ----------------------------------------------------------------------------------------- feed

    def feed_manifest(self) -> dict[str, Any]:
        """``manifest.json`` of the static feed built from the loaded events."""
        with self._lock:
            return {
                event_uuid: {
                    "Orgc": dict(event["Orgc"]),
                    "Tag": [_feed_tag(t) for t in event["Tag"] if t["exportable"]],
                    "info": event["info"],
                    "date": event["date"],
                    "analysis": int(event["analysis"]),
                    "threat_level_id": int(event["threat_level_id"]),
                    "timestamp": int(event["timestamp"]),
                    "publish_timestamp": int(event["publish_timestamp"]),
                }
                for event_uuid, event in self._events.items()
            }

    def feed_event(self, event_uuid: str) -> dict[str, Any] | None:
        """``<uuid>.json`` of the static feed: the event in feed form (no local ids)."""
        with self._lock:
            raw = self._raw_events.get(event_uuid)
            if raw is None:
                return None
            event = self._events[event_uuid]
            out: dict[str, Any] = {}
            for key in _FEED_EVENT_FIELDS:
                if key in event:
                    out[key] = event[key]
                elif raw.get(key) is not None:
                    out[key] = raw[key]
            out["Orgc"] = dict(event["Orgc"])
            out["Tag"] = [_feed_tag(t) for t in event["Tag"] if t["exportable"]]
            if raw.get("Attribute"):
                out["Attribute"] = [_feed_attribute(a) for a in raw["Attribute"]]
            if raw.get("Object"):
                out["Object"] = [
                    {
                        **{k: obj[k] for k in _FEED_OBJECT_FIELDS if obj.get(k) is not None},
                        "Attribute": [_feed_attribute(a) for a in obj.get("Attribute") or []],
                    }
                    for obj in raw["Object"]
                ]
            return {"Event": out}

    def feed_hashes(self) -> str:
        """``hashes.csv``: md5 of each attribute value (each part of composite ones), event uuid."""
        lines: list[str] = []
        with self._lock:
            for event_uuid, raw in self._raw_events.items():
                attributes = [*(raw.get("Attribute") or [])]
                for obj in raw.get("Object") or []:
                    attributes += obj.get("Attribute") or []
                for attribute in attributes:
                    value = str(attribute.get("value", ""))
                    composite = "|" in str(attribute.get("type", "")) or attribute.get("type") == "malware-sample"
                    for part in value.split("|") if composite else [value]:
                        digest = hashlib.md5(part.encode("utf-8"), usedforsecurity=False).hexdigest()
                        lines.append(f"{digest},{event_uuid}")
        return "".join(f"{line}\n" for line in lines)

    # ---------------------------------------------------------------------------------------- http

    def _listen(self) -> None:
        with self._lock:
            if self._server is not None or not self._running:
                return
            server = _Server(("127.0.0.1", self._port), self)
            self._port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="misp-emulator", daemon=True
            )
            self._thread.start()

    def _close_listener(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _drop_connections(self, keep: socket.socket | None) -> None:
        with self._lock:
            connections = [c for c in self._connections if c is not keep]
        for connection in connections:
            _shutdown(connection)

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _active_fault(self, path: str) -> Fault | None:
        with self._lock:
            fault = self._fault
            if fault is None or not fault.applies_to(path) or self._fault_successes < fault.after_requests:
                return None
            return fault

    def _count_success(self, path: str) -> Fault | None:
        """Count a successful data request; returns a refused fault that starts now, if any."""
        if not _is_data_path(path):
            return None
        with self._lock:
            fault = self._fault
            if fault is None or not fault.applies_to(path):
                return None
            self._fault_successes += 1
            if fault.kind is FaultKind.REFUSED and self._fault_successes == fault.after_requests:
                return fault
            return None

    def _handle(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parsed: dict[str, Any] | None = None
        if body:
            try:
                candidate = json.loads(body)
            except ValueError:
                candidate = None
            parsed = candidate if isinstance(candidate, dict) else None
        ignored: tuple[str, ...] = ()
        if path.startswith("/attributes/restSearch") and parsed is not None:
            ignored = tuple(sorted(k for k in parsed if k not in _SEARCH_PARAMS | _NO_OP_PARAMS))
        record = RecordedRequest(
            method=handler.command,
            path=path,
            query=parse_qs(split.query),
            headers=dict(handler.headers.items()),
            body=body,
            json=parsed,
            ignored_params=ignored,
        )
        with self._lock:
            self.requests.append(record)

        fault = self._active_fault(path)
        if fault is not None:
            self._apply_fault(handler, fault, record)
            return
        try:
            response = self._route(record)
        except Exception as error:  # a bug in the emulator: make it visible to the client
            response = _error_response(500, path, f"MISP emulator error: {error!r}")
        starts_refusing = self._count_success(path) if response.status == 200 else None
        if starts_refusing is not None:
            # Stop listening *before* answering, so the client's next request is refused for sure.
            self._close_listener()
            self._drop_connections(keep=handler.connection)
            handler.close_connection = True
        _send(handler, response)

    def _apply_fault(self, handler: _Handler, fault: Fault, record: RecordedRequest) -> None:
        if fault.kind is FaultKind.REFUSED:
            # Reached over a connection that was already open: drop it without an answer.
            handler.close_connection = True
            _shutdown(handler.connection)
        elif fault.kind is FaultKind.TIMEOUT:
            if self._stopping.wait(fault.delay):
                handler.close_connection = True
                return
            _send(handler, self._route(record))
        elif fault.kind is FaultKind.STATUS:
            _send(handler, _error_response(fault.status_code, record.path))
        elif fault.kind is FaultKind.INVALID_JSON:
            _send(handler, _Response(200, INVALID_JSON_BODY))
        elif fault.kind is FaultKind.JSON:
            _send(handler, _Response(fault.status_code, fault.body))
        elif fault.kind is FaultKind.LARGE_BODY:
            self._send_large(handler, fault)
        elif fault.kind is FaultKind.TRUNCATED:
            response = self._route(record)
            body = response.body if len(response.body) > 1 else response.body + b" " * 64
            handler.close_connection = True
            try:
                handler.send_response(200)
                handler.send_header("Content-Type", response.content_type)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body[: len(body) // 2])
                handler.wfile.flush()
            except OSError:
                pass
            _shutdown(handler.connection)

    def _send_large(self, handler: _Handler, fault: Fault) -> None:
        """Stream ``fault.size`` bytes of ``fault.body`` repeated; stop when the client hangs up (or we stop)."""
        piece = fault.body or b" "
        block = piece * max(1, (64 * 1024) // len(piece))
        sent = 0
        handler.close_connection = True
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json" if piece.lstrip()[:1] in b"{[" else "text/plain")
            if fault.declare_length:
                handler.send_header("Content-Length", str(fault.size))
            else:
                handler.send_header("Transfer-Encoding", "chunked")
            handler.send_header("Connection", "close")
            handler.end_headers()
            while sent < fault.size and not self._stopping.is_set():
                chunk = block[: fault.size - sent]
                handler.wfile.write(chunk if fault.declare_length else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            if not fault.declare_length:
                handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            pass
        finally:
            with self._lock:
                self.large_body_sent.append(sent)
            _shutdown(handler.connection)

    def _route(self, request: RecordedRequest) -> _Response:
        path, method = request.path, request.method
        if path.startswith("/feed/") and method in {"GET", "HEAD"}:
            return self._route_feed(path.removeprefix("/feed/"))
        if path.startswith("/text/") and method in {"GET", "HEAD"}:
            text = self.texts.get(path.removeprefix("/text/"))
            if text is None:
                return _Response(404, b"404 Not Found\n", "text/plain")
            return _Response(200, text.encode("utf-8"), "text/plain; charset=utf-8")
        if request.headers.get("Authorization") != self.api_key:
            return _error_response(self.auth_failure_status, path)

        endpoint = path.removesuffix(".json").rstrip("/")
        if method == "GET" and endpoint == "/servers/getVersion":
            return _json_response(
                200,
                {
                    "version": MISP_VERSION,
                    "pymisp_recommended_version": MISP_VERSION,
                    "perm_sync": False,
                    "perm_sighting": True,
                    "perm_galaxy_editor": False,
                    "request_encoding": ["gzip", "br"],
                    "filter_sightings": False,
                },
            )
        if method == "GET" and endpoint == "/servers/getPyMISPVersion":
            return _json_response(200, {"version": MISP_VERSION})
        if method == "GET" and endpoint == "/users/view/me":
            return _json_response(200, _ME)
        if method == "GET" and endpoint == "/attributes/describeTypes":
            return _json_response(200, {"result": self._describe_types_result()})
        if method == "POST" and endpoint in {"/attributes/restSearch", "/attributes/restSearch/json"}:
            return self._route_search(request)
        if method == "POST" and endpoint == "/events/index":
            return _json_response(200, self.event_index(request.json or {}))
        if method == "POST" and (endpoint == "/sightings/add" or endpoint.startswith("/sightings/add/")):
            ref = endpoint.removeprefix("/sightings/add").strip("/") or None
            return self._add_sighting(request.json or {}, ref)
        written = self._route_writes(request, endpoint)
        if written is not None:
            return written
        return _error_response(404, path)

    def _route_search(self, request: RecordedRequest) -> _Response:
        params = request.json
        if params is None and request.body:
            return _error_response(400, request.path, "The request body is not valid JSON.")
        params = params or {}
        return_format = str(params.get("returnFormat", "json"))
        if request.path.rstrip("/").endswith("/json"):
            return_format = "json"
        if return_format != "json":
            message = f"The emulator only serves returnFormat json, not {return_format}."
            return _error_response(400, request.path, message)
        try:
            attributes, count = self.search(params)
        except _SearchError as error:
            return _error_response(error.status, request.path, error.message)
        response = _json_response(200, {"response": {"Attribute": attributes}})
        if self.result_count:
            response.headers["X-Result-Count"] = str(count)
        response.headers["X-Response-Format"] = "json"
        return response

    def _route_feed(self, name: str) -> _Response:
        if name == "manifest.json":
            return _json_response(200, self.feed_manifest())
        if name == "hashes.csv":
            return _Response(200, self.feed_hashes().encode("utf-8"), "text/csv")
        event = self.feed_event(name.removesuffix(".json")) if name.endswith(".json") else None
        if event is None:
            return _Response(404, b"404 Not Found\n", "text/plain")
        return _json_response(200, event)

    def _describe_types_result(self) -> dict[str, Any]:
        if self._describe_types is None:
            # MISP's own describeTypes, as shipped (verbatim) inside the pymisp package.
            resource = importlib.resources.files("pymisp") / "data" / "describeTypes.json"
            self._describe_types = json.loads(resource.read_text(encoding="utf-8"))["result"]
        return self._describe_types


# -------------------------------------------------------------------------------------- http server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: MispEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        # Headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms per answer.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.emulator._track(connection, add=True)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        self.emulator._track(request, add=False)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Apache in front of MISP
    server_version = "Apache"
    sys_version = ""
    timeout = 30  # idle keep-alive connections end after this
    server: _Server

    def _dispatch(self) -> None:
        try:
            self.server.emulator._handle(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


def _send(handler: _Handler, response: _Response) -> None:
    try:
        handler.send_response(response.status)
        handler.send_header("Content-Type", response.content_type)
        handler.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            handler.send_header(name, value)
        if handler.close_connection:
            handler.send_header("Connection", "close")
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(response.body)
        handler.wfile.flush()
    except OSError:
        handler.close_connection = True


def _shutdown(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


# ----------------------------------------------------------------------------------------- answers

_ME: dict[str, Any] = {
    "User": {
        "id": "1",
        "org_id": "1",
        "server_id": "0",
        "email": "admin@admin.test",
        "autoalert": False,
        "invited_by": "0",
        "gpgkey": None,
        "certif_public": "",
        "nids_sid": "4000000",
        "termsaccepted": True,
        "newsread": "0",
        "role_id": "1",
        "change_pw": False,
        "contactalert": False,
        "disabled": False,
        "expiration": None,
        "current_login": "0",
        "last_login": "0",
        "force_logout": False,
        "date_created": None,
        "date_modified": "0",
        "last_pw_change": "0",
    },
    "Role": {
        "id": "1",
        "name": "admin",
        "perm_add": True,
        "perm_modify": True,
        "perm_modify_org": True,
        "perm_publish": True,
        "perm_delegate": True,
        "perm_sync": False,
        "perm_admin": True,
        "perm_audit": True,
        "perm_auth": True,
        "perm_site_admin": True,
        "perm_regexp_access": True,
        "perm_tagger": True,
        "perm_template": True,
        "perm_sharing_group": True,
        "perm_tag_editor": True,
        "perm_sighting": True,
        "perm_object_template": True,
        "default_role": False,
        "memory_limit": "",
        "max_execution_time": "",
        "restricted_to_site_admin": False,
        "perm_publish_zmq": True,
        "perm_publish_kafka": True,
        "perm_decaying": True,
        "enforce_rate_limit": False,
        "rate_limit_count": "0",
        "perm_galaxy_editor": True,
        "perm_warninglist": True,
        "perm_view_feed_correlations": True,
        "permission": "3",
        "permission_description": "publish",
    },
    "UserSetting": {},
    "Organisation": {"id": "1", "name": "ORGNAME", "uuid": "5c9a1c17-9550-483e-809a-28eab44af9f7", "local": True},
}


def _json_response(status: int, payload: Any) -> _Response:
    return _Response(status, json.dumps(payload).encode("utf-8"))


def _error_response(status: int, path: str, message: str | None = None) -> _Response:
    """MISP's JSON error body: {"name", "message", "url"}."""
    text = message or _STATUS_MESSAGES.get(status, "Error")
    return _json_response(status, {"name": text, "message": text, "url": path})


def _save_failed(reason: str, path: str) -> _Response:
    """What MISP's RestResponse::saveFailResponse answers for a sighting it cannot add."""
    message = f"Could not add the Sighting. Reason: {reason}"
    return _json_response(403, {"saved": False, "name": message, "message": message, "url": path, "errors": reason})


def _save_failed_attribute(errors: Any, path: str) -> _Response:
    """What MISP answers when no attribute of an /attributes/add request could be saved."""
    message = "Could not add Attribute"
    return _json_response(403, {"saved": False, "name": message, "message": message, "url": path, "errors": errors})


def _tag_out(tag: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tag[k] for k in ("id", "name", "colour", "numerical_value", "is_galaxy", "local")}


def _feed_tag(tag: Mapping[str, Any]) -> dict[str, Any]:
    return {"colour": tag["colour"], "local": tag["local"], "name": tag["name"], "relationship_type": ""}


def _feed_attribute(raw: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: raw[k] for k in _FEED_ATTRIBUTE_FIELDS if raw.get(k) is not None}
    tags = [t for t in raw.get("Tag") or [] if t.get("exportable", True)]
    if tags:
        out["Tag"] = [{"colour": t.get("colour", "#ffffff"), "name": t["name"]} for t in tags]
    return out


def _is_data_path(path: str) -> bool:
    return path.startswith(("/attributes/restSearch", "/events/index", "/feed/", "/text/"))


# ---------------------------------------------------------------------------------------- filters


def _to_bool(value: Any) -> bool:
    """A stored MISP flag: true/false, 1/0 or their string forms."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true"}
    return bool(value)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in {"", "0", "false", "no"}
    return bool(value)


def _as_int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _SearchError(400, f"Invalid {name}: {value!r}") from None


def _as_flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true"}:
        return True
    if text in {"0", "false", "exclude"}:
        return False
    raise _SearchError(400, f"Invalid {name}: {value!r}")


def _split_filter(raw: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """MISP's convert_filters/dissectArgs: (OR, NOT, AND) from a value, list, '!x' or a dict."""

    def as_list(value: Any) -> list[Any]:
        if value is None:
            return []
        return list(value) if isinstance(value, (list, tuple)) else [value]

    if isinstance(raw, Mapping):
        return as_list(raw.get("OR")), as_list(raw.get("NOT")), as_list(raw.get("AND"))
    items = raw.split("&&") if isinstance(raw, str) else as_list(raw)
    any_of: list[Any] = []
    none_of: list[Any] = []
    for item in items:
        if isinstance(item, str) and item.startswith("!"):
            none_of.append(item[1:])
        else:
            any_of.append(item)
    return any_of, none_of, []


@functools.lru_cache(maxsize=1024)
def _like_regex(pattern: str) -> re.Pattern[str]:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(regex, flags=re.IGNORECASE | re.DOTALL)


def _sql_like(pattern: str, text: str) -> bool:
    """SQL LIKE, case-insensitive: % is any run of characters, _ is one character."""
    return _like_regex(pattern).fullmatch(text) is not None


def _generic_match(pattern: Any, text: str) -> bool:
    """MISP's generic_add_filter: LIKE when the pattern starts or ends with %, else equality."""
    pattern_text = str(pattern)
    if pattern_text.startswith("%") or pattern_text.endswith("%"):
        return _sql_like(pattern_text, text)
    return pattern_text.casefold() == text.casefold()


def _field_filter(raw: Any, values_of: Callable[[_StoredAttribute], list[str]]) -> _Predicate:
    any_of, none_of, all_of = _split_filter(raw)

    def predicate(stored: _StoredAttribute) -> bool:
        values = values_of(stored)

        def hit(pattern: Any) -> bool:
            return any(_generic_match(pattern, v) for v in values)

        if any_of and not any(hit(p) for p in any_of):
            return False
        if any(hit(p) for p in none_of):
            return False
        return all(hit(p) for p in all_of)

    return predicate


def _value_parts(stored: _StoredAttribute) -> list[str]:
    """value, value1 and value2 (MISP matches `value` against value1 and value2)."""
    value = stored.attribute["value"]
    parts = value.split("|", 1) if "|" in stored.attribute["type"] else [value]
    return [value, *parts] if len(parts) > 1 else parts


def _threat_level_filter(raw: Any) -> _Predicate:
    def level(value: Any) -> str:
        text = str(value).strip().lower()
        return str(_THREAT_LEVELS.get(text, text))

    any_of, none_of, all_of = _split_filter(raw)
    wanted = {level(v) for v in any_of}
    unwanted = {level(v) for v in none_of}
    required = {level(v) for v in all_of}

    def predicate(stored: _StoredAttribute) -> bool:
        current = stored.event["threat_level_id"]
        if wanted and current not in wanted:
            return False
        return current not in unwanted and required <= {current}

    return predicate


def _flag_filter(raw: Any, flag_of: _Predicate, name: str) -> _Predicate:
    values = raw if isinstance(raw, (list, tuple)) else [raw]
    wanted = {_as_flag(v, name) for v in values}
    return lambda stored: flag_of(stored) in wanted


def _resolve_time(value: Any, now: int) -> int:
    """MISP's resolveTimeDelta: epoch, 'Nd'/'Nh'/'Nm'/'Ns' before now, or an ISO 8601 date/time."""
    if isinstance(value, bool):
        raise _SearchError(400, f"Invalid time value: {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    try:
        return int(float(text))
    except ValueError:
        pass
    unit = text[-1:].lower()
    if unit in _TIME_UNITS and re.fullmatch(r"\d+(\.\d+)?", text[:-1]):
        return now - int(float(text[:-1]) * _TIME_UNITS[unit])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _SearchError(400, f"Invalid time value: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _time_filter(raw: Any, now: int, time_of: Callable[[_StoredAttribute], str]) -> _Predicate:
    """MISP's setTimestampConditions: `>= value`, or a [from, to] range (swapped if reversed)."""
    if isinstance(raw, (list, tuple)):
        if len(raw) != 2:
            raise _SearchError(400, "Invalid date specification, must be string or array with two elements")
        low, high = sorted((_resolve_time(raw[0], now), _resolve_time(raw[1], now)))
        return lambda stored: (low == 0 or int(time_of(stored)) >= low) and int(time_of(stored)) <= high
    low = _resolve_time(raw, now)
    return lambda stored: low == 0 or int(time_of(stored)) >= low


def _date_filter(raw: Any, now: int, *, lower: bool) -> _Predicate:
    """`from`/`to`: the event's date (YYYY-MM-DD) against a date, an epoch or a time delta."""
    text = str(raw)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        text = datetime.fromtimestamp(_resolve_time(raw, now), tz=UTC).date().isoformat()
    if lower:
        return lambda stored: stored.event["date"] >= text
    return lambda stored: stored.event["date"] <= text


def _tag_filter(raw: Any, tags_of: Callable[[_StoredAttribute], list[dict[str, Any]]]) -> _Predicate:
    """MISP's Attribute::set_filter_tags: LIKE on tag names (or tag ids), OR / NOT / AND."""
    any_of, none_of, all_of = _split_filter(raw)

    def hit(pattern: Any, tags: list[dict[str, Any]]) -> bool:
        text = str(pattern)
        return any(_sql_like(text, t["name"]) or (text.isdigit() and text == t["id"]) for t in tags)

    def predicate(stored: _StoredAttribute) -> bool:
        tags = tags_of(stored)
        if any_of and not any(hit(p, tags) for p in any_of):
            return False
        if any(hit(p, tags) for p in none_of):
            return False
        return all(hit(p, tags) for p in all_of)

    return predicate
