"""`falco-misp diff`: a fresh render against a folder `render` wrote: exactly the changes, nothing written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulators.misp import MispEmulator
from falco_misp.cli import EXIT_DIFFERENT, EXIT_OK, EXIT_USAGE, main
from helpers import misp_event

KEY_ENV = "FALCO_MISP_TEST_KEY"


def attrs(values: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"type": t, "value": v} for t, v in values]


BEFORE = [
    ("ip-dst", "45.1.1.1"),
    ("ip-dst", "45.1.1.2"),
    ("ip-dst", "45.1.1.3"),
    ("ip-dst", "46.0.0.0/24"),
    ("ip-src", "47.2.2.2"),
    ("ip-src", "2a00:1450::1"),
    ("domain", "c2.example.net"),
]


def write_export(path: Path, values: list[tuple[str, str]]) -> None:
    path.write_text(json.dumps([misp_event(1, attrs(values))]))


def write_feed(tmp: Path, spec: dict[str, Any], name: str = "intel") -> Path:
    doc = {"apiVersion": "falco-misp.io/v1alpha1", "kind": "MispFeed", "metadata": {"name": name}, "spec": spec}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def file_feed(tmp: Path) -> Path:
    return write_feed(
        tmp,
        {
            "source": {"file": {"url": "export.json"}},
            "filters": {"types": ["ip-src", "ip-dst", "domain"]},
            "falco": {"domains": True},
        },
    )


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_diff_against_a_rendered_folder_shows_exactly_the_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = file_feed(tmp_path)
    write_export(tmp_path / "export.json", BEFORE)
    out = tmp_path / "out"
    assert main(["render", "--feed", str(feed), "--out", str(out), "--quiet"]) == EXIT_OK
    (out / "notes.txt").write_text("not ours\n")
    before = snapshot(out)

    # Unchanged data: nothing added or removed, exit 0 even with --exit-code.
    assert main(["diff", "--feed", str(feed), "--against", str(out), "--exit-code"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "no indicator changed" in text
    assert "+" not in text.split("\n", 1)[1] and "the rules files differ" not in text

    # One address gone, two added (one outbound, one inbound IPv6), the CIDR replaced by another, a domain added.
    after = [v for v in BEFORE if v[1] not in ("45.1.1.2", "46.0.0.0/24")]
    after += [("ip-dst", "45.9.9.9"), ("ip-src", "2a00:1450::2"), ("ip-dst", "48.0.0.0/20"), ("domain", "evil.example")]
    write_export(tmp_path / "export.json", after)
    assert main(["diff", "--feed", str(feed), "--against", str(out)]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(
        "(1 rules file(s) of this feed): +1 outbound addresses, +1 outbound networks, +1 outbound domains, "
        "+1 inbound addresses, -1 outbound addresses, -1 outbound networks"
    )
    assert lines[1] == "indicators: 7 in the folder, 9 rendered"
    assert lines[2:] == [
        "outbound addresses: +1 -1",
        "  + 45.9.9.9",
        "  - 45.1.1.2",
        "outbound networks: +1 -1",
        "  + 48.0.0.0/20",
        "  - 46.0.0.0/24",
        "outbound domains: +1 -0",
        "  + evil.example",
        "inbound addresses: +1 -0",
        "  + 2a00:1450::2",
    ]
    assert main(["diff", "--feed", str(feed), "--against", str(out), "--exit-code", "--show", "0"]) == EXIT_DIFFERENT
    assert capsys.readouterr().out.splitlines()[2:] == [
        "outbound addresses: +1 -1",
        "outbound networks: +1 -1",
        "outbound domains: +1 -0",
        "inbound addresses: +1 -0",
    ]
    assert snapshot(out) == before  # nothing written, nothing removed


def test_show_limits_the_values_and_counts_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = file_feed(tmp_path)
    write_export(tmp_path / "export.json", BEFORE)
    out = tmp_path / "out"
    assert main(["render", "--feed", str(feed), "--out", str(out), "--quiet"]) == EXIT_OK
    write_export(tmp_path / "export.json", [*BEFORE, *(("ip-dst", f"45.2.0.{i}") for i in range(1, 26))])
    assert main(["diff", "--feed", str(feed), "--against", str(out), "--show", "3"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == [
        "outbound addresses: +25 -0",
        "  + 45.2.0.1",
        "  + 45.2.0.2",
        "  + 45.2.0.3",
        "  ... 22 more added",
    ]


def test_configmap_manifests_and_other_feeds_in_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = file_feed(tmp_path)
    write_export(tmp_path / "export.json", BEFORE)
    out = tmp_path / "out"
    assert main(["render", "--feed", str(feed), "--out", str(out), "--format", "configmaps", "--quiet"]) == 0
    other = write_feed(tmp_path, {"source": {"file": {"url": "other.json"}}}, name="other")
    write_export(tmp_path / "other.json", [("ip-dst", "45.1.1.2"), ("ip-dst", "99.9.9.9")])
    assert main(["render", "--feed", str(other), "--out", str(out), "--quiet"]) == 0  # another feed's files beside
    write_export(tmp_path / "export.json", [v for v in BEFORE if v[1] != "45.1.1.3"])
    assert main(["diff", "--feed", str(feed), "--against", str(out), "--exit-code"]) == EXIT_DIFFERENT
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == ["outbound addresses: +0 -1", "  - 45.1.1.3"]


def test_a_changed_priority_alone_is_no_indicator_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = file_feed(tmp_path)
    write_export(tmp_path / "export.json", BEFORE)
    out = tmp_path / "out"
    assert main(["render", "--feed", str(feed), "--out", str(out), "--quiet"]) == EXIT_OK
    doc = yaml.safe_load(feed.read_text())
    doc["spec"]["falco"]["priority"] = "CRITICAL"
    feed.write_text(yaml.safe_dump(doc))
    assert main(["diff", "--feed", str(feed), "--against", str(out), "--exit-code"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "no indicator changed" in text and "the rules files differ in other ways" in text


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "is not a folder"), ("- list: [unclosed\n", "not valid YAML")],
)
def test_bad_folders_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, problem: str
) -> None:
    feed = file_feed(tmp_path)
    write_export(tmp_path / "export.json", BEFORE)
    against = tmp_path / "rules"
    if content is not None:
        against.mkdir()
        (against / "misp-default-intel-0.yaml").write_text(content)
    assert main(["diff", "--feed", str(feed), "--against", str(against)]) == EXIT_USAGE
    assert problem in capsys.readouterr().err


@pytest.fixture
def misp() -> Iterator[MispEmulator]:
    with MispEmulator() as emulator:
        yield emulator


def test_diff_from_a_misp_server(
    tmp_path: Path, misp: MispEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(KEY_ENV, misp.api_key)
    misp.add_event(misp_event(1, attrs(BEFORE[:3])))
    spec = {"source": {"misp": {"url": misp.url, "verifyTLS": False, "timeoutSeconds": 2}}}
    feed = write_feed(tmp_path, spec)
    out = tmp_path / "out"
    assert main(["render", "--feed", str(feed), "--out", str(out), "--auth-key-env", KEY_ENV, "--quiet"]) == 0
    misp.add_event(misp_event(2, attrs([("ip-src", "47.3.3.3")])))
    args = ["diff", "--feed", str(feed), "--against", str(out), "--auth-key-env", KEY_ENV]
    assert main(args) == EXIT_OK
    output = capsys.readouterr().out
    assert output.splitlines()[2:] == ["inbound addresses: +1 -0", "  + 47.3.3.3"]
    assert misp.api_key not in output
