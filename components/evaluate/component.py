"""KFP component: the evaluate step (a thin wrapper over components.evaluate.logic)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components._image import BASE_IMAGE

__all__ = ["evaluate"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    test_data: Input[Dataset],
    spec: str,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
    metric: str = "",
    margin: float = 0.0,
    registry_uri: str = "",
    model_name: str = "",
    champion_metrics: dict = {},  # noqa: B006 - a KFP parameter default, never mutated
) -> NamedTuple("EvaluateOutputs", [("promote", bool), ("reason", str), ("test_metrics", dict),
                                    ("champion_metrics", dict)]):
    """Score the model on the test split, log KFP metrics, write the HTML report, apply the gate.

    The champion is re-scored on the same test split when ``registry_uri`` is given (its registered
    champion, if any); otherwise ``champion_metrics`` are taken as given (empty: no champion, the
    challenger is promoted). ``metric`` is the gate metric (empty: the training scoring metric, e.g.
    roc_auc or rmse); the challenger must beat the champion by ``margin``.
    """
    import math
    import tempfile
    from collections import namedtuple

    import pandas as pd

    from components.evaluate.logic import evaluate as run_evaluate
    from components.evaluate.logic import gate
    from components.evaluate.logic import report as write_report
    from skiff.metrics import default_scoring
    from skiff.modeling import load_model
    from skiff.spec_text import spec_from_text

    dataset = spec_from_text(spec)
    pipeline, info, cv = load_model(model.path)
    frame = pd.read_parquet(test_data.path)
    features = info.get("feature_columns") or dataset.feature_columns
    result = run_evaluate(pipeline, frame[features], frame[dataset.target], dataset, info.get("threshold"))

    finite = {k: float(v) for k, v in result.metrics.items() if isinstance(v, float) and math.isfinite(v)}
    for name, value in finite.items():
        metrics.log_metric(name, value)
    if result.problem_type == "binary" and result.roc_curves:
        curve = next(iter(result.roc_curves.values()))
        classification_metrics.log_roc_curve(curve["fpr"], curve["tpr"], curve["thresholds"])
    if result.confusion_matrix is not None:
        classification_metrics.log_confusion_matrix([str(c) for c in result.classes], result.confusion_matrix)

    champion = dict(champion_metrics or {})
    if registry_uri:
        from components.evaluate.logic import champion_metrics as score_champion
        from skiff.config import load_settings
        from skiff.registry import ModelRegistry
        from skiff.storage import Store

        registry = ModelRegistry(Store(registry_uri, load_settings().storage_options))
        champion = score_champion(registry, model_name or dataset.name, frame, dataset)
    gate_metric = metric or info.get("scoring") or default_scoring(result.problem_type)
    decision = gate(result.metrics, champion, gate_metric, margin)
    report.metadata.update(
        {"gate_metric": gate_metric, "promote": decision.promote, "reason": decision.reason,
         "gate": decision.record()}  # register records it: the metric and values the gate compared
    )

    with tempfile.TemporaryDirectory() as tmp:
        files = write_report(
            result,
            tmp,
            cv_table=cv,
            title=f"{dataset.name}: {info.get('estimator', 'model')} on {result.n} held-out rows",
            extra={"estimator": info.get("estimator"), "params": info.get("params"), "gate": decision.reason},
        )
        with open(report.path, "w", encoding="utf-8") as fh:
            fh.write(files["html"].read_text(encoding="utf-8"))

    outputs = namedtuple("EvaluateOutputs", ["promote", "reason", "test_metrics", "champion_metrics"])
    return outputs(bool(decision.promote), decision.reason, finite, champion)
