"""skiff's Feast transformer: entity keys in, the model's features from the online store, predictions out.

:class:`FeastTransformer` is a ``kserve.Model`` with an ``async preprocess``. A request names entities
only — V1 ``{"instances": [{"customer_id": "C1"}]}`` or V2 inputs named by the join key(s). The
transformer reads the version's feature service (``metadata.feature_service``) from the Feast online
store in a worker thread (never on the event loop) with a timeout — requests arriving while a read is
in flight share the next read, and with the in-process predictor one model call scores them all — answers 404 for keys the store does
not know (every feature empty), and hands the rows, in the version's feature order, to the predictor:

- in-process (the default, ``predictor=``): the :class:`~serving.runtime.predictor.SkiffPredictor` registered in
  the same server scores the checked batch directly, no second HTTP hop;
- over HTTP (``TransformerOptions.predictor_host="host:port"``): KServe's transformer pattern, a V1 or V2 request (the same
  protocol as the incoming one) to ``/v1/models/<name>:predict`` or ``/v2/models/<name>/infer`` with an
  ``httpx.AsyncClient``; the predictor's 4xx answers come back with their status and reason.

Features come from the Feast SDK reading the online store in-process (the default), or, with
``feature_server_url``, from a Feast feature server over HTTP (``POST /get-online-features``) — the
cluster layout, where the feature server owns the online store's credentials.

The Feast store is opened, and the feature service resolved, once in ``load()`` (opening takes seconds;
resolving a service by name reads the registry, milliseconds per request). Feature service names are
versioned by what they serve, so the resolved service stays right for the version being served.

Recommenders. For a version of flavor ``recommender`` the transformer takes the recommender's request
(V1 ``{"instances": [{"user_id", "k", "exclude_seen"}]}`` or V2 input ``user_id``, see
:mod:`serving.runtime.recommender`; anything else a 400 naming the field), reads each user's recent items
with their decayed weights from the online store (:meth:`skiff.recommend.online.RecentItems.weighted`, in
a worker thread with the same timeout and merged reads) and hands them to the predictor with the query:
in-process, or over HTTP as ``recent_items`` / ``recent_weights`` (V1 fields, V2 ``[n, r]`` inputs), so the
predictor scores with them and reads nothing itself. ``POST /v1/models/<name>/events`` on the transformer
goes to the predictor's events endpoint (in-process, or forwarded over HTTP), which writes the users'
recent items.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast

import httpx
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse

from serving.runtime.inputs import (
    V2_DATATYPE,
    BadRequest,
    InputSchema,
    RequestRows,
    check_column,
    parse_v1,
    parse_v2,
)
from serving.runtime.predictor import Scores, SkiffPredictor, V1Response
from serving.runtime.request_log import RequestLogged, remember
from skiff.config import Settings, load_settings
from skiff.errors import ConfigError, NotFoundError, SkiffError, SourceError
from skiff.registry import ModelRegistry, VersionMetadata
from skiff.spec import parse_spec

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureView
    from feast.online_response import OnlineResponse

    from serving.runtime.recommender import Query, Recommender
    from skiff.recommend.events import RecsConfig
    from skiff.recommend.online import RecentItems

__all__ = ["FeastTransformer", "TransformerOptions", "FeatureServerClient", "OnlineFeatureStore"]

log = logging.getLogger(__name__)

_KEY_TYPES = {"STRING": "string", "INT64": "integer", "INT32": "integer"}


class OnlineFeatureStore(Protocol):
    """The part of a Feast ``FeatureStore`` the transformer calls: the feature service's layout at load,
    online reads per request."""

    def get_feature_service(self, name: str, allow_cache: bool = False) -> FeatureService: ...

    def get_feature_view(self, name: str, allow_registry_cache: bool = False) -> FeatureView: ...

    def get_entity(self, name: str, allow_registry_cache: bool = False) -> Entity: ...

    def get_online_features(self, features: list[str] | FeatureService,
                            entity_rows: list[dict[str, Any]]) -> OnlineResponse: ...


class _V2Input(TypedDict):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


class _V2Body(TypedDict, total=False):
    """The V2 infer body sent to the predictor over HTTP (``id`` only when the request had one)."""

    id: str
    inputs: list[_V2Input]


class _V1Body(TypedDict):
    """The V1 predict body sent to the predictor over HTTP: rows in the version's feature order."""

    instances: list[list[Any]]


