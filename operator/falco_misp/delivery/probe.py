"""Reading each Falco pod's metrics over HTTP (a service): which rules files, with which sha256, it loaded.

One GET per ready pod (``http://<podIP>:<port><path>``), a few at a time, each bounded in time and size; a pod
that does not answer, or answers without the metric, is reported as unreachable with the cause, never raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import requests

from falco_misp.delivery.confirm import PodProbe, loaded_rules_files
from falco_misp.delivery.kube import PodInfo
from falco_misp.errors import SourceError
from falco_misp.sources.locations import read_body

PROBE_TIMEOUT = (2.0, 5.0)  # connect, read: a node's Falco answers its metrics in milliseconds
MAX_METRICS_BYTES = 4 * 1024 * 1024  # Falco's metrics text is a few KiB to a few hundred KiB
PARALLEL = 8


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # pod IPs are reached directly: no proxy from the environment
    return session


def probe_pod(pod: PodInfo, port: int, path: str, session: requests.Session | None = None) -> PodProbe:
    """What one Falco pod loaded, from its Prometheus endpoint."""
    if not pod.ready or not pod.ip:
        return PodProbe(pod.name, pod.ready and bool(pod.ip), None, "no pod IP")
    host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
    url = f"http://{host}:{port}{path}"
    own = session is None
    session = session or _session()
    try:
        response = session.get(url, timeout=PROBE_TIMEOUT, stream=True, allow_redirects=False)
        with response:
            if response.status_code != 200:
                return PodProbe(pod.name, True, None, f"HTTP {response.status_code} from {url}")
            text = read_body(response, MAX_METRICS_BYTES, url).decode("utf-8", "replace")
    except (requests.RequestException, SourceError) as exc:
        return PodProbe(pod.name, True, None, f"{type(exc).__name__} from {url}")
    finally:
        if own:
            session.close()
    try:
        files = loaded_rules_files(text)
    except ValueError:
        return PodProbe(pod.name, True, None, f"not Prometheus text from {url}")
    if not files:
        return PodProbe(pod.name, True, None, f"no falcosecurity_falco_sha256_rules_files_info from {url}")
    return PodProbe(pod.name, True, files)


def probe_pods(pods: Sequence[PodInfo], port: int, path: str) -> list[PodProbe]:
    """Every pod probed, a few at a time (a fleet of nodes must not take a sync's time)."""
    if not pods:
        return []
    with _session() as session, ThreadPoolExecutor(max_workers=min(PARALLEL, len(pods))) as pool:
        return list(pool.map(lambda p: probe_pod(p, port, path, session), pods))
