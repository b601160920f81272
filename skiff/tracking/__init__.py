"""Experiment tracking in MLflow: pipeline runs as MLflow runs, model versions as MLflow models.

* :mod:`skiff.tracking.runs` — where runs are logged (:func:`~skiff.tracking.runs.tracking_uri`), the
  record of a run built from its registered version (:func:`~skiff.tracking.runs.version_record`), and
  logging it or a failure, which never raises (:func:`~skiff.tracking.runs.log_run`,
  :func:`~skiff.tracking.runs.log_failure`), and the records kept in the lake while the server was
  unreachable, replayed by :func:`~skiff.tracking.runs.sync_pending` (``skiff tracking sync``).
* :mod:`skiff.tracking.export` — a registered version written in the MLflow model format.
* :mod:`skiff.tracking.model` — the estimator an exported version holds (the pipeline with the version's
  decision threshold), importable with numpy and scikit-learn alone.

This package imports nothing at import time: an exported model unpickles ``skiff.tracking.model`` in an
environment that has neither MLflow's server side nor skiff's settings.
"""

__all__: list[str] = []
