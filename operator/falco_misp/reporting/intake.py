"""The alert endpoint: Falco's ``http_output`` and Falcosidekick's webhook post alerts here (a service; issues 5, 15).

``POST /alerts`` with ``Content-Type: application/json``: one alert, or a list of up to 100. The body is parsed by
:func:`falco_misp.reporting.alerts.parse_alerts` and handed to a callback (the
:class:`~falco_misp.reporting.sightings.Reporter`), which matches and queues without blocking; the answer is
``202`` with the alerts counted by outcome. A sighting is only ever queued for an address the named feed's last
sync really listed (:mod:`.matching`): a token holder can report a listed address as seen, never add one.

Served by aiohttp on the operator's event loop (started and stopped by kopf startup/cleanup handlers), over HTTPS
when given a certificate (TLS 1.2 or later; the files are re-read when they change, so a cert-manager renewal needs
no restart). Every request is checked in this order, and a bad one is answered with a 4xx, never an exception:

1. authentication (401): a shared token compared with :func:`hmac.compare_digest`, as
   ``Authorization: Bearer <token>`` (Falcosidekick: ``webhook.customheaders``) or as the password of HTTP Basic
   authentication. Falco's ``http_output`` cannot set headers, but libcurl sends the credentials of the URL as
   Basic authentication: ``url: https://falco:${FALCO_MISP_TOKEN}@falco-misp-operator.falco-misp.svc:8443/alerts``
   (Falco expands ``${VAR}`` in falco.yaml from its environment, filled from a Secret). The token comes from a file
   (a mounted Secret: re-read when it changes) or the environment;
2. rate (429 with ``Retry-After``): a token bucket per sender (the peer address: each Falco pod, or the
   Falcosidekick pod), the most recently seen ``max_senders`` kept, so one noisy or looping sender cannot starve
   the others and memory stays bounded. Unauthenticated requests spend nothing;
3. content type (415): ``application/json`` only (Falco with ``json_output: false`` sends text);
4. size (413): the declared or actual body beyond ``max_body_bytes``; a body that does not arrive within 10 s: 408;
5. shape (400): not JSON, or JSON that is not a Falco/Falcosidekick alert.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from falco_misp.metrics import ReportingMetrics
from falco_misp.reporting import TOKEN_ENV
from falco_misp.reporting.alerts import Alert, AlertError, parse_alerts

log = logging.getLogger(__name__)

ALERTS_PATH = "/alerts"
MIN_TOKEN_CHARS = 16
BODY_TIMEOUT_SECONDS = 10.0
TOKEN_RECHECK_SECONDS = 5.0
# A renewed certificate (cert-manager renews at 2/3 of its lifetime, the kubelet then swaps the mounted files) is
# picked up by the first handshake after this many seconds: a stat of two files, a load only when they changed.
TLS_RECHECK_SECONDS = 30.0
# Senders whose rate is tracked: one per Falco pod (one a node) plus Falcosidekick. 10,000 buckets take ~2 MB; past
# that the least recently seen sender is forgotten (it starts again with a full burst).
DEFAULT_MAX_SENDERS = 10_000

#: Matches and queues alerts; returns them counted by outcome.
Receive = Callable[[Sequence[Alert]], Mapping[str, int]]


class IntakeError(Exception):
    """The endpoint cannot start (no usable token, port in use, unreadable certificate)."""


@dataclass(frozen=True)
class IntakeConfig:
    """``falco-misp run --alerts-*`` options."""

    port: int
    """TCP port (0: any free port, for tests)."""
    address: str = "0.0.0.0"  # noqa: S104 - a pod listens on all its interfaces
    """Address to bind."""
    token_file: Path | None = None
    """File holding the token (a mounted Secret); re-read when it changes."""
    token: str | None = field(default=None, repr=False)
    """The token itself, when not read from a file (``$FALCO_MISP_ALERTS_TOKEN``)."""
    max_body_bytes: int = 64 * 1024
    """Largest accepted body."""
    rate_per_second: float = 50.0
    """Sustained requests per second, per sender (peer address)."""
    burst: int = 200
    """Requests a sender may make at once before the rate applies."""
    max_senders: int = DEFAULT_MAX_SENDERS
    """Senders whose rate is tracked at most (least recently seen forgotten first)."""
    tls_cert: Path | None = None
    """PEM certificate (chain) to serve HTTPS; with ``tls_key``. Re-read when it changes."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""

    def __post_init__(self) -> None:
        if self.max_senders < 1:
            raise ValueError(f"max_senders must be at least 1, got {self.max_senders}")


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("_burst", "_clock", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def take(self) -> float:
        """0 when a request may pass (one token spent), else the seconds until one may."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate if self._rate > 0 else 60.0


class SenderLimits:
    """A :class:`TokenBucket` per sender, the ``max_senders`` most recently seen kept (an LRU: bounded memory)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        max_senders: int = DEFAULT_MAX_SENDERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._max = max_senders
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.forgotten = 0
        """Senders dropped to make room, since start."""

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, sender: str) -> float:
        """0 when ``sender`` may pass (one of its tokens spent), else the seconds until it may."""
        bucket = self._buckets.get(sender)
        if bucket is None:
            bucket = self._buckets[sender] = TokenBucket(self._rate, self._burst, self._clock)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
                self.forgotten += 1
        else:
            self._buckets.move_to_end(sender)
        return bucket.take()


