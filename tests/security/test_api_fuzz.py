"""The REST API from its own OpenAPI document with schemathesis: every built-in check (status codes
and bodies as documented, positive data accepted, negative data rejected, no 5xx …), a bearer token
given, bounded examples per operation; and without a token every operation answers 401.

The world is small and real: a registry with versions, a GitOps environment, a datasets folder, drift
results. Cluster submissions go to a recording client (no Kubeflow Pipelines backend runs here); the
settings name a kfp_host, so no fuzzed request starts a local kfp.local run.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from sklearn.dummy import DummyClassifier

from skiff.api import create_app
from skiff.api.auth import TokenSet, hash_token
from skiff.config import load_settings
from skiff.lake import Lake
from skiff.registry import ModelRegistry
from tests.conftest import REPO

ADMIN = "admin-token-for-the-fuzz-run"
A = {"Authorization": f"Bearer {ADMIN}"}
PUBLIC = {"/healthz"}  # /docs, /openapi.json and the docs assets are not operations of the document


class _RecordingClient:
    def __init__(self, host, namespace=None):
        self.host, self.namespace = host, namespace

    def create_run_from_pipeline_func(self, func, arguments, experiment_name, run_name, enable_caching, **run):
        return type("Run", (), {"run_id": "kfp-run"})()


@pytest.fixture
def fuzz_app(skiff_env):
    s = load_settings(kfp_host="http://kfp.example:8888")
    reg = ModelRegistry.from_settings(s)
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    reg.register("churn", model, {"gate": {"promote": True, "reason": "first"}})
    reg.register("churn", model, {"gate": {"promote": False, "reason": "lost"}})
    envs = skiff_env / "infra/environments"
    (envs / "prod/models").mkdir(parents=True)
    (envs / "prod/environment.yaml").write_text("name: prod\nnamespace: skiff\ningress_domain: example.com\n")
    (skiff_env / "datasets").mkdir()
    (skiff_env / "datasets/churn.yaml").write_text((REPO / "examples/churn.yaml").read_text())
    Lake.from_settings(s).store.write_json(
        {"dataset": "churn", "date": "2026-11-01", "previous_date": None, "status": "passed", "num_examples": 5,
         "schema_inferred": False, "anomalies": [], "drift": {}, "notes": []},
        "validation", "churn", "ingest_date=2026-11-01", "result.json")
    return create_app(s, tokens=TokenSet.of(admin=[hash_token(ADMIN)]), environments=envs,
                      kfp_client_factory=_RecordingClient)


def _fuzz(app, check) -> list[str]:
    """Run ``check(case)`` on bounded positive and negative examples of every operation; the failures."""
    calls: list[str] = []
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 18, [op.label for op in operations]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=20, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case):
                calls.append(case.operation.label)
                check(case)

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation with no input has no invalid one
            except Exception as e:  # schemathesis' FailureGroup names each failed check
                failures.append(f"{operation.label} ({mode.value}): {e}")
    # every operation was exercised, most with many examples (a harness that ran nothing would pass)
    assert {op.label for op in operations} <= set(calls) and len(calls) > 10 * len(operations), len(calls)
    return failures


@pytest.mark.slow
def test_every_operation_keeps_its_documented_contract(fuzz_app):
    failures = _fuzz(fuzz_app, lambda case: case.call_and_validate(headers=A))
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_without_a_token_every_operation_answers_401(fuzz_app):
    def check(case):
        response = case.call(headers={"Authorization": ""})
        if case.operation.path in PUBLIC:
            assert response.status_code == 200
            return
        assert response.status_code == 401, (case.method, case.formatted_path, response.text)
        assert response.json()["error"] == "Unauthorized"

    assert not (failures := _fuzz(fuzz_app, check)), "\n\n".join(failures)
