"""``falco-misp run``: start the operator (an entry point).

Watches MispFeeds in the given namespaces (or all), serves kopf's liveness endpoint, logs as text or JSON.
The same handlers run under ``kopf run -m falco_misp.kopf_main`` for those who prefer kopf's own CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from falco_misp.errors import SpecError
from falco_misp.feed.policy import Policy, parse_policy
from falco_misp.reporting import TOKEN_ENV  # the package only: aiohttp loads with `run`, not with `render`

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
DEFAULT_METRICS_PORT = 9090


def add_run_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run`` subcommand to the ``falco-misp`` parser."""
    run = sub.add_parser("run", help="run the operator: keep Falco's rules in step with every MispFeed")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        metavar="NS",
        help="watch MispFeeds in this namespace (repeatable; kopf's glob patterns such as 'team-*' work)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch MispFeeds in every namespace (the default)"
    )
    run.add_argument(
        "--log-format",
        choices=("plain", "full", "json"),
        default="full",
        help="plain: messages only; full: with time, logger and level (default); json: one object per line",
    )
    run.add_argument("--verbose", action="store_true", help="debug logging (never shows secrets)")
    run.add_argument(
        "--liveness",
        default=DEFAULT_LIVENESS,
        metavar="URL",
        help=f"liveness endpoint to serve (default {DEFAULT_LIVENESS}; empty to disable)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        metavar="PORT",
        help=f"serve Prometheus metrics on this port (default {DEFAULT_METRICS_PORT}; 0 to disable)",
    )
    run.add_argument(
        "--tick-seconds",
        type=float,
        default=30.0,
        help="how often each feed checks whether a refresh, a Secret change or a deferred rollout is due",
    )
    run.add_argument(
        "--operator-namespace",
        default="",
        metavar="NS",
        help="the operator's own namespace, where ClusterMispServers' Secrets live (default: $POD_NAMESPACE, else the "
        "service account's namespace, else falco-misp)",
    )
    add_max_response_bytes(run)
    _add_policy_options(run)
    _add_alert_options(run)
    run.set_defaults(func=run_operator)


def _add_policy_options(run: argparse.ArgumentParser) -> None:
    """The administrator's policy (issue 15): where feeds may write and where the operator may connect."""
    policy = run.add_argument_group("policy", "what feeds may ask of the operator (docs/security.md)")
    policy.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="YAML or JSON policy: targets (which feed namespaces may write into which Falco namespaces), ceilings "
        "(maxIndicators, maxNetworks, maxDomains, minPrefixV4/V6 per feed), egress (allowedHosts, allowLoopback, "
        "allowLinkLocal, allowPrivate). Default: any namespace, any host, never loopback/link-local addresses",
    )
    policy.add_argument(
        "--policy-json",
        metavar="JSON",
        help="the same document inline (what the Helm chart passes, so a changed policy rolls the operator)",
    )
    policy.add_argument(
        "--egress-allow-loopback",
        action="store_true",
        help="let the operator connect to loopback addresses (a MISP in the same pod, tests); overrides the file",
    )


def load_policy(args: argparse.Namespace) -> Policy:
    """The policy of ``--policy FILE`` or ``--policy-json`` and ``--egress-allow-loopback`` (raises SpecError,
    OSError or a YAML error)."""
    doc = yaml.safe_load(args.policy.read_text(encoding="utf-8")) if args.policy else None
    if args.policy_json:
        if doc is not None:
            raise SpecError("--policy-json", "give --policy FILE or --policy-json, not both")
        doc = yaml.safe_load(args.policy_json)  # JSON is YAML
    policy = parse_policy(doc)
    if args.egress_allow_loopback:
        policy = dataclasses.replace(policy, egress=dataclasses.replace(policy.egress, allow_loopback=True))
    return policy


# ------------------------------------------------------------------ bounded fetches (issue 11), `run` and `render`
_BYTE_SIZE = re.compile(r"^([0-9]+)\s*(|B|KiB|MiB|GiB|K|M|G)$", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30}
MIN_RESPONSE_BYTES = 1024


