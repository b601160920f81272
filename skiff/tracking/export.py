"""A registered version in the MLflow model format (``MLmodel``, sklearn flavor, python_function).

:func:`export_version` writes the version's pipeline wrapped in :class:`skiff.tracking.model.VersionModel`
(so ``mlflow.pyfunc`` predicts the labels skiff's model server answers, at the version's threshold, and
``mlflow.sklearn.load_model(...).predict_proba`` its probabilities) with:

* a signature from the version's input schema, in its feature order (spec types: float and integer as
  ``double``, so a missing value — NaN — passes; boolean; string and category as ``string``; datetime);
* an input example of one row made from the spec's column rules (an allowed value, the imputed value,
  the middle of min/max);
* the skiff modules the pickled pipeline needs (its frame preparer and this wrapper, with what they import
  at module level) as MLflow ``code_paths``, and pinned scikit-learn/numpy/pandas requirements, so tools
  that read MLflow models (MLServer, KServe's MLflow runtime, Databricks/Azure ML registries) need no skiff
  install;
* the version's metadata (metrics, data fingerprint, pipeline run, gate) in ``MLmodel``'s ``metadata``.

:func:`register_export` optionally registers the written model in an MLflow Model Registry, the version's
test metrics as model version tags.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skiff.errors import ConflictError, SkiffError, UsageError

if TYPE_CHECKING:
    import pandas as pd

    from skiff.registry import ModelRegistry, ModelVersion

__all__ = ["FORMATS", "export_version", "register_export", "signature_types", "example_row", "own_modules",
           "module_closure"]

#: Export formats ``skiff models export --format`` knows.
FORMATS = ("mlflow",)
#: Top-level packages of skiff's own code (what an export carries as code paths).
_OWN = ("skiff", "components")
#: spec type -> MLflow column type
_MLFLOW_TYPE = {"float": "double", "integer": "long", "boolean": "boolean", "string": "string",
                "category": "string", "datetime": "datetime"}


def signature_types(input_schema: Mapping[str, str], rules: Mapping[str, Mapping[str, Any]],
                    features: list[str]) -> list[tuple[str, str]]:
    """``(feature, MLflow type)`` in the version's feature order. An integer column that may be missing
    (its rules do not reject a missing value) is ``double``: pandas holds a missing integer as NaN in a
    float column, which MLflow refuses for ``long``."""
    out = []
    for f in features:
        typ = input_schema.get(f, "float")
        mlflow_type = _MLFLOW_TYPE.get(typ, "string")
        if typ == "integer" and (rules.get(f) or {}).get("missing", "keep") != "reject":
            mlflow_type = "double"
        out.append((f, mlflow_type))
    return out


def _example_value(typ: str, mlflow_type: str, rules: Mapping[str, Any]) -> Any:
    if rules.get("allowed"):
        value = rules["allowed"][0]
    elif rules.get("impute_value") is not None:
        value = rules["impute_value"]
    elif isinstance(rules.get("min"), int | float) and isinstance(rules.get("max"), int | float):
        value = (rules["min"] + rules["max"]) / 2
    elif rules.get("min") is not None:
        value = rules["min"]
    elif rules.get("max") is not None:
        value = rules["max"]
    else:
        value = {"float": 0.0, "integer": 0, "boolean": False, "datetime": "2024-01-01T00:00:00+00:00"}.get(typ, "")
    if typ in ("float", "integer"):
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else 0
        return int(number) if mlflow_type == "long" else float(number)
    if typ == "boolean":
        return bool(value) if isinstance(value, bool) else False
    if typ == "datetime":
        import pandas as pd

        return pd.Timestamp(str(value)) if value else pd.Timestamp("2024-01-01", tz="UTC")
    return str(value)


def example_row(input_schema: Mapping[str, str], rules: Mapping[str, Mapping[str, Any]],
                features: list[str]) -> pd.DataFrame:
    """One input row from the spec's column rules, typed as the signature says."""
    import pandas as pd

    types = dict(signature_types(input_schema, rules, features))
    row = {f: _example_value(input_schema.get(f, "float"), types[f], rules.get(f, {})) for f in features}
    return pd.DataFrame([row], columns=features)


