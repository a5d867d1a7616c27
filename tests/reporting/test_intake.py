"""The alert endpoint over real HTTP on loopback: authentication, limits, shapes; it keeps serving after each 4xx."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from reportkit import TOKEN, falco_alert, sidekick_alert

from falco_misp.metrics import ReportingMetrics
from falco_misp.reporting.alerts import Alert
from falco_misp.reporting.intake import AlertIntake, IntakeConfig, IntakeError, TokenBucket, TokenSource, authorized

BEARER = {"Authorization": f"Bearer {TOKEN}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    """Stands in for the reporter: records alerts, answers with outcomes."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def __call__(self, alerts: Sequence[Alert]) -> Mapping[str, int]:
        self.alerts.extend(alerts)
        return {"matched": len(alerts)}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def started(config: IntakeConfig, sink: Sink, **kw: Any) -> AlertIntake:
    intake = AlertIntake(config, sink, **kw)
    await intake.start()
    return intake


def url(intake: AlertIntake, path: str = "/alerts", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{intake.port}{path}"


async def test_rejections_are_4xx_and_the_endpoint_keeps_serving(session: aiohttp.ClientSession) -> None:
    sink = Sink()
    metrics = ReportingMetrics(CollectorRegistry())
    intake = await started(IntakeConfig(port=0, address="127.0.0.1", token=TOKEN, max_body_bytes=4096), sink,
                           metrics=metrics)  # fmt: skip
    body = json.dumps(falco_alert()).encode()
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[str, dict[str, str], bytes, int]] = [
        ("no token", json_type, body, 401),
        ("wrong token", {**json_type, "Authorization": "Bearer wrong-token-0123456789"}, body, 401),
        ("token prefix", {**json_type, "Authorization": f"Bearer {TOKEN[:-1]}"}, body, 401),
        ("wrong scheme", {**json_type, "Authorization": f"Token {TOKEN}"}, body, 401),
        ("bad basic", {**json_type, "Authorization": "Basic !!!"}, body, 401),
        ("text", {**BEARER, "Content-Type": "text/plain"}, body, 415),
        ("form", {**BEARER, "Content-Type": "application/x-www-form-urlencoded"}, b"rule=x", 415),
        ("huge", {**BEARER, **json_type}, b"[" + b" " * 10_000 + b"]", 413),
        ("not JSON", {**BEARER, **json_type}, b"{not json", 400),
        ("not UTF-8", {**BEARER, **json_type}, b"\xff\xfe{}", 400),
        ("not an alert", {**BEARER, **json_type}, b'{"hello": "world"}', 400),
        ("wrong list", {**BEARER, **json_type}, b"[1, 2]", 400),
        ("deep", {**BEARER, **json_type}, b"[" * 1500 + b"]" * 1500, 400),
    ]
    try:
        for name, headers, data, status in cases:
            async with session.post(url(intake), data=data, headers=headers) as resp:
                assert resp.status == status, name
                assert "error" in await resp.json(), name
                if status == 401:
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with session.get(url(intake), headers=BEARER) as resp:
            assert resp.status == 405
        async with session.post(url(intake, "/other"), json=falco_alert(), headers=BEARER) as resp:
            assert resp.status == 404

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
            for _ in range(10):
                yield b" " * 1000

        async with session.post(url(intake), data=chunks(), headers={**BEARER, **json_type}) as resp:
            assert resp.status == 413
        assert sink.alerts == []
        async with session.post(url(intake), json=falco_alert("45.0.0.9"), headers=BEARER) as resp:
            assert resp.status == 202
            assert await resp.json() == {"received": 1, "outcomes": {"matched": 1}}
        assert [a.fields["fd.sip"] for a in sink.alerts] == ["45.0.0.9"]
    finally:
        await intake.stop()
    counted = {s.labels["status"]: s.value for s in metrics.requests.collect()[0].samples if s.name.endswith("_total")}
    assert counted == {"401": 5, "415": 2, "413": 2, "400": 5, "202": 1}


async def test_falco_basic_auth_from_the_url_and_falcosidekick_bearer(session: aiohttp.ClientSession) -> None:
    sink = Sink()
    intake = await started(IntakeConfig(port=0, address="127.0.0.1", token=TOKEN), sink)
    try:
        # Falco's http_output: url https://falco:<token>@host:port/alerts, libcurl sends it as Basic auth
        falco_url = f"http://falco:{TOKEN}@127.0.0.1:{intake.port}/alerts"
        async with session.post(falco_url, json=falco_alert("45.0.0.1")) as resp:
            assert resp.status == 202
        async with session.post(url(intake), json=sidekick_alert("45.0.0.2"), headers=BEARER) as resp:
            assert resp.status == 202
        async with session.post(url(intake), json=[falco_alert("45.0.0.3"), falco_alert("45.0.0.4")],
                                headers=BEARER) as resp:  # fmt: skip
            assert (await resp.json())["received"] == 2
    finally:
        await intake.stop()
    assert [(a.sender.value, a.fields["fd.sip"]) for a in sink.alerts] == [
        ("falco", "45.0.0.1"), ("falcosidekick", "45.0.0.2"), ("falco", "45.0.0.3"), ("falco", "45.0.0.4"),
    ]  # fmt: skip


