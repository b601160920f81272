"""The recommender's core: ranking metrics on hand-checked cases, the events contract, the models."""

import math

import numpy as np
import pandas as pd
import pytest

from skiff.errors import SpecError
from skiff.recommend.events import InteractionEvent, RecsConfig, check_events_spec, interactions
from skiff.recommend.metrics import lift, ranking_metrics
from skiff.recommend.model import RecModel, train_model
from skiff.recommend.training import evaluate_models, time_split
from skiff.spec import parse_spec


def test_metrics_hand_checked():
    # user a: rel {x, y}, rec [x, q, y]: hits at ranks 1 and 3
    # user b: rel {z}, rec [q, r, s]: no hit
    got = ranking_metrics({"a": ["x", "q", "y"], "b": ["q", "r", "s"]}, {"a": {"x", "y"}, "b": {"z"}}, 3, 10)
    assert got["precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert got["recall@3"] == pytest.approx((1.0 + 0) / 2)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert got["ndcg@3"] == pytest.approx((dcg / idcg) / 2)
    assert got["map@3"] == pytest.approx(((1 / 1 + 2 / 3) / 2) / 2)
    assert got["hit_rate@3"] == pytest.approx(0.5)
    assert got["coverage@3"] == pytest.approx(5 / 10)  # x, q, y, r, s shown (q once)
    assert got["users"] == 2


def test_metrics_coverage_and_truncation():
    got = ranking_metrics({"a": ["x", "y", "z"]}, {"a": {"z"}, "b": set()}, 2, 4)
    # only the first k=2 count; user b has nothing to find and is not scored
    assert got["precision@2"] == 0 and got["hit_rate@2"] == 0 and got["users"] == 1
    assert got["coverage@2"] == pytest.approx(2 / 4)
    perfect = ranking_metrics({"a": ["z", "w"]}, {"a": {"z", "w"}}, 2, 2)
    assert perfect["ndcg@2"] == pytest.approx(1.0) and perfect["map@2"] == pytest.approx(1.0)
    assert lift({"ndcg@2": 0.2, "users": 3}, {"ndcg@2": 0.1}) == {"ndcg@2": pytest.approx(2.0)}
    assert lift({"ndcg@2": 0.2}, {"ndcg@2": 0.0}) == {"ndcg@2": None}


SPEC = {"name": "ev", "entity_key": ["user_id", "item_id"], "event_timestamp": "timestamp",
        "problem_type": "recommendation",
        "columns": {"user_id": {"type": "string"}, "item_id": {"type": "string"},
                    "event_type": {"type": "category", "allowed": ["view", "click", "purchase"]},
                    "timestamp": {"type": "datetime"}}}


def test_events_spec_contract():
    spec = parse_spec(SPEC)
    check_events_spec(spec, RecsConfig())
    with pytest.raises(SpecError, match="no weight"):
        check_events_spec(spec, RecsConfig(weights={"view": 1.0}))
    with pytest.raises(SpecError, match="'uid' is not a column"):
        check_events_spec(spec, RecsConfig(user_column="uid"))
    with pytest.raises(SpecError, match="no target"):
        parse_spec({**SPEC, "target": "event_type"})
    with pytest.raises(SpecError, match="needs event_timestamp"):
        parse_spec({**SPEC, "event_timestamp": None})
    with pytest.raises(ValueError, match="weights must be finite"):
        RecsConfig(weights={"view": 0.0})
    ev = InteractionEvent.model_validate({"user_id": "u", "item_id": "i", "timestamp": "2026-11-01T00:00:00"})
    assert ev.event_type == "click" and ev.timestamp is not None and ev.timestamp.tzinfo is not None
    with pytest.raises(ValueError):
        InteractionEvent.model_validate({"user_id": "", "item_id": "i"})


def _frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])


