"""Image ingestion: find the images of a data set, decode every one, quarantine the bad, publish a lake run.

Where the images come from (local paths or fsspec URIs such as ``s3://`` and ``abfs://``):

* an ImageFolder layout: ``<root>/<class>/<file>``, or with splits ``<root>/train/<class>/<file>`` and
  ``<root>/val/<class>/...`` (and ``test/``);
* a manifest: a CSV with ``path`` and ``label`` columns (and optionally ``split``), or a JSON list of such
  objects; relative paths are relative to the manifest's folder.

Every file is read and decoded with Pillow (``Image.load()``: a truncated file fails there, not at open).
The verdicts, in the order they are tried (a file gets the first that applies):

====================================  =====================================================================
``empty_file``                        zero bytes
``not_an_image``                      Pillow recognizes no image format in the bytes
``unsupported_format``                an image, but not JPEG, PNG, GIF, BMP or WebP (what training decodes)
``truncated_or_corrupt``              opens, but decoding the pixels fails
``extension_mismatch``                the extension names another format than the content (policy
                                      ``extensions="reject"``, the default; ``"trust_content"`` accepts it:
                                      training sniffs the content anyway)
``too_small``                         width or height below ``min_size``
``animated`` / ``palette``            only with policy ``animated="reject"`` / ``palette="reject"``; by
                                      default both are accepted and the row's ``converted`` says what
                                      training does (first frame; palette -> RGB)
``duplicate_across_classes``          the same bytes under two or more labels (a placeholder image): every
                                      copy is quarantined, since no copy's label can be trusted
duplicates (not quarantined)          the same bytes again under the same label: kept once, counted
====================================  =====================================================================

The counts reconcile: ``read`` (files seen) = ``accepted`` + ``quarantined`` + ``duplicates``. Hidden files
(names starting with ``.``) are not data and not seen. Names with spaces or non-ASCII letters are fine: a
path is only ever a string handed to the file system, never pasted into a command or an identifier.

A class with fewer than ``min_per_class`` accepted images (in the train split, when there is one) is an
:class:`~skiff.errors.InputError`: nothing is published. Images are not copied; the lake run holds the
accepted-image table (:data:`skiff.image_data.IMAGE_COLUMNS`), the quarantine with reasons, the class
balance and the run manifest.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import posixpath
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from skiff import __version__
from skiff.errors import InputError, SourceError
from skiff.image_data import CLASSES_FILE, IMAGE_COLUMNS, IMAGES_FILE, SPLITS
from skiff.lake import QUARANTINE, Lake
from skiff.manifest import PartFile, RunCounts, RunManifest
from skiff.spec import json_sha256

__all__ = ["IngestImagesConfig", "Candidate", "Verdict", "ImageIngestResult", "find_images", "check_image",
           "ingest_images", "FORMATS"]

#: Pillow format -> the extensions that may name it
FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "PNG": (".png",),
    "GIF": (".gif",),
    "BMP": (".bmp",),
    "WEBP": (".webp",),
}
_EXT_FORMAT = {ext: fmt for fmt, exts in FORMATS.items() for ext in exts}


class IngestImagesConfig(BaseModel):
    """The checks' thresholds and policies (the step's ``config`` parameter)."""

    model_config = ConfigDict(extra="forbid")

    min_size: int = Field(default=16, ge=1, description="Smallest width and height accepted, in pixels.")
    min_per_class: int = Field(default=5, ge=1, description="Fewest accepted images a class may have.")
    animated: Literal["first_frame", "reject"] = Field(
        default="first_frame", description="Animated images: train on the first frame, or quarantine them.")
    palette: Literal["convert", "reject"] = Field(
        default="convert", description="Palette (mode P) images: convert to RGB, or quarantine them.")
    extensions: Literal["reject", "trust_content"] = Field(
        default="reject", description="A file whose extension names another format than its content.")


@dataclass(frozen=True)
class Candidate:
    """A file that may be an image: where it is, its label and split (``""`` when the data has none)."""

    path: str
    label: str
    split: str = ""


@dataclass
class Verdict:
    """What decoding one file found: a row of the image table, or a quarantine reason."""

    candidate: Candidate
    reason: str | None = None
    detail: str = ""
    row: dict[str, Any] = field(default_factory=dict)


class ImageIngestResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["committed", "unchanged"]
    dataset: str
    run_id: str
    ingest_date: str
    partition_uri: str
    layout: str
    counts: dict[str, int]
    quarantine_reasons: dict[str, int]
    classes: dict[str, dict[str, int]]  # label -> split ("all" when no split) -> images
    imbalance: float  # largest class / smallest class (train split)
    manifest: RunManifest
    duration_s: float

    def manifest_json(self) -> str:
        return self.manifest.to_json()


def _fs(uri: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, path


def _full(fs: Any, path: str) -> str:
    """The path as the user gives it back to fsspec: with its protocol for a remote file system."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return path if protocol in ("file", "local") else f"{protocol}://{path.lstrip('/')}"


