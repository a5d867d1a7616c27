"""The fetch alone, for bench/run.py: every MISP page through PyMISP (requests + JSON), nothing processed.

python bench/fetch_only.py FEED.yaml   ->  prints "seconds=... attributes=..." (the key from MISP_AUTH_KEY)

What the emulator and the HTTP client cost by themselves: the end-to-end rows minus this is our pipeline's share.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import peak_rss_kb

from falco_misp.cli import load_feed
from falco_misp.sources.locations import FetchContext
from falco_misp.sources.misp import fetch_pages, misp_api


def main() -> None:
    feed = load_feed(Path(sys.argv[1]))
    ctx = FetchContext(now=int(time.time()), auth_key=os.environ["MISP_AUTH_KEY"])
    start = time.perf_counter()
    rows = sum(len(page.rows) for page in fetch_pages(feed, ctx, misp_api(feed, ctx)))
    print(f"seconds={time.perf_counter() - start:.3f} attributes={rows}")
    print(f"peak_rss_kb={peak_rss_kb()}", file=sys.stderr)


if __name__ == "__main__":
    main()
