"""Benchmark: what a refresh costs MISP, full against incremental (issue 14, goal 3).

    .venv/bin/python bench/refresh.py                     # 100,000 and 1,000,000 attributes
    .venv/bin/python bench/refresh.py --sizes 100000

Through the real PyMISP against the MISP emulator on loopback (bench/run.py's synthetic data). For each size, in
one process with the operator's refresh state kept between steps (``pipeline.IncrementalRefresh``):

1. the first sync: a full fetch;
2. a refresh of an unchanged MISP;
3. a refresh after MISP changed: 1 % of the attributes edited (new values) in a few events, plus one event deleted;
4. the same changed MISP fetched in full, for comparison (and to check the incremental rules equal it byte for byte).

Counted: data requests the emulator answered (restSearch pages, the event index; in brackets all requests, PyMISP's
four start-up calls included), bytes it sent (bodies), seconds, and
the rules files whose bytes changed since the step before (what the operator would write: 0 when the hash is
unchanged).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402
from run import FEED, generate  # noqa: E402

import emulators.misp as emulator  # noqa: E402
from emulators.misp import MispEmulator  # noqa: E402
from falco_misp.feed.parse import parse_feed  # noqa: E402
from falco_misp.pipeline import IncrementalRefresh, RenderResult, fetch_and_render, refresh_and_render  # noqa: E402
from falco_misp.sources.locations import FetchContext  # noqa: E402

SENT = [0]  # body bytes the emulator wrote
LAST_CHANGED = [0]  # files changed by the last step
DATA_PATHS = ("/attributes/restSearch", "/events/index")  # the rest is PyMISP's start-up (version, user, types)


def _counting(send: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    def wrapper(handler: Any, response: Any) -> None:
        SENT[0] += len(response.body)
        send(handler, response)

    return wrapper


emulator._send = _counting(emulator._send)  # type: ignore[attr-defined]


def _changed_files(before: RenderResult | None, after: RenderResult) -> int:
    old = {} if before is None else {s.filename: s.content for s in before.bundle.shards}
    new = {s.filename: s.content for s in after.bundle.shards}
    return sum(old.get(name) != content for name, content in new.items()) + len(old.keys() - new.keys())


def change(misp: MispEmulator, generated: list[dict[str, Any]], share: float, seed: int = 3) -> int:
    """Edit ``share`` of the attributes (in as few events as hold them) to new values, delete one more event."""
    rnd = random.Random(seed)
    events = [e["Event"] for e in generated]
    todo = int(share * sum(len(e["Attribute"]) for e in events))
    edited = 0
    for event in events[1:]:
        for attr in event["Attribute"]:
            if edited >= todo:
                break
            value = f"{rnd.randint(11, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
            misp.edit_attribute(attr["uuid"], value=value, type="ip-dst")
            edited += 1
        if edited >= todo:
            break
    misp.delete_event(events[0]["uuid"])
    return edited


def run(size: int, out: Callable[[str], None]) -> None:
    generated = generate(size)
    with MispEmulator(events=generated) as misp:
        feed = parse_feed(yaml.safe_load(FEED.format(url=misp.url, page_size=5000)))
        state = IncrementalRefresh()
        previous: RenderResult | None = None

        def step(name: str, run: Callable[[FetchContext], RenderResult]) -> RenderResult:
            nonlocal previous
            requests, SENT[0] = len(misp.requests), 0
            ctx = FetchContext(now=int(time.time()), auth_key=misp.api_key)
            start = time.perf_counter()
            result = run(ctx)
            seconds = time.perf_counter() - start
            mode = state.last.mode if state.last is not None and name != "full fetch (no state)" else "full"
            made = misp.requests[requests:]
            data = sum(r.path.startswith(DATA_PATHS) for r in made)
            LAST_CHANGED[0] = _changed_files(previous, result)
            out(f"| {size:,} | {name} | {mode} | {data} ({len(made)}) | {SENT[0] / 1e6:,.2f} | "
                f"{seconds:.2f} | {LAST_CHANGED[0]} | {result.bundle.sha256[:12]} |")  # fmt: skip
            previous = result
            return result

        step("first sync", lambda ctx: refresh_and_render(feed, ctx, state))
        requests = len(misp.requests)
        step("refresh, MISP unchanged", lambda ctx: refresh_and_render(feed, ctx, state))
        unchanged = sum(r.path.startswith(DATA_PATHS) for r in misp.requests[requests:])
        unchanged_writes = LAST_CHANGED[0]
        edited = change(misp, generated, 0.01)
        time.sleep(1.1)  # MISP stamps whole seconds: the next index read must see the changes as past
        incremental = step(f"refresh after {edited:,} edits + 1 event deleted", lambda ctx: refresh_and_render(
            feed, ctx, state))  # fmt: skip
        full = step("full fetch (no state)", lambda ctx: fetch_and_render(feed, ctx))
        if full.bundle.sha256 != incremental.bundle.sha256:
            raise SystemExit(f"{size}: the incremental rules differ from a full fetch")
    ok = unchanged == 1 and unchanged_writes == 0
    out(
        f"- {size:,}: an unchanged MISP cost {unchanged} data request(s) and {unchanged_writes} written files "
        f"(goal: 1 and 0): {'met' if ok else 'NOT met'}; after the edits the incremental rules equal a full fetch"
    )


HEADER = """
## MISP's load per refresh: full against incremental (issue 14, goal 3)

Command: `.venv/bin/python bench/run.py` (or `bench/refresh.py` alone). Requests and body bytes as the MISP emulator
counted them; files changed = rules files whose bytes differ from the step before (what the operator writes). Seconds
are in one process with the emulator, which serves from the same interpreter: compare them with each other only.

| attributes | step | mode | data requests (all) | MB sent | seconds | files changed | rules hash |
|---:|---|---|---:|---:|---:|---:|---|"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    print(HEADER)
    for size in args.sizes:
        run(size, lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
