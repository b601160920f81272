"""Event-time windows per entity: the state ``skiff stream`` keeps, and the rules that close windows.

Pure logic on Arrow tables (no broker, no lake): :class:`WindowEngine` takes the accepted rows of each poll,
in arrival order, and says which rows are duplicates or late, which windows closed, and each entity's
latest reading; :meth:`WindowEngine.snapshot` / :meth:`WindowEngine.restore` checkpoint the state.

The rules (``windows:`` in the spec, :class:`skiff.stream_spec.StreamWindows`), per entity (device):

* every window is aligned to the Unix epoch: a window of size ``S`` sliding by ``P`` (``P = S`` for
  tumbling) starts at each multiple of ``P`` and covers ``[start, start + S)``; its results are combined
  from panes ``[k P, (k + 1) P)``, so a reading updates one pane per window definition, never ``S / P``
  windows;
* the **watermark** is the device's latest event time minus ``allowed_lateness``; a window is **closed**
  (final) once the watermark reaches its end, and only windows holding at least one reading are emitted;
* a reading is **late** when the earliest-ending window it belongs to (over all definitions) is closed:
  it is refused whole (the caller quarantines it with the window it missed), so a closed window never
  changes and every window result equals the same aggregate computed offline over the stored rows;
* a reading that is not late, with the (device, event time) of one already counted, is a **duplicate** (a
  redelivery after a crash between a commit and its acknowledgement), counted and never added twice; a
  redelivered reading whose window has closed meanwhile is late. Either way nothing counts twice, and
  which it is does not depend on how the stream was cut into polls or restarts.

Aggregates: ``mean``, ``min``, ``max``, ``sum``, ``count`` (non-null values), ``last`` (the non-null value
at the latest event time), ``trend`` (least-squares slope of value on event time, per second; null with
fewer than two readings). Null values are skipped, like pandas does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from skiff.errors import InvariantError, SpecError

if TYPE_CHECKING:
    from skiff.spec import DatasetSpec
    from skiff.stream_spec import AlertRule, StreamWindows, WindowDef

__all__ = ["WindowEngine", "WindowBatch", "LateReading", "Alert", "window_features", "WINDOW_START",
           "WINDOW_END", "STATE_PANES", "STATE_DEVICES"]

#: columns of every closed-window table besides the entity key and the features
WINDOW_START = "window_start"
WINDOW_END = "window_end"  # the event time of a window's result (offline store, point in time)
#: checkpoint files of a stream run (underscore: never read as rows of the dataset)
STATE_PANES = "_window_panes.parquet"
STATE_DEVICES = "_window_devices.parquet"

# per column of a pane: n, sum, sum of squares, min, max, Σt, Σt², Σtv (t in seconds from the pane start),
# time of the last non-null value (µs) and that value
_N, _SUM, _SQ, _MIN, _MAX, _ST, _STT, _STV, _LT, _LV = range(10)
_STATS = 10
_TS = pa.timestamp("us", tz="UTC")


@dataclass
class _Device:
    max_t: int | None = None
    seen: set[int] = field(default_factory=set)
    closed_until: int | None = None  # the watermark windows were last closed at
    pruned_at: int | None = None
    #: window name -> pane start (µs) -> stats, _STATS per column of the window
    panes: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    #: window name -> column -> (n, mean, std) of the latest closed window (z-score alerts)
    last_closed: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class LateReading:
    """A refused reading: its row in the poll's table and the window it missed."""

    row: int
    window: str
    start_us: int
    end_us: int

    def describe(self) -> str:
        return f"window {self.window} [{_iso(self.start_us)}, {_iso(self.end_us)}) closed"


@dataclass(frozen=True)
class Alert:
    """One rule that fired on one reading."""

    entity: str
    event_time_us: int
    rule: str
    column: str
    value: float
    detail: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "event_time": _iso(self.event_time_us), "rule": self.rule,
                "column": self.column, "value": self.value, **self.detail}


