"""Training for any tabular data set described by a skiff dataset spec.

``train(df, spec, config)`` checks the data and the configuration, splits off a stratified test set,
chooses or tunes the estimator by k-fold cross-validation, tunes the binary decision threshold on
out-of-fold probabilities, and refits the chosen pipeline on the whole training split. Every problem
with the input or the configuration is raised before the first fit.

The model is a scikit-learn ``Pipeline`` (an imbalanced-learn one when resampling, so SMOTE and
undersampling run on the training folds only)::

    prepare (FramePreparer) → preprocess (ColumnTransformer: numeric → median impute → scale;
    category/string/boolean → most-frequent impute → one-hot) → [pca] → [select] → [resample] → model
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sklearn.base import BaseEstimator, clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.feature_selection import SelectKBest, f_classif, f_regression
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, ParameterGrid, ParameterSampler, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from threadpoolctl import threadpool_limits

from components.train.preparation import MISSING, FramePreparer
from skiff.errors import InputError, SpecError, UsageError
from skiff.metrics import (
    THRESHOLD_METRICS,
    best_threshold,
    decision_metric,
    default_scoring,
    higher_is_better,
    metric_names,
    score_metrics,
)
from skiff.modeling import positive_label, target_array
from skiff.spec import DatasetSpec

__all__ = [
    "TrainConfig",
    "SearchConfig",
    "Range",
    "ImbalanceConfig",
    "TrainResult",
    "CVOutcome",
    "ESTIMATORS",
    "AUTO_CANDIDATES",
    "parse_config",
    "check_config",
    "build_pipeline",
    "feature_groups",
    "split",
    "prepare_data",
    "cross_validate",
    "train",
]

log = logging.getLogger(__name__)

Problem = Literal["binary", "multiclass", "regression"]

# --------------------------------------------------------------------------------------------------
# estimators

_CLASSIFIERS: dict[str, Callable[[int], BaseEstimator]] = {
    "logistic_regression": lambda seed: LogisticRegression(max_iter=2000, random_state=seed),
    "random_forest": lambda seed: RandomForestClassifier(
        n_estimators=200, min_samples_leaf=2, n_jobs=1, random_state=seed
    ),
    "hist_gradient_boosting": lambda seed: HistGradientBoostingClassifier(
        learning_rate=0.05, max_iter=200, max_leaf_nodes=15, l2_regularization=1.0, random_state=seed
    ),
}
_REGRESSORS: dict[str, Callable[[int], BaseEstimator]] = {
    "ridge": lambda seed: Ridge(alpha=1.0),
    "random_forest": lambda seed: RandomForestRegressor(
        n_estimators=200, min_samples_leaf=2, n_jobs=1, random_state=seed
    ),
    "hist_gradient_boosting": lambda seed: HistGradientBoostingRegressor(
        learning_rate=0.1, max_iter=300, max_leaf_nodes=31, random_state=seed
    ),
}
#: Estimator name → factory(seed), per problem kind ("classification" or "regression").
ESTIMATORS: dict[str, dict[str, Callable[[int], BaseEstimator]]] = {
    "classification": _CLASSIFIERS,
    "regression": _REGRESSORS,
}
#: What ``estimator: null`` compares by cross-validation: a linear model and a boosted one.
AUTO_CANDIDATES: dict[str, tuple[str, ...]] = {
    "classification": ("logistic_regression", "hist_gradient_boosting"),
    "regression": ("ridge", "hist_gradient_boosting"),
}


def _kind(problem: str) -> str:
    return "regression" if problem == "regression" else "classification"


# --------------------------------------------------------------------------------------------------
# configuration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(_Strict):
    """A numeric interval to search: integers when both ends are integers, floats otherwise."""

    low: float | int = Field(description="Smallest value.")
    high: float | int = Field(description="Largest value.")
    log: bool = Field(default=False, description="Sample on a log scale (both ends must be > 0).")
    type: Literal["int", "float"] | None = Field(
        default=None, description="int or float values; by default int when both ends are integers."
    )

    @model_validator(mode="after")
    def _check(self) -> Range:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log=true needs low > 0")
        return self

    @property
    def is_int(self) -> bool:
        if self.type is not None:
            return self.type == "int"
        return isinstance(self.low, int) and isinstance(self.high, int)


class SearchConfig(_Strict):
    """Hyperparameter search over the estimator's parameters, scored by cross-validation."""

    method: Literal["none", "grid", "random", "optuna"] = Field(
        default="none", description="none, grid (lists only), random, or optuna (Bayesian, TPE)."
    )
    space: dict[str, list[Any] | Range] = Field(
        default_factory=dict,
        description="Estimator parameter → list of values, or {low, high, log} for random/optuna.",
    )
    n_iter: int = Field(default=20, ge=1, description="Candidates drawn by random search / optuna trials.")

    @field_validator("space")
    @classmethod
    def _non_empty_lists(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name, values in v.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"search space for {name!r} is an empty list")
        return v

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if self.method != "none" and not self.space:
            raise ValueError(f"search method {self.method!r} needs a non-empty 'space'")
        if self.method == "grid":
            ranges = [k for k, v in self.space.items() if isinstance(v, Range)]
            if ranges:
                raise ValueError(f"grid search takes lists of values; ranges given for: {', '.join(ranges)}")
        return self


