"""A writer killed with SIGKILL leaves a staging folder; the next run removes it and reports it, while a
live writer's staging is left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from components.ingest.logic import ingest
from skiff.lake import MANIFEST, Lake
from skiff.spec import parse_spec
from skiff.storage import OWNER_FILE, Store
from tests.conftest import REPO

SPEC = {"name": "meters", "entity_key": "id", "columns": {"id": {"type": "integer"}, "kwh": {"type": "float"}}}


def _write_csv(path, n=4000):
    path.write_text("id,kwh\n" + "".join(f"{i},{i * 0.5}\n" for i in range(n)))


def test_sigkilled_ingest_leaves_staging_that_the_next_run_removes_and_reports(tmp_path):
    src, lake_root = tmp_path / "m.csv", tmp_path / "lake"
    _write_csv(src)
    script = textwrap.dedent(f"""
        import sys, time
        from components.ingest.logic import ingest
        from skiff.lake import Lake
        from skiff.spec import parse_spec
        from skiff.storage import Store
        spec = parse_spec({{**{SPEC!r}, "sources": [{{"type": "file", "path": {str(src)!r}}}]}})
        def stall(rows):
            print("READING", flush=True)
            time.sleep(600)
        ingest(spec, Lake(Store({str(lake_root)!r})), progress=stall, block_bytes=4096)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READING"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    left = list(lake_root.glob("raw/meters/*/.staging-*"))
    assert len(left) == 1 and json.loads((left[0] / OWNER_FILE).read_text())["pid"] == proc.pid

    lake = Lake(Store(str(lake_root)))
    res = ingest(parse_spec({**SPEC, "sources": [{"type": "file", "path": str(src)}]}), lake)
    assert res.status == "ingested" and res.counts["accepted"] == 4000
    assert res.cleaned_staging == [str(left[0])] and res.summary()["cleaned_staging"] == [str(left[0])]
    assert res.manifest.cleaned_staging == [str(left[0])]
    assert json.loads(lake.store.read_text(*lake.all_runs("meters")[0].parts, MANIFEST))["cleaned_staging"]
    assert not left[0].exists() and not list(lake_root.rglob(".staging-*"))
    assert not list(lake_root.rglob(OWNER_FILE))  # the published run carries no owner record


def test_live_or_young_foreign_staging_is_kept_old_or_dead_is_removed(tmp_path):
    store = Store(str(tmp_path))
    parent = tmp_path / "raw" / "meters" / "ingest_date=2026-01-01"
    parent.mkdir(parents=True)

    def staging(name, owner):
        d = parent / f".staging-{name}"
        d.mkdir()
        if owner is not None:
            (d / OWNER_FILE).write_text(json.dumps(owner))
        return d

    import socket

    host, now = socket.gethostname(), time.time()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    live = staging("live", {"pid": os.getpid(), "host": host, "started": now})
    gone = staging("gone", {"pid": int(dead.stdout), "host": host, "started": now})
    foreign_young = staging("foreign-young", {"pid": 1, "host": "other-host", "started": now})
    foreign_old = staging("foreign-old", {"pid": 1, "host": "other-host", "started": now - 3 * 86400})
    legacy_old = staging("legacy-old", None)
    os.utime(legacy_old, (now - 3 * 86400, now - 3 * 86400))
    removed = store.clean_abandoned_staging("raw", "meters", depth=1)
    assert sorted(removed) == sorted(str(p) for p in (gone, foreign_old, legacy_old))
    assert live.exists() and foreign_young.exists()