def _label(name: str) -> str:
    # one spelling per class: a folder made on macOS (NFD) and one made on Linux (NFC) are the same class
    return unicodedata.normalize("NFC", name)


def find_images(source: str, storage_options: dict[str, Any] | None = None) -> tuple[str, list[Candidate]]:
    """The layout of ``source`` (``folders``, ``splits`` or ``manifest``) and its candidate files."""
    fs, root = _fs(source, storage_options)
    if not fs.exists(root):
        raise SourceError(f"image source not found: {source}")
    if fs.isfile(root):
        return "manifest", _from_manifest(fs, root)
    entries = {posixpath.basename(p.rstrip("/")): p for p in fs.ls(root, detail=False)}
    dirs = {n: p for n, p in entries.items() if not n.startswith(".") and fs.isdir(p)}
    if not dirs:
        raise InputError(f"{source} holds no class folders: an image set is <root>/<class>/<files> "
                         "(or <root>/train|val|test/<class>/<files>, or a CSV/JSON manifest of path,label)")
    split_dirs = {n for n in dirs if n in SPLITS}
    if split_dirs and split_dirs != set(dirs):
        raise InputError(f"{source} mixes split folders ({', '.join(sorted(split_dirs))}) with class folders "
                         f"({', '.join(sorted(set(dirs) - split_dirs))}): put every class under a split")
    if split_dirs and "train" not in split_dirs:
        raise InputError(f"{source} has split folders but no train/")
    layout = "splits" if split_dirs else "folders"
    found: list[Candidate] = []
    for split, top in sorted((n, p) for n, p in dirs.items()) if split_dirs else [("", root)]:
        for cls_path in sorted(fs.ls(top, detail=False)):
            cls = posixpath.basename(cls_path.rstrip("/"))
            if cls.startswith(".") or not fs.isdir(cls_path):
                continue
            for file_path in sorted(fs.find(cls_path)):
                if any(part.startswith(".") for part in file_path[len(cls_path):].split("/")):
                    continue  # .DS_Store, editor files: not data
                found.append(Candidate(_full(fs, file_path), _label(cls), split))
    return layout, found


def _from_manifest(fs: Any, path: str) -> list[Candidate]:
    with fs.open(path, "rb") as f:
        text = f.read().decode("utf-8-sig")
    if path.lower().endswith(".json"):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"image manifest {path} is not JSON: {e}") from e
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise InputError(f"image manifest {path} must be a JSON list of objects with path and label")
    else:
        records = list(csv.DictReader(io.StringIO(text)))
    base = posixpath.dirname(path)
    out = []
    for i, r in enumerate(records, start=1):
        if not r.get("path") or not r.get("label"):
            raise InputError(f"image manifest {path}, record {i}: needs a path and a label, got {r!r}"[:300])
        split = str(r.get("split") or "")
        if split and split not in SPLITS:
            raise InputError(f"image manifest {path}, record {i}: split {split!r} is not one of {SPLITS}")
        p = str(r["path"])
        full = p if "://" in p or p.startswith("/") else posixpath.join(base, p)
        out.append(Candidate(full if "://" in full else _full(fs, full), _label(str(r["label"])), split))
    return out


