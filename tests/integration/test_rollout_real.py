"""Canary rollouts end to end on the embedded engine, with real skiff model servers.

Three versions of a tiny scikit-learn model are registered: 1 and 3 answer, 2 raises inside its pipeline
at predict time (the server answers 500). Each rollout runs real ``python -m skiff serve`` processes (via
``serving.runtime.server.start_local_server``), the real canary router and the real ``skiff rollout`` command,
while a bounded client load on 127.0.0.1 goes through the router.
"""

from __future__ import annotations

import math
import operator
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from serving.rollout.router import free_port
from serving.rollout.store import RolloutStore
from skiff.cli import main
from skiff.registry import ModelRegistry
from skiff.storage import Store
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "tiny"
BODY = {"instances": [{"usage": 3.5, "seats": 4}, {"usage": 9.0, "seats": 2}]}
META = dict(features=["usage", "seats"], input_schema={"usage": "float", "seats": "integer"},
            problem_type="binary", classes=[0, 1], threshold=0.5, gate={"promote": True})


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout-real")
    reg = ModelRegistry(Store(str(root / "models")))
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"usage": rng.gamma(2, 3, 300), "seats": rng.integers(1, 20, 300)})
    y = (X.usage > 6).astype(int)
    good = Pipeline([("sc", StandardScaler()), ("lr", LogisticRegression())]).fit(X, y)
    # fits, loads, and raises KeyError on every prediction: the server answers 500
    broken = Pipeline([("boom", FunctionTransformer(operator.itemgetter("no_such_column")).fit(X)), ("m", good)])
    better = Pipeline([("sc", StandardScaler()), ("lr", LogisticRegression(C=0.5))]).fit(X, y)
    assert [reg.register(MODEL, m, META).version for m in (good, broken, better)] == [1, 2, 3]
    return root


class Load:
    """Bounded load through the router: ``threads`` clients at most ``rate`` requests/s each."""

    def __init__(self, url: str, rate: float = 15.0, threads: int = 2) -> None:
        self.url, self.rate, self.threads = url, rate, threads
        self.records: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _run(self) -> None:
        with httpx.Client(timeout=15.0) as c:
            while not self._stop.is_set():
                sent = time.time()
                try:
                    r = c.post(f"{self.url}/v1/models/{MODEL}:predict", json=BODY)
                    self.records.append((sent, r.status_code, r.headers.get("x-skiff-upstream", "")))
                except httpx.HTTPError:
                    self.records.append((sent, 599, ""))
                self._stop.wait(max(0.0, 1.0 / self.rate - (time.time() - sent)))

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(20)


def _wait_ready(url: str, proc_alive, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc_alive(), "the canary process died"
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready after {timeout}s")


def test_erroring_canary_is_rolled_back_through_the_router_of_skiff_serve_canary(root, capsys):
    """`skiff serve NAME --canary 2` (two servers behind the router) + `skiff rollout start --local --router`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "skiff", "--root", str(root), "serve", MODEL, "--version", "1",
                             "--canary", "2", "--canary-percent", "0", "--port", str(port)],
                            cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(url, lambda: proc.poll() is None)
        up = httpx.get(f"{url}/admin/upstreams").json()
        assert (up["stable"]["version"], up["canary"]["version"], up["canary_percent"]) == ("1", "2", 0)
        with Load(url) as load:
            rc = main(["--root", str(root), "rollout", "start", MODEL, "--local", "--router", url,
                       "--steps", "10,50,100", "--min-requests", "10", "--interval", "1", "--timeout", "90",
                       "--json"])
            time.sleep(2.0)
        assert rc == 1  # rolled back: a gate said no
        assert "canary 2 of tiny rolled back" in capsys.readouterr().err
        state = RolloutStore(Store(str(root))).get("local", MODEL)
        assert state.phase == "rolled_back" and state.target == {"kind": "router", "url": url}
        rb = state.decisions[-1]
        assert rb.action == "rollback" and rb.step == 10
        assert rb.evidence["canary"]["error_rate"] == 1.0 and rb.evidence["stable"]["error_rate"] == 0.0
        assert rb.evidence["source"] == "scrape"
        assert httpx.get(f"{url}/admin/weights").json() == {"canary_percent": 0}
        before = [r for r in load.records if r[0] < rb.ts]
        after = [r for r in load.records if r[0] > rb.ts]
        failed = sum(1 for r in before if r[1] >= 500)
        n, share = len(before), 0.10
        assert 10 <= failed <= share * n + 3 * math.sqrt(n * share * (1 - share)) + 3, (failed, n)
        assert len(after) >= 10 and all(r[1] == 200 and r[2] == "stable" for r in after)
        # status shows the same decisions
        assert main(["--root", str(root), "rollout", "status", MODEL]) == 0
        assert "rolled_back" in capsys.readouterr().out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0
    for port_ in (int(u.rsplit(":", 1)[1]) for u in (up["stable"]["url"], up["canary"]["url"])):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port_}/v2/health/live", timeout=2.0)


def test_good_canary_is_promoted_by_skiff_rollout_start_local(root, capsys):
    """`skiff rollout start NAME --canary-version 3 --local`: the command runs servers and router itself."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A fresh server answers its first prediction in ~100+ ms (then a few ms), and the p99 of a dozen
    # requests is their maximum: with steps this short, latency gets a wide slack (prod keeps
    # min_requests in the hundreds, where one cold request does not make the p99).
    policy = root / "policy.yaml"
    policy.write_text("steps: [10, 50, 100]\nmin_requests: 10\ninterval: 1\ntimeout: 90\n"
                      "p99_slack_seconds: 1.0\n")
    result: dict[str, int] = {}
    cmd = threading.Thread(target=lambda: result.setdefault("rc", main([
        "--root", str(root), "rollout", "start", MODEL, "--local", "--canary-version", "3", "--stable-version", "1",
        "--port", str(port), "--policy", str(policy), "--replace", "--json"])))
    cmd.start()
    try:
        _wait_ready(url, cmd.is_alive)
        with Load(url) as load:
            cmd.join(300)
    finally:
        cmd.join(300)
    assert result.get("rc") == 0, capsys.readouterr().err
    state = RolloutStore(Store(str(root))).get("local", MODEL)
    assert state.phase == "promoted" and (state.stable_version, state.canary_version) == ("1", "3")
    main_actions = [d for d in state.decisions if d.action != "hold"]
    assert [(d.action, d.step, d.canary_percent) for d in main_actions] == [
        ("start", 10, 10), ("advance", 10, 50), ("promote", 50, 100)]
    for d in main_actions[1:]:
        ev = d.evidence
        assert ev["stable"]["version"] == "1" and ev["canary"]["version"] == "3"
        assert ev["stable"]["requests"] >= 10 and ev["canary"]["requests"] >= 10
        assert ev["canary"]["error_rate"] == 0.0 and 0 < ev["canary"]["p99_seconds"] < 5
        assert {c.name for c in d.checks} == {"requests", "error_rate", "p99_latency", "quality"}
    assert all(r[1] == 200 for r in load.records if r[0] < main_actions[-1].ts)
    assert {r[2] for r in load.records if r[0] > main_actions[-1].ts and r[1] == 200} <= {"canary"}
