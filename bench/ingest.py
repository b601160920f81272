"""Benchmark: skiff ingestion against the pyarrow floor on the same CSV, measured in the same run.

Builds a CSV (default 1M rows × 20 columns, ~1% dirty rows: decimal commas, stray spaces, "N/A",
-200 sentinels, bad numbers, Yes/No booleans, duplicated keys) in a temporary folder, then times in
child processes (same warm page cache):

- the floor: ``pyarrow.csv.read_csv`` then ``pyarrow.parquet.write_table``;
- skiff: :func:`components.ingest.logic.ingest` (the code path of ``skiff ingest``) with a spec that
  coerces, validates, de-duplicates, imputes and quarantines.

It prints rows/s of both, their ratio (target ≥ 0.25) and the peak RSS of each child process: its
``VmHWM`` (Linux; ``ru_maxrss`` elsewhere). ``getrusage`` would not do on Linux: ``ru_maxrss`` survives
``exec`` and so includes what the forking parent held. ``--big`` builds a ~2 GB file instead and checks that skiff's peak RSS
stays under 1 GiB (the floor is skipped there: it loads the whole file by design).

    python bench/ingest.py                 # 1M rows
    python bench/ingest.py --rows 200000   # smaller
    python bench/ingest.py --big           # ~2 GB, RSS check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.25
RSS_LIMIT_MB = 1024

SPEC = {
    "name": "bench",
    "entity_key": "id",
    "event_timestamp": "ts",
    "target": "label",
    "problem_type": "binary",
    "columns": {
        "id": {"type": "integer", "required": True},
        "ts": {"type": "datetime", "required": True},
        **{f"i{k}": {"type": "integer", "min": 0} for k in range(4)},
        **{f"f{k}": {"type": "float", "sentinels": [-200]} for k in range(7)},
        "f_imp": {"type": "float", "missing": "impute", "impute": "median", "sentinels": [-200]},
        "flag": {"type": "boolean"},
        "cat1": {"type": "category", "allowed": ["red", "green", "blue", "amber"]},
        "cat2": {"type": "category"},
        "code": {"type": "string", "regex": "[A-Z]{3}-[0-9]{4}"},
        "label": {"type": "boolean", "missing": "reject"},
        "note": {"type": "string"},
    },
}


def build_csv(path: Path, rows: int | None, target_bytes: int | None, seed: int = 7) -> int:
    """Write the CSV in chunks; returns the number of data rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    chunk = 250_000
    written = 0
    start_ts = np.datetime64("2024-01-01T00:00:00")
    with open(path, "wb") as out:
        writer = None
        while (rows is not None and written < rows) or (target_bytes is not None and out.tell() < target_bytes):
            n = chunk if rows is None else min(chunk, rows - written)
            ids = np.arange(written, written + n)
            dup = rng.random(n) < 0.002  # duplicated key + timestamp
            ids[dup] = np.maximum(ids[dup] - 1, 0)
            secs = ids * 37
            ts = (start_ts + secs.astype("timedelta64[s]")).astype(str)
            cols: dict[str, object] = {"id": ids.astype(str), "ts": ts}
            for k in range(4):
                cols[f"i{k}"] = rng.integers(0, 10_000, n).astype(str)
            for k in range(7):
                cols[f"f{k}"] = np.round(rng.normal(100, 15, n), 3).astype(str)
            cols["f_imp"] = np.round(rng.normal(50, 5, n), 2).astype(str)
            cols["flag"] = rng.choice(np.array(["Yes", "No", "1", "0", "true", "n"]), n)
            cols["cat1"] = rng.choice(np.array(["red", "green", "blue", "amber"]), n)
            cols["cat2"] = rng.choice(np.array([f"c{j}" for j in range(30)]), n)
            letters = rng.choice(np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")), (n, 3))
            cols["code"] = np.char.add(np.char.add(letters[:, 0], np.char.add(letters[:, 1], letters[:, 2])),
                                       np.char.add("-", rng.integers(1000, 9999, n).astype(str)))
            cols["label"] = rng.choice(np.array(["yes", "no"]), n)
            cols["note"] = rng.choice(np.array(["", "ok", "checked by ops", "late"]), n)
            # dirt, ~1% of rows each kind at random
            dirty = rng.random((6, n)) < 0.002
            f0 = cols["f0"].astype(object)
            f0[dirty[0]] = [v.replace(".", ",") for v in f0[dirty[0]]]  # decimal comma (quoted by the writer)
            f0[dirty[1]] = "N/A"
            cols["f0"] = f0
            f1 = cols["f1"].astype(object)
            f1[dirty[2]] = [f"  {v} " for v in f1[dirty[2]]]  # stray spaces
            f1[dirty[3]] = "abc"  # not a number: quarantined
            cols["f1"] = f1
            fi = cols["f_imp"].astype(object)
            fi[dirty[4]] = "-200"  # sentinel: imputed with the median
            cols["f_imp"] = fi
            i0 = cols["i0"].astype(object)
            i0[dirty[5]] = "-5"  # below min: quarantined
            cols["i0"] = i0
            table = pa.table({k: pa.array(list(v) if v.dtype == object else v, pa.string()) for k, v in cols.items()})
            if writer is None:
                writer = pcsv.CSVWriter(out, table.schema)
            writer.write_table(table)
            written += n
        if writer is not None:
            writer.close()
    return written


def _child_floor(csv_path: str, out_dir: str) -> dict:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    table = pcsv.read_csv(csv_path)
    pq.write_table(table, os.path.join(out_dir, "floor.parquet"))
    return {"seconds": time.perf_counter() - t0, "rows": table.num_rows, "peak_rss_mb": _peak_rss_mb()}


def _child_skiff(csv_path: str, out_dir: str) -> dict:
    sys.path.insert(0, str(REPO))
    from components.ingest.logic import ingest
    from skiff.lake import Lake
    from skiff.spec import parse_spec
    from skiff.storage import Store

    spec = parse_spec({**SPEC, "sources": [{"type": "file", "path": csv_path}]})
    lake = Lake(Store(os.path.join(out_dir, "lake")))
    t0 = time.perf_counter()
    result = ingest(spec, lake)
    return {"seconds": time.perf_counter() - t0, "counts": result.counts,
            "reasons": result.manifest.quarantine_reasons, "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux


def _run_child(kind: str, csv_path: Path, out_dir: Path) -> dict:
    """Run one measurement in a fresh process (its imports are not timed) and return its result."""
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(csv_path), str(out_dir)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{kind} run failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated CSV")
    p.add_argument("--big", action="store_true", help="~2 GB CSV; check skiff's peak RSS < 1 GiB")
    p.add_argument("--repeat", type=int, default=3,
                   help="alternate skiff and floor runs this many times; the fastest of each counts")
    p.add_argument("--big-bytes", type=int, default=2 * 1024**3, help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, csv_path, out_dir = args.child
        result = _child_floor(csv_path, out_dir) if kind == "floor" else _child_skiff(csv_path, out_dir)
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="skiff-bench-") as tmp:
        tmp_path = Path(tmp)
        csv_path = tmp_path / "bench.csv"
        t0 = time.perf_counter()
        rows = build_csv(csv_path, None if args.big else args.rows, args.big_bytes if args.big else None)
        size_mb = csv_path.stat().st_size / 1024**2
        print(f"built {csv_path.name}: {rows:,} rows x 20 columns, {size_mb:,.0f} MiB "
              f"in {time.perf_counter() - t0:.1f} s")
        with open(csv_path, "rb") as f:  # warm the page cache for both runs
            while f.read(64 * 1024 * 1024):
                pass
        repeat = 1 if args.big else max(1, args.repeat)
        skiff_runs, floor_runs = [], []
        for i in range(repeat):  # interleaved, so both see the same machine load
            skiff_runs.append(_run_child("skiff", csv_path, tmp_path / f"skiff{i}"))
            shutil.rmtree(tmp_path / f"skiff{i}", ignore_errors=True)
            if not args.big:
                (tmp_path / "floor").mkdir(exist_ok=True)
                floor_runs.append(_run_child("floor", csv_path, tmp_path / "floor"))
        skiff_res = min(skiff_runs, key=lambda r: r["seconds"])
        skiff_rss = max(r["peak_rss_mb"] for r in skiff_runs)
        skiff_rate = rows / skiff_res["seconds"]
        c = skiff_res["counts"]
        print(f"skiff ingest : {skiff_res['seconds']:7.2f} s  {skiff_rate:12,.0f} rows/s  peak RSS {skiff_rss:,} MiB"
              f"  (accepted {c['accepted']:,}, quarantined {c['quarantined']:,}, duplicates {c['duplicates']:,})")
        print(f"  quarantine reasons: {skiff_res['reasons']}")
        if repeat > 1:
            print("  all skiff runs (s): " + ", ".join(f"{r['seconds']:.2f}" for r in skiff_runs))
        ok = True
        if args.big:
            ok = skiff_rss < RSS_LIMIT_MB
            print(f"peak RSS {skiff_rss:,} MiB for a {size_mb:,.0f} MiB CSV: {'PASS' if ok else 'FAIL'} "
                  f"(limit {RSS_LIMIT_MB} MiB)")
        else:
            floor_res = min(floor_runs, key=lambda r: r["seconds"])
            floor_rate = rows / floor_res["seconds"]
            ratio = skiff_rate / floor_rate
            print(f"pyarrow floor: {floor_res['seconds']:7.2f} s  {floor_rate:12,.0f} rows/s  "
                  f"peak RSS {floor_res['peak_rss_mb']:,} MiB  (read_csv + write_table)")
            if repeat > 1:
                print("  all floor runs (s): " + ", ".join(f"{r['seconds']:.2f}" for r in floor_runs))
            ok = ratio >= TARGET_RATIO
            print(f"ratio skiff/floor: {ratio:.2f} (target >= {TARGET_RATIO}): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
