"""Benchmarks of issue 14, the four tables in one command; writes bench/RESULTS.md.

    .venv/bin/python bench/run.py                 # everything (about 20 minutes on 2 cores)
    .venv/bin/python bench/run.py --sizes 10000 --cost-sizes 300000 --refresh-sizes 20000   # a quicker look

1. Falco's cost per connect and 2. files and load time, by the cost model (bench/falco_cost.py);
3. MISP's load per refresh, full against incremental (bench/refresh.py);
4. the pipeline: `falco-misp render` end to end (PyMISP fetch from the MISP emulator -> shards) and the pure
   pipeline, before (no read-ahead) and after.

Synthetic data, generated from a fixed seed: mostly IPv4, some IPv6, CIDRs of varied length, a few domains,
~5 % invalid values, ~20 % duplicates, tags and orgs for the filters. The emulator (tests/emulators/misp.py) runs
in this process and serves it over loopback; each measured run is a separate process, so its wall time and peak
RSS (from wait4) are its own. Every end-to-end size runs twice and the two rules hashes must be equal.
Not a test: it prints a table and writes bench/RESULTS.md; targets are checked and reported, not asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))

from measure import PREFETCH_ENV  # noqa: E402

from emulators.misp import MispEmulator  # noqa: E402

TAGS = ["tlp:white", "tlp:green", "tlp:amber", "tlp:red", 'osint:source-type="blocklist"']
ORGS = ["CIRCL", "SampleCERT", "SampleISAC"]
EVENT_SIZE = 5_000
# size -> (max wall s, max peak RSS MB); issue 14 goal 4: 100k <= 1.5 s, 1M <= 30 s and <= 400 MB (with read-ahead)
TARGETS = {1_000_000: (30.0, 400.0), 100_000: (1.5, None)}


def _value(rnd: random.Random, i: int) -> tuple[str, str]:
    r = rnd.random()
    if r < 0.05:
        return "ip-dst", rnd.choice(["not-an-ip", "1.2.3.4) or (proc.name=sh", "300.1.1.1", "1.2.3"]) + str(i)
    if r < 0.75:
        value = f"{rnd.randint(11, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
    elif r < 0.87:
        value = f"2a0{rnd.randint(0, 9)}:{rnd.randint(0, 65535):x}:{rnd.randint(0, 65535):x}::{rnd.randint(1, 65535):x}"
    elif r < 0.95:
        prefix = rnd.choice([16, 20, 22, 24, 24, 26, 28, 30])
        value = f"{rnd.randint(11, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.0/{prefix}"
    elif r < 0.97:
        value = f"2a0{rnd.randint(0, 9)}:{rnd.randint(0, 65535):x}::/{rnd.choice([32, 48, 64])}"
    else:
        return "domain", f"c2-{rnd.randint(0, 10**6)}.example-{rnd.randint(0, 99)}.net"
    return rnd.choice(["ip-src", "ip-dst", "ip-dst|port"]), value


def generate(size: int, seed: int = 1) -> list[dict[str, Any]]:
    """``size`` attributes in events of EVENT_SIZE; ~20 % repeat an earlier value."""
    rnd = random.Random(seed)
    events: list[dict[str, Any]] = []
    seen: list[tuple[str, str]] = []
    for e in range(0, size, EVENT_SIZE):
        attrs = []
        for i in range(e, min(size, e + EVENT_SIZE)):
            if seen and rnd.random() < 0.2:
                type_, value = rnd.choice(seen)
            else:
                type_, value = _value(rnd, i)
                if len(seen) < 50_000:
                    seen.append((type_, value))
            if type_ == "ip-dst|port" and "|" not in value:
                value = f"{value}|{rnd.randint(1, 65535)}" if "/" not in value else value
                type_ = type_ if "|" in value else "ip-dst"
            attrs.append(
                {
                    "id": str(i + 1),
                    "uuid": f"00000000-0000-4000-8000-{i:012d}",
                    "type": type_,
                    "value": value,
                    "category": "Network activity",
                    "to_ids": rnd.random() < 0.95,
                    "timestamp": str(1_700_000_000 + i),
                    "Tag": [{"name": rnd.choice(TAGS)}],
                }
            )
        events.append(
            {
                "Event": {
                    "id": str(e // EVENT_SIZE + 1),
                    "uuid": f"00000000-0000-4000-9000-{e // EVENT_SIZE:012d}",
                    "info": f"bench event {e // EVENT_SIZE}",
                    "threat_level_id": str(rnd.randint(1, 4)),
                    "published": True,
                    "publish_timestamp": "1700000000",
                    "Orgc": {"name": rnd.choice(ORGS), "uuid": f"00000000-0000-4000-a000-{ORGS.index(ORGS[0]):012d}"},
                    "Attribute": attrs,
                }
            }
        )
    return events


FEED = """apiVersion: falco-misp.io/v1alpha1
kind: MispFeed
metadata: {{name: bench}}
spec:
  source:
    misp: {{url: "{url}", pageSize: {page_size}, timeoutSeconds: 120}}
  filters:
    types: [ip-src, ip-dst, ip-dst|port, domain]
    tags: {{none: ["tlp:red"]}}
  limits: {{maxIndicators: 2000000}}
  falco: {{maxShards: 256, domains: true}}
