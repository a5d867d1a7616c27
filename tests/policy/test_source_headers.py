"""Credentials of a static feed, export or list as HTTP headers: sent to the source URL's own origin only (issue 15).

Two real servers on 127.0.0.1 and 127.0.0.2 (two origins) record the headers of every request: a redirect from the
source's origin to another carries neither ``Authorization`` (requests drops it) nor a custom header (we do).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from falco_misp.feed.model import Location
from falco_misp.feed.policy import Egress, Policy
from falco_misp.sources.locations import FetchContext, read_location

SECRET = {"Authorization": "Bearer s3cr3t", "X-Api-Key": "k3y"}


class _Recording(http.server.ThreadingHTTPServer):
    redirect_to: str | None = None

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _Handler)
        self.seen: list[dict[str, str]] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Recording

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers))
        if self.server.redirect_to and self.path == "/start":
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"198.51.100.1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(host: str) -> Iterator[_Recording]:
    srv = _Recording(host)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def home() -> Iterator[_Recording]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def other() -> Iterator[_Recording]:
    yield from _serve("127.0.0.2")


def _url(srv: _Recording, path: str) -> str:
    host, port = srv.server_address[:2]
    return f"http://{host!s}:{port}{path}"


LOOPBACK_OK = Policy(egress=Egress(allow_loopback=True))


def _read(url: str, policy: Policy | None = LOOPBACK_OK) -> bytes:
    ctx = FetchContext(now=0, policy=policy, headers=SECRET)
    return read_location(Location(url=url, timeout_seconds=5), ctx)


def _carried(seen: dict[str, str]) -> set[str]:
    return {name for name in SECRET if name in seen}


def test_the_headers_go_to_the_source_origin(home: _Recording) -> None:
    assert _read(_url(home, "/list.txt")) == b"198.51.100.1\n"
    (seen,) = home.seen
    assert seen["Authorization"] == "Bearer s3cr3t" and seen["X-Api-Key"] == "k3y"


@pytest.mark.parametrize("policy", [LOOPBACK_OK, None])
def test_a_redirect_to_another_origin_carries_no_header(
    home: _Recording, other: _Recording, policy: Policy | None
) -> None:
    home.redirect_to = _url(other, "/elsewhere.txt")
    assert _read(_url(home, "/start"), policy) == b"198.51.100.1\n"
    assert _carried(home.seen[0]) == set(SECRET)
    (seen,) = other.seen
    assert _carried(seen) == set()


def test_a_redirect_within_the_origin_keeps_them(home: _Recording) -> None:
    home.redirect_to = _url(home, "/moved.txt")
    assert _read(_url(home, "/start")) == b"198.51.100.1\n"
    assert [_carried(seen) for seen in home.seen] == [set(SECRET), set(SECRET)]
