"""``spec.reporting``: strict parsing, defaults, errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from reportkit import reporting_spec

from falco_misp.errors import SpecError
from falco_misp.feed.model import DEFAULT_EVENT_TAGS, EventsReporting, Reporting, SightingsReporting
from falco_misp.feed.parse import parse_spec


def test_defaults_report_nothing() -> None:
    spec = parse_spec({"source": {"file": {"url": "x.json"}}})
    assert spec.reporting == Reporting()
    assert not spec.reporting.enabled
    assert spec.reporting.sightings == SightingsReporting(enabled=False, source="", dedup_window_seconds=3600)
    assert spec.reporting.events == EventsReporting(
        enabled=False, tags=DEFAULT_EVENT_TAGS, distribution=0, threat_level=4, analysis=0, to_ids=False,
        published=False,
    )  # fmt: skip


def test_every_field() -> None:
    spec = parse_spec(
        reporting_spec(
            sightings={"enabled": True, "source": "{cluster}/{node}", "dedupWindow": "15m"},
            events={
                "enabled": True, "tags": ["tlp:amber", 'misp-galaxy:threat-actor="APT 28"', "tlp:amber"],
                "distribution": 3, "threatLevel": "Medium", "analysis": "completed", "toIds": True, "published": True,
            },
        )
    )  # fmt: skip
    assert spec.reporting.sightings == SightingsReporting(True, "{cluster}/{node}", 900)
    assert spec.reporting.events == EventsReporting(
        True, ("tlp:amber", 'misp-galaxy:threat-actor="APT 28"'), 3, 2, 2, True, True
    )
    numeric = parse_spec(reporting_spec(events={"enabled": True, "threatLevel": 1, "analysis": 0}))
    assert (numeric.reporting.events.threat_level, numeric.reporting.events.analysis) == (1, 0)


@pytest.mark.parametrize(
    ("reporting", "field"),
    [
        ({"sightings": {"enabled": "yes"}}, "spec.reporting.sightings.enabled"),
        ({"sightings": {"source": "{host}"}}, "spec.reporting.sightings.source"),
        ({"sightings": {"source": "a{b"}}, "spec.reporting.sightings.source"),
        ({"sightings": {"source": "line\nbreak"}}, "spec.reporting.sightings.source"),
        ({"sightings": {"source": "x" * 256}}, "spec.reporting.sightings.source"),
        ({"sightings": {"dedupWindow": "30s"}}, "spec.reporting.sightings.dedupWindow"),
        ({"sightings": {"dedupWindow": "31d"}}, "spec.reporting.sightings.dedupWindow"),
        ({"sightings": {"dedupWindow": "1 hour"}}, "spec.reporting.sightings.dedupWindow"),
        ({"sightings": {"dedup": "1h"}}, "spec.reporting.sightings.dedup"),
        ({"events": {"distribution": 4}}, "spec.reporting.events.distribution"),
        ({"events": {"distribution": "all"}}, "spec.reporting.events.distribution"),
        ({"events": {"threatLevel": "severe"}}, "spec.reporting.events.threatLevel"),
        ({"events": {"analysis": 3}}, "spec.reporting.events.analysis"),
        ({"events": {"tags": ["ok", "bad\ttag"]}}, "spec.reporting.events.tags[1]"),
        ({"events": {"tags": "tlp:amber"}}, "spec.reporting.events.tags"),
        ({"events": {"published": 1}}, "spec.reporting.events.published"),
        ({"alerts": {}}, "spec.reporting.alerts"),
    ],
)
def test_errors_name_the_field(reporting: dict[str, Any], field: str) -> None:
    spec = reporting_spec()
    spec["reporting"] = reporting
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert info.value.field == field


@pytest.mark.parametrize("section", ["sightings", "events"])
def test_reporting_needs_a_misp_server(section: str) -> None:
    spec = {"source": {"text": {"url": "https://x.example/list.txt"}}, "reporting": {section: {"enabled": True}}}
    with pytest.raises(SpecError, match=r"needs source\.misp") as info:
        parse_spec(spec)
    assert info.value.field == "spec.reporting"
    spec["reporting"] = {section: {"enabled": False}}
    assert not parse_spec(spec).reporting.enabled