@dataclass
class WindowBatch:
    """What one poll did to the windows."""

    keep: np.ndarray  # bool per row: counted in its windows (store it)
    duplicate: np.ndarray  # bool per row
    late: list[LateReading]
    closed: dict[str, pa.Table]  # window name -> closed windows (key, window_start, window_end, features)
    latest: list[int]  # rows that are their entity's newest reading (one per entity that moved forward)
    alerts: list[Alert]

    @property
    def closed_rows(self) -> int:
        return sum(t.num_rows for t in self.closed.values())


def _iso(us: int) -> str:
    return pd.Timestamp(us, unit="us", tz="UTC").isoformat()


def window_features(w: WindowDef) -> list[tuple[str, str, str]]:
    """(feature, column, aggregation) of a window definition."""
    return [(f, c, str(a)) for f, c, a in w.feature_names()]


def _nan_min(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def _nan_max(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)


class WindowEngine:
    """The window state of one consumer (every entity it receives)."""

    def __init__(self, spec: DatasetSpec) -> None:
        if spec.windows is None or spec.event_timestamp is None:
            raise SpecError(f"dataset {spec.name!r} declares no windows")
        self.spec = spec
        self.conf: StreamWindows = spec.windows
        self.key = spec.key_columns[0]
        self.ts = spec.event_timestamp
        self.defs: list[WindowDef] = list(self.conf.define)
        self.lateness = self.conf.lateness_us
        self.min_slide = min(w.slide_us for w in self.defs)
        self.devices: dict[str, _Device] = {}
        self._features = {w.name: w.feature_names() for w in self.defs}
        self._key_type = pa.int64() if spec.columns[self.key].type == "integer" else pa.string()

    # -- one poll ------------------------------------------------------------------------------------
    def process(self, table: pa.Table) -> WindowBatch:
        """Take one poll's accepted rows (typed, in arrival order); update and close windows."""
        n = table.num_rows
        keep = np.zeros(n, dtype=bool)
        dup = np.zeros(n, dtype=bool)
        if n == 0:
            return WindowBatch(keep, dup, [], {}, [], [])
        keys = table.column(self.key).to_pylist()
        times = pc.cast(table.column(self.ts), pa.int64())
        if times.null_count:
            raise InvariantError("readings without an event time reach the windows (quarantine them first)")
        t = times.to_numpy(zero_copy_only=False).astype(np.int64)
        late: list[LateReading] = []
        before: dict[str, int | None] = {}
        devices = self.devices
        lateness = self.lateness
        defs = [(w.name, w.size_us, w.slide_us) for w in self.defs]
        for i in range(n):
            k = keys[i]
            ti = int(t[i])
            st = devices.get(k)
            if st is None:
                st = devices[k] = _Device()
            if k not in before:
                before[k] = st.max_t
            if st.max_t is not None:
                wm = st.max_t - lateness
                e_min, missed = min(((ti // p) * p + p, (name, s)) for name, s, p in defs)
                if e_min <= wm:  # late before duplicate: the seen times behind the watermark are pruned
                    late.append(LateReading(i, missed[0], e_min - missed[1], e_min))
                    continue
                if ti in st.seen:
                    dup[i] = True
                    continue
                if ti > st.max_t:
                    st.max_t = ti
            else:
                st.max_t = ti
            st.seen.add(ti)
            keep[i] = True
        latest = []
        for i in np.flatnonzero(keep).tolist():
            prev = before[keys[i]]
            if devices[keys[i]].max_t == int(t[i]) and (prev is None or int(t[i]) > prev):
                latest.append(i)
        alerts = self._alerts(table, keep, keys, t) if self.conf.alerts else []
        if keep.any():
            self._update(table.filter(pa.array(keep)), t[keep])
        closed = self._close(sorted({keys[i] for i in np.flatnonzero(keep).tolist()}, key=str))
        return WindowBatch(keep, dup, late, closed, latest, alerts)

    def _update(self, rows: pa.Table, t: np.ndarray) -> None:
        keys = rows.column(self.key).to_numpy(zero_copy_only=False)
        order = np.argsort(t, kind="stable")
        for w in self.defs:
            p = w.slide_us
            pane = (t // p) * p
            frame: dict[str, Any] = {"k": keys, "pane": pane}
            trel = (t - pane) / 1e6
            aggs: dict[str, tuple[str, str]] = {}
            for j, c in enumerate(w.columns):
                v = pc.cast(rows.column(c), pa.float64()).to_numpy(zero_copy_only=False)
                m = ~np.isnan(v)
                v0 = np.where(m, v, 0.0)
                tr = np.where(m, trel, 0.0)
                frame.update({f"n{j}": m.astype(np.float64), f"s{j}": v0, f"q{j}": v0 * v0, f"v{j}": v,
                              f"t{j}": tr, f"tt{j}": tr * tr, f"tv{j}": tr * v0,
                              f"lt{j}": np.where(m, t.astype(np.float64), np.nan)})
                aggs.update({f"n{j}": (f"n{j}", "sum"), f"s{j}": (f"s{j}", "sum"), f"q{j}": (f"q{j}", "sum"),
                             f"mn{j}": (f"v{j}", "min"), f"mx{j}": (f"v{j}", "max"), f"t{j}": (f"t{j}", "sum"),
                             f"tt{j}": (f"tt{j}", "sum"), f"tv{j}": (f"tv{j}", "sum"), f"lt{j}": (f"lt{j}", "max"),
                             f"lv{j}": (f"v{j}", "last")})
            df = pd.DataFrame(frame).iloc[order]
            g = df.groupby(["k", "pane"], sort=False).agg(**aggs)
            ncol = len(w.columns)
            cols = [[g[f"{a}{j}"].to_numpy() for a in ("n", "s", "q", "mn", "mx", "t", "tt", "tv", "lt", "lv")]
                    for j in range(ncol)]
            idx = g.index.tolist()
            for r, (k, pn) in enumerate(idx):
                panes = self.devices[k].panes.setdefault(w.name, {})
                cur = panes.get(int(pn))
                if cur is None:
                    cur = panes[int(pn)] = [0.0, 0.0, 0.0, math.nan, math.nan, 0.0, 0.0, 0.0, math.nan, math.nan] * ncol
                for j in range(ncol):
                    o = j * _STATS
                    a = cols[j]
                    cur[o + _N] += float(a[0][r])
                    cur[o + _SUM] += float(a[1][r])
                    cur[o + _SQ] += float(a[2][r])
                    cur[o + _MIN] = _nan_min(cur[o + _MIN], float(a[3][r]))
                    cur[o + _MAX] = _nan_max(cur[o + _MAX], float(a[4][r]))
                    cur[o + _ST] += float(a[5][r])
                    cur[o + _STT] += float(a[6][r])
                    cur[o + _STV] += float(a[7][r])
                    lt = float(a[8][r])
                    if not math.isnan(lt) and (math.isnan(cur[o + _LT]) or lt > cur[o + _LT]):
                        cur[o + _LT], cur[o + _LV] = lt, float(a[9][r])

    def _combine(self, w: WindowDef, panes: dict[int, list[float]], start: int) -> list[float | None]:
        """The features of window ``[start, start + size)`` from its panes."""
        out: list[float | None] = []
        parts = [(p, panes[p]) for p in range(start, start + w.size_us, w.slide_us) if p in panes]
        for j, _c in enumerate(w.columns):
            o = j * _STATS
            n = s = q = st = stt = stv = 0.0
            mn = mx = lt = lv = math.nan
            for p, cur in parts:
                d = (p - start) / 1e6
                pn, ps = cur[o + _N], cur[o + _SUM]
                n += pn
                s += ps
                q += cur[o + _SQ]
                st += cur[o + _ST] + pn * d
                stt += cur[o + _STT] + 2 * d * cur[o + _ST] + pn * d * d
                stv += cur[o + _STV] + d * ps
                mn, mx = _nan_min(mn, cur[o + _MIN]), _nan_max(mx, cur[o + _MAX])
                if not math.isnan(cur[o + _LT]) and (math.isnan(lt) or cur[o + _LT] > lt):
                    lt, lv = cur[o + _LT], cur[o + _LV]
            den = n * stt - st * st
            values = {"mean": s / n if n else None, "min": None if math.isnan(mn) else mn,
                      "max": None if math.isnan(mx) else mx, "sum": s, "count": n,
                      "last": None if math.isnan(lv) else lv,
                      "trend": (n * stv - st * s) / den if n >= 2 and den > 1e-12 * max(1.0, n * stt) else None}
            out += [values[a] for a in _ordered(w)]
            out.append(None if n == 0 else math.sqrt(max(0.0, q / n - (s / n) ** 2)))  # spread (alerts)
        return out

    def _close(self, keys: Sequence[str]) -> dict[str, pa.Table]:
        rows: dict[str, list[tuple[Any, int, int, list[float | None]]]] = {w.name: [] for w in self.defs}
        for k in keys:
            st = self.devices[k]
            if st.max_t is None:
                continue
            wm = st.max_t - self.lateness
            lo = st.closed_until
            if lo is not None and wm <= lo:
                continue
            for w in self.defs:
                panes = st.panes.get(w.name)
                if not panes:
                    continue
                size, slide = w.size_us, w.slide_us
                starts = sorted({p - size + slide + i * slide for p in panes for i in range(size // slide)})
                for s in starts:
                    e = s + size
                    if e <= wm and (lo is None or e > lo):
                        values = self._combine(w, panes, s)
                        rows[w.name].append((k, s, e, values))
                        self._remember(st, w, values)
                for p in [p for p in panes if p + size <= wm]:
                    del panes[p]
            st.closed_until = wm
            if st.pruned_at is None or wm - st.pruned_at >= self.min_slide:
                bound = wm - self.min_slide
                st.seen = {x for x in st.seen if x > bound}
                st.pruned_at = wm
        return {name: self._closed_table(self._by_name(name), r) for name, r in rows.items() if r}

    def _remember(self, st: _Device, w: WindowDef, values: list[float | None]) -> None:
        per = len(_ordered(w)) + 1
        got = {}
        order = _ordered(w)
        for j, c in enumerate(w.columns):
            chunk = values[j * per:(j + 1) * per]
            n = chunk[order.index("count")] if "count" in order else None
            mean = chunk[order.index("mean")] if "mean" in order else None
            if n is not None and mean is not None and chunk[-1] is not None:
                got[c] = (float(n), float(mean), float(chunk[-1]))
        st.last_closed[w.name] = got

    def _by_name(self, name: str) -> WindowDef:
        return next(w for w in self.defs if w.name == name)

    def _closed_table(self, w: WindowDef, rows: list[tuple[Any, int, int, list[float | None]]]) -> pa.Table:
        per = len(_ordered(w)) + 1
        cols: dict[str, pa.Array] = {
            self.key: pa.array([r[0] for r in rows], self._key_type),
            WINDOW_START: pa.array([r[1] for r in rows], pa.int64()).cast(_TS),
            WINDOW_END: pa.array([r[2] for r in rows], pa.int64()).cast(_TS),
        }
        order = _ordered(w)
        for j, c in enumerate(w.columns):
            for a_i, a in enumerate(order):
                vals = [r[3][j * per + a_i] for r in rows]
                typ = pa.int64() if a == "count" else pa.float64()
                cols[f"{w.name}_{c}_{a}"] = pa.array([None if v is None else (int(v) if a == "count" else v)
                                                      for v in vals], typ)
        return pa.table(cols)

    def empty_closed(self, name: str) -> pa.Table:
        """The closed-window table of window ``name`` with no rows (its schema)."""
        return self._closed_table(self._by_name(name), []).slice(0, 0)

    # -- alerts ----------------------------------------------------------------------------------------
    def _alerts(self, table: pa.Table, keep: np.ndarray, keys: list[Any], t: np.ndarray) -> list[Alert]:
        out: list[Alert] = []
        idx = np.flatnonzero(keep)
        for rule in self.conf.alerts:
            v = pc.cast(table.column(rule.column), pa.float64()).to_numpy(zero_copy_only=False)
            for i in idx.tolist():
                x = float(v[i])
                if math.isnan(x):
                    continue
                fired = _fires(rule, x, self.devices[keys[i]])
                if fired is not None:
                    out.append(Alert(str(keys[i]), int(t[i]), rule.name, rule.column, x, fired))
        return out

    # -- checkpoint -------------------------------------------------------------------------------------
    def snapshot(self) -> tuple[pa.Table, pa.Table]:
        """The whole state as two tables (panes; devices with their watermark, seen times and last closes)."""
        pk: list[Any] = []
        pw: list[str] = []
        pp: list[int] = []
        ps: list[list[float]] = []
        for k, st in self.devices.items():
            for name, panes in st.panes.items():
                for p, stats in panes.items():
                    pk.append(k)
                    pw.append(name)
                    pp.append(p)
                    ps.append(stats)
        panes_t = pa.table({"key": pa.array(pk, self._key_type), "window": pa.array(pw, pa.string()),
                            "pane": pa.array(pp, pa.int64()), "stats": pa.array(ps, pa.list_(pa.float64()))})
        dk = list(self.devices)
        dev = [self.devices[k] for k in dk]
        closes = [[(name, c, n, m, s) for name, d in st.last_closed.items() for c, (n, m, s) in d.items()]
                  for st in dev]
        devices_t = pa.table({
            "key": pa.array(dk, self._key_type),
            "max_t": pa.array([st.max_t for st in dev], pa.int64()),
            "closed_until": pa.array([st.closed_until for st in dev], pa.int64()),
            "pruned_at": pa.array([st.pruned_at for st in dev], pa.int64()),
            "seen": pa.array([sorted(st.seen) for st in dev], pa.list_(pa.int64())),
            "last_closed": pa.array([[{"window": a, "column": b, "n": n, "mean": m, "std": s}
                                      for a, b, n, m, s in c] for c in closes],
                                    pa.list_(pa.struct([("window", pa.string()), ("column", pa.string()),
                                                        ("n", pa.float64()), ("mean", pa.float64()),
                                                        ("std", pa.float64())]))),
        })
        return panes_t, devices_t

    def restore(self, panes: pa.Table, devices: pa.Table) -> None:
        """Replace the state with a :meth:`snapshot`; windows no longer defined are left out."""
        names = {w.name: len(w.columns) * _STATS for w in self.defs}
        self.devices = {}
        for row in devices.to_pylist():
            st = _Device(max_t=row["max_t"], seen=set(row["seen"] or []), closed_until=row["closed_until"],
                         pruned_at=row["pruned_at"])
            for c in row["last_closed"] or []:
                st.last_closed.setdefault(c["window"], {})[c["column"]] = (c["n"], c["mean"], c["std"])
            self.devices[row["key"]] = st
        for row in panes.to_pylist():
            width = names.get(row["window"])
            if width is None:
                continue
            stats = [math.nan if v is None else float(v) for v in row["stats"]]
            if len(stats) != width:
                raise InvariantError(f"window {row['window']!r}: checkpointed pane has {len(stats)} statistics, "
                                     f"the spec's columns need {width} (the window's columns changed)")
            self.devices.setdefault(row["key"], _Device()).panes.setdefault(row["window"], {})[row["pane"]] = stats

    @property
    def key_type(self) -> pa.DataType:
        """The Arrow type of the entity key in the window tables (int64 or string)."""
        return self._key_type

    @property
    def open_windows(self) -> int:
        """Panes held (open windows' state), over all entities."""
        return sum(len(p) for st in self.devices.values() for p in st.panes.values())


def _ordered(w: WindowDef) -> list[str]:
    """The aggregations of ``w`` in the order its features are written."""
    return [a for _, c, a in w.feature_names() if c == w.columns[0]]


def _fires(rule: AlertRule, x: float, st: _Device) -> dict[str, float] | None:
    if rule.type == "threshold":
        if rule.above is not None and x > rule.above:
            return {"above": rule.above}
        if rule.below is not None and x < rule.below:
            return {"below": rule.below}
        return None
    got = st.last_closed.get(rule.window or "", {}).get(rule.column)
    if got is None:
        return None
    n, mean, std = got
    if n < rule.min_count or std <= 0:
        return None
    z = (x - mean) / std
    return {"zscore": round(z, 4), "mean": mean, "std": std, "z": rule.z} if abs(z) > rule.z else None
