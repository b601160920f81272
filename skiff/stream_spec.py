"""The ``windows:`` section of a dataset spec: event-time windows per entity, lateness and alert rules.

Declared next to the columns, read by ``skiff stream`` (:mod:`skiff.windows` computes them) and by the
feature store (one Feast view per window, :mod:`skiff.stream_features`)::

    windows:
      allowed_lateness: 30s           # watermark = a device's latest event time - 30 s
      define:
        - {name: m1, type: tumbling, size: 1m, columns: [temperature], aggregations: [mean, min, max, count, last]}
        - {name: m15, type: sliding, size: 15m, slide: 1m, columns: [temperature], aggregations: [trend]}
      alerts:
        - {column: temperature, type: threshold, above: 80}
        - {column: temperature, type: zscore, window: m15, z: 4}
      scoring:                        # optional: a registered model scores each reading (or closed window)
        model: sensor-anomaly
        version: champion             # a number, latest or champion (default: the champion, else the latest)
        score: readings               # or windows, with window: m1 (the model's inputs are its features)
        topic: scores/sensors         # MQTT, QoS 1, one message per score
        alert: {above: 0.9}           # an alert per score beyond a threshold

Feature names are ``<window>_<column>_<aggregation>`` (``m1_temperature_mean``), held to the identifier
policy (:mod:`skiff.identifiers`) like every column name.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skiff.errors import SpecError
from skiff.identifiers import NAME_RE, check_identifier
from skiff.versions import VersionRef

__all__ = ["Aggregation", "AGGREGATIONS", "WindowDef", "AlertRule", "ScoreAlert", "StreamScoring",
           "StreamWindows", "parse_duration_us", "check_publish_topic"]

Aggregation = Literal["mean", "min", "max", "sum", "count", "last", "trend"]
#: every aggregation, in the order feature columns are written
AGGREGATIONS: tuple[Aggregation, ...] = ("mean", "min", "max", "sum", "count", "last", "trend")
_DEFAULT_AGGS: tuple[Aggregation, ...] = ("mean", "min", "max", "count", "last")

_UNITS_US = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration_us(value: str | int | float, what: str = "duration") -> int:
    """``"30s"``, ``"1m"``, ``"15m"``, ``"1h"``, ``"500ms"``, ``"1d"`` or a number of seconds, in microseconds."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a duration like 30s, 1m, 1h, got {value!r}")
    if isinstance(value, int | float):
        us = round(float(value) * 1_000_000)
    else:
        m = _DURATION.match(value)
        if m is None:
            raise ValueError(f"{what} {value!r} is not a duration: a number and a unit ms, s, m, h or d (e.g. 30s, 1m)")
        us = round(float(m.group(1)) * _UNITS_US[m.group(2)])
    if us < 0:
        raise ValueError(f"{what} must not be negative")
    return us


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WindowDef(_Strict):
    """One event-time window per entity: ``tumbling`` (back to back) or ``sliding`` (``size`` every ``slide``).

    Windows are aligned to the Unix epoch: a 1-minute window runs from a whole minute to the next."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,30}$", description="Window name: the prefix of its features.")
    type: Literal["tumbling", "sliding"] = Field(default="tumbling", description="tumbling or sliding.")
    size: str | float = Field(description="Window length: 30s, 1m, 15m, 1h ... (or seconds).")
    slide: str | float | None = Field(default=None, description="Sliding windows: how often a window starts; "
                                      "the size must be a whole multiple of it.")
    columns: list[str] = Field(min_length=1, description="Numeric columns aggregated (integer or float).")
    aggregations: list[Aggregation] = Field(
        default_factory=lambda: list(_DEFAULT_AGGS), min_length=1,
        description="mean, min, max, sum, count (non-null values), last (value at the latest event time) and "
        "trend (least-squares slope in units per second).")

    @field_validator("size", "slide")
    @classmethod
    def _duration(cls, v: str | float | None) -> str | float | None:
        if v is not None and parse_duration_us(v, "window size/slide") <= 0:
            raise ValueError("window size and slide must be positive")
        return v

    @property
    def size_us(self) -> int:
        return parse_duration_us(self.size)

    @property
    def slide_us(self) -> int:
        """The step between window starts (the size for tumbling windows): the pane length."""
        return self.size_us if self.slide is None else parse_duration_us(self.slide)

    @model_validator(mode="after")
    def _shape(self) -> WindowDef:
        if self.type == "tumbling" and self.slide is not None and self.slide_us != self.size_us:
            raise ValueError(f"window {self.name!r}: a tumbling window has no slide (use type: sliding)")
        if self.type == "sliding":
            if self.slide is None:
                raise ValueError(f"window {self.name!r}: a sliding window needs slide (e.g. size 15m, slide 1m)")
            if self.slide_us >= self.size_us or self.size_us % self.slide_us:
                raise ValueError(f"window {self.name!r}: size must be a whole multiple of slide, larger than it")
        if len(set(self.aggregations)) != len(self.aggregations) or len(set(self.columns)) != len(self.columns):
            raise ValueError(f"window {self.name!r}: a column or aggregation is listed twice")
        return self

    def feature_names(self) -> list[tuple[str, str, Aggregation]]:
        """(feature name, column, aggregation) in column then aggregation order."""
        aggs = [a for a in AGGREGATIONS if a in self.aggregations]
        return [(f"{self.name}_{c}_{a}", c, a) for c in self.columns for a in aggs]


class AlertRule(_Strict):
    """A rule per reading: ``threshold`` (a value above ``above`` or below ``below``) or ``zscore`` (a value
    more than ``z`` standard deviations from the mean of the device's latest closed ``window``)."""

    column: str = Field(description="The measurement (a numeric column).")
    type: Literal["threshold", "zscore"] = Field(description="threshold or zscore.")
    above: float | None = Field(default=None, description="threshold: alert when the value is above this.")
    below: float | None = Field(default=None, description="threshold: alert when the value is below this.")
    window: str | None = Field(default=None, description="zscore: the window whose mean and spread it uses "
                               "(needs count and mean in its aggregations; the spread is kept alongside).")
    z: float = Field(default=3.0, gt=0, description="zscore: how many standard deviations is unusual.")
    min_count: int = Field(default=10, ge=2, description="zscore: readings the window needs before it judges.")

    @model_validator(mode="after")
    def _shape(self) -> AlertRule:
        if self.type == "threshold" and self.above is None and self.below is None:
            raise ValueError(f"threshold alert on {self.column!r} needs above and/or below")
        if self.type == "zscore" and self.window is None:
            raise ValueError(f"zscore alert on {self.column!r} needs window (the name of a defined window)")
        return self

    @property
    def name(self) -> str:
        if self.type == "threshold":
            parts = ([f"above {self.above:g}"] if self.above is not None else []) + (
                [f"below {self.below:g}"] if self.below is not None else [])
            return f"{self.column} threshold {' or '.join(parts)}"
        return f"{self.column} zscore > {self.z:g} over {self.window}"


def check_publish_topic(topic: str, what: str) -> str:
    """An MQTT topic a consumer publishes to: no wildcards, not a ``$`` system topic, not empty."""
    if not topic or "+" in topic or "#" in topic or topic.startswith("$") or "\x00" in topic or len(topic) > 1024:
        raise ValueError(f"{what} {topic[:100]!r} is not a topic to publish to (no + or # wildcards, no "
                         "leading $, 1 to 1024 characters)")
    return topic


class ScoreAlert(_Strict):
    """An alert per score beyond a threshold."""

    above: float | None = Field(default=None, description="Alert when the score is above this.")
    below: float | None = Field(default=None, description="Alert when the score is below this.")

    @model_validator(mode="after")
    def _shape(self) -> ScoreAlert:
        if self.above is None and self.below is None:
            raise ValueError("a score alert needs above and/or below")
        return self

    @property
    def name(self) -> str:
        parts = ([f"above {self.above:g}"] if self.above is not None else []) + (
            [f"below {self.below:g}"] if self.below is not None else [])
        return f"score {' or '.join(parts)}"

    def fires(self, x: float) -> dict[str, float] | None:
        if self.above is not None and x > self.above:
            return {"above": self.above}
        if self.below is not None and x < self.below:
            return {"below": self.below}
        return None


class StreamScoring(_Strict):
    """A registered model that scores in the consumer: each accepted reading (``score: readings``, the model's
    inputs are columns of the spec) or each closed window of ``window`` (``score: windows``, its inputs are
    that window's features). A binary classifier's score is the positive class's probability, a multiclass
    one's the top probability (with its label), a regressor's its value."""

    model: str = Field(pattern=NAME_RE, description="Registered model name.")
    version: VersionRef | None = Field(default=None, description="A version number, latest or champion "
                                       "(default: the champion, else the latest), resolved by the registry "
                                       "once at start.")
    score: Literal["readings", "windows"] = Field(default="readings", description="What is scored: each "
                                                  "accepted reading or each closed window of `window`.")
    window: str | None = Field(default=None, description="score: windows: the window whose closed results "
                               "are scored.")
    topic: str | None = Field(default=None, description="MQTT topic each score is published to (QoS 1).")
    alert: ScoreAlert | None = Field(default=None, description="An alert per score beyond a threshold "
                                     "(delivered like the windows' alerts).")

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        return None if v is None else check_publish_topic(v, "scoring.topic")

    @model_validator(mode="after")
    def _shape(self) -> StreamScoring:
        if self.score == "windows" and self.window is None:
            raise ValueError("scoring windows needs window (the name of a defined window)")
        if self.score == "readings" and self.window is not None:
            raise ValueError("scoring readings takes no window (use score: windows)")
        return self


class StreamWindows(_Strict):
    """Event-time windows per entity (the entity key, e.g. a device), computed by ``skiff stream``.

    The watermark of a device is its latest event time minus ``allowed_lateness``. A window is closed (final:
    written to the lake and pushed to the online store) once the watermark passes its end. A reading whose
    earliest window is still open updates its windows even when it arrives out of order; a reading whose
    window has closed is quarantined as ``late``, naming the window it missed."""

    allowed_lateness: str | float = Field(default="0s", description="How far behind a device's latest event "
                                          "time a reading may be and still count (30s, 2m ...).")
    define: list[WindowDef] = Field(min_length=1, description="The windows.")
    alerts: list[AlertRule] = Field(default_factory=list, description="Alert rules per reading.")
    alert_topic: str | None = Field(default=None, description="MQTT topic alerts are published to (QoS 1).")
    alert_webhook_env: str | None = Field(default=None, description="Environment variable holding a webhook URL "
                                          "alerts are POSTed to as JSON (never logged).")
    scoring: StreamScoring | None = Field(default=None, description="A registered model scoring each reading "
                                          "or closed window on arrival.")

    @field_validator("alert_topic")
    @classmethod
    def _alert_topic(cls, v: str | None) -> str | None:
        return None if v is None else check_publish_topic(v, "alert_topic")

    @field_validator("allowed_lateness")
    @classmethod
    def _lateness(cls, v: str | float) -> str | float:
        parse_duration_us(v, "allowed_lateness")
        return v

    @property
    def lateness_us(self) -> int:
        return parse_duration_us(self.allowed_lateness)

    def check(self, column_types: dict[str, str], key_columns: list[str], event_timestamp: str | None,
              generated_key: bool) -> None:
        """Check the windows against the spec's columns; a ValueError ``windows: ...`` names the problem."""
        try:
            self._check(column_types, key_columns, event_timestamp, generated_key)
        except SpecError as e:
            raise ValueError(f"windows: {e.message}") from None
        except ValueError as e:
            raise ValueError(f"windows: {e}") from None

    def _check(self, column_types: dict[str, str], key_columns: list[str], event_timestamp: str | None,
               generated_key: bool) -> None:
        if event_timestamp is None:
            raise ValueError("windows need event_timestamp: windows are in event time")
        if generated_key or len(key_columns) != 1:
            raise ValueError("windows are per entity: entity_key must be one column (e.g. device_id)")
        numeric = {n for n, t in column_types.items() if t in ("integer", "float")}
        names: set[str] = set()
        features: set[str] = set()
        for w in self.define:
            if w.name in names:
                raise ValueError(f"window {w.name!r} is defined twice")
            names.add(w.name)
            for c in w.columns:
                if c not in column_types:
                    raise ValueError(f"window {w.name!r}: column {c!r} is not in columns")
                if c not in numeric:
                    raise ValueError(f"window {w.name!r}: column {c!r} is {column_types[c]}; windows aggregate "
                                     "integer or float columns")
            for f, _, _ in w.feature_names():
                check_identifier(f, "window feature")
                if f in column_types or f in features:
                    raise ValueError(f"window feature {f!r} clashes with a column or another window feature")
                features.add(f)
        for a in self.alerts:
            if a.column not in numeric:
                raise ValueError(f"alert on {a.column!r}: not a numeric column of the spec")
            if a.window is not None:
                found = next((d for d in self.define if d.name == a.window), None)
                if found is None:
                    raise ValueError(f"alert on {a.column!r}: window {a.window!r} is not defined")
                if a.column not in found.columns:
                    raise ValueError(f"alert on {a.column!r}: window {a.window!r} does not aggregate it")
        sc = self.scoring
        if sc is not None and sc.window is not None and sc.window not in names:
            raise ValueError(f"scoring: window {sc.window!r} is not defined")