class ImbalanceConfig(_Strict):
    """Handling of imbalanced classes (classification only)."""

    class_weight: Literal["balanced"] | None = Field(
        default=None, description="'balanced' weights classes inversely to their frequency."
    )
    resample: Literal["smote", "undersample"] | None = Field(
        default=None, description="Resample the training folds: SMOTE oversampling or random undersampling."
    )


class TrainConfig(_Strict):
    """How skiff trains a model; every field has a default that suits a first run."""

    estimator: str | None = Field(
        default=None,
        description="logistic_regression | random_forest | hist_gradient_boosting (classification); "
        "ridge | random_forest | hist_gradient_boosting (regression); null compares a linear and a "
        "boosted model by CV and takes the better.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Estimator parameters.")
    pca: int | float | None = Field(
        default=None, description="PCA components (int) or variance to keep (0 < float < 1); null: no PCA."
    )
    feature_selection: int | None = Field(
        default=None, ge=1, description="Keep the k best features (univariate F-test); null: keep all."
    )
    max_categories: int = Field(
        default=50, ge=2, description="One-hot categories per column; rarer ones share an 'infrequent' slot."
    )
    cv_folds: int = Field(default=5, ge=2, description="Folds of the (stratified) k-fold cross-validation.")
    test_size: float = Field(default=0.2, gt=0, lt=1, description="Share of rows held out for evaluation.")
    seed: int = Field(default=0, description="Seed of the split, the folds and the estimators.")
    search: SearchConfig = Field(default_factory=SearchConfig)
    imbalance: ImbalanceConfig = Field(default_factory=ImbalanceConfig)
    threshold_metric: str | None = Field(
        default="f1",
        description="Binary: metric the decision threshold is tuned for on out-of-fold probabilities "
        f"({', '.join(THRESHOLD_METRICS)}); null keeps 0.5.",
    )
    scoring: str | None = Field(
        default=None,
        description="Metric that picks the model (auto selection and search); null: roc_auc (binary), "
        "f1_macro (multiclass), rmse (regression).",
    )
    n_threads: int = Field(default=1, ge=1, description="Thread cap for OpenMP/BLAS during training.")

    @field_validator("pca")
    @classmethod
    def _pca(cls, v: int | float | None) -> int | float | None:
        if v is None:
            return v
        if isinstance(v, float) and v >= 1 and v.is_integer():  # a count that travelled as a JSON number
            return int(v)
        if isinstance(v, float) and not (0 < v < 1):
            raise ValueError(f"pca as a float is the variance to keep, 0 < pca < 1; got {v}")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"pca as an int is the number of components, >= 1; got {v}")
        return v

    @field_validator("threshold_metric")
    @classmethod
    def _threshold_metric(cls, v: str | None) -> str | None:
        if v is not None and v not in THRESHOLD_METRICS:
            raise ValueError(f"unknown threshold_metric {v!r}; valid: {', '.join(THRESHOLD_METRICS)}")
        return v


