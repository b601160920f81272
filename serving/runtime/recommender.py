"""The model server's ``recommender`` flavor: a user's top-k items, and the events that change them.

A version of flavor ``recommender`` (registered by the recommender pipeline) holds ``recs.npz``
(:class:`skiff.recommend.model.RecModel`) and, for catalogues past the exact-scoring threshold, the faiss
index ``items.faiss``. :func:`load_recommender` loads both and opens the users' recent items in the Feast
online store (:class:`skiff.recommend.online.RecentItems`); :class:`SkiffPredictor` hands such a version's
requests to :class:`Recommender`.

Requests (``POST /v1/models/<name>:predict``):

- V1: ``{"instances": [{"user_id": "u1", "k": 10, "exclude_seen": true}, ...]}`` (``k`` and
  ``exclude_seen`` optional; a bare ``{"user_id": ...}`` object is one instance) →
  ``{"predictions": [{"user_id", "items": [...], "scores": [...], "cold_start": bool}, ...]}``;
- V2 (``/v2/models/<name>/infer``): input ``user_id`` (BYTES ``[n]``), optional ``k`` (INT64 ``[1]``) and
  ``exclude_seen`` (BOOL ``[1]``), or the parameters ``k`` / ``exclude_seen`` → outputs ``items`` (BYTES
  ``[n, k]``, padded with ``""`` when fewer are left), ``scores`` (FP64 ``[n, k]``, padded with 0),
  ``count`` (INT64 ``[n]``: how many are real) and ``cold_start`` (BOOL ``[n]``).

Recent items. Behind the Feast transformer (:mod:`serving.runtime.transformer`, the KServe route) each
instance also carries the user's recent items with their decayed weights, read by the transformer from
the online store: V1 ``"recent_items": [...]`` and ``"recent_weights": [...]`` (equal lengths, at most
:data:`MAX_RECENT`), V2 inputs ``recent_items`` (BYTES ``[n, r]``, padded with ``""``) and
``recent_weights`` (FP64 ``[n, r]``). The predictor scores with them and reads nothing; an empty list
means no recent items. A query without them (a predictor served alone, e.g. ``skiff serve``) has its
recent items read here, with the same function (:meth:`skiff.recommend.online.RecentItems.weighted`).

A user the model has never seen and who has no recent items gets the popular items (``cold_start``);
recent items outside the catalogue are ignored. Events (``POST /v1/models/<name>/events`` with
``{"events": [{"user_id", "item_id", "event_type", "timestamp"?, "rating"?}, ...]}``) are merged into the
users' recent items, so the next request scores with them. Anything malformed is a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from pydantic import ValidationError

from serving.runtime.inputs import BadRequest
from skiff.errors import UsageError
from skiff.recommend.events import InteractionEvent, RecsConfig
from skiff.recommend.index import read_index
from skiff.recommend.model import MODEL_FILE_NAME, RecModel, Recommendation
from skiff.registry import ModelRegistry, ModelVersion

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response

    from skiff.config import Settings
    from skiff.recommend.online import RecentItems

__all__ = ["Recommender", "Query", "load_recommender", "add_event_routes", "parse_v1", "parse_v2",
           "predictor_body", "INPUT_TYPES", "QUERY_INPUT_TYPES", "OUTPUT_TYPES", "MAX_INSTANCES", "MAX_EVENTS",
           "MAX_RECENT"]

log = logging.getLogger(__name__)

MAX_INSTANCES = 1000
MAX_EVENTS = 1000
MAX_K = 1000
#: At most this many recent items per user in a request (the transformer sends ``recent_n`` at most).
MAX_RECENT = 1000
_KEYS = {"user_id", "k", "exclude_seen"}
_RECENT_KEYS = {"recent_items", "recent_weights"}
#: What a client sends (through the transformer, or to a predictor served alone).
QUERY_INPUT_TYPES = ({"name": "user_id", "datatype": "BYTES", "shape": [-1]},
                     {"name": "k", "datatype": "INT64", "shape": [1]},
                     {"name": "exclude_seen", "datatype": "BOOL", "shape": [1]})
#: What the predictor takes: the query, and optionally each user's recent items (the transformer's).
INPUT_TYPES = (*QUERY_INPUT_TYPES,
               {"name": "recent_items", "datatype": "BYTES", "shape": [-1, -1]},
               {"name": "recent_weights", "datatype": "FP64", "shape": [-1, -1]})
OUTPUT_TYPES = ({"name": "items", "datatype": "BYTES", "shape": [-1, -1]},
                {"name": "scores", "datatype": "FP64", "shape": [-1, -1]},
                {"name": "count", "datatype": "INT64", "shape": [-1]},
                {"name": "cold_start", "datatype": "BOOL", "shape": [-1]})


@dataclass(frozen=True)
class Query:
    """One user's request. ``recent``: the user's recent items with their decayed weights as the request
    carries them (a transformer in front read them); None: the predictor reads them itself."""

    user_id: str
    k: int
    exclude_seen: bool
    recent: tuple[tuple[str, float], ...] | None = None


def _user(value: Any, where: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError as e:
            raise BadRequest(f"{where}: user_id is not UTF-8 text", where) from e
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"{where}: user_id must be a string, got {type(value).__name__}", where)
    text = str(value)
    if not text or len(text) > 256:
        raise BadRequest(f"{where}: user_id must have 1 to 256 characters", where)
    return text


def _k(value: Any, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_K:
        raise BadRequest(f"{where}: k must be an integer from 1 to {MAX_K}, got {value!r}"[:200], where)
    return int(value)


def _flag(value: Any, where: str) -> bool:
    if value is None:
        return True
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: exclude_seen must be true or false, got {value!r}"[:200], where)
    return value


def _recent_v1(row: dict[str, Any], where: str) -> tuple[tuple[str, float], ...] | None:
    if "recent_items" not in row and "recent_weights" not in row:
        return None
    items, weights = row.get("recent_items"), row.get("recent_weights")
    for key, value in (("recent_items", items), ("recent_weights", weights)):
        if not isinstance(value, list):
            raise BadRequest(f"{where}: {key} must be a list (recent_items and recent_weights come together)",
                             f"{where}.{key}")
    assert isinstance(items, list) and isinstance(weights, list)
    if len(items) != len(weights):
        raise BadRequest(f"{where}: recent_items has {len(items)} items but recent_weights {len(weights)}",
                         f"{where}.recent_weights")
    if len(items) > MAX_RECENT:
        raise BadRequest(f"{where}: {len(items)} recent items; at most {MAX_RECENT}", f"{where}.recent_items")
    return tuple((_item(i, f"{where}.recent_items[{j}]"), _weight(w, f"{where}.recent_weights[{j}]"))
                 for j, (i, w) in enumerate(zip(items, weights, strict=True)))


def _item(value: Any, where: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError as e:
            raise BadRequest(f"{where}: an item id is not UTF-8 text", where) from e
    if not isinstance(value, str) or not value or len(value) > 256:
        raise BadRequest(f"{where}: an item id must be a string of 1 to 256 characters", where)
    return value


def _weight(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise BadRequest(f"{where}: a weight must be a finite number >= 0, got {value!r}"[:200], where)
    return float(value)


def parse_v1(body: Any, default_k: int, *, recent: bool = True) -> list[Query]:
    """The queries of a V1 body (``instances``, or one bare instance object); with ``recent`` (the
    predictor) an instance may carry ``recent_items`` and ``recent_weights``."""
    if isinstance(body, dict) and "instances" not in body and "user_id" in body:
        body = {"instances": [body]}
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise BadRequest('the request body must be {"instances": [{"user_id": "...", "k": 10, "exclude_seen": '
                         'true}, ...]}', "instances")
    instances = body["instances"]
    if not instances:
        raise BadRequest('"instances" is empty: send at least one user', "instances")
    if len(instances) > MAX_INSTANCES:
        raise BadRequest(f"{len(instances)} instances in one request; at most {MAX_INSTANCES}", "instances")
    out = []
    for i, row in enumerate(instances):
        where = f"instances[{i}]"
        if not isinstance(row, dict):
            raise BadRequest(f'{where}: expected an object {{"user_id": ...}}', where, row=i)
        unknown = sorted(set(row) - (_KEYS | _RECENT_KEYS if recent else _KEYS))
        if unknown:
            raise BadRequest(f"{where}: unknown field(s) {unknown}; a recommender takes user_id, k, exclude_seen",
                             f"{where}.{unknown[0]}", unknown=unknown)
        if "user_id" not in row:
            raise BadRequest(f"{where}: user_id is required", f"{where}.user_id")
        out.append(Query(_user(row["user_id"], f"{where}.user_id"), _k(row.get("k"), f"{where}.k", default_k),
                         _flag(row.get("exclude_seen"), f"{where}.exclude_seen"), _recent_v1(row, where)))
    return out


def _param(value: Any) -> Any:
    if value is not None and hasattr(value, "WhichOneof"):  # gRPC's InferParameter
        choice = value.WhichOneof("parameter_choice")
        value = getattr(value, choice) if choice else None
    return value


def _scalar(inp: Any, datatype: str) -> Any:
    if inp.datatype != datatype:
        raise BadRequest(f"input {inp.name!r}: datatype must be {datatype}, got {inp.datatype}", inp.name)
    data = np.asarray(inp.data).reshape(-1).tolist() if inp.data is not None else []
    if len(data) != 1:
        raise BadRequest(f"input {inp.name!r}: one value, got {len(data)}", inp.name)
    return data[0]


def _bytes_values(inp: Any) -> list[Any]:
    raw = getattr(inp, "_raw_data", None)
    if raw is not None:
        from kserve.protocol.infer_type import deserialize_bytes_tensor

        try:
            return list(deserialize_bytes_tensor(raw))
        except Exception as e:  # a length that runs past the data
            raise BadRequest(f"input {inp.name!r}: malformed BYTES tensor data ({e})", inp.name) from e
    return list(np.asarray(inp.data, dtype=object).reshape(-1)) if inp.data is not None else []


def _recent_v2(inputs: dict[str, Any], n: int) -> list[tuple[tuple[str, float], ...]] | None:
    """Inputs ``recent_items`` (BYTES ``[n, r]``, padded with ``""``) and ``recent_weights`` (FP64 ``[n, r]``)."""
    if not _RECENT_KEYS & set(inputs):
        return None
    missing = sorted(_RECENT_KEYS - set(inputs))
    if missing:
        raise BadRequest("inputs 'recent_items' and 'recent_weights' come together", missing[0])
    items_in, weights_in = inputs["recent_items"], inputs["recent_weights"]
    if items_in.datatype != "BYTES":
        raise BadRequest(f"input 'recent_items': datatype must be BYTES, got {items_in.datatype}", "recent_items")
    if weights_in.datatype not in ("FP64", "FP32"):
        raise BadRequest(f"input 'recent_weights': datatype must be FP64, got {weights_in.datatype}",
                         "recent_weights")
    shape = list(items_in.shape)
    if len(shape) != 2 or shape[0] != n or not 0 <= shape[1] <= MAX_RECENT:
        raise BadRequest(f"input 'recent_items': shape must be [{n}, r] with r <= {MAX_RECENT} (one row per "
                         f"user), got {shape}", "recent_items", shape=shape)
    if list(weights_in.shape) != shape:
        raise BadRequest(f"input 'recent_weights': shape must be {shape} like recent_items, got "
                         f"{list(weights_in.shape)}", "recent_weights")
    items = _bytes_values(items_in)
    weights = np.asarray(weights_in.data if weights_in.data is not None else [], dtype=object).reshape(-1).tolist()
    width = shape[1]
    for name, values in (("recent_items", items), ("recent_weights", weights)):
        if len(values) != n * width:
            raise BadRequest(f"input {name!r}: shape {shape} needs {n * width} values, got {len(values)}", name)
    out = []
    for u in range(n):
        row = []
        for j in range(u * width, (u + 1) * width):
            if items[j] in ("", b""):  # padding
                continue
            row.append((_item(items[j], f"recent_items[{u}][{j - u * width}]"),
                        _weight(weights[j], f"recent_weights[{u}][{j - u * width}]")))
        out.append(tuple(row))
    return out


def parse_v2(request: InferRequest, default_k: int, *, recent: bool = True) -> list[Query]:
    """The queries of a V2 request: input ``user_id`` and optional ``k`` / ``exclude_seen``; with ``recent``
    (the predictor) the inputs ``recent_items`` / ``recent_weights`` too."""
    inputs = {inp.name: inp for inp in (request.inputs or [])}
    unknown = sorted(set(inputs) - (_KEYS | _RECENT_KEYS if recent else _KEYS))
    if unknown:
        raise BadRequest(f"unknown input(s) {unknown}; a recommender takes user_id, k, exclude_seen", unknown[0],
                         unknown=unknown)
    users = inputs.get("user_id")
    if users is None:
        raise BadRequest("input 'user_id' (BYTES [n]) is required", "user_id")
    if users.datatype not in ("BYTES", "INT64", "INT32"):
        raise BadRequest(f"input 'user_id': datatype must be BYTES, got {users.datatype}", "user_id")
    shape = list(users.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or not 1 <= shape[0] <= MAX_INSTANCES:
        raise BadRequest(f"input 'user_id': shape must be [n] with 1 <= n <= {MAX_INSTANCES}, got {shape}",
                         "user_id", shape=shape)
    values = _bytes_values(users)
    if len(values) != shape[0]:
        raise BadRequest(f"input 'user_id': shape {shape} holds {shape[0]} users but data has {len(values)}",
                         "user_id")
    params = request.parameters or {}
    k_value = _scalar(inputs["k"], "INT64") if "k" in inputs else _param(params.get("k"))
    if isinstance(k_value, str) and k_value.isdigit():
        k_value = int(k_value)
    ex_value = _scalar(inputs["exclude_seen"], "BOOL") if "exclude_seen" in inputs else _param(
        params.get("exclude_seen"))
    k = _k(k_value, "k", default_k)
    ex = _flag(ex_value, "exclude_seen")
    recents = _recent_v2(inputs, len(values)) if recent else None
    return [Query(_user(v, f"user_id[{i}]"), k, ex, None if recents is None else recents[i])
            for i, v in enumerate(values)]


def predictor_body(queries: list[Query], v2: bool, request_id: str | None = None) -> dict[str, Any]:
    """The V1 or V2 JSON body that asks a predictor for these queries with their recent items (what the
    transformer sends over HTTP; every query carries its recent items, an empty list for none)."""
    if not v2:
        return {"instances": [{"user_id": q.user_id, "k": q.k, "exclude_seen": q.exclude_seen,
                               "recent_items": [i for i, _ in q.recent or ()],
                               "recent_weights": [w for _, w in q.recent or ()]} for q in queries]}
    n = len(queries)
    width = max((len(q.recent or ()) for q in queries), default=0)
    items: list[str] = []
    weights: list[float] = []
    for q in queries:
        row = list(q.recent or ())
        items += [i for i, _ in row] + [""] * (width - len(row))
        weights += [w for _, w in row] + [0.0] * (width - len(row))
    body: dict[str, Any] = {"inputs": [
        {"name": "user_id", "datatype": "BYTES", "shape": [n], "data": [q.user_id for q in queries]},
        {"name": "k", "datatype": "INT64", "shape": [1], "data": [queries[0].k]},
        {"name": "exclude_seen", "datatype": "BOOL", "shape": [1], "data": [queries[0].exclude_seen]},
        {"name": "recent_items", "datatype": "BYTES", "shape": [n, width], "data": items},
        {"name": "recent_weights", "datatype": "FP64", "shape": [n, width], "data": weights}]}
    if request_id is not None:
        body["id"] = request_id
    return body


class Recommender:
    """A loaded recommender version: scoring, the users' recent items, the request protocols."""

    def __init__(self, model: RecModel, config: RecsConfig, recent: RecentItems | None = None) -> None:
        self.model = model
        self.config = config
        self.recent = recent

    def recommend(self, queries: list[Query]) -> list[Recommendation]:
        """Each query's top-k, with the user's recent items (decayed) added to the training history: those
        the request carries (a transformer read them), else read here from the online store."""
        unread = [q.user_id for q in queries if q.recent is None]
        read = iter(self.recent.weighted(unread) if self.recent is not None and unread else [])
        out = []
        for q in queries:
            recent = q.recent if q.recent is not None else next(read, ())
            out.append(self.model.recommend(q.user_id, q.k, exclude_seen=q.exclude_seen, recent=recent))
        return out

    def ingest(self, body: Any) -> dict[str, Any]:
        """Merge a body's events into the users' recent items; a :class:`BadRequest` naming the bad field."""
        if isinstance(body, dict) and "events" not in body and "user_id" in body:
            body = {"events": [body]}
        if not isinstance(body, dict) or not isinstance(body.get("events"), list) or not body["events"]:
            raise BadRequest('the request body must be {"events": [{"user_id": "...", "item_id": "...", '
                             '"event_type": "click"}, ...]}', "events")
        if len(body["events"]) > MAX_EVENTS:
            raise BadRequest(f"{len(body['events'])} events in one request; at most {MAX_EVENTS}", "events")
        events = []
        for i, raw in enumerate(body["events"]):
            try:
                events.append(InteractionEvent.model_validate(raw))
            except ValidationError as e:
                first = e.errors()[0]
                loc = ".".join(str(p) for p in first.get("loc", ()))
                where = f"events[{i}]" + (f".{loc}" if loc else "")
                raise BadRequest(f"{where}: {first.get('msg', 'invalid event')}", where) from None
        unknown = sorted({e.event_type for e in events if self.config.weight(e.event_type) is None})
        if unknown:
            raise BadRequest(f"unknown event type(s) {unknown}; known: {sorted(self.config.weights)}",
                             "event_type", unknown=unknown)
        if self.recent is None:
            raise UsageError("this recommender has no online store for recent items")
        t0 = time.perf_counter()
        per_user = self.recent.add(events)
        known = sum(1 for e in events if self.model.item_index(e.item_id) is not None)
        return {"accepted": len(events), "users": len(per_user), "unknown_items": len(events) - known,
                "write_ms": round((time.perf_counter() - t0) * 1e3, 3)}

    # -- protocols -----------------------------------------------------------------------------------
    def predict(self, payload: Any, name: str, version: str) -> Any:
        if isinstance(payload, InferRequest):
            queries = parse_v2(payload, self.config.k)
        else:
            queries = parse_v1(payload, self.config.k)
        return self.respond(payload, queries, name, version)

    def respond(self, payload: Any, queries: list[Query], name: str, version: str) -> Any:
        """The V1 or V2 answer (the protocol of ``payload``) to checked queries."""
        recs = self.recommend(queries)
        if isinstance(payload, InferRequest):
            k = queries[0].k
            items = [r.items + [""] * (k - len(r.items)) for r in recs]
            scores = [r.scores + [0.0] * (k - len(r.scores)) for r in recs]
            n = len(recs)
            outputs = [InferOutput("items", [n, k], "BYTES", data=[i for row in items for i in row]),
                       InferOutput("scores", [n, k], "FP64", data=[s for row in scores for s in row]),
                       InferOutput("count", [n], "INT64", data=[len(r.items) for r in recs]),
                       InferOutput("cold_start", [n], "BOOL", data=[r.cold_start for r in recs])]
            return InferResponse(response_id=payload.id or uuid.uuid4().hex, model_name=name, model_version=version,
                                 infer_outputs=outputs, use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs)
        return {"predictions": [{"user_id": q.user_id, "items": r.items, "scores": r.scores,
                                 "cold_start": r.cold_start} for q, r in zip(queries, recs, strict=True)],
                "model_name": name, "model_version": version}


