"""One recommender model: the catalogue, the users' training history and what scores them.

:class:`RecModel` is what training makes, the registry stores (``recs.npz``: plain arrays, never a
pickle) and the model server loads. Its ``kind`` says how a user is scored:

- ``popularity``: every user gets the items with the highest decayed weight sum (the baseline, and the
  answer for a user the model has never seen: cold start);
- ``item_item``: cosine similarity between item columns of the weighted matrix, the ``neighbours`` most
  similar kept per item; a user's score is Σ over the user's items of weight × similarity;
- ``als``: implicit's ALS factors (confidence ``1 + alpha × weight``); a user's vector is the trained one,
  or, when the user has recent items the training did not see, solved from the item factors exactly as
  ALS solves it (``(YᵀCY + λI)⁻¹ YᵀCp``, "fold-in"), so a click changes the next answer at once.

:meth:`RecModel.recommend` ranks a user's items: exactly (one matrix–vector product and a partial sort,
fine up to 10⁵ items) or, when :meth:`attach_index` gave it one, through a faiss inner-product index.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from skiff.errors import SkiffError
from skiff.recommend.events import Interactions, RecsConfig, weighted_matrix

if TYPE_CHECKING:
    import scipy.sparse as sp

__all__ = ["RecModel", "Recommendation", "train_model", "MODEL_FILE_NAME"]

MODEL_FILE_NAME = "recs.npz"


@dataclass(frozen=True)
class Recommendation:
    """A user's top-k: item ids and scores, best first; ``cold_start`` when popularity answered."""

    items: list[str]
    scores: list[float]
    cold_start: bool


def _csr(m: Any) -> sp.csr_matrix:
    import scipy.sparse as sp

    return sp.csr_matrix(m, dtype=np.float32)


