"""The model server's HTTP surface fuzzed with schemathesis from the Open Inference Protocol's REST document
(open_inference_protocol.yaml: KServe's rest_predict_v2.yaml, plus V1 from KServe's protocol page).

A real ``skiff serve`` subprocess on 127.0.0.1 serves a registered model trained on an ingested export
(the world of test_serving_online_offline: input rules, a sentinel, an imputed column, the ONNX engine).
Every operation of the document gets bounded positive and negative examples; half of them name the
served model and version (a random name only meets the 404 path) and, for positive V2 bodies, the
model's feature names (a random name only meets the "unknown input" path), so generated shapes,
datatypes and data reach the input parser. The checks: no 5xx, every status and content type declared,
every body as declared, and data the document forbids rejected with a 4xx.

``positive_data_acceptance`` is not run: the document describes the protocol, not this model's inputs,
so a schema-valid tensor named "x" is rightly a 400.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode

from tests.integration.test_serving import free_port
from tests.security.test_serving_online_offline import FEATURES, world  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCUMENT = Path(__file__).with_name("open_inference_protocol.yaml")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
EXAMPLES = 50
#: the Open Inference Protocol's tensor datatypes (required_api.md), and one it does not define
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
             "BYTES", "STRING"]  # per operation and mode: about a minute against one server for the whole document


@pytest.fixture(scope="module")
def server(world):  # noqa: F811 - the fixture imported above
    from serving.runtime.server import start_local_server, stop_local_server

    root = Path(world["settings"].root)
    port = free_port()
    proc = start_local_server("meters", 1, port, root=root, log_path=root / "serve-fuzz.log")
    yield f"http://127.0.0.1:{port}"
    stop_local_server(proc)


def _aimed(case, at_model: bool, datatypes: list[str] | None):
    """Point a positive path at the served model (and version); with ``datatypes``, make a positive body's
    tensors (V2: name, datatype, shape) or rows (V1: objects by feature name) the model's, keeping the
    generated data, so it reaches the model's value checks. Negative parts stay as generated."""
    modes = case.meta.components if case.meta is not None else {}

    def positive(location) -> bool:
        info = modes.get(location)
        return info is None or info.mode is GenerationMode.POSITIVE

    if at_model and case.path_parameters and positive(ParameterLocation.PATH):
        case.path_parameters["model_name"] = "meters"
        if "model_version" in case.path_parameters:
            case.path_parameters["model_version"] = "1"
    body = case.body
    if datatypes is None or not positive(ParameterLocation.BODY) or not isinstance(body, dict):
        return case
    if isinstance(body.get("inputs"), list) and "instances" not in body:  # V2
        for i, tensor in enumerate(body["inputs"]):
            if isinstance(tensor, dict) and isinstance(tensor.get("data"), list):
                tensor.update(name=FEATURES[i % len(FEATURES)], datatype=datatypes[i % len(datatypes)])
                if not any(isinstance(v, list) for v in tensor["data"]):
                    tensor["shape"] = [len(tensor["data"])]
    elif isinstance(body.get("instances"), list) and body["instances"]:  # V1
        values = body["instances"]
        body["instances"] = [{f: values[(i + j) % len(values)] for j, f in enumerate(FEATURES)}
                             for i in range(len(values))]
    return case


def test_every_operation_answers_as_documented_and_never_5xx(world, server):  # noqa: F811
    schema = schemathesis.openapi.from_path(DOCUMENT)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 14, [op.label for op in operations]
    statuses: list[int] = []
    failures: list[str] = []

    with requests.Session() as session:  # one keep-alive connection to the real server
        def check(case) -> None:
            response = case.call(base_url=server, session=session, timeout=30)
            statuses.append(response.status_code)
            case.validate_response(response, checks=CHECKS)

        # well-formed requests of the model's rows, so the success bodies are checked on every route too
        rows = world["raw"][:3]
        valid = {"instances": rows}, {"inputs": [{"name": f, "datatype": "BYTES", "shape": [len(rows)],
                                                  "data": [r[f] for r in rows]} for f in FEATURES]}
        for operation in operations:
            if operation.method == "post" and "explain" not in operation.path:
                path = {"model_name": "meters", "model_version": "1"}
                path = {k: v for k, v in path.items() if "{" + k + "}" in operation.path}
                case = operation.Case(path_parameters=path, body=valid[operation.path.startswith("/v2")],
                                      media_type="application/json")
                check(case)
                assert statuses[-1] == 200, (operation.label, statuses[-1])

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                @given(case=operation.as_strategy(generation_mode=mode), at_model=st.booleans(),
                       datatypes=st.none() | st.lists(st.sampled_from(DATATYPES), min_size=4, max_size=4))
                @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))
                def run(case, at_model, datatypes):
                    check(_aimed(case, at_model, datatypes))

                try:
                    run()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE  # an operation without input has no invalid one
                except (Exception, BaseExceptionGroup) as e:  # a FailureGroup names each failed check
                    failures.append(f"{operation.label} ({mode.value}): {e}")
    assert not failures, "\n\n".join(failures)
    # the run reached the model (200s) and its refusals (400s), not only unknown names (a harness that
    # sent nothing, or only 404s, would pass the checks above)
    assert statuses.count(200) > 50 and statuses.count(400) > 50 and statuses.count(404) > 20, sorted(statuses)
    assert max(statuses) < 500
