"""Demo interaction log: users with latent tastes, a skewed catalogue and sessions, made on the machine.

:func:`interactions` writes what a shop's event log looks like: each item belongs to one of ``topics``
and has a Zipf-like popularity; each user prefers a few topics (a Dirichlet taste vector) and comes in
sessions spread over ``days``; in a session the user browses items drawn from their tastes mixed with
what is popular, and each view may become a click and a click a purchase (a funnel). A model that learns
the tastes beats the popularity baseline on the last days, as on a real shop. :data:`RECS_SPEC` is the
dataset spec of the log (``problem_type: recommendation``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["interactions", "RECS_SPEC"]

#: the spec of the generated log: ingest validates it like any data set
RECS_SPEC: dict[str, object] = {
    "name": "shop_events",
    "description": "Shop interaction events: user, item, event type, time (skiff.datagen_recs).",
    "entity_key": ["user_id", "item_id"],
    "event_timestamp": "timestamp",
    "problem_type": "recommendation",
    "dedupe": True,
    "columns": {
        "user_id": {"type": "string"},
        "item_id": {"type": "string"},
        "event_type": {"type": "category", "allowed": ["view", "click", "purchase"]},
        "timestamp": {"type": "datetime"},
        "rating": {"type": "float", "required": False, "missing": "keep", "min": 1, "max": 5},
    },
}


def interactions(users: int = 2000, items: int = 1000, *, topics: int = 20, days: int = 60,
                 sessions_per_user: float = 4.0, views_per_session: float = 6.0, seed: int = 0,
                 end: str = "2026-11-30T00:00:00Z") -> pd.DataFrame:
    """The event log: ``user_id, item_id, event_type, timestamp, rating`` (rating on some purchases)."""
    rng = np.random.default_rng(seed)
    item_topic = rng.integers(0, topics, size=items)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    popularity = popularity[rng.permutation(items)]
    popularity /= popularity.sum()
    by_topic = [np.flatnonzero(item_topic == t) for t in range(topics)]
    topic_weight = [popularity[ix] ** 0.4 / (popularity[ix] ** 0.4).sum() if ix.size else ix for ix in by_topic]
    tastes = rng.dirichlet(np.full(topics, 0.1), size=users)
    end_s = pd.Timestamp(end).timestamp()
    start_s = end_s - days * 86400.0
    rows: list[tuple[int, int, str, float, float]] = []
    for u in range(users):
        n_sessions = max(1, rng.poisson(sessions_per_user))
        for s_start in np.sort(rng.uniform(start_s, end_s - 3600, size=n_sessions)):
            t = float(s_start)
            for _ in range(max(1, rng.poisson(views_per_session))):
                if rng.random() < 0.15:  # what the shop shows everyone
                    item = int(rng.choice(items, p=popularity))
                else:
                    topic = int(rng.choice(topics, p=tastes[u]))
                    if by_topic[topic].size == 0:
                        continue
                    item = int(rng.choice(by_topic[topic], p=topic_weight[topic]))
                t += float(rng.exponential(60.0))
                rows.append((u, item, "view", t, np.nan))
                if rng.random() < 0.3:
                    t += float(rng.exponential(20.0))
                    rows.append((u, item, "click", t, np.nan))
                    if rng.random() < 0.2:
                        t += float(rng.exponential(120.0))
                        rating = float(rng.integers(3, 6)) if rng.random() < 0.5 else np.nan
                        rows.append((u, item, "purchase", t, rating))
    frame = pd.DataFrame({
        "user_id": [f"u{r[0]:06d}" for r in rows],
        "item_id": [f"i{r[1]:06d}" for r in rows],
        "event_type": [r[2] for r in rows],
        "timestamp": pd.to_datetime(np.array([r[3] for r in rows]), unit="s", utc=True).floor("ms"),
        "rating": [r[4] for r in rows],
    })
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
