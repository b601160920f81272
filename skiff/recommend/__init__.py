"""Recommendations from user interactions: the events contract, the models, the ranking metrics, the
catalogue index and the users' recent items in the online store.

- :mod:`skiff.recommend.events`: what an interaction event is (user, item, event type, time, optional
  rating), the recommender's configuration (event weights, time decay, split), and the weighted
  user × item matrix;
- :mod:`skiff.recommend.metrics`: precision@k, recall@k, NDCG@k, MAP@k, hit rate, catalogue coverage;
- :mod:`skiff.recommend.model`: the popularity baseline, item–item cosine similarity and implicit ALS, one
  :class:`~skiff.recommend.model.RecModel` that scores users (exactly, or through a faiss index);
- :mod:`skiff.recommend.training`: time-based split, training, evaluation against the baseline;
- :mod:`skiff.recommend.online`: each user's last N items in the Feast online store.

The pipeline (``pipelines/recommender.py``), its steps (``components/recommend``) and the model server's
``recommender`` flavor (``serving/runtime/recommender.py``) are built on these.
"""