def byte_size(value: str) -> int:
    """``268435456``, ``256MiB``, ``64KiB``, ``1GiB`` (K, M, G are binary too) -> bytes, at least 1 KiB."""
    m = _BYTE_SIZE.match(value.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"expected a size such as 268435456, 256MiB or 1GiB, got {value!r}")
    size = int(m.group(1)) * _BYTE_UNITS[m.group(2).lower()]
    if size < MIN_RESPONSE_BYTES:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_RESPONSE_BYTES} bytes, got {value!r}")
    return size


def add_max_response_bytes(parser: argparse.ArgumentParser) -> None:
    """``--max-response-bytes``: the largest body read from a source (each MISP page, feed file, export, list)."""
    from falco_misp.sources.locations import DEFAULT_MAX_RESPONSE_BYTES  # noqa: PLC0415

    parser.add_argument(
        "--max-response-bytes",
        type=byte_size,
        default=DEFAULT_MAX_RESPONSE_BYTES,
        metavar="SIZE",
        help="largest answer read from a source: each MISP page, static feed file, export or text list (bytes, or "
        "with KiB/MiB/GiB; default 256MiB). A larger one fails the fetch (ResponseTooLarge) and the last good rules "
        "stay",
    )


def run_operator(args: argparse.Namespace) -> int:
    """Run the operator until it is stopped (SIGTERM/SIGINT)."""
    # kopf and the kubernetes client load in ~0.7 s: only `run` pays for them, not `falco-misp render`.
    import kopf  # noqa: PLC0415

    from falco_misp.controller.feeds import Tuning  # noqa: PLC0415
    from falco_misp.controller.handlers import register  # noqa: PLC0415
    from falco_misp.metrics import LiveMetrics, Metrics  # noqa: PLC0415

    logging.getLogger().handlers.clear()  # cli.main's basicConfig handler would print every line twice
    formats = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}
    kopf.configure(log_format=formats[args.log_format], verbose=args.verbose)
    registry = kopf.get_default_registry()
    try:
        policy = load_policy(args)
    except (OSError, yaml.YAMLError, SpecError) as exc:
        print(f"falco-misp run: policy: {exc}", file=sys.stderr)
        return 2
    tuning = Tuning(tick_seconds=args.tick_seconds, max_response_bytes=args.max_response_bytes, policy=policy)
    register(registry, tuning)
    memo = kopf.Memo()
    if args.operator_namespace:
        memo["operator_namespace"] = args.operator_namespace  # handlers.configure makes the client with it
    if args.metrics_port:
        memo["metrics"] = Metrics()
        memo["metrics"].serve(args.metrics_port)
        memo["live_metrics"] = LiveMetrics(memo["metrics"].registry)  # ZeroMQ live updates (issue 7)
    if args.alerts_port:
        problem = _setup_alerts(args, registry, memo)
        if problem:
            print(f"falco-misp run: {problem}", file=sys.stderr)
            return 2
    kopf.run(
        registry=registry,
        memo=memo,
        clusterwide=not args.namespaces,
        namespaces=args.namespaces,
        # One replica (the chart's Deployment uses Recreate): no kopf peering, which would need its own CRDs and RBAC.
        standalone=True,
        liveness_endpoint=args.liveness or None,
    )
    return 0


# ------------------------------------------------------------------------- alerts -> MISP sightings (issue 5)
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$")


def _cluster_name(value: str) -> str:
    if value and not _CLUSTER_NAME.match(value):
        raise argparse.ArgumentTypeError("letters, digits, '.', '_' and '-', at most 63 characters")
    return value


