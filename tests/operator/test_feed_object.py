"""What the operator accepts beyond the CLI: an auth key Secret for MISP, and only http(s) locations."""

from __future__ import annotations

from typing import Any

import pytest

from falco_misp.controller.sync import FeedObject, parse_feed_object
from falco_misp.errors import SpecError


def obj(source: dict[str, Any]) -> FeedObject:
    return FeedObject(name="f", namespace="ns", generation=1, spec={"source": source}, status={})


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"file": {"url": "/var/run/secrets/kubernetes.io/serviceaccount/token"}}, "spec.source.file.url"),
        ({"text": {"url": "file:///etc/passwd"}}, "spec.source.text.url"),
        ({"mispFeed": {"url": "feeds/circl"}}, "spec.source.mispFeed.url"),
        ({"misp": {"url": "https://misp.example.org"}}, "spec.source.misp.authKeySecretRef"),
    ],
)
def test_operator_refuses_local_paths_and_missing_key(source: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_feed_object(obj(source))
    assert err.value.field == field


def test_operator_accepts_urls() -> None:
    feed = parse_feed_object(obj({"text": {"url": "https://lists.example.org/ipsum.txt", "minScore": 3}}))
    assert feed.spec.source.kind == "text"
