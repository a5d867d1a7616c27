"""The alert endpoint: Falco's ``http_output`` and Falcosidekick's webhook post alerts here (a service; issue 5).

``POST /alerts`` with ``Content-Type: application/json``: one alert, or a list of up to 100. The body is parsed by
:func:`falco_misp.reporting.alerts.parse_alerts` and handed to a callback (the
:class:`~falco_misp.reporting.sightings.Reporter`), which matches and queues without blocking; the answer is
``202`` with the alerts counted by outcome.

Served by aiohttp on the operator's event loop (started and stopped by kopf startup/cleanup handlers). Every
request is checked in this order, and a bad one is answered with a 4xx, never an exception:

1. authentication (401): a shared token compared with :func:`hmac.compare_digest`, as
   ``Authorization: Bearer <token>`` (Falcosidekick: ``webhook.customheaders``) or as the password of HTTP Basic
   authentication. Falco's ``http_output`` cannot set headers, but libcurl sends the credentials of the URL as
   Basic authentication: ``url: https://falco:<token>@falco-misp-operator.falco-misp:8443/alerts``. The token
   comes from a file (a mounted Secret: re-read when it changes) or the environment;
2. rate (429 with ``Retry-After``): a token bucket over all senders;
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
    """Sustained requests per second (all senders together)."""
    burst: int = 200
    """Requests accepted at once before the rate applies."""
    tls_cert: Path | None = None
    """PEM certificate (chain) to serve HTTPS; with ``tls_key``."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

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
        self._wall = wall
        self._bucket = TokenBucket(config.rate_per_second, config.burst, clock)
        self._tokens = TokenSource(token=config.token, path=config.token_file, clock=clock)
        self._runner: web.AppRunner | None = None
        self.port = 0
        """The bound port, once started."""

    async def start(self) -> None:
        """Bind and serve; :class:`IntakeError` when there is no usable token or the port cannot be bound."""
        if self._tokens.current() is None:
            where = f"the file {self.config.token_file}" if self.config.token_file else f"${TOKEN_ENV}"
            raise IntakeError(f"the alert endpoint needs a token of at least {MIN_TOKEN_CHARS} characters in {where}")
        context = self._tls_context()
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post(ALERTS_PATH, self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
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

    def _tls_context(self) -> ssl.SSLContext | None:
        cert, key = self.config.tls_cert, self.config.tls_key
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise IntakeError("TLS needs both a certificate and its key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(os.fspath(cert), os.fspath(key))
        except (OSError, ssl.SSLError) as exc:
            raise IntakeError(f"cannot load the TLS certificate {cert}: {exc}") from None
        return context

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
        wait = self._bucket.take()
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
