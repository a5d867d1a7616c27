"""Fetches end, whatever the server does (issue 11 item 2): paging a MISP server that ignores ``page``/``limit``,
and bodies without end, through the real PyMISP and requests against the MISP emulator on loopback.

A fetch that never ends is the failure under test, so every fetch here consumes at most ``BOUND`` attributes:
code that pages forever fails the assertion instead of hanging the suite. Large bodies are finite (64 MiB), so
code that reads them whole finishes too, and the emulator reports how much it actually had to send.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulators.misp import Fault, MispEmulator, Paging
from falco_misp.cli import build_parser, main
from falco_misp.errors import SourceError
from falco_misp.feed.model import Feed
from falco_misp.feed.parse import parse_feed
from falco_misp.runner import byte_size
from falco_misp.sources.fetch import fetch_attributes
from falco_misp.sources.locations import DEFAULT_MAX_RESPONSE_BYTES, FetchContext
from helpers import misp_event

BOUND = 400  # attributes a test consumes at most: far more than any emulator below holds
LARGE = 64 * 2**20  # a body the client must not read whole
LIMIT = 2**20  # the client's cap in these tests
KEY_ENV = "FALCO_MISP_TEST_KEY"


@pytest.fixture
def misp() -> Iterator[MispEmulator]:
    with MispEmulator() as server:
        server.add_event(misp_event(1, [{"type": "ip-dst", "value": f"45.0.0.{i}"} for i in range(1, 6)]))
        yield server


def misp_feed(misp: MispEmulator, page_size: int = 2, **filters: Any) -> Feed:
    spec = {"source": {"misp": {"url": misp.url, "timeoutSeconds": 2, "pageSize": page_size}}, "filters": filters}
    return parse_feed({"metadata": {"name": "bounded"}, "spec": spec})


def fetch(feed: Feed, ctx: FetchContext) -> list[str]:
    """The values a fetch yields, BOUND at most."""
    return [a.value for a in itertools.islice(fetch_attributes(feed, ctx, Counter()), BOUND)]


def ctx_for(misp: MispEmulator, limit: int = DEFAULT_MAX_RESPONSE_BYTES, base: Path | None = None) -> FetchContext:
    return FetchContext(now=1_800_000_000, auth_key=misp.api_key, base_dir=base, max_response_bytes=limit)


def sent(misp: MispEmulator) -> int:
    """Bytes of the first large body the emulator wrote before the client hung up (waits for its handler)."""
    deadline = time.monotonic() + 5
    while not misp.large_body_sent and time.monotonic() < deadline:
        time.sleep(0.01)
    return misp.large_body_sent[0]


# ------------------------------------------------------------------------------------------------ paging
def test_honoured_paging_still_reads_every_page(misp: MispEmulator) -> None:
    assert fetch(misp_feed(misp), ctx_for(misp)) == [f"45.0.0.{i}" for i in range(1, 6)]
    assert len(misp.restsearch_requests()) == 3


@pytest.mark.parametrize(
    ("paging", "filters", "count", "problem"),
    [
        (Paging.IGNORE_PAGE, {}, True, "page 2 holds the same attributes as page 1"),
        (Paging.IGNORE, {}, True, "page 1 holds 5 attributes for a limit of 2"),
        # the warninglist mode pages on X-Result-Count, or (without it) until an empty page that never comes
        (Paging.IGNORE_PAGE, {"enforceWarninglist": True}, True, "page 2 holds the same attributes as page 1"),
        (Paging.IGNORE_PAGE, {"enforceWarninglist": True}, False, "page 2 holds the same attributes as page 1"),
        (Paging.IGNORE_PAGE, {"excludeDecayed": True}, False, "page 2 holds the same attributes as page 1"),
    ],
    ids=["page-ignored", "limit-ignored", "warninglist-counted", "warninglist-uncounted", "decay-uncounted"],
)
def test_a_server_ignoring_paging_fails_with_paging_ignored(
    misp: MispEmulator, paging: Paging, filters: dict[str, Any], count: bool, problem: str
) -> None:
    misp.paging, misp.result_count = paging, count
    with pytest.raises(SourceError) as caught:
        fetch(misp_feed(misp, **filters), ctx_for(misp))
    assert caught.value.reason == "PagingIgnored"
    assert misp.url in caught.value.message and "limit=2" in caught.value.message
    assert problem in caught.value.message
    assert len(misp.restsearch_requests()) <= 2


def test_pages_past_the_announced_count_fail(misp: MispEmulator) -> None:
    """A server that counts 5 results but answers every page with new rows (a cursor that never ends)."""
    real_search, calls = misp.search, itertools.count(1)

    def endless(params: Any) -> tuple[list[dict[str, Any]], int]:
        rows, count = real_search({**params, "page": 1})
        n = next(calls)
        return [{**row, "id": str(1000 * n + i), "uuid": f"{n}-{i}"} for i, row in enumerate(rows)], count

    misp.search = endless  # type: ignore[method-assign]
    with pytest.raises(SourceError) as caught:
        fetch(misp_feed(misp), ctx_for(misp))
    assert caught.value.reason == "PagingIgnored"
    assert "page 4 starts past the 5 results it counted, yet holds 2 attributes" in caught.value.message


def test_empty_pages_in_a_row_are_not_a_repeat(misp: MispEmulator) -> None:
    """Real MISP with the warninglist on: pages 1 and 2 are emptied by the post-filter, page 3 holds the rest."""
    misp.clear()
    values = ["8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "45.0.0.9"]
    misp.add_event(misp_event(1, [{"type": "ip-dst", "value": v} for v in values]))
    assert fetch(misp_feed(misp, enforceWarninglist=True), ctx_for(misp)) == ["45.0.0.9"]


# ---------------------------------------------------------------------------------------------- body cap
def text_feed(url: str) -> Feed:
    return parse_feed({"metadata": {"name": "big"}, "spec": {"source": {"text": {"url": url, "timeoutSeconds": 5}}}})


@pytest.mark.parametrize("declare_length", [False, True], ids=["chunked", "content-length"])
def test_a_huge_text_list_is_cut_at_the_limit(misp: MispEmulator, declare_length: bool) -> None:
    misp.fault = Fault.large_body(LARGE, declare_length=declare_length, paths=("/text/",))
    url = f"{misp.url.replace('http://', 'http://reader:hunter2@')}/text/ipsum.txt"
    with pytest.raises(SourceError) as caught:
        fetch(text_feed(url), ctx_for(misp, LIMIT))
    error = caught.value
    assert error.reason == "ResponseTooLarge"
    assert f"{misp.url.replace('http://', 'http://***@')}/text/ipsum.txt" in error.message
    assert "1048576 bytes (1 MiB)" in error.message and "--max-response-bytes" in error.message
    assert "hunter2" not in str(error)
    assert sent(misp) < LARGE // 4  # the client stopped reading early


def test_a_huge_static_feed_event_file_is_cut(misp: MispEmulator) -> None:
    misp.fault = Fault.large_body(LARGE, b'{"Event": {"Attribute": [', after_requests=1, paths=("/feed/",))
    spec = {"source": {"mispFeed": {"url": f"{misp.url}/feed/", "timeoutSeconds": 5}}}
    feed = parse_feed({"metadata": {"name": "big"}, "spec": spec})
    with pytest.raises(SourceError, match="ResponseTooLarge") as caught:
        fetch(feed, ctx_for(misp, LIMIT))
    assert f"{misp.url}/feed/00000000-0000-4000-9000-000000000001.json" in caught.value.message


@pytest.mark.parametrize(
    ("path", "where"),
    [("/attributes/restSearch", "(/attributes/restSearch)"), ("/servers/getVersion", "(/servers/getVersion")],
    ids=["search-page", "start-up"],
)
def test_a_huge_misp_answer_is_cut_inside_pymisp(misp: MispEmulator, path: str, where: str) -> None:
    misp.fault = Fault.large_body(LARGE, b'{"id": "1", "value": "45.0.0.1"}, ', paths=(path,))
    with pytest.raises(SourceError) as caught:
        fetch(misp_feed(misp), ctx_for(misp, LIMIT))
    assert caught.value.reason == "ResponseTooLarge"
    assert f"MISP at {misp.url} {where}" in caught.value.message and "1048576 bytes" in caught.value.message
    assert misp.api_key not in str(caught.value)
    assert sent(misp) < LARGE // 4


def test_a_local_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("45.0.0.1\n" * 2000)  # 18,000 bytes
    feed = text_feed("list.txt")
    ctx = FetchContext(now=0, base_dir=tmp_path, max_response_bytes=16 * 1024)
    with pytest.raises(SourceError, match="FileTooLarge") as caught:
        fetch(feed, ctx)
    assert "16384 bytes" in caught.value.message
    assert len(fetch(feed, FetchContext(now=0, base_dir=tmp_path, max_response_bytes=18_000))) == BOUND


def write_text_feed(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "feed.yaml"
    doc = {"kind": "MispFeed", "metadata": {"name": "cli"}, "spec": {"source": {"text": {"url": url}}}}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_render_keeps_its_output_when_the_list_is_too_large(
    tmp_path: Path, misp: MispEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    misp.texts["list.txt"] = "45.0.0.1\n45.0.0.2\n"
    feed, out = write_text_feed(tmp_path, f"{misp.url}/text/list.txt"), tmp_path / "out"
    assert main(["render", "--feed", str(feed), "--out", str(out), "-q", "--max-response-bytes", "1MiB"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    misp.fault = Fault.large_body(LARGE, paths=("/text/",))
    assert main(["render", "--feed", str(feed), "--out", str(out), "-q", "--max-response-bytes", "1MiB"]) == 1
    err = capsys.readouterr().err
    assert "source failed (ResponseTooLarge)" in err and f"{misp.url}/text/list.txt" in err and "1048576" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sent(misp) < LARGE // 4


@pytest.mark.parametrize("command", [["render", "--feed", "f.yaml"], ["run"]])
def test_both_commands_take_the_option_with_a_256_mib_default(command: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(command).max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES == 256 * 2**20
    assert parser.parse_args([*command, "--max-response-bytes", "8MiB"]).max_response_bytes == 8 * 2**20


@pytest.mark.parametrize(
    ("text", "size"),
    [("268435456", 256 * 2**20), ("256MiB", 256 * 2**20), ("64kib", 65_536), ("1G", 2**30), ("2048 B", 2048)],
)
def test_byte_sizes(text: str, size: int) -> None:
    assert byte_size(text) == size


@pytest.mark.parametrize("text", ["", "12", "1023", "1.5MiB", "-1", "10MB", "lots"])
def test_bad_byte_sizes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        byte_size(text)