def own_modules(obj: Any) -> set[str]:
    """The skiff modules whose classes or functions an object graph holds (what unpickling imports)."""
    import numpy as np

    found: set[str] = set()
    seen: set[int] = set()
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, str | bytes | int | float | bool | np.ndarray | np.generic) or o is None:
            continue
        seen.add(id(o))
        module = o.__module__ if isinstance(o, type) or callable(o) and hasattr(o, "__module__") else \
            type(o).__module__
        if isinstance(module, str) and module.split(".")[0] in _OWN:
            found.add(module)
        if isinstance(o, Mapping):
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset):
            stack.extend(o)
        elif hasattr(o, "__dict__") and not isinstance(o, type):
            stack.extend(vars(o).values())
        if not isinstance(o, type):
            stack.append(type(o))
    return found


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _top_level_imports(path: Path) -> set[str]:
    """skiff modules a file imports when it is imported (module level, outside ``if TYPE_CHECKING``)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        nodes = [node] if not isinstance(node, ast.Try) else [*node.body, *node.orelse]
        for n in nodes:
            if isinstance(n, ast.Import):
                names.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                names.add(n.module)
                names.update(f"{n.module}.{a.name}" for a in n.names)
    return {n for n in names if n.split(".")[0] in _OWN and _module_file(n) is not None}


def module_closure(modules: set[str]) -> dict[str, Path]:
    """Each module, the skiff modules it imports at module level, and every package ``__init__`` on the
    way: module name -> its source file."""
    files: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in files:
            continue
        path = _module_file(name)
        if path is None:
            continue
        files[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_top_level_imports(path))
    return files


def _code_tree(modules: set[str], dest: Path) -> list[str]:
    """Copy the closure of ``modules`` into ``dest`` as packages; the top-level folders written."""
    for name, path in module_closure(modules).items():
        rel = Path(*name.split("."))
        target = dest / (rel / "__init__.py" if path.name == "__init__.py" else rel.with_suffix(".py"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return sorted(str(p) for p in dest.iterdir())


def _requirements(model: Any) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    wanted = ["scikit-learn", "numpy", "pandas", "scipy", "joblib", "threadpoolctl"]
    modules = {type(o).__module__.split(".")[0] for o in _estimators(model)}
    if "imblearn" in modules:
        wanted.append("imbalanced-learn")
    out = []
    for dist in wanted:
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            out.append(dist)
    return out


def _estimators(model: Any) -> list[Any]:
    found: list[Any] = []
    stack = [model]
    while stack:
        o = stack.pop()
        found.append(o)
        for attr in ("steps", "transformers_", "pipeline"):
            v = getattr(o, attr, None)
            if isinstance(v, list):
                stack.extend(x[1] for x in v if isinstance(x, tuple) and len(x) >= 2)
            elif v is not None and attr == "pipeline":
                stack.append(v)
    return found


def _metadata(mv: ModelVersion) -> dict[str, Any]:
    m = mv.metadata

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return {"skiff_model": mv.name, "skiff_version": mv.version, "problem_type": m.problem_type,
            "estimator": m.estimator, "threshold": m.threshold, "classes": m.classes, "features": m.features,
            "metrics": {k: clean(v) for k, v in m.metrics.items()}, "data_fingerprint": m.data_fingerprint,
            "pipeline_run_id": m.pipeline_run_id, "gate": {k: clean(v) for k, v in m.gate.items()},
            "code_version": m.code_version, "created_at": m.created_at}


def export_version(registry: ModelRegistry, name: str, version: int | str | None, out: str | Path,
                   *, fmt: str = "mlflow") -> dict[str, Any]:
    """Write the version as an MLflow model into ``out`` (a new or empty folder); what was written."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConflictError(f"{out} exists and is not an empty folder: choose a new output folder", path=str(out))
    mv = registry.get(name, version)
    m = mv.metadata
    if m.flavor != "sklearn":
        raise UsageError(f"{name} version {mv.version} is a {m.flavor} model: the MLflow export writes "
                         "scikit-learn versions (flavor sklearn)")
    import mlflow.sklearn
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    from skiff.tracking.model import VersionModel

    pipeline = registry.load_model(name, mv.version)
    features = list(m.features)
    problem = m.problem_type or ("regression" if not hasattr(pipeline, "predict_proba") else "binary")
    model = VersionModel(pipeline=pipeline, problem_type=problem, features=features,
                         classes=list(m.classes) if m.classes is not None else None, threshold=m.threshold)
    example = example_row(m.input_schema, m.input_rules, features)
    inputs = Schema([ColSpec(t, f) for f, t in signature_types(m.input_schema, m.input_rules, features)])
    import warnings

    try:
        with warnings.catch_warnings():  # its hint on integer inputs: the inputs are declared above, not inferred
            warnings.simplefilter("ignore", UserWarning)
            outputs = infer_signature(example, model.predict(example)).outputs
    except Exception as e:  # the example is the spec's, not real data: a model may refuse it
        raise SkiffError(f"{name} version {mv.version} cannot score the spec's example row: "
                         f"{type(e).__name__}: {e}") from e
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "code"
        code.mkdir()
        code_paths = _code_tree(own_modules(model), code)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        mlflow.sklearn.save_model(
            model, str(out), signature=ModelSignature(inputs=inputs, outputs=outputs), input_example=example,
            code_paths=code_paths, pip_requirements=_requirements(model), metadata=_metadata(mv),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
    return {"name": name, "version": mv.version, "format": fmt, "path": str(out.resolve()),
            "flavors": ["sklearn", "python_function"], "features": features, "problem_type": problem}


def register_export(path: str | Path, model_name: str, metrics: Mapping[str, float], *,
                    tracking_uri: str, registry_uri: str | None = None) -> dict[str, Any]:
    """Register an exported model folder in an MLflow Model Registry as a new version of ``model_name``,
    the skiff version's metrics as its tags; returns the MLflow model version."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
    try:
        client.get_registered_model(model_name)
    except Exception:  # not there yet
        client.create_registered_model(model_name)
    source = Path(path).resolve().as_uri()
    tags = {f"metric.{k}": repr(float(v)) for k, v in metrics.items()}
    created = client.create_model_version(model_name, source, tags=tags)
    return {"registered_model": model_name, "mlflow_version": str(created.version), "source": source}