class _Prepared(TypedDict):
    """What ``preprocess`` hands ``predict``: the checked feature rows of one request, and their scores
    when the merged read already computed them."""

    v2: bool
    request: Any  # the incoming V1 body or V2 InferRequest (answered in the same protocol)
    batch: RequestRows
    scores: Scores | None


class _RecsPrepared(TypedDict):
    """What ``preprocess`` hands ``predict`` for a recommender: the checked queries with their users'
    recent items."""

    v2: bool
    request: Any
    queries: list[Query]


def _service_layout(store: OnlineFeatureStore, service: str) -> tuple[dict[str, str], list[str]]:
    """The join keys (key -> spec type) and feature names a Feast feature service serves."""
    from feast.errors import FeatureViewNotFoundException

    fs = store.get_feature_service(service)
    keys: dict[str, str] = {}
    names: list[str] = []
    for proj in fs.feature_view_projections:
        names += [f.name for f in proj.features]
        try:
            view = store.get_feature_view(proj.name)
        except FeatureViewNotFoundException:
            continue  # an on-demand view: its inputs come from the other views
        for entity_name in view.entities:
            entity = store.get_entity(entity_name)
            vt = entity.value_type.name
            if vt not in _KEY_TYPES:
                raise ConfigError(f"entity {entity_name!r}: join key type {vt} is not supported for serving")
            keys[entity.join_key] = _KEY_TYPES[vt]
    if not keys:
        raise ConfigError(f"feature service {service!r} has no entity join keys")
    return keys, names


@dataclass
class _Fetched:
    """One Feast read: feature values by name and, with an in-process predictor, the rows' scores."""

    values: dict[str, list[Any]]
    scores: Scores | None = None

    def part(self, start: int, end: int) -> _Fetched:
        s = self.scores
        return _Fetched({k: v[start:end] for k, v in self.values.items()},
                        None if s is None else Scores(proba=None if s.proba is None else s.proba[start:end],
                                                      values=None if s.values is None else s.values[start:end]))


class _Coalescer:
    """Runs a blocking fetch in a worker thread, merging the rows of requests that arrive meanwhile.

    While one read is in flight, new requests queue; the next read serves all of them at once (one
    Feast call, one model call), and each request gets its own slice back. Under load this turns N
    reads of one row into one read of N rows; a lone request is read at once.
    """

    def __init__(self, fn: Callable[[list[dict[str, Any]]], _Fetched]) -> None:
        self.fn = fn
        self.pending: list[tuple[list[dict[str, Any]], asyncio.Future[_Fetched]]] = []
        self.task: asyncio.Task[None] | None = None

    async def fetch(self, rows: list[dict[str, Any]], timeout: float) -> _Fetched:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((rows, fut))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await asyncio.wait_for(asyncio.shield(fut), timeout)

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            rows = [r for rs, _ in batch for r in rs]
            try:
                fetched = await asyncio.to_thread(self.fn, rows)
            except Exception as e:  # every waiter of this read gets the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            start = 0
            for rs, fut in batch:
                end = start + len(rs)
                if not fut.done():
                    fut.set_result(fetched.part(start, end))
                start = end