@dataclass
class RecModel:
    """A trained recommender (see the module docstring); ``history`` is users × items (decayed weights)."""

    kind: str
    items: np.ndarray  # item ids (str), the catalogue, column order
    users: np.ndarray  # user ids (str), row order of history / user_factors
    popularity: np.ndarray  # [n_items] decayed weight sums
    history: sp.csr_matrix
    params: dict[str, Any] = field(default_factory=dict)
    item_factors: np.ndarray | None = None  # als: [n_items, f]
    user_factors: np.ndarray | None = None  # als: [n_users, f]
    similarity: sp.csr_matrix | None = None  # item_item: [n_items, n_items], top neighbours per row
    _item_index: dict[str, int] = field(default_factory=dict, repr=False)
    _user_index: dict[str, int] = field(default_factory=dict, repr=False)
    _yty: np.ndarray | None = field(default=None, repr=False)
    _popular_order: np.ndarray | None = field(default=None, repr=False)
    index: Any = field(default=None, repr=False)  # a faiss index over item_factors (als past the threshold)

    def __post_init__(self) -> None:
        self._item_index = {str(v): i for i, v in enumerate(self.items.tolist())}
        self._user_index = {str(v): i for i, v in enumerate(self.users.tolist())}
        self._popular_order = np.argsort(-self.popularity, kind="stable")
        if self.item_factors is not None:
            self.item_factors = np.ascontiguousarray(self.item_factors, dtype=np.float32)
            self._yty = (self.item_factors.T @ self.item_factors).astype(np.float64)

    # -- lookups -------------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return int(self.items.shape[0])

    def item_index(self, item: str) -> int | None:
        return self._item_index.get(item)

    def knows_user(self, user: str) -> bool:
        return user in self._user_index

    def profile(self, user: str, recent: Sequence[tuple[str, float]] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The user's items (column indices) and weights: training history plus ``recent`` (item, weight)
        pairs; items outside the catalogue are ignored."""
        weights: dict[int, float] = {}
        row = self._user_index.get(user)
        if row is not None:
            start, end = self.history.indptr[row], self.history.indptr[row + 1]
            for i, w in zip(self.history.indices[start:end].tolist(), self.history.data[start:end].tolist(),
                            strict=True):
                weights[i] = weights.get(i, 0.0) + float(w)
        for item, w in recent:
            i = self._item_index.get(item)
            if i is not None and w > 0:
                weights[i] = weights.get(i, 0.0) + float(w)
        idx = np.fromiter(weights.keys(), dtype=np.int64, count=len(weights))
        return idx, np.fromiter(weights.values(), dtype=np.float64, count=len(weights))

    # -- scoring -------------------------------------------------------------------------------------
    def user_vector(self, user: str, idx: np.ndarray, w: np.ndarray, folded: bool) -> np.ndarray:
        """ALS: the trained vector, or the fold-in solve when ``folded`` (recent items) or unknown."""
        assert self.item_factors is not None and self._yty is not None
        row = self._user_index.get(user)
        if row is not None and not folded and self.user_factors is not None:
            return np.asarray(self.user_factors[row], dtype=np.float64)
        alpha = float(self.params.get("alpha", 1.0))
        reg = float(self.params.get("regularization", 0.05))
        y = self.item_factors[idx].astype(np.float64)
        conf = 1.0 + alpha * w
        a = self._yty + reg * np.eye(self._yty.shape[0]) + (y.T * (conf - 1.0)) @ y
        b = y.T @ conf
        solved: np.ndarray = np.linalg.solve(a, b)
        return solved

    def scores(self, user: str, idx: np.ndarray, w: np.ndarray, folded: bool = False) -> np.ndarray:
        """Every item's score for a user with profile ``(idx, w)`` (exact)."""
        if self.kind == "popularity" or idx.size == 0:
            return self.popularity.astype(np.float64)
        if self.kind == "item_item":
            assert self.similarity is not None
            sim = self.similarity[idx]
            return np.asarray(sim.T @ w, dtype=np.float64).reshape(-1)
        if self.kind == "als":
            assert self.item_factors is not None
            return self.item_factors @ self.user_vector(user, idx, w, folded).astype(np.float32)
        raise SkiffError(f"unknown recommender kind {self.kind!r}")

    def recommend(self, user: str, k: int, *, exclude_seen: bool = True,
                  recent: Sequence[tuple[str, float]] = ()) -> Recommendation:
        """The user's top ``k`` items (fewer when the catalogue has fewer left)."""
        idx, w = self.profile(user, recent)
        cold = idx.size == 0
        if cold or self.kind == "popularity":
            return self._popular(k, idx if exclude_seen else np.empty(0, np.int64), cold)
        if self.index is not None and self.kind == "als":
            return self._ann(user, idx, w, k, exclude_seen, folded=bool(recent))
        s = self.scores(user, idx, w, folded=bool(recent))
        if exclude_seen:
            s[idx] = -np.inf
        return self._top(s, k)

    def _top(self, s: np.ndarray, k: int) -> Recommendation:
        finite = int(np.isfinite(s).sum())
        k = min(k, finite)
        if k <= 0:
            return Recommendation([], [], False)
        part = np.argpartition(-s, k - 1)[:k] if k < s.shape[0] else np.arange(s.shape[0])
        order = part[np.lexsort((part, -s[part]))][:k]
        return Recommendation([str(self.items[i]) for i in order.tolist()], [float(s[i]) for i in order.tolist()],
                              False)

    def _popular(self, k: int, exclude: np.ndarray, cold: bool) -> Recommendation:
        assert self._popular_order is not None
        skip = set(exclude.tolist())
        picks: list[int] = []
        for i in self._popular_order.tolist():
            if i not in skip:
                picks.append(i)
                if len(picks) == k:
                    break
        return Recommendation([str(self.items[i]) for i in picks], [float(self.popularity[i]) for i in picks], cold)

    def _ann(self, user: str, idx: np.ndarray, w: np.ndarray, k: int, exclude_seen: bool,
             folded: bool) -> Recommendation:
        u = self.user_vector(user, idx, w, folded).astype(np.float32).reshape(1, -1)
        extra = int(idx.size) if exclude_seen else 0
        scores, found = self.index.search(u, min(k + extra, self.n_items))
        seen = set(idx.tolist()) if exclude_seen else set()
        items, out = [], []
        for s, i in zip(scores[0].tolist(), found[0].tolist(), strict=True):
            if i < 0 or i in seen:
                continue
            items.append(str(self.items[i]))
            out.append(float(s))
            if len(items) == k:
                break
        return Recommendation(items, out, False)

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: Any) -> None:
        """Write ``recs.npz`` (arrays only: loading never unpickles)."""
        arrays: dict[str, np.ndarray] = {
            "items": self.items.astype(str), "users": self.users.astype(str),
            "popularity": self.popularity.astype(np.float64),
            "history_data": self.history.data, "history_indices": self.history.indices,
            "history_indptr": self.history.indptr, "history_shape": np.array(self.history.shape),
            "meta": np.array(json.dumps({"kind": self.kind, "params": self.params})),
        }
        if self.item_factors is not None and self.user_factors is not None:
            arrays["item_factors"] = self.item_factors
            arrays["user_factors"] = self.user_factors.astype(np.float32)
        if self.similarity is not None:
            arrays.update(sim_data=self.similarity.data, sim_indices=self.similarity.indices,
                          sim_indptr=self.similarity.indptr, sim_shape=np.array(self.similarity.shape))
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, data: bytes) -> RecModel:
        import scipy.sparse as sp

        z = np.load(io.BytesIO(data), allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        history = sp.csr_matrix((z["history_data"], z["history_indices"], z["history_indptr"]),
                                shape=tuple(z["history_shape"].tolist()))
        sim = None
        if "sim_data" in z.files:
            sim = sp.csr_matrix((z["sim_data"], z["sim_indices"], z["sim_indptr"]), shape=tuple(z["sim_shape"].tolist()))
        return cls(kind=meta["kind"], items=z["items"].astype(object), users=z["users"].astype(object),
                   popularity=z["popularity"], history=history, params=meta.get("params", {}),
                   item_factors=z["item_factors"] if "item_factors" in z.files else None,
                   user_factors=z["user_factors"] if "user_factors" in z.files else None, similarity=sim)


def _top_neighbours(sim: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keep the ``n`` largest entries of each row (the diagonal dropped)."""
    import scipy.sparse as sp

    sim = sim.tocsr()
    sim.setdiag(0)
    sim.eliminate_zeros()
    rows, cols, vals = [], [], []
    for r in range(sim.shape[0]):
        start, end = sim.indptr[r], sim.indptr[r + 1]
        if end == start:
            continue
        d, c = sim.data[start:end], sim.indices[start:end]
        if d.size > n:
            keep = np.argpartition(-d, n - 1)[:n]
            d, c = d[keep], c[keep]
        rows.append(np.full(d.size, r))
        cols.append(c)
        vals.append(d)
    if not rows:
        return sp.csr_matrix(sim.shape, dtype=np.float32)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=sim.shape,
                         dtype=np.float32)


def train_model(kind: str, data: Interactions, config: RecsConfig, *, now: float,
                threads: int = 1) -> RecModel:
    """Fit one model of ``kind`` on ``data`` (weights decayed to ``now``)."""
    import scipy.sparse as sp

    users = np.array(sorted(set(data.users.tolist())), dtype=object)
    items = np.array(sorted(set(data.items.tolist())), dtype=object)
    if users.size == 0 or items.size == 0:
        raise SkiffError("no interactions to train a recommender on")
    half_life = config.half_life_days * 86400.0 if config.half_life_days else None
    history = weighted_matrix(data, users, items, now=now, half_life_s=half_life)
    popularity = np.asarray(history.sum(axis=0), dtype=np.float64).reshape(-1)
    if kind == "popularity":
        return RecModel("popularity", items, users, popularity, history, params={})
    if kind == "item_item":
        from sklearn.preprocessing import normalize

        cols = normalize(history.T.tocsr().astype(np.float32), norm="l2", axis=1)
        sim = _top_neighbours(_csr(cols @ cols.T), config.neighbours)
        return RecModel("item_item", items, users, popularity, history, params={"neighbours": config.neighbours},
                        similarity=sim)
    if kind == "als":
        from implicit.cpu.als import AlternatingLeastSquares  # type: ignore[import-untyped]
        from threadpoolctl import threadpool_limits

        a = config.als
        conf = history.copy()
        conf.data = (1.0 + a.alpha * conf.data).astype(np.float32)
        with threadpool_limits(limits=1, user_api="blas"):
            als = AlternatingLeastSquares(factors=a.factors, regularization=a.regularization, alpha=1.0,
                                          iterations=a.iterations, random_state=a.seed, num_threads=threads,
                                          calculate_training_loss=False)
            als.fit(sp.csr_matrix(conf), show_progress=False)
        return RecModel("als", items, users, popularity, history,
                        params={"factors": a.factors, "regularization": a.regularization, "alpha": a.alpha,
                                "iterations": a.iterations, "seed": a.seed},
                        item_factors=np.asarray(als.item_factors, dtype=np.float32),
                        user_factors=np.asarray(als.user_factors, dtype=np.float32))
    raise SkiffError(f"unknown recommender kind {kind!r}")
