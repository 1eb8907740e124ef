"""Reading and validating algorithm packages (a folder or a zip).

Validation collects every problem it can find and reports them together: manifest schema
(field path + rule), checksum, ONNX checker, operator domains, input/output contract, and finally
a smoke inference in the sandbox. Unpacking refuses zip-slip paths, links, encrypted members and
anything larger than the limits, before a byte is written outside the work folder.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pair.algorithms.manifest import MANIFEST_NAME, Manifest, parse_manifest_text
from pair.algorithms.sandbox import LoadedAlgorithm, smoke_test, static_check
from pair.core.config import AlgorithmSettings
from pair.core.errors import Invalid, PayloadTooLarge

OPTIONAL_FILES = {"README.md", "LICENSE", "LICENSE.txt", "LICENSE.md"}


class PackageRejected(Invalid):
    """A package that failed validation; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        lines = "\n".join(f"- {p}" for p in problems)
        super().__init__(
            f"Algorithm package refused ({len(problems)} problem(s)):\n{lines}",
            details={"problems": problems},
        )
        self.problems = problems


@dataclass
class ValidatedPackage:
    folder: Path
    manifest: Manifest
    sha256: str
    files: list[str] = field(default_factory=list)

    @property
    def model_path(self) -> Path:
        return self.folder / self.manifest.model.file

    def loaded(self) -> LoadedAlgorithm:
        return LoadedAlgorithm(self.manifest, self.model_path, self.sha256)


# --- unpacking -------------------------------------------------------------------------------


def unpack(source: Path | bytes, dest: Path, limits: AlgorithmSettings) -> Path:
    """Copy a folder or safely extract a zip (path or bytes) into ``dest``; return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        if len(source) > limits.max_package_bytes:
            raise PayloadTooLarge(_too_big("package", len(source), limits.max_package_bytes))
        zpath = dest.parent / (dest.name + ".upload.zip")
        zpath.write_bytes(source)
        try:
            return _extract_zip(zpath, dest, limits)
        finally:
            zpath.unlink(missing_ok=True)
    source = Path(source)
    if source.is_symlink():
        raise PackageRejected([f"{source.name}: the package itself is a symbolic link"])
    if source.is_dir():
        return _copy_folder(source, dest, limits)
    if source.is_file():
        if source.stat().st_size > limits.max_package_bytes:
            raise PayloadTooLarge(
                _too_big("package", source.stat().st_size, limits.max_package_bytes)
            )
        return _extract_zip(source, dest, limits)
    raise Invalid(f"No package at {source}: give a package folder or a .zip file.")


def _too_big(what: str, size: int, limit: int) -> str:
    return f"The {what} is {size} bytes; the limit is {limit} bytes (PAIR_ALGORITHM_* settings)."


def _copy_folder(src: Path, dest: Path, limits: AlgorithmSettings) -> Path:
    problems, total = [], 0
    entries = sorted(src.iterdir())
    for entry in entries:
        if entry.is_symlink():
            problems.append(f"{entry.name}: symbolic links are not allowed in a package")
        elif entry.is_dir():
            problems.append(f"{entry.name}/: sub-folders are not allowed in a package")
        else:
            total += entry.stat().st_size
    if problems:
        raise PackageRejected(problems)
    if total > limits.max_unpacked_bytes:
        raise PayloadTooLarge(_too_big("unpacked package", total, limits.max_unpacked_bytes))
    for entry in entries:
        shutil.copyfile(entry, dest / entry.name, follow_symlinks=False)
    return dest


def _extract_zip(zpath: Path, dest: Path, limits: AlgorithmSettings) -> Path:
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageRejected([f"not a valid zip file: {exc}"]) from exc
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_zip_members:
            raise PackageRejected(
                [f"zip holds {len(infos)} files; at most {limits.max_zip_members} are allowed"]
            )
        problems: list[str] = []
        names: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                problems.append(f"{name}: symbolic links are not allowed in a package zip")
            elif (
                name.startswith(("/", "\\"))
                or ".." in parts
                or "\\" in name
                or (len(name) > 1 and name[1] == ":")
            ):
                problems.append(
                    f"{name}: path leaves the package folder (zip-slip); "
                    "members must be plain relative names"
                )
            elif info.flag_bits & 0x1:
                problems.append(f"{name}: encrypted zip members are not allowed")
            else:
                names.append((info, PurePosixPath(*parts)))
        if problems:
            raise PackageRejected(problems)
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_unpacked_bytes:
            raise PayloadTooLarge(_too_big("unpacked package", declared, limits.max_unpacked_bytes))
        tops = {p.parts[0] for _, p in names}
        strip = len(tops) == 1 and all(len(p.parts) > 1 for _, p in names)
        written = 0
        for info, path in names:
            rel = PurePosixPath(*path.parts[1:]) if strip else path
            if len(rel.parts) != 1:
                raise PackageRejected(
                    [
                        f"{info.filename}: sub-folders are not allowed in a "
                        "package (only one top-level folder may wrap it)"
                    ]
                )
            target = dest / rel.parts[0]
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > limits.max_unpacked_bytes:
                        raise PayloadTooLarge(
                            _too_big("unpacked package", written, limits.max_unpacked_bytes)
                        )
                    out.write(chunk)
    return dest


# --- validation ------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def validate_folder(
    folder: Path, limits: AlgorithmSettings, smoke: bool = True
) -> ValidatedPackage:
    """Check an unpacked package; raise ``PackageRejected`` listing every problem."""
    problems: list[str] = []
    files = sorted(p.name for p in folder.iterdir())
    mpath = folder / MANIFEST_NAME
    if not mpath.is_file():
        raise PackageRejected([f"{MANIFEST_NAME} is missing (files found: {', '.join(files)})"])
    try:
        text = mpath.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PackageRejected([f"{MANIFEST_NAME}: not UTF-8 text"]) from None
    manifest, raw, schema_problems = parse_manifest_text(text)
    problems += schema_problems
    raw_model: dict[str, Any] = raw.get("model", {}) if raw else {}
    raw_model = raw_model if isinstance(raw_model, dict) else {}
    model_file = manifest.model.file if manifest else str(raw_model.get("file", "model.onnx"))
    expected = {MANIFEST_NAME, model_file} | OPTIONAL_FILES
    problems += [
        f"{f}: unexpected file; a package holds {MANIFEST_NAME}, the model file and "
        f"optionally README.md / LICENSE"
        for f in files
        if f not in expected
    ]
    mfile = folder / PurePosixPath(model_file).name
    if not mfile.is_file():
        problems.append(f"model file {model_file!r} named in the manifest is missing")
        raise PackageRejected(problems)
    sha = sha256_file(mfile)
    declared = manifest.model.sha256 if manifest else raw_model.get("sha256")
    if isinstance(declared, str) and declared and declared != sha:
        problems.append(
            f"checksum mismatch: manifest model.sha256 is {declared} but "
            f"{model_file} has SHA-256 {sha}"
        )
    manifest_json = manifest.model_dump(mode="json") if manifest else None
    problems += static_check(mfile, manifest_json, limits)
    if problems:
        raise PackageRejected(problems)
    assert manifest is not None
    pkg = ValidatedPackage(folder, manifest, sha, files)
    if smoke:
        problems += smoke_test(pkg.loaded(), limits)
        if problems:
            raise PackageRejected(problems)
    return pkg
