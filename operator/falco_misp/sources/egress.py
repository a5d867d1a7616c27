"""The connection guard: the operator connects only where the administrator's egress policy allows (issue 15).

:func:`guarded_session` is a ``requests`` session whose every request is checked twice: the URL's host against the
allow-list before anything is sent (:func:`~falco_misp.feed.policy.check_url`, also on each redirect), and, when a
connection is opened, every address the host resolves to (:func:`~falco_misp.feed.policy.address_refused`:
loopback, link-local and unspecified refused by default). The name is resolved **once**, the addresses are checked,
and the socket is connected to a checked address (TLS still verifies the certificate against the host name): a DNS
answer that changes between the check and the connection (rebinding) cannot steer the connection elsewhere.

Limits, by design: through an HTTP(S) proxy (``HTTPS_PROXY``) the operator connects to the proxy, so only the host
check applies to the target; PyMISP owns its session and mounts our adapter for ``https://`` only, so for a plain
``http://`` MISP URL the address is checked right before each request (:func:`check_connect`) but the connection
resolves the name again (a rebinding window; use https, or an IP address, or an allow-list).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from falco_misp.errors import SourceError
from falco_misp.feed.policy import ADDRESS_NOT_ALLOWED, HOST_NOT_ALLOWED, Policy, address_refused, check_url
from falco_misp.feed.servers import origin

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refuse_url(policy: Policy, url: str) -> None:
    """Raise ``SourceError`` (``HostNotAllowed``/``AddressNotAllowed``) when ``url`` may not be contacted."""
    why = check_url(policy, url)
    if why is not None:
        raise SourceError(HOST_NOT_ALLOWED if "allow-list" in why else ADDRESS_NOT_ALLOWED, why)


def vetted_addresses(policy: Policy, host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` resolves to, each allowed by ``policy`` (``SourceError`` when any is refused: a name
    that also points at the metadata endpoint is not trusted for its other answers)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []  # the connection attempt reports the resolution failure as it always did
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        why = address_refused(policy, address, host)
        if why is not None:
            raise SourceError(ADDRESS_NOT_ALLOWED, why)
        if address not in addresses:
            addresses.append(address)
    return addresses


def check_connect(policy: Policy, url: str) -> None:
    """Both checks for ``url`` without connecting (where the connection itself cannot be guarded)."""
    refuse_url(policy, url)
    parts = urlsplit(url)
    if parts.hostname:
        vetted_addresses(policy, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


class _Guarded:
    """Mixed into urllib3's connections: resolve once, check, connect to a checked address."""

    policy: Policy
    host: str
    port: int
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        addresses = vetted_addresses(self.policy, self._dns_host, self.port)
        if not addresses:
            return super()._new_conn()  # type: ignore[misc,no-any-return]  # resolution failed: urllib3 reports it
        name, last = self._dns_host, None
        try:
            for address in addresses:
                self._dns_host = str(address)
                try:
                    return super()._new_conn()  # type: ignore[misc,no-any-return]
                except (NewConnectionError, ConnectTimeoutError) as exc:
                    last = exc
        finally:
            self._dns_host = name
        assert last is not None
        raise last


def _classes(policy: Policy) -> dict[str, type[HTTPConnectionPool]]:
    http_conn = type("GuardedHTTPConnection", (_Guarded, HTTPConnection), {"policy": policy})
    https_conn = type("GuardedHTTPSConnection", (_Guarded, HTTPSConnection), {"policy": policy})
    return {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


class GuardedAdapter(HTTPAdapter):
    """A transport adapter that checks each request's URL and connects only to checked addresses."""

    def __init__(self, policy: Policy, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _classes(self.policy)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        refuse_url(self.policy, request.url or "")
        return super().send(request, *args, **kwargs)


class _OriginSession(requests.Session):
    """Sends the ``private`` headers to one origin only: requests drops ``Authorization`` on a redirect to another
    host, but not custom headers (``X-Api-Key``...); these are dropped on a redirect to any other origin (another
    scheme, host or port), and not sent again should a later redirect come back."""

    def __init__(self, home: str | None, private: Iterable[str]) -> None:
        super().__init__()
        self._home = home
        self._private = tuple(private)

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]
        if self._private and origin(prepared_request.url or "") != self._home:
            for name in self._private:
                prepared_request.headers.pop(name, None)


def guarded_session(policy: Policy | None, home: str = "", private: Iterable[str] = ()) -> requests.Session:
    """A session whose http and https requests (and their redirects) obey ``policy`` (None: no guard), and that
    never carries the ``private`` header names to an origin other than ``home``'s."""
    session = _OriginSession(origin(home), private)
    if policy is not None:
        adapter = GuardedAdapter(policy)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session
