"""``falco-misp run`` as a real process: kubeconfig login, JSON logs, liveness and metrics endpoints, a sync,
clean SIGTERM exit."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import kmock
import pytest
from kubetest import OPERATOR_TEST, configmaps, create, daemonset_body, eventually, feed_body, ips, status_of

from emulators.misp import MispEmulator

pytestmark = OPERATOR_TEST


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def http_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def test_run_command(kmock: kmock.KubernetesEmulator, misp: MispEmulator, tmp_path: Path) -> None:
    misp.texts["ipsum.txt"] = "".join(f"{ip}\t5\n" for ip in ips(3))
    await create(kmock, daemonset_body(mounts=("misp-falco-ipsum",)))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url)}}],
                "users": [{"name": "test", "user": {"token": "unused"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    port, metrics_port = free_port(), free_port()
    falco_misp = Path(sys.executable).with_name("falco-misp")
    proc = await asyncio.create_subprocess_exec(
        str(falco_misp), "run", "--log-format", "json", "--liveness", f"http://127.0.0.1:{port}/healthz",
        "--metrics-port", str(metrics_port), "--egress-allow-loopback",  # the emulator listens on 127.0.0.1
        env={"KUBECONFIG": str(kubeconfig), "PATH": str(falco_misp.parent)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        spec = {
            "source": {"text": {"url": f"{misp.url}/text/ipsum.txt", "minScore": 3}},
            "falco": {"namespace": "falco", "rollout": "Restart"},  # the metrics count one rollout
        }
        await create(kmock, feed_body("ipsum", "falco", spec))
        await eventually(
            lambda: "misp-falco-ipsum-0" in configmaps(kmock, "falco"), timeout=20, what="ConfigMap written"
        )
        # Each address of a plain list stands for ip-src and ip-dst: inbound and outbound entries.
        await eventually(lambda: status_of(kmock, "falco", "ipsum")["indicators"]["total"] == 6, what="status")
        answer = await http_get(port, "/healthz")
        assert answer.startswith(b"HTTP/1.0 200")
        metrics = (await http_get(metrics_port, "/metrics")).decode()
        assert 'falco_misp_indicators{feed="falco/ipsum",kind="inbound_addresses"} 3.0' in metrics
        assert 'falco_misp_sync_duration_seconds_count{feed="falco/ipsum"}' in metrics
        assert 'falco_misp_rollouts_total{feed="falco/ipsum"} 1.0' in metrics
        assert 'falco_misp_last_success_timestamp_seconds{feed="falco/ipsum"}' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    assert lines and all("message" in line and "severity" in line for line in lines)
    assert any("SIGTERM" in line["message"] for line in lines)


@pytest.mark.parametrize("argv", [["run", "--help"]])
def test_run_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from falco_misp.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "--log-format" in capsys.readouterr().out
