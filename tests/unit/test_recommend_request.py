"""The recommender's request contract between transformer and predictor: the body the transformer sends
carries every user's recent items and parses back to the same queries (V1 and V2); a client's request to
the transformer may not carry recent items."""

import pytest
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.v2_datamodels import InferenceRequest

from serving.runtime.inputs import BadRequest
from serving.runtime.recommender import Query, parse_v1, parse_v2, predictor_body

QUERIES = [Query("u1", 5, True, (("i1", 2.5), ("i2", 0.125))), Query("u2", 5, True, ()),
           Query("u3", 5, True, (("i9", 1.0),))]


def _v2(body: dict) -> InferRequest:
    return InferRequest.from_inference_request(InferenceRequest.model_validate(body), model_name="m")


def test_predictor_body_round_trips_v1_and_v2():
    assert parse_v1(predictor_body(QUERIES, v2=False), 10) == QUERIES
    body = predictor_body(QUERIES, v2=True, request_id="r1")
    assert body["id"] == "r1"
    items = next(i for i in body["inputs"] if i["name"] == "recent_items")
    assert items["shape"] == [3, 2] and items["data"] == ["i1", "i2", "", "", "i9", ""]  # padded rows
    assert parse_v2(_v2(body), 10) == QUERIES


def test_no_recent_items_is_none_and_an_empty_list_is_empty():
    assert parse_v1({"user_id": "u"}, 10) == [Query("u", 10, True, None)]
    assert parse_v1({"user_id": "u", "recent_items": [], "recent_weights": []}, 10)[0].recent == ()


def test_clients_of_the_transformer_send_no_recent_items():
    with pytest.raises(BadRequest) as e:
        parse_v1({"user_id": "u", "recent_items": ["a"], "recent_weights": [1]}, 10, recent=False)
    assert e.value.field == "instances[0].recent_items"
    body = predictor_body(QUERIES[:1], v2=True)
    with pytest.raises(BadRequest) as e:
        parse_v2(_v2(body), 10, recent=False)
    assert e.value.field == "recent_items"
