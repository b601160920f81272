"""KFP component: the evaluate step (a thin wrapper over :func:`components.evaluate.logic.evaluate_step`)."""

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
    from collections import namedtuple

    from components.evaluate.logic import evaluate_step
    from skiff.spec_text import spec_from_text

    step = evaluate_step(model.path, test_data.path, spec_from_text(spec), metric=metric, margin=margin,
                         registry_uri=registry_uri, model_name=model_name,
                         champion_metrics_given=champion_metrics)
    for name, value in step.test_metrics.items():
        metrics.log_metric(name, value)
    curve = step.roc_curve
    if curve is not None:
        classification_metrics.log_roc_curve(curve["fpr"], curve["tpr"], curve["thresholds"])
    if step.result.confusion_matrix is not None:
        classification_metrics.log_confusion_matrix([str(c) for c in step.result.classes or []],
                                                    step.result.confusion_matrix)
    report.metadata.update(step.report_metadata())
    with open(report.path, "w", encoding="utf-8") as fh:
        fh.write(step.report_html)

    outputs = namedtuple("EvaluateOutputs", ["promote", "reason", "test_metrics", "champion_metrics"])
    return outputs(bool(step.decision.promote), step.decision.reason, step.test_metrics, step.champion)
