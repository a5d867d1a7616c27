"""Run a command's Python entry point in this fresh process and report its own peak RSS.

    python bench/measure.py falco-misp render ...   -> runs falco_misp.cli.main, then prints
    "peak_rss_kb=N" (VmHWM of this process) on stderr.

getrusage's ru_maxrss is not usable for a child of a large process: Linux carries the parent's high-water mark
across fork and exec. VmHWM belongs to the exec'd process's own memory map.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import falco_misp.sources.misp
from falco_misp.cli import main as cli_main

PREFETCH_ENV = "BENCH_PREFETCH_PAGES"  # the read-ahead depth to measure (0: the code path before issue 14's goal 4)


def peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def main() -> int:
    if sys.argv[1:2] != ["falco-misp"]:
        raise SystemExit("usage: measure.py falco-misp ARGS...")
    depth = os.environ.get(PREFETCH_ENV)
    if depth is not None:  # the bench compares depths; `falco-misp render` itself always uses the default
        falco_misp.sources.misp.DEFAULT_PREFETCH_PAGES = int(depth)
    code = cli_main(sys.argv[2:])
    print(f"peak_rss_kb={peak_rss_kb()}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
