"""Credentials of a text list from a Secret, as HTTP headers (issue 15): sent to the list's origin when the Secret's
owner paired it with that origin, never otherwise, and never shown in status or Events. The real kopf and kubernetes
client run against kmock; the MISP emulator (which also serves /text/) records every request's headers."""

from __future__ import annotations

import base64
from typing import Any

import kmock
from kubetest import (
    OPERATOR_TEST,
    FakeClock,
    cond,
    configmaps,
    create,
    daemonset_body,
    events,
    eventually,
    feed_body,
    running_operator,
    status_of,
)

from emulators.misp import MispEmulator

pytestmark = OPERATOR_TEST

TOKEN = "Bearer list-t0ken-9f8e"


def headers_secret(namespace: str, paired: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "list-auth", "namespace": namespace, "resourceVersion": "1"}
    if paired is not None:
        meta["annotations"] = {"falco-misp.io/allowed-url": paired}
    data = {"Authorization": TOKEN, "X-Api-Key": "k-77"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta,
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}  # fmt: skip


def text_spec(misp: MispEmulator) -> dict[str, Any]:
    text = {"url": f"{misp.url}/text/private.txt", "headersSecretRef": {"name": "list-auth"}}
    return {"source": {"text": text}, "falco": {"namespace": "falco"}}


async def test_a_paired_headers_secret_reaches_the_list_and_only_the_list(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.texts["private.txt"] = "45.0.0.1\n45.0.0.2\n"
    await create(kmock, daemonset_body(mounts=("misp-intel-private",)))
    await create(kmock, headers_secret("intel", paired=misp.url))
    async with running_operator(kmock, clock):
        await create(kmock, feed_body("private", "intel", text_spec(misp)))
        await eventually(lambda: "misp-intel-private-0" in configmaps(kmock, "falco"), what="ConfigMap written")
        seen = next(r for r in misp.requests if r.path == "/text/private.txt")
        assert seen.headers.get("Authorization") == TOKEN and seen.headers.get("X-Api-Key") == "k-77"
        assert TOKEN not in repr(status_of(kmock, "intel", "private"))


async def test_an_unpaired_headers_secret_is_never_sent(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.texts["private.txt"] = "45.0.0.1\n"
    await create(kmock, daemonset_body(mounts=("misp-intel-private",)))
    await create(kmock, headers_secret("intel", paired="https://lists.example.org"))
    async with running_operator(kmock, clock):
        await create(kmock, feed_body("private", "intel", text_spec(misp)))

        def refused() -> dict[str, Any] | None:
            status = status_of(kmock, "intel", "private")
            return status if cond(status, "Degraded").get("reason") == "SecretNotPaired" else None

        status = await eventually(refused, what="SecretNotPaired")
        assert cond(status, "Ready")["status"] == "False"
        assert misp.requests == []  # nothing fetched: the list is not read without its credentials either
        shown = repr(status) + repr(events(kmock, "intel"))
        assert TOKEN not in shown and "k-77" not in shown
        assert configmaps(kmock, "falco") == {}
