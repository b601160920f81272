"""Image ingestion: every kind of bad file gets its reason, the counts reconcile, the run lands in the lake."""

import io
import json

import fsspec
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.ingest_images.logic import (
    Candidate,
    IngestImagesConfig,
    check_image,
    find_images,
    ingest_images,
)
from skiff.datagen_images import image_set
from skiff.errors import InputError
from skiff.image_data import CLASSES_FILE, IMAGE_COLUMNS, read_image_table
from skiff.lake import Lake
from skiff.storage import Store


@pytest.fixture
def lake(tmp_path):
    return Lake(Store(str(tmp_path / "lake")))


def _quarantine(lake, result):
    ref = lake.select_runs(result.dataset, run_id=result.run_id).runs[0]
    with lake.store.open(*ref.parts, "_quarantine.parquet") as f:
        table = pq.read_table(f).to_pylist()
    return ref, {r["path"]: r["_reason"] for r in table}


def test_every_broken_file_is_quarantined_with_its_reason_and_the_counts_reconcile(tmp_path, lake):
    wrote = image_set(tmp_path / "data", per_class=6, size=32, broken=True)
    result = ingest_images("shapes", str(tmp_path / "data"), lake, run_id="r1")
    c = result.counts
    assert c["read"] == c["accepted"] + c["quarantined"] + c["duplicates"]
    assert c["accepted"] == wrote.good and c["duplicates"] == len(wrote.duplicates) == 1
    ref, reasons = _quarantine(lake, result)
    root = str(tmp_path / "data")
    assert reasons == {f"{root}/{p}": r for p, r in wrote.quarantined.items()}
    table = read_image_table(lake, ref).to_pylist()
    by_path = {r["path"]: r for r in table}
    for rel, how in wrote.converted.items():
        assert by_path[f"{root}/{rel}"]["converted"] == how
    for rel in wrote.accepted_odd_names:  # spaces and non-ASCII letters: accepted, path kept exactly
        assert f"{root}/{rel}" in by_path
    assert not any("copy of first" in p for p in by_path)
    assert set(table[0]) == set(IMAGE_COLUMNS)
    manifest = lake.manifest(ref)
    assert manifest.counts.read == c["read"] and manifest.quarantine_reasons["duplicate_across_classes"] == 2
    assert manifest.files[0].sha256  # the lake hashed the table as it published the run
    balance = json.loads(lake.store.read_text(*ref.parts, CLASSES_FILE))
    assert balance["classes"] == result.classes and set(result.classes) == {"circle", "square", "triangle"}


def test_the_same_files_again_are_the_same_run(tmp_path, lake):
    image_set(tmp_path / "data", per_class=5, size=32)
    first = ingest_images("shapes", str(tmp_path / "data"), lake, run_id="r1")
    again = ingest_images("shapes", str(tmp_path / "data"), lake, run_id="r2")
    assert (first.status, again.status, again.run_id) == ("committed", "unchanged", "r1")


def test_policies_reject_animated_and_palette_images_and_may_trust_content_over_extension(tmp_path, lake):
    wrote = image_set(tmp_path / "data", per_class=6, size=32, broken=True)
    strict = IngestImagesConfig(animated="reject", palette="reject", extensions="trust_content")
    result = ingest_images("shapes", str(tmp_path / "data"), lake, run_id="r1", config=strict)
    _, reasons = _quarantine(lake, result)
    by_name = {p.rsplit("/", 1)[-1]: r for p, r in reasons.items()}
    assert by_name["animated.gif"] == "animated" and by_name["palette.png"] == "palette"
    assert "really_a_png.jpg" not in by_name  # the content decides
    assert result.counts["accepted"] == wrote.good - 2 + 1


def test_a_class_with_too_few_images_is_an_error_naming_it(tmp_path, lake):
    image_set(tmp_path / "data", per_class=6, size=32)
    for p in list((tmp_path / "data" / "square").iterdir())[:3]:
        p.unlink()
    with pytest.raises(InputError, match=r"'square': 3"):
        ingest_images("shapes", str(tmp_path / "data"), lake, run_id="r1",
                      config=IngestImagesConfig(min_per_class=5))
    assert lake.datasets() == []  # nothing published


