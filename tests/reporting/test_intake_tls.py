"""The alert endpoint over HTTPS on loopback (issue 15): certificates made by the ``openssl`` CLI in a tmp dir, a
client that trusts them, clients that do not, plain HTTP to the TLS port, TLS below 1.2, and a renewed certificate
picked up without a restart."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import aiohttp
import pytest
from reportkit import TOKEN, falco_alert

from falco_misp.reporting.alerts import Alert
from falco_misp.reporting.intake import TLS_RECHECK_SECONDS, AlertIntake, IntakeConfig, IntakeError

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make certificates")

BEARER = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = aiohttp.ClientTimeout(total=10)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def __call__(self, alerts: Sequence[Alert]) -> Mapping[str, int]:
        self.alerts.extend(alerts)
        return {"matched": len(alerts)}


def make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and localhost) with its key: ``<name>.crt``, ``<name>.key``."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def trusting(cafile: Path) -> ssl.SSLContext:
    """A client context that trusts ``cafile`` only, and checks the host name."""
    return ssl.create_default_context(cafile=str(cafile))


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    """The files the endpoint serves (as a mounted kubernetes.io/tls Secret: tls.crt, tls.key)."""
    cert, key = make_cert(tmp_path, "first")
    served_cert, served_key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(cert, served_cert)
    shutil.copy(key, served_key)
    return served_cert, served_key


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        yield client


async def start(certs: tuple[Path, Path], sink: Sink, clock: Clock | None = None) -> AlertIntake:
    cert, key = certs
    config = IntakeConfig(port=0, address="127.0.0.1", token=TOKEN, tls_cert=cert, tls_key=key)
    intake = AlertIntake(config, sink, **({"clock": clock} if clock else {}))
    await intake.start()
    return intake


async def peer_certificate(port: int, context: ssl.SSLContext) -> tuple[bytes, str]:
    """The certificate a new TLS connection is served (DER) and the protocol version negotiated."""
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), timeout=10)
    try:
        obj = writer.get_extra_info("ssl_object")
        return obj.getpeercert(binary_form=True), obj.version()
    finally:
        writer.close()


async def test_a_client_that_trusts_the_certificate_posts_alerts(
    certs: tuple[Path, Path], session: aiohttp.ClientSession
) -> None:
    sink = Sink()
    intake = await start(certs, sink)
    try:
        url = f"https://127.0.0.1:{intake.port}/alerts"
        async with session.post(url, json=falco_alert("45.0.0.1"), headers=BEARER, ssl=trusting(certs[0])) as resp:
            assert resp.status == 202
        # Falco's http_output: the token as the Basic password of the URL, over the verified connection
        falco_url = f"https://falco:{TOKEN}@localhost:{intake.port}/alerts"
        async with session.post(falco_url, json=falco_alert("45.0.0.2"), ssl=trusting(certs[0])) as resp:
            assert resp.status == 202
        _, version = await peer_certificate(intake.port, trusting(certs[0]))
        assert version in ("TLSv1.2", "TLSv1.3")
    finally:
        await intake.stop()
    assert [a.fields["fd.sip"] for a in sink.alerts] == ["45.0.0.1", "45.0.0.2"]


async def test_plain_http_and_untrusting_clients_get_nothing(
    certs: tuple[Path, Path], session: aiohttp.ClientSession
) -> None:
    sink = Sink()
    intake = await start(certs, sink)
    try:
        with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port: no HTTP answer, no alert taken
            async with session.post(f"http://127.0.0.1:{intake.port}/alerts", json=falco_alert(), headers=BEARER):
                pass
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # the system's CAs do not vouch for it
            async with session.post(f"https://127.0.0.1:{intake.port}/alerts", json=falco_alert(), headers=BEARER):
                pass
        assert intake.tls is not None and intake.tls.current.minimum_version is ssl.TLSVersion.TLSv1_2
        below_12 = trusting(certs[0])
        with warnings.catch_warnings():  # Python deprecates naming TLS 1.1, which is the point here
            warnings.simplefilter("ignore", DeprecationWarning)
            below_12.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            below_12.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError):  # TLS 1.0 and 1.1 are refused
            await peer_certificate(intake.port, below_12)
        # the endpoint still serves a proper client after all that
        url = f"https://127.0.0.1:{intake.port}/alerts"
        async with session.post(url, json=falco_alert("45.0.0.9"), headers=BEARER, ssl=trusting(certs[0])) as resp:
            assert resp.status == 202
    finally:
        await intake.stop()
    assert [a.fields["fd.sip"] for a in sink.alerts] == ["45.0.0.9"]


async def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path, certs: tuple[Path, Path]) -> None:
    clock = Clock()
    intake = await start(certs, Sink(), clock)
    served_cert, served_key = certs
    first = der(served_cert)
    renewed_cert, renewed_key = make_cert(tmp_path, "renewed")
    other_cert, other_key = make_cert(tmp_path, "other")
    client = ssl.create_default_context(cafile=str(tmp_path / "first.crt"))
    client.load_verify_locations(cafile=str(renewed_cert))
    try:
        assert (await peer_certificate(intake.port, client))[0] == first

        # A half-swapped Secret (new certificate, old key) does not load: the current certificate stays served.
        shutil.copy(other_cert, served_cert)
        clock.now += TLS_RECHECK_SECONDS
        assert (await peer_certificate(intake.port, client))[0] == first

        shutil.copy(renewed_cert, served_cert)
        shutil.copy(renewed_key, served_key)
        assert (await peer_certificate(intake.port, client))[0] == first  # checked at most every 30 s
        clock.now += TLS_RECHECK_SECONDS
        assert (await peer_certificate(intake.port, client))[0] == der(renewed_cert)
        assert (await peer_certificate(intake.port, client))[0] == der(renewed_cert)
        assert other_key.exists()
    finally:
        await intake.stop()


async def test_tls_misconfiguration_stops_the_start(tmp_path: Path, certs: tuple[Path, Path]) -> None:
    cert, key = certs
    with pytest.raises(IntakeError, match="both a certificate and its key"):
        await AlertIntake(IntakeConfig(port=0, token=TOKEN, tls_cert=cert), Sink()).start()
    with pytest.raises(IntakeError, match="both a certificate and its key"):
        await AlertIntake(IntakeConfig(port=0, token=TOKEN, tls_key=key), Sink()).start()
    _, other_key = make_cert(tmp_path, "other")
    for config in (
        IntakeConfig(port=0, token=TOKEN, tls_cert=cert, tls_key=other_key),  # a key of another certificate
        IntakeConfig(port=0, token=TOKEN, tls_cert=tmp_path / "missing.crt", tls_key=key),
    ):
        with pytest.raises(IntakeError, match="cannot load the TLS certificate"):
            await AlertIntake(config, Sink()).start()
