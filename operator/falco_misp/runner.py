"""``falco-misp run``: start the operator (an entry point).

Watches MispFeeds in the given namespaces (or all), serves kopf's liveness endpoint, logs as text or JSON.
The same handlers run under ``kopf run -m falco_misp.kopf_main`` for those who prefer kopf's own CLI.
"""

from __future__ import annotations

import argparse
import logging

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
        "--peering",
        metavar="NAME",
        help="kopf peering object for leader election between replicas (default: standalone, one replica)",
    )
    run.add_argument(
        "--tick-seconds",
        type=float,
        default=30.0,
        help="how often each feed checks whether a refresh, a Secret change or a deferred rollout is due",
    )
    run.set_defaults(func=run_operator)


def run_operator(args: argparse.Namespace) -> int:
    """Run the operator until it is stopped (SIGTERM/SIGINT)."""
    # kopf and the kubernetes client load in ~0.7 s: only `run` pays for them, not `falco-misp render`.
    import kopf  # noqa: PLC0415

    from falco_misp.handlers import Tuning, register  # noqa: PLC0415
    from falco_misp.metrics import Metrics  # noqa: PLC0415

    logging.getLogger().handlers.clear()  # cli.main's basicConfig handler would print every line twice
    formats = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}
    kopf.configure(log_format=formats[args.log_format], verbose=args.verbose)
    registry = kopf.get_default_registry()
    register(registry, Tuning(tick_seconds=args.tick_seconds))
    memo = kopf.Memo()
    if args.metrics_port:
        memo["metrics"] = Metrics()
        memo["metrics"].serve(args.metrics_port)
    kopf.run(
        registry=registry,
        memo=memo,
        clusterwide=not args.namespaces,
        namespaces=args.namespaces,
        standalone=args.peering is None,
        peering_name=args.peering,
        liveness_endpoint=args.liveness or None,
    )
    return 0
