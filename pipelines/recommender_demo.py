"""The recommendations demo: generate a shop's interaction log, train and register a recommender with the
recommender pipeline (kfp.local), serve it, send a live click and show that the next top-k changed.

``python -m pipelines.recommender_demo [--users N] [--items N] [--port P]``: the log goes to
``.skiff/demo-recs/events.csv``, the lake, registry and online store (SQLite) to the settings' root
(``SKIFF_ROOT``, default ``./.skiff``).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(name: str, port: int, root: str, timeout_s: float = 180.0) -> subprocess.Popen[bytes]:
    """The model server's container entry point (``python -m serving predictor``), ready (a pipeline never
    imports serving: it runs it as a cluster does)."""
    import httpx

    root = root if "://" in root else str(Path(root).resolve())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "serving", "predictor", name, "--root", root, "--port", str(port)],
                            env=env, cwd=str(Path(__file__).resolve().parents[1]))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the model server exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"the model server was not ready in {timeout_s:.0f}s")


def main(argv: list[str] | None = None) -> int:
    import httpx

    from pipelines.definitions import get_pipeline
    from pipelines.runner import local_pipeline_root, run_local
    from skiff.config import load_settings
    from skiff.datagen_recs import RECS_SPEC, interactions
    from skiff.spec import parse_spec

    ap = argparse.ArgumentParser(prog="python -m pipelines.recommender_demo", description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--data-dir", default=".skiff/demo-recs")
    opts = ap.parse_args(argv)
    path = Path(opts.data_dir) / "events.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = interactions(opts.users, opts.items, seed=7)
    frame.to_csv(path, index=False)
    print(f"wrote {len(frame)} events of {frame.user_id.nunique()} users on {frame.item_id.nunique()} items to {path}")
    settings = load_settings()
    spec = parse_spec({**RECS_SPEC, "sources": [{"type": "file", "path": str(path)}]})
    definition = get_pipeline("recommender")
    args = definition.arguments(spec, {}, settings, local=True)
    run = run_local("recommender", args, local_pipeline_root(settings),
                    lambda step, status: print(f"  {step}: {status}", flush=True))
    summary = definition.summarize(run, settings)
    for line in definition.summary_lines(summary):
        print(line)
    if summary["status"] != "SUCCESS":
        print(summary.get("error"), file=sys.stderr)
        return 1
    name = args["model_name"]
    port = opts.port or _port()
    print(f"serving {name} on 127.0.0.1:{port} …", flush=True)
    proc = _serve(name, port, settings.root)
    base = f"http://127.0.0.1:{port}/v1/models/{name}"
    try:
        user = frame.user_id.iloc[0]
        ask = {"instances": [{"user_id": user, "k": 5}]}
        before = httpx.post(f"{base}:predict", json=ask, timeout=10).json()["predictions"][0]
        print(f"top-5 for {user}: {before['items']}")
        # a click on items of another user's taste: the next answer follows it
        other = next(u for u in frame.user_id.value_counts().index if u != user)
        clicked = list(frame.loc[frame.user_id == other, "item_id"].value_counts().index[:3])
        t0 = time.perf_counter()
        events = [{"user_id": user, "item_id": i, "event_type": "click"} for i in clicked]
        done = httpx.post(f"{base}/events", json={"events": events}, timeout=10).json()
        after = httpx.post(f"{base}:predict", json=ask, timeout=10).json()["predictions"][0]
        ms = (time.perf_counter() - t0) * 1e3
        print(f"{user} clicks {clicked} ({done['accepted']} events written)")
        print(f"top-5 for {user}: {after['items']} ({ms:.0f} ms from the click to the new answer)")
        print("changed" if after["items"] != before["items"] else "unchanged")
        return 0 if after["items"] != before["items"] else 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