def check_image(candidate: Candidate, data: bytes, config: IngestImagesConfig) -> Verdict:
    """Decode one file's bytes and judge it (every check but duplicates, which need all files)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        return Verdict(candidate, "empty_file")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return Verdict(candidate, "not_an_image", "no image format recognized")
    except Exception as e:  # Pillow raises many kinds on hostile headers; the file is what is wrong
        return Verdict(candidate, "not_an_image", f"{type(e).__name__}: {e}"[:200])
    with img:
        fmt = img.format or "?"
        if fmt not in FORMATS:
            return Verdict(candidate, "unsupported_format", f"{fmt} (accepted: {', '.join(FORMATS)})")
        try:
            img.load()  # decodes the pixels: a truncated file fails here
        except Exception as e:
            return Verdict(candidate, "truncated_or_corrupt", f"{type(e).__name__}: {e}"[:200])
        ext = posixpath.splitext(candidate.path)[1].lower()
        named = _EXT_FORMAT.get(ext)
        if named != fmt and config.extensions == "reject":
            return Verdict(candidate, "extension_mismatch", f"named {ext or 'without extension'}, content {fmt}")
        width, height = img.size
        if width < config.min_size or height < config.min_size:
            return Verdict(candidate, "too_small", f"{width}x{height} < {config.min_size}")
        frames = int(getattr(img, "n_frames", 1) or 1)
        converted = ""
        if frames > 1:
            if config.animated == "reject":
                return Verdict(candidate, "animated", f"{frames} frames")
            converted = "animated->first frame"
        elif img.mode == "P":
            if config.palette == "reject":
                return Verdict(candidate, "palette", "palette image")
            converted = "palette->RGB"
        row = {"path": candidate.path, "label": candidate.label, "split": candidate.split, "format": fmt,
               "width": width, "height": height, "mode": img.mode, "frames": frames, "bytes": len(data),
               "sha256": hashlib.sha256(data).hexdigest(), "converted": converted}
    return Verdict(candidate, row=row)


def _dedupe(verdicts: list[Verdict]) -> tuple[list[Verdict], int]:
    """Quarantine every copy of bytes seen under two labels; drop repeats under one label (first kept)."""
    labels: dict[str, set[str]] = defaultdict(set)
    for v in verdicts:
        if v.reason is None:
            labels[v.row["sha256"]].add(v.candidate.label)
    out: list[Verdict] = []
    seen: set[str] = set()
    duplicates = 0
    for v in verdicts:
        if v.reason is not None:
            out.append(v)
            continue
        sha = v.row["sha256"]
        if len(labels[sha]) > 1:
            out.append(Verdict(v.candidate, "duplicate_across_classes",
                               f"same bytes under labels {', '.join(sorted(labels[sha]))}"))
        elif sha in seen:
            duplicates += 1
        else:
            seen.add(sha)
            out.append(v)
    return out, duplicates


def _read_all(candidates: Iterable[Candidate], storage_options: dict[str, Any] | None,
              config: IngestImagesConfig) -> list[Verdict]:
    verdicts = []
    fs_cache: dict[str, Any] = {}
    for c in candidates:
        scheme = c.path.split("://", 1)[0] if "://" in c.path else "file"
        if scheme not in fs_cache:
            fs_cache[scheme] = _fs(c.path, storage_options)[0]
        fs = fs_cache[scheme]
        try:
            with fs.open(c.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            verdicts.append(Verdict(c, "missing_file", "listed but not found"))
            continue
        except OSError as e:
            raise SourceError(f"could not read {c.path}: {e}") from e
        verdicts.append(check_image(c, data, config))
    return verdicts


def _table(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    schema = pa.schema([(name, pa.string() if typ == "string" else pa.int64())
                        for name, typ in IMAGE_COLUMNS.items()])
    return pa.Table.from_pylist(rows, schema=schema)


def _quarantine_table(verdicts: list[Verdict]) -> Any:
    import pyarrow as pa

    return pa.Table.from_pylist(
        [{"path": v.candidate.path, "label": v.candidate.label, "split": v.candidate.split,
          "_reason": v.reason, "_detail": v.detail} for v in verdicts if v.reason],
        schema=pa.schema([("path", pa.string()), ("label", pa.string()), ("split", pa.string()),
                          ("_reason", pa.string()), ("_detail", pa.string())]))


def class_balance(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """label -> split -> accepted images (``all`` when the data has no split)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for (label, split), n in sorted(Counter((r["label"], r["split"] or "all") for r in rows).items()):
        out[label][split] = n
    return dict(out)


