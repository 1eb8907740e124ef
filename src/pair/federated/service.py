"""Federated studies at the hub: load what a run reported, and read it back for the portal/API.

``record_run`` reads the recorder's JSON lines (``pair.federated.flare.recorder``) and FLARE's
cross-site evaluation file into the database; it replaces any earlier import of the same run, in
one transaction, so a re-import never leaves half a run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.accounts.policy import Action, authorize_federated
from pair.audit.service import Actor
from pair.core.errors import Invalid, NotFound
from pair.federated.models import (
    FederatedCrossSite,
    FederatedRound,
    FederatedSiteRound,
    FederatedStudy,
)
from pair.federated.study import Study

MISSING = "Federated study not found."
_SITE_COLUMNS = (
    "train_loss",
    "val_loss",
    "val_auc",
    "val_auc_lower",
    "val_auc_upper",
    "val_sensitivity",
    "val_specificity",
    "global_val_loss",
    "global_val_auc",
    "dp_epsilon",
)
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The recorder's lines; a torn last line (run killed mid-write) is reported, not guessed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise Invalid(f"{path}: cannot read metrics ({exc.strerror}).") from None
    out = []
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise Invalid(f"{path}:{no}: not a JSON metrics line.") from None
        if not isinstance(rec, dict) or "kind" not in rec:
            raise Invalid(f"{path}:{no}: a metrics line needs a 'kind'.")
        out.append(rec)
    return out


def _site_facilities(
    session: Session, study: Study, explicit: Mapping[str, str] | None
) -> dict[str, int]:
    """Site name → hub facility id: explicit ``SITE=FACILITY`` pairs, else same-named facilities."""
    by_name = {f.name.lower(): f.id for f in session.scalars(select(Facility))}
    out: dict[str, int] = {}
    for site in study.site_names:
        wanted = (explicit or {}).get(site)
        if wanted is not None:
            if wanted.lower() not in by_name:
                raise Invalid(f"Site {site!r}: no facility named {wanted!r} at this hub.")
            out[site] = by_name[wanted.lower()]
        elif site.lower() in by_name:
            out[site] = by_name[site.lower()]
    unknown = sorted(set(explicit or {}) - set(study.site_names))
    if unknown:
        raise Invalid(f"Site(s) {', '.join(unknown)} are not in study {study.id!r}.")
    return out


def _cross_site_rows(path: Path | None) -> list[FederatedCrossSite]:
    """FLARE's ``cross_val_results.json``: {evaluated_on: {model: metrics}} → matrix cells."""
    if path is None or not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for site, models in sorted(data.items()):
        for model, metrics in sorted((models or {}).items()):
            if not isinstance(metrics, dict):
                continue
            name = "global" if model == "SRV_FL_global_model.pt" else model
            if model.startswith("SRV_") and name != "global":
                name = "best-global" if "best" in model else model
            rows.append(
                FederatedCrossSite(
                    model=name,
                    evaluated_on=site,
                    auc=metrics.get("auc"),
                    auc_lower=metrics.get("auc_lower"),
                    auc_upper=metrics.get("auc_upper"),
                    loss=metrics.get("loss"),
                    samples=int(metrics.get("samples", 0)),
                    metrics={k: float(v) for k, v in metrics.items()},
                )
            )
    return rows


