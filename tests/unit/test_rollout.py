"""The rollout controller's pure parts and its cluster seams.

The Prometheus source runs against a small fake Prometheus HTTP API served on 127.0.0.1 with canned
but realistic ``/api/v1/query`` answers (a real Prometheus cannot run here); the KServe actuator runs
against a fake ``CustomObjectsApi`` that implements the two calls it makes, bumps the generation on a
patch and reports the new traffic split a few reads later, like the KServe controller does.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serving.rollout.actuators import KServeActuator
from serving.rollout.controller import RolloutController
from serving.rollout.measurements import (
    FileFeedback,
    Measurement,
    PrometheusMetricsSource,
    SideMetrics,
    error_rate_expr,
    histogram_quantile,
    p99_expr,
    parse_server_metrics,
)
from serving.rollout.store import RolloutStore
from serving.rollout.verdict import judge
from skiff.errors import ConflictError, InputError, SourceError, UsageError
from skiff.rollout_policy import RolloutPolicy
from skiff.storage import Store
from tests.conftest import REPO


# -- histogram quantiles, metric parsing -----------------------------------------------------------------
def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.1, 50), (0.2, 100), (float("inf"), 100)]
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.1 + 0.1 * (99 - 50) / 50)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)  # first bucket: from 0
    # the rank falls in +Inf: the largest finite bound
    assert histogram_quantile(0.99, [(0.1, 10), (0.5, 20), (float("inf"), 100)]) == 0.5
    assert histogram_quantile(0.99, [(0.1, 0), (float("inf"), 0)]) is None
    assert histogram_quantile(0.99, []) is None


def test_histogram_quantile_tracks_real_latencies():
    reg = CollectorRegistry()
    h = Histogram("skiff_request_duration_seconds", "d", ["model", "version"], registry=reg,
                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25))
    import random

    rng = random.Random(1)
    samples = sorted(rng.uniform(0, 0.1) for _ in range(2000))
    for x in samples:
        h.labels("m", "1").observe(x)
    snap = parse_server_metrics(generate_latest(reg).decode(), "m", "1")
    p99 = histogram_quantile(0.99, snap.buckets.items())
    assert abs(p99 - samples[int(0.99 * len(samples))]) < 0.005


def test_parse_server_metrics_sums_one_version_and_counts_5xx():
    reg = CollectorRegistry()
    c = Counter("skiff_requests_total", "r", ["model", "version", "status"], registry=reg)
    c.labels("m", "1", "200").inc(90)
    c.labels("m", "1", "422").inc(5)
    c.labels("m", "1", "500").inc(3)
    c.labels("m", "1", "503").inc(2)
    c.labels("m", "2", "500").inc(40)
    c.labels("other", "1", "500").inc(7)
    snap = parse_server_metrics(generate_latest(reg).decode(), "m", "1")
    assert (snap.requests, snap.errors) == (100, 5)
    with pytest.raises(SourceError, match="not Prometheus text"):
        parse_server_metrics("skiff_requests_total{model=\"m\" 3\n", "m", "1", source="http://x/metrics")


# -- judging -------------------------------------------------------------------------------------------------
def _m(s: dict, c: dict) -> Measurement:
    return Measurement(stable=SideMetrics(version="1", **s), canary=SideMetrics(version="2", **c),
                       window_seconds=30, source="test")


POL = RolloutPolicy(min_requests=100, max_error_rate_delta=0.01, max_p99_ratio=1.5, p99_slack_seconds=0.0,
                    max_quality_drop=0.02, min_labels=20)


def test_judge_waits_then_checks_each_metric():
    ok = dict(requests=900, errors=9, p99_seconds=0.10)
    assert judge(_m(ok, dict(requests=99)), POL).status == "wait"
    v = judge(_m(ok, dict(requests=100, errors=2, p99_seconds=0.12)), POL)
    assert v.status == "pass"
    assert {c.name: c.status for c in v.checks} == {"requests": "pass", "error_rate": "pass",
                                                     "p99_latency": "pass", "quality": "skipped"}
    bad_err = judge(_m(ok, dict(requests=100, errors=3, p99_seconds=0.1)), POL)  # 3 % vs 1 % + 1
    assert bad_err.status == "fail" and "5xx share" in bad_err.reason
    err = {c.name: c for c in bad_err.checks}["error_rate"]
    assert (err.stable, err.canary, err.limit) == (pytest.approx(0.01), pytest.approx(0.03), pytest.approx(0.02))
    bad_p99 = judge(_m(ok, dict(requests=100, p99_seconds=0.16)), POL)
    assert bad_p99.status == "fail" and {c.name: c.status for c in bad_p99.checks}["p99_latency"] == "fail"
    # quality compared only with enough labels on both sides
    q = dict(requests=100, p99_seconds=0.1)
    assert {c.name: c.status for c in judge(_m({**ok, "quality": 0.9, "labelled": 50},
                                                   {**q, "quality": 0.5, "labelled": 19}), POL).checks}[
        "quality"] == "skipped"
    worse = judge(_m({**ok, "quality": 0.90, "labelled": 50}, {**q, "quality": 0.87, "labelled": 20}), POL)
    assert worse.status == "fail" and "quality" in worse.reason
    fine = judge(_m({**ok, "quality": 0.90, "labelled": 50}, {**q, "quality": 0.885, "labelled": 20}), POL)
    assert fine.status == "pass"


def test_policy_is_strict():
    with pytest.raises(ValueError, match="extra"):
        RolloutPolicy(step=[10])
    for steps in ([10, 50], [50, 10, 100], [0, 100], []):
        with pytest.raises(ValueError):
            RolloutPolicy(steps=steps)


def test_file_feedback_accuracy_and_bad_rows(tmp_path):
    fb = tmp_path / "fb.jsonl"
    rows = [{"model": "m", "version": "2", "prediction": 1, "label": 1, "at": 100.0},
            {"model": "m", "version": 2, "prediction": 0, "label": 1, "at": "1970-01-01T00:02:00+00:00"},
            {"model": "m", "version": "2", "prediction": 0, "label": 0, "at": 10.0},  # before the rollout
            {"model": "m", "version": "1", "prediction": 0, "label": 0, "at": 100.0}]
    fb.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert FileFeedback(fb).quality("m", "2", since=50.0) == (0.5, 2)
    assert FileFeedback(fb).quality("m", "3", since=0) is None
    assert FileFeedback(tmp_path / "none.jsonl").quality("m", "2", since=0) is None
    fb.write_text(json.dumps(rows[0]) + "\n" + '{"model": "m", "version": "2", "label": 1}\n')
    with pytest.raises(InputError, match=r"fb.jsonl:2: bad feedback row"):
        FileFeedback(fb).quality("m", "2", since=0)


# -- a fake Prometheus HTTP API ---------------------------------------------------------------------------
class FakePrometheus:
    """Answers /api/v1/query like Prometheus 2.x: a vector per ``version`` label, from canned numbers."""

    def __init__(self, data: dict[str, dict[str, float]], fail: bool = False) -> None:
        self.data, self.fail, self.queries = data, fail, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                url = urlparse(self.path)
                params = parse_qs(url.query)
                outer.queries.append({"path": url.path, **{k: v[0] for k, v in params.items()}})
                if outer.fail:
                    body, code = {"status": "error", "errorType": "bad_data",
                                  "error": "1:5: parse error: unexpected character"}, 400
                else:
                    q = params["query"][0]
                    kind = ("p99" if q.startswith("histogram_quantile") else
                            "errors" if 'status=~"5.."' in q else "requests")
                    ts = float(params["time"][0])
                    result = [{"metric": {"model": "churn", "version": v}, "value": [ts, str(vals[kind])]}
                              for v, vals in outer.data.items() if kind in vals]
                    body, code = {"status": "success", "data": {"resultType": "vector", "result": result}}, 200
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakePrometheus:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_prometheus_source_sends_the_promql_and_reads_both_sides():
    data = {"3": {"requests": 1800.0, "errors": 9.0, "p99": 0.120}, "4": {"requests": 200.0, "errors": 1.0, "p99": "NaN"}}
    clock = [1000.0]
    with FakePrometheus(data) as prom:
        src = PrometheusMetricsSource(prom.url, "churn", "3", "4", min_window=60, clock=lambda: clock[0])
        src.begin()
        clock[0] += 95.2
        m = src.read()
    assert [q["path"] for q in prom.queries] == ["/api/v1/query"] * 3
    sel = 'model="churn",version=~"3|4"'
    assert [q["query"] for q in prom.queries] == [
        f"sum by (model, version) (increase(skiff_requests_total{{{sel}}}[96s]))",
        f'sum by (model, version) (increase(skiff_requests_total{{{sel},status=~"5.."}}[96s]))',
        f"histogram_quantile(0.99, sum by (model, version, le) (rate(skiff_request_duration_seconds_bucket{{{sel}}}[96s])))",
    ]
    assert all(q["time"] == "1095.200" for q in prom.queries)
    assert (m.stable.requests, m.stable.errors, m.stable.p99_seconds) == (1800, 9, 0.12)
    assert (m.canary.requests, m.canary.errors, m.canary.p99_seconds) == (200, 1, None)  # NaN: no data
    assert m.window_seconds == 96 and m.source == "prometheus"


def test_prometheus_errors_are_source_errors():
    with FakePrometheus({}, fail=True) as prom:
        src = PrometheusMetricsSource(prom.url, "churn", "3", "4")
        with pytest.raises(SourceError, match="400: bad_data 1:5: parse error"):
            src.read()
    from serving.rollout.router import free_port

    with pytest.raises(SourceError, match="Prometheus query failed"):
        PrometheusMetricsSource(f"http://127.0.0.1:{free_port()}", "churn", "3", "4").read()


def test_alert_rules_use_the_controllers_queries():
    doc = yaml.safe_load((REPO / "infra/monitoring/prometheusrule.yaml").read_text())
    rules = {r.get("alert") or r.get("record"): r["expr"] for g in doc["spec"]["groups"] for r in g["rules"]}
    assert rules["skiff:error_rate:5m"] == error_rate_expr("5m")
    assert rules["skiff:p99_seconds:5m"] == p99_expr("5m")
    assert rules["SkiffModelErrorRateHigh"] == f"{error_rate_expr('5m')} > 0.05"
    assert rules["SkiffModelP99LatencyHigh"] == f"{p99_expr('5m')} > 0.5"


# -- a fake Kubernetes API for the KServe actuator ---------------------------------------------------------
class FakeCustomObjects:
    """``get_namespaced_custom_object`` / ``patch_namespaced_custom_object`` of one InferenceService."""

    def __init__(self, version: str = "4", settle_reads: int = 2, never_settle: bool = False) -> None:
        self.patches: list[tuple] = []
        self.field_managers: list[str | None] = []
        self.settle_reads, self.never_settle = settle_reads, never_settle
        self.obj = {
            "metadata": {"name": "churn", "namespace": "skiff", "generation": 5,
                         "labels": {"skiff.io/version": version}},
            "spec": {"predictor": {"canaryTrafficPercent": 0}},
            "status": {"observedGeneration": 5, "components": {"predictor": {"traffic": [
                {"revisionName": "churn-predictor-00002", "percent": 0, "latestRevision": True, "tag": "latest"},
                {"revisionName": "churn-predictor-00001", "percent": 100, "latestRevision": False, "tag": "prev"},
            ]}}},
        }
        self._pending: tuple[int, int] | None = None

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body, *, field_manager=None):
        self.field_managers.append(field_manager)
        self.patches.append((group, version, namespace, plural, name, json.loads(json.dumps(body))))
        pct = body["spec"]["predictor"]["canaryTrafficPercent"]
        self.obj["spec"]["predictor"]["canaryTrafficPercent"] = pct
        self.obj["metadata"]["generation"] += 1
        self._pending = (self.settle_reads, 100 if pct is None else pct)
        return json.loads(json.dumps(self.obj))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, namespace, plural, name) == ("serving.kserve.io", "v1beta1", "skiff",
                                                             "inferenceservices", "churn")
        if self._pending and not self.never_settle:
            reads, pct = self._pending
            if reads <= 0:  # the KServe controller reconciled the new generation
                self.obj["status"]["observedGeneration"] = self.obj["metadata"]["generation"]
                latest, prev = self.obj["status"]["components"]["predictor"]["traffic"]
                latest["percent"], prev["percent"] = pct, 100 - pct
                self._pending = None
            else:
                self._pending = (reads - 1, pct)
        return json.loads(json.dumps(self.obj))


def test_kserve_actuator_patches_canary_percent_and_waits_for_the_new_generation():
    api = FakeCustomObjects()
    act = KServeActuator(api, "churn", "skiff", poll=0.0, sleep=lambda s: None)
    act.check_canary("3", "4")
    got = act.set_canary_percent(10)
    assert got["generation"] == 6 and got["traffic"][0]["percent"] == 10
    act.set_canary_percent(100)
    act.set_canary_percent(0)
    assert [p[5] for p in api.patches] == [
        {"spec": {"predictor": {"canaryTrafficPercent": 10}}},
        {"spec": {"predictor": {"canaryTrafficPercent": None}}},  # promotion removes the field
        {"spec": {"predictor": {"canaryTrafficPercent": 0}}},
    ]
    assert all(p[:5] == ("serving.kserve.io", "v1beta1", "skiff", "inferenceservices", "churn") for p in api.patches)
    # Argo CD ignores the fields this manager owns, so a sync does not reset the rollout
    assert api.field_managers == ["skiff-rollout"] * 3
    with pytest.raises(ConflictError, match="serves version 4 in its latest spec, not the canary 5"):
        act.check_canary("3", "5")


def test_kserve_actuator_moves_the_transformer_with_the_predictor():
    api = FakeCustomObjects()
    api.obj["spec"]["transformer"] = {"containers": [{"name": "kserve-container", "image": "skiff"}]}
    act = KServeActuator(api, "churn", "skiff", poll=0.0, sleep=lambda s: None)
    act.set_canary_percent(25)
    act.set_canary_percent(100)
    assert [p[5] for p in api.patches] == [
        {"spec": {"predictor": {"canaryTrafficPercent": 25}, "transformer": {"canaryTrafficPercent": 25}}},
        {"spec": {"predictor": {"canaryTrafficPercent": None}, "transformer": {"canaryTrafficPercent": None}}},
    ]


def test_kserve_actuator_times_out_when_traffic_never_moves():
    api = FakeCustomObjects(never_settle=True)
    t = [0.0]

    def sleep(s):
        t[0] += s

    act = KServeActuator(api, "churn", "skiff", timeout=10, poll=1, clock=lambda: t[0], sleep=sleep)
    with pytest.raises(SourceError, match="did not reach 50% on its latest revision within 10s"):
        act.set_canary_percent(50)


# -- the controller with both cluster seams ---------------------------------------------------------------
def _controller(tmp_path: Path, prom_url: str, api: FakeCustomObjects, **policy) -> RolloutController:
    pol = RolloutPolicy(**{"steps": [10, 50, 100], "min_requests": 100, "interval": 0.01, "timeout": 5, **policy})
    return RolloutController(
        model="churn", env="prod", stable_version=3, canary_version=4, policy=pol,
        metrics=PrometheusMetricsSource(prom_url, "churn", "3", "4", min_window=60),
        actuator=KServeActuator(api, "churn", "skiff", poll=0.0, sleep=lambda s: None),
        store=RolloutStore(Store(str(tmp_path))),
    )


def test_cluster_rollout_promotes_a_good_canary(tmp_path):
    data = {"3": {"requests": 900, "errors": 2, "p99": 0.081}, "4": {"requests": 300, "errors": 1, "p99": 0.085}}
    api = FakeCustomObjects()
    with FakePrometheus(data) as prom:
        state = _controller(tmp_path, prom.url, api).run()
    assert state.phase == "promoted"
    assert [p[5]["spec"]["predictor"]["canaryTrafficPercent"] for p in api.patches] == [10, 50, None]
    assert [d.action for d in state.decisions] == ["start", "advance", "promote"]
    adv = state.decisions[1]
    assert adv.evidence["stable"] == {"version": "3", "requests": 900.0, "errors": 2.0, "p99_seconds": 0.081,
                                      "quality": None, "labelled": 0, "error_rate": pytest.approx(2 / 900)}
    assert adv.evidence["canary"]["p99_seconds"] == 0.085
    assert adv.traffic["traffic"][0] == {"revisionName": "churn-predictor-00002", "percent": 50,
                                         "latestRevision": True, "tag": "latest"}
    on_disk = json.loads((tmp_path / "rollouts/prod/churn.json").read_text())
    assert on_disk["phase"] == "promoted" and len(on_disk["decisions"]) == 3
    assert on_disk["target"] == {"kind": "kserve", "name": "churn", "namespace": "skiff"}


def test_cluster_rollout_rolls_back_a_canary_with_errors(tmp_path):
    data = {"3": {"requests": 900, "errors": 2, "p99": 0.08}, "4": {"requests": 120, "errors": 30, "p99": 0.08}}
    api = FakeCustomObjects()
    with FakePrometheus(data) as prom:
        state = _controller(tmp_path, prom.url, api).run()
    assert state.phase == "rolled_back"
    assert [p[5]["spec"]["predictor"]["canaryTrafficPercent"] for p in api.patches] == [10, 0]
    rb = state.decisions[-1]
    assert rb.action == "rollback" and rb.step == 10 and rb.evidence["canary"]["error_rate"] == 0.25
    assert api.obj["status"]["components"]["predictor"]["traffic"][1]["percent"] == 100  # stable serves all


def test_rollout_times_out_without_traffic_and_rolls_back(tmp_path):
    data = {"3": {"requests": 900}, "4": {"requests": 5}}
    api = FakeCustomObjects()
    with FakePrometheus(data) as prom:
        state = _controller(tmp_path, prom.url, api, timeout=0.2, interval=0.05).run()
    assert state.phase == "rolled_back" and "timed out" in state.reason
    assert {d.action for d in state.decisions[1:-1]} == {"hold"}
    assert [p[5]["spec"]["predictor"]["canaryTrafficPercent"] for p in api.patches] == [10, 0]


def test_metrics_failure_rolls_back(tmp_path):
    api = FakeCustomObjects()
    with FakePrometheus({}, fail=True) as prom:
        state = _controller(tmp_path, prom.url, api).run()
    assert state.phase == "rolled_back" and state.reason.startswith("metrics unavailable")


def test_actuator_failure_aborts_and_says_so(tmp_path):
    api = FakeCustomObjects(never_settle=True)
    ctl = _controller(tmp_path, "http://127.0.0.1:9", api)
    ctl.actuator.timeout = 0.05
    with pytest.raises(SourceError):
        ctl.run()
    state = RolloutStore(Store(str(tmp_path))).get("prod", "churn")
    assert state.phase == "aborted" and "rollback failed" in state.reason
    assert state.reason.startswith("could not start the canary at 10%")


def test_a_second_rollout_is_refused_while_one_runs(tmp_path):
    store = RolloutStore(Store(str(tmp_path)))
    data = {"3": {"requests": 900}, "4": {"requests": 5}}
    with FakePrometheus(data) as prom:
        ctl = _controller(tmp_path, prom.url, FakeCustomObjects(), timeout=30, interval=0.05)
        t = threading.Thread(target=ctl.run, daemon=True)
        t.start()
        deadline = time.time() + 10
        while (store.load("prod", "churn") is None or store.load("prod", "churn").canary_percent != 10) \
                and time.time() < deadline:
            time.sleep(0.02)
        with pytest.raises(ConflictError, match="is running already"):
            _controller(tmp_path, prom.url, FakeCustomObjects()).run()
        from serving.rollout.controller import manual_decision

        manual_decision(store, "prod", "churn", "rollback", ctl.actuator, "stop the test")
        t.join(10)
        assert not t.is_alive()
    assert store.get("prod", "churn").phase == "rolled_back"
    with pytest.raises(UsageError, match="is the stable version"):
        RolloutController(model="churn", env="prod", stable_version=3, canary_version="3",
                          policy=RolloutPolicy(), metrics=None, actuator=None, store=store)


def test_a_policy_file_then_the_flags_given_override_the_environments_policy():
    from skiff.errors import UsageError
    from skiff.rollout_policy import RolloutPolicy

    base = RolloutPolicy(min_requests=500)
    merged = base.with_overrides({"steps": [20, 100], "interval": 5.0}, interval=1.0, timeout=None)
    assert (merged.steps, merged.interval, merged.min_requests, merged.timeout) == ([20, 100], 1.0, 500, 900.0)
    with pytest.raises(UsageError, match="invalid rollout policy: steps: .*last step must be 100"):
        base.with_overrides(None, steps=[10, 50])
    with pytest.raises(UsageError, match="invalid rollout policy: bogus: Extra inputs"):
        base.with_overrides({"bogus": 1})


def test_after_a_rollback_the_canary_percent_goes_back_to_git_once_the_stable_version_is_served():
    api = FakeCustomObjects(version="4")  # the canary's spec is still live: Argo CD has not synced yet
    t = [0.0]

    def sleep(s):
        t[0] += s
        if t[0] >= 3:  # Argo CD syncs Git's stable spec
            api.obj["metadata"]["labels"]["skiff.io/version"] = "3"

    act = KServeActuator(api, "churn", "skiff", timeout=60, poll=1, clock=lambda: t[0], sleep=sleep)
    act.release("3")
    assert t[0] >= 3  # nothing was patched before the stable spec was live
    assert [p[5] for p in api.patches] == [{"spec": {"predictor": {"canaryTrafficPercent": None}}}]
    assert api.field_managers == ["skiff-rollout"]


def test_release_times_out_with_what_to_do_when_argo_cd_never_syncs():
    api = FakeCustomObjects(version="4")
    t = [0.0]

    def sleep(s):
        t[0] += s

    act = KServeActuator(api, "churn", "skiff", timeout=5, poll=1, clock=lambda: t[0], sleep=sleep)
    with pytest.raises(SourceError, match="still serves version 4, not the stable 3.*skiff rollout release"):
        act.release("3")
    assert api.patches == []
