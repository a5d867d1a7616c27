"""The MISP emulator, driven by the real PyMISP client over loopback HTTP.

Expectations come from the reference fixtures in ``<shared>/reference/misp`` (read in place, never
copied): ``misp_indicators_test.json`` (event 1255, ORGNAME_387, threat level 2), CIRCL's
``existing_event.json`` (event 9747, unpublished, domain-ip objects), ``to_delete1.json`` and the
feed example (feed form, no ids), ``sighting_1.json`` (event 60, Synovus Financial).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pymisp
import pytest
import requests
from pymisp.exceptions import MISPServerError, PyMISPError, PyMISPUnexpectedResponse

from emulators.misp import Fault, MispEmulator, reference_dir

INDICATORS = "misp-tests/misp_indicators_test.json"
EXISTING = "pymisp-tests/existing_event.json"
TO_DELETE = "pymisp-tests/to_delete1.json"
SIGHTING = "pymisp-tests/sighting_1.json"
FEED_EVENT_UUID = "57c4445b-c548-4654-af0b-4be3950d210f"
FEED_EVENT = f"feed-example/{FEED_EVENT_UUID}.json"
TO_DELETE_UUID = "5a0a9aa9-23a4-4607-b6df-41a9950d210f"
BLOG_POST = 'osint:source-type="blog-post"'


def reference_event(relative: str) -> dict[str, Any]:
    """A reference event, bare (the dict inside {"Event": ...})."""
    document = json.loads((reference_dir() / relative).read_text(encoding="utf-8"))
    return dict(document.get("Event", document))


def all_attributes(event: dict[str, Any]) -> list[dict[str, Any]]:
    return [*event.get("Attribute", []), *(a for o in event.get("Object", []) for a in o["Attribute"])]


@pytest.fixture
def emulator() -> Iterator[MispEmulator]:
    with MispEmulator() as server:
        yield server


@pytest.fixture
def loaded(emulator: MispEmulator) -> MispEmulator:
    emulator.load_reference()
    return emulator


@pytest.fixture
def misp(emulator: MispEmulator) -> pymisp.PyMISP:
    return pymisp.PyMISP(emulator.url, emulator.api_key, ssl=False, timeout=5)


def search(client: pymisp.PyMISP, **kwargs: Any) -> list[dict[str, Any]]:
    result = client.search(controller="attributes", **kwargs)
    assert isinstance(result, dict), result
    assert "errors" not in result, result
    return list(result["Attribute"])


def values(attributes: list[dict[str, Any]]) -> list[str]:
    return [a["value"] for a in attributes]


def raw_search(emulator: MispEmulator, body: dict[str, Any]) -> requests.Response:
    """PyMISP hides response headers; X-Result-Count is checked with a plain POST."""
    return requests.post(
        f"{emulator.url}/attributes/restSearch",
        json=body,
        headers={"Authorization": emulator.api_key, "Accept": "application/json"},
        timeout=5,
    )


# ------------------------------------------------------------------------------- client start-up


def test_pymisp_initialises_without_warnings(emulator: MispEmulator, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pymisp"):
        client = pymisp.PyMISP(emulator.url, emulator.api_key, ssl=False, timeout=5)

    assert caplog.records == []
    assert [(r.method, r.path) for r in emulator.requests] == [
        ("GET", "/servers/getVersion"),
        ("GET", "/users/view/me"),
        ("GET", "/attributes/describeTypes.json"),
    ]
    assert all(r.headers["Authorization"] == emulator.api_key for r in emulator.requests)
    assert "ip-dst" in client.types
    assert "Network activity" in client.categories


def test_load_reference_loads_every_event_fixture(loaded: MispEmulator) -> None:
    events = {e["uuid"]: e for e in loaded.events}

    assert len(events) == 5
    assert events["5abb8534-ba9c-48cd-bb63-02480a00020f"]["id"] == "1255"
    # Feed-form events have no ids: the emulator assigns them.
    assert events[FEED_EVENT_UUID]["id"].isdigit()
    assert events[TO_DELETE_UUID]["id"].isdigit()
    fixtures = (INDICATORS, EXISTING, TO_DELETE, SIGHTING, FEED_EVENT)
    expected = sum(len(all_attributes(reference_event(p))) for p in fixtures)
    assert len(loaded.attribute_ids()) == expected


def test_add_event_replaces_an_event_with_the_same_uuid(emulator: MispEmulator, misp: pymisp.PyMISP) -> None:
    emulator.load_reference(TO_DELETE, INDICATORS)
    before = search(misp, type_attribute="ip-src")
    emulator.load_reference(TO_DELETE, INDICATORS)

    assert len(emulator.events) == 2
    expected = len(reference_event(TO_DELETE)["Attribute"]) + len(all_attributes(reference_event(INDICATORS)))
    assert len(emulator.attribute_ids()) == expected
    assert search(misp, type_attribute="ip-src") == before  # same ids, object ids included


# ------------------------------------------------------------------------------------------ auth


def test_wrong_key_fails_pymisp_construction(emulator: MispEmulator) -> None:
    with pytest.raises(PyMISPError, match="Unable to get the user settings"):
        pymisp.PyMISP(emulator.url, "not-the-key", ssl=False, timeout=5)


def test_wrong_key_makes_search_return_misp_403_errors(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    loaded.api_key = "rotated-key"

    result = misp.search(controller="attributes", type_attribute="ip-dst")

    assert isinstance(result, dict)
    status, body = result["errors"]
    assert status == 403
    assert body["name"].startswith("Authentication failed.")
    assert body["url"] == "/attributes/restSearch"


def test_missing_authorization_header_is_rejected(loaded: MispEmulator) -> None:
    response = requests.post(f"{loaded.url}/attributes/restSearch", json={"type": "ip-dst"}, timeout=5)

    assert response.status_code == 403
    assert response.json()["message"].startswith("Authentication failed.")


# --------------------------------------------------------------------------------- request body


def test_restsearch_body_is_recorded_as_pymisp_sends_it(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    search(
        misp,
        type_attribute=["ip-dst", "domain"],
        category="Network activity",
        org="CIRCL",
        tags=["tlp:white"],
        to_ids=1,
        published=True,
        timestamp="30d",
        publish_timestamp=1500000000,
        enforce_warninglist=True,
        exclude_decayed=True,
        include_event_tags=True,
        limit=10,
        page=2,
        threat_level_id=[1, 2],  # not a PyMISP parameter: forwarded as-is through **kwargs
        falco_custom="x",
    )

    (request,) = loaded.restsearch_requests()
    assert request.method == "POST"
    body = request.json
    assert body is not None
    assert body["type"] == ["ip-dst", "domain"]
    assert body["category"] == "Network activity"
    assert body["org"] == "CIRCL"
    assert body["tags"] == ["tlp:white"]
    assert body["to_ids"] == 1
    assert body["published"] is True
    assert body["timestamp"] == "30d"
    assert body["publish_timestamp"] == 1500000000
    assert body["enforceWarninglist"] == 1
    assert body["excludeDecayed"] == 1
    assert body["includeEventTags"] == 1
    assert body["limit"] == 10
    assert body["page"] == 2
    assert body["threat_level_id"] == [1, 2]
    assert body["returnFormat"] == "json"
    assert "deleted" not in body  # PyMISP drops None values
    assert request.ignored_params == ("falco_custom",)


# ---------------------------------------------------------------------------------- answer shape


def test_attribute_shape_includes_object_attributes(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    found = search(misp, type_attribute="ip-src", value="1.2.3.4")

    # One top-level attribute and four from objects (network-connection, network-socket, whois, asn).
    assert [a["id"] for a in found] == ["253458", "253515", "253523", "253540", "253550"]
    top, in_object = found[0], found[1]
    assert top["event_id"] == "1255"
    assert top["object_id"] == "0"
    assert "Object" not in top
    assert "Tag" not in top  # no tag: MISP leaves the key out
    assert top["to_ids"] is True
    assert top["timestamp"] == "1522238772"
    assert top["deleted"] is False
    assert in_object["object_id"] == "13264"
    assert in_object["object_relation"] == "ip-src"
    assert in_object["Object"] == {"id": "13264", "distribution": "5", "sharing_group_id": "0"}
    event = top["Event"]
    assert {k: event[k] for k in ("id", "info", "org_id", "orgc_id", "uuid")} == {
        "id": "1255",
        "info": "STIX indicators test event",
        "org_id": "1",
        "orgc_id": "14",
        "uuid": "5abb8534-ba9c-48cd-bb63-02480a00020f",
    }
    assert event["published"] is True
    assert event["publish_timestamp"] == "1592393871"
    assert event["threat_level_id"] == "2"
    assert event["Orgc"] == {"id": "14", "name": "ORGNAME_387", "uuid": "5a8e935e-5484-488c-852c-776f7c7cf985"}


def test_minimal_event_context_and_include_context(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    loaded.minimal_event_context = True

    (plain,) = search(misp, type_attribute="url", eventid=60)
    (context,) = search(misp, type_attribute="url", eventid=60, include_context=True)

    assert set(plain["Event"]) == {"id", "info", "org_id", "orgc_id", "uuid"}
    assert context["Event"]["date"] == "2018-08-01"
    assert context["Event"]["Orgc"]["name"] == "Synovus Financial"
    assert [t["name"] for t in context["Event"]["Tag"]] == ["PasteBin: MALWAREMESSIAGH", 'misp-galaxy:banker="Gozi"']


def test_feed_form_events_get_ids_in_answers(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    found = search(misp, type_attribute="ip-dst", org="CIRCL", eventid=[e["id"] for e in loaded.events])
    from_to_delete = [a for a in found if a["Event"]["uuid"] == TO_DELETE_UUID]

    assert values(from_to_delete) == ["98.126.156.210", "104.148.70.217"]
    assert all(a["id"].isdigit() and a["event_id"] == a["Event"]["id"] for a in from_to_delete)
    assert {a["Event"]["orgc_id"] for a in found} == {"2"}  # CIRCL's id from existing_event.json


def test_pythonify_builds_pymisp_objects(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    found = misp.search(controller="attributes", type_attribute="ip-dst", eventid=9748, pythonify=True)

    assert isinstance(found, list)
    attributes = [a for a in found if isinstance(a, pymisp.MISPAttribute)]
    assert len(attributes) == len(found)
    assert [(a.type, a.value) for a in attributes] == [("ip-dst", "98.126.156.210"), ("ip-dst", "104.148.70.217")]
    assert attributes[0].Event.info == "OSINT -  New Malware with Ties to SunOrcal Discovered"


# ---------------------------------------------------------------------------------------- paging


def test_paging_with_limit_and_page(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    everything = search(misp, type_attribute="ip-dst")
    pages = [search(misp, type_attribute="ip-dst", limit=5, page=page) for page in (1, 2, 3, 4, 5)]

    assert len(everything) == 18
    assert [len(p) for p in pages] == [5, 5, 5, 3, 0]  # a short last page, then nothing
    assert [a["id"] for p in pages for a in p] == [a["id"] for a in everything]
    assert [int(a["id"]) for a in everything] == sorted(int(a["id"]) for a in everything)


def test_x_result_count_is_the_total_before_paging(loaded: MispEmulator) -> None:
    page = raw_search(loaded, {"type": "ip-dst", "limit": 5, "page": 4})

    assert page.status_code == 200
    assert page.headers["X-Result-Count"] == "18"
    assert len(page.json()["response"]["Attribute"]) == 3


def test_warninglist_filters_after_paging_like_misp(loaded: MispEmulator) -> None:
    # MISP counts and pages in SQL, then drops warninglisted values from the page: page 1 is short
    # (four 8.8.8.8 of event 1255 come first) although more pages follow.
    body = {"type": "ip-dst", "limit": 5, "page": 1, "enforceWarninglist": 1}
    page = raw_search(loaded, body)

    assert page.headers["X-Result-Count"] == "18"
    assert values(page.json()["response"]["Attribute"]) == ["87.236.211.182"]
    next_page = raw_search(loaded, {**body, "page": 2})
    assert len(next_page.json()["response"]["Attribute"]) == 5


# --------------------------------------------------------------------------------------- filters


def test_type_filter_list_and_negation(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    assert values(search(misp, eventid=60, type_attribute="!domain")) == [
        "http://sistemait.it/softaculous/backup/client.rar"
    ]
    assert len(search(misp, eventid=9747, type_attribute=["ip-dst", "domain"])) == 12 + 19
    assert len(search(misp, eventid=60, type_attribute=["!domain", "!url"])) == 0


def test_category_filter(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    regkeys = [a["value"] for a in reference_event(TO_DELETE)["Attribute"] if a["category"] == "Persistence mechanism"]

    assert values(search(misp, eventid=9748, category="Persistence mechanism")) == regkeys
    network = search(misp, eventid=9748, category=["Network activity"], type_attribute="!hostname")
    assert values(network) == ["98.126.156.210", "104.148.70.217"]


def test_org_filter_by_name_id_uuid_and_negation(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    def event_ids(**kwargs: Any) -> set[str]:
        return {a["event_id"] for a in search(misp, type_attribute=["ip-dst", "domain", "url"], **kwargs)}

    circl = {e["id"] for e in loaded.events if e["Orgc"]["name"] == "CIRCL" and e["id"] != "1"}  # feed event: no ip
    assert event_ids(org="CIRCL") == circl == {"9747", "9748"}
    assert event_ids(org="circl") == circl  # names compare case-insensitively
    assert event_ids(org=14) == {"1255"}
    assert event_ids(org="5a68c02d-959c-4c8a-a571-0dcac0a8060a") == {"60"}
    assert event_ids(org="!CIRCL") == {"1255", "60"}
    assert event_ids(org=["ORGNAME_387", "Synovus Financial"]) == {"1255", "60"}
    assert event_ids(org="No Such Org") == set()


def test_to_ids_filter(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    texts = [a for a in all_attributes(reference_event(INDICATORS)) if a["type"] == "text"]

    ids_only = search(misp, eventid=1255, type_attribute="text", to_ids=1)
    not_ids = search(misp, eventid=1255, type_attribute="text", to_ids=0)

    assert sorted(values(ids_only)) == sorted(a["value"] for a in texts if a["to_ids"]) == ["CWE-119", "misp", "misp"]
    assert len(not_ids) == len([a for a in texts if not a["to_ids"]]) == 70
    assert len(search(misp, eventid=1255, type_attribute="text")) == 73


def test_published_filter(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    unpublished = search(misp, type_attribute="ip-dst", published=False)
    published = search(misp, type_attribute="ip-dst", published=True)

    assert {a["event_id"] for a in unpublished} == {"9747"}  # existing_event.json is not published
    assert {a["event_id"] for a in published} == {"1255", "9748"}


def test_threat_level_filter_values_and_lists(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    def event_ids(level: Any) -> set[str]:
        return {a["event_id"] for a in search(misp, type_attribute=["ip-dst", "domain"], threat_level_id=level)}

    assert event_ids([1, 2]) == {"1255"}
    assert event_ids(3) == {"9747", "9748", "60"}
    assert event_ids(["2", "3"]) == {"1255", "9747", "9748", "60"}
    assert event_ids("!3") == {"1255"}
    assert event_ids(1) == set()


def test_deleted_attributes(emulator: MispEmulator, misp: pymisp.PyMISP) -> None:
    event = copy.deepcopy(reference_event(TO_DELETE))
    deleted = next(a for a in event["Attribute"] if a["value"] == "98.126.156.210")
    deleted["deleted"] = True
    emulator.add_event({"Event": event})

    assert values(search(misp, type_attribute="ip-dst")) == ["104.148.70.217"]
    assert values(search(misp, type_attribute="ip-dst", deleted=1)) == ["98.126.156.210"]
    assert values(search(misp, type_attribute="ip-dst", deleted=[0, 1])) == ["98.126.156.210", "104.148.70.217"]


def test_value_filter_exact_composite_and_like(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    composite = search(misp, value="1.2.3.4", type_attribute="domain|ip")
    assert values(composite) == ["www.circl.lu|1.2.3.4"]
    assert values(search(misp, value="12.34.56.78")) == ["12.34.56.78|2510"]
    assert values(search(misp, value=["www.olinaodi.com", "www.fyoutside.com"])) == [
        "www.fyoutside.com",
        "www.olinaodi.com",
    ]
    assert sorted(set(values(search(misp, value="%.circl.lu", type_attribute="hostname")))) == [
        "www.circl.lu",
        "www.hostname.circl.lu",
    ]


def test_tags_match_attribute_tags_and_event_tags(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    found = search(misp, tags=[BLOG_POST])
    by_event = {eid: [a for a in found if a["event_id"] == eid] for eid in {a["event_id"] for a in found}}

    # to_delete1.json carries the tag on the event: all its attributes match.
    assert len(by_event["9748"]) == len(reference_event(TO_DELETE)["Attribute"]) == 75
    # existing_event.json carries it on two attributes only.
    assert [a["type"] for a in by_event["9747"]] == ["link", "text"]
    assert all(BLOG_POST in [t["name"] for t in a["Tag"]] for a in by_event["9747"])
    assert set(by_event) == {"9747", "9748"}


def test_tag_wildcard_and_case_insensitivity(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    assert len(search(misp, tags=["OSINT:SOURCE-TYPE=%"])) == 77
    workflow = search(misp, tags=["workflow:%"], type_attribute="domain")
    assert {a["event_id"] for a in workflow} == {"9747"}
    assert len(workflow) == 19
    assert search(misp, tags=["workflow"]) == []  # no % -> the whole name must match
    assert search(misp, tags=["no-such-tag:%"]) == []


def test_tag_not_and_and(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    hostnames_1255 = ["www.circl.lu", "www.hostname.circl.lu", "circl.lu", "google.com"]
    hostnames_9748 = ["www.fyoutside.com", "www.tashdqdxp.com", "www.weryhstui.com", "www.olinaodi.com"]

    assert values(search(misp, type_attribute="hostname", tags={"NOT": ["type:OSINT"]})) == hostnames_1255
    assert values(search(misp, type_attribute="hostname", tags=["!type:OSINT"])) == hostnames_1255
    both = misp.build_complex_query(and_parameters=["tlp:white", "type:OSINT"])
    assert values(search(misp, type_attribute="hostname", tags=both)) == hostnames_9748
    # NOT looks at attribute tags (drops 9747's only link) and at event tags (drops all of 9748).
    links = search(misp, type_attribute="link", tags={"OR": ["tlp:white"], "NOT": [BLOG_POST]})
    assert {a["event_id"] for a in links} == {"1", "1255"}


def test_event_tags_parameter_ignores_attribute_tags(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    found = search(misp, event_tags=[BLOG_POST])

    assert {a["event_id"] for a in found} == {"9748"}


def test_include_event_tags(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    (without,) = search(misp, eventid=60, type_attribute="url")
    (with_tags,) = search(misp, eventid=60, type_attribute="url", include_event_tags=True)

    assert "Tag" not in without
    assert [(t["name"], t["inherited"]) for t in with_tags["Tag"]] == [
        ("PasteBin: MALWAREMESSIAGH", True),
        ('misp-galaxy:banker="Gozi"', True),
    ]
    (link,) = search(misp, eventid=9747, type_attribute="link", include_event_tags=True)
    assert [t["name"] for t in link["Tag"][:2]] == [BLOG_POST, 'osint:certainty="93"']
    assert "inherited" not in link["Tag"][0]
    assert len(link["Tag"]) == 2 + 18


def test_timestamp_epoch_range_and_shorthand(emulator: MispEmulator, misp: pymisp.PyMISP) -> None:
    event = copy.deepcopy(reference_event(TO_DELETE))
    fresh = next(a for a in event["Attribute"] if a["value"] == "104.148.70.217")
    fresh["timestamp"] = str(int(time.time()) - 3600)
    emulator.add_event(event)
    stamps = [int(a["timestamp"]) for a in event["Attribute"]]

    assert values(search(misp, timestamp="2h")) == ["104.148.70.217"]
    assert values(search(misp, timestamp="7200s")) == ["104.148.70.217"]
    assert search(misp, timestamp="30m") == []
    assert len(search(misp, timestamp=1510922428)) == len([s for s in stamps if s >= 1510922428])
    in_range = search(misp, timestamp=(1510922426, 1510922426))
    assert len(in_range) == stamps.count(1510922426) == 16
    assert len(search(misp, timestamp=("1510922427", "1510922426"))) == 16 + stamps.count(1510922427)


def test_publish_timestamp_and_last(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    def event_ids(**kwargs: Any) -> set[str]:
        return {a["event_id"] for a in search(misp, type_attribute=["domain", "url", "ip-dst"], **kwargs)}

    assert event_ids(publish_timestamp=1550000000) == {"1255", "60"}
    assert event_ids(last=1550000000) == {"1255", "60"}
    assert event_ids(publish_timestamp=(1518455494, 1550506283)) == {"9748", "60"}
    assert event_ids(publish_timestamp="1d") == set()


def test_enforce_warninglist_and_settable_list(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    assert values(search(misp, eventid=1255, type_attribute="ip-dst")) == ["8.8.8.8"] * 4
    assert search(misp, eventid=1255, type_attribute="ip-dst", enforce_warninglist=True) == []

    loaded.warninglist = {"98.126.0.0/16"}
    kept = search(misp, eventid=9748, type_attribute="ip-dst", enforce_warninglist=True)
    assert values(kept) == ["104.148.70.217"]


def test_exclude_decayed(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    loaded.decayed.add("98.126.156.210")

    assert len(search(misp, eventid=9748, type_attribute="ip-dst")) == 2
    assert values(search(misp, eventid=9748, type_attribute="ip-dst", exclude_decayed=True)) == ["104.148.70.217"]


def test_unsupported_return_format_is_a_400(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    result = misp.search(controller="attributes", return_format="csv", type_attribute="ip-dst")

    assert isinstance(result, dict)
    assert result["errors"][0] == 400


# ---------------------------------------------------------------------------------------- faults


def test_refused_raises_connection_error_then_resumes(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    assert len(search(misp, type_attribute="ip-dst")) == 18
    url = loaded.url

    loaded.refuse()
    with pytest.raises(requests.exceptions.ConnectionError):
        misp.search(controller="attributes", type_attribute="ip-dst")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/feed/manifest.json", timeout=2)

    loaded.resume()
    assert loaded.url == url
    assert len(search(misp, type_attribute="ip-dst")) == 18


def test_refused_at_construction_is_a_pymisp_error(emulator: MispEmulator) -> None:
    emulator.fault = Fault.refused()

    with pytest.raises(PyMISPError, match="Unable to connect to MISP"):
        pymisp.PyMISP(emulator.url, emulator.api_key, ssl=False, timeout=2)


def test_refused_set_before_start() -> None:
    server = MispEmulator()
    server.fault = Fault.refused()
    with server:
        url = server.url
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{url}/servers/getVersion", timeout=2)
        server.resume()
        client = pymisp.PyMISP(url, server.api_key, ssl=False, timeout=5)
        assert "ip-dst" in client.types


def test_refused_after_first_page(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    loaded.fault = Fault.refused(after_requests=1)

    assert len(search(misp, type_attribute="ip-dst", limit=5, page=1)) == 5
    with pytest.raises(requests.exceptions.ConnectionError):
        misp.search(controller="attributes", type_attribute="ip-dst", limit=5, page=2)


def test_timeout_raises_read_timeout(loaded: MispEmulator) -> None:
    client = pymisp.PyMISP(loaded.url, loaded.api_key, ssl=False, timeout=1)
    loaded.fault = Fault.timeout(3)

    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.search(controller="attributes", type_attribute="ip-dst")
    assert time.monotonic() - started < 2.5

    started = time.monotonic()
    loaded.stop()  # does not wait for the handler still sleeping on the 3 s delay
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("code", [500, 502, 503])
def test_server_errors_raise_misp_server_error(loaded: MispEmulator, misp: pymisp.PyMISP, code: int) -> None:
    loaded.fault = Fault.status(code)

    # PyMISP reports every 5xx as "Error code 500" whatever the real code.
    with pytest.raises(MISPServerError, match="Error code 500"):
        misp.search(controller="attributes", type_attribute="ip-dst")


@pytest.mark.parametrize("code", [401, 403, 404, 429])
def test_client_errors_are_returned_not_raised(loaded: MispEmulator, misp: pymisp.PyMISP, code: int) -> None:
    loaded.fault = Fault.status(code)

    result = misp.search(controller="attributes", type_attribute="ip-dst")

    assert isinstance(result, dict)
    status, body = result["errors"]
    assert status == code
    assert set(body) == {"name", "message", "url"}


def test_invalid_json_raises_unexpected_response(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    loaded.fault = Fault.invalid_json()

    with pytest.raises(PyMISPUnexpectedResponse, match="Unexpected response"):
        misp.search(controller="attributes", type_attribute="ip-dst")


def test_truncated_body_raises_chunked_encoding_error(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    loaded.fault = Fault.truncated()

    # requests reports a short Content-Length read as ChunkedEncodingError (IncompleteRead).
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        misp.search(controller="attributes", type_attribute="ip-dst")


def test_fault_hits_second_page_only(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    loaded.fault = Fault.status(500, after_requests=1)

    assert len(search(misp, type_attribute="ip-dst", limit=5, page=1)) == 5
    with pytest.raises(MISPServerError):
        misp.search(controller="attributes", type_attribute="ip-dst", limit=5, page=2)
    loaded.fault = None
    assert len(search(misp, type_attribute="ip-dst", limit=5, page=2)) == 5


def test_fault_scoped_to_paths(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    loaded.fault = Fault.truncated(paths=("/feed/",))

    assert len(search(misp, type_attribute="ip-dst")) == 18
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{loaded.url}/feed/manifest.json", timeout=2)


def test_faulted_requests_are_recorded(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    loaded.fault = Fault.status(500)

    with pytest.raises(MISPServerError):
        misp.search(controller="attributes", type_attribute="ip-dst", tags="tlp:white")

    (request,) = loaded.restsearch_requests()
    assert request.json is not None
    assert request.json["tags"] == "tlp:white"


# ------------------------------------------------------------------------------------------ feed


def test_static_feed_manifest_matches_reference(emulator: MispEmulator) -> None:
    emulator.load_reference(FEED_EVENT, TO_DELETE)
    expected = json.loads((reference_dir() / "feed-example/manifest.json").read_text())[FEED_EVENT_UUID]

    response = requests.get(f"{emulator.url}/feed/manifest.json", timeout=5)  # no Authorization

    assert response.status_code == 200
    manifest = response.json()
    assert set(manifest) == {FEED_EVENT_UUID, TO_DELETE_UUID}
    entry = manifest[FEED_EVENT_UUID]
    assert {k: entry[k] for k in expected} == expected
    assert entry["publish_timestamp"] == 1472548231
    assert manifest[TO_DELETE_UUID]["info"] == "OSINT -  New Malware with Ties to SunOrcal Discovered"


def test_static_feed_event_and_hashes(emulator: MispEmulator) -> None:
    emulator.load_reference(FEED_EVENT)
    original = reference_event(FEED_EVENT)

    event = requests.get(f"{emulator.url}/feed/{FEED_EVENT_UUID}.json", timeout=5).json()["Event"]
    hashes = requests.get(f"{emulator.url}/feed/hashes.csv", timeout=5).text
    missing = requests.get(f"{emulator.url}/feed/00000000-0000-0000-0000-000000000000.json", timeout=5)

    assert {k: event[k] for k in ("uuid", "info", "date", "published", "Orgc")} == {
        k: original[k] for k in ("uuid", "info", "date", "published", "Orgc")
    }
    assert [(a["uuid"], a["type"], a["value"]) for a in event["Attribute"]] == [
        (a["uuid"], a["type"], a["value"]) for a in original["Attribute"]
    ]
    assert "id" not in event
    assert set(hashes.splitlines()) == set((reference_dir() / "feed-example/hashes.csv").read_text().splitlines())
    assert missing.status_code == 404


def test_text_lists(emulator: MispEmulator) -> None:
    emulator.texts["blocklist.txt"] = "# bad hosts\n98.126.156.210\nwww.olinaodi.com\n"

    response = requests.get(f"{emulator.url}/text/blocklist.txt", timeout=5)
    missing = requests.get(f"{emulator.url}/text/other.txt", timeout=5)

    assert response.status_code == 200
    assert response.text.splitlines()[1:] == ["98.126.156.210", "www.olinaodi.com"]
    assert missing.status_code == 404


# ------------------------------------------------------------------------------------- sightings


def test_sighting_by_value_is_recorded(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    body = {"value": "98.126.156.210", "type": "0", "source": "falco-misp-operator"}

    result = misp.add_sighting(body)

    assert isinstance(result, dict)
    sighting = result["Sighting"]
    (target,) = search(misp, value="98.126.156.210")
    assert sighting["attribute_id"] == target["id"]
    assert sighting["type"] == "0"
    assert sighting["source"] == "falco-misp-operator"
    assert loaded.sightings == [body]
    (with_sightings,) = search(misp, value="98.126.156.210", include_sightings=True)
    assert [s["source"] for s in with_sightings["Sighting"]] == ["falco-misp-operator"]


def test_sighting_by_attribute_uuid(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    (target,) = search(misp, value="www.olinaodi.com")

    result = misp.add_sighting({"type": "1", "source": "falco"}, attribute=target["uuid"])

    assert isinstance(result, dict)
    assert result["Sighting"]["attribute_uuid"] == target["uuid"]
    assert result["Sighting"]["type"] == "1"
    assert loaded.requests[-1].path == f"/sightings/add/{target['uuid']}"


def test_sighting_for_unknown_value_is_refused_like_misp(loaded: MispEmulator, misp: pymisp.PyMISP) -> None:
    result = misp.add_sighting({"value": "203.0.113.99", "type": "0", "source": "falco"})

    assert isinstance(result, dict)
    status, body = result["errors"]
    assert status == 403
    assert body["saved"] is False
    assert "No valid attributes found" in body["message"]
    assert loaded.sightings == []
