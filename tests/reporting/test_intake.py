"""The alert endpoint over real HTTP on loopback: authentication, limits per sender, shapes; it keeps serving after
each 4xx. HTTPS: test_intake_tls.py."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
from prometheus_client import CollectorRegistry
from reportkit import OUTBOUND, TOKEN, attribute, falco_alert, make_feed, reporting_feed, sidekick_alert, wait_for

from emulators.misp import MispEmulator
from falco_misp import runner
from falco_misp.cli import build_parser
from falco_misp.metrics import ReportingMetrics
from falco_misp.reporting.alerts import Alert
from falco_misp.reporting.intake import (
    AlertIntake,
    IntakeConfig,
    IntakeError,
    SenderLimits,
    TokenBucket,
    TokenSource,
    authorized,
)
from falco_misp.reporting.sightings import Reporter, ReporterConfig
from helpers import misp_event

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


async def test_rate_limits_are_per_sender() -> None:
    """A looping Falco on one node spends its own budget; the others still get through (issue 15)."""
    clock = Clock()
    sink = Sink()
    config = IntakeConfig(port=0, address="127.0.0.1", token=TOKEN, rate_per_second=0.5, burst=2)
    intake = await started(config, sink, clock=clock)
    # Two peers on loopback: every 127.0.0.0/8 address is this host, the source address tells them apart.
    noisy = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
    quiet = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0)))
    try:

        async def post(client: aiohttp.ClientSession, remote: str) -> int:
            async with client.post(url(intake), json=falco_alert(remote), headers=BEARER) as resp:
                return resp.status

        assert [await post(noisy, "45.0.0.1") for _ in range(4)] == [202, 202, 429, 429]
        assert [await post(quiet, "45.0.0.2") for _ in range(2)] == [202, 202]
        assert await post(noisy, "45.0.0.1") == 429  # the quiet sender's budget did not refill the noisy one
        assert len(intake.limits) == 2
        clock.now += 2.0
        assert await post(noisy, "45.0.0.1") == 202
    finally:
        await noisy.close()
        await quiet.close()
        await intake.stop()
    assert sorted(a.fields["fd.sip"] for a in sink.alerts) == ["45.0.0.1"] * 3 + ["45.0.0.2"] * 2


def test_sender_limits_keep_the_most_recent_senders_only() -> None:
    clock = Clock()
    limits = SenderLimits(rate=1.0, burst=1, max_senders=2, clock=clock)
    assert [limits.take("10.0.0.1"), limits.take("10.0.0.2")] == [0.0, 0.0]
    assert limits.take("10.0.0.1") > 0  # limited, and now the most recently seen
    assert limits.take("10.0.0.3") == 0.0  # a third sender: 10.0.0.2, the least recently seen, is forgotten
    assert (len(limits), limits.forgotten) == (2, 1)
    assert limits.take("10.0.0.1") > 0  # still limited: the noisy sender was kept
    assert limits.take("10.0.0.2") == 0.0  # forgotten, it starts again with a full burst
    assert (len(limits), limits.forgotten) == (2, 2)
    for n in range(1000):
        limits.take(f"10.1.{n // 256}.{n % 256}")
    assert len(limits) == 2  # memory stays bounded, whatever the number of senders
    with pytest.raises(ValueError, match="max_senders"):
        IntakeConfig(port=0, max_senders=0)


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


async def test_a_token_holder_can_only_report_what_the_named_feed_lists(session: aiohttp.ClientSession) -> None:
    """The token lets a sender say "this feed's rule fired for this address", never add intel: a sighting goes
    only to an attribute of the feed the alert names (its rule and tag), for an address that feed's last sync
    listed. Through the endpoint, the real reporter and PyMISP, to the MISP emulator (issue 15)."""

    def uuid_of(event: int) -> str:  # helpers.misp_event's uuid of an event's first attribute
        return f"00000000-0000-4000-8000-{event * 1000:012d}"

    with MispEmulator() as misp:
        misp.add_event(misp_event(42, [{"type": "ip-dst", "value": "45.0.0.7"}]))
        misp.add_event(misp_event(43, [{"type": "ip-dst", "value": "45.0.0.8"}]))
        team_a = reporting_feed(make_feed(namespace="team-a"), [attribute("45.0.0.7", uuid=uuid_of(42))],
                                url=misp.url, key=misp.api_key, uid="a")  # fmt: skip
        team_b = reporting_feed(make_feed(namespace="team-b"), [attribute("45.0.0.8", uuid=uuid_of(43))],
                                url=misp.url, key=misp.api_key, uid="b")  # fmt: skip
        reporter = Reporter(ReporterConfig(cluster="prod"), post_notice=lambda *args: None)
        reporter.update_feed("team-a", "intel", team_a)
        reporter.update_feed("team-b", "intel", team_b)
        await reporter.start()
        intake = await started(IntakeConfig(port=0, address="127.0.0.1", token=TOKEN), reporter.receive)  # type: ignore[arg-type]
        a_rule, a_tags = f"misp_team__a_intel_0 {OUTBOUND}", ["misp", "misp_feed:team-a/intel"]
        b_rule, b_tags = f"misp_team__b_intel_0 {OUTBOUND}", ["misp", "misp_feed:team-b/intel"]
        forged = [
            (falco_alert("45.0.0.7", rule=b_rule, tags=b_tags), "unlisted"),  # listed by team-a, not by team-b
            (falco_alert("45.0.0.7", rule=b_rule, tags=[]), "unlisted"),
            (falco_alert("45.0.0.8", rule=a_rule, tags=a_tags), "unlisted"),
            (falco_alert("45.0.0.7", rule=a_rule, tags=b_tags), "unknown_feed"),  # rule and tag disagree
            (falco_alert("45.0.0.99", rule=a_rule, tags=a_tags), "unlisted"),  # listed by no feed
            (falco_alert("45.0.0.7", rule="misp_team__c_intel_0 " + OUTBOUND), "unknown_feed"),
        ]
        try:
            for body, outcome in forged:
                async with session.post(url(intake), json=body, headers=BEARER) as resp:
                    assert resp.status == 202
                    assert (await resp.json())["outcomes"] == {outcome: 1}, body
            assert reporter.pending == 0 and misp._sighting_records == []
            for body in (
                falco_alert("45.0.0.7", rule=a_rule, tags=a_tags),
                falco_alert("45.0.0.8", rule=b_rule, tags=b_tags),
            ):
                async with session.post(url(intake), json=body, headers=BEARER) as resp:
                    assert (await resp.json())["outcomes"] == {"matched": 1}
            await wait_for(lambda: len(misp._sighting_records) == 2, what="two sightings")
            await wait_for(lambda: reporter.pending == 0, what="queue drained")
        finally:
            await intake.stop()
            await reporter.stop()
        assert sorted(s["attribute_uuid"] for s in misp._sighting_records) == [uuid_of(42), uuid_of(43)]


def test_falco_misp_run_passes_the_limits_and_tls_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    base = ["run", "--alerts-port", "8443", "--alerts-token-file", str(token)]
    args = build_parser().parse_args(
        [*base, "--alerts-rate", "5", "--alerts-burst", "7", "--alerts-max-senders", "3",
         "--alerts-tls-cert", "/tls/tls.crt", "--alerts-tls-key", "/tls/tls.key"]
    )  # fmt: skip
    memo = kopf.Memo()
    assert runner._setup_alerts(args, kopf.OperatorRegistry(), memo) is None
    config = memo["intake"].config
    assert (config.rate_per_second, config.burst, config.max_senders) == (5.0, 7, 3)
    assert (config.tls_cert, config.tls_key) == (Path("/tls/tls.crt"), Path("/tls/tls.key"))
    assert build_parser().parse_args(base).alerts_max_senders == 10_000
    args = build_parser().parse_args([*base, "--alerts-max-senders", "0"])
    assert "--alerts-max-senders" in (runner._setup_alerts(args, kopf.OperatorRegistry(), kopf.Memo()) or "")
