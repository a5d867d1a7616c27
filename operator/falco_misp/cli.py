"""``falco-misp``: the command-line front door.

``falco-misp render --feed feed.yaml --out DIR`` fetches a feed's indicators and writes the Falco rules files
(or ConfigMap manifests) the operator would deliver, then prints a summary. ``falco-misp push --feed feed.yaml
--to REGISTRY/REPO[:TAG]`` renders the same files and pushes them as a falcoctl rulesfile OCI artifact (tags
``latest`` or TAG, and a version tag; nothing pushed when the registry already holds the same rules). Exit codes a
cron job can trust:

- 0: rules written or pushed (or unchanged);
- 1: the source failed (unreachable, refused, bad answer), or the registry did (unreachable, credentials refused,
  push refused) - nothing was written, the registry's tags still point to the last good rules;
- 2: the feed file or the command line is wrong;
- 3: the indicators do not fit the configured output bounds (``falco.maxShards``) - nothing was written.
- 4: ``diff --exit-code`` only: the fresh render's indicators differ from the folder's.

``falco-misp diff --feed feed.yaml --against DIR [--show N]`` fetches and renders like ``render`` and prints the
indicators added and removed, by kind, against the feed's rules files in DIR (written by ``render``); it writes
nothing (0 whatever the difference, unless ``--exit-code``; 1-3 as above).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from falco_misp.delivery.configmaps import build_configmaps
from falco_misp.delivery.files import write_files
from falco_misp.errors import RegistryError, RenderError, SourceError, SpecError

if TYPE_CHECKING:
    from falco_misp.delivery.registry import RegistryAuth
from falco_misp.feed.allowlist import AllowListNotFound, allow_list_documents, merge_allow_lists
from falco_misp.feed.model import Feed
from falco_misp.feed.parse import parse_feed
from falco_misp.pipeline import fetch_and_render
from falco_misp.rendering import changes
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


def with_allow_lists(feed: Feed, paths: Sequence[Path]) -> Feed:
    """The feed with the MispAllowLists in ``--allow-list`` files merged in (the operator's merge, same bytes)."""
    docs: list[Any] = []
    for path in paths:
        try:
            docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        except OSError as exc:
            raise SpecError("--allow-list", f"cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SpecError("--allow-list", f"{path}: not valid YAML: {exc}") from None
    try:
        return merge_allow_lists(feed, allow_list_documents(docs))
    except AllowListNotFound as exc:
        raise SpecError("--allow-list", f"{exc}; pass the files holding them with --allow-list FILE") from None


def add_allow_list_argument(parser: argparse.ArgumentParser) -> None:
    """``--allow-list FILE`` (repeatable): the MispAllowLists a feed names, as the operator reads them."""
    parser.add_argument(
        "--allow-list",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="MispAllowList manifests the feed names in spec.exclusions.allowLists (repeatable)",
    )


def _fetch_context(args: argparse.Namespace, feed: Feed, ca_bundle: str | None) -> FetchContext:
    """What ``render``, ``diff`` and ``push`` fetch with: the MISP key from ``--auth-key-env``, the feed's folder."""
    if feed.spec.source.misp is not None and feed.spec.source.misp.server_ref is not None:
        raise SpecError("spec.source.misp.serverRef", "names a server resource only the operator reads: give the "
                        "feed file source.misp.url (and the key in --auth-key-env) instead")  # fmt: skip
    auth_key = os.environ.get(args.auth_key_env) if feed.spec.source.misp is not None else None
    if feed.spec.source.misp is not None and not auth_key:
        raise SpecError("--auth-key-env", f"set the MISP API key in the environment variable {args.auth_key_env}")
    return FetchContext(
        now=int(time.time()),
        auth_key=auth_key,
        ca_bundle=ca_bundle,
        base_dir=args.feed.resolve().parent,
        max_response_bytes=args.max_response_bytes,
    )


def _add_feed_arguments(parser: argparse.ArgumentParser, ca_flag: str = "--ca-bundle") -> None:
    """The options ``render``, ``diff`` and ``push`` share: the feed, its allow-lists and how its source is read."""
    parser.add_argument("--feed", type=Path, required=True, help="MispFeed manifest (same spec as the resource)")
    add_allow_list_argument(parser)
    parser.add_argument(
        "--auth-key-env",
        default="MISP_AUTH_KEY",
        help="environment variable holding the MISP API key (default MISP_AUTH_KEY)",
    )
    parser.add_argument(ca_flag, help="PEM CA bundle for the MISP server's certificate")
    add_max_response_bytes(parser)


def _render(args: argparse.Namespace) -> int:
    feed = load_feed(args.feed)
    if args.format == "falco-values":  # from the spec alone: nothing is fetched or written
        # imported here: its metrics parser (prometheus_client) is 75-95 ms of every plain `render`'s start-up
        # (`python -X importtime -c 'import falco_misp.delivery.confirm'`)
        from falco_misp.delivery.confirm import falco_values  # noqa: PLC0415

        print(f"# falcosecurity/falco chart values for feed {feed.ref}: helm upgrade falco falcosecurity/falco -f -")
        print(falco_values(feed), end="")
        return EXIT_OK
    feed = with_allow_lists(feed, args.allow_list)  # the MispAllowLists it names, merged as the operator does
    result = fetch_and_render(feed, _fetch_context(args, feed, args.ca_bundle))
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


def _registry_auth(args: argparse.Namespace, registry: str) -> RegistryAuth | None:
    """Credentials for ``push``: ``--docker-config`` if given, else the two environment variables if set."""
    from falco_misp.delivery import registry as oci  # noqa: PLC0415 - see _push

    if args.docker_config is not None:
        try:
            text = args.docker_config.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError("--docker-config", f"cannot read {args.docker_config}: {exc.strerror}") from None
        try:
            auth = oci.auth_from_docker_config(text, registry)
        except RegistryError as exc:
            raise SpecError("--docker-config", f"{args.docker_config}: {exc.message}") from None
        if auth is None:
            raise SpecError("--docker-config", f"{args.docker_config} holds no credentials for {registry}")
        return auth
    username, password = os.environ.get(args.username_env), os.environ.get(args.password_env)
    if bool(username) != bool(password):
        raise SpecError(
            "--username-env/--password-env", f"set both {args.username_env} and {args.password_env}, or neither"
        )
    return oci.RegistryAuth(username=username, password=password) if username and password else None


def _push(args: argparse.Namespace) -> int:
    """``falco-misp push``: fetch and render exactly like ``render``, then push the rulesfile artifact."""
    # imported here: requests, tarfile and gzip are ~0.3 s of every other command's start-up (python -X importtime)
    from falco_misp.delivery import registry as oci  # noqa: PLC0415
    from falco_misp.delivery.artifact import build_artifact  # noqa: PLC0415

    try:
        reference = oci.parse_reference(args.to)
    except RegistryError as exc:
        raise SpecError("--to", exc.message) from None
    if args.ca_bundle is not None and not Path(args.ca_bundle).is_file():
        raise SpecError("--ca-bundle", f"{args.ca_bundle} is not a readable file")
    if not args.timeout > 0:
        raise SpecError("--timeout", f"{args.timeout} is not a positive number of seconds")
    feed = with_allow_lists(load_feed(args.feed), args.allow_list)
    auth = _registry_auth(args, reference.registry)
    result = fetch_and_render(feed, _fetch_context(args, feed, args.misp_ca_bundle))
    artifact = build_artifact(feed, result.bundle)
    target = oci.RegistryTarget(
        reference=reference,
        plain_http=args.plain_http,
        verify_tls=not args.insecure_skip_verify,
        ca_bundle=args.ca_bundle,
        timeout_seconds=args.timeout,
    )
    pushed = oci.push_artifact(target, artifact, auth)
    if not args.quiet:
        print(format_summary(feed, result.fetched, result.indicators, result.bundle))
        repo = f"{reference.registry}/{reference.repository}"
        state = "pushed" if pushed.pushed else "unchanged (the registry already holds these rules; nothing pushed)"
        print(f"{state}: {repo}@{pushed.digest}")
        print(f"tags: {', '.join(pushed.tags)}")
    return EXIT_OK


def _add_push_command(sub: Any) -> None:
    """``falco-misp push``: the parser block."""
    push = sub.add_parser("push", help="render a feed and push the rules as a falcoctl rulesfile OCI artifact")
    _add_feed_arguments(push, ca_flag="--misp-ca-bundle")
    push.add_argument(
        "--to",
        required=True,
        metavar="REGISTRY/REPO[:TAG]",
        help="where to push: tags TAG (default latest) and the version tag 1.0.0-rules-<rules hash>",
    )
    push.add_argument("--plain-http", action="store_true", help="speak HTTP to the registry instead of HTTPS")
    push.add_argument("--ca-bundle", help="PEM CA bundle for the registry's certificate")
    push.add_argument(
        "--insecure-skip-verify", action="store_true", help="do not verify the registry's TLS certificate"
    )
    push.add_argument(
        "--username-env",
        default="REGISTRY_USERNAME",
        help="environment variable holding the registry user name (default REGISTRY_USERNAME)",
    )
    push.add_argument(
        "--password-env",
        default="REGISTRY_PASSWORD",
        help="environment variable holding the registry password or token (default REGISTRY_PASSWORD)",
    )
    push.add_argument(
        "--docker-config",
        type=Path,
        help="docker config JSON with the registry's credentials (e.g. ~/.docker/config.json); replaces the "
        "environment variables",
    )
    push.add_argument("--timeout", type=float, default=30.0, help="seconds for each registry request (default 30)")
    push.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    push.set_defaults(func=_push)


# ---------------------------------------------------------------------------------- diff (issue 17, item 2)
EXIT_DIFFERENT = 4
"""``diff --exit-code``: the fresh render's indicators differ from the folder's (like ``git diff --exit-code``)."""
_CSAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # a ConfigMap manifest holds up to ~1 MB


def _against(folder: Path, feed: Feed) -> dict[str, bytes]:
    """This feed's rules files in ``folder`` (``<prefix>-<n>.yaml``, or the rules inside ``<prefix>-<n>.configmap.yaml``
    manifests), by file name; other feeds' files and anything else are ignored."""
    if not folder.is_dir():
        raise SpecError("--against", f"{folder} is not a folder")
    prefix = re.escape(feed.config_map_prefix)
    rules, manifests = re.compile(prefix + r"-[0-9]+\.yaml"), re.compile(prefix + r"-[0-9]+\.configmap\.yaml")
    files: dict[str, bytes] = {}
    for path in sorted(folder.iterdir()):
        if rules.fullmatch(path.name):
            files[path.name] = path.read_bytes()
        elif manifests.fullmatch(path.name):
            try:
                manifest = yaml.load(path.read_bytes(), Loader=_CSAFE_LOADER)  # noqa: S506 - a safe loader
            except yaml.YAMLError:
                raise SpecError("--against", f"{path}: not valid YAML") from None
            data = manifest.get("data") if isinstance(manifest, dict) else None
            for key, value in (data or {}).items() if isinstance(data, dict) else ():
                if isinstance(value, str):
                    files[f"{path.name}:{key}"] = value.encode()
    return files


def _diff(args: argparse.Namespace) -> int:
    """``falco-misp diff``: a fresh render's indicators against a folder of rules files; nothing is written."""
    feed = with_allow_lists(load_feed(args.feed), args.allow_list)
    if args.show < 0:
        raise SpecError("--show", f"must be 0 or more, got {args.show}")
    old_files = _against(args.against, feed)
    result = fetch_and_render(feed, _fetch_context(args, feed, args.ca_bundle))
    try:
        old = changes.read_rules(old_files, feed.rule_prefix)
    except changes.UnreadableRules as exc:
        raise SpecError("--against", str(exc)) from None
    new = changes.rendered_indicators(feed, result.indicators)
    change = changes.diff_indicators(old, new)
    print(f"feed {feed.ref}: a fresh render against {args.against} ({len(old_files)} rules file(s) of this feed): "
          f"{change.summary()}")  # fmt: skip
    print(f"indicators: {sum(old.counts().values())} in the folder, {sum(new.counts().values())} rendered")
    for line in changes.describe_change(change, args.show):
        print(line)
    same_bytes = {s.filename: s.content for s in result.bundle.shards} == {
        name: content for name, content in old_files.items() if ":" not in name
    }
    if not change and not same_bytes:
        print("the rules files differ in other ways (rule text, priority, tags, layout or the format of the folder)")
    return EXIT_DIFFERENT if change and args.exit_code else EXIT_OK


def _add_diff_command(sub: Any) -> None:
    """``falco-misp diff``: the parser block."""
    diff = sub.add_parser("diff", help="show the indicators a fresh render adds and removes against a rules folder")
    _add_feed_arguments(diff)
    diff.add_argument(
        "--against", type=Path, required=True, help="folder of this feed's rules files (render --format files or "
        "configmaps); read only"
    )  # fmt: skip
    diff.add_argument("--show", type=int, default=10, help="values shown per kind and sign (default 10; 0: counts)")
    diff.add_argument("--exit-code", action="store_true", help=f"exit {EXIT_DIFFERENT} when indicators differ")
    diff.set_defaults(func=_diff)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="falco-misp", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render Falco rules from a feed file into a folder")
    _add_feed_arguments(render)
    render.add_argument("--out", type=Path, default=Path("falco-misp-rules"), help="output folder")
    render.add_argument(
        "--format",
        choices=("files", "configmaps", "falco-values"),
        default="files",
        help="Falco rules files, ConfigMap manifests for kubectl apply --server-side, or (printed, nothing fetched) "
        "the falcosecurity chart values that mount every shard of the feed",
    )
    render.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    render.set_defaults(func=_render)
    add_run_command(sub)
    _add_diff_command(sub)
    _add_push_command(sub)
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
    except RegistryError as exc:
        print(f"falco-misp: registry failed ({exc.reason}): {exc.message}; nothing was pushed", file=sys.stderr)
        return EXIT_SOURCE
    return code


if __name__ == "__main__":
    sys.exit(main())
