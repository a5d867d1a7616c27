"""The connection guard, against real sockets on 127.0.0.x: a refused URL is never connected to (issue 15).

Each server counts the connections it accepted, so "refused with no connection made" is observed, not assumed.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from falco_misp.errors import SourceError
from falco_misp.feed.model import Location, MispServer
from falco_misp.feed.policy import Egress, Policy
from falco_misp.sources.egress import guarded_session
from falco_misp.sources.locations import FetchContext, read_location
from falco_misp.sources.misp import MispApi

LOOPBACK_OK = Policy(egress=Egress(allow_loopback=True))


class _Counting(http.server.ThreadingHTTPServer):
    accepted = 0
    redirect_to: str | None = None

    def get_request(self) -> tuple[socket.socket, object]:
        got = super().get_request()
        self.accepted += 1
        return got


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Counting

    def do_GET(self) -> None:
        if self.server.redirect_to:
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


@pytest.fixture
def server() -> Iterator[_Counting]:
    srv = _Counting(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _url(srv: _Counting, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{srv.server_address[1]}/list.txt"


def _read(url: str, policy: Policy | None) -> bytes:
    return read_location(Location(url=url, timeout_seconds=5), FetchContext(now=0, policy=policy))


def test_a_host_outside_the_allow_list_is_never_connected_to(server: _Counting) -> None:
    policy = Policy(egress=Egress(allowed_hosts=("misp.example.org",), allow_loopback=True))
    with pytest.raises(SourceError) as err:
        _read(_url(server), policy)
    assert err.value.reason == "HostNotAllowed" and "misp.example.org" in err.value.message
    assert server.accepted == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_is_refused_by_default_also_behind_a_name(server: _Counting, host: str) -> None:
    with pytest.raises(SourceError) as err:
        _read(_url(server, host), Policy())
    assert err.value.reason == "AddressNotAllowed" and "loopback" in err.value.message
    assert server.accepted == 0


def test_an_allowed_address_is_fetched_and_no_policy_means_no_guard(server: _Counting) -> None:
    assert _read(_url(server, "localhost"), LOOPBACK_OK) == b"198.51.100.1\n"
    assert _read(_url(server), None) == b"198.51.100.1\n"  # falco-misp render: unrestricted
    assert server.accepted == 2


def test_a_redirect_to_the_metadata_endpoint_is_refused_before_connecting(server: _Counting) -> None:
    server.redirect_to = "http://169.254.169.254/latest/meta-data/iam/"
    with pytest.raises(SourceError) as err:
        _read(_url(server), LOOPBACK_OK)
    assert err.value.reason == "AddressNotAllowed" and "169.254.169.254" in err.value.message
    assert server.accepted == 1  # the first hop only


def test_the_name_is_resolved_once_and_the_checked_address_is_the_one_connected(
    server: _Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the first answer passes the check, a later one points at a refused address; the connection
    must go to the first (no second lookup decides where the socket connects)."""
    port = server.server_address[1]
    answers = iter(["127.0.0.1", "169.254.169.254", "169.254.169.254"])
    real = socket.getaddrinfo
    seen: list[str] = []

    def rebinding(host: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if host == "rebind.test":
            address = next(answers)
            seen.append(address)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with guarded_session(LOOPBACK_OK) as session:
        answer = session.get(f"http://rebind.test:{port}/list.txt", timeout=5)
    assert answer.status_code == 200 and server.accepted == 1
    assert seen == ["127.0.0.1"]


def test_misp_on_a_refused_address_is_never_contacted(server: _Counting) -> None:
    misp = MispServer(url=f"http://localhost:{server.server_address[1]}", timeout_seconds=5)
    with pytest.raises(SourceError) as err:
        MispApi(misp, "k" * 40, policy=Policy())
    assert err.value.reason == "AddressNotAllowed"
    with pytest.raises(SourceError) as err:
        MispApi(misp, "k" * 40, policy=Policy(egress=Egress(allowed_hosts=("misp.example.org",))))
    assert err.value.reason == "HostNotAllowed"
    assert server.accepted == 0
