"""A ZeroMQ publisher on 127.0.0.1 that sends what MISP's ``mispzmq.py`` sends: ``<topic> <json>`` frames on a PUB
socket, and the ``misp_json_self`` heartbeat. Messages about attributes are built from the MISP emulator's own
restSearch answer for them, which has the shape of MISP's ``Attribute::fetchAttribute`` (Attribute, its Event with
Orgc, published and threat_level_id; no event tags).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import zmq

from emulators.misp import MispEmulator

HEARTBEAT_STATUS = "And when you're dead I will be still alive."


class MispPublisher:
    """A PUB socket bound to an ephemeral port of 127.0.0.1; :meth:`stop` and :meth:`start` keep the port."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.port = 0
        self.socket: zmq.Socket[bytes] | None = None
        self.sent = 0
        self.started = time.monotonic()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> Self:
        socket = self.context.socket(zmq.PUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, 100_000)
        if self.port == 0:
            self.port = socket.bind_to_random_port("tcp://127.0.0.1")
        else:
            deadline = time.monotonic() + 5
            while True:  # the previous socket's listener closes asynchronously
                try:
                    socket.bind(self.url)
                    break
                except zmq.ZMQError:
                    if time.monotonic() > deadline:
                        socket.close(linger=0)
                        raise
                    time.sleep(0.05)
        self.socket = socket
        return self

    def stop(self) -> None:
        """The publisher goes away (its port is free: subscribers get refused until :meth:`start`)."""
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self.context.term()

    def send_frame(self, frame: bytes) -> None:
        assert self.socket is not None, "the publisher is stopped"
        self.socket.send(frame)
        self.sent += 1

    def send(self, topic: str, payload: Any) -> None:
        self.send_frame(f"{topic} {json.dumps(payload)}".encode())

    def heartbeat(self) -> None:
        uptime = int(time.monotonic() - self.started)
        self.send("misp_json_self", {"status": HEARTBEAT_STATUS, "uptime": uptime})

    @contextlib.asynccontextmanager
    async def beating(self, interval: float = 0.1) -> AsyncIterator[None]:
        """Heartbeats every ``interval`` seconds while inside (MISP sends one every 10 s)."""

        async def beat() -> None:
            while True:
                if self.socket is not None:
                    self.heartbeat()
                await asyncio.sleep(interval)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def attribute_message(misp: MispEmulator, value: str, action: str = "add") -> dict[str, Any]:
    """``misp_json_attribute`` for an attribute the emulator holds, as MISP publishes it."""
    found, _ = misp.search({"value": value, "returnFormat": "json"})
    assert found, f"the emulator holds no attribute {value!r}"
    attribute = dict(found[0])
    event = attribute.pop("Event")
    return {"Attribute": attribute, "Event": event, "action": action}