class FeatureServerClient:
    """Online features from a Feast feature server (``feast serve``) over HTTP, for one feature service.

    Called from the transformer's worker thread (like the in-process store), so a plain blocking client
    with a timeout serves; the event loop is never blocked.
    """

    def __init__(self, url: str, service: str, timeout_s: float,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.service = service
        self.client = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)

    def get_online_features(self, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        entities: dict[str, list[Any]] = {}
        for row in rows:
            for k, v in row.items():
                entities.setdefault(k, []).append(v)
        try:
            r = self.client.post("/get-online-features",
                                 json={"feature_service": self.service, "entities": entities})
        except httpx.HTTPError as e:
            raise SourceError(f"feature server {self.url} unreachable: {type(e).__name__}: {e}",
                              feature_server=self.url) from e
        if r.status_code != 200:
            raise SourceError(f"feature server {self.url} answered {r.status_code}: {r.text[:300]}",
                              feature_server=self.url, feature_server_status=r.status_code)
        try:
            body = r.json()
            names: list[str] = body["metadata"]["feature_names"]
            results: list[dict[str, Any]] = body["results"]
        except (ValueError, KeyError, TypeError) as e:
            raise SourceError(f"feature server {self.url} answered with an unexpected body",
                              feature_server=self.url) from e
        values: dict[str, list[Any]] = {}
        for name, result in zip(names, results, strict=True):
            statuses = result.get("statuses") or ["PRESENT"] * len(result["values"])
            values[name.split("__", 1)[-1]] = [v if st == "PRESENT" else None
                                               for v, st in zip(result["values"], statuses, strict=True)]
        return values

    def close(self) -> None:
        self.client.close()


def _spec_keys(meta: VersionMetadata) -> dict[str, str]:
    """Join keys and their types from the dataset spec a version records (no Feast registry needed): the
    spec's own key columns, a generated key's column included."""
    raw = (meta.dataset or {}).get("spec")
    if not raw:
        raise ConfigError(f"model {meta.name} v{meta.version} records no dataset spec with an entity key")
    spec = parse_spec(raw, origin=f"the dataset spec recorded by model {meta.name} v{meta.version}")
    return {k: "integer" if spec.columns[k].type == "integer" else "string" for k in spec.key_columns}


@dataclass(frozen=True)
class TransformerOptions:
    """Which version a :class:`FeastTransformer` serves, where its features and its predictor are."""

    model_name: str | None = None
    """Registered model name; None: the transformer's own name."""
    version: int | str | None = None
    """Version number, 'latest' or 'champion'; None: the champion, else the latest."""
    predictor_host: str | None = None
    """Call the predictor at ``host:port`` (or a URL) over HTTP; None: a predictor object in-process."""
    predictor_name: str | None = None
    """The name the predictor over HTTP answers to; None: the model name."""
    timeout_s: float = 2.0
    """Seconds a feature lookup may take (the online store or the feature server)."""
    predictor_timeout_s: float = 10.0
    """Seconds the predictor over HTTP may take."""
    feature_server_url: str | None = None
    """Read features from this Feast feature server (``feast serve``); None: the online store in-process."""
    feature_service: str | None = None
    """The feature service the version must have been trained on (checked at load); None: no check."""


class FeastTransformer(RequestLogged, Model):  # type: ignore[misc]  # kserve ships no types: Model is Any here
    """Entity keys -> Feast online features -> the model's predictions.

    ``predictor`` is the in-process :class:`~serving.runtime.predictor.SkiffPredictor` (exactly one of it
    and ``options.predictor_host``); ``store`` an already opened Feast store (default: opened from
    ``settings`` at load).
    """

    def __init__(
        self,
        name: str,
        options: TransformerOptions | None = None,
        *,
        settings: Settings | None = None,
        predictor: SkiffPredictor | None = None,
        store: OnlineFeatureStore | None = None,
    ) -> None:
        super().__init__(name)
        o = options or TransformerOptions()
        if (predictor is None) == (o.predictor_host is None):
            raise ConfigError("a feature transformer needs exactly one of predictor= (in-process) or "
                              "options.predictor_host (over HTTP)")
        self.model_name = o.model_name or name
        self.requested_version = o.version
        self._settings = settings
        self.predictor = predictor
        self.predictor_host = o.predictor_host
        self.predictor_name = o.predictor_name or self.model_name
        self.timeout_s = o.timeout_s
        self.predictor_timeout_s = o.predictor_timeout_s
        self.store = store
        #: with ``feature_server_url``: the feature server's client (then no Feast store is opened)
        self._feature_client: FeatureServerClient | None = None
        self._feature_service: FeatureService | None = None
        self.feature_server_url = o.feature_server_url
        self.expected_service = o.feature_service
        self.version: int | None = None
        self.load_error: str | None = None
        self._client: httpx.AsyncClient | None = None
        self._coalescer = _Coalescer(self._fetch)
        #: a recommender version: its users' recent items in the online store (None for tabular versions)
        self.recent_items: RecentItems | None = None
        self.recs_config: RecsConfig | None = None
        #: a recommender with the predictor in-process: the predictor's scorer (takes events too)
        self.recs: Recommender | None = None
        self._recent_coalescer = _Coalescer(self._fetch_recent)

    @property
    def version_label(self) -> str:
        return "" if self.version is None else str(self.version)

    @property
    def platform(self) -> str:
        return "skiff-feast-transformer"

    def load(self) -> bool:
        try:
            self._load()
        except Exception as e:  # a transformer that cannot load leaves the server not ready, with the reason
            self.ready = False
            self.load_error = f"{type(e).__name__}: {getattr(e, 'message', None) or e}"
            log.error("feature transformer %s failed to load: %s", self.name, self.load_error)
        return self.ready

    def _load(self) -> None:
        from skiff.feature_store import open_store_from_settings

        settings = self._settings or load_settings()
        mv = ModelRegistry.from_settings(settings).get(self.model_name, self.requested_version)
        meta = mv.metadata
        if meta.flavor == "recommender":
            self._load_recommender(mv.name, mv.version, meta, settings)
            return
        if not meta.feature_service:
            raise ConfigError(f"model {self.model_name} v{mv.version} records no feature service; it was not "
                              "trained from Feast features")
        if self.predictor is not None:
            if not self.predictor.ready:
                raise ConfigError(f"predictor {self.predictor.name} is not ready: {self.predictor.load_error}")
            if self.predictor.version != mv.version:
                raise ConfigError(f"predictor serves version {self.predictor.version}, transformer {mv.version}")
        if self.expected_service and self.expected_service != meta.feature_service:
            raise ConfigError(f"{self.model_name} v{mv.version} was trained on feature service "
                              f"{meta.feature_service!r}, not {self.expected_service!r}")
        self.service = meta.feature_service
        if self.feature_server_url:
            keys = _spec_keys(meta)
            self._feature_client = FeatureServerClient(self.feature_server_url, meta.feature_service,
                                                       self.timeout_s)
            self._feature_service = None
        else:
            if self.store is None:
                self.store = open_store_from_settings(settings)
            keys, served = _service_layout(self.store, meta.feature_service)
            absent = [f for f in meta.features if f not in served]
            if absent:
                raise ConfigError(f"feature service {meta.feature_service!r} does not serve the model's "
                                  f"feature(s) {absent}")
            self._feature_service = self.store.get_feature_service(meta.feature_service)
        self.key_schema = InputSchema.build(list(keys), keys)
        self.feature_schema = InputSchema.build(meta.features, meta.input_schema, meta.input_rules)
        self.version = mv.version
        self.load_error = None
        self.ready = True
        log.info("feature transformer %s: keys %s, service %s from %s, predictor %s", self.name, list(keys),
                 self.service, self.feature_server_url or "the online store",
                 self.predictor.name if self.predictor else f"http://{self.predictor_host}")

    def _load_recommender(self, name: str, version: int, meta: VersionMetadata, settings: Settings) -> None:
        """A recommender version: the users' recent items from the online store, no feature service."""
        from skiff.recommend.events import RecsConfig
        from skiff.recommend.online import RecentItems

        if self.feature_server_url:
            raise ConfigError(f"{name} v{version} is a recommender: its transformer reads the users' recent items "
                              "from the online store, not from a feature server (drop --feature_server_url)")
        if self.predictor is not None:
            if not self.predictor.ready:
                raise ConfigError(f"predictor {self.predictor.name} is not ready: {self.predictor.load_error}")
            if self.predictor.version != version:
                raise ConfigError(f"predictor serves version {self.predictor.version}, transformer {version}")
            if self.predictor.recs is None:
                raise ConfigError(f"predictor {self.predictor.name} does not serve {name} v{version} as a recommender")
            self.recs = self.predictor.recs
        config = RecsConfig.model_validate((meta.extra.get("recs") or {}).get("config") or {})
        recent = self.recs.recent if self.recs is not None else None
        if recent is None:
            recent = RecentItems.open(settings, name, config)
            recent.get_many(["_warm-up"])  # the first online read pays the store's set-up
        self.recent_items, self.recs_config = recent, config
        self.service = recent.view
        self.version = version
        self.load_error = None
        self.ready = True
        log.info("feature transformer %s: recommender %s v%s, recent items from view %s, predictor %s", self.name,
                 name, version, recent.view, self.predictor.name if self.predictor else f"http://{self.predictor_host}")

    @property
    def takes_events(self) -> bool:
        """Whether ``POST /v1/models/<name>/events`` is served here (a recommender's transformer)."""
        return self.recent_items is not None

    def validate(self, payload: Any) -> Any:
        return payload

    # -- the request path ----------------------------------------------------------------------------
    def _lookup(self, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        if self._feature_client is not None:
            return self._feature_client.get_online_features(rows)
        if self.store is None or self._feature_service is None:  # the data plane serves only loaded models
            raise SkiffError(f"feature transformer {self.name} is not loaded")
        # the FeatureService object is resolved once in load(): resolving it by name reads the registry
        # (milliseconds) and defeats Feast's per-request context cache
        values: dict[str, list[Any]] = self.store.get_online_features(
            features=self._feature_service, entity_rows=rows).to_dict()
        return values

    def _features(self, values: dict[str, list[Any]], n: int) -> RequestRows:
        columns: dict[str, list[Any]] = {}
        any_missing = False
        for f in self.feature_schema.features:
            try:
                columns[f], m = check_column(self.feature_schema, f, values[f])
            except BadRequest as e:
                raise ConfigError(f"the feature store's value for {f!r} does not fit the model: {e.reason}") from e
            any_missing |= m
        return RequestRows(columns, n, any_missing)

    def _fetch(self, rows: list[dict[str, Any]]) -> _Fetched:
        """In a worker thread: the Feast read and, when every row is complete, one model call for all."""
        values = self._lookup(rows)
        if self.predictor is None:
            return _Fetched(values)
        try:
            batch = self._features(values, len(rows))
            if not batch.missing:
                return _Fetched(values, self.predictor.score(batch))
        except (SkiffError, InvalidInput) as e:  # left to each request, which reports its own rows
            log.debug("merged scoring skipped: %s", e)
        return _Fetched(values)

    def _fetch_recent(self, rows: list[dict[str, Any]]) -> _Fetched:
        """In a worker thread: the users' recent items with their decayed weights (one online read)."""
        if self.recent_items is None:
            raise SkiffError(f"feature transformer {self.name} is not loaded")
        return _Fetched({"recent": self.recent_items.weighted([r["user_id"] for r in rows])})

    async def _preprocess_recs(self, payload: Any) -> _RecsPrepared:
        from serving.runtime.recommender import parse_v1 as recs_v1
        from serving.runtime.recommender import parse_v2 as recs_v2

        assert self.recs_config is not None  # set with recent_items at load
        v2 = isinstance(payload, InferRequest)
        # the client sends the query only: recent items are the online store's, read here
        queries = (recs_v2 if v2 else recs_v1)(payload, self.recs_config.k, recent=False)
        try:
            fetched = await self._recent_coalescer.fetch([{"user_id": q.user_id} for q in queries], self.timeout_s)
        except TimeoutError as e:
            raise SourceError(f"online store lookup of recent items timed out after {self.timeout_s:g}s",
                              service=self.service) from e
        queries = [dataclasses.replace(q, recent=tuple(r))
                   for q, r in zip(queries, fetched.values["recent"], strict=True)]
        return {"v2": v2, "request": payload, "queries": queries}

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> _Prepared | _RecsPrepared:
        if self.recent_items is not None:
            return await self._preprocess_recs(payload)
        v2 = isinstance(payload, InferRequest)
        keys = parse_v2(payload, self.key_schema) if v2 else parse_v1(payload, self.key_schema)
        if keys.missing:
            k = next(k for k, vs in keys.columns.items() if any(v is None for v in vs))
            raise BadRequest(f"entity key {k!r} is null", k)
        names = self.key_schema.features
        rows = [{k: keys.columns[k][i] for k in names} for i in range(keys.n)]
        try:
            fetched = await self._coalescer.fetch(rows, self.timeout_s)
        except TimeoutError as e:
            raise SourceError(f"feature store lookup timed out after {self.timeout_s:g}s",
                              service=self.service) from e
        values = fetched.values
        features = self.feature_schema.features
        unknown = [i for i in range(keys.n) if all(values[f][i] is None for f in features)]
        if unknown:
            missing = [rows[i] for i in unknown]
            raise NotFoundError(f"unknown entity key(s): {missing}; the feature store has no features for them",
                                field=names[0], unknown=missing)
        return {"v2": v2, "request": payload, "batch": self._features(values, keys.n), "scores": fetched.scores}

    async def predict(self, payload: _Prepared | _RecsPrepared, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> V1Response | dict[str, Any] | InferResponse:
        if "queries" in payload:
            return await self._predict_recs(cast(_RecsPrepared, payload))
        batch: RequestRows = payload["batch"]
        if self.predictor is not None:
            scores = payload["scores"]
            if scores is None:
                scores = self.predictor.score(batch)
            if self.request_log is not None:
                remember(batch, scores, self.predictor)  # for the inference log (serving.runtime.request_log)
            if payload["v2"]:
                return self.predictor.v2_response(payload["request"], batch, scores)
            return self.predictor.v1_response(batch, scores)
        return await self._remote(payload["v2"], payload["request"], batch)

    async def _predict_recs(self, payload: _RecsPrepared) -> Any:
        queries = payload["queries"]
        request = payload["request"]
        if self.recs is not None:
            return self.recs.respond(request, queries, self.name, self.version_label)
        from serving.runtime.recommender import predictor_body

        v2 = payload["v2"]
        path = f"/v2/models/{self.predictor_name}/infer" if v2 else f"/v1/models/{self.predictor_name}:predict"
        return await self._post(path, predictor_body(queries, v2, request.id if v2 else None))

    async def forward_events(self, body: Any) -> dict[str, Any]:
        """A recommender's events, to the predictor's events endpoint (in-process or over HTTP)."""
        if self.recs is not None:
            return await asyncio.wait_for(asyncio.to_thread(self.recs.ingest, body), timeout=self.predictor_timeout_s)
        return await self._post(f"/v1/models/{self.predictor_name}/events", body)

    # -- the predictor over HTTP ---------------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            host = self.predictor_host
            if host is None:  # __init__ makes sure there is one without an in-process predictor
                raise ConfigError("the feature transformer has no predictor_host to call")
            base = host if host.startswith(("http://", "https://")) else f"http://{host}"
            self._client = httpx.AsyncClient(base_url=base, timeout=self.predictor_timeout_s)
        return self._client

    async def _remote(self, v2: bool, request: Any, batch: RequestRows) -> dict[str, Any]:
        features = self.feature_schema.features
        body: _V1Body | _V2Body
        if v2:
            body = {"id": request.id, "inputs": [
                {"name": f, "datatype": V2_DATATYPE[self.feature_schema.types[f]], "shape": [batch.n],
                 "data": batch.columns[f]} for f in features]}
            if request.id is None:
                body.pop("id")
            path = f"/v2/models/{self.predictor_name}/infer"
        else:
            body = {"instances": [[batch.columns[f][i] for f in features] for i in range(batch.n)]}
            path = f"/v1/models/{self.predictor_name}:predict"
        return await self._post(path, body)

    async def _post(self, path: str, body: Any) -> dict[str, Any]:
        """POST a JSON body to the predictor; its JSON answer, or its 4xx with status and reason."""
        try:
            r = await self._http().post(path, json=body)
        except httpx.HTTPError as e:
            raise SourceError(f"predictor at {self.predictor_host} unreachable: {type(e).__name__}: {e}",
                              predictor=self.predictor_host) from e
        if r.status_code >= 400:
            try:
                reason = r.json()
            except ValueError:
                reason = {"message": r.text[:500]}
            err = SourceError(f"predictor answered {r.status_code}: {reason.get('message') or reason}",
                              predictor=self.predictor_host, predictor_status=r.status_code,
                              predictor_error=reason)
            if r.status_code < 500:
                err.http_status = r.status_code  # the predictor's verdict on the request stands
            raise err
        answer: dict[str, Any] = r.json()  # the predictor's V1 or V2 JSON answer, passed on as it is
        return answer

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- metadata ------------------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        if not self.ready:
            return []
        if self.recent_items is not None:
            from serving.runtime.recommender import QUERY_INPUT_TYPES

            return [dict(t) for t in QUERY_INPUT_TYPES]
        return [{"name": k, "datatype": V2_DATATYPE[t], "shape": [-1]} for k, t in self.key_schema.types.items()]

    def get_output_types(self) -> list[dict[str, Any]]:
        if self.recent_items is not None:
            from serving.runtime.recommender import OUTPUT_TYPES

            return [dict(t) for t in OUTPUT_TYPES]
        return self.predictor.get_output_types() if self.predictor is not None else []
