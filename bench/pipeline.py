"""The platform's overhead: the tabular steps as one plain Python script vs ``skiff run tabular --local``.

Both do the same work on the same ~7,000-row churn export, each with its own fresh skiff root
(ingest, TFDV validation, Feast apply/materialize/point-in-time rows, training, evaluation with its
report, the champion gate, ONNX export, registration and the run's MLflow record): the plain script
calls the step functions in one process; the platform runs the KFP pipeline under kfp.local (one
process per step, artifacts passed through files). Prints both wall times, their
ratio (target: ≤ 2×, and the local run under 90 s on a 2-core machine) and the test ROC-AUC of both
(equal within 0.01).

    .venv/bin/python bench/pipeline.py [--rows 7043]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def plain_script(root: Path, csv: Path) -> tuple[float, float]:
    """The same steps as plain function calls in this process; returns (seconds, test roc_auc).

    Each step calls the logic functions its KFP component calls, in the same order and with the same
    arguments; only what the platform adds is left out (artifacts written between processes, the
    model folder saved and loaded again, KFP metrics logging).
    """
    t0 = time.perf_counter()
    import math

    import pandas as pd

    from components.evaluate.logic import champion_metrics, evaluate, gate, report
    from components.features.logic import run_features
    from components.ingest.logic import ingest
    from components.register.logic import (
        gate_record,
        input_schema,
        model_features,
        register_version,
        version_metadata,
    )
    from components.train.logic import parse_config, train
    from components.validate.logic import ValidateConfig, validate_partition
    from skiff.lake import Lake
    from skiff.metrics import default_scoring
    from skiff.onnx_export import ONNX_FILE, export_onnx
    from skiff.registry import ModelRegistry
    from skiff.spec import load_spec, parse_spec
    from skiff.spec_text import spec_to_text
    from skiff.storage import Store

    spec = load_spec(REPO / "examples" / "churn.yaml")
    spec = parse_spec({**spec.model_dump(mode="json", exclude_none=True),
                       "sources": [{"type": "file", "path": str(csv), "format": "csv"}]})
    spec_text = spec_to_text(spec)  # what the pipeline passes each step
    lake = Lake(Store(str(root / "lake")))
    ingested = ingest(spec, lake, run_id="bench")
    validated = validate_partition(spec, lake, date=ingested.ingest_date, config=ValidateConfig(drift_threshold=0.1),
                                   tfdv_python=str(REPO / ".venv-tfdv" / "bin" / "python"))
    assert validated.passed, validated
    training_path = root / "training.parquet"
    feats = run_features(spec, lake, REPO / "feature_repo", root / "feast", training_out=training_path)
    training = pd.read_parquet(training_path)
    trained = train(training, spec, parse_config({"estimator": "logistic_regression"}))
    info, test = trained.metadata(), trained.test_df
    # evaluate (components/evaluate/component.py)
    features = info.get("feature_columns") or spec.feature_columns
    ev = evaluate(trained.pipeline, test[features], test[spec.target], spec, info.get("threshold"))
    registry = ModelRegistry(Store(str(root / "models")))
    champion = champion_metrics(registry, spec.name, test, spec)
    decision = gate(ev.metrics, champion, info.get("scoring") or default_scoring(ev.problem_type), 0.0)
    files = report(ev, root / "report", cv_table=trained.cv_table,
                   title=f"{spec.name}: {info.get('estimator', 'model')} on {ev.n} held-out rows",
                   extra={"estimator": info.get("estimator"), "params": info.get("params"), "gate": decision.reason})
    test_metrics = {k: float(v) for k, v in ev.metrics.items() if isinstance(v, float) and math.isfinite(v)}
    # register (components/register/component.py)
    features = model_features(info, spec)
    onnx = export_onnx(trained.pipeline, test, root / ONNX_FILE, features=features,
                       input_schema=input_schema(spec, features))
    meta = version_metadata(
        spec, spec_text, info, trained.cv_table, training, name=spec.name, test_metrics=test_metrics,
        gate=gate_record({"gate": decision.record()}, metric="", margin=0.0, promote=decision.promote,
                         reason=decision.reason),
        partitions=feats.partitions, feature_service=feats.feature_service,
        statistics_uri=validated.statistics_uri, pipeline_run_id="bench", onnx=onnx,
    )
    extra = {ONNX_FILE: root / ONNX_FILE} if onnx["exact"] else {}
    published = register_version(registry, spec.name, trained.pipeline, meta, promote=decision.promote,
                                 reason=decision.reason,
                                 files={"report.html": files["html"], "statistics.pb": validated.statistics_uri,
                                        **extra})
    # the run's MLflow record, as the register step logs it (a local store under the root by default)
    from skiff.config import load_settings
    from skiff.tracking.runs import track_version

    track_version(load_settings(root=str(root)), "", registry_uri=str(root / "models"), name=spec.name,
                  version=published.version, run_id="bench", pipeline="tabular", lake_uri=str(root / "lake"))
    return time.perf_counter() - t0, float(ev.metrics["roc_auc"])


def platform_run(root: Path, csv: Path) -> tuple[float, float, dict]:
    """``skiff run tabular --local`` as a user runs it; returns (seconds, test roc_auc, step times)."""
    env = {**os.environ, "SKIFF_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "skiff", "run", "tabular", "--local", "--json",
           "--spec", str(REPO / "examples" / "churn.yaml"),
           "--param", f'sources=["{csv}"]',
           "--param", 'train_config={"estimator": "logistic_regression"}']
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"skiff run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    return elapsed, float(summary["registered"]["metrics"]["roc_auc"]), summary["steps"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=7043)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from skiff import datagen

    with tempfile.TemporaryDirectory(prefix="skiff-bench-") as tmp:
        tmp = Path(tmp)
        csv = tmp / "churn.csv"
        datagen.dirty(datagen.churn(n=args.rows, seed=0), seed=0).to_csv(csv, index=False)
        (tmp / "plain").mkdir()
        (tmp / "platform").mkdir()
        plain_s, plain_auc = plain_script(tmp / "plain", csv)
        plat_s, plat_auc, steps = platform_run(tmp / "platform", csv)
    ratio = plat_s / plain_s
    print(f"rows: {args.rows}")
    print(f"plain script:           {plain_s:7.1f} s   test ROC-AUC {plain_auc:.4f}")
    print(f"skiff run tabular --local: {plat_s:7.1f} s   test ROC-AUC {plat_auc:.4f}")
    print("  steps: " + ", ".join(f"{k} {v['duration_s']:.1f}s" for k, v in steps.items()))
    print(f"overhead ratio (platform / plain): {ratio:.2f}x   (target <= 2.0x; local run target < 90 s)")
    print(f"ROC-AUC difference: {abs(plat_auc - plain_auc):.4f} (target <= 0.01)")
    ok = ratio <= 2.0 and plat_s < 90 and abs(plat_auc - plain_auc) <= 0.01
    print("result:", "within targets" if ok else "MISSED a target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