def test_interactions_weights_and_counted_drops():
    df = _frame([("u1", "a", "view", "2026-11-01T00:00:00Z"), ("u1", "a", "purchase", "2026-11-01T01:00:00Z"),
                 ("u2", "b", "hover", "2026-11-01T00:00:00Z"), (None, "b", "view", "2026-11-01T00:00:00Z"),
                 ("u3", "c", "click", None)])
    data = interactions(df, RecsConfig(), "timestamp")
    assert len(data) == 2 and data.weights.tolist() == [1.0, 10.0]
    assert data.dropped == {"missing user or item": 1, "missing timestamp": 1, "unknown event type": 1}
    assert len(data) + sum(data.dropped.values()) == len(df)


def _toy():
    # two tastes: {a, b, c} and {x, y, z}; "p" is popular with everyone
    rows, t = [], pd.Timestamp("2026-11-01T00:00:00Z")
    for u in range(20):
        group = ["a", "b", "c"] if u % 2 == 0 else ["x", "y", "z"]
        for j, item in enumerate(group + ["p"]):
            rows.append((f"u{u}", item, "click", t + pd.Timedelta(minutes=u * 10 + j)))
    return interactions(_frame(rows), RecsConfig(half_life_days=None), "timestamp")


@pytest.mark.parametrize("kind", ["item_item", "als"])
def test_models_follow_tastes_and_fold_in_recent_items(kind):
    cfg = RecsConfig(als={"factors": 4, "iterations": 30, "regularization": 0.01})
    model = train_model(kind, _toy(), cfg, now=0.0)
    # a user who clicked a and b is shown c first (the rest of the taste), not x/y/z
    rec = model.recommend("new", 1, recent=[("a", 3.0), ("b", 3.0), ("unknown-item", 3.0)])
    assert rec.items == ["c"] and not rec.cold_start
    other = model.recommend("new", 1, recent=[("x", 3.0), ("y", 3.0)])
    assert other.items == ["z"]
    # a known user's seen items are excluded unless asked for
    assert not set(model.recommend("u0", 3).items) & {"a", "b", "c", "p"}
    assert "a" in model.recommend("u0", 4, exclude_seen=False).items


def test_cold_start_is_popularity_and_save_load_roundtrip(tmp_path):
    model = train_model("als", _toy(), RecsConfig(als={"factors": 4}), now=0.0)
    cold = model.recommend("stranger", 2)
    assert cold.cold_start and cold.items[0] == "p" and cold.scores == sorted(cold.scores, reverse=True)
    model.save(tmp_path / "m.npz")
    back = RecModel.load((tmp_path / "m.npz").read_bytes())
    assert back.kind == "als" and back.items.tolist() == model.items.tolist()
    assert back.recommend("u1", 3).items == model.recommend("u1", 3).items
    np.testing.assert_allclose(back.recommend("u1", 3).scores, model.recommend("u1", 3).scores, rtol=1e-6)


def test_time_split_and_evaluation_against_popularity():
    from skiff.datagen_recs import interactions as generate

    data = interactions(generate(400, 200, days=30, seed=3), RecsConfig(), "timestamp")
    split = time_split(data, 5)
    assert split.train.ts.max() < split.cutoff <= split.test.ts.min()
    assert len(split.train) + len(split.test) == len(data)
    ev, _ = evaluate_models(data, RecsConfig(test_days=5, als={"factors": 16}))
    assert set(ev.metrics) == {"popularity", "item_item", "als"}
    assert ev.lift["popularity"]["ndcg@10"] == pytest.approx(1.0)
    assert ev.metrics[ev.best]["ndcg@10"] == max(m["ndcg@10"] for m in ev.metrics.values())
    with pytest.raises(Exception, match="empty train or test"):
        time_split(data, 365)


@pytest.mark.parametrize("unit", ["ns", "us", "ms", "s"])
def test_event_times_in_any_unit_are_seconds(unit):
    ts = pd.Series(pd.to_datetime(["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"])).astype(f"datetime64[{unit}, UTC]")
    df = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "event_type": ["view", "view"], "timestamp": ts})
    data = interactions(df, RecsConfig(), "timestamp")
    assert data.ts[1] - data.ts[0] == pytest.approx(86400.0)
    assert data.ts[0] == pytest.approx(pd.Timestamp("2026-11-01T00:00:00Z").timestamp())