def record_run(
    session: Session,
    study: Study,
    metrics_path: Path,
    *,
    cross_site_path: Path | None = None,
    mode: str = "simulator",
    run_name: str = "default",
    site_facilities: Mapping[str, str] | None = None,
    finished: bool = True,
) -> FederatedStudy:
    """Store (or replace) one run of ``study`` from its metrics file."""
    if not _RUN_NAME.match(run_name):
        raise Invalid("run name: letters, digits, '.', '_' or '-' (1-64), starting alphanumeric")
    records = read_records(metrics_path)
    facilities = _site_facilities(session, study, site_facilities)
    old = session.scalar(
        select(FederatedStudy).where(
            FederatedStudy.study_id == study.id,
            FederatedStudy.version == study.version,
            FederatedStudy.run_name == run_name,
        )
    )
    if old is not None:
        session.delete(old)
        session.flush()
    engine = next((r.get("engine", "") for r in records if r["kind"] == "start"), "")
    row = FederatedStudy(
        study_id=study.id,
        version=study.version,
        run_name=run_name,
        title=study.title,
        use_case=study.use_case,
        strategy=study.strategy.name,
        mode=mode,
        engine=engine,
        definition=study.to_dict(),
        digest=study.digest(),
        sites=study.site_names,
        site_facilities=facilities,
        rounds_planned=study.training.rounds,
    )
    for rec in records:
        if rec["kind"] == "round":
            row.rounds.append(
                FederatedRound(
                    round=int(rec["round"]),
                    wall_s=float(rec.get("wall_s", 0.0)),
                    participants=list(rec.get("sites", [])),
                    model_sha256=str(rec.get("aggregate_sha256", "")),
                    bytes_per_model=int(rec.get("bytes_per_model", 0)),
                )
            )
        elif rec["kind"] == "site":
            row.site_rounds.append(_site_round(study, rec))
    row.cross_site.extend(_cross_site_rows(cross_site_path))
    row.baselines = _local_only_baseline(row.site_rounds)
    row.rounds_done = len(row.rounds)
    if row.rounds:
        row.final_model_sha256 = row.rounds[-1].model_sha256
    if finished:
        row.status = "completed" if row.rounds_done >= row.rounds_planned else "incomplete"
        row.finished_at = datetime.now(UTC)
    session.add(row)
    session.flush()
    return row


def _local_only_baseline(site_rounds: list[FederatedSiteRound]) -> dict[str, Any]:
    """Each site's local-only model (``training.local_baseline``) in its last reported round."""
    last: dict[str, FederatedSiteRound] = {}
    for r in site_rounds:
        if "local_only_val_auc" in r.metrics and (
            r.site not in last or r.round > last[r.site].round
        ):
            last[r.site] = r
    if not last:
        return {}
    return {
        "local_only": {site: r.metrics["local_only_val_auc"] for site, r in sorted(last.items())}
    }


def _site_round(study: Study, rec: dict[str, Any]) -> FederatedSiteRound:
    site = str(rec.get("site", ""))
    if site not in study.site_names:
        raise Invalid(f"metrics from site {site!r}, which is not in study {study.id!r}")
    m = {k: float(v) for k, v in (rec.get("metrics") or {}).items()}
    return FederatedSiteRound(
        round=int(rec["round"]),
        site=site,
        train_samples=int(m.get("train_samples", 0)),
        val_samples=int(m.get("val_samples", 0)),
        train_seconds=float(m.get("train_seconds", 0.0)),
        bytes_sent=int(m.get("bytes_sent", rec.get("bytes_received", 0))),
        bytes_received=int(m.get("bytes_received", 0)),
        local_model_sha256=str(rec.get("local_model_sha256", "")),
        reported_at=float(rec.get("at", 0.0)),
        metrics=m,
        **{c: m.get(c) for c in _SITE_COLUMNS},
    )


def list_studies(session: Session, actor: Actor) -> list[FederatedStudy]:
    """Runs the actor may see (newest first); others' are simply absent."""
    rows = session.scalars(select(FederatedStudy).order_by(FederatedStudy.id.desc())).all()
    visible = []
    for row in rows:
        try:
            authorize_federated(actor, Action.FEDERATED_READ, row.site_facilities.values())
        except NotFound:
            continue
        visible.append(row)
    return visible


def get_study(session: Session, actor: Actor, pk: int) -> FederatedStudy:
    row = session.get(FederatedStudy, pk)
    if row is None:
        raise NotFound(MISSING)
    authorize_federated(actor, Action.FEDERATED_READ, row.site_facilities.values(), missing=MISSING)
    return row


