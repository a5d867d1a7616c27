"""A failed fetch says why, in the client's own words, without secrets (issue 11 item 3).

MISP-compatible servers that answer PyMISP's start-up calls oddly used to give ``source failed (Error): MISP at
http://...: PyMISPError`` (or ``...: KeyError``) while PyMISP's message named the problem. The emulator reproduces
those answers; the real PyMISP reads them; the SourceError (what status, Events, logs and the CLI show) must carry
the cause, and never the API key or credentials written into the URL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulators.misp import Fault, MispEmulator
from falco_misp.cli import main
from falco_misp.errors import SourceError
from falco_misp.feed.parse import parse_feed
from falco_misp.sources.fetch import fetch_attributes
from falco_misp.sources.locations import FetchContext, redact
from falco_misp.values import safe_url
from helpers import misp_event

KEY_ENV = "FALCO_MISP_CAUSE_KEY"
START_UP = ("/servers/getVersion", "/servers/getPyMISPVersion")


@pytest.fixture
def misp() -> Iterator[MispEmulator]:
    with MispEmulator(api_key="cause-test-key-0123456789") as server:
        server.add_event(misp_event(1, [{"type": "ip-dst", "value": "45.0.0.1"}]))
        yield server


def source_error(url: str, key: str) -> SourceError:
    spec = {"source": {"misp": {"url": url, "timeoutSeconds": 2}}}
    feed = parse_feed({"metadata": {"name": "cause"}, "spec": spec})
    with pytest.raises(SourceError) as caught:
        list(fetch_attributes(feed, FetchContext(now=0, auth_key=key), Counter()))
    return caught.value


CASES: list[tuple[str, Fault, str, tuple[str, ...]]] = [
    # getVersion and getPyMISPVersion without "version": PyMISP wraps the KeyError in a PyMISPError
    ("no-version", Fault.json({}, paths=START_UP), "Error",
     ("PyMISPError", "Unable to connect to MISP (http://***@127.0.0.1:", "'version'")),
    # describeTypes without the keys PyMISP reads after its try block: a bare KeyError
    ("no-categories", Fault.json({"result": {}}, paths=("/attributes/describeTypes",)), "Error",
     ("KeyError", "'categories'")),
    # an error JSON (200) instead of the search result, quoting the key it was given
    ("search-error-json",
     Fault.json({"name": "Internal error", "message": "database gone (key cause-test-key-0123456789)"},
                paths=("/attributes/restSearch",)),
     "InvalidJSON", ("not a search result", "Internal error", "database gone (key ***)")),
    # a JSON search answer without the expected keys
    ("search-odd-keys", Fault.json({"result": [], "total": 0}, paths=("/attributes/restSearch",)), "InvalidJSON",
     ("keys: result, total",)),
    # a 4xx with MISP's error body: its message is shown
    ("search-4xx", Fault.json({"name": "Invalid filter: type_attribute", "message": "Invalid filter: type_attribute",
                               "url": "/attributes/restSearch"}, 400, paths=("/attributes/restSearch",)),
     "HTTP400", ("HTTP 400", "Invalid filter: type_attribute")),
    # a 500 whose body quotes the key: PyMISP puts the body in its message
    ("user-500", Fault.json({"message": "boom for cause-test-key-0123456789"}, 500, paths=("/users/view/me",)),
     "HTTP5xx", ("Error code 500", "boom for ***")),
    # the key refused at start-up: PyMISP's message holds MISP's own words
    ("user-403", Fault.status(403, paths=("/users/view/me",)), "HTTP403",
     ("rejected the API key", "Unable to get the user settings", "Authentication failed")),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "reason", "causes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_cause_is_in_the_message_and_the_key_is_not(
    misp: MispEmulator, fault: Fault, reason: str, causes: tuple[str, ...]
) -> None:
    misp.fault = fault
    url = misp.url.replace("http://", "http://reader:hunter2@")
    error = source_error(url, misp.api_key)
    assert error.reason == reason
    assert error.message.startswith(f"MISP at {misp.url.replace('http://', 'http://***@')}")
    for cause in causes:
        assert cause in error.message
    assert misp.api_key not in str(error) and "hunter2" not in str(error)


def write_feed(tmp_path: Path, spec: dict[str, Any]) -> Path:
    path = tmp_path / "feed.yaml"
    path.write_text(yaml.safe_dump({"kind": "MispFeed", "metadata": {"name": "cli"}, "spec": spec}))
    return path


@pytest.mark.parametrize(
    ("fault", "cause"),
    [(Fault.json({}, paths=START_UP), "'version'"),
     (Fault.json({"result": {}}, paths=("/attributes/describeTypes",)), "KeyError: 'categories'")],
    ids=["PyMISPError", "KeyError"],
)  # fmt: skip
def test_the_cli_prints_the_cause(
    tmp_path: Path, misp: MispEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    fault: Fault, cause: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(KEY_ENV, misp.api_key)
    misp.fault = fault
    feed = write_feed(tmp_path, {"source": {"misp": {"url": misp.url, "timeoutSeconds": 2}}})
    assert main(["render", "--feed", str(feed), "--out", str(tmp_path / "out"), "--auth-key-env", KEY_ENV]) == 1
    err = capsys.readouterr().err
    assert f"source failed (Error): MISP at {misp.url}: unexpected answer (" in err and cause in err
    assert misp.api_key not in err


def test_redact() -> None:
    text = "GET https://u:p%40ss@misp.example/x with key  s3cr3t-key\n(again s3cr3t-key) and http://token@h/"
    assert redact(text, "s3cr3t-key", None) == (
        "GET https://***@misp.example/x with key *** (again ***) and http://***@h/"
    )
    assert redact("x" * 1000).endswith("…") and len(redact("x" * 1000)) == 300
    assert redact("key=abcdef" + "y" * 400, "abcdef").startswith("key=***")  # redacted before the cut
    assert safe_url("https://user:pw@misp.example:8443/a?b=c") == "https://***@misp.example:8443/a?b=c"
    assert safe_url("https://misp.example/a@b") == "https://misp.example/a@b"  # an @ in the path is not userinfo