def load_recommender(registry: ModelRegistry, mv: ModelVersion, settings: Settings, *,
                     online: bool = True) -> Recommender:
    """The version's model (and faiss index when it has one) and, with ``online``, its recent items."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=settings.max_threads)
    recs = mv.metadata.extra.get("recs") or {}
    config = RecsConfig.model_validate(recs.get("config") or {})
    model = RecModel.load(registry.store.read_bytes(mv.name, str(mv.version), recs.get("model_file") or MODEL_FILE_NAME))
    index_file = recs.get("index_file")
    if index_file:
        model.index = read_index(registry.store.read_bytes(mv.name, str(mv.version), index_file),
                                 ef_search=config.ann.ef_search)
    recent = None
    if online:
        from skiff.recommend.online import RecentItems

        recent = RecentItems.open(settings, mv.name, config)
        recent.get_many(["_warm-up"])  # the first online read pays the store's set-up
    log.info("%s v%s: recommender (%s, %d items, %d users, %s, recent items %s)", mv.name, mv.version, model.kind,
             model.n_items, int(model.users.shape[0]), "faiss index" if model.index is not None else "exact",
             "online" if recent is not None else "off")
    return Recommender(model, config, recent)


def add_event_routes(app: FastAPI, dataplane: Any) -> None:
    """``POST /v1/models/{model_name}/events``: a recommender's real-time events (404 for other models)."""
    import orjson
    from starlette.responses import Response

    from skiff.errors import NotFoundError

    async def events(request: Request) -> Response:
        name = request.path_params["model_name"]
        model = dataplane.get_model_from_registry(name)
        recs: Recommender | None = getattr(model, "recs", None)
        # a recommender's transformer (serving.runtime.transformer) hands events to its predictor
        forward = getattr(model, "forward_events", None) if getattr(model, "takes_events", False) else None
        if recs is None and forward is None:
            raise NotFoundError(f"model {name!r} is not a recommender: it takes no events", model=name)
        body = await request.body()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"the request body is not valid JSON: {e}", "body") from None
        if forward is not None:
            result = await forward(payload)
        else:
            assert recs is not None
            result = await asyncio.wait_for(asyncio.to_thread(recs.ingest, payload), timeout=10.0)
        return Response(orjson.dumps(result), media_type="application/json")

    app.router.add_route("/v1/models/{model_name}/events", events, methods=["POST"])