async def test_rate_limit(session: aiohttp.ClientSession) -> None:
    clock = Clock()
    config = IntakeConfig(port=0, address="127.0.0.1", token=TOKEN, rate_per_second=0.5, burst=3)
    intake = await started(config, Sink(), clock=clock)
    try:
        statuses = []
        for _ in range(5):
            async with session.post(url(intake), json=falco_alert(), headers=BEARER) as resp:
                statuses.append(resp.status)
                retry_after = resp.headers.get("Retry-After")
        assert statuses == [202, 202, 202, 429, 429]
        assert retry_after == "2"
        async with session.post(url(intake), json=falco_alert()) as resp:
            assert resp.status == 401  # unauthenticated requests do not spend the senders' budget
        clock.now += 2.0
        async with session.post(url(intake), json=falco_alert(), headers=BEARER) as resp:
            assert resp.status == 202
    finally:
        await intake.stop()


def test_token_bucket() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]
    clock.now += 0.1
    assert bucket.take() == 0.0
    clock.now += 100
    assert [bucket.take() for _ in range(3)][:2] == [0.0, 0.0]  # never more than the burst saved up


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer   {TOKEN}  ", True),
        ("Basic " + base64.b64encode(f"falco:{TOKEN}".encode()).decode(), True),
        ("Basic " + base64.b64encode(f":{TOKEN}".encode()).decode(), True),
        ("Basic " + base64.b64encode(TOKEN.encode()).decode(), False),  # no password
        ("Basic " + base64.b64encode(f"{TOKEN}:x".encode()).decode(), False),  # the token as user name
        (f"Bearer {TOKEN}x", False),
        ("Bearer ", False),
        (TOKEN, False),
        ("", False),
        (None, False),
    ],
)
def test_authorization_header(header: str | None, ok: bool) -> None:
    assert authorized(header, TOKEN.encode()) is ok


async def test_token_file_is_reread_when_the_secret_rotates(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    clock = Clock()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    intake = await started(IntakeConfig(port=0, address="127.0.0.1", token_file=token_file), Sink(), clock=clock)
    new = "rotated-token-abcdefghijklmnop"
    try:
        async with session.post(url(intake), json=falco_alert(), headers=BEARER) as resp:
            assert resp.status == 202
        token_file.write_text(new)
        clock.now += 6  # re-read at most every 5 s
        async with session.post(url(intake), json=falco_alert(), headers=BEARER) as resp:
            assert resp.status == 401
        async with session.post(url(intake), json=falco_alert(), headers={"Authorization": f"Bearer {new}"}) as resp:
            assert resp.status == 202
        token_file.unlink()
        clock.now += 6
        async with session.post(url(intake), json=falco_alert(), headers={"Authorization": f"Bearer {new}"}) as resp:
            assert resp.status == 503  # no token: refuse everything, say why
    finally:
        await intake.stop()


async def test_start_needs_a_usable_token(tmp_path: Path) -> None:
    for config in (
        IntakeConfig(port=0, address="127.0.0.1"),
        IntakeConfig(port=0, address="127.0.0.1", token="short"),
        IntakeConfig(port=0, address="127.0.0.1", token_file=tmp_path / "missing"),
    ):
        with pytest.raises(IntakeError, match="needs a token"):
            await AlertIntake(config, Sink()).start()
    assert TokenSource(token=f"  {TOKEN}\n").current() == TOKEN.encode()


async def test_port_in_use_is_an_intake_error() -> None:
    first = await started(IntakeConfig(port=0, address="127.0.0.1", token=TOKEN), Sink())
    try:
        with pytest.raises(IntakeError, match="cannot listen"):
            await started(IntakeConfig(port=first.port, address="127.0.0.1", token=TOKEN), Sink())
    finally:
        await first.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
async def test_https(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    config = IntakeConfig(port=0, address="127.0.0.1", token=TOKEN, tls_cert=cert, tls_key=key)
    intake = await started(config, Sink())
    try:
        async with session.post(url(intake, scheme="https"), json=falco_alert(), headers=BEARER, ssl=False) as resp:
            assert resp.status == 202
    finally:
        await intake.stop()
    with pytest.raises(IntakeError, match="both a certificate and its key"):
        await AlertIntake(IntakeConfig(port=0, token=TOKEN, tls_cert=cert), Sink()).start()
