"""DICOM Comprehensive SR, TID 1500 Measurement Report, built with highdicom.

One TID 1501 measurement group for the report: choice values as qualitative evaluations
(CODE name/value pairs, one per selected value), integer and numeric values as measurements,
the study's instances as source images, and TID 4019 algorithm identification when an
element's value came from an accepted AI suggestion. Narrative text is not part of TID 1500
(highdicom #124); it travels in the text and FHIR outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pair.reporting.engine import Evaluation
from pair.reporting.model import Module
from pair.reporting.outputs.context import (
    CodedObservation,
    EvidenceInstance,
    ReportContext,
    coded_observations,
    coding,
)

MANUFACTURER = "PAIR"


@lru_cache(maxsize=4096)
def _concept(code: str, meaning: str, pair: bool) -> hd.sr.CodedConcept:
    """Cached: building a CodedConcept validates it (~0.2 ms); highdicom copies the content
    tree into each SR, so sharing these read-only concepts between reports is safe."""
    c = coding()["dicom"]
    scheme = c["pair_scheme"] if pair else c["radelement_scheme"]
    return hd.sr.CodedConcept(
        value=code, scheme_designator=scheme, meaning=meaning[: c["meaning_max"]]
    )


def _pn(name: str) -> str:
    """A DICOM person name; a single-component user name gets the trailing caret."""
    return name if "^" in name else f"{name}^"


def _dt(value: str, fallback: str) -> str:
    return value if value and value.isdigit() else fallback


def evidence_datasets(ctx: ReportContext, limit: int | None = None) -> list[Dataset]:
    """Minimal datasets for the referenced instances (highdicom copies patient/study from them)."""
    out = []
    for inst in ctx.evidence[:limit]:
        ds = Dataset()
        ds.PatientID = ctx.patient_id
        ds.PatientName = ctx.patient_name or f"{ctx.patient_id}^"
        ds.PatientBirthDate = ctx.patient_birth_date
        ds.PatientSex = ctx.patient_sex
        ds.StudyInstanceUID = ctx.study_uid
        ds.StudyID = ctx.study_id
        ds.StudyDate = _dt(ctx.study_date, "")
        ds.StudyTime = ctx.study_time
        ds.AccessionNumber = ctx.accession_number
        ds.ReferringPhysicianName = ctx.referring_physician_name
        ds.SeriesInstanceUID = inst.series_uid
        ds.SOPInstanceUID = inst.sop_instance_uid
        ds.SOPClassUID = inst.sop_class_uid
        ds.Modality = inst.modality or ctx.modality or "OT"
        out.append(ds)
    return out


def sr_uids(ctx: ReportContext) -> tuple[str, str]:
    """Stable series and instance UIDs per report version (rebuilding gives the same object)."""
    base = f"pair-report:{ctx.report_id}:{ctx.study_uid}"
    series = generate_uid(entropy_srcs=[base, "series"])
    instance = generate_uid(entropy_srcs=[base, f"v{ctx.version}"])
    return str(series), str(instance)


def _items(
    obs: Sequence[CodedObservation],
) -> tuple[list[hd.sr.QualitativeEvaluation], list[hd.sr.Measurement]]:
    qual: list[hd.sr.QualitativeEvaluation] = []
    meas: list[hd.sr.Measurement] = []
    for ob in obs:
        pair = ob.cde_system == "pair"
        name = _concept(ob.cde_id, ob.cde_name, pair)
        if ob.kind in ("choice", "multichoice"):
            for code, meaning, _ in ob.codes:
                qual.append(hd.sr.QualitativeEvaluation(name, _concept(code, meaning, pair)))
        elif ob.kind in ("integer", "numeric"):
            unit = ob.unit or "{score}"
            meas.append(
                hd.sr.Measurement(
                    name=name,
                    value=float(ob.value),
                    unit=hd.sr.CodedConcept(unit, "UCUM", "score" if unit == "{score}" else unit),
                )
            )
    return qual, meas


def build_sr(
    module: Module, ev: Evaluation, ctx: ReportContext, previous: Sequence[Dataset] = ()
) -> hd.sr.ComprehensiveSR:
    """The report as a Comprehensive SR; ``previous`` are SRs of earlier versions (amendments)."""
    from pair.core.errors import Invalid

    evidence = evidence_datasets(ctx, limit=1)
    if not evidence:
        raise Invalid(
            f"Cannot build a DICOM SR for study {ctx.study_uid}: it has no stored "
            "instances to reference."
        )
    person = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=_pn(ctx.author) if ctx.author else "Unknown^Radiologist"
        ),
    )
    accepted = [s for s in ctx.suggestions if s.outcome == "accepted"]
    algorithm = None
    if accepted:
        algorithm = hd.sr.AlgorithmIdentification(
            name=accepted[0].algorithm[:64], version=accepted[0].version[:64]
        )
    qual, meas = _items(coded_observations(module, ev))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[ctx.report_id, str(ctx.version), "group"]),
            identifier=f"{module.id} {module.version}"[:64],
        ),
        finding_sites=[hd.sr.FindingSite(codes.SCT.Lung)],
        algorithm_id=algorithm,
        measurements=meas or None,
        qualitative_evaluations=qual or None,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=e.SOPClassUID, referenced_sop_instance_uid=e.SOPInstanceUID
            )
            for e in evidence[:1]
        ],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=person),
        procedure_reported=codes.SCT.ChestImaging,
        imaging_measurements=[group],
    )
    series_uid, instance_uid = sr_uids(ctx)
    signed = ctx.status in ("final", "amended")
    doc = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_uid,
        series_number=900,
        sop_instance_uid=instance_uid,
        instance_number=ctx.version,
        manufacturer=MANUFACTURER,
        is_complete=signed,
        is_final=signed,
        is_verified=signed,
        institution_name=ctx.facility or None,
        verifying_observer_name=_pn(ctx.author) if signed and ctx.author else None,
        verifying_organization=(ctx.facility or "PAIR") if signed else None,
        previous_versions=list(previous) or None,
        series_description=f"PAIR report {module.label}"[:64],
    )
    if len(ctx.evidence) > 1:
        doc.CurrentRequestedProcedureEvidenceSequence = _evidence_sequence(ctx)
    return doc


def _evidence_sequence(ctx: ReportContext) -> Any:
    """Every instance of the study, grouped by series. Built here rather than by highdicom
    from one dataset per instance, which costs ~1 ms per instance; the UIDs come from the
    repository index and were validated at ingest."""
    from pydicom.config import disable_value_validation
    from pydicom.sequence import Sequence as DicomSequence

    by_series: dict[str, list[EvidenceInstance]] = {}
    for inst in ctx.evidence:
        by_series.setdefault(inst.series_uid, []).append(inst)
    with disable_value_validation():
        study = Dataset()
        study.StudyInstanceUID = ctx.study_uid
        series_items = []
        for series_uid, instances in by_series.items():
            series = Dataset()
            series.SeriesInstanceUID = series_uid
            refs = []
            for inst in instances:
                ref = Dataset()
                ref.ReferencedSOPClassUID = inst.sop_class_uid
                ref.ReferencedSOPInstanceUID = inst.sop_instance_uid
                refs.append(ref)
            series.ReferencedSOPSequence = DicomSequence(refs)
            series_items.append(series)
        study.ReferencedSeriesSequence = DicomSequence(series_items)
    return DicomSequence([study])