def ingest_images(dataset: str, source: str, lake: Lake, *, run_id: str, ingest_date: str | None = None,
                  config: IngestImagesConfig | None = None,
                  storage_options: dict[str, Any] | None = None) -> ImageIngestResult:
    """Check every image of ``source`` and publish the accepted-image table as a lake run of ``dataset``."""
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    config = config or IngestImagesConfig()
    started = dt.datetime.now(dt.UTC).isoformat()
    date = ingest_date or dt.date.today().isoformat()
    layout, candidates = find_images(source, storage_options)
    if not candidates:
        raise InputError(f"no files found in the image source {source}")
    verdicts, duplicates = _dedupe(_read_all(candidates, storage_options, config))
    rows = [v.row for v in verdicts if v.reason is None]
    quarantined = [v for v in verdicts if v.reason]
    counts = RunCounts(read=len(candidates), accepted=len(rows), quarantined=len(quarantined),
                       duplicates=duplicates)
    if counts.read != counts.accepted + counts.quarantined + counts.duplicates:
        from skiff.errors import InvariantError

        raise InvariantError(f"image ingestion lost files: {counts}")
    balance = class_balance(rows)
    train_split = "train" if layout == "splits" or any(r["split"] for r in rows) else "all"
    per_class = {label: splits.get(train_split, 0) for label, splits in balance.items()}
    labels_seen = sorted({c.label for c in candidates})
    short = {label: per_class.get(label, 0) for label in labels_seen if per_class.get(label, 0) < config.min_per_class}
    reasons = dict(Counter(v.reason for v in quarantined if v.reason).most_common())
    if short:
        raise InputError(f"class(es) with fewer than min_per_class={config.min_per_class} accepted "
                         f"{'train ' if train_split == 'train' else ''}images: "
                         + ", ".join(f"{k!r}: {n}" for k, n in sorted(short.items()))
                         + f" (quarantined: {reasons or 'none'})")
    if len(per_class) < 2:
        raise InputError(f"an image classifier needs at least two classes; {source} has {sorted(per_class)}")
    imbalance = round(max(per_class.values()) / max(1, min(per_class.values())), 3)
    warnings = []
    if imbalance >= 3:
        warnings.append(f"classes are imbalanced ({imbalance}x between the largest and the smallest): "
                        "training weights classes by their inverse frequency")
    fingerprint = json_sha256({"source": source, "config": config.model_dump(),
                               "files": sorted((v.candidate.path, v.row.get("sha256", v.reason or ""))
                                               for v in verdicts)})
    existing = lake.find_run(dataset, fingerprint)
    if existing is not None:  # the same files under the same rules: the run is already there
        found = lake.manifest(existing)
        return ImageIngestResult(
            status="unchanged", dataset=dataset, run_id=existing.run_id, ingest_date=existing.date,
            partition_uri=lake.store.uri(*existing.parts), layout=layout, counts=counts.model_dump(exclude_none=True),
            quarantine_reasons=reasons, classes=balance, imbalance=imbalance, manifest=found,
            duration_s=round(time.perf_counter() - t0, 3))
    with lake.publish_run(dataset, run_id, date) as staged:
        table = _table(rows)
        pq.write_table(table, staged / IMAGES_FILE)
        if quarantined:
            pq.write_table(_quarantine_table(quarantined), staged / QUARANTINE)
        (staged / CLASSES_FILE).write_text(json.dumps({"classes": balance, "imbalance": imbalance}, indent=2,
                                                      ensure_ascii=False))
        staged.manifest = RunManifest(
            dataset=dataset, run_id=run_id, ingest_date=date, fingerprint=fingerprint,
            sources=[{"type": "images", "uri": source, "layout": layout}], counts=counts,
            quarantine_reasons=reasons,
            quarantine_top=[{"column": "path", "reason": r, "count": n} for r, n in list(reasons.items())[:10]],
            warnings=warnings, schema=dict(IMAGE_COLUMNS), files=[PartFile(name=IMAGES_FILE, rows=len(rows))],
            quarantine_file=QUARANTINE if quarantined else None, started_at=started, skiff_version=__version__)
    assert staged.manifest is not None  # set above; the lake returns it completed
    return ImageIngestResult(
        status="committed", dataset=dataset, run_id=run_id, ingest_date=date,
        partition_uri=lake.store.uri(*staged.ref.parts), layout=layout, counts=counts.model_dump(exclude_none=True),
        quarantine_reasons=reasons, classes=balance, imbalance=imbalance, manifest=staged.manifest,
        duration_s=round(time.perf_counter() - t0, 3))
