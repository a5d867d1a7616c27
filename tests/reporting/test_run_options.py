"""``falco-misp run --alerts-*``: options, and the wiring into kopf's memo and registry (no operator started)."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest
from reportkit import TOKEN

from falco_misp import runner
from falco_misp.cli import build_parser
from falco_misp.metrics import Metrics
from falco_misp.reporting.intake import AlertIntake
from falco_misp.reporting.sightings import Reporter


def test_alert_options_default_to_off() -> None:
    args = build_parser().parse_args(["run"])
    assert args.alerts_port == 0
    assert (args.alerts_address, args.alerts_token_file, args.cluster_name) == ("0.0.0.0", None, "")
    assert (args.alerts_max_body_bytes, args.alerts_rate, args.alerts_burst, args.sightings_queue) == (
        65536, 50.0, 200, 10_000,
    )  # fmt: skip


def test_alert_options() -> None:
    args = build_parser().parse_args(
        ["run", "--alerts-port", "8443", "--alerts-token-file", "/var/run/secrets/falco-misp/token",
         "--alerts-tls-cert", "/tls/tls.crt", "--alerts-tls-key", "/tls/tls.key", "--cluster-name", "prod-eu",
         "--alerts-rate", "5", "--alerts-burst", "10", "--sightings-queue", "100", "--alerts-max-body-bytes", "1024"]
    )  # fmt: skip
    assert args.alerts_port == 8443
    assert args.alerts_token_file == Path("/var/run/secrets/falco-misp/token")
    assert (args.cluster_name, args.alerts_rate, args.alerts_burst, args.sightings_queue) == ("prod-eu", 5, 10, 100)


def test_cluster_name_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--cluster-name", "prod eu"])
    assert "--cluster-name" in capsys.readouterr().err


def test_setup_puts_reporter_and_endpoint_in_the_memo(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    args = build_parser().parse_args(
        ["run", "--alerts-port", "8443", "--alerts-token-file", str(token), "--cluster-name", "prod"]
    )
    registry = kopf.OperatorRegistry()
    memo = kopf.Memo(metrics=Metrics())
    assert runner._setup_alerts(args, registry, memo) is None
    assert isinstance(memo["reporter"], Reporter) and memo["reporter"].config.cluster == "prod"
    assert isinstance(memo["intake"], AlertIntake) and memo["intake"].config.port == 8443
    assert memo["reporter"].metrics is not None  # registered next to the operator's metrics
    ids = {h.id for h in registry._activities.get_all_handlers()}
    assert {"alerts"} <= ids


def test_setup_refuses_to_start_without_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runner.TOKEN_ENV, raising=False)
    args = build_parser().parse_args(["run", "--alerts-port", "8443"])
    assert "needs a token" in (runner._setup_alerts(args, kopf.OperatorRegistry(), kopf.Memo()) or "")
    monkeypatch.setenv(runner.TOKEN_ENV, TOKEN)
    assert runner._setup_alerts(args, kopf.OperatorRegistry(), kopf.Memo()) is None
    args = build_parser().parse_args(["run", "--alerts-port", "8443", "--alerts-tls-cert", str(tmp_path / "c")])
    assert "go together" in (runner._setup_alerts(args, kopf.OperatorRegistry(), kopf.Memo()) or "")
