"""The approximate catalogue index: faiss HNSW over the ALS item factors (inner product).

Up to :attr:`~skiff.recommend.events.AnnConfig.threshold` items a user is scored exactly (one
matrix–vector product); past it the pipeline builds this index, measures its recall@k against exact
scoring on sampled users (recorded in the version's metadata) and registers it as ``items.faiss``; the
model server loads it with the model. faiss is the maintained library that does this; skiff only
configures it.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np

from skiff.recommend.events import AnnConfig
from skiff.recommend.model import RecModel

__all__ = ["build_index", "index_recall", "write_index", "read_index", "INDEX_FILE_NAME"]

INDEX_FILE_NAME = "items.faiss"


def build_index(factors: np.ndarray, config: AnnConfig) -> Any:
    """An HNSW inner-product index over ``factors`` ([n_items, f] float32)."""
    import faiss

    x = np.ascontiguousarray(factors, dtype=np.float32)
    index = faiss.IndexHNSWFlat(x.shape[1], config.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = config.ef_construction
    index.add(x)
    index.hnsw.efSearch = config.ef_search
    return index


def index_recall(model: RecModel, index: Any, k: int, users: int, seed: int = 0) -> dict[str, float]:
    """recall@k of the index against exact scoring (the share of the exact top-k the index returns, seen
    items included) over up to ``users`` sampled users, and both search times."""
    assert model.item_factors is not None and model.user_factors is not None
    rng = np.random.default_rng(seed)
    n = min(users, model.user_factors.shape[0])
    rows = rng.choice(model.user_factors.shape[0], size=n, replace=False)
    q = np.ascontiguousarray(model.user_factors[rows], dtype=np.float32)
    k = min(k, model.n_items)
    t0 = time.perf_counter()
    exact = np.argpartition(-(q @ model.item_factors.T), k - 1, axis=1)[:, :k]
    t1 = time.perf_counter()
    _, approx = index.search(q, k)
    t2 = time.perf_counter()
    hits = sum(len(set(e.tolist()) & set(a.tolist())) for e, a in zip(exact, approx, strict=True))
    return {f"recall@{k}": hits / (n * k), "users": float(n), "exact_ms_per_user": (t1 - t0) * 1e3 / n,
            "ann_ms_per_user": (t2 - t1) * 1e3 / n}


def write_index(index: Any, path: str | os.PathLike[str]) -> None:
    import faiss

    faiss.write_index(index, os.fspath(path))


def read_index(data: bytes, ef_search: int | None = None) -> Any:
    """An index from the bytes of ``items.faiss`` (faiss reads files: through a temporary one)."""
    import faiss

    with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
        f.write(data)
        f.flush()
        index = faiss.read_index(f.name)
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = ef_search
    return index