def parse_config(config: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
    """A :class:`TrainConfig` from a mapping (e.g. a pipeline parameter); problems are UsageErrors."""
    if isinstance(config, TrainConfig):
        return config
    try:
        return TrainConfig.model_validate(dict(config or {}))
    except ValidationError as e:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        ]
        raise UsageError("invalid training config: " + "; ".join(problems), problems=problems) from e


def _estimator(name: str, problem: str, seed: int) -> BaseEstimator:
    return ESTIMATORS[_kind(problem)][name](seed)


def _check_names(name: str, problem: str, names: Sequence[str], where: str) -> BaseEstimator:
    est = _estimator(name, problem, 0)
    valid = sorted(est.get_params())
    unknown = [p for p in names if p not in valid]
    if unknown:
        raise UsageError(
            f"{where}: unknown parameter(s) {', '.join(map(repr, unknown))} for {name}; "
            f"valid: {', '.join(valid)}",
            estimator=name,
            unknown=unknown,
            valid=valid,
        )
    return est


def _check_params(name: str, problem: str, params: Mapping[str, Any], where: str) -> None:
    """Unknown parameter names and invalid values are UsageErrors, found without fitting anything."""
    est = _check_names(name, problem, list(params), where)
    try:
        est.set_params(**params)
        est._validate_params()
    except (InvalidParameterError, ValueError, TypeError) as e:
        raise UsageError(f"{where}: {e}", estimator=name) from e


def _checked_value(name: str, problem: str, pname: str, value: Any, where: str) -> Any:
    """``value`` if the estimator takes it; an integral float it wants as an integer becomes that
    integer (pipeline parameters travel as JSON, where 50 arrives as 50.0)."""
    try:
        _check_params(name, problem, {pname: value}, where)
        return value
    except UsageError:
        if not (isinstance(value, float) and value.is_integer()):
            raise
        try:
            _check_params(name, problem, {pname: int(value)}, where)
        except UsageError:
            pass
        else:
            return int(value)
        raise


def check_config(config: TrainConfig, spec: DatasetSpec) -> str:
    """Check the config against the spec's problem type before anything is fitted; returns the scoring.

    Integral floats that an estimator parameter needs as integers are turned into integers in place.
    """
    problem = _problem(spec)
    kind = _kind(problem)
    valid = sorted(ESTIMATORS[kind])
    if config.estimator is not None and config.estimator not in ESTIMATORS[kind]:
        raise UsageError(
            f"unknown estimator {config.estimator!r} for {problem}; valid: {', '.join(valid)}",
            estimator=config.estimator,
            valid=valid,
        )
    candidates = [config.estimator] if config.estimator else list(AUTO_CANDIDATES[kind])
    if config.params and config.estimator is None:
        raise UsageError("'params' needs a named 'estimator' (with estimator: null skiff picks one)")
    if config.estimator is not None:
        _check_names(config.estimator, problem, list(config.params), "params")
        for pname, value in list(config.params.items()):
            config.params[pname] = _checked_value(config.estimator, problem, pname, value, "params")
        _check_params(config.estimator, problem, config.params, "params")
    if config.search.method != "none":
        if config.estimator is None:
            raise UsageError(
                f"search method {config.search.method!r} needs a named 'estimator' whose parameters "
                f"the space names; valid: {', '.join(valid)}"
            )
        for pname, values in config.search.space.items():
            where = f"search.space.{pname}"
            if isinstance(values, list):
                values[:] = [_checked_value(config.estimator, problem, pname, v, where) for v in values]
                continue
            ends = [
                _checked_value(config.estimator, problem, pname, v, where) for v in (values.low, values.high)
            ]
            if values.type is None and all(isinstance(v, int) for v in ends):
                values.type = "int"
    if problem == "regression" and (config.imbalance.class_weight or config.imbalance.resample):
        raise UsageError("imbalance settings apply to classification; this spec is a regression")
    if config.imbalance.class_weight:
        for name in candidates:
            if "class_weight" not in _estimator(name, problem, 0).get_params():
                raise UsageError(f"estimator {name} does not take class_weight")
    scoring = config.scoring or default_scoring(problem)
    if scoring not in metric_names(problem):
        raise UsageError(
            f"unknown scoring metric {scoring!r} for {problem}; valid: {', '.join(metric_names(problem))}",
            valid=list(metric_names(problem)),
        )
    return scoring