def _add_alert_options(run: argparse.ArgumentParser) -> None:
    alerts = run.add_argument_group(
        "alert endpoint (Falco alerts -> MISP sightings and events, for feeds with spec.reporting on)"
    )
    alerts.add_argument(
        "--alerts-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve POST /alerts for Falco's http_output and Falcosidekick's webhook on this port (default 0: off)",
    )
    alerts.add_argument("--alerts-address", default="0.0.0.0", metavar="ADDR", help="address to bind (default all)")  # noqa: S104
    alerts.add_argument(
        "--alerts-token-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the token senders must present (a mounted Secret, re-read when it changes); default: "
        f"${TOKEN_ENV}. Bearer, or the password of Basic auth (https://falco:TOKEN@host:port/alerts for Falco)",
    )
    alerts.add_argument(
        "--alerts-max-body-bytes", type=int, default=64 * 1024, metavar="N", help="largest body (default 65536)"
    )
    alerts.add_argument(
        "--alerts-rate", type=float, default=50.0, metavar="N", help="requests per second, per sender (default 50)"
    )
    alerts.add_argument(
        "--alerts-burst", type=int, default=200, metavar="N", help="requests at once, per sender (default 200)"
    )
    alerts.add_argument(
        "--alerts-max-senders",
        type=int,
        default=10_000,
        metavar="N",
        help="senders (peer addresses) whose rate is tracked, least recently seen forgotten first (default 10000)",
    )
    alerts.add_argument(
        "--alerts-tls-cert",
        type=Path,
        metavar="FILE",
        help="serve HTTPS (TLS 1.2+) with this PEM certificate (chain), re-read when it changes (a mounted Secret)",
    )
    alerts.add_argument("--alerts-tls-key", type=Path, metavar="FILE", help="the PEM key of --alerts-tls-cert")
    alerts.add_argument(
        "--cluster-name",
        type=_cluster_name,
        default="",
        metavar="NAME",
        help="names this cluster in sighting sources (<cluster>/<node>) and in the daily MISP event",
    )
    alerts.add_argument(
        "--sightings-queue",
        type=int,
        default=10_000,
        metavar="N",
        help="reports waiting for MISP at most; more are dropped and counted (default 10000)",
    )


def _setup_alerts(args: argparse.Namespace, registry: Any, memo: Any) -> str | None:
    """Put the reporter and the endpoint in the memo (kopf's startup/cleanup handlers start and stop them).

    Returns what is wrong with the options (no usable token, TLS half configured), before anything starts.
    """
    from falco_misp.controller.handlers import register_alerts  # noqa: PLC0415
    from falco_misp.metrics import ReportingMetrics  # noqa: PLC0415
    from falco_misp.reporting.intake import MIN_TOKEN_CHARS, AlertIntake, IntakeConfig, TokenSource  # noqa: PLC0415
    from falco_misp.reporting.sightings import Reporter, ReporterConfig  # noqa: PLC0415

    token = None if args.alerts_token_file else os.environ.get(TOKEN_ENV)
    if TokenSource(token=token, path=args.alerts_token_file).current() is None:
        where = f"the file {args.alerts_token_file}" if args.alerts_token_file else f"${TOKEN_ENV}"
        return f"--alerts-port needs a token of at least {MIN_TOKEN_CHARS} characters in {where}"
    if (args.alerts_tls_cert is None) != (args.alerts_tls_key is None):
        return "--alerts-tls-cert and --alerts-tls-key go together"
    if args.alerts_max_senders < 1:
        return "--alerts-max-senders must be at least 1"
    metrics = ReportingMetrics(memo["metrics"].registry) if "metrics" in memo else None
    reporter = Reporter(ReporterConfig(cluster=args.cluster_name, max_queue=args.sightings_queue), metrics=metrics)
    config = IntakeConfig(
        port=args.alerts_port,
        address=args.alerts_address,
        token_file=args.alerts_token_file,
        token=token,
        max_body_bytes=args.alerts_max_body_bytes,
        rate_per_second=args.alerts_rate,
        burst=args.alerts_burst,
        max_senders=args.alerts_max_senders,
        tls_cert=args.alerts_tls_cert,
        tls_key=args.alerts_tls_key,
    )
    memo["reporter"] = reporter
    memo["intake"] = AlertIntake(config, reporter.receive, metrics=metrics)
    register_alerts(registry)
    return None
