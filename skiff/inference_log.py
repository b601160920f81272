"""The inference log: what a served model was asked and answered, sampled, written as Parquet.

Contract (readers — the drift monitor, accuracy joins, people with pyarrow — rely on it):

* **Where**: under the root's own ``inference/`` prefix (:data:`skiff.layout.INFERENCE`, not the lake:
  serving may write it and nothing else, the monitor reads it; :func:`log_store`),
  ``<model>/version=<v>/date=YYYY-MM-DD/hour=HH/part-<time>-<id>.parquet`` (UTC hour of the request). Files appear whole: each is written once through
  :meth:`skiff.storage.Store.write_bytes` (a hidden temp file renamed into place locally, one PUT on an
  object store). Names starting with ``_`` or ``.`` are not data.
* **Rows**: one per instance of a request (a batch request of 3 rows gives 3 rows with ``row`` 0..2),
  with the columns of :func:`log_schema`: ``model``, ``version``, ``request_id``, ``row``, ``timestamp``
  (UTC, microseconds), ``latency_ms``, ``status`` (HTTP), ``error``, ``sampled`` (true: chosen by the
  sampling rate; false: logged regardless of it, e.g. an error the caller forced), ``sample_rate`` (the
  rate in force: weight a sampled row by ``1 / sample_rate``), ``inputs`` (a struct of the version's
  input columns, typed by the spec) and ``outputs`` (a struct: ``prediction`` and, for classifiers,
  ``probability`` of the positive class).
* **Personal data**: columns a dataset spec marks ``pii: hash`` are written as a keyed hash (HMAC-SHA-256,
  hex) — equal values stay joinable, the value is not recoverable without the key — and ``pii: drop``
  columns are not written. The key comes from a secret (:func:`hash_key_from_env`), never from a file in
  the repository, and is never logged; a model with hashed columns refuses to log without one.

The writer (:class:`InferenceLogWriter`) never blocks the request path: :meth:`~InferenceLogWriter.offer`
decides sampling, puts the request on a bounded queue and returns; when the queue is full the request is
dropped and counted. A background thread turns batches into Parquet files (hashing happens there, off the
request path). Its counters reconcile: ``offered = unsampled + dropped + accepted``, and
``accepted = logged + failed + pending``; serving exports them as Prometheus metrics.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import io
import itertools
import logging
import os
import queue
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from skiff import layout
from skiff.errors import ConfigError, UsageError
from skiff.identifiers import NAME_RE
from skiff.storage import Store

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

    from skiff.config import Settings
    from skiff.registry import VersionMetadata
    from skiff.spec import DatasetSpec

__all__ = ["ModelLog", "InferenceLogWriter", "LogCounters", "log_schema", "partition_parts", "read_log",
           "log_partitions", "hash_key_from_env", "model_log_for_version", "log_store", "INFERENCE", "KEY_ENV", "PiiAction"]

log = logging.getLogger(__name__)

#: the root prefix of the inference log (re-exported from :mod:`skiff.layout`)
INFERENCE = layout.INFERENCE
#: the secret holding the key of hashed columns (or ``<KEY_ENV>_FILE``: a file holding it, e.g. a mounted Secret)
KEY_ENV = "SKIFF_INFERENCE_LOG_KEY"

PiiAction = Literal["hash", "drop"]
_NAME = re.compile(NAME_RE)
_MIN_KEY_BYTES = 16


def hash_key_from_env(env: Mapping[str, str] | None = None) -> bytes | None:
    """The hashing key from ``SKIFF_INFERENCE_LOG_KEY``, or the file ``SKIFF_INFERENCE_LOG_KEY_FILE`` names
    (a mounted Kubernetes Secret); None when neither is set. Keys shorter than 16 bytes are refused."""
    env = os.environ if env is None else env
    raw: bytes | None = None
    if env.get(KEY_ENV):
        raw = env[KEY_ENV].encode()
    elif env.get(f"{KEY_ENV}_FILE"):
        path = env[f"{KEY_ENV}_FILE"]
        try:
            with open(path, "rb") as f:
                raw = f.read().strip()
        except OSError as e:
            raise ConfigError(f"{KEY_ENV}_FILE: cannot read the key file ({e.strerror})") from None
    if raw is not None and len(raw) < _MIN_KEY_BYTES:
        raise ConfigError(f"the inference-log hashing key must be at least {_MIN_KEY_BYTES} bytes")
    return raw


def _arrow_type(spec_type: str) -> pa.DataType:
    import pyarrow as pa

    types: dict[str, pa.DataType] = {
        "string": pa.string(), "category": pa.string(), "integer": pa.int64(), "float": pa.float64(),
        "boolean": pa.bool_(), "datetime": pa.timestamp("us", tz="UTC"),
    }
    if spec_type not in types:
        raise UsageError(f"no inference-log type for spec type {spec_type!r}")
    return types[spec_type]


def log_schema(input_schema: Mapping[str, str], pii: Mapping[str, PiiAction] | None = None,
               prediction_type: str = "string") -> pa.Schema:
    """The Parquet schema of a model's log: ``input_schema`` is the version's input column -> spec type
    (:attr:`skiff.registry.VersionMetadata.input_schema`); ``pii`` drops or hashes (as hex text) columns;
    ``prediction_type`` is the spec type of the prediction (``string`` for class labels)."""
    import pyarrow as pa

    pii = pii or {}
    inputs = []
    for name, spec_type in input_schema.items():
        action = pii.get(name)
        if action == "drop":
            continue
        inputs.append(pa.field(name, pa.string() if action == "hash" else _arrow_type(spec_type)))
    return pa.schema([
        pa.field("model", pa.string(), nullable=False),
        pa.field("version", pa.int32(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("latency_ms", pa.float64()),
        pa.field("status", pa.int16()),
        pa.field("error", pa.string()),
        pa.field("sampled", pa.bool_(), nullable=False),
        pa.field("sample_rate", pa.float64(), nullable=False),
        pa.field("inputs", pa.struct(inputs)),
        pa.field("outputs", pa.struct([pa.field("prediction", _arrow_type(prediction_type)),
                                       pa.field("probability", pa.float64())])),
    ])


def log_store(settings: Settings) -> Store:
    """The store of the inference log: ``<root>/inference`` with the settings' storage options."""
    return Store(f"{settings.root}/{layout.INFERENCE}", settings.storage_options)


