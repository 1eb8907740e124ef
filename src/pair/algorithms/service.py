"""Submitting, listing and loading algorithm packages.

A package is unpacked and validated in a private temporary folder; only a package that passed
every check is moved to ``data_dir/algorithms/<id>/<version>/`` and gets a row, so a refused
package leaves neither a row nor files behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pair.algorithms.manifest import Manifest, semver_key
from pair.algorithms.models import Algorithm, AlgorithmStatus
from pair.algorithms.package import PackageRejected, sha256_file, unpack, validate_folder
from pair.algorithms.runner import LoadedAlgorithm, smoke_test
from pair.algorithms.usecase_check import check_manifest
from pair.audit.service import Actor, record
from pair.core.config import AlgorithmSettings
from pair.core.errors import Conflict, Invalid, NotFound
from pair.core.node import Node

ALGORITHMS_DIR = "algorithms"
STALE_AFTER_S = 600


@dataclass(frozen=True)
class Submission:
    algorithm: Algorithm
    created: bool  # False: the identical package was already registered (idempotent)


def submit_algorithm(
    session: Session,
    node: Node,
    source: Path | bytes,
    actor: Actor,
    limits: AlgorithmSettings | None = None,
) -> Submission:
    """Validate and store a package (folder, zip path or zip bytes)."""
    limits = limits or node.settings.algorithms
    tmp_root = node.settings.tmp_dir
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="algorithm-", dir=tmp_root))
    final: Path | None = None
    try:
        folder = unpack(source, work / "pkg", limits)
        pkg = validate_folder(folder, limits, smoke=False)
        m = pkg.manifest
        manifest_json = m.model_dump(mode="json")
        existing = _find(session, m.id, m.version)
        if existing is not None:
            if existing.sha256 == pkg.sha256 and existing.manifest == manifest_json:
                return Submission(existing, created=False)
            what = "model file" if existing.sha256 != pkg.sha256 else "manifest"
            raise Conflict(
                f"Algorithm {m.id} version {m.version} is already registered with a different "
                f"{what}; publish the change under a new version."
            )
        check_manifest(session, m)  # the declared use case's CDEs, values and modality
        problems = smoke_test(pkg.loaded(), limits)
        if problems:
            raise PackageRejected(problems)
        rel = Path(ALGORITHMS_DIR) / m.id / m.version
        target = node.settings.data_dir / rel
        _place(folder, target, m)
        final = target  # ours now: removed again if anything below fails
        row = Algorithm(
            algorithm_id=m.id,
            version=m.version,
            name=m.name,
            manifest=manifest_json,
            sha256=pkg.sha256,
            stored_path=rel.as_posix(),
            submitted_by=actor.user_name,
            facility_id=actor.facility_id,
            status=AlgorithmStatus.ACTIVE,
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError as exc:
            msg = f"Algorithm {m.id} version {m.version} was registered concurrently."
            raise Conflict(msg) from exc
        record(
            session,
            actor,
            "algorithm.add",
            "algorithm",
            row.ref,
            detail={"sha256": pkg.sha256, "files": pkg.files},
        )
        final = None  # committed to the caller's transaction
        return Submission(row, created=True)
    finally:
        if final is not None and final.exists():
            shutil.rmtree(final, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _place(folder: Path, target: Path, m: Manifest) -> None:
    """Move the package into place atomically; never overwrite another submission's files."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(folder, target)  # fails if target exists and is not empty
        return
    except OSError:
        pass
    # No row exists for id+version (checked before). Files older than STALE_AFTER_S are left
    # over by an interrupted submission; younger ones belong to a concurrent submission.
    if time.time() - target.stat().st_mtime < STALE_AFTER_S:
        raise Conflict(
            f"Another submission of {m.id} version {m.version} is in progress; "
            "try again in a few minutes."
        )
    shutil.rmtree(target)
    os.rename(folder, target)


def add_algorithm(
    session: Session,
    node: Node,
    path_or_bytes: Path | bytes,
    actor: Actor,
    limits: AlgorithmSettings | None = None,
) -> Algorithm:
    """Register a package; re-submitting the identical package returns the existing row."""
    return submit_algorithm(session, node, path_or_bytes, actor, limits).algorithm


def check_package(
    node: Node, source: Path | bytes, limits: AlgorithmSettings | None = None
) -> Manifest:
    """Run every validation (including the smoke inference) without storing anything."""
    limits = limits or node.settings.algorithms
    node.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="algorithm-check-", dir=node.settings.tmp_dir))
    try:
        return validate_folder(unpack(source, work / "pkg", limits), limits).manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _find(session: Session, algorithm_id: str, version: str) -> Algorithm | None:
    return session.scalar(
        select(Algorithm).where(
            Algorithm.algorithm_id == algorithm_id, Algorithm.version == version
        )
    )


def list_algorithms(session: Session, algorithm_id: str | None = None) -> list[Algorithm]:
    """All versions, by id, newest version first (semantic-version order)."""
    stmt = select(Algorithm)
    if algorithm_id is not None:
        stmt = stmt.where(Algorithm.algorithm_id == algorithm_id)
    rows = list(session.scalars(stmt))
    rows.sort(key=lambda a: semver_key(a.version), reverse=True)
    rows.sort(key=lambda a: a.algorithm_id)
    return rows


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``id`` or ``id@version``."""
    algorithm_id, _, version = ref.partition("@")
    return algorithm_id, (version or None)


def get_algorithm(session: Session, algorithm_id: str, version: str | None = None) -> Algorithm:
    """One version, or the highest semantic version of an id when ``version`` is None."""
    if version is not None:
        row = _find(session, algorithm_id, version)
        if row is None:
            known = [a.version for a in list_algorithms(session, algorithm_id)]
            hint = f"; known versions: {', '.join(known)}" if known else ""
            raise NotFound(f"Algorithm {algorithm_id} version {version} not found{hint}.")
        return row
    rows = [a for a in list_algorithms(session, algorithm_id) if a.status == AlgorithmStatus.ACTIVE]
    if not rows:
        raise NotFound(f"No algorithm with id {algorithm_id!r}.")
    return rows[0]


def load_algorithm(node: Node, algorithm: Algorithm) -> LoadedAlgorithm:
    """The stored package, ready for ``runner.run_inference``; the model checksum is re-checked."""
    manifest = Manifest.model_validate(algorithm.manifest)
    model_path = node.settings.data_dir / algorithm.stored_path / manifest.model.file
    if not model_path.is_file():
        raise NotFound(f"Model file of {algorithm.ref} is missing from {model_path.parent}.")
    actual = sha256_file(model_path)
    if actual != algorithm.sha256:
        raise Invalid(
            f"Stored model of {algorithm.ref} was modified (SHA-256 {actual}, "
            f"registered {algorithm.sha256}); refusing to run it."
        )
    return LoadedAlgorithm(manifest, model_path, algorithm.sha256, node.settings.algorithms)


def model_card(node: Node, algorithm: Algorithm) -> str | None:
    """The package's README.md (model card) as submitted, or None when it has none."""
    path = node.settings.data_dir / algorithm.stored_path / "README.md"
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def inference_cache_dir(node: Node) -> Path:
    """Where ``run_inference`` keeps per-instance results (keyed by algorithm and instance)."""
    return node.settings.data_dir / "cache" / "inference"
