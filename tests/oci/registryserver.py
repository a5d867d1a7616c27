"""A real OCI registry on 127.0.0.1 for the push tests: Debian's ``docker-registry`` (distribution 2.8).

Each :class:`RegistryServer` runs ``docker-registry serve CONFIG`` with a temporary config: storage in a folder the
test chooses (two servers may share it: a writable one, then a read-only one on the same content), an access log
in a file (to count the writes a push made), and optionally htpasswd users, TLS with a self-signed certificate, or
distribution's token auth against :class:`TokenServer` (a small Bearer-token issuer signing with ``openssl``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml

REGISTRY_BIN = "/usr/bin/docker-registry"
USER, PASSWORD = "falco-pusher", "s3cret-Pa55word"  # the htpasswd and token servers' user
START_SECONDS = 15.0
_ACCESS = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[0-9.]+" ([0-9]{3})')


def require_registry() -> str:
    """The docker-registry binary, or a clear failure (scripts/test.sh installs it)."""
    found = REGISTRY_BIN if Path(REGISTRY_BIN).is_file() else shutil.which("docker-registry")
    if not found:
        pytest.fail(
            "docker-registry is not installed: the OCI tests need Debian's docker-registry package "
            "(scripts/test.sh installs it: apt-get install docker-registry apache2-utils)"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Cert:
    """A self-signed certificate for 127.0.0.1 (also the token signer's)."""

    cert: Path
    key: Path


def make_cert(folder: Path, name: str = "registry") -> Cert:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return Cert(cert=cert, key=key)


def htpasswd_file(folder: Path, users: dict[str, str]) -> Path:
    lines = []
    for user, password in users.items():
        out = subprocess.run(
            ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True, timeout=60
        ).stdout
        lines.append(out.strip())
    path = folder / "htpasswd"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class RegistryServer:
    """One running docker-registry."""

    process: subprocess.Popen[bytes]
    host: str
    """``127.0.0.1:<port>``: the registry part of a reference."""
    log: Path
    scheme: str
    ca_bundle: str | None = None
    _offset: int = field(default=0)

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        """A plain request of the test's own (not the pusher's client)."""
        return requests.get(self.url(path), timeout=10, verify=self.ca_bundle or True, **kw)

    def mark(self) -> None:
        """Start a new window of :meth:`requests_since_mark`."""
        self._sync()
        self._offset = self.log.stat().st_size

    def requests_since_mark(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request logged since :meth:`mark`, the sync probe excluded."""
        marker = self._sync()
        with self.log.open("rb") as fh:
            fh.seek(self._offset)
            text = fh.read().decode("utf-8", "replace")
        found = [(m.group(1), m.group(2), int(m.group(3))) for m in _ACCESS.finditer(text)]
        return [r for r in found if "falco-misp-sync" not in r[1] and marker not in r[1]]

    def writes_since_mark(self) -> list[tuple[str, str, int]]:
        return [r for r in self.requests_since_mark() if r[0] in ("POST", "PUT", "PATCH", "DELETE")]

    def _sync(self) -> str:
        """Make a request and wait for its access-log line: every earlier request is logged by then."""
        marker = f"falco-misp-sync-{uuid.uuid4().hex}"
        with contextlib.suppress(requests.RequestException):
            requests.get(self.url(f"/v2/{marker}/tags/list"), timeout=10, verify=self.ca_bundle or True)
        deadline = time.monotonic() + 10
        while marker not in self.log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                pytest.fail(f"the registry never logged {marker}: {self.log}")
            time.sleep(0.05)
        return marker

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class StartRegistry(Protocol):
    """The ``start`` fixture: a registry with the options of :func:`start_registry`, stopped at teardown."""

    def __call__(self, storage: Path | None = None, **options: Any) -> RegistryServer: ...


def start_registry(
    folder: Path,
    storage: Path,
    *,
    htpasswd: Path | None = None,
    tls: Cert | None = None,
    readonly: bool = False,
    token: dict[str, str] | None = None,
) -> RegistryServer:
    """Start docker-registry with a config in ``folder`` and content in ``storage``; wait for ``/v2/``."""
    binary = require_registry()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "maintenance": {"uploadpurging": {"enabled": False}, "readonly": {"enabled": readonly}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "falco-misp-tests"},
    }
    if tls is not None:
        config["http"]["tls"] = {"certificate": str(tls.cert), "key": str(tls.key)}
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "falco-misp-tests", "path": str(htpasswd)}}
    if token is not None:
        config["auth"] = {"token": token}
    config_path = folder / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    log = folder / "registry.log"
    with log.open("ab") as out:
        process = subprocess.Popen([binary, "serve", str(config_path)], stdout=out, stderr=subprocess.STDOUT)
    server = RegistryServer(
        process=process,
        host=f"127.0.0.1:{port}",
        log=log,
        scheme="https" if tls else "http",
        ca_bundle=str(tls.cert) if tls else None,
    )
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"docker-registry exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            answer = server.get("/v2/")
            if answer.status_code in (200, 401):
                return server
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"docker-registry did not answer /v2/ within {START_SECONDS} s:\n{log.read_text()}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------- token auth
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Bearer-token issuer for distribution's token auth: Basic credentials in, a signed JWT out (RS256 with
    the certificate in ``x5c``, which the registry checks against its ``rootcertbundle``)."""

    def __init__(self, signer: Cert, users: dict[str, str], *, service: str, issuer: str) -> None:
        self.signer, self.users, self.service, self.issuer = signer, users, service, issuer
        self.requests: list[dict[str, Any]] = []
        der = subprocess.run(
            ["openssl", "x509", "-in", str(signer.cert), "-outform", "DER"], check=True, capture_output=True,
            timeout=30,
        ).stdout  # fmt: skip
        self._x5c = base64.b64encode(der).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                header = self.headers.get("Authorization", "")
                user = None
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    user = name if server.users.get(name) == password else ""
                server.requests.append({"query": query, "user": user})
                if user == "":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.issue(user, query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def issue(self, user: str | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in ("pull", "push")] if user else ["pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + 600, "nbf": now - 60,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}  # fmt: skip
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.signer.key)], input=signing_input.encode(),
            check=True, capture_output=True, timeout=30,
        ).stdout  # fmt: skip
        return f"{signing_input}.{_b64url(signature)}"

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)