def partition_parts(model: str, version: int, when: dt.datetime) -> tuple[str, ...]:
    """The folder (parts relative to :func:`log_store`) of a model version's log for the UTC hour of ``when``."""
    when = when.astimezone(dt.UTC)
    return (model, f"version={version}", f"date={when:%Y-%m-%d}", f"hour={when:%H}")


@dataclass(frozen=True)
class ModelLog:
    """How one model's requests are logged."""

    model: str
    input_schema: Mapping[str, str]
    sample_rate: float = 1.0
    pii: Mapping[str, PiiAction] = field(default_factory=dict)
    prediction_type: str = "string"

    def __post_init__(self) -> None:
        if not _NAME.match(self.model):
            raise UsageError(f"invalid model name for the inference log: {self.model!r}")
        if not 0.0 <= self.sample_rate <= 1.0:
            raise UsageError(f"sample_rate of {self.model} must be between 0 and 1, got {self.sample_rate}")
        unknown = set(self.pii) - set(self.input_schema)
        if unknown:
            raise UsageError(f"pii columns of {self.model} are not inputs: {sorted(unknown)}")

    @classmethod
    def from_spec(cls, model: str, input_schema: Mapping[str, str], spec: DatasetSpec, *,
                  sample_rate: float = 1.0, prediction_type: str | None = None) -> ModelLog:
        """The log of a version trained on ``spec``: its ``pii`` column marks, its target's type."""
        pii: dict[str, PiiAction] = {n: c.pii for n, c in spec.columns.items() if c.pii and n in input_schema}
        if prediction_type is None:  # class labels are logged as text whatever their type
            prediction_type = "float" if spec.problem_type == "regression" else "string"
        return cls(model=model, input_schema=dict(input_schema), sample_rate=sample_rate, pii=pii,
                   prediction_type=prediction_type)


