"""Fixtures of the live-update tests: the operator fixtures of tests/k8s (kmock with our resource, the MISP emulator,
the fake clock, the record of the operator's API calls) and a ZeroMQ publisher on 127.0.0.1 that speaks like MISP's.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_K8S = str(Path(__file__).resolve().parents[1] / "k8s")
if _K8S not in sys.path:  # kubetest, as the tests in tests/k8s import it
    sys.path.insert(0, _K8S)

from mispzmq import MispPublisher  # noqa: E402

from k8s.conftest import api_calls, clock, misp, resources  # noqa: E402

__all__ = ["api_calls", "clock", "misp", "publisher", "resources"]


@pytest.fixture
def publisher() -> Iterator[MispPublisher]:
    with MispPublisher() as pub:
        yield pub
