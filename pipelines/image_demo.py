"""The image demo: generate a small synthetic image set (shapes per class, a few broken files) and run the
image pipeline on it with kfp.local on the CPU, in a few minutes.

``python -m pipelines.image_demo [--images-dir DIR] [--per-class N] [--size PX]``: the images go to
``DIR`` (default ``.skiff/demo-images``), the lake and registry to the settings' root (``SKIFF_ROOT``, default ``./.skiff``).
It trains the small ``TinyConvNet`` backbone from random weights (no ImageNet download here); on a machine
with internet, ``--train-config '{"backbone": "MobileNetV3Small", "weights": "imagenet"}'`` uses the real one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "DEMO_TRAIN_CONFIG"]

#: quick on a small CPU: 32x32 images, a tiny backbone, random weights
DEMO_TRAIN_CONFIG = {"backbone": "TinyConvNet", "weights": "", "image_size": 32, "head_epochs": 4, "head_lr": 3e-3,
                     "fine_tune_epochs": 30, "fine_tune_lr": 5e-3, "fine_tune_layers": 100, "patience": 8}


def main(argv: list[str] | None = None) -> int:
    from pipelines.definitions import get_pipeline
    from pipelines.runner import local_pipeline_root, run_local
    from skiff.config import load_settings
    from skiff.datagen_images import image_set
    from skiff.spec import DatasetSpec

    parser = argparse.ArgumentParser(prog="python -m pipelines.image_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--images-dir", default=".skiff/demo-images",
                        help="local folder the generated images are written to (and reused from)")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--train-config", type=json.loads, default={})
    opts = parser.parse_args(argv)
    data = Path(opts.images_dir)
    if not data.exists():
        wrote = image_set(data, per_class=opts.per_class, size=opts.size, broken=True)
        print(f"wrote {wrote.good} images and {len(wrote.quarantined) + len(wrote.duplicates)} broken or "
              f"duplicate files to {data}")
    settings = load_settings()
    spec = DatasetSpec.model_validate({"name": "demo_shapes", "entity_key": "path",
                                       "columns": {"path": {"type": "string"}, "label": {"type": "string"}}})
    definition = get_pipeline("image")
    config = {**DEMO_TRAIN_CONFIG, "image_size": opts.size, **opts.train_config}
    args = definition.arguments(spec, {"data": str(data), "train_config": config}, settings, local=True)
    run = run_local("image", args, local_pipeline_root(settings),
                    lambda step, status: print(f"  {step}: {status}", flush=True))
    summary = definition.summarize(run, settings)
    for line in definition.summary_lines(summary):
        print(line)
    if summary["status"] != "SUCCESS":
        print(summary.get("error"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