def model_log_for_version(meta: VersionMetadata, *, sample_rate: float = 1.0) -> ModelLog:
    """The log of a registered version: its input schema, the pii marks of the spec it was trained on."""
    from skiff.spec import DatasetSpec

    spec_doc = meta.dataset.get("spec")
    if spec_doc:
        return ModelLog.from_spec(meta.name, meta.input_schema, DatasetSpec.model_validate(spec_doc),
                                  sample_rate=sample_rate)
    return ModelLog(meta.name, dict(meta.input_schema), sample_rate=sample_rate,
                    prediction_type="float" if meta.problem_type == "regression" else "string")


class LogCounters:
    """Per-model request counts (monotonic; safe to read from any thread)."""

    FIELDS = ("offered", "unsampled", "dropped", "accepted", "logged", "failed", "rows_written", "invalid_values",
              "files_written")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def add(self, model: str, name: str, n: int = 1) -> None:
        with self._lock:
            per = self._counts.setdefault(model, dict.fromkeys(self.FIELDS, 0))
            per[name] += n

    def collector(self, prefix: str = "skiff_inference_log") -> Collector:
        """A Prometheus collector of these counters (``<prefix>_<counter>_total{model=...}``, and
        ``<prefix>_pending{model=...}`` as a gauge): ``prometheus_client.REGISTRY.register(...)`` it."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.registry import Collector

        counters = self

        class _Collector(Collector):
            def collect(self) -> Iterator[Metric]:
                snap = counters.snapshot()
                for name in LogCounters.FIELDS:
                    family = CounterMetricFamily(f"{prefix}_{name}", _HELP[name], labels=["model"])
                    for model, values in sorted(snap.items()):
                        family.add_metric([model], values[name])
                    yield family
                gauge = GaugeMetricFamily(f"{prefix}_pending", "Requests accepted, not yet written", labels=["model"])
                for model, values in sorted(snap.items()):
                    gauge.add_metric([model], values["pending"])
                yield gauge

        return _Collector()

    def snapshot(self) -> dict[str, dict[str, int]]:
        """model -> counter -> value; ``pending`` (accepted, not yet written or failed) is derived."""
        with self._lock:
            out = {m: dict(c) for m, c in self._counts.items()}
        for c in out.values():
            c["pending"] = c["accepted"] - c["logged"] - c["failed"]
        return out


_HELP = {
    "offered": "Requests offered to the inference log",
    "unsampled": "Requests not chosen by the sampling rate",
    "dropped": "Requests dropped because the log queue was full (or the writer closed)",
    "accepted": "Requests queued for writing",
    "logged": "Requests written to the inference log",
    "failed": "Requests lost to a failed write",
    "rows_written": "Rows (request instances) written",
    "invalid_values": "Input or output values that did not fit their column's type (written as null)",
    "files_written": "Parquet files written",
}


@dataclass
class _Entry:
    model: str
    version: int
    request_id: str
    when: dt.datetime
    latency_ms: float | None
    status: int | None
    error: str | None
    sampled: bool
    rate: float
    instances: Sequence[Mapping[str, Any]]
    predictions: Sequence[Any]
    probabilities: Sequence[float | None] | None
    columns: Mapping[str, Sequence[Any]] | None = None
    n: int = 0
    outputs: Callable[[], tuple[Sequence[Any], Sequence[float | None] | None]] | None = None

    def rows(self) -> int:
        return self.n if self.columns is not None else len(self.instances)


class InferenceLogWriter:
    """Samples, queues and writes the inference log of one or more models to ``store`` (:func:`log_store`).

    ``queue_size`` bounds the queued requests (beyond it: dropped, counted); a file is written when a
    model's batch reaches ``flush_rows`` rows or ``flush_interval_s`` after its first row, and on
    :meth:`flush` / :meth:`close`. ``hash_key`` is needed when any model hashes a column.

    The request path touches only a deque (an append, no lock, no thread wake-up): the writer thread
    wakes every ``poll_s`` seconds (or when ``flush_rows`` requests wait, or on :meth:`flush` /
    :meth:`close`) and takes everything queued at once, so logging every request costs the serving
    thread neither a context switch nor the GIL per request."""

    def __init__(self, store: Store, models: Sequence[ModelLog], *, hash_key: bytes | None = None,
                 queue_size: int = 10_000, flush_rows: int = 5_000, flush_interval_s: float = 5.0,
                 seed: int | None = None, poll_s: float = 0.2) -> None:
        if queue_size < 1 or flush_rows < 1 or flush_interval_s <= 0 or poll_s <= 0:
            raise UsageError("queue_size and flush_rows must be at least 1, flush_interval_s and poll_s above 0")
        self.store = store
        self.models = {m.model: m for m in models}
        if any(a == "hash" for m in models for a in m.pii.values()):
            if hash_key is None:
                raise ConfigError(f"hashed pii columns need a key: set {KEY_ENV} (or {KEY_ENV}_FILE) from a secret")
            if len(hash_key) < _MIN_KEY_BYTES:
                raise ConfigError(f"the inference-log hashing key must be at least {_MIN_KEY_BYTES} bytes")
        self._key = hash_key
        self._schemas = {m.model: log_schema(m.input_schema, m.pii, m.prediction_type) for m in models}
        self.counters = LogCounters()
        self.queue_size = queue_size
        # deque.append / popleft are atomic: the request path takes no lock and wakes no thread
        self._queue: deque[_Entry] = deque()
        self._flush_rows, self._flush_interval = flush_rows, flush_interval_s
        self._poll = min(poll_s, flush_interval_s)
        self._random = random.Random(seed)
        self._rand_lock = threading.Lock()
        self._wake = threading.Event()
        self._flush_requests: queue.Queue[threading.Event] = queue.Queue()
        self._closed = False
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="skiff-inference-log", daemon=True)
        self._thread.start()

    # -- the request path ------------------------------------------------------------------------------
    def sampled(self, model: str) -> bool | None:
        """Draw the sampling decision for one request of ``model``, counting it as offered (and unsampled
        when not chosen): True to log it, False not. Lets a caller skip building a request's log entry
        when it is not sampled; follow a True with :meth:`offer` ``(..., decided=True)``. None: the model
        has no log here."""
        cfg = self.models.get(model)
        if cfg is None:
            return None
        self.counters.add(model, "offered")
        if cfg.sample_rate < 1.0:
            with self._rand_lock:
                draw = self._random.random()
            if draw >= cfg.sample_rate:
                self.counters.add(model, "unsampled")
                return False
        return True

    def offer(self, model: str, version: int, request_id: str, instances: Sequence[Mapping[str, Any]] = (),
              predictions: Sequence[Any] = (), *, latency_ms: float | None = None,
              probabilities: Sequence[float | None] | None = None, status: int | None = 200,
              error: str | None = None, force: bool = False, when: dt.datetime | None = None,
              columns: Mapping[str, Sequence[Any]] | None = None, n: int | None = None,
              outputs: Callable[[], tuple[Sequence[Any], Sequence[float | None] | None]] | None = None,
              decided: bool = False) -> bool:
        """Log a request if sampled (``force``: log it regardless, with ``sampled`` false); never blocks.
        Returns whether it was queued.

        The request's rows are ``instances`` (column -> value per row) or, cheaper on the request path,
        ``columns`` (column -> values) with ``n`` rows. Its answers are ``predictions`` (and
        ``probabilities``) or ``outputs``: a function returning both, called on the writer thread (so the
        request path does not format them twice). ``decided``: :meth:`sampled` already chose it (and
        counted it as offered)."""
        cfg = self.models.get(model)
        if cfg is None:
            raise UsageError(f"model {model!r} has no inference log here")
        sampled = True
        if decided:
            pass
        elif force:
            self.counters.add(model, "offered")
            sampled = False
        elif not self.sampled(model):
            return False
        if self._closed or len(self._queue) >= self.queue_size:
            self.counters.add(model, "dropped")
            return False
        entry = _Entry(model, version, request_id, when or dt.datetime.now(dt.UTC), latency_ms, status, error,
                       sampled, cfg.sample_rate, instances, predictions, probabilities, columns,
                       (n if n is not None else 0) if columns is not None else len(instances), outputs)
        self._queue.append(entry)
        self.counters.add(model, "accepted")
        if len(self._queue) >= self._flush_rows:
            self._wake.set()
        return True

    # -- control ---------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (offers are then dropped and counted)."""
        return self._closed

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything queued so far; True when done within ``timeout``."""
        done = threading.Event()
        self._flush_requests.put(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, write what is queued, stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def __enter__(self) -> InferenceLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        batches: dict[str, list[_Entry]] = {}
        rows: dict[str, int] = {}
        first: dict[str, float] = {}
        while True:
            self._wake.wait(self._poll)
            self._wake.clear()
            stop = self._stopping
            # the flush requests made so far: every offer before them is on the deque now, so draining it
            # below covers them (a request made after this point waits for the next round)
            waiting = []
            while True:
                try:
                    waiting.append(self._flush_requests.get_nowait())
                except queue.Empty:
                    break
            while True:
                try:
                    item = self._queue.popleft()
                except IndexError:
                    break
                batches.setdefault(item.model, []).append(item)
                rows[item.model] = rows.get(item.model, 0) + max(1, item.rows())
                first.setdefault(item.model, time.monotonic())
            flush_all = stop or bool(waiting)
            now = time.monotonic()
            for model in list(batches):
                if flush_all or rows.get(model, 0) >= self._flush_rows or now - first[model] >= self._flush_interval:
                    self._write(model, batches.pop(model))
                    rows.pop(model, None)
                    first.pop(model, None)
            for done in waiting:
                done.set()
            if stop:
                return

    def _write(self, model: str, entries: list[_Entry]) -> None:
        groups: dict[tuple[int, tuple[str, ...]], list[_Entry]] = {}
        for e in entries:
            groups.setdefault((e.version, partition_parts(model, e.version, e.when)), []).append(e)
        for (_, parts), group in groups.items():
            try:
                table, invalid = self._table(model, group)
                buf = io.BytesIO()
                import pyarrow.parquet as pq

                pq.write_table(table, buf, compression="zstd")
                name = f"part-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
                self.store.write_bytes(buf.getvalue(), *parts, name)
            except Exception as e:  # a failed write loses this batch, counted; the thread must live on
                log.error("inference log of %s: could not write %d request(s) to %s (%s: %s)", model, len(group),
                          "/".join(parts), type(e).__name__, e)
                self.counters.add(model, "failed", len(group))
                continue
            self.counters.add(model, "logged", len(group))
            self.counters.add(model, "rows_written", table.num_rows)
            self.counters.add(model, "files_written")
            if invalid:
                self.counters.add(model, "invalid_values", invalid)

    def _hash(self, value: Any) -> str | None:
        if value is None:
            return None
        assert self._key is not None
        return hmac.new(self._key, str(value).encode(), hashlib.sha256).hexdigest()

    def _table(self, model: str, entries: list[_Entry]) -> tuple[pa.Table, int]:
        """One Parquet table of a batch of requests, built column by column (C-level loops where it can:
        this runs on the writer thread, whose time under the GIL is taken from the serving thread)."""
        import numpy as np
        import pyarrow as pa

        cfg, schema = self.models[model], self._schemas[model]
        in_type = schema.field("inputs").type
        names = [f.name for f in in_type]
        ns = [max(1, e.rows()) for e in entries]  # a request without rows (refused before parsing) is one row
        total = sum(ns)
        repeat = None if total == len(entries) else pa.array(np.repeat(np.arange(len(entries)), ns))

        def per_request(values: list[Any], name: str) -> pa.Array:
            arr = pa.array(values, type=schema.field(name).type)
            return arr if repeat is None else arr.take(repeat)

        columns: dict[str, pa.Array] = {
            "model": pa.array([model] * total, type=pa.string()),
            "version": per_request([e.version for e in entries], "version"),
            "request_id": per_request([e.request_id for e in entries], "request_id"),
            "row": pa.array(np.zeros(total, dtype=np.int32) if repeat is None
                            else np.concatenate([np.arange(n, dtype=np.int32) for n in ns])),
            "timestamp": per_request([e.when for e in entries], "timestamp"),
            "latency_ms": per_request([e.latency_ms for e in entries], "latency_ms"),
            "status": per_request([e.status for e in entries], "status"),
            "error": per_request([e.error for e in entries], "error"),
            "sampled": per_request([e.sampled for e in entries], "sampled"),
            "sample_rate": per_request([e.rate for e in entries], "sample_rate"),
        }
        # every request's rows as columns: column -> values (n of them; None for a column it lacks)
        blocks: list[Mapping[str, Sequence[Any]]] = []
        for e in entries:
            if e.columns is not None and e.n:
                blocks.append(e.columns)
            else:
                rows = list(e.instances) or [{}]
                blocks.append({name: [r.get(name) if isinstance(r, Mapping) else None for r in rows]
                               for name in names})
        invalid = 0
        in_arrays = []
        for f in in_type:
            name = f.name
            values = list(itertools.chain.from_iterable(
                b[name][:n] if name in b else [None] * n for b, n in zip(blocks, ns, strict=True)))
            if cfg.pii.get(name) == "hash":
                values = [self._hash(v) for v in values]
            arr, bad = _typed_array(values, f.type)
            in_arrays.append(arr)
            invalid += bad
        columns["inputs"] = (pa.StructArray.from_arrays(in_arrays, fields=list(in_type)) if in_arrays
                             else pa.array([{}] * total, type=in_type))
        predictions: list[Any] = []
        probabilities: list[Any] = []
        for e, n in zip(entries, ns, strict=True):
            preds: Sequence[Any] = e.predictions
            probs = e.probabilities
            if e.outputs is not None:
                try:
                    preds, probs = e.outputs()
                except Exception as exc:  # an answer that cannot be read back: the inputs are still logged
                    log.warning("inference log of %s: outputs of %s unreadable (%s)", model, e.request_id, exc)
                    preds, probs = (), None
            if len(preds) == n:
                predictions.extend(preds)
            else:
                predictions.extend(preds[i] if i < len(preds) else None for i in range(n))
            if probs is not None and len(probs) == n:
                probabilities.extend(probs)
            else:
                probabilities.extend(probs[i] if probs is not None and i < len(probs) else None for i in range(n))
        out_type = schema.field("outputs").type
        pred, bad_p = _typed_array(predictions, out_type.field("prediction").type)
        prob, bad_q = _typed_array(probabilities, pa.float64())
        columns["outputs"] = pa.StructArray.from_arrays([pred, prob], fields=list(out_type))
        return pa.Table.from_pydict(columns, schema=schema), invalid + bad_p + bad_q


def _typed_array(values: list[Any], arrow_type: pa.DataType) -> tuple[pa.Array, int]:
    """``values`` as ``arrow_type``; a value that does not convert becomes null and is counted."""
    import pyarrow as pa

    try:  # the common case: every value already has the column's type
        return pa.array(values, type=arrow_type), 0
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    if pa.types.is_string(arrow_type):
        values = [None if v is None else str(v) for v in values]
        try:
            return pa.array(values, type=arrow_type), 0
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass
    out, bad = [], 0
    for v in values:
        try:
            pa.array([v], type=arrow_type)
            out.append(v)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            out.append(None)
            bad += 1
    return pa.array(out, type=arrow_type), bad


def log_partitions(store: Store, model: str, version: int | None = None) -> list[tuple[int, dt.datetime]]:
    """The (version, UTC hour) partitions of a model's log, oldest first."""
    out = []
    base = (model,)
    versions = [f"version={version}"] if version is not None else store.listdir(*base)
    for vdir in versions:
        if not vdir.startswith("version=") or not vdir[8:].isdigit():
            continue
        for ddir in store.listdir(*base, vdir):
            if not ddir.startswith("date="):
                continue
            for hdir in store.listdir(*base, vdir, ddir):
                if not hdir.startswith("hour="):
                    continue
                with contextlib.suppress(ValueError):
                    hour = dt.datetime.strptime(f"{ddir[5:]} {hdir[5:]}", "%Y-%m-%d %H").replace(tzinfo=dt.UTC)
                    out.append((int(vdir[8:]), hour))
    return sorted(out, key=lambda p: (p[1], p[0]))


def read_log(store: Store, model: str, version: int, hour: dt.datetime) -> pa.Table:
    """The rows of one hour partition of a model version's log (every part file, in name order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = partition_parts(model, version, hour)
    tables = []
    for name in store.listdir(*parts):
        if name.startswith(("_", ".")) or not name.endswith(".parquet"):
            continue
        with store.open(*parts, name) as f:
            tables.append(pq.read_table(f))
    if not tables:
        raise UsageError(f"no inference log for {model} version {version} at {hour:%Y-%m-%d %H}:00 UTC")
    return pa.concat_tables(tables, promote_options="permissive")
