"""`falco-misp render` end to end: bundled data, the MISP emulator through real PyMISP, every fault."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulators.misp import Fault, MispEmulator
from falco_misp.cli import main
from helpers import REPO, misp_event
from rulecheck import block_items, load

KEY_ENV = "FALCO_MISP_TEST_KEY"


def lists_of(out: Path) -> dict[str, list[str]]:
    """List name (without the feed/shard prefix) -> items, over every rules file in ``out``."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in out.glob("*.yaml") if not p.name.endswith(".configmap.yaml")):
        for name, items in block_items(load(path.read_bytes())).items():  # lists and guarded network macros
            kind = re.search(r"(inbound|outbound)_(addresses|networks|domains)$", name)
            assert kind, name
            found.setdefault(kind.group(0), []).extend(items)
    return found


def write_feed(tmp: Path, spec: dict[str, Any], name: str = "cli") -> Path:
    path = tmp / f"{name}.yaml"
    doc = {"apiVersion": "falco-misp.io/v1alpha1", "kind": "MispFeed", "metadata": {"name": name}, "spec": spec}
    path.write_text(yaml.safe_dump(doc))
    return path


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_quick_start_command_on_bundled_data(tmp_path: Path) -> None:
    """The README's first command, through the installed console script."""
    script = Path(sys.executable).with_name("falco-misp")
    proc = subprocess.run(
        [str(script), "render", "--feed", "examples/sample-feed.yaml", "--out", str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rejected too_broad" in proc.stdout and "rules hash" in proc.stdout
    got = lists_of(tmp_path / "out")
    # High and Medium events without tlp:red, to_ids only; the allow-listed 198.51.100.77 carved out of its /25
    assert got["outbound_addresses"] == [
        "198.51.100.76",
        "203.0.113.10",
        "203.0.113.11",
        "203.0.113.12",
        "203.0.113.13",
        "203.0.113.14",
        "203.0.113.15",
        "2001:db8:dead:beef::10",
    ]
    assert got["inbound_addresses"] == ["198.51.100.200", "198.51.100.201", "2001:db8:bad::1"]
    assert got["inbound_networks"] == ["192.0.2.128/25"]
    assert "198.51.100.77" not in str(got) and "203.0.113.200" not in str(got) and "203.0.113.250" not in str(got)


def test_text_feed_and_configmaps_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cm"
    assert main(["render", "--feed", str(REPO / "examples/sample-text-feed.yaml"), "--out", str(out), "-q"]) == 0
    assert main(["render", "--feed", str(REPO / "examples/sample-text-feed.yaml"), "--out", str(out)]) == 0
    assert main(["render", "--feed", str(REPO / "examples/sample-text-feed.yaml"), "--out", str(out),
                 "--format", "configmaps"]) == 0  # fmt: skip
    cm = yaml.safe_load((out / "misp-falco-sample-ipsum-0.configmap.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["namespace"] == "falco"
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "falco-misp-operator"
    rules = cm["data"]["misp-falco-sample-ipsum-0.yaml"]
    assert rules.encode() == (out / "misp-falco-sample-ipsum-0.yaml").read_bytes()  # same bytes both ways
    items = lists_of(out)
    assert items["inbound_addresses"] == ["198.51.100.31", "203.0.113.21", "203.0.113.22", "2001:db8:1::31"]
    assert "rejected invalid_address" in capsys.readouterr().out  # "not-an-address" line, once per type


@pytest.fixture
def misp() -> Iterator[MispEmulator]:
    with MispEmulator() as emulator:
        yield emulator


@pytest.fixture
def key(misp: MispEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, misp.api_key)
    return misp.api_key


def misp_spec(misp: MispEmulator, **filters: Any) -> dict[str, Any]:
    return {
        "source": {"misp": {"url": misp.url, "verifyTLS": False, "timeoutSeconds": 1, "pageSize": 2}},
        "filters": filters,
    }


def render(feed: Path, out: Path, *extra: str) -> int:
    return main(["render", "--feed", str(feed), "--out", str(out), "--auth-key-env", KEY_ENV, *extra])


def test_render_from_misp_server_with_reference_data(tmp_path: Path, misp: MispEmulator, key: str) -> None:
    misp.load_reference("misp-tests/misp_indicators_test.json", "pymisp-tests/existing_event.json")
    feed = write_feed(tmp_path, misp_spec(misp, types=["ip-src", "ip-dst", "ip-dst|port"]))
    assert render(feed, tmp_path / "out") == 0
    got = lists_of(tmp_path / "out")
    assert got["inbound_addresses"] == ["1.2.3.4", "8.8.8.8"]
    # existing_event.json: 12 ip-dst in domain-ip objects (one repeated) + the ip-dst|port of the MISP test event
    assert "12.34.56.78" in got["outbound_addresses"] and "8.8.8.8" in got["outbound_addresses"]
    assert "185.156.173.70" in got["outbound_addresses"] and len(got["outbound_addresses"]) == 13
    searches = misp.restsearch_requests()
    assert len(searches) >= 2  # paged: pageSize 2
    body = searches[0].json or {}
    assert body["type"] == ["ip-src", "ip-dst", "ip-dst|port"] and body["to_ids"] in (1, "1", True)
    assert [r.json["page"] for r in searches if r.json] == list(range(1, len(searches) + 1))
    assert key not in (tmp_path / "out").joinpath("misp-default-cli-0.yaml").read_text()


def test_filters_are_sent_and_honoured(tmp_path: Path, misp: MispEmulator, key: str) -> None:
    misp.add_event(misp_event(1, [{"type": "ip-dst", "value": "8.8.4.4"}], org="Good", threat_level=1,
                              tags=("tlp:white",)))  # fmt: skip
    misp.add_event(misp_event(2, [{"type": "ip-dst", "value": "9.9.9.9"}], org="Good", threat_level=3))
    misp.add_event(misp_event(3, [{"type": "ip-dst", "value": "1.0.0.1"}], org="Other", threat_level=1))
    misp.add_event(misp_event(4, [{"type": "ip-dst", "value": "4.4.4.4", "to_ids": False}], org="Good"))
    misp.add_event(misp_event(5, [{"type": "ip-dst", "value": "5.5.5.5", "Tag": ["tlp:red"]}], org="Good"))
    feed = write_feed(tmp_path, misp_spec(misp, orgs=["Good"], minThreatLevel="medium", tags={"none": ["tlp:red"]}))
    assert render(feed, tmp_path / "out") == 0
    assert lists_of(tmp_path / "out") == {"outbound_addresses": ["8.8.4.4"]}
    body = misp.restsearch_requests()[0].json or {}
    assert body["org"] == ["Good"] and body["threat_level_id"] == ["1", "2"] and body["tags"] == {"NOT": ["tlp:red"]}


def test_warninglist_short_pages_do_not_end_the_fetch(tmp_path: Path, misp: MispEmulator, key: str) -> None:
    values = ["8.8.8.8", "8.8.4.4", "1.1.1.1", "9.9.9.9", "1.0.0.1", "4.4.4.4", "5.5.5.5"]
    misp.add_event(misp_event(1, [{"type": "ip-dst", "value": v} for v in values]))
    spec = misp_spec(misp, enforceWarninglist=True)
    assert render(write_feed(tmp_path, spec), tmp_path / "out") == 0
    assert lists_of(tmp_path / "out") == {"outbound_addresses": ["4.4.4.4", "5.5.5.5", "9.9.9.9"]}
    assert all((r.json or {}).get("enforceWarninglist") in (1, True, "1") for r in misp.restsearch_requests())


def test_any_of_groups_are_merged(tmp_path: Path, misp: MispEmulator, key: str) -> None:
    misp.add_event(misp_event(1, [{"type": "ip-dst", "value": "8.8.4.4"}, {"type": "ip-src", "value": "7.7.7.7"}],
                              org="A"))  # fmt: skip
    misp.add_event(misp_event(2, [{"type": "ip-src", "value": "9.9.9.9"}, {"type": "ip-dst", "value": "6.6.6.6"}],
                              org="B"))  # fmt: skip
    spec = misp_spec(misp, anyOf=[{"orgs": ["A"], "types": ["ip-dst"]}, {"orgs": ["B"], "types": ["ip-src"]}])
    assert render(write_feed(tmp_path, spec), tmp_path / "out") == 0
    assert lists_of(tmp_path / "out") == {"outbound_addresses": ["8.8.4.4"], "inbound_addresses": ["9.9.9.9"]}


FAULTS = [
    (Fault.refused(), "ConnectionRefused"),
    (Fault.timeout(3.0), "Timeout"),
    (Fault.status(401), "HTTP401"),
    (Fault.status(403), "HTTP403"),
    (Fault.status(500), "HTTP5xx"),
    (Fault.invalid_json(), "InvalidJSON"),
    (Fault.truncated(), "TruncatedResponse"),
    (Fault.timeout(3.0, after_requests=1, paths=("/attributes/restSearch",)), "Timeout"),
    (Fault.status(500, after_requests=1, paths=("/attributes/restSearch",)), "HTTP5xx"),
    (Fault.truncated(after_requests=1, paths=("/attributes/restSearch",)), "TruncatedResponse"),
    (Fault.invalid_json(after_requests=1, paths=("/attributes/restSearch",)), "InvalidJSON"),
]


@pytest.mark.parametrize(("fault", "reason"), FAULTS, ids=[f"{f.kind}-after{f.after_requests}" for f, _ in FAULTS])
def test_fault_exits_nonzero_and_keeps_output(
    tmp_path: Path, misp: MispEmulator, key: str, capsys: pytest.CaptureFixture[str], fault: Fault, reason: str
) -> None:
    misp.add_event(misp_event(1, [{"type": "ip-dst", "value": f"8.8.{i}.1"} for i in range(5)]))
    feed = write_feed(tmp_path, misp_spec(misp))
    out = tmp_path / "out"
    assert render(feed, out) == 0
    before = snapshot(out)
    misp.add_event(misp_event(2, [{"type": "ip-dst", "value": "9.9.9.9"}]))  # would change the output
    misp.fault = fault
    code = render(feed, out)
    err = capsys.readouterr().err
    assert code == 1
    assert f"source failed ({reason})" in err and misp.url in err
    assert key not in err
    assert snapshot(out) == before


def test_wrong_key_is_reported_without_the_key(tmp_path: Path, misp: MispEmulator, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv(KEY_ENV, "wrong-secret-key-1234")
    assert render(write_feed(tmp_path, misp_spec(misp)), tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "HTTP403" in err or "HTTP401" in err or "Unauthorized" in err
    assert "wrong-secret-key-1234" not in err
    assert not (tmp_path / "out").exists()


def test_missing_key_is_a_usage_error(tmp_path: Path, misp: MispEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    os.environ.pop(KEY_ENV, None)
    assert render(write_feed(tmp_path, misp_spec(misp)), tmp_path / "out") == 2
    assert KEY_ENV in capsys.readouterr().err


def test_static_feed_over_http_and_from_reference_folder(tmp_path: Path, misp: MispEmulator, reference: Path) -> None:
    misp.load_reference("misp-tests/misp_indicators_test.json")
    misp.add_event(misp_event(9, [{"type": "ip-dst", "value": "8.8.4.4"}], org="Other"))
    spec = {"source": {"mispFeed": {"url": f"{misp.url}/feed/"}}, "filters": {"orgs": ["ORGNAME_387"]}}
    assert render(write_feed(tmp_path, spec), tmp_path / "out") == 0
    assert lists_of(tmp_path / "out") == {
        "outbound_addresses": ["8.8.8.8"],
        "inbound_addresses": ["1.2.3.4", "8.8.8.8"],
    }
    # the reference static feed (one CIRCL event) holds no network indicators: a valid, empty render
    spec = {"source": {"mispFeed": {"url": str(reference / "feed-example")}}, "filters": {"toIds": None}}
    assert render(write_feed(tmp_path, spec, "ref"), tmp_path / "ref") == 0
    assert lists_of(tmp_path / "ref") == {}


def test_static_feed_fault_keeps_output(tmp_path: Path, misp: MispEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    misp.add_event(misp_event(1, [{"type": "ip-dst", "value": "8.8.4.4"}]))
    misp.add_event(misp_event(2, [{"type": "ip-dst", "value": "9.9.9.9"}]))
    feed = write_feed(tmp_path, {"source": {"mispFeed": {"url": f"{misp.url}/feed/", "timeoutSeconds": 1}}})
    out = tmp_path / "out"
    assert render(feed, out) == 0
    before = snapshot(out)
    misp.fault = Fault.status(404, after_requests=2, paths=("/feed/",))  # manifest and first event fine
    assert render(feed, out) == 1
    assert "HTTP404" in capsys.readouterr().err
    assert snapshot(out) == before


def test_text_list_over_http(tmp_path: Path, misp: MispEmulator) -> None:
    misp.texts["ipsum.txt"] = "# ipsum\n8.8.4.4\t9\n9.9.9.9\t1\n"
    spec = {"source": {"text": {"url": f"{misp.url}/text/ipsum.txt", "minScore": 2, "types": ["ip-dst"]}}}
    assert render(write_feed(tmp_path, spec), tmp_path / "out") == 0
    assert lists_of(tmp_path / "out") == {"outbound_addresses": ["8.8.4.4"]}


def test_bad_feed_and_more_than_fits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_feed(tmp_path, {"source": {"file": {"url": "x.json"}}, "filters": {"minThreatLevel": "severe"}})
    assert main(["render", "--feed", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "spec.filters.minThreatLevel" in capsys.readouterr().err
    export = tmp_path / "export.json"
    export.write_text(json.dumps(misp_event(1, [{"type": "ip-dst", "value": f"8.{i // 250}.{i % 250}.1"}
                                                               for i in range(3000)])))  # fmt: skip
    big = write_feed(tmp_path, {"source": {"file": {"url": "export.json"}},
                                "falco": {"shardBytes": 16384, "maxShards": 1}})  # fmt: skip
    # More than maxShards holds: the newest that fit are written (issue 10.7), the rest reported, exit 0.
    assert main(["render", "--feed", str(big), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    capped = re.search(r"capped for capacity\s+(\d+)", printed)
    assert capped, printed
    (shard,) = (tmp_path / "o").glob("*.yaml")
    items = [i for d in load(shard.read_bytes()) if "list" in d for i in d["items"]]
    assert 0 < len(items) < 3000 and len(items) + int(capped.group(1)) == 3000
    shutil.rmtree(tmp_path / "o")
    missing = write_feed(tmp_path, {"source": {"file": {"url": "nope.json"}}})
    assert main(["render", "--feed", str(missing), "--out", str(tmp_path / "o")]) == 1
    assert "NotFound" in capsys.readouterr().err


def test_stale_shards_removed_and_other_files_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "misp-default-cli-7.yaml").write_text("stale")
    (out / "falco_rules.local.yaml").write_text("mine")
    (out / "misp-default-cli-other.yaml").write_text("not a shard name")
    export = tmp_path / "e.json"
    export.write_text(json.dumps(misp_event(1, [{"type": "ip-dst", "value": "8.8.4.4"}])))
    assert main(["render", "--feed", str(write_feed(tmp_path, {"source": {"file": {"url": "e.json"}}})),
                 "--out", str(out), "-q"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [
        "falco_rules.local.yaml",
        "misp-default-cli-0.yaml",
        "misp-default-cli-other.yaml",
    ]


def test_summary_reports_indicators_capped_for_capacity_as_information() -> None:
    from dataclasses import replace

    from falco_misp.indicators.builder import IndicatorBuilder, IndicatorSet
    from falco_misp.rendering.shards import render_within_capacity
    from falco_misp.rendering.summary import format_summary
    from helpers import attr, feed

    f = feed(name="full", falco={"shardBytes": 16 * 1024, "maxShards": 1})
    attrs = [attr(f"8.{i // 250}.{i % 250}.1", ts=i) for i in range(3000)]

    def build(cap: int | None) -> IndicatorSet:
        spec = f.spec if cap is None else replace(f.spec, limits=replace(f.spec.limits, max_indicators=cap))
        return IndicatorBuilder(spec).add_all(attrs).build()

    indicators, bundle = render_within_capacity(f, build)
    text = format_summary(f, len(attrs), indicators, bundle)
    row = next(line for line in text.splitlines() if line.startswith("capped for capacity"))
    assert row.split()[3] == str(bundle.capped) == str(3000 - indicators.total)
    assert bundle.capped > 0 and "WARNING" not in text and "error" not in text.lower()
    assert re.search(rf"^emitted total\s+{indicators.total}$", text, re.M)  # what the rules hold
    full = format_summary(f, 1, indicators, replace(bundle, capped=0))
    assert "capped" not in full
