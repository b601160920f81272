"""Serving benchmark: skiff's KServe predictor against MLServer and a minimal FastAPI endpoint.

All three serve the same fitted scikit-learn pipeline (one-hot + scaling + logistic regression on
skiff's realistic churn table, 19 features) on 127.0.0.1, one server at a time, numeric threads capped
at 1, per-request logging off. The same load drives each:

- single-row V2 requests at concurrency 1 and 8, and 100-row V2 batches at concurrency 8;
- the bounded number of requests per case given by ``--requests`` (default 2000) after a warm-up;
- skiff's Feast transformer path (entity key in, SQLite online store lookup, predict) at concurrency 8.

The load generator is ``h2load`` (C, from Debian's ``nghttp2-client``; HTTP/1.1, exactly the case's
request count, per-request latencies from its log), or, without it, an asyncio httpx client with one shared connection pool (on two
cores a Python generator competes with the server for CPU, so its numbers are lower bounds). The output
says which ran. MLServer 1.7.1 runs from its own environment ``.venv-mlserver`` (built here with uv when
absent: it pins an older FastAPI, and its worker needs ``uvloop<0.22``); it gets V2 requests with
``"parameters": {"content_type": "pd"}`` (text inputs marked ``"str"``) and asks for ``predict_proba``.
MLServer runs twice: with its defaults (an inference worker process behind the HTTP process) and with
``parallel_workers: 0`` (inference in the HTTP process); the targets compare with the faster. The FastAPI
endpoint builds a DataFrame from the request and calls ``predict_proba``. ``skiff-sklearn`` is skiff's
server on the scikit-learn pipeline (``--engine sklearn``), to separate the server from the ONNX path.

Tree models (``--trees``, on by default): skiff's own training pipeline (frame preparer, imputation,
scaling, one-hot, the estimator) fits a random forest and a histogram gradient boosting model on the churn
(binary) and housing (regression) example tables, with one value in twelve missing; each is registered
with the export check of a real registration. Single-row requests carrying a missing number, a missing
category and categorical values (and 100-row batches with missing values and unseen categories) go to
skiff's compiled engine, skiff's scikit-learn engine, the FastAPI endpoint and MLServer (given
``PYTHONPATH`` so it can load skiff's frame preparer) at concurrency 8; every server's answer is first
checked against the pipeline (1e-6). It prints the ratios, the targets (>= 10x FastAPI RPS, p99 <= the
others'), and a table of the example data sets' versions — logistic/ridge, random forest, HGB — with
the compiler chosen and whether they are on the fast path.

The inference log (``skiff-log``): skiff's server with the log at 100% sampling
(``SKIFF_INFERENCE_LOG_SAMPLE_RATE=1``) and the same server with it off run side by side and are driven
in turn, ``--log-rounds`` times per case; the medians' p50 delta (target within 0.2 ms) and RPS ratio
(target >= 0.9x) are printed, and the logging server's counters must reconcile with the requests sent and,
after its graceful shutdown, with the rows in the log's files.

Run: ``.venv/bin/python bench/serving.py [--requests 2000] [--loadgen auto|h2load|python]``. It prints
RPS, p50 and p99 per server and case, the ratios, and each target as met or missed.
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MLSERVER_VENV = REPO / ".venv-mlserver"
MLSERVER_PINS = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MODEL = "churn"
_V2_DT = {"string": "BYTES", "category": "BYTES", "integer": "INT64", "float": "FP64", "boolean": "BOOL"}


# -- the model ---------------------------------------------------------------------------------------
def build_world(root: Path) -> dict[str, Any]:
    """Churn rows in the lake and the Feast online store; a fitted pipeline registered with ONNX."""
    import joblib
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from components.features.logic import apply_definitions, build_offline_source, materialize
    from skiff import datagen
    from skiff.config import load_settings
    from skiff.feature_store import feature_sources, open_store
    from skiff.lake import Lake
    from skiff.onnx_export import export_onnx
    from skiff.registry import ModelRegistry
    from skiff.spec import load_spec
    from skiff.storage import Store

    spec = load_spec(REPO / "examples" / "churn.yaml")
    df = datagen.churn(4000, seed=0)
    for c in df.columns:  # plain numpy dtypes for every server alike
        if str(df[c].dtype) == "Int64":
            df[c] = df[c].astype("int64")
        elif str(df[c].dtype) == "boolean":
            df[c] = df[c].astype(bool)
    features = [c for c in spec.feature_columns if c in df.columns]
    schema = {f: spec.columns[f].type for f in features}
    categorical = [f for f in features if schema[f] in ("category", "string")]
    numeric = [f for f in features if f not in categorical]
    pipe = Pipeline([
        ("ct", ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), categorical),
                                  ("sc", StandardScaler(), numeric)])),
        ("clf", LogisticRegression(max_iter=1000)),
    ]).fit(df[features][:3000], df.Churn[:3000])

    lake = Lake(Store(str(root / "lake")))
    with lake.publish_run(spec.name, "bench", "2026-01-01") as d:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), d / "part-00000.parquet")
        (d / "_manifest.json").write_text('{"finished_at": "2026-01-01T12:00:00+00:00"}')
    sources = feature_sources(lake)
    build_offline_source(lake, spec, sources)
    store = open_store(REPO / "feature_repo", root / "feast", sources.uri())
    service, _ = apply_definitions(store, spec, sources.uri())
    materialize(store, dt.datetime.now(dt.UTC))

    info = export_onnx(pipe, df[features][3000:], root / "model.onnx", input_schema=schema, features=features)
    settings = load_settings(root=str(root))
    ModelRegistry.from_settings(settings).register(
        MODEL, pipe,
        {"problem_type": "binary", "features": features, "input_schema": schema, "classes": [False, True],
         "threshold": 0.5, "feature_service": service, "extra": {"onnx": info}},
        files={"model.onnx": root / "model.onnx"} if info["exact"] else {})
    joblib.dump(pipe, root / "model.joblib")
    rows = df[features][3000:3100]
    key_p = float(pipe.predict_proba(df[features][7:8])[0, 1])  # the transformer's answer for keys[7]
    return {"key_p": key_p, "pipe": pipe, "features": features, "schema": schema, "rows": rows, "settings": settings,
            "keys": df.customerID[:200].tolist(), "onnx": info}


def v2_body(rows, schema: dict[str, str], mlserver: bool = False) -> dict[str, Any]:
    inputs = []
    for f in rows.columns:
        inp = {"name": f, "datatype": _V2_DT[schema[f]], "shape": [len(rows)], "data": rows[f].tolist()}
        if mlserver and inp["datatype"] == "BYTES":
            inp["parameters"] = {"content_type": "str"}
        inputs.append(inp)
    body: dict[str, Any] = {"inputs": inputs}
    if mlserver:
        body["parameters"] = {"content_type": "pd"}
        body["outputs"] = [{"name": "predict_proba"}]
    return body


# -- servers -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready ({url})")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"not ready after {timeout:.0f}s: {url}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def ensure_mlserver() -> Path:
    python = MLSERVER_VENV / "bin" / "python"
    if python.exists():
        ok = subprocess.run([str(python), "-c", "import mlserver, mlserver_sklearn"], capture_output=True)
        if ok.returncode == 0:
            return python
    import sklearn

    print(f"building {MLSERVER_VENV} (MLServer's own environment) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(MLSERVER_VENV)], check=True)
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    pins = [*MLSERVER_PINS, f"scikit-learn=={sklearn.__version__}"]  # the pickle needs the same version
    if uv:
        subprocess.run([uv, "pip", "install", "-q", "--python", str(python), *pins], check=True)
    else:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
    return python


def start_mlserver(root: Path, port: int, parallel_workers: int | None = None, name: str = MODEL) -> subprocess.Popen:
    """MLServer with its scikit-learn runtime; ``parallel_workers=None`` keeps its default (one worker
    process behind the HTTP process), 0 runs inference in the HTTP process. skiff's source tree is on its
    ``PYTHONPATH``, so pipelines that start with skiff's frame preparer load there too."""
    ensure_mlserver()
    d = root / f"mlserver-{name}-{parallel_workers}"
    d.mkdir(exist_ok=True)
    shutil.copy(root / (f"{name}.joblib" if name != MODEL else "model.joblib"), d / "model.joblib")
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
                "debug": False}
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    (d / "settings.json").write_text(json.dumps(settings))
    (d / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "1"}}))
    with open(root / "mlserver.log", "wb") as out:
        proc = subprocess.Popen([str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(d)], cwd=d,
                                env={**os.environ, **THREAD_ENV, "PYTHONPATH": str(REPO)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    wait_ready(f"http://127.0.0.1:{port}/v2/models/{name}/ready", proc)
    return proc


def fastapi_app(model_path: str, name: str = MODEL):
    """The baseline: a minimal FastAPI endpoint, a DataFrame per request, ``predict_proba`` (``predict``
    for a regressor)."""
    import joblib
    import pandas as pd
    from fastapi import FastAPI, Request

    model = joblib.load(model_path)
    score = model.predict_proba if hasattr(model, "predict_proba") else model.predict
    app = FastAPI()

    @app.post(f"/v2/models/{name}/infer")
    async def infer(request: Request) -> dict:
        body = await request.json()
        frame = pd.DataFrame({i["name"]: i["data"] for i in body["inputs"]})
        out = score(frame)
        return {"model_name": name, "outputs": [{"name": "predict", "datatype": "FP64",
                                                 "shape": list(out.shape), "data": out.ravel().tolist()}]}

    @app.get("/ready")
    async def ready() -> dict:
        return {"ready": True}

    return app


def start_fastapi(root: Path, port: int, name: str = MODEL) -> subprocess.Popen:
    with open(root / "fastapi.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--fastapi-server", str(root / f"{name}.joblib"
                                                                                   if name != MODEL else
                                                                                   root / "model.joblib"),
                                 "--model-name", name, "--port", str(port)], env={**os.environ, **THREAD_ENV},
                                stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    wait_ready(f"http://127.0.0.1:{port}/ready", proc)
    return proc


def start_skiff(root: Path, port: int, with_features: bool = False, engine: str = "auto",
                name: str = MODEL, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    from serving.runtime.server import start_local_server

    return start_local_server(name, 1, port, root=root, with_features=with_features, timeout_s=180,
                              engine=engine, log_path=root / f"skiff-{port}.log", extra_env=extra_env)


# -- the inference log's cost ------------------------------------------------------------------------
LOG_ENV = {"SKIFF_INFERENCE_LOG_SAMPLE_RATE": "1.0"}


def _log_counters(base: str) -> dict[str, float]:
    import httpx

    out = {}
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        m = re.match(r'skiff_inference_log_(\w+?)(?:_total)?\{model="' + re.escape(MODEL) + r'"\} ([\d.e+]+)$', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def logging_bench(root: Path, loadgen: str, bodies: dict[str, bytes], requests: int, rounds: int,
                  p_one: float, pick) -> dict[str, Any]:
    """skiff's server with the inference log at 100% sampling against the same server with it off: both
    run side by side and are driven in turn (off, on, off, on, ...), so drift in the machine's load hits
    both; per case the median over ``rounds`` of each one's p50 and RPS. Afterwards the logging server's
    counters must reconcile (offered = unsampled + dropped + accepted) and, once it is stopped (the
    writer flushes on shutdown), the rows in the log's files must equal what it logged."""
    import statistics

    from skiff.config import load_settings
    from skiff.inference_log import log_partitions, log_store, read_log

    ports = {"off": free_port(), "on": free_port()}
    procs = {"off": start_skiff(root, ports["off"]), "on": start_skiff(root, ports["on"], extra_env=LOG_ENV)}
    urls = {k: f"http://127.0.0.1:{p}/v2/models/{MODEL}/infer" for k, p in ports.items()}
    per: dict[str, dict[str, list[dict[str, float]]]] = {"off": {}, "on": {}}
    sent = 0
    try:
        for k in ("off", "on"):
            check_answer(urls[k], bodies["single"], p_one, pick)
        sent += 1
        for case, c in (("single", 1), ("single", 8), ("batch100", 8)):
            key = f"{case}@c{c}"
            for _ in range(rounds):
                for k in ("off", "on"):
                    r = drive(loadgen, urls[k], bodies[case], requests, c, root)
                    per[k].setdefault(key, []).append(r)
                sent += requests + max(100, requests // 10)
        counters = _log_counters(f"http://127.0.0.1:{ports['on']}")
    finally:
        for proc in procs.values():
            stop(proc)
    store = log_store(load_settings(root=str(root)))
    logged_requests = logged_rows = 0
    for v, hour in log_partitions(store, MODEL):
        t = read_log(store, MODEL, v, hour)
        logged_rows += t.num_rows
        logged_requests += len(set(t.column("request_id").to_pylist()))
    summary: dict[str, Any] = {"counters": counters, "sent": sent, "rows_in_files": logged_rows,
                               "requests_in_files": logged_requests, "cases": {}}
    for key in per["off"]:
        off, on = per["off"][key], per["on"][key]
        summary["cases"][key] = {
            "off": {"p50_ms": statistics.median(r["p50_ms"] for r in off), "rps": statistics.median(r["rps"] for r in off),
                    "p99_ms": statistics.median(r["p99_ms"] for r in off)},
            "on": {"p50_ms": statistics.median(r["p50_ms"] for r in on), "rps": statistics.median(r["rps"] for r in on),
                   "p99_ms": statistics.median(r["p99_ms"] for r in on)},
        }
    return summary


def print_logging_report(s: dict[str, Any]) -> list[tuple[str, bool, str]]:
    print("\ninference log at 100% sampling vs off (same run, servers side by side, medians over rounds):")
    targets = []
    for key, c in s["cases"].items():
        d = c["on"]["p50_ms"] - c["off"]["p50_ms"]
        ratio = c["on"]["rps"] / c["off"]["rps"]
        print(f"  {key:12s} p50 {c['off']['p50_ms']:.3f} -> {c['on']['p50_ms']:.3f} ms (delta {d:+.3f})   "
              f"RPS {c['off']['rps']:.0f} -> {c['on']['rps']:.0f} (x{ratio:.2f})   "
              f"p99 {c['off']['p99_ms']:.2f} -> {c['on']['p99_ms']:.2f} ms")
        if key.startswith("single"):
            targets.append((f"inference log {key}: p50 within 0.2 ms of logging off", d <= 0.2, f"{d:+.3f} ms"))
            targets.append((f"inference log {key}: RPS >= 0.9x logging off", ratio >= 0.9, f"x{ratio:.2f}"))
    k = s["counters"]
    offered = k.get("offered", 0)
    ok = offered == k.get("unsampled", 0) + k.get("dropped", 0) + k.get("accepted", 0) and offered == s["sent"]
    print(f"  counters: {k}; requests sent {s['sent']}; in the files: {s['requests_in_files']} requests, "
          f"{s['rows_in_files']} rows")
    targets.append(("inference log: counters reconcile (offered = sent = unsampled + dropped + accepted)", ok,
                    f"offered {offered:.0f}, sent {s['sent']}"))
    in_files = s["requests_in_files"] == k.get("accepted", -1) - k.get("failed", 0)
    targets.append(("inference log: every accepted request is in the files after shutdown", in_files,
                    f"{s['requests_in_files']} of {k.get('accepted', 0):.0f}"))
    return targets


# -- load generation ---------------------------------------------------------------------------------
def run_h2load(url: str, body: bytes, requests: int, concurrency: int, workdir: Path) -> dict[str, float]:
    """``h2load`` over HTTP/1.1: exactly ``requests`` POSTs on ``concurrency`` connections, one thread."""
    body_file = workdir / "body.json"
    body_file.write_bytes(body)
    log = workdir / "h2load.tsv"
    log.unlink(missing_ok=True)
    proc = subprocess.run(["h2load", "--h1", "-n", str(requests), "-c", str(concurrency), "-t", "1",
                           "-d", str(body_file), "-H", "content-type: application/json",
                           f"--log-file={log}", url], capture_output=True, text=True, timeout=300)
    out = proc.stdout
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    if proc.returncode != 0 or not done or int(done.group(3)) != requests or not codes \
            or int(codes.group(1)) != requests:
        raise RuntimeError(f"h2load saw failures against {url}:\n{out}\n{proc.stderr}")
    latencies = sorted(int(line.split("\t")[2]) / 1e3 for line in log.read_text().splitlines() if line.strip())
    rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    return {"requests": len(latencies), "rps": rps, "p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


async def _python_load(url: str, body: bytes, requests: int, concurrency: int) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    left = [requests]
    failures = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0,
                                 headers={"content-type": "application/json"}) as client:
        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                t = time.perf_counter()
                r = await client.post(url, content=body)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    failures.append(r.status_code)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests against {url} (e.g. {failures[0]})")
    latencies.sort()
    return {"requests": len(latencies), "rps": len(latencies) / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3}


def drive(loadgen: str, url: str, body: bytes, requests: int, concurrency: int, workdir: Path) -> dict[str, float]:
    warm = max(100, requests // 10)
    if loadgen == "h2load":
        run_h2load(url, body, warm, concurrency, workdir)
        return run_h2load(url, body, requests, concurrency, workdir)
    asyncio.run(_python_load(url, body, warm, concurrency))
    return asyncio.run(_python_load(url, body, requests, concurrency))


def check_answer(url: str, body: bytes, expected_p: float, pick) -> None:
    """The server must answer this request with the pipeline's probability before it is timed."""
    import httpx

    r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    r.raise_for_status()
    got = pick(r.json())
    if abs(got - expected_p) > 1e-5:
        raise RuntimeError(f"{url} answered probability {got}, the pipeline says {expected_p}")


def in_process_predict(world: dict[str, Any], body: bytes, n: int) -> dict[str, float]:
    """skiff's predictor in this process on the same request: decode, checks, ONNX, encode (no HTTP)."""
    from serving.runtime.server import import_kserve

    import_kserve()
    from kserve.protocol.infer_type import InferRequest
    from kserve.protocol.rest.v2_datamodels import InferenceRequest

    from serving.runtime.predictor import SkiffPredictor

    p = SkiffPredictor(MODEL, version=1, settings=world["settings"])
    if not p.load():
        raise RuntimeError(p.load_error)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        req = InferRequest.from_inference_request(InferenceRequest.model_validate_json(body), MODEL)
        p.predict(req).to_rest()
        times.append(time.perf_counter() - t)
    times.sort()
    return {"engine": p.runtime.engine, "p50_ms": times[n // 2] * 1e3, "p99_ms": times[int(n * 0.99)] * 1e3}


# -- tree models -------------------------------------------------------------------------------------
TREE_CASES = [("churn", "random_forest"), ("churn", "hist_gradient_boosting"), ("housing", "random_forest"),
              ("housing", "hist_gradient_boosting")]
LINEAR = {"churn": "logistic_regression", "housing": "ridge"}


def _with_missing(frame, rng, share: float):
    out = frame.copy().astype({c: object for c in frame.columns if str(frame[c].dtype) in ("boolean", "category")})
    for c in out.columns:
        hit = rng.random(len(out)) < share
        out.loc[hit, c] = None
    return out


def build_tree_worlds(root: Path) -> dict[str, Any]:
    """The example data sets trained with skiff's pipeline for each estimator, registered after the real
    export check; returns per model its pipeline, request rows and export report."""
    import joblib
    import numpy as np

    from components.register.logic import input_schema
    from components.train.logic import build_pipeline
    from skiff import datagen
    from skiff.config import load_settings
    from skiff.onnx_export import export_onnx
    from skiff.registry import ModelRegistry
    from skiff.spec import load_spec

    settings = load_settings(root=str(root))
    registry = ModelRegistry.from_settings(settings)
    rng = np.random.default_rng(7)
    worlds: dict[str, Any] = {}
    for dataset in ("churn", "housing"):
        spec = load_spec(REPO / "examples" / f"{dataset}.yaml")
        df = getattr(datagen, dataset)(4000, seed=1)
        features = [c for c in spec.feature_columns if c in df.columns]
        X = _with_missing(df[features], rng, 1 / 12)
        y = df[spec.target].astype(bool) if spec.problem_type == "binary" else df[spec.target].astype(float)
        schema = input_schema(spec, features)
        for estimator in (LINEAR[dataset], "random_forest", "hist_gradient_boosting"):
            name = f"{dataset}-{estimator.replace('_', '-')}"
            t = time.perf_counter()
            pipe = build_pipeline(spec, {}, estimator=estimator, columns=features).fit(X[:3000], y[:3000])
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            info = export_onnx(pipe, X[3000:], root / f"{name}.onnx", features=features, input_schema=schema,
                               reference=X[:3000])
            check_s = time.perf_counter() - t
            meta = {"problem_type": spec.problem_type, "features": features, "input_schema": schema,
                    "extra": {"onnx": info}}
            if spec.problem_type == "binary":
                meta.update({"classes": [False, True], "threshold": 0.5})
            registry.register(name, pipe, meta, files={"model.onnx": root / f"{name}.onnx"} if info["exact"] else {})
            joblib.dump(pipe, root / f"{name}.joblib")
            single = X[3000:3001].copy()
            num = next(c for c in features if schema[c] in ("float", "integer"))
            cat = next(c for c in features if schema[c] in ("category", "string"))
            single[num], single[cat] = None, None  # a missing number and a missing category in the request
            batch = X[3000:3100].copy()
            batch.loc[batch.index[::10], cat] = "unseen-category"
            worlds[name] = {"dataset": dataset, "estimator": estimator, "pipe": pipe, "schema": schema,
                            "single": single, "batch": batch, "info": info, "fit_s": fit_s, "check_s": check_s,
                            "classifier": spec.problem_type != "regression"}
    return worlds


def _json_rows(rows) -> Any:
    import pandas as pd

    return rows.astype(object).where(pd.notna(rows), None)


def _expected_first(world: dict[str, Any]) -> float:
    pipe, row = world["pipe"], world["single"]
    return float(pipe.predict_proba(row)[0, 1]) if world["classifier"] else float(pipe.predict(row)[0])


def tree_bench(root: Path, loadgen: str, requests: int, chosen: list[str], only: list[str] | None = None
               ) -> tuple[dict[str, Any], list[Any]]:
    """Every tree model (or those in ``only``) on every chosen server at concurrency 8 (single rows and
    100-row batches)."""
    worlds = build_tree_worlds(root)
    results: dict[str, Any] = {}
    for dataset, estimator in TREE_CASES:
        name = f"{dataset}-{estimator.replace('_', '-')}"
        if only and name not in only:
            continue
        w = worlds[name]
        expected = _expected_first(w)
        rows_single, rows_batch = _json_rows(w["single"]), _json_rows(w["batch"])
        plain = {"single": json.dumps(v2_body(rows_single, w["schema"])).encode(),
                 "batch100": json.dumps(v2_body(rows_batch, w["schema"])).encode()}
        ml = {k: json.loads(v) for k, v in plain.items()}
        for body in ml.values():
            for inp in body["inputs"]:  # MLServer's pandas codec: nulls only in FP64 and text inputs
                if inp["datatype"] == "INT64" and None in inp["data"]:
                    inp["datatype"] = "FP64"
                if inp["datatype"] == "BOOL":  # as text, as skiff's frame preparer writes booleans
                    inp["datatype"] = "BYTES"
                    inp["data"] = [None if v is None else str(bool(v)) for v in inp["data"]]
                if inp["datatype"] == "BYTES":
                    inp["parameters"] = {"content_type": "str"}
            body["parameters"] = {"content_type": "pd"}
            body["outputs"] = [{"name": "predict_proba" if w["classifier"] else "predict"}]
        ml_bodies = {k: json.dumps(v).encode() for k, v in ml.items()}
        skiff_pick = lambda b: next(o for o in b["outputs"] if o["name"] in ("probability", "value"))["data"][0]  # noqa: E731
        other_pick = (lambda b: b["outputs"][0]["data"][1]) if w["classifier"] else (lambda b: b["outputs"][0]["data"][0])  # noqa: E501
        servers = {
            "skiff": (lambda r, p, n=name: start_skiff(r, p, name=n), plain, skiff_pick),
            "skiff-sklearn": (lambda r, p, n=name: start_skiff(r, p, engine="sklearn", name=n), plain, skiff_pick),
            "fastapi": (lambda r, p, n=name: start_fastapi(r, p, name=n), plain, other_pick),
            "mlserver": (lambda r, p, n=name: start_mlserver(r, p, parallel_workers=0, name=n), ml_bodies, other_pick),
        }
        results[name] = {}
        for server, (start, bodies, pick) in servers.items():
            if server not in chosen and not (server == "mlserver" and "mlserver-inproc" in chosen):
                continue
            port = free_port()
            try:
                proc = start(root, port)
            except Exception as e:  # report and go on, as for the churn cases
                print(f"{name} {server}: could not start: {e}")
                continue
            url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
            try:
                _check_tree_answer(url, bodies["single"], expected, pick)
                results[name][server] = {}
                for case in ("single", "batch100"):
                    key = f"{case}@c8"
                    # a quarter as many batches: 100 rows each, on scikit-learn engines at ~20 batches/s
                    r = drive(loadgen, url, bodies[case], requests if case == "single" else max(100, requests // 4),
                              8, root)
                    results[name][server][key] = r
                    print(f"{name:28s} {server:14s} {key:12s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                          f"p99 {r['p99_ms']:7.2f} ms", flush=True)
            except Exception as e:  # a server that answers wrongly or fails: said, and the others still run
                print(f"{name} {server}: {type(e).__name__}: {str(e)[:300]}")
                log = root / ("mlserver.log" if server == "mlserver" else "fastapi.log")
                if server in ("mlserver", "fastapi") and log.exists():
                    print("  " + "\n  ".join(log.read_text(errors="replace").splitlines()[-8:]))
            finally:
                stop(proc)
    return results, [worlds[n] for n in worlds]


def _check_tree_answer(url: str, body: bytes, expected: float, pick) -> None:
    import httpx

    r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    r.raise_for_status()
    got = pick(r.json())
    if abs(got - expected) > 1e-6 * max(1.0, abs(expected)):
        raise RuntimeError(f"{url} answered {got}, the pipeline says {expected}")


def print_tree_report(results: dict[str, Any], worlds: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    targets = []
    print("\ntree models: ratios (skiff fast path / other at the same load)")
    for name, by_server in results.items():
        sk = by_server.get("skiff")
        if not sk:
            continue
        for other in ("skiff-sklearn", "fastapi", "mlserver"):
            o = by_server.get(other)
            if not o:
                continue
            for key in sk:
                print(f"  {name:28s} vs {other:14s} {key:12s} RPS x{sk[key]['rps'] / o[key]['rps']:6.2f}   "
                      f"p99 {sk[key]['p99_ms']:.2f} vs {o[key]['p99_ms']:.2f} ms")
        f = by_server.get("fastapi")
        if f:
            ratio = sk["single@c8"]["rps"] / f["single@c8"]["rps"]
            targets.append((f"{name} single-row c8: skiff RPS >= 10x FastAPI+sklearn", ratio >= 10, f"x{ratio:.2f}"))
        others = [by_server[o]["single@c8"]["p99_ms"] for o in ("skiff-sklearn", "fastapi", "mlserver") if o in by_server]
        if others:
            targets.append((f"{name} single-row c8: skiff p99 <= the others'", sk["single@c8"]["p99_ms"] <= min(others),
                            f"{sk['single@c8']['p99_ms']:.2f} vs {min(others):.2f} ms"))
    print("\nregistered versions of the example data sets (skiff's pipeline, one value in twelve missing):")
    print(f"  {'version':34s} {'fast path':9s} {'compiler':18s} {'max diff':>9s} {'rows':>6s} {'graph ms':>8s} "
          f"{'check s':>7s}")
    for w in worlds:
        info = w["info"]
        chosen = next((c for c in info.get("candidates", []) if c["compiler"] == info.get("compiler")), {})
        p50 = chosen.get("p50_ms")
        diff = info["max_abs_diff"]
        name = f"{w['dataset']}-{w['estimator'].replace('_', '-')}"
        print(f"  {name:34s} {'yes' if info['exact'] else 'NO':9s} {str(info.get('compiler')):18s} "
              f"{(f'{diff:.1e}' if diff is not None else '-'):>9s} {info['rows_checked']:6d} "
              f"{(f'{p50:.3f}' if p50 else '-'):>8s} {w['check_s']:7.1f}")
        if not info["exact"]:
            print(f"      why not: {info['reason'][:300]}")
    on = sum(w["info"]["exact"] for w in worlds)
    targets.append(("example data sets' versions on the fast path: all", on == len(worlds), f"{on}/{len(worlds)}"))
    return targets


class _Skip(Exception):
    """A part of the run that was not asked for."""


# -- the run -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="Requests per case (after a warm-up).")
    ap.add_argument("--loadgen", choices=["auto", "h2load", "python"], default="auto",
                    help="h2load (nghttp2-client, C) when installed, else asyncio httpx.")
    ap.add_argument("--servers", default="skiff,skiff-sklearn,fastapi,mlserver,mlserver-inproc,transformer,skiff-log",
                    help="Which to run, comma-separated (default all).")
    ap.add_argument("--log-rounds", type=int, default=3,
                    help="skiff-log: rounds of (logging off, logging on) per case; medians are compared.")
    ap.add_argument("--json", dest="json_out", type=Path, help="Also write the results to this file.")
    ap.add_argument("--fastapi-server", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--model-name", default=MODEL, help=argparse.SUPPRESS)
    ap.add_argument("--trees", action=argparse.BooleanOptionalAction, default=True,
                    help="Also run the random forest and HGB cases (classification and regression).")
    ap.add_argument("--tree-models", default="",
                    help="Only these tree cases, comma-separated (e.g. churn-hist-gradient-boosting; default all).")
    ap.add_argument("--tree-requests", type=int, default=500,
                    help="Single-row requests per tree case (a quarter as many 100-row batches), after a warm-up.")
    args = ap.parse_args(argv)
    if args.fastapi_server:  # the baseline server's own process
        import uvicorn

        uvicorn.run(fastapi_app(args.fastapi_server, args.model_name), host="127.0.0.1", port=args.port,
                    log_level="warning", access_log=False)
        return 0
    os.environ.update(THREAD_ENV)
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "h2load" if shutil.which("h2load") else "python"
    if loadgen == "h2load" and not shutil.which("h2load"):
        print("h2load is not installed (apt-get install nghttp2-client)", file=sys.stderr)
        return 2
    print(f"load generator: {loadgen}" + ("" if loadgen == "h2load" else " (asyncio httpx; a lower bound on 2 cores)"))
    root = Path(tempfile.mkdtemp(prefix="skiff-bench-serving-"))
    t0 = time.perf_counter()
    world = build_world(root)
    print(f"model: {len(world['features'])} features, ONNX exact={world['onnx']['exact']} "
          f"(max diff {world['onnx']['max_abs_diff']:.2g}); setup {time.perf_counter() - t0:.1f}s")
    rows, schema = world["rows"], world["schema"]
    p_one = float(world["pipe"].predict_proba(rows[:1])[0, 1])
    bodies = {
        "skiff": {"single": json.dumps(v2_body(rows[:1], schema)).encode(),
                  "batch100": json.dumps(v2_body(rows, schema)).encode()},
        "mlserver": {"single": json.dumps(v2_body(rows[:1], schema, mlserver=True)).encode(),
                     "batch100": json.dumps(v2_body(rows, schema, mlserver=True)).encode()},
    }
    bodies["fastapi"] = bodies["skiff-sklearn"] = bodies["skiff"]
    bodies["mlserver-inproc"] = bodies["mlserver"]
    skiff_pick = lambda b: next(o for o in b["outputs"] if o["name"] == "probability")["data"][0]  # noqa: E731
    other_pick = lambda b: b["outputs"][0]["data"][1]  # noqa: E731
    picks = {"skiff": skiff_pick, "skiff-sklearn": skiff_pick, "mlserver": other_pick,
             "mlserver-inproc": other_pick, "fastapi": other_pick}
    cases = [("single", 1), ("single", 8), ("batch100", 8)]
    results: dict[str, dict[str, dict[str, float]]] = {}
    inproc = in_process_predict(world, bodies["skiff"]["single"], max(500, args.requests))
    print(f"skiff in-process predict (decode + checks + {inproc['engine']} + encode): "
          f"p50 {inproc['p50_ms']:.3f} ms, p99 {inproc['p99_ms']:.3f} ms")
    starters = {"skiff": start_skiff, "skiff-sklearn": lambda r, p: start_skiff(r, p, engine="sklearn"),
                "fastapi": start_fastapi, "mlserver": start_mlserver,
                "mlserver-inproc": lambda r, p: start_mlserver(r, p, parallel_workers=0)}
    chosen = [x.strip() for x in args.servers.split(",") if x.strip()]
    order = [x for x in starters if x in chosen]
    for name in order:
        port = free_port()
        try:
            proc = starters[name](root, port)
        except Exception as e:  # report and go on: one server's trouble must not hide the others' numbers
            print(f"{name}: could not start: {e}")
            continue
        url = f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"
        try:
            check_answer(url, bodies[name]["single"], p_one, picks[name])
            results[name] = {}
            for case, c in cases:
                key = f"{case}@c{c}"
                results[name][key] = r = drive(loadgen, url, bodies[name][case], args.requests, c, root)
                print(f"{name:15s} {key:12s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                      f"p99 {r['p99_ms']:7.2f} ms  ({r['requests']} requests)", flush=True)
        finally:
            stop(proc)
    port = free_port()
    proc = start_skiff(root, port, with_features=True) if "transformer" in chosen else None
    try:
        if proc is None:
            raise _Skip
        base = f"http://127.0.0.1:{port}"
        key = world["keys"][7]
        v2_key = json.dumps({"inputs": [{"name": "customerID", "datatype": "BYTES", "shape": [1],
                                         "data": [key]}]}).encode()
        v1_key = json.dumps({"instances": [{"customerID": key}]}).encode()
        check_answer(f"{base}/v2/models/{MODEL}/infer", v2_key, world["key_p"], picks["skiff"])
        results.setdefault("transformer", {})
        for case, path, body, c in [("key@c1", f"/v2/models/{MODEL}/infer", v2_key, 1),
                                    ("key@c8", f"/v2/models/{MODEL}/infer", v2_key, 8),
                                    ("key-v1@c8", f"/v1/models/{MODEL}:predict", v1_key, 8)]:
            r = drive(loadgen, base + path, body, args.requests, c, root)
            results["transformer"][case] = r
            print(f"{'transformer':15s} {case:12s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                  f"p99 {r['p99_ms']:7.2f} ms  (Feast SQLite lookup + predict)", flush=True)
    except _Skip:
        pass
    finally:
        if proc is not None:
            stop(proc)

    log_targets: list[Any] = []
    log_summary: dict[str, Any] | None = None
    if "skiff-log" in chosen:
        log_summary = logging_bench(root, loadgen, bodies["skiff"], args.requests, args.log_rounds, p_one, skiff_pick)
        log_targets = print_logging_report(log_summary)

    tree_results: dict[str, Any] = {}
    tree_targets: list[Any] = []
    if args.trees:
        print(f"\ntree models ({args.tree_requests} requests per case at concurrency 8; load on this machine: "
              f"{os.getloadavg()[0]:.1f} over {os.cpu_count()} cores)", flush=True)
        only = [x.strip() for x in args.tree_models.split(",") if x.strip()]
        tree_results, tree_worlds = tree_bench(root, loadgen, args.tree_requests, chosen, only)

    print("\nratios (skiff / other; RPS higher is better, p99 lower is better):")
    for other in ("skiff-sklearn", "fastapi", "mlserver", "mlserver-inproc"):
        if other not in results or "skiff" not in results:
            continue
        for key in results["skiff"]:
            s, o = results["skiff"][key], results[other][key]
            print(f"  vs {other:8s} {key:12s} RPS x{s['rps'] / o['rps']:.2f}   p99 {s['p99_ms']:.2f} vs "
                  f"{o['p99_ms']:.2f} ms")
    targets = []
    sk = results.get("skiff", {})
    mls = [n for n in ("mlserver", "mlserver-inproc") if n in results]
    if mls and sk:  # against the faster MLServer configuration
        best = max(mls, key=lambda n: results[n]["single@c8"]["rps"])
        s, m = sk["single@c8"], results[best]["single@c8"]
        targets.append((f"single-row c8: skiff RPS >= 2x MLServer ({best})", s["rps"] >= 2 * m["rps"],
                        f"x{s['rps'] / m['rps']:.2f}"))
        targets.append((f"single-row c8: skiff p99 <= MLServer p99 ({best})", s["p99_ms"] <= m["p99_ms"],
                        f"{s['p99_ms']:.2f} vs {m['p99_ms']:.2f} ms"))
    if "fastapi" in results and sk:
        s, f = sk["single@c8"], results["fastapi"]["single@c8"]
        targets.append(("single-row c8: skiff RPS >= 1.0x FastAPI+sklearn", s["rps"] >= f["rps"],
                        f"x{s['rps'] / f['rps']:.2f}"))
    if sk:
        d = sk["single@c1"]["p50_ms"] - inproc["p50_ms"]
        targets.append(("single-row c1: skiff p50 within 2 ms of in-process predict", d <= 2.0,
                        f"{sk['single@c1']['p50_ms']:.2f} - {inproc['p50_ms']:.2f} = {d:.2f} ms"))
    if "transformer" in results:
        for case, proto in (("key@c8", "V2"), ("key-v1@c8", "V1")):
            p99 = results["transformer"][case]["p99_ms"]
            targets.append((f"transformer c8 ({proto}): p99 < 15 ms", p99 < 15.0, f"{p99:.2f} ms"))
    if args.trees:
        tree_targets = print_tree_report(tree_results, tree_worlds)
        targets += tree_targets
    targets += log_targets
    print(f"\nload average when done: {os.getloadavg()[0]:.1f} over {os.cpu_count()} cores (other work on the "
          "machine shares the cores with the servers and the load generator)")
    print("\ntargets:")
    for text, ok, value in targets:
        print(f"  [{'met' if ok else 'MISSED'}] {text}: {value}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"loadgen": loadgen, "in_process": inproc, "results": results,
                                             "trees": tree_results, "inference_log": log_summary,
                                             "targets": [{"target": t, "met": ok, "value": v}
                                                         for t, ok, v in targets]}, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
