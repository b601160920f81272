"""The spec through kfp.local's parameter passing: the steps read the spec's column order, every run."""

from typing import NamedTuple

import pytest
from kfp import dsl, local

from components._image import BASE_IMAGE
from skiff.spec import parse_spec
from skiff.spec_text import spec_to_text

pytestmark = [pytest.mark.integration]

SPEC = {
    "name": "orders",
    "entity_key": "order_id",
    "target": "returned",
    "problem_type": "binary",
    "columns": {  # not alphabetical, and not the order a protobuf Struct gives back
        "order_id": {"type": "string", "required": True},
        "zone": {"type": "category", "allowed": ["north", "south"]},
        "amount": {"type": "float"},
        "weight": {"type": "float"},
        "items": {"type": "integer"},
        "express": {"type": "boolean"},
        "returned": {"type": "boolean", "required": True},
    },
}


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def read_spec(spec: str) -> NamedTuple("Seen", [("features", list), ("service", str), ("fingerprint", str)]):
    """What a step sees of the spec: parsed from the parameter as every skiff step parses it."""
    from collections import namedtuple

    from components.features.logic import feature_service_name
    from skiff.spec import spec_fingerprint
    from skiff.spec_text import spec_from_text

    s = spec_from_text(spec)
    return namedtuple("Seen", ["features", "service", "fingerprint"])(
        s.feature_columns, feature_service_name(s), spec_fingerprint(s))


@dsl.pipeline
def two_steps(spec: str) -> NamedTuple("Both", [("first", list), ("second", list), ("service", str),
                                                ("service_again", str), ("fingerprint", str)]):
    a = read_spec(spec=spec)
    b = read_spec(spec=spec)
    return NamedTuple("Both", [("first", list), ("second", list), ("service", str), ("service_again", str),
                               ("fingerprint", str)])(a.outputs["features"], b.outputs["features"],
                                                      a.outputs["service"], b.outputs["service"],
                                                      a.outputs["fingerprint"])


def test_steps_read_the_spec_order_in_every_run(tmp_path):
    from components.features.logic import feature_service_name
    from skiff.spec import spec_fingerprint

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    expected = parse_spec(SPEC)
    assert expected.feature_columns == ["zone", "amount", "weight", "items", "express"]
    runs = [two_steps(spec=spec_to_text(SPEC)).outputs for _ in range(2)]  # two runs, two steps each
    for out in runs:
        assert out["first"] == out["second"] == expected.feature_columns
        assert out["service"] == out["service_again"] == feature_service_name(expected)
        assert out["fingerprint"] == spec_fingerprint(expected)
