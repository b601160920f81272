"""Pipeline definitions: what each pipeline takes, checks before it starts, and reports when it ends.

A :class:`PipelineDefinition` holds one pipeline's name, its ``@dsl.pipeline`` function (imported
lazily: KFP and the components take a moment to import), the parameters a user sets, and three
functions: ``arguments`` (user parameters and settings to the pipeline's arguments), ``preflight``
(what can be checked before any step runs) and ``summarize`` (the finished run as a summary, with
``summary_lines`` for people). The runner, the CLI (``run``, ``demo``, ``compile``) and the REST API
all go through :data:`PIPELINES` / :func:`get_pipeline`: a pipeline is named in this registry only,
and the faces only render what a definition gives them. How a finished run ended is read from its
summary in one place too (:func:`run_outcome`, :func:`run_failure`): the CLI's exit code and the API's
run status say the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from typing import TYPE_CHECKING, Any, Literal

from skiff.errors import GateFailed, NotFoundError, SkiffError, UsageError

if TYPE_CHECKING:
    from skiff.config import Settings
    from skiff.spec import DatasetSpec

__all__ = [
    "Parameter",
    "PipelineDefinition",
    "PIPELINES",
    "TABULAR",
    "IMAGE",
    "RECOMMENDER",
    "RunOutcome",
    "get_pipeline",
    "run_outcome",
    "run_failure",
]

#: how a finished run ended: every step succeeded; a gate stopped it (validation's blocking anomalies, the
#: accepted-share gate); or a step failed
RunOutcome = Literal["succeeded", "gate_failed", "failed"]

#: how a JSON value of each parameter type is called in messages
_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


@dataclass(frozen=True)
class Parameter:
    """A parameter a user sets (``--param k=v`` on the command line, ``params`` in the REST API)."""

    name: str
    type: type  # the JSON type its value must have: str, int, float, bool, list or dict
    default: Any
    help: str

    def check(self, value: Any) -> None:
        """A :class:`UsageError` naming the parameter when ``value`` is not of its JSON type."""
        if isinstance(value, bool):  # a bool is an int to Python, never a number to JSON
            ok = self.type is bool
        elif self.type is float:  # JSON has one number type: 1 is a fine float
            ok = isinstance(value, int | float)
        else:
            ok = isinstance(value, self.type)
        if not ok:
            raise UsageError(f"pipeline parameter {self.name!r} must be a JSON {_JSON_NAMES[self.type]}, "
                             f"got {value!r}"[:300])


@dataclass(frozen=True)
class PipelineDefinition:
    """One pipeline: its parameters, how its arguments are built and checked, and its run summary."""

    name: str
    spec_help: str  # what the dataset spec is to this pipeline (every pipeline runs on one dataset)
    parameters: tuple[Parameter, ...]
    load: Callable[[], Any]  # the @dsl.pipeline function
    build: Callable[[DatasetSpec, dict[str, Any], Settings, bool], dict[str, Any]]
    check: Callable[[DatasetSpec, dict[str, Any]], None]
    summary: Callable[[dict[str, Any], Settings], dict[str, Any]]
    lines: Callable[[dict[str, Any]], list[str]]
    #: the spec when a run names none, from the user's parameters (the image pipeline: its folder); None:
    #: every run needs a spec. It may take its own entries out of the parameters.
    spec_from_params: Callable[[dict[str, Any]], DatasetSpec] | None = None

    @property
    def function(self) -> Any:
        """The ``@dsl.pipeline`` function (what kfp.local runs and the compiler writes as IR YAML)."""
        return self.load()

    def help(self) -> dict[str, str]:
        """Each parameter's help, the spec first (what ``GET /pipelines`` lists)."""
        return {"spec": self.spec_help, **{p.name: p.help for p in self.parameters}}

    def arguments(self, spec: DatasetSpec, params: Mapping[str, Any], settings: Settings, *,
                  local: bool) -> dict[str, Any]:
        """The pipeline's arguments from the spec, the user's parameters and the settings, checked
        (:meth:`preflight`) before anything runs; paths are absolute for the local engine."""
        known = {p.name: p for p in self.parameters}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise UsageError(f"unknown parameter(s) {unknown} for pipeline {self.name}; known: {sorted(known)}")
        for key, value in params.items():
            known[key].check(value)
        args = self.build(spec, dict(params), settings, local)
        self.preflight(spec, args)
        return args

    def preflight(self, spec: DatasetSpec, args: Mapping[str, Any]) -> None:
        """What can be checked before any step runs (a :class:`UsageError` naming the fix)."""
        self.check(spec, dict(args))

    def summarize(self, run: Any, settings: Settings) -> dict[str, Any]:
        """The run summary of a finished local run (a ``pipelines.runner.LocalRun`` or its dict)."""
        return self.summary(asdict(run) if is_dataclass(run) and not isinstance(run, type) else dict(run), settings)

    def summary_lines(self, summary: Mapping[str, Any]) -> list[str]:
        """The summary for people: a few plain lines (the faces print them as they are)."""
        return self.lines(dict(summary))


