"""The pure pipeline alone, for bench/run.py: attributes in memory -> filters -> indicators -> shards.

python bench/pure.py SIZE   ->  prints "seconds=... bytes=... shards=... sha256=..."
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from measure import peak_rss_kb
from run import FEED, generate

from falco_misp.feed.parse import parse_feed
from falco_misp.pipeline import render_attributes
from falco_misp.sources.attributes import attributes_from_document
from falco_misp.sources.filters import select


def main() -> None:
    size = int(sys.argv[1])
    feed = parse_feed(yaml.safe_load(FEED.format(url="https://unused.example", page_size=5000)))
    attributes = list(attributes_from_document(generate(size)))
    start = time.perf_counter()
    result = render_attributes(feed, select(attributes, feed.spec.filters, int(time.time())))
    seconds = time.perf_counter() - start
    # the same digest bench/run.py takes over the written files: contents in file-name order
    digest = hashlib.sha256(
        b"".join(s.content for s in sorted(result.bundle.shards, key=lambda s: s.filename))
    ).hexdigest()
    print(f"seconds={seconds:.3f} bytes={result.bundle.total_bytes} shards={len(result.bundle.shards)} sha256={digest}")
    print(f"peak_rss_kb={peak_rss_kb()}", file=sys.stderr)


if __name__ == "__main__":
    main()
