"""Resource use of a served model version: CPU, memory, replicas, request rate, and cost per 1,000 predictions.

Two sources, one answer (:func:`resource_use`):

* **a laptop** (no Prometheus): the model server processes of the version on this machine — the ones
  ``python -m serving predictor|transformer`` runs (``skiff serve``, the canary router's servers) — found by
  their command line; CPU is the process's CPU seconds over its life (cores in use, on average), memory its
  resident set, the request rate its ``skiff_requests_total`` (read from its ``/metrics``) over its life;
* **a cluster**: Prometheus, with the queries of :func:`promql` — cAdvisor's
  ``container_cpu_usage_seconds_total`` and ``container_memory_working_set_bytes`` of the predictor
  container, joined on ``(namespace, pod)`` with kube-state-metrics' ``kube_pod_labels`` of the version's
  pods (labels ``serving.kserve.io/inferenceservice`` and ``skiff.io/version``, which the InferenceService
  builder sets; kube-state-metrics must allow them: ``--metric-labels-allowlist=pods=[...]``), the replicas
  as those pods, and the request rate from the predictor's own ``skiff_requests_total``, over ``window``.

Cost per 1,000 predictions = node price per hour × the share of a node the version takes (the larger of
its CPU share and its memory share of the node) ÷ thousands of predictions per hour. The node price comes
from the environment file (``node_price_per_hour``), else the settings; no price, no cost (None). On a
laptop the node is this machine.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import TYPE_CHECKING, Any

from skiff.errors import SourceError, UsageError

if TYPE_CHECKING:
    import httpx

    from skiff.config import Settings

__all__ = ["resource_use", "promql", "local_servers", "cost_per_1000"]

_REQUESTS_ANY = re.compile(r"^skiff_requests_total\{([^}]*)\} ([\d.e+]+)$", re.M)


def _seconds(window: dt.timedelta | float | int) -> float:
    s = window.total_seconds() if isinstance(window, dt.timedelta) else float(window)
    if s <= 0:
        raise UsageError(f"the window must be positive, got {s} s")
    return s


def cost_per_1000(price_per_hour: float | None, node_share: float, requests_per_s: float) -> float | None:
    """Cost of 1,000 predictions: a node's price per hour × the share of it in use ÷ thousands per hour."""
    if price_per_hour is None or requests_per_s <= 0:
        return None
    return price_per_hour * node_share / (requests_per_s * 3600 / 1000)


# -- a laptop --------------------------------------------------------------------------------------------
def local_servers(model: str, version: int | None = None) -> list[Any]:
    """The ``psutil.Process`` of every local model server serving ``model`` (and ``version``)."""
    import psutil  # type: ignore[import-untyped]  # no stubs in the environment

    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "serving" not in cmd or not ({"predictor", "transformer"} & set(cmd)):
            continue
        i = cmd.index("serving")
        args = cmd[i + 1:]
        name = args[1] if args[:1] == ["predictor"] and len(args) > 1 else _flag(args, "--model")
        if name != model:
            continue
        served = _flag(args, "--version")
        if version is not None and served is not None and served.isdigit() and int(served) != version:
            continue
        out.append(proc)
    return out