# --------------------------------------------------------------------------------------------------
# the pipeline


def feature_groups(
    spec: DatasetSpec, columns: Sequence[str] | None = None
) -> tuple[list[str], list[str], list[str]]:
    """``(numeric, categorical, datetime)`` model inputs: the spec's feature columns by type, plus the
    spec's derived features that are present in ``columns`` (numeric ones scaled, boolean ones
    one-hot encoded), since Feast computes those both for training and at request time."""
    numeric = spec.columns_of_type("integer", "float")
    categorical = spec.columns_of_type("category", "string", "boolean")
    datetimes = spec.columns_of_type("datetime")
    present = set(columns or ())
    for d in spec.derived:
        if d.name in present:
            (categorical if d.type == "boolean" else numeric).append(d.name)
    return numeric, categorical, datetimes


def build_pipeline(
    spec: DatasetSpec,
    config: TrainConfig | Mapping[str, Any] | None = None,
    estimator: str | None = None,
    params: Mapping[str, Any] | None = None,
    smote_neighbors: int = 5,
    columns: Sequence[str] | None = None,
) -> Pipeline:
    """The unfitted model for ``spec``: feature preparation, preprocessing, optional PCA/selection,
    optional resampling, and the estimator (``estimator``/``params`` override the config's).

    ``columns`` are the columns of the training data; the spec's derived features among them become
    inputs too (see :func:`feature_groups`).
    """
    cfg = parse_config(config)
    problem = _problem(spec)
    name = estimator or cfg.estimator or AUTO_CANDIDATES[_kind(problem)][0]
    if name not in ESTIMATORS[_kind(problem)]:
        raise UsageError(
            f"unknown estimator {name!r} for {problem}; valid: {', '.join(sorted(ESTIMATORS[_kind(problem)]))}"
        )
    numeric, categorical, datetimes = feature_groups(spec, columns)
    if not (numeric or categorical or datetimes):
        raise SpecError(f"dataset spec {spec.name!r} has no feature columns to train on")
    prepare = FramePreparer(numeric=numeric, categorical=categorical, datetime=datetimes)

    transformers = []
    if prepare.numeric_out:
        num = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        transformers.append(("num", num, prepare.numeric_out))
    if categorical:
        onehot = OneHotEncoder(
            handle_unknown="infrequent_if_exist", max_categories=cfg.max_categories, sparse_output=False
        )
        impute = SimpleImputer(strategy="most_frequent", missing_values=MISSING)
        cat = Pipeline([("impute", impute), ("onehot", onehot)])
        transformers.append(("cat", cat, categorical))
    steps: list[tuple[str, Any]] = [
        ("prepare", prepare),
        ("preprocess", ColumnTransformer(transformers, remainder="drop")),
    ]
    if cfg.pca is not None:
        steps.append(("pca", PCA(n_components=cfg.pca, random_state=cfg.seed)))
    if cfg.feature_selection is not None:
        score_fn = f_regression if problem == "regression" else f_classif
        steps.append(("select", SelectKBest(score_fn, k=cfg.feature_selection)))

    model = _estimator(name, problem, cfg.seed)
    model_params = dict(cfg.params if name == cfg.estimator else {})
    model_params.update(params or {})
    if cfg.imbalance.class_weight:
        model_params.setdefault("class_weight", cfg.imbalance.class_weight)
    model.set_params(**model_params)

    if cfg.imbalance.resample:
        from imblearn.over_sampling import SMOTE
        from imblearn.pipeline import Pipeline as ImbPipeline
        from imblearn.under_sampling import RandomUnderSampler

        sampler = (
            SMOTE(k_neighbors=smote_neighbors, random_state=cfg.seed)
            if cfg.imbalance.resample == "smote"
            else RandomUnderSampler(random_state=cfg.seed)
        )
        return ImbPipeline([*steps, ("resample", sampler), ("model", model)])
    return Pipeline([*steps, ("model", model)])


# --------------------------------------------------------------------------------------------------
# data


def _problem(spec: DatasetSpec) -> Problem:
    if spec.target is None or spec.problem_type is None or spec.problem_type == "recommendation":
        raise SpecError(f"dataset spec {spec.name!r} has no target/problem_type: nothing to train")
    return spec.problem_type


