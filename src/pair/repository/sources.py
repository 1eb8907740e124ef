"""Enumerate instances to ingest from folders, zip archives and DICOMDIRs.

Zip archives are checked against the inflation limits when listed (``open_archive``), so
``pair import`` refuses a bomb before importing anything; members are read one at a time with
a running cap."""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.fileset import FileSet

from pair.core.errors import BadRequest
from pair.repository.inflation import InflationBudget, open_archive, read_member


@dataclass(frozen=True)
class SourceItem:
    """One candidate file: where it came from, and a way to read its bytes."""

    label: str
    path: Path | None
    member: str | None = None
    size: int = 0
    mtime_ns: int = 0
    problem: str = ""  # known unreadable (a DICOMDIR record whose file is missing)

    def read(self, max_inflated: int) -> bytes:
        """The bytes; a zip member is read in pieces and refused past ``max_inflated``."""
        if self.problem:
            raise FileNotFoundError(self.problem)
        if self.member is None:
            assert self.path is not None
            return self.path.read_bytes()
        assert self.path is not None
        with zipfile.ZipFile(self.path) as zf:
            return read_member(zf, zf.getinfo(self.member), str(self.path), max_inflated)


def _is_dicomdir(path: Path) -> bool:
    return path.name.upper() == "DICOMDIR"


def iter_sources(paths: list[Path], budget: InflationBudget) -> Iterator[SourceItem]:
    """Every candidate file; zips are charged to ``budget`` (``LimitExceeded`` for a bomb)."""
    for path in paths:
        if not path.exists():
            raise BadRequest(f"{path}: no such file or folder.")
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and not _is_dicomdir(p) and not p.name.startswith("."):
                    yield from _file_items(p, budget)
        elif _is_dicomdir(path):
            yield from _dicomdir_items(path)
        else:
            yield from _file_items(path, budget)


def _file_items(path: Path, budget: InflationBudget) -> Iterator[SourceItem]:
    st = path.stat()
    if zipfile.is_zipfile(path) and path.suffix.lower() == ".zip":
        zf, members = open_archive(path, str(path), budget)
        with zf:
            for info in members:
                yield SourceItem(
                    f"{path}:{info.filename}", path, info.filename, info.file_size, st.st_mtime_ns
                )
        return
    yield SourceItem(str(path), path, None, st.st_size, st.st_mtime_ns)


def _dicomdir_items(path: Path) -> Iterator[SourceItem]:
    try:
        ds = pydicom.dcmread(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing files are reported as rejections below
            fs = FileSet(ds)
    except Exception as exc:
        raise BadRequest(f"{path}: unreadable DICOMDIR ({type(exc).__name__}).") from None
    found: set[Path] = set()
    for instance in fs:
        p = Path(instance.path)
        found.add(p.resolve())
        st = p.stat()
        yield SourceItem(str(p), p, None, st.st_size, st.st_mtime_ns)
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        p = path.parent.joinpath(*([file_id] if isinstance(file_id, str) else list(file_id)))
        if p.resolve() not in found and not p.is_file():
            yield SourceItem(str(p), p, problem="listed in the DICOMDIR but missing")