def summary(row: FederatedStudy) -> dict[str, Any]:
    """Everything the study page and API show, as plain data."""
    last = max((r.round for r in row.site_rounds), default=None)
    final = {r.site: r for r in row.site_rounds if r.round == last}
    global_row = {c.evaluated_on: c for c in row.cross_site if c.model == "global"}
    per_site = []
    for site in row.sites:
        f = final.get(site)
        g = global_row.get(site)
        per_site.append(
            {
                "site": site,
                "local_auc": f.val_auc if f else None,
                "federated_auc": g.auc if g else (f.global_val_auc if f else None),
                "federated_auc_lower": g.auc_lower if g else None,
                "federated_auc_upper": g.auc_upper if g else None,
                "train_samples": f.train_samples if f else 0,
                "val_samples": f.val_samples if f else 0,
                "dp_epsilon": f.dp_epsilon if f else None,
                "local_only_auc": (row.baselines.get("local_only") or {}).get(site),
                "pooled_auc": (row.baselines.get("pooled") or {}).get(site),
            }
        )
    return {
        "id": row.id,
        "study_id": row.study_id,
        "version": row.version,
        "run_name": row.run_name,
        "title": row.title,
        "use_case": row.use_case,
        "strategy": row.strategy,
        "mode": row.mode,
        "engine": row.engine,
        "digest": row.digest,
        "status": row.status,
        "sites": row.sites,
        "rounds_planned": row.rounds_planned,
        "rounds_done": row.rounds_done,
        "final_model_sha256": row.final_model_sha256,
        "algorithm": f"{row.algorithm_id} {row.algorithm_version}".strip(),
        "per_site": per_site,
        "rounds": [
            {
                "round": r.round,
                "wall_s": r.wall_s,
                "participants": r.participants,
                "model_sha256": r.model_sha256,
                "bytes_per_model": r.bytes_per_model,
            }
            for r in row.rounds
        ],
        "site_rounds": [
            {
                "round": s.round,
                "site": s.site,
                "train_loss": s.train_loss,
                "val_loss": s.val_loss,
                "val_auc": s.val_auc,
                "val_auc_lower": s.val_auc_lower,
                "val_auc_upper": s.val_auc_upper,
                "val_sensitivity": s.val_sensitivity,
                "val_specificity": s.val_specificity,
                "global_val_auc": s.global_val_auc,
                "global_val_loss": s.global_val_loss,
                "train_samples": s.train_samples,
                "val_samples": s.val_samples,
                "train_seconds": s.train_seconds,
                "bytes_sent": s.bytes_sent,
                "bytes_received": s.bytes_received,
                "dp_epsilon": s.dp_epsilon,
                "local_model_sha256": s.local_model_sha256,
                "reported_at": s.reported_at,
            }
            for s in row.site_rounds
        ],
        "cross_site": [
            {
                "model": c.model,
                "evaluated_on": c.evaluated_on,
                "auc": c.auc,
                "auc_lower": c.auc_lower,
                "auc_upper": c.auc_upper,
                "loss": c.loss,
                "samples": c.samples,
            }
            for c in row.cross_site
        ],
    }


def register_global_model(
    session: Session,
    node: Any,
    row: FederatedStudy,
    study: Study,
    model_path: Path,
    work: Path,
    actor: Actor,
) -> tuple[str, str]:
    """Export the run's final global model as a package and register it (closed loop).

    The package version is ``<study version>.<run number>.0`` so each run of a study is its own
    algorithm version; returns (algorithm id, version).
    """
    from pair.algorithms.service import submit_algorithm
    from pair.federated.export import load_global_model, write_package

    cases = {
        s.site: s.train_samples + s.val_samples
        for s in row.site_rounds
        if s.round == max(r.round for r in row.site_rounds)
    }
    provenance = {
        "study": f"{study.id} v{study.version}",
        "run": row.run_name,
        "sites": ", ".join(study.site_names),
        "rounds": row.rounds_done,
        "cases": cases,
        "engine": row.engine,
        "global_model_sha256": row.final_model_sha256,
    }
    version = f"{study.version}.{row.id}.0"
    folder = write_package(
        study, load_global_model(model_path), work / "package", provenance, version
    )
    algorithm = submit_algorithm(session, node, folder, actor).algorithm
    row.algorithm_id, row.algorithm_version = algorithm.algorithm_id, algorithm.version
    session.flush()
    return algorithm.algorithm_id, algorithm.version
