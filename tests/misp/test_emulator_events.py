"""The emulator's event writes (issue 5), driven by the real PyMISP: what the operator's events mode calls."""

from __future__ import annotations

from collections.abc import Iterator

import pymisp
import pytest

from emulators.misp import MispEmulator

EVENT_UUID = "0b7e6b1c-6a55-5d4b-9a57-2a1c3f0e9d11"


@pytest.fixture
def emulator() -> Iterator[MispEmulator]:
    with MispEmulator() as server:
        yield server


@pytest.fixture
def misp(emulator: MispEmulator) -> pymisp.PyMISP:
    return pymisp.PyMISP(emulator.url, emulator.api_key, ssl=False, timeout=5)


def new_event(uuid: str = EVENT_UUID) -> pymisp.MISPEvent:
    event = pymisp.MISPEvent()
    event.from_dict(
        uuid=uuid, info="Falco hits", date="2026-01-05", distribution="0", threat_level_id="4", analysis="0",
        published=False, Tag=[{"name": "falco-misp:observed"}],
        Attribute=[{"type": "ip-dst", "category": "Network activity", "value": "45.0.0.1", "to_ids": False}],
    )  # fmt: skip
    return event


def test_add_event_then_view_and_exists(emulator: MispEmulator, misp: pymisp.PyMISP) -> None:
    assert misp.event_exists(EVENT_UUID) is False
    answer = misp.add_event(new_event())
    assert isinstance(answer, dict)
    event = answer["Event"]
    assert event["uuid"] == EVENT_UUID and event["info"] == "Falco hits"
    assert [t["name"] for t in event["Tag"]] == ["falco-misp:observed"]
    assert [(a["type"], a["value"], a["to_ids"]) for a in event["Attribute"]] == [("ip-dst", "45.0.0.1", False)]
    assert misp.event_exists(EVENT_UUID) is True
    assert misp.event_exists(event["id"]) is True
    viewed = misp.get_event(EVENT_UUID, pythonify=True)
    assert isinstance(viewed, pymisp.MISPEvent)
    assert viewed.info == "Falco hits" and len(viewed.attributes) == 1
    # the new attribute is searchable like any other (to_ids false: a toIds feed never reads it back)
    found = misp.search(controller="attributes", value="45.0.0.1")
    assert [a["event_id"] for a in found["Attribute"]] == [event["id"]]
    assert misp.search(controller="attributes", value="45.0.0.1", to_ids=1)["Attribute"] == []


def test_add_event_twice_is_refused_like_misp(emulator: MispEmulator, misp: pymisp.PyMISP) -> None:
    misp.add_event(new_event())
    again = misp.add_event(new_event())
    assert again["errors"][0] == 403
    assert "already exists" in again["errors"][1]["message"]
    assert misp.add_event(pymisp.MISPEvent())["errors"][0] == 403  # no info


def test_add_attribute_single_list_duplicates_and_unknown_event(emulator: MispEmulator, misp: pymisp.PyMISP) -> None:
    misp.add_event(new_event())
    one = pymisp.MISPAttribute()
    one.from_dict(type="ip-src", value="45.0.0.2", category="Network activity", to_ids=False, comment="c")
    answer = misp.add_attribute(EVENT_UUID, one)
    assert answer["Attribute"]["value"] == "45.0.0.2" and answer["Attribute"]["comment"] == "c"
    duplicate = misp.add_attribute(EVENT_UUID, one)
    assert duplicate["errors"][0] == 403 and "already exists" in str(duplicate["errors"][1])
    two = pymisp.MISPAttribute()
    two.from_dict(type="ip-dst", value="45.0.0.3", category="Network activity", to_ids=False)
    batch = misp.add_attribute(EVENT_UUID, [one, two])
    assert [a["value"] for a in batch["Attribute"]] == ["45.0.0.3"]
    assert "already exists" in str(batch["errors"])
    view = emulator.event_view(EVENT_UUID)
    assert view is not None
    assert sorted(a["value"] for a in view["Event"]["Attribute"]) == ["45.0.0.1", "45.0.0.2", "45.0.0.3"]
    missing = misp.add_attribute("11111111-2222-4333-8444-555555555555", one)
    assert missing["errors"][0] == 404


def test_publish(emulator: MispEmulator, misp: pymisp.PyMISP) -> None:
    misp.add_event(new_event())
    assert emulator.events[0]["published"] is False
    answer = misp.publish(EVENT_UUID)
    assert answer["message"] == "Job queued"
    assert emulator.events[0]["published"] is True
    assert misp.publish("11111111-2222-4333-8444-555555555555")["errors"][0] == 404