"""


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``cmd`` (which reports ``peak_rss_kb=`` on stderr); wall seconds, peak RSS in MB, stdout."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rss = [int(line.split("=")[1]) for line in proc.stderr.splitlines() if line.startswith("peak_rss_kb=")]
    return wall, rss[-1] / 1024, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--page-size", type=int, default=5_000)
    parser.add_argument("--extra-page-sizes", type=int, nargs="*", default=[1_000, 20_000],
                        help="page sizes also run at the largest size (peak RSS vs page size)")  # fmt: skip
    parser.add_argument("--prefetch", type=int, default=2, help="read-ahead pages of the 'after' runs")
    parser.add_argument("--cost-sizes", type=int, nargs="*", default=[300_000, 1_000_000],
                        help="attributes for the Falco cost tables (none: skip them)")  # fmt: skip
    parser.add_argument("--refresh-sizes", type=int, nargs="*", default=[100_000, 1_000_000],
                        help="attributes for the refresh table (none: skip it)")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print only, do not write bench/RESULTS.md")
    args = parser.parse_args()
    sections = [cost_section(args.cost_sizes), refresh_section(args.refresh_sizes)]
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        events = generate(size)
        first = len(rows)
        with tempfile.TemporaryDirectory() as tmp, MispEmulator(events=events) as misp:
            del events
            env = {**os.environ, "MISP_AUTH_KEY": misp.api_key}
            # two runs at the default page size (determinism), then, for the largest size, other page sizes:
            # peak RSS should follow the page size, not the feed size
            # ... each first without read-ahead (prefetch 0: the code before issue 14's goal 4), then with it
            runs = [(args.page_size, 0), (args.page_size, args.prefetch), (args.page_size, 0),
                    (args.page_size, args.prefetch)]  # fmt: skip
            if size == max(args.sizes):
                runs += [(p, args.prefetch) for p in args.extra_page_sizes]
            hashes = []
            for attempt, (page_size, prefetch) in enumerate(runs):
                env[PREFETCH_ENV] = str(prefetch)
                feed = Path(tmp) / f"feed{attempt}.yaml"
                feed.write_text(FEED.format(url=misp.url, page_size=page_size))
                out_dir = Path(tmp) / f"out{attempt}"
                cmd = [sys.executable, str(BENCH / "measure.py"), "falco-misp", "render", "--feed", str(feed),
                       "--out", str(out_dir)]  # fmt: skip
                wall, rss, out = run_measured(cmd, env)
                summary = dict(line.split(None, 1) for line in out.splitlines() if line.startswith(("shards", "bytes")))
                hashes.append(hashlib.sha256(b"".join(p.read_bytes() for p in sorted(out_dir.glob("*.yaml")))).digest())
                mode = f"end-to-end #{attempt // 2 + 1}" if attempt < 4 else f"end-to-end, pageSize {page_size}"
                mode += f", prefetch {prefetch}"
                rows.append({"size": size, "mode": mode, "wall": wall, "rss": rss, "bytes": int(summary["bytes"]),
                             "shards": int(summary["shards"]), "stable": len(set(hashes)) == 1})  # fmt: skip
            wall, rss, out = run_measured([sys.executable, str(BENCH / "fetch_only.py"), str(Path(tmp) / "feed0.yaml")],
                                          env)  # fmt: skip
            rows.append({"size": size, "mode": "fetch alone: PyMISP pages from the emulator, nothing processed",
                         "wall": wall, "rss": rss, "bytes": None})  # fmt: skip  # process wall, as end to end
            wall, rss, out = run_measured([sys.executable, str(BENCH / "pure.py"), str(size)], env)
            fields = dict(kv.split("=") for kv in out.split())
            rows.append({"size": size, "mode": "pure pipeline", "wall": float(fields["seconds"]), "rss": rss,
                         "bytes": int(fields["bytes"]), "shards": int(fields["shards"]),
                         "stable": bytes.fromhex(fields["sha256"]) == hashes[0]})  # fmt: skip
        print(table(rows[first:], header=first == 0), flush=True)
    text = report(rows, args)
    print()
    print(text.split("\n\n", 2)[-1])
    if not args.no_write:
        (REPO / "bench" / "RESULTS.md").write_text("\n".join([text, *filter(None, sections)]))
    return 0


def cost_section(sizes: list[int]) -> str:
    """Goals 1 and 2: bench/falco_cost.py's tables for ``sizes``, printed as they come."""
    if not sizes:
        return ""
    import falco_cost  # noqa: PLC0415 - its renderer import and data generator are only needed here

    lines = ["## Falco's cost per connect and load time (issue 14, goals 1 and 2)", "",
             "Command: this one (`bench/falco_cost.py` alone prints the same). " + falco_cost.MODEL_NOTE]  # fmt: skip
    print("\n".join(lines), flush=True)

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    for size in sizes:
        falco_cost.run(size, 2_000, experiments=size == 300_000, out=out)
    return "\n".join(lines) + "\n"


