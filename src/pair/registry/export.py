"""Registry exports: study rows and a DICOM-UID manifest as CSV or Parquet, and a streamed DICOM
zip of the stored (de-identified) files.

Files are written next to their destination under a temporary name, fsynced and renamed, so a
reader (DuckDB, Spark, a browser download) never sees a half-written file. Parquet columns are
typed from the clinical data dictionary (integers, booleans, strings), so DuckDB reads them
without casts.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.policy import Action, check_role
from pair.audit.service import Actor, record
from pair.clinical.dictionary import load_dictionary
from pair.core.errors import Invalid
from pair.registry.cohort import CohortQuery, CohortStudy, select_studies
from pair.registry.service import check_dicom_download, study_row
from pair.repository.models import Instance, Series

Kind = Literal["studies", "manifest"]
Format = Literal["csv", "parquet"]
KINDS: tuple[str, ...] = ("studies", "manifest")
FORMATS: tuple[str, ...] = ("csv", "parquet")
MEDIA = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
_ARROW = {"integer": pa.int64(), "boolean": pa.bool_()}
MANIFEST_COLUMNS = (
    "site",
    "pseudonym",
    "study_uid",
    "series_uid",
    "sop_instance_uid",
    "sop_class_uid",
    "modality",
    "sha256",
)


def study_schema() -> pa.Schema:
    fields = [
        pa.field(name, pa.string())
        for name in (
            "study_uid",
            "pseudonym",
            "site",
            "study_date",
            "submitted_at",
            "modalities",
            "categories",
        )
    ]
    for f in load_dictionary().fields:
        fields.append(pa.field(f"clinical_{f.name}", _ARROW.get(f.type, pa.string())))
    return pa.schema(fields)


def manifest_rows(session: Session, studies: list[CohortStudy]) -> list[dict[str, Any]]:
    """One row per stored instance of the cohort's studies (hub UIDs, content hash)."""
    by_pk = {s.study_pk: s for s in studies}
    rows: list[dict[str, Any]] = []
    pks = list(by_pk)
    for start in range(0, len(pks), 500):
        stmt = (
            select(Series, Instance)
            .join(Instance, Instance.series_pk == Series.id)
            .where(Series.study_pk.in_(pks[start : start + 500]))
            .order_by(Series.study_pk, Series.series_number, Series.id, Instance.instance_number)
        )
        for series, inst in session.execute(stmt):
            s = by_pk[series.study_pk]
            rows.append(
                {
                    "site": s.site,
                    "pseudonym": s.pseudonym,
                    "study_uid": s.study_uid,
                    "series_uid": series.series_uid,
                    "sop_instance_uid": inst.sop_instance_uid,
                    "sop_class_uid": inst.sop_class_uid,
                    "modality": series.modality,
                    "sha256": inst.sha256,
                    "_path": inst.storage_path,
                }
            )
    return rows


def _atomic(path: Path, write: Any) -> Path:
    """``write(tmp_path)`` then fsync + rename onto ``path`` (removed on any error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_table(rows: list[dict[str, Any]], schema: pa.Schema, fmt: str, path: Path) -> Path:
    if fmt not in FORMATS:
        raise Invalid(f"Unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}.")
    names = schema.names
    if fmt == "csv":

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=names, extrasaction="ignore")
                w.writeheader()
                for row in rows:
                    w.writerow({k: "" if row.get(k) is None else row.get(k) for k in names})

    else:

        def write(tmp: Path) -> None:
            columns = {n: [row.get(n) for row in rows] for n in names}
            pq.write_table(pa.Table.from_pydict(columns, schema=schema), tmp)

    return _atomic(path, write)


@dataclass
class ExportFile:
    path: Path
    rows: int
    media_type: str
    filename: str


def export_cohort(
    session: Session, actor: Actor, q: CohortQuery, kind: str, fmt: str, out_dir: Path
) -> ExportFile:
    """Write the cohort's study rows or UID manifest (registry analysts, hub operator)."""
    check_role(actor, Action.REGISTRY_QUERY)
    if kind not in KINDS:
        raise Invalid(f"Unknown export {kind!r}; use one of: {', '.join(KINDS)}.")
    if fmt not in FORMATS:
        raise Invalid(f"Unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}.")
    studies = select_studies(session, q)
    if kind == "studies":
        rows, schema = [study_row(s) for s in studies], study_schema()
    else:
        rows = manifest_rows(session, studies)
        schema = pa.schema([pa.field(c, pa.string()) for c in MANIFEST_COLUMNS])
    filename = f"registry-{kind}.{fmt}"
    path = write_table(rows, schema, fmt, out_dir / f"{uuid.uuid4().hex}-{filename}")
    record(
        session,
        actor,
        "registry.export",
        "registry",
        kind,
        detail={"format": fmt, "rows": len(rows)},
    )
    return ExportFile(path, len(rows), MEDIA[fmt], filename)


class _Sink(io.RawIOBase):
    """A write-only stream whose bytes are taken out chunk by chunk (for streaming a zip)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.chunks.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


@dataclass
class DicomZip:
    files: list[tuple[str, Path]]  # (name in the zip, stored file)
    manifest_csv: bytes

    def stream(self) -> Iterator[bytes]:
        """The zip, produced file by file: memory holds one file at a time, never the archive."""
        sink = _Sink()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("manifest.csv", self.manifest_csv)
            yield sink.take()
            for name, path in self.files:
                with path.open("rb") as src, zf.open(name, "w", force_zip64=True) as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                        yield sink.take()
                yield sink.take()
        yield sink.take()


def dicom_zip(
    session: Session, actor: Actor, q: CohortQuery, storage_root: Path, max_files: int
) -> DicomZip:
    """The cohort's stored de-identified files (approved users only), prepared before streaming
    so the response never needs the database session."""
    check_dicom_download(session, actor)
    studies = select_studies(session, q)
    rows = manifest_rows(session, studies)
    if len(rows) > max_files:
        raise Invalid(
            f"The cohort has {len(rows)} instances; a DICOM zip holds at most {max_files} "
            "(PAIR_REGISTRY_MAX_ZIP_FILES). Narrow the cohort."
        )
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    files = [
        (
            f"{r['site']}/{r['pseudonym']}/{r['study_uid']}/{r['series_uid']}/"
            f"{r['sop_instance_uid']}.dcm",
            storage_root / r["_path"],
        )
        for r in rows
    ]
    record(session, actor, "registry.dicom", "registry", "", detail={"instances": len(files)})
    return DicomZip(files, buf.getvalue().encode())
