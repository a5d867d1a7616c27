"""Registries that misbehave (a scripted HTTP server on 127.0.0.1): each answer becomes the right RegistryError, a
body that never ends is cut, and credentials never reach a message or another host."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from falco_misp.delivery.artifact import build_artifact
from falco_misp.delivery.registry import (
    MAX_MANIFEST_BYTES,
    RegistryAuth,
    RegistryTarget,
    parse_reference,
    push_artifact,
)
from falco_misp.errors import RegistryError
from falco_misp.rendering.shards import render_rules
from helpers import feed, indicators

# (method, path) -> (status, headers, body); the handler records every request's method, path and headers
Script = Callable[[str, str], tuple[int, dict[str, str], bytes]]
SECRET = "Sup3r-s3cret-pw"


class Fake:
    def __init__(self) -> None:
        self.script: Script = lambda method, path: (404, {}, b"")
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                fake.seen.append((self.command, self.path, dict(self.headers)))
                status, headers, body = fake.script(self.command, self.path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def fake() -> Iterator[Fake]:
    server = Fake()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=10)


def push(fake: Fake, auth: RegistryAuth | None = None) -> None:
    f = feed(name="faults")
    artifact = build_artifact(f, render_rules(f, indicators(["45.0.0.1"], f)))
    target = RegistryTarget(reference=parse_reference(f"{fake.host}/a/b"), plain_http=True, timeout_seconds=5)
    push_artifact(target, artifact, auth)


def reason_of(fake: Fake, auth: RegistryAuth | None = None) -> RegistryError:
    with pytest.raises(RegistryError) as caught:
        push(fake, auth)
    assert SECRET not in str(caught.value)
    assert base64.b64encode(f"u:{SECRET}".encode()).decode() not in str(caught.value)
    return caught.value


def test_server_errors_are_transient(fake: Fake) -> None:
    fake.script = lambda method, path: (503, {}, b'{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}')
    error = reason_of(fake)
    assert error.reason == "RegistryUnreachable" and "HTTP 503" in error.message and "try later" in error.message


def test_a_manifest_that_never_ends_is_cut(fake: Fake) -> None:
    huge = b"{" + b" " * (MAX_MANIFEST_BYTES + 10) + b"}"
    fake.script = lambda method, path: (200, {"Content-Type": "application/json"}, huge)
    error = reason_of(fake)
    assert error.reason == "BadAnswer" and "larger than" in error.message


def test_401_without_a_challenge(fake: Fake) -> None:
    fake.script = lambda method, path: (401, {}, b"")
    assert reason_of(fake, RegistryAuth("u", SECRET)).reason == "RegistryAuthFailed"


def test_refused_credentials_echoed_by_the_registry_are_redacted(fake: Fake) -> None:
    echo = f'{{"errors":[{{"code":"DENIED","message":"user u password {SECRET} is not allowed"}}]}}'.encode()

    def script(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if method == "GET":
            return 404, {}, b""
        if method == "HEAD":
            return 404, {}, b""
        return 403, {}, echo

    fake.script = script
    error = reason_of(fake, RegistryAuth("u", SECRET))
    assert error.reason == "PushRefused" and "***" in error.message


def test_no_location_on_upload(fake: Fake) -> None:
    fake.script = lambda method, path: (202, {}, b"") if method == "POST" else (404, {}, b"")
    assert reason_of(fake).reason == "BadAnswer"


def test_credentials_never_go_to_another_host(fake: Fake) -> None:
    """An upload Location on another host gets the bytes, not the Authorization header."""
    other = Fake()
    other.thread.start()
    try:
        other.script = lambda method, path: (201, {}, b"")
        basic = "Basic " + base64.b64encode(f"u:{SECRET}".encode()).decode()

        def script(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
            authorized = any(h.get("Authorization") == basic for m, p, h in fake.seen[-1:])
            if not authorized:
                return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
            if method == "POST":
                return 202, {"Location": f"http://{other.host}/upload/1?state=x"}, b""
            if method == "PUT":
                return 201, {}, b""
            return 404, {}, b""

        fake.script = script
        push(fake, RegistryAuth("u", SECRET))
        assert other.seen, "the upload went to the Location host"
        assert all("Authorization" not in headers for _, _, headers in other.seen)
        assert all("digest=sha256%3A" in path for _, path, _ in other.seen)
    finally:
        other.httpd.shutdown()
        other.httpd.server_close()
        other.thread.join(timeout=10)
