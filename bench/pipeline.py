"""The platform's overhead: the tabular steps as one plain Python script vs ``skiff run tabular --local``.

Both do the same work on the same ~7,000-row churn export, each with its own fresh skiff root
(ingest, TFDV validation, Feast apply/materialize/point-in-time rows, training, evaluation with its
report, the champion gate, ONNX export and registration): the plain script calls the step functions
in one process; the platform runs the KFP pipeline under
kfp.local (one process per step, artifacts passed through files). Prints both wall times, their
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
    """The same steps as plain function calls in this process; returns (seconds, test roc_auc)."""
    t0 = time.perf_counter()
    import pandas as pd

    from components.evaluate.logic import champion_metrics, evaluate, gate, report
    from components.features.logic import run_features
    from components.ingest.logic import ingest
    from components.register.logic import input_schema, register_version
    from components.train.logic import train
    from components.validate.logic import validate_partition
    from skiff.lake import Lake
    from skiff.onnx_export import ONNX_FILE, export_onnx
    from skiff.registry import ModelRegistry
    from skiff.spec import load_spec, parse_spec
    from skiff.storage import Store

    spec = load_spec(REPO / "examples" / "churn.yaml")
    spec = parse_spec({**spec.model_dump(mode="json", exclude_none=True),
                       "sources": [{"type": "file", "path": str(csv), "format": "csv"}]})
    lake = Lake(Store(str(root / "lake")))
    ingest(spec, lake)
    result = validate_partition(spec, lake, tfdv_python=str(REPO / ".venv-tfdv" / "bin" / "python"))
    assert result.passed, result
    training = root / "training.parquet"
    run_features(spec, lake, REPO / "feature_repo", root / "feast", training_out=training)
    trained = train(pd.read_parquet(training), spec, {"estimator": "logistic_regression"})
    registry = ModelRegistry(Store(str(root / "models")))
    champ = champion_metrics(registry, spec.name, trained.test_df, spec)
    ev = evaluate(trained.pipeline, trained.X_test, trained.test_df[spec.target], spec, trained.threshold)
    files = report(ev, root / "report", cv_table=trained.cv_table)  # the evaluate step's HTML report
    decision = gate(ev.metrics, champ, "roc_auc", 0.0)
    schema = input_schema(spec, trained.feature_columns)
    onnx = export_onnx(trained.pipeline, trained.test_df, root / ONNX_FILE, features=trained.feature_columns,
                       input_schema=schema)  # the register step's fast-path export
    extra = {ONNX_FILE: root / ONNX_FILE} if onnx["exact"] else {}
    register_version(registry, spec.name, trained.pipeline,
                     {"metrics": ev.metrics, "features": trained.feature_columns, "input_schema": schema,
                      "extra": {"onnx": onnx}},
                     promote=decision.promote, reason=decision.reason,
                     files={"report.html": files["html"], **extra})
    return time.perf_counter() - t0, float(ev.metrics["roc_auc"])


def platform_run(root: Path, csv: Path) -> tuple[float, float, dict]:
    """``skiff run tabular --local`` as a user runs it; returns (seconds, test roc_auc, step times)."""
    env = {**os.environ, "SKIFF_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "skiff", "run", "tabular", "--local", "--json",
           "--param", f"spec={REPO / 'examples' / 'churn.yaml'}",
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