def prepare_data(df: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, int]:
    """Check the frame for training and drop rows without a target; returns ``(frame, rows dropped)``."""
    problem = _problem(spec)
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"training data must be a pandas DataFrame, got {type(df).__name__}")
    if spec.target not in df.columns:
        raise InputError(
            f"target column {spec.target!r} is not in the data; columns: {', '.join(map(str, df.columns))}",
            column=spec.target,
        )
    missing = [c for c in spec.feature_columns if c not in df.columns]
    if missing:
        raise InputError(f"feature column(s) missing from the data: {', '.join(missing)}", columns=missing)
    labeled = df[df[spec.target].notna()]
    dropped = len(df) - len(labeled)
    if labeled.empty:
        raise InputError(f"no row has a value in target {spec.target!r} ({len(df)} rows)", column=spec.target)
    y = target_array(labeled[spec.target], spec)
    if problem != "regression":
        classes = pd.unique(y)
        if len(classes) < 2:
            raise InputError(
                f"target {spec.target!r} has a single class ({classes[0]!r}); a classifier needs two or more",
                column=spec.target,
            )
        if problem == "binary" and len(classes) > 2:
            raise InputError(
                f"target {spec.target!r} has {len(classes)} classes but the spec says binary; "
                "use problem_type: multiclass",
                column=spec.target,
            )
    if dropped:
        log.warning("training: %d row(s) without a value in target %r left out", dropped, spec.target)
    return labeled, dropped