def refresh_section(sizes: list[int]) -> str:
    """Goal 3: bench/refresh.py's table for ``sizes``."""
    if not sizes:
        return ""
    import refresh  # noqa: PLC0415 - counts the emulator's bytes from its import on

    lines = refresh.HEADER.splitlines()
    print("\n".join(lines), flush=True)

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    for size in sizes:
        refresh.run(size, out)
    return "\n".join(lines) + "\n"


def table(rows: list[dict[str, Any]], header: bool = True) -> str:
    lines = []
    if header:
        lines += [
            "| attributes | run | wall s | peak RSS MB | output bytes | shards | same hash |",
            "|---:|---|---:|---:|---:|---:|---|",
        ]
    for r in rows:
        if r["bytes"] is None:  # a row without rules (the fetch alone)
            lines.append(f"| {r['size']:,} | {r['mode']} | {r['wall']:.2f} | {r['rss']:.0f} | – | – | – |")
            continue
        lines.append(
            f"| {r['size']:,} | {r['mode']} | {r['wall']:.2f} | {r['rss']:.0f} | {r['bytes']:,} | {r['shards']} | "
            f"{'yes' if r.get('stable') else 'NO'} |"
        )
    return "\n".join(lines)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    verdicts = []
    for size, (max_wall, max_rss) in TARGETS.items():
        runs = [r for r in rows if r["size"] == size and r["mode"].startswith("end-to-end")
                and not r["mode"].endswith("prefetch 0")]  # fmt: skip
        if not runs:
            continue
        wall, rss = max(r["wall"] for r in runs), max(r["rss"] for r in runs)
        ok = wall <= max_wall and (max_rss is None or rss <= max_rss)
        limit = f"≤ {max_wall:g} s" + (f" and ≤ {max_rss:g} MB" if max_rss else "")
        verdicts.append(f"- {size:,} attributes end to end: {wall:.1f} s, {rss:.0f} MB peak RSS "
                        f"(target {limit}): {'met' if ok else 'NOT met'}")  # fmt: skip
    sizes = "" if args.sizes == [10_000, 100_000, 1_000_000] else " --sizes " + " ".join(map(str, args.sizes))
    if args.extra_page_sizes != [1_000, 20_000]:
        sizes += " --extra-page-sizes " + " ".join(map(str, args.extra_page_sizes))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
    return "\n".join([
        "# Benchmark results",
        "",
        f"Command: `.venv/bin/python bench/run.py{sizes}` "
        f"(page size {args.page_size}); machine: {machine}; {time.strftime('%Y-%m-%d')}.",
        "",
        "End to end = `falco-misp render` in its own process: PyMISP pages from the MISP emulator on loopback",
        "(the emulator's own serving time included), filters, validation, dedupe, collapse, rendering, atomic writes.",
        "Fetch alone = the same PyMISP pages, nothing processed (what the emulator and the HTTP client cost",
        "by themselves: the emulator renders and encodes every page in Python). Pure pipeline = attributes",
        "already in memory -> indicators -> shards, in its own process",
        "(its RSS includes the attribute list it builds first). Same hash: both end-to-end runs, and the pure",
        "pipeline, produced byte-identical rules (for each run: the same bytes as every end-to-end run before it).",
        "Rows `prefetch 0` are the code before issue 14's goal 4 (each page fetched only after the one before was",
        f"processed); `prefetch {args.prefetch}` read that many pages ahead; targets are judged on those.",
        "",
        table(rows),
        "",
        *verdicts,
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