def _flag(args: list[str], flag: str) -> str | None:
    for j, a in enumerate(args):
        if a == flag and j + 1 < len(args):
            return args[j + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _requests_of(proc: Any, model: str, version: int | None, client: httpx.Client) -> float | None:
    args = proc.info.get("cmdline") or proc.cmdline()
    port = _flag(args, "--port") or _flag(args, "--http_port") or "8080"
    try:
        text = client.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0).text
    except Exception:  # a server that does not answer: its rate is unknown, its CPU and memory still count
        return None
    total = 0.0
    for labels, value in _REQUESTS_ANY.findall(text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if lab.get("model") == model and (version is None or lab.get("version") in (str(version), "")):
            total += float(value)
    return total


def _local(model: str, version: int | None, price: float | None, client: httpx.Client) -> dict[str, Any]:
    import psutil

    procs = local_servers(model, version)
    now = time.time()
    cpu_cores = memory = requests = rate = 0.0
    details = []
    for p in procs:
        try:
            with p.oneshot():
                t = p.cpu_times()
                up = max(1e-3, now - p.create_time())
                rss = float(p.memory_info().rss)
        except psutil.Error:
            continue
        cores = (t.user + t.system) / up
        n = _requests_of(p, model, version, client)
        cpu_cores += cores
        memory += rss
        if n is not None:
            requests += n
            rate += n / up
        details.append({"pid": p.pid, "uptime_s": round(up, 3), "cpu_cores": cores, "memory_bytes": rss,
                        "requests": n})
    node_cpus = psutil.cpu_count() or 1
    node_memory = float(psutil.virtual_memory().total)
    share = max(cpu_cores / node_cpus, memory / node_memory) if procs else 0.0
    return {"source": "process", "replicas": len(details), "cpu_cores": cpu_cores, "memory_bytes": memory,
            "requests": requests, "requests_per_s": rate, "node_share": share, "processes": details,
            "cost_per_1000": cost_per_1000(price, share, rate), "node_price_per_hour": price,
            "node": {"cpus": node_cpus, "memory_bytes": node_memory}}


# -- a cluster -------------------------------------------------------------------------------------------
def promql(namespace: str, isvc: str, model: str, version: int, window: dt.timedelta | float) -> dict[str, str]:
    """The Prometheus queries of one version's resource use (``window`` as the range of rates)."""
    for v in (namespace, isvc, model):
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", v):
            raise UsageError(f"not a Kubernetes or model name: {v!r}")
    w = f"{int(_seconds(window))}s"
    pods = (f'max by (namespace, pod) (kube_pod_labels{{namespace="{namespace}", '
            f'label_serving_kserve_io_inferenceservice="{isvc}", label_skiff_io_version="{version}"}})')
    sel = f'namespace="{namespace}", container="kserve-container"'
    return {
        "cpu_cores": f"sum(rate(container_cpu_usage_seconds_total{{{sel}}}[{w}]) * on (namespace, pod) "
                     f"group_left() {pods})",
        "memory_bytes": f"sum(container_memory_working_set_bytes{{{sel}}} * on (namespace, pod) group_left() {pods})",
        "replicas": f"count({pods})",
        "requests_per_s": f'sum(rate(skiff_requests_total{{namespace="{namespace}", model="{model}", '
                          f'version="{version}"}}[{w}]))',
        "node_cpus": "avg(kube_node_status_allocatable{resource=\"cpu\"})",
        "node_memory_bytes": "avg(kube_node_status_allocatable{resource=\"memory\"})",
    }


def _query(client: httpx.Client, url: str, query: str) -> float | None:
    import httpx

    try:
        r = client.get(f"{url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=10.0)
    except httpx.HTTPError as e:
        raise SourceError(f"Prometheus at {url} unreachable: {type(e).__name__}", prometheus=url) from e
    if r.status_code != 200:
        raise SourceError(f"Prometheus at {url} answered {r.status_code}", prometheus=url)
    try:
        result = r.json()["data"]["result"]
    except (ValueError, KeyError, TypeError) as e:
        raise SourceError(f"Prometheus at {url} answered with an unexpected body", prometheus=url) from e
    if not result:
        return None
    return float(result[0]["value"][1])


def _cluster(url: str, namespace: str, isvc: str, model: str, version: int, window: dt.timedelta | float,
             price: float | None, client: httpx.Client) -> dict[str, Any]:
    queries = promql(namespace, isvc, model, version, window)
    values = {k: _query(client, url, q) for k, q in queries.items()}
    cpu, mem, rate = values["cpu_cores"] or 0.0, values["memory_bytes"] or 0.0, values["requests_per_s"] or 0.0
    shares = []
    if values["node_cpus"]:
        shares.append(cpu / values["node_cpus"])
    if values["node_memory_bytes"]:
        shares.append(mem / values["node_memory_bytes"])
    share = max(shares, default=0.0)
    return {"source": "prometheus", "replicas": int(values["replicas"] or 0), "cpu_cores": cpu, "memory_bytes": mem,
            "requests_per_s": rate, "node_share": share, "cost_per_1000": cost_per_1000(price, share, rate),
            "node_price_per_hour": price, "queries": queries,
            "node": {"cpus": values["node_cpus"], "memory_bytes": values["node_memory_bytes"]}}


def resource_use(settings: Settings, model: str, version: int | None, window: dt.timedelta | float = 300.0, *,
                 prometheus_url: str | None = None, namespace: str | None = None, isvc: str | None = None,
                 node_price_per_hour: float | None = None,
                 transport: httpx.BaseTransport | None = None) -> dict[str, Any]:
    """CPU (cores), memory (bytes), replicas, request rate (per second) and cost per 1,000 predictions of a
    served version over ``window`` (a timedelta or seconds).

    With ``prometheus_url`` (an environment file's; ``namespace`` and ``isvc`` name the InferenceService,
    ``isvc`` defaulting to the model's InferenceService name) it asks Prometheus; without it, the local model
    server processes. ``node_price_per_hour`` (an environment file's) wins over ``settings.node_price_per_hour``.
    """
    import httpx

    seconds = _seconds(window)
    price = node_price_per_hour if node_price_per_hour is not None else settings.node_price_per_hour
    with httpx.Client(transport=transport) as client:
        if prometheus_url:
            if version is None:
                raise UsageError("a version is needed to read its resource use from Prometheus")
            name = isvc or model.lower().replace("_", "-")
            out = _cluster(prometheus_url, namespace or "default", name, model, version, seconds, price, client)
        else:
            out = _local(model, version, price, client)
    return {"model": model, "version": version, "window_s": seconds, **out}