def split(
    df: pd.DataFrame, spec: DatasetSpec, test_size: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/test split: stratified per class for classification (every class with two or more rows
    appears on both sides; a class with fewer is an InputError), shuffled for regression."""
    if not 0 < test_size < 1:
        raise UsageError(f"test_size must be between 0 and 1, got {test_size}")
    problem = _problem(spec)
    if problem == "regression":
        if len(df) < 2:
            raise InputError(f"{len(df)} row(s): too few to split into train and test")
        return tuple(train_test_split(df, test_size=test_size, random_state=seed, shuffle=True))
    y = target_array(df[spec.target], spec)
    labels, counts = np.unique(y.astype(str) if y.dtype == object else y, return_counts=True)
    rare = {str(lab): int(n) for lab, n in zip(labels, counts, strict=True) if n < 2}
    if rare:
        raise InputError(
            f"target {spec.target!r}: class(es) with fewer than 2 rows cannot be in both train and test: "
            + ", ".join(f"{k!r} ({v} row)" for k, v in rare.items()),
            column=spec.target,
            classes=rare,
        )
    rng = np.random.default_rng(seed)
    test_pos: list[np.ndarray] = []
    for lab in labels:
        idx = np.flatnonzero((y.astype(str) if y.dtype == object else y) == lab)
        n_test = int(min(max(round(len(idx) * test_size), 1), len(idx) - 1))
        test_pos.append(rng.permutation(idx)[:n_test])
    test_mask = np.zeros(len(df), dtype=bool)
    test_mask[np.concatenate(test_pos)] = True
    order = rng.permutation(len(df))  # keep no class-sorted order in either frame
    return df.iloc[order[~test_mask[order]]], df.iloc[order[test_mask[order]]]


# --------------------------------------------------------------------------------------------------
# cross-validation


@dataclass
class CVOutcome:
    """Cross-validation of one candidate: per-fold metrics and the out-of-fold outputs."""

    folds: pd.DataFrame  # one row per fold: metrics + fit_seconds
    oof: np.ndarray  # out-of-fold probabilities (classification) or predictions (regression)

    def table(self) -> pd.DataFrame:
        """Per-fold rows (fold "1".."k") followed by "mean" and "std" rows."""
        body = self.folds.copy()
        body.insert(0, "fold", [str(i + 1) for i in range(len(body))])
        stats = self.folds.agg(["mean", "std"]).reset_index(names="fold")
        return pd.concat([body, stats], ignore_index=True)

    def mean(self, metric: str) -> float:
        return float(self.folds[metric].mean())

    def std(self, metric: str) -> float:
        return float(self.folds[metric].std())


def _folds(problem: str, n_splits: int, seed: int) -> KFold | StratifiedKFold:
    if problem == "regression":
        return KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def cross_validate(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    problem: str,
    n_splits: int = 5,
    seed: int = 0,
    classes: list[Any] | None = None,
    positive: Any = None,
) -> CVOutcome:
    """k-fold CV (stratified for classification): each fold fits a fresh clone on the other folds, so
    imputation, scaling, PCA and resampling learn from training folds only."""
    rows = []
    shape = (len(y),) if problem == "regression" else (len(y), len(classes))  # type: ignore[arg-type]
    oof = np.full(shape, np.nan)
    for tr, te in _folds(problem, n_splits, seed).split(X, y):
        model = clone(pipeline)
        t0 = time.perf_counter()
        model.fit(X.iloc[tr], y[tr])
        fit_s = time.perf_counter() - t0
        if problem == "regression":
            out = model.predict(X.iloc[te])
        else:
            proba = model.predict_proba(X.iloc[te])
            out = np.zeros((len(te), len(classes)))  # type: ignore[arg-type]
            for j, c in enumerate(model.classes_):
                out[:, classes.index(c)] = proba[:, j]  # type: ignore[union-attr]
        oof[te] = out
        rows.append(
            {**score_metrics(problem, y[te], out, classes, positive), "n_test": len(te), "fit_seconds": fit_s}
        )
    return CVOutcome(pd.DataFrame(rows), oof)


# --------------------------------------------------------------------------------------------------
# search


def _candidates(config: TrainConfig) -> list[dict[str, Any]]:
    space = config.search.space
    if config.search.method == "grid":
        return list(ParameterGrid(space))
    from scipy import stats

    dists: dict[str, Any] = {}
    for name, values in space.items():
        if isinstance(values, list):
            dists[name] = values
        elif values.is_int:
            dists[name] = stats.randint(int(values.low), int(values.high) + 1)
        elif values.log:
            dists[name] = stats.loguniform(values.low, values.high)
        else:
            dists[name] = stats.uniform(values.low, values.high - values.low)
    import warnings

    with warnings.catch_warnings():  # a small all-list space yields the whole grid, with a warning
        warnings.simplefilter("ignore", UserWarning)
        drawn = list(ParameterSampler(dists, n_iter=config.search.n_iter, random_state=config.seed))
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in p.items()} for p in drawn]


def _jsonable(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


@dataclass
class _Scored:
    estimator: str
    params: dict[str, Any]
    cv: CVOutcome
    score: float
    std: float
    seconds: float


def _search_table(scored: list[_Scored], scoring: str) -> pd.DataFrame:
    rows = [
        {
            "candidate": i + 1,
            "estimator": s.estimator,
            "params": _jsonable(s.params),
            f"mean_{scoring}": s.score,
            f"std_{scoring}": s.std,
            "seconds": s.seconds,
        }
        for i, s in enumerate(scored)
    ]
    table = pd.DataFrame(rows)
    table["rank"] = (
        table[f"mean_{scoring}"]
        .rank(ascending=not higher_is_better(scoring), method="min", na_option="bottom")
        .astype(int)
    )
    return table


# --------------------------------------------------------------------------------------------------
# train


@dataclass
class TrainResult:
    """Everything a training run produced; ``pipeline`` is refit on the whole training split."""

    pipeline: Pipeline
    estimator: str
    params: dict[str, Any]
    problem_type: str
    scoring: str
    cv_score: float
    cv_table: pd.DataFrame
    search_table: pd.DataFrame | None
    threshold: float | None
    threshold_metric: str | None
    classes: list[Any] | None
    positive_class: Any
    feature_columns: list[str]
    numeric_columns: list[str]
    categorical_columns: list[str]
    datetime_columns: list[str]
    train_df: pd.DataFrame
    test_df: pd.DataFrame
    rows_without_target: int = 0
    threshold_detail: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def X_test(self) -> pd.DataFrame:
        return self.test_df[self.feature_columns]

    @property
    def cv_means(self) -> dict[str, float]:
        means = self.cv_table.set_index("fold").loc["mean"]
        return {k: float(v) for k, v in means.items() if k not in ("n_test", "fit_seconds")}  # type: ignore[misc]

    @property
    def cv_stds(self) -> dict[str, float]:
        stds = self.cv_table.set_index("fold").loc["std"]
        return {k: float(v) for k, v in stds.items() if k not in ("n_test", "fit_seconds")}  # type: ignore[misc]

    def metadata(self) -> dict[str, Any]:
        """JSON-ready summary for model metadata and registries."""

        def plain(v: Any) -> Any:
            if isinstance(v, np.generic):
                return v.item()
            if isinstance(v, float) and math.isnan(v):
                return None
            return v

        return {
            "estimator": self.estimator,
            "params": json.loads(_jsonable(self.params)),
            "problem_type": self.problem_type,
            "scoring": self.scoring,
            "cv_score": plain(self.cv_score),
            "cv_means": {k: plain(v) for k, v in self.cv_means.items()},
            "cv_stds": {k: plain(v) for k, v in self.cv_stds.items()},
            "threshold": self.threshold,
            "threshold_metric": self.threshold_metric,
            "threshold_detail": self.threshold_detail,
            "classes": [plain(c) for c in self.classes] if self.classes is not None else None,
            "positive_class": plain(self.positive_class),
            "feature_columns": self.feature_columns,
            "numeric_columns": self.numeric_columns,
            "categorical_columns": self.categorical_columns,
            "datetime_columns": self.datetime_columns,
            "n_train": len(self.train_df),
            "n_test": len(self.test_df),
            "rows_without_target": self.rows_without_target,
            "timings": self.timings,
        }


def train(
    df: pd.DataFrame, spec: DatasetSpec, config: TrainConfig | Mapping[str, Any] | None = None
) -> TrainResult:
    """Train a model for ``spec`` on ``df`` (a frame typed by the spec). See the module docstring."""
    t_start = time.perf_counter()
    cfg = parse_config(config).model_copy(deep=True)
    problem = _problem(spec)
    scoring = check_config(cfg, spec)
    data, dropped = prepare_data(df, spec)
    train_df, test_df = split(data, spec, cfg.test_size, cfg.seed)
    numeric, categorical, datetimes = feature_groups(spec, list(data.columns))
    # the spec's order, not the data's: a model's inputs (what V1 rows list in order) must not depend on
    # how a feature store happened to order its columns
    wanted = {*numeric, *categorical, *datetimes}
    features = [c for c in [*spec.feature_columns, *(d.name for d in spec.derived)] if c in wanted]
    X = train_df[features]
    y = target_array(train_df[spec.target], spec)

    classes: list[Any] | None = None
    positive = None
    smote_k = 5
    if problem != "regression":
        classes = sorted(pd.unique(y).tolist(), key=lambda c: (str(type(c)), c))
        counts = pd.Series(y).value_counts()
        smallest = int(counts.min())
        if smallest < cfg.cv_folds:
            label = counts.idxmin()
            raise InputError(
                f"target {spec.target!r}: class {label!r} has {smallest} row(s) in the training split; "
                f"{cfg.cv_folds}-fold CV needs at least {cfg.cv_folds} per class (lower cv_folds or add rows)",
                column=spec.target,
                cv_folds=cfg.cv_folds,
            )
        if problem == "binary":
            positive = positive_label(classes, spec)
        if cfg.imbalance.resample == "smote":
            in_fold = smallest - math.ceil(smallest / cfg.cv_folds)  # smallest class in a training fold
            smote_k = max(1, min(5, in_fold - 1))
    elif len(train_df) < 2 * cfg.cv_folds:
        raise InputError(
            f"{len(train_df)} training rows are too few for {cfg.cv_folds}-fold CV (need {2 * cfg.cv_folds})"
        )
    timings: dict[str, float] = {"checks": time.perf_counter() - t_start}

    def run_cv(name: str, params: Mapping[str, Any]) -> _Scored:
        t0 = time.perf_counter()
        pipe = build_pipeline(
            spec, cfg, estimator=name, params=params, smote_neighbors=smote_k, columns=features
        )
        outcome = cross_validate(pipe, X, y, problem, cfg.cv_folds, cfg.seed, classes, positive)
        return _Scored(
            name, dict(params), outcome, outcome.mean(scoring), outcome.std(scoring), time.perf_counter() - t0
        )

    better = higher_is_better(scoring)

    def rank_key(s: _Scored) -> float:
        if math.isnan(s.score):
            return math.inf
        return -s.score if better else s.score

    t0 = time.perf_counter()
    with threadpool_limits(limits=cfg.n_threads):
        scored: list[_Scored] = []
        if cfg.estimator is None:
            scored = [run_cv(name, {}) for name in AUTO_CANDIDATES[_kind(problem)]]
        elif cfg.search.method == "none":
            scored = [run_cv(cfg.estimator, {})]
        elif cfg.search.method == "optuna":
            scored = _optuna_search(cfg, run_cv, better)
        else:
            scored = [run_cv(cfg.estimator, p) for p in _candidates(cfg)]
        timings["selection" if cfg.estimator is None else "cv_and_search"] = time.perf_counter() - t0
        best = min(scored, key=rank_key)
        search_table = (
            _search_table(scored, scoring) if len(scored) > 1 or cfg.search.method != "none" else None
        )

        threshold = None
        detail: dict[str, float] = {}
        if problem == "binary":
            threshold = 0.5
            if cfg.threshold_metric is not None:
                t0 = time.perf_counter()
                truth = y == positive
                oof_pos = best.cv.oof[:, classes.index(positive)]  # type: ignore[union-attr, index]
                threshold, value = best_threshold(truth, oof_pos, cfg.threshold_metric)
                at_default = decision_metric(truth, oof_pos >= 0.5, cfg.threshold_metric)
                detail = {
                    f"oof_{cfg.threshold_metric}": value,
                    f"oof_{cfg.threshold_metric}_at_0.5": at_default,
                }
                timings["threshold"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        final = build_pipeline(
            spec, cfg, estimator=best.estimator, params=best.params, smote_neighbors=smote_k, columns=features
        )
        final.fit(X, y)
        timings["refit"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    model_params = {**(cfg.params if best.estimator == cfg.estimator else {}), **best.params}
    if cfg.imbalance.class_weight:
        model_params.setdefault("class_weight", cfg.imbalance.class_weight)
    prepare: FramePreparer = final.named_steps["prepare"]
    log.info(
        "trained %s (%s %s=%.4f ± %.4f over %d folds) in %.1fs",
        best.estimator,
        problem,
        scoring,
        best.score,
        best.std,
        cfg.cv_folds,
        timings["total"],
    )
    return TrainResult(
        pipeline=final,
        estimator=best.estimator,
        params=model_params,
        problem_type=problem,
        scoring=scoring,
        cv_score=best.score,
        cv_table=best.cv.table(),
        search_table=search_table,
        threshold=threshold,
        threshold_metric=cfg.threshold_metric if problem == "binary" else None,
        classes=classes,
        positive_class=positive,
        feature_columns=list(features),
        numeric_columns=list(prepare.numeric),
        categorical_columns=list(prepare.categorical),
        datetime_columns=list(prepare.datetime),
        train_df=train_df,
        test_df=test_df,
        rows_without_target=dropped,
        threshold_detail=detail,
        timings=timings,
    )


def _optuna_search(
    cfg: TrainConfig, run_cv: Callable[[str, Mapping[str, Any]], _Scored], better: bool
) -> list[_Scored]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = cfg.search.space
    scored: list[_Scored] = []

    def objective(trial: optuna.Trial) -> float:
        params: dict[str, Any] = {}
        for name, values in space.items():
            if isinstance(values, list):
                params[name] = values[trial.suggest_categorical(f"{name}__index", list(range(len(values))))]
            elif values.is_int:
                params[name] = trial.suggest_int(name, int(values.low), int(values.high), log=values.log)
            else:
                params[name] = trial.suggest_float(
                    name, float(values.low), float(values.high), log=values.log
                )
        result = run_cv(cfg.estimator, params)  # type: ignore[arg-type]
        scored.append(result)
        return result.score if not math.isnan(result.score) else (-math.inf if better else math.inf)

    study = optuna.create_study(
        direction="maximize" if better else "minimize", sampler=optuna.samplers.TPESampler(seed=cfg.seed)
    )
    study.optimize(objective, n_trials=cfg.search.n_iter)
    return scored
