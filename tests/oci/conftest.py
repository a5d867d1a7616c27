"""Fixtures of the OCI tests: real docker-registry servers on 127.0.0.1 (anonymous, htpasswd, TLS, read-only,
token auth), started per test with their own storage and stopped at teardown (see :mod:`registryserver`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registryserver import (
    PASSWORD,
    USER,
    Cert,
    RegistryServer,
    StartRegistry,
    htpasswd_file,
    make_cert,
    require_registry,
    start_registry,
)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartRegistry]:
    """``start(storage=..., **options)``: a registry (options of :func:`start_registry`), stopped at teardown."""
    require_registry()
    started: list[RegistryServer] = []

    def run(storage: Path | None = None, **options: Any) -> RegistryServer:
        folder = tmp_path / f"registry-{len(started)}"
        server = start_registry(folder, storage or tmp_path / "storage", **options)
        started.append(server)
        return server

    try:
        yield run
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def registry(start: StartRegistry) -> RegistryServer:
    """Anonymous, plain HTTP."""
    return start()


@pytest.fixture
def auth_registry(start: StartRegistry, tmp_path: Path) -> RegistryServer:
    """htpasswd: :data:`USER` / :data:`PASSWORD`, plain HTTP."""
    return start(htpasswd=htpasswd_file(tmp_path, {USER: PASSWORD}))


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for 127.0.0.1."""
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_registry(start: StartRegistry, cert: Cert) -> RegistryServer:
    """Anonymous, HTTPS with :func:`cert`."""
    return start(tls=cert)
