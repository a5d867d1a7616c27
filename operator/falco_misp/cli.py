"""``falco-misp``: the command-line front door.

``falco-misp render --feed feed.yaml --out DIR`` fetches a feed's indicators and writes the Falco rules files
(or ConfigMap manifests) the operator would deliver, then prints a summary. Exit codes a cron job can trust:

- 0: rules written (or unchanged);
- 1: the source failed (unreachable, refused, bad answer) - nothing was written;
- 2: the feed file or the command line is wrong;
- 3: the indicators do not fit the configured output bounds (``falco.maxShards``) - nothing was written.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from falco_misp.delivery.configmaps import build_configmaps
from falco_misp.delivery.files import write_files
from falco_misp.errors import RenderError, SourceError, SpecError
from falco_misp.feed.model import Feed
from falco_misp.feed.parse import parse_feed
from falco_misp.pipeline import fetch_and_render
from falco_misp.rendering.summary import format_summary
from falco_misp.runner import add_max_response_bytes, add_run_command
from falco_misp.sources.locations import FetchContext

EXIT_OK, EXIT_SOURCE, EXIT_USAGE, EXIT_RENDER = 0, 1, 2, 3
# Client-side `kubectl apply` copies each object into an annotation, and all annotations of an object together may
# hold at most 262,144 bytes (measured on a real API server: reference/KUBERNETES.md): shards are up to 1,040,000 bytes.
APPLY_HINT = (
    "apply with: kubectl apply --server-side -f {out}  (plain `kubectl apply` fails on ConfigMaps over ~256 KiB: "
    "it copies them into an annotation limited to 262144 bytes)"
)


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so ConfigMap manifests stay readable."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_LiteralDumper.add_representer(str, _str_presenter)


def dump_manifest(obj: Any) -> bytes:
    """YAML for one manifest."""
    return yaml.dump(obj, Dumper=_LiteralDumper, sort_keys=False, width=10_000).encode()


def load_feed(path: Path) -> Feed:
    """Read and parse a feed file (a MispFeed manifest)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), f"cannot read the feed file: {exc.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError(str(path), f"not valid YAML: {exc}") from None
    feeds = [d for d in docs if isinstance(d, dict) and d.get("kind", "MispFeed") == "MispFeed"]
    if len(feeds) != 1:
        raise SpecError(str(path), f"expected exactly one MispFeed document, found {len(feeds)}")
    return parse_feed(feeds[0])


def _render(args: argparse.Namespace) -> int:
    feed = load_feed(args.feed)
    if args.format == "falco-values":  # from the spec alone: nothing is fetched or written
        # imported here: its metrics parser (prometheus_client) is 75-95 ms of every plain `render`'s start-up
        # (`python -X importtime -c 'import falco_misp.delivery.confirm'`)
        from falco_misp.delivery.confirm import falco_values  # noqa: PLC0415

        print(f"# falcosecurity/falco chart values for feed {feed.ref}: helm upgrade falco falcosecurity/falco -f -")
        print(falco_values(feed), end="")
        return EXIT_OK
    auth_key = os.environ.get(args.auth_key_env) if feed.spec.source.misp is not None else None
    if feed.spec.source.misp is not None and not auth_key:
        raise SpecError("--auth-key-env", f"set the MISP API key in the environment variable {args.auth_key_env}")
    ctx = FetchContext(
        now=int(time.time()),
        auth_key=auth_key,
        ca_bundle=args.ca_bundle,
        base_dir=args.feed.resolve().parent,
        max_response_bytes=args.max_response_bytes,
    )
    result = fetch_and_render(feed, ctx)
    prefix = feed.config_map_prefix
    if args.format == "files":
        files = {s.filename: s.content for s in result.bundle.shards}
        suffix = ".yaml"
    else:
        suffix = ".configmap.yaml"
        files = {f"{cm['metadata']['name']}{suffix}": dump_manifest(cm) for cm in build_configmaps(feed, result.bundle)}
    written = write_files(args.out, files, prefix, suffix)
    if not args.quiet:
        print(format_summary(feed, result.fetched, result.indicators, result.bundle))
        for path in written:
            print(f"wrote {path}")
        if args.format == "configmaps":
            print(APPLY_HINT.format(out=args.out))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="falco-misp", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render Falco rules from a feed file into a folder")
    render.add_argument("--feed", type=Path, required=True, help="MispFeed manifest (same spec as the resource)")
    render.add_argument("--out", type=Path, default=Path("falco-misp-rules"), help="output folder")
    render.add_argument(
        "--format",
        choices=("files", "configmaps", "falco-values"),
        default="files",
        help="Falco rules files, ConfigMap manifests for kubectl apply --server-side, or (printed, nothing fetched) "
        "the falcosecurity chart values that mount every shard of the feed",
    )
    render.add_argument(
        "--auth-key-env",
        default="MISP_AUTH_KEY",
        help="environment variable holding the MISP API key (default MISP_AUTH_KEY)",
    )
    render.add_argument("--ca-bundle", help="PEM CA bundle for the MISP server's certificate")
    add_max_response_bytes(render)
    render.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    render.set_defaults(func=_render)
    add_run_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``falco-misp`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except SpecError as exc:
        print(f"falco-misp: invalid feed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SourceError as exc:
        print(f"falco-misp: source failed ({exc.reason}): {exc.message}; nothing was written", file=sys.stderr)
        return EXIT_SOURCE
    except RenderError as exc:
        print(f"falco-misp: cannot render: {exc}; nothing was written", file=sys.stderr)
        return EXIT_RENDER
    return code


if __name__ == "__main__":
    sys.exit(main())