def _tabular_function() -> Any:
    from pipelines.tabular import tabular

    return tabular


def _tabular() -> PipelineDefinition:
    from pipelines import tabular_run

    return PipelineDefinition(
        name="tabular",
        spec_help="the dataset spec (a YAML file path on the command line; its JSON text in the pipeline, "
                  "which keeps the column order a dict parameter loses)",
        parameters=(
            Parameter("sources", list, [], "list of sources overriding the spec's (same form as the spec's "
                                           "sources)"),
            Parameter("model_name", str, "", "registered model name (default: the dataset name)"),
            Parameter("train_config", dict, {}, "training config: estimator, params, pca, cv_folds, search, "
                                                "imbalance, threshold_metric …"),
            Parameter("estimator", str, None, "shortcut for train_config.estimator"),
            Parameter("metric", str, "", "gate metric (default: the training scoring metric, e.g. roc_auc or "
                                         "rmse)"),
            Parameter("margin", float, 0.0, "how much the challenger must beat the champion by on the gate "
                                            "metric"),
            Parameter("drift_threshold", float, 0.1, "default drift threshold (JSD / L-infinity) for "
                                                     "validation"),
            Parameter("feature_thresholds", dict, {}, "per-feature drift thresholds {column: value}"),
            Parameter("warn_only", bool, False, "validation never blocks"),
            Parameter("ingest_date", str, "", "partition date to ingest into (default: today)"),
            Parameter("lake_run", str, "", "a committed lake run id to validate and train on alone (default: "
                                           "the runs of the current spec); ingestion then reads no source and "
                                           "names that run, so `sources` must be empty"),
        ),
        load=_tabular_function,
        build=tabular_run.arguments,
        check=tabular_run.preflight,
        summary=tabular_run.summarize,
        lines=tabular_run.summary_lines,
    )


TABULAR = _tabular()


def _image_function() -> Any:
    from pipelines.image import image

    return image


