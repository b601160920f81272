"""One worker of a TFJob (:mod:`components.train_image.tfjob`): ``python -m components.train_image.worker``.

Every worker reads the accepted images of lake run ``--run-id`` of ``--dataset`` and trains with the step's
own :func:`components.train_image.logic.train_image`; ``TF_CONFIG`` (the training operator writes it) makes
that a ``MultiWorkerMirroredStrategy`` run over all of them. The chief (worker 0) publishes the model folder
at ``--output-uri`` on the artifact store in one step (:meth:`skiff.storage.Store.atomic_dir`), with
``result.json`` (what the single-node step records in its artifact's metadata); the others save into a
temporary folder that is thrown away. Every worker prints one JSON line: whether it is the chief, the
workers, the strategy, the output URI (the chief's) and the SHA-256 of its final weights (the same on every
worker: the training is synchronous).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["main", "RESULT_FILE"]

RESULT_FILE = "result.json"


def _split_uri(uri: str) -> tuple[str, str]:
    parent, _, last = uri.rstrip("/").rpartition("/")
    if not parent or not last:
        raise ValueError(f"--output-uri must name a folder under a parent, got {uri!r}")
    return parent, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.train_image.worker",
                                     description="one worker of the train_image TFJob")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--lake-uri", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--output-uri", required=True)
    parser.add_argument("--config", type=json.loads, default={})
    parser.add_argument("--storage-options", type=json.loads, default={})
    opts = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from components.train_image.logic import TrainImageConfig, is_chief, tf_config_workers, train_image
    from skiff.image_data import read_image_table
    from skiff.lake import Lake
    from skiff.storage import Store

    storage = opts.storage_options or None
    config = TrainImageConfig.model_validate(opts.config)
    lake = Lake(Store(opts.lake_uri, storage))
    ref = lake.select_runs(opts.dataset, run_id=opts.run_id).runs[0]
    rows = read_image_table(lake, ref).to_pylist()
    chief = is_chief()
    with tempfile.TemporaryDirectory(prefix="skiff-train-worker-") as tmp:
        out = Path(tmp) / "model"
        result = train_image(rows, out, config, storage_options=storage)
        if chief:
            manifest = lake.manifest(ref)
            meta = {"classes": result.classes, "counts": result.counts, "phases": result.phases,
                    "device": result.device, "dataset": opts.dataset, "run_id": ref.run_id, "ingest_date": ref.date,
                    "content_hash": manifest.content_hash or "", "duration_s": result.duration_s,
                    "weights_sha256": result.weights_sha256}
            parent, name = _split_uri(opts.output_uri)
            with Store(parent, storage).atomic_dir(name) as staging:
                shutil.copytree(out, staging, dirs_exist_ok=True)
                (staging / RESULT_FILE).write_text(json.dumps(meta, indent=2))
    print(json.dumps({"chief": chief, "workers": tf_config_workers(), "strategy": result.device["strategy"],
                      "output_uri": opts.output_uri if chief else None, "weights_sha256": result.weights_sha256}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
