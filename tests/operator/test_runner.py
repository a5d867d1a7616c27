"""``falco-misp run``: the command line that starts the operator (parsing only; the handlers run in tests/k8s)."""

from __future__ import annotations

import pytest

from falco_misp.cli import build_parser
from falco_misp.runner import DEFAULT_LIVENESS, run_operator


def test_run_defaults_to_all_namespaces_with_liveness() -> None:
    args = build_parser().parse_args(["run"])
    assert args.func is run_operator
    assert (args.namespaces, args.all_namespaces, args.log_format) == ([], False, "full")
    assert args.liveness == DEFAULT_LIVENESS


def test_run_promises_no_leader_election(capsys: pytest.CaptureFixture[str]) -> None:
    # One replica, standalone: the chart has no peering CRDs or RBAC, so the CLI must not offer --peering.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--peering", "x"])
    assert "unrecognized arguments: --peering" in capsys.readouterr().err


def test_run_options() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "-n",
            "security",
            "--namespace",
            "team-*",
            "--log-format",
            "json",
            "--liveness",
            "",
            "--tick-seconds",
            "5",
        ]
    )
    assert args.namespaces == ["security", "team-*"]
    assert (args.log_format, args.liveness, args.tick_seconds) == ("json", "", 5.0)


def test_namespaces_and_all_namespaces_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "-n", "a", "-A"])
    assert "not allowed with argument" in capsys.readouterr().err