def _image() -> PipelineDefinition:
    from pipelines import image_run

    return PipelineDefinition(
        name="image",
        spec_help="the dataset spec naming the image set (its name is the lake folder and the default model name)",
        parameters=(
            Parameter("data", str, "", "the images: an ImageFolder root (class folders, optionally under "
                                       "train/ val/ test/), a CSV/JSON manifest of path,label, or a URI"),
            Parameter("model_name", str, "", "registered model name (default: the dataset name)"),
            Parameter("ingest_config", dict, {}, "image checks: min_size, min_per_class, animated, palette, "
                                                 "extensions"),
            Parameter("train_config", dict, {}, "training: backbone, weights, image_size, epochs, learning rates, "
                                                "fine_tune_layers …"),
            Parameter("margin", float, 0.0, "how much the challenger's top-1 accuracy must beat the champion's by"),
            Parameter("top_k", int, 3, "k of the top-k accuracy"),
            Parameter("ingest_date", str, "", "partition date to ingest into (default: today)"),
            Parameter("name", str, "", "without a spec: the data set's name (default: the folder's name)"),
            Parameter("backbone", str, None, "shortcut for train_config.backbone (MobileNetV3Small, "
                                             "MobileNetV3Large, EfficientNetV2B0, ResNet50, TinyConvNet)"),
            Parameter("weights", str, None, "shortcut for train_config.weights: imagenet, empty (random) or a "
                                            "backbone .weights.h5 URI"),
            Parameter("image_size", int, None, "shortcut for train_config.image_size (pixels)"),
            Parameter("epochs", int, None, "shortcut for the epochs of both training phases (head_epochs, "
                                           "fine_tune_epochs)"),
            Parameter("workers", int, 1, "training nodes: more than 1 trains as a Kubeflow TFJob "
                                         "(MultiWorkerMirroredStrategy; a cluster run)"),
            Parameter("gpus_per_worker", int, 1, "nvidia.com/gpu per TFJob worker (with workers > 1)"),
        ),
        load=_image_function,
        build=image_run.arguments,
        check=image_run.preflight,
        summary=image_run.summarize,
        lines=image_run.summary_lines,
        spec_from_params=image_run.folder_spec,
    )


IMAGE = _image()


def _recommender_function() -> Any:
    from pipelines.recommender import recommender

    return recommender


def _recommender() -> PipelineDefinition:
    from pipelines import recommender_run

    return PipelineDefinition(
        name="recommender",
        spec_help="the interaction data set's spec (problem_type recommendation: user, item, event type, event "
                  "time, optional rating), validated by ingestion like any data set",
        parameters=(
            Parameter("sources", list, [], "list of sources overriding the spec's (same form as the spec's "
                                           "sources)"),
            Parameter("model_name", str, "", "registered model name (default: the dataset name)"),
            Parameter("recs_config", dict, {}, "recommender config: user/item/event columns, weights, "
                                               "half_life_days, test_days, k, models, als, ann …"),
            Parameter("margin", float, 0.0, "how much the challenger's NDCG@k must beat the champion's by"),
            Parameter("ingest_date", str, "", "partition date to ingest into (default: today)"),
        ),
        load=_recommender_function,
        build=recommender_run.arguments,
        check=recommender_run.preflight,
        summary=recommender_run.summarize,
        lines=recommender_run.summary_lines,
    )


RECOMMENDER = _recommender()

#: name -> definition: the one place a pipeline is known by name
PIPELINES: dict[str, PipelineDefinition] = {d.name: d for d in (TABULAR, IMAGE, RECOMMENDER)}


def get_pipeline(name: str) -> PipelineDefinition:
    """The named pipeline's definition; a :class:`NotFoundError` listing the known ones."""
    try:
        return PIPELINES[name]
    except KeyError as e:
        raise NotFoundError(f"unknown pipeline {name!r}; known: {sorted(PIPELINES)}", pipeline=name) from e


def run_outcome(summary: Mapping[str, Any]) -> RunOutcome:
    """How the run a summary (:meth:`PipelineDefinition.summarize`) describes ended."""
    if summary.get("status") == "SUCCESS":
        return "succeeded"
    return "gate_failed" if summary.get("gate_failed") else "failed"


def run_failure(label: str, summary: Mapping[str, Any]) -> SkiffError | None:
    """The error a face raises for a run that did not succeed (None when it did): :class:`GateFailed`
    (exit 1) when a gate stopped it, else :class:`SkiffError`, with the first line of the run's error;
    ``label`` names the run (``pipeline tabular``)."""
    outcome = run_outcome(summary)
    if outcome == "succeeded":
        return None
    error = str(summary.get("error") or "pipeline failed").strip() or "pipeline failed"
    message = f"{label} failed: {error.splitlines()[0]}"
    return GateFailed(message) if outcome == "gate_failed" else SkiffError(message)
