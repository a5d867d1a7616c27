"""The MISP side of reporting (a service): reports as values, one cached PyMISP client per target, and the calls.

Every call's failure becomes a :class:`SendFailure` with a short reason and whether it is worth retrying; a key
MISP refuses is :data:`UNAUTHORIZED`, retried once a sync brings a new key (issue 11). Events mode groups the
day's new attributes into one MISP event per feed and day (:func:`send_event_group`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any, cast

from pymisp import MISPAttribute, MISPEvent, PyMISP

from falco_misp.reporting.matching import MispTarget
from falco_misp.sources.misp import connect_misp, failure_reason, remove_file, write_ca_file


class Kind(StrEnum):
    """What a report writes to MISP (a metrics label)."""

    SIGHTING = "sighting"
    """A sighting on one attribute."""
    EVENT_ATTRIBUTE = "event_attribute"
    """An attribute in the feed's daily event."""


@dataclass
class Report:
    """One write to MISP waiting in the queue."""

    kind: Kind
    feed: str
    target: MispTarget
    dedupe_key: Hashable
    body: dict[str, Any]
    attribute_uuid: str = ""
    event: dict[str, Any] | None = None
    publish: bool = False


UNAUTHORIZED = "Unauthorized"  # the failure reason of a rejected API key (retried once a sync brings a new one)
AUTH_FAILED_TEXT = "Authentication failed"  # what MISP says in a 403 for a wrong, expired or revoked key


class SendFailure(Exception):
    """A MISP call failed: ``retry`` says whether the report stays queued."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


def send_failure_reason(exc: BaseException) -> str:
    """The reason a PyMISP call raised, as reading names it (:func:`~falco_misp.sources.misp.failure_reason`); a
    rejected key (PyMISP's start-up, or a HEAD that has no body to tell more) is :data:`UNAUTHORIZED`."""
    reason = failure_reason(exc)
    if reason in ("HTTP401", "HTTP403", UNAUTHORIZED):
        return UNAUTHORIZED
    return type(exc).__name__ if reason == "Error" else reason


def check_answer(answer: object, *, duplicate_ok: bool = False) -> None:
    """Raise :class:`SendFailure` for PyMISP's ``{"errors": (status, body)}`` answers."""
    if not isinstance(answer, Mapping) or "errors" not in answer:
        return
    errors = answer["errors"]
    status = errors[0] if isinstance(errors, tuple | list) and errors and isinstance(errors[0], int) else None
    if duplicate_ok and "already exists" in str(errors):
        return
    if status == 401 or (status == 403 and AUTH_FAILED_TEXT in str(errors)):
        raise SendFailure(UNAUTHORIZED, retry=True)  # the key, not the report: kept until a sync brings a new key
    if status is None or status in (408, 425, 429):
        raise SendFailure(f"HTTP{status}" if status else "MispError", retry=True)
    raise SendFailure(f"HTTP{status}", retry=False)


class MispClients:
    """PyMISP clients by target (server and credentials), each with its CA bundle file; used on one thread only."""

    def __init__(self, limit: int = 8) -> None:
        self._limit = limit
        self._clients: OrderedDict[str, tuple[PyMISP, str | None]] = OrderedDict()
        self.known_events: set[str] = set()

    def get(self, target: MispTarget) -> PyMISP:
        key = target.key
        if key in self._clients:
            self._clients.move_to_end(key)
            return self._clients[key][0]
        ca_path = write_ca_file(target.ca_bundle) if target.ca_bundle else None
        try:
            client = connect_misp(target.server, target.auth_key, ca_path, policy=target.policy)
        except Exception as exc:
            remove_file(ca_path)
            raise SendFailure(send_failure_reason(exc), retry=True) from None
        self._clients[key] = (client, ca_path)
        while len(self._clients) > self._limit:
            self.drop(next(iter(self._clients)))
        return client

    def drop(self, key: str) -> None:
        entry = self._clients.pop(key, None)
        if entry is not None:
            remove_file(entry[1])

    def close(self) -> None:
        for key in list(self._clients):
            self.drop(key)


def call_misp(func: Callable[[], object], *, duplicate_ok: bool = False) -> object:
    """One PyMISP call; exceptions (network, 5xx, non-JSON) become retryable failures."""
    try:
        answer = func()
    except SendFailure:
        raise
    except Exception as exc:
        raise SendFailure(send_failure_reason(exc), retry=True) from None
    check_answer(answer, duplicate_ok=duplicate_ok)
    return answer


def send_event_group(client: PyMISP, clients: MispClients, reports: Sequence[Report]) -> None:
    """Add hits to their daily event, creating it on the day's first hit."""
    skeleton = reports[0].event or {}
    uuid = str(skeleton["uuid"])
    attributes = []
    for report in reports:
        attribute = MISPAttribute()
        attribute.from_dict(**report.body)
        attributes.append(attribute)
    created = False
    if uuid not in clients.known_events and not call_misp(partial(client.event_exists, uuid)):
        event = MISPEvent()
        event.from_dict(**{**skeleton, "Attribute": [r.body for r in reports]})
        # Another replica may have created it meanwhile: then append, as below.
        answer = call_misp(partial(client.add_event, event), duplicate_ok=True)
        created = not (isinstance(answer, Mapping) and "errors" in answer)
    if not created:
        try:
            call_misp(partial(client.add_attribute, uuid, cast(Any, attributes)), duplicate_ok=True)
        except SendFailure as failure:
            if failure.reason == "HTTP404":  # deleted in MISP since: create it again next round
                clients.known_events.discard(uuid)
                raise SendFailure("EventGone", retry=True) from None
            raise
    if len(clients.known_events) > 10_000:
        clients.known_events.clear()
    clients.known_events.add(uuid)
    if reports[0].publish:
        call_misp(lambda: client.publish(uuid))