def test_split_layout_reports_balance_per_split(tmp_path, lake):
    image_set(tmp_path / "data", per_class=8, size=32, splits=True)
    result = ingest_images("shapes", str(tmp_path / "data"), lake, run_id="r1")
    assert result.layout == "splits"
    assert result.classes["circle"] == {"train": 6, "val": 2}


def test_mixed_split_and_class_folders_are_refused(tmp_path):
    image_set(tmp_path / "data", per_class=2, size=32, splits=True)
    (tmp_path / "data" / "dogs").mkdir()
    with pytest.raises(InputError, match="mixes split folders"):
        find_images(str(tmp_path / "data"))


def test_csv_and_json_manifests_with_relative_paths(tmp_path, lake):
    image_set(tmp_path / "data", per_class=5, size=32)
    rows = [(f"{cls}/{p.name}", cls) for cls in ("circle", "square") for p in sorted((tmp_path / "data" / cls).iterdir())]
    (tmp_path / "data" / "labels.csv").write_text("path,label\n" + "".join(f"{p},{lbl}\n" for p, lbl in rows))
    result = ingest_images("shapes", str(tmp_path / "data" / "labels.csv"), lake, run_id="r1")
    assert result.layout == "manifest" and result.counts["accepted"] == 10
    (tmp_path / "data" / "labels.json").write_text(json.dumps([{"path": p, "label": lbl, "split": "train"}
                                                               for p, lbl in rows]))
    layout, found = find_images(str(tmp_path / "data" / "labels.json"))
    assert layout == "manifest" and found[0].split == "train" and found[0].path.startswith(str(tmp_path))
    (tmp_path / "bad.json").write_text(json.dumps([{"path": "x.png"}]))
    with pytest.raises(InputError, match="needs a path and a label"):
        find_images(str(tmp_path / "bad.json"))


def test_a_manifest_file_missing_on_disk_is_quarantined(tmp_path, lake):
    image_set(tmp_path / "data", per_class=5, size=32)
    rows = [f"{cls}/{p.name},{cls}\n" for cls in ("circle", "square") for p in sorted((tmp_path / "data" / cls).iterdir())]
    (tmp_path / "data" / "m.csv").write_text("path,label\n" + "".join(rows) + "circle/gone.png,circle\n")
    result = ingest_images("shapes", str(tmp_path / "data" / "m.csv"), lake, run_id="r1")
    assert result.quarantine_reasons == {"missing_file": 1} and result.counts["read"] == 11


def test_images_through_an_fsspec_uri(lake):
    fs = fsspec.filesystem("memory")
    for cls in ("a", "b"):
        for i in range(5):
            buf = io.BytesIO()
            Image.new("RGB", (20 + i, 20), (i * 40 + 10, 0, 0) if cls == "a" else (0, i * 40 + 10, 0)).save(buf, "PNG")
            fs.pipe(f"/imgs/{cls}/{i}.png", buf.getvalue())
    result = ingest_images("mem", "memory://imgs", lake, run_id="r1")
    table = read_image_table(lake, lake.select_runs("mem", run_id="r1").runs[0]).to_pylist()
    assert result.counts["accepted"] == 10 and all(r["path"].startswith("memory://") for r in table)


@pytest.mark.parametrize(("fmt", "name"), [("TIFF", "x.tiff"), ("ICO", "x.ico")])
def test_formats_training_does_not_decode_are_unsupported(fmt, name):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, fmt)
    verdict = check_image(Candidate(name, "a"), buf.getvalue(), IngestImagesConfig())
    assert verdict.reason == "unsupported_format"


def test_an_imbalance_of_three_times_or_more_is_a_warning(tmp_path, lake):
    image_set(tmp_path / "data", classes=("circle", "square"), per_class=18, size=32)
    for p in sorted((tmp_path / "data" / "square").iterdir())[6:]:
        p.unlink()
    result = ingest_images("shapes", str(tmp_path / "data"), lake, run_id="r1")
    assert result.imbalance == 3.0
    assert any("imbalanced (3.0x" in w for w in result.manifest.warnings)
