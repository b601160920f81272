"""Event-time windows (skiff.windows) against pandas computing the same windows offline over the kept rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skiff.errors import SpecError
from skiff.spec import parse_spec
from skiff.windows import WINDOW_END, WINDOW_START, WindowEngine

BASE = {
    "name": "sensors",
    "entity_key": "device_id",
    "event_timestamp": "ts",
    "columns": {"device_id": {"type": "string"}, "ts": {"type": "datetime"},
                "temperature": {"type": "float"}, "humidity": {"type": "integer"}},
}
WINDOWS = {
    "allowed_lateness": "20s",
    "define": [
        {"name": "m1", "size": "1m", "columns": ["temperature", "humidity"],
         "aggregations": ["mean", "min", "max", "sum", "count", "last", "trend"]},
        {"name": "m5", "type": "sliding", "size": "5m", "slide": "1m", "columns": ["temperature"],
         "aggregations": ["mean", "count", "last", "trend", "max"]},
    ],
}
T0 = 1_764_547_200_000_000  # 2025-12-01T00:00:00Z in µs


def spec(windows=None):
    return parse_spec({**BASE, "windows": windows or WINDOWS})


def table(rows):
    return pa.table({
        "device_id": pa.array([r[0] for r in rows], pa.string()),
        "ts": pa.array([T0 + int(r[1] * 1e6) for r in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "temperature": pa.array([r[2] for r in rows], pa.float64()),
        "humidity": pa.array([r[3] for r in rows], pa.int64()),
    })


def offline(kept: pd.DataFrame, s) -> dict[str, pd.DataFrame]:
    """pandas, over the rows the engine kept: every window holding a reading whose end the device's final
    watermark reached."""
    out = {}
    lateness = s.windows.lateness_us
    wm = kept.groupby("device_id")["t"].max() - lateness
    for w in s.windows.define:
        size, slide = w.size_us, w.slide_us
        parts = []
        for i in range(size // slide):
            f = kept.copy()
            f["start"] = (f["t"] // slide) * slide - i * slide
            parts.append(f)
        x = pd.concat(parts)
        x = x[x["start"] + size <= x["device_id"].map(wm)]
        x = x.sort_values("t", kind="stable")
        rows = []
        for (dev, start), g in x.groupby(["device_id", "start"]):
            rec = {"device_id": dev, WINDOW_START: start, WINDOW_END: start + size}
            for c in w.columns:
                v = g[c].astype(float)
                ok = g[v.notna()]
                agg = {"mean": v.mean(), "min": v.min(), "max": v.max(), "sum": v.sum(), "count": int(v.count()),
                       "last": v.dropna().iloc[-1] if v.notna().any() else np.nan,
                       "trend": (np.polyfit((ok["t"] - start) / 1e6, ok[c].astype(float), 1)[0]
                                 if len(ok) >= 2 else np.nan)}
                for a in w.aggregations:
                    rec[f"{w.name}_{c}_{a}"] = agg[a]
            rows.append(rec)
        out[w.name] = pd.DataFrame(rows)
    return out


def streamed(engine: WindowEngine, polls: list[list[tuple]]):
    closed: dict[str, list[pd.DataFrame]] = {}
    kept, late, dups = [], [], 0
    for poll in polls:
        res = engine.process(table(poll))
        kept += [poll[i] for i in np.flatnonzero(res.keep)]
        late += [(poll[r.row], r) for r in res.late]
        dups += int(res.duplicate.sum())
        assert res.keep.sum() + len(res.late) + res.duplicate.sum() == len(poll)
        for name, t in res.closed.items():
            closed.setdefault(name, []).append(t.to_pandas())
    return closed, kept, late, dups


def compare(closed, kept_rows, s):
    kept = pd.DataFrame(kept_rows, columns=["device_id", "sec", "temperature", "humidity"])
    kept["t"] = T0 + (kept["sec"] * 1e6).astype("int64")
    expected = offline(kept, s)
    for w in s.windows.define:
        exp = expected[w.name]
        got = pd.concat(closed[w.name]) if w.name in closed else pd.DataFrame(columns=exp.columns)
        assert len(got) == len(exp), (w.name, len(got), len(exp))
        if not len(exp):
            continue
        got[WINDOW_START] = (got[WINDOW_START] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
        got = got.drop(columns=[WINDOW_END]).sort_values(["device_id", WINDOW_START]).reset_index(drop=True)
        exp = exp.drop(columns=[WINDOW_END]).sort_values(["device_id", WINDOW_START]).reset_index(drop=True)
        assert got["device_id"].tolist() == exp["device_id"].tolist()
        assert got[WINDOW_START].tolist() == exp[WINDOW_START].tolist()
        for col in exp.columns[2:]:
            a, b = got[col].astype(float).to_numpy(), exp[col].astype(float).to_numpy()
            assert np.array_equal(np.isnan(a), np.isnan(b)), col
            m = ~np.isnan(b)
            np.testing.assert_allclose(a[m], b[m], rtol=1e-7, atol=1e-7, err_msg=col)


readings = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 900),
              st.one_of(st.none(), st.floats(-40, 120, allow_nan=False)), st.one_of(st.none(), st.integers(0, 100))),
    min_size=1, max_size=250)


@settings(max_examples=60, deadline=None)
@given(rows=readings, cuts=st.lists(st.integers(0, 250), max_size=6), jitter=st.integers(0, 90))
def test_closed_windows_equal_pandas_over_the_kept_rows(rows, cuts, jitter):
    # mostly in time order with readings up to `jitter` seconds out of order, some far behind (late)
    rows = sorted(rows, key=lambda r: r[1] + (hash((r[0], r[1])) % (jitter + 1)))
    bounds = sorted({0, len(rows), *[c for c in cuts if c < len(rows)]})
    polls = [rows[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    s = spec()
    closed, kept, late, dups = streamed(WindowEngine(s), polls)
    assert len(kept) + len(late) + dups == len(rows)
    compare(closed, kept, s)
    # a late reading missed a window that had closed: its end is at or below the device's watermark then
    lateness = s.windows.lateness_us
    for reading, miss in late:
        before = [k for k in kept if k[0] == reading[0] and rows.index(k) < rows.index(reading)]
        assert before and miss.end_us <= T0 + max(int(k[1] * 1e6) for k in before) - lateness
        assert miss.start_us <= T0 + reading[1] * 1e6 < miss.end_us


@settings(max_examples=25, deadline=None)
@given(rows=readings, cut=st.integers(1, 249))
def test_a_restored_checkpoint_continues_exactly_like_an_uninterrupted_engine(rows, cut):
    s = spec()
    one = WindowEngine(s)
    c1, k1, l1, d1 = streamed(one, [rows])
    first = WindowEngine(s)
    ca, ka, la, da = streamed(first, [rows[:cut]])
    resumed = WindowEngine(s)
    resumed.restore(*first.snapshot())
    cb, kb, lb, db = streamed(resumed, [rows[cut:]])
    assert ka + kb == k1 and da + db == d1 and len(la) + len(lb) == len(l1)
    for name in set(c1) | set(ca) | set(cb):
        whole = pd.concat(c1.get(name, [])) if name in c1 else None
        parts = [*ca.get(name, []), *cb.get(name, [])]
        assert (0 if whole is None else len(whole)) == sum(len(p) for p in parts)
        if whole is not None:
            order = ["device_id", WINDOW_START]
            pd.testing.assert_frame_equal(whole.sort_values(order).reset_index(drop=True),
                                          pd.concat(parts).sort_values(order).reset_index(drop=True))


def test_a_redelivered_reading_is_a_duplicate_not_counted_twice():
    eng = WindowEngine(spec())
    eng.process(table([("a", 1, 10.0, 1), ("a", 2, 20.0, 1)]))
    res = eng.process(table([("a", 2, 20.0, 1), ("a", 65, 1.0, 1), ("a", 130, 1.0, 1)]))
    assert res.duplicate.tolist() == [True, False, False]
    m1 = res.closed["m1"].to_pylist()
    assert m1[0]["m1_temperature_count"] == 2 and m1[0]["m1_temperature_mean"] == 15.0
    assert m1[0]["m1_temperature_trend"] == pytest.approx(10.0)  # 10 degrees per second


def test_late_readings_name_the_window_they_missed_and_in_time_ones_update_theirs():
    eng = WindowEngine(spec({"allowed_lateness": "10s", "define": [{"name": "m1", "size": "1m",
                                                                     "columns": ["temperature"]}]}))
    eng.process(table([("a", 50, 1.0, 0), ("a", 65, 2.0, 0)]))  # watermark 55 s: [0, 60) still open
    res = eng.process(table([("a", 45, 3.0, 0), ("a", 75, 4.0, 0), ("a", 58, 5.0, 0), ("b", 58, 5.0, 0)]))
    # 45 s arrived out of order but in time; 75 s moves the watermark to 65 s and closes [0, 60); 58 s is late
    assert res.keep.tolist() == [True, True, False, True]
    [late] = res.late
    assert late.row == 2 and late.window == "m1" and (late.start_us, late.end_us) == (T0, T0 + 60_000_000)
    assert "m1" in late.describe() and "closed" in late.describe()
    [w] = res.closed["m1"].to_pylist()
    assert w["m1_temperature_count"] == 2 and w["m1_temperature_mean"] == 2.0  # 1.0 and 3.0
    assert w["m1_temperature_last"] == 1.0  # the value at the latest event time (50 s), not the 45 s one that arrived last
    # the latest reading per device that moved forward
    assert sorted(res.latest) == [1, 3]


def test_alerts_fire_on_thresholds_and_on_z_scores_against_the_last_closed_window():
    s = spec({"define": [{"name": "m1", "size": "1m", "columns": ["temperature"]}],
              "alerts": [{"column": "temperature", "type": "threshold", "above": 100},
                         {"column": "temperature", "type": "zscore", "window": "m1", "z": 3, "min_count": 5}]})
    eng = WindowEngine(s)
    eng.process(table([("a", i, 20.0 + (i % 2), 0) for i in range(0, 61, 5)]))  # 60 s closes [0, 60)
    res = eng.process(table([("a", 61, 20.5, 0), ("a", 62, 40.0, 0), ("a", 63, 120.0, 0)]))
    rules = [(a.value, a.rule) for a in res.alerts]
    assert (120.0, "temperature threshold above 100") in rules
    assert (40.0, "temperature zscore > 3 over m1") in rules and not [r for r in rules if r[0] == 20.5]
    z = next(a for a in res.alerts if a.value == 40.0).to_dict()
    assert z["entity"] == "a" and z["zscore"] > 3 and math.isclose(z["mean"], 20.5)


@pytest.mark.parametrize(("windows", "words"), [
    ({"define": [{"name": "m", "size": "1m", "columns": ["nope"]}]}, "column 'nope' is not in columns"),
    ({"define": [{"name": "m", "size": "1m", "columns": ["device_id"]}]}, "windows aggregate integer or float"),
    ({"define": [{"name": "m", "type": "sliding", "size": "5m", "slide": "2m", "columns": ["temperature"]}]},
     "whole multiple"),
    ({"define": [{"name": "m", "type": "sliding", "size": "5m", "columns": ["temperature"]}]}, "needs slide"),
    ({"define": [{"name": "m", "size": "soon", "columns": ["temperature"]}]}, "not a duration"),
    ({"allowed_lateness": "-1s", "define": [{"name": "m", "size": "1m", "columns": ["temperature"]}]},
     "not a duration"),
    ({"define": [{"name": "m", "size": "1m", "columns": ["temperature"]}] * 2}, "defined twice"),
    ({"define": [{"name": "m", "size": "1m", "columns": ["temperature"]}],
      "alerts": [{"column": "temperature", "type": "zscore", "window": "x"}]}, "window 'x' is not defined"),
    ({"define": [{"name": "m", "size": "1m", "columns": ["temperature"]}],
      "alerts": [{"column": "temperature", "type": "threshold"}]}, "needs above and/or below"),
])
def test_bad_windows_are_spec_errors_naming_the_problem(windows, words):
    with pytest.raises(SpecError, match="windows") as e:
        spec(windows)
    assert words in str(e.value)


def test_windows_need_an_event_time_and_one_entity_column():
    with pytest.raises(SpecError, match="event_timestamp"):
        parse_spec({**BASE, "event_timestamp": None, "windows": WINDOWS})
    with pytest.raises(SpecError, match="one column"):
        parse_spec({**BASE, "entity_key": ["device_id", "humidity"], "windows": WINDOWS})
