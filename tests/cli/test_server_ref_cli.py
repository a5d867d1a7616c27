"""``falco-misp render`` and a feed naming a server resource (issue 15): without a cluster there is nothing to resolve
``serverRef`` against, so the command refuses it (exit 2, the field named), writes nothing and contacts nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from falco_misp.cli import main
from helpers import REPO


def test_render_refuses_a_server_ref(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MISP_AUTH_KEY", "a-key")
    out = tmp_path / "out"
    assert main(["render", "--feed", str(REPO / "examples/cluster-misp-server.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "spec.source.misp.serverRef" in err and "source.misp.url" in err
    assert not out.exists()