class TokenSource:
    """The expected token: fixed, or read from a file and re-read when it changes (Secret rotation)."""

    def __init__(
        self, *, token: str | None = None, path: Path | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        fixed = (token or "").strip()
        self._fixed = fixed.encode() if len(fixed) >= MIN_TOKEN_CHARS else None
        self._path = path
        self._clock = clock
        self._checked = -TOKEN_RECHECK_SECONDS
        self._stamp: tuple[int, int] | None = None
        self._value: bytes | None = None

    def current(self) -> bytes | None:
        """The token, or None when there is no usable one (requests are then refused)."""
        if self._path is None:
            return self._fixed
        now = self._clock()
        if now - self._checked >= TOKEN_RECHECK_SECONDS:
            self._checked = now
            self._reload(self._path)
        return self._value

    def _reload(self, path: Path) -> None:
        try:
            info = path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
            if stamp == self._stamp:
                return
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            if self._value is not None:
                log.warning("alert token file %s unreadable (%s): refusing alerts", path, type(exc).__name__)
            self._stamp, self._value = None, None
            return
        self._stamp = stamp
        self._value = text.encode() if len(text) >= MIN_TOKEN_CHARS else None
        if self._value is None:
            log.warning("alert token file %s holds no token of %d+ characters: refusing alerts", path, MIN_TOKEN_CHARS)


def build_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for ``cert`` and ``key`` (TLS 1.2 or later); :class:`IntakeError` when they do not load."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(os.fspath(cert), os.fspath(key))
    except (OSError, ssl.SSLError) as exc:
        raise IntakeError(f"cannot load the TLS certificate {cert} with the key {key}: {exc}") from None
    return context


class TlsSource:
    """The server's certificate, re-read when its files change (a renewed Secret), without dropping connections.

    The listening socket keeps the first context; its ``sni_callback`` (which OpenSSL calls on every ClientHello,
    with or without a server name) hands each new handshake the current one. A renewal that does not load (the
    kubelet caught between the two files, a key that does not match) keeps the previous certificate and is retried.
    """

    def __init__(self, cert: Path, key: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._cert, self._key, self._clock = cert, key, clock
        self._stamp = self._stamps()
        self.current = build_tls_context(cert, key)
        """The context new handshakes get."""
        self._checked = clock()
        self.listening = self.current
        """The context the socket is created with."""
        self.listening.sni_callback = self._on_hello

    def _stamps(self) -> tuple[tuple[int, int], ...] | None:
        try:
            return tuple((s.st_mtime_ns, s.st_size) for s in (self._cert.stat(), self._key.stat()))
        except OSError:
            return None

    def reload(self) -> bool:
        """Load the files again if they changed since the last load; whether a new certificate is now served."""
        stamp = self._stamps()
        if stamp is None or stamp == self._stamp:
            return False
        try:
            context = build_tls_context(self._cert, self._key)
        except IntakeError as exc:
            log.warning("alert endpoint: keeping the current certificate: %s", exc)
            return False
        self._stamp, self.current = stamp, context
        log.info("alert endpoint: serving the renewed certificate %s", self._cert)
        return True

    def _on_hello(self, connection: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None, _ctx: Any) -> None:
        now = self._clock()
        if now - self._checked >= TLS_RECHECK_SECONDS:
            self._checked = now
            self.reload()
        if self.current is not self.listening:
            connection.context = self.current


def authorized(header: str | None, token: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (Bearer, or the password of Basic)."""
    if not header:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        given = credentials.encode()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return False
        given = decoded.partition(b":")[2]
    else:
        return False
    return hmac.compare_digest(given, token)


class AlertIntake:
    """The aiohttp server of the alert endpoint."""

    def __init__(
        self,
        config: IntakeConfig,
        receive: Receive,
        *,
        metrics: ReportingMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._receive = receive
        self._metrics = metrics
        self._clock = clock
        self._wall = wall
        self.limits = SenderLimits(config.rate_per_second, config.burst, config.max_senders, clock)
        """The per-sender rate limits."""
        self._tokens = TokenSource(token=config.token, path=config.token_file, clock=clock)
        self.tls: TlsSource | None = None
        """The certificate being served, once started with one."""
        self._runner: web.AppRunner | None = None
        self.port = 0
        """The bound port, once started."""

    async def start(self) -> None:
        """Bind and serve; :class:`IntakeError` when there is no usable token or the port cannot be bound."""
        if self._tokens.current() is None:
            where = f"the file {self.config.token_file}" if self.config.token_file else f"${TOKEN_ENV}"
            raise IntakeError(f"the alert endpoint needs a token of at least {MIN_TOKEN_CHARS} characters in {where}")
        self.tls = self._tls_source()
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post(ALERTS_PATH, self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        context = self.tls.listening if self.tls is not None else None
        site = web.TCPSite(runner, self.config.address, self.config.port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise IntakeError(f"cannot listen on {self.config.address}:{self.config.port}: {exc.strerror}") from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        scheme = "https" if context is not None else "http"
        log.info("alert endpoint: %s://%s:%d%s", scheme, self.config.address, self.port, ALERTS_PATH)

    def _tls_source(self) -> TlsSource | None:
        cert, key = self.config.tls_cert, self.config.tls_key
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise IntakeError("TLS needs both a certificate and its key")
        return TlsSource(cert, key, clock=self._clock)

    async def stop(self) -> None:
        """Stop serving (open requests get a short grace period)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            status, payload, headers = await self._process(request)
        except Exception:  # a bug: answer, log, keep serving
            log.exception("alert endpoint: unexpected error")
            status, payload, headers = 500, {"error": "internal error"}, {}
        if self._metrics is not None:
            self._metrics.requests.labels(str(status)).inc()
        if status >= 400:
            log.debug("alert endpoint: %d for %s (%s)", status, request.remote, payload.get("error"))
        return web.json_response(payload, status=status, headers=headers)

    async def _process(self, request: web.Request) -> tuple[int, dict[str, Any], dict[str, str]]:
        token = self._tokens.current()
        if token is None:
            return 503, {"error": "no token configured"}, {}
        if not authorized(request.headers.get("Authorization"), token):
            return 401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Bearer realm="falco-misp"'}
        # The peer address of the TCP connection: never a header (X-Forwarded-For), which a sender could choose.
        wait = self.limits.take(request.remote or "")
        if wait:
            return 429, {"error": "too many requests"}, {"Retry-After": str(max(1, round(wait)))}
        if request.content_type != "application/json":
            return 415, {"error": "expected Content-Type application/json (Falco: json_output: true)"}, {}
        if request.content_length is not None and request.content_length > self.config.max_body_bytes:
            return 413, {"error": f"body larger than {self.config.max_body_bytes} bytes"}, {}
        try:
            body = await asyncio.wait_for(request.read(), timeout=BODY_TIMEOUT_SECONDS)
        except web.HTTPRequestEntityTooLarge:
            return 413, {"error": f"body larger than {self.config.max_body_bytes} bytes"}, {}
        except TimeoutError:
            return 408, {"error": "body too slow"}, {}
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return 400, {"error": "body is not JSON"}, {}
        try:
            alerts = parse_alerts(document, self._wall())
        except (AlertError, RecursionError) as exc:
            return 400, {"error": str(exc)[:300]}, {}
        outcomes = self._receive(alerts)
        return 202, {"received": len(alerts), "outcomes": dict(outcomes)}, {}
