"""DICOM Comprehensive SR, TID 1500 Measurement Report, built with highdicom.

One TID 1501 measurement group for the report: choice values as qualitative evaluations
(CODE name/value pairs, one per selected value), integer and numeric values as measurements,
the study's instances as source images, and TID 4019 algorithm identification when an
element's value came from an accepted AI suggestion. Narrative text is not part of TID 1500
(highdicom #124); it travels in the text and FHIR outputs.

A RadElement code whose id PAIR inferred (not verified against radelement.org) carries a
HAS CONCEPT MOD CODE child naming it (``coding.yaml`` ``dicom.inferred_code``), the SR's
counterpart of the FHIR verification extension.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import highdicom as hd
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from pair.core import fastpaths
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
EVIDENCE_TAG = Tag(0x0040, 0xA375)


# Content items that depend only on codes, values or names are built once and shared by
# every SR that contains them: building one validates it (0.1-0.5 ms each, a third of a CT
# report's build). highdicom's own constructor shares the caller's items the same way (the
# SR dataset holds the content tree it was given; only ``.content`` is a copy), and nothing
# in PAIR modifies an SR's content tree after it is built.


@lru_cache(maxsize=4096)
def _concept(code: str, meaning: str, pair: bool) -> hd.sr.CodedConcept:
    c = coding()["dicom"]
    scheme = c["pair_scheme"] if pair else c["radelement_scheme"]
    return hd.sr.CodedConcept(
        value=code, scheme_designator=scheme, meaning=meaning[: c["meaning_max"]]
    )


Concept = tuple[str, str, bool]  # (code, meaning, PAIR scheme)


def _mark_inferred(item: Dataset, inferred: Sequence[Concept]) -> None:
    """Attach one HAS CONCEPT MOD child per inferred code (the code is its value)."""
    if not inferred:
        return
    c = coding()["dicom"]["inferred_code"]
    name = hd.sr.CodedConcept(
        value=c["value"], scheme_designator=coding()["dicom"]["pair_scheme"], meaning=c["meaning"]
    )
    children = list(getattr(item, "ContentSequence", []))
    children += [
        hd.sr.CodeContentItem(
            name=name,
            value=_concept(*code),
            relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
        )
        for code in inferred
    ]
    item.ContentSequence = hd.sr.ContentSequence(children)


@lru_cache(maxsize=4096)
def _qualitative(
    name: Concept, value: Concept, inferred: tuple[Concept, ...] = ()
) -> hd.sr.QualitativeEvaluation:
    out = hd.sr.QualitativeEvaluation(_concept(*name), _concept(*value))
    _mark_inferred(out[0], inferred)
    return out


@lru_cache(maxsize=4096)
def _measurement(
    name: Concept, value: float, unit: str, inferred: tuple[Concept, ...] = ()
) -> hd.sr.Measurement:
    out = hd.sr.Measurement(
        name=_concept(*name),
        value=value,
        unit=hd.sr.CodedConcept(unit, "UCUM", "score" if unit == "{score}" else unit),
    )
    _mark_inferred(out[0], inferred)
    return out


@lru_cache(maxsize=256)
def _observation_context(author: str) -> hd.sr.ObservationContext:
    person = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=_pn(author) if author else "Unknown^Radiologist"
        ),
    )
    return hd.sr.ObservationContext(observer_person_context=person)


@lru_cache(maxsize=256)
def _algorithm(name: str, version: str) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=name[:64], version=version[:64])


@lru_cache(maxsize=1)
def _lung() -> hd.sr.FindingSite:
    return hd.sr.FindingSite(codes.SCT.Lung)


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
        name = (ob.cde_id, ob.cde_name, pair)
        name_inferred = (name,) if ob.verification == "inferred" else ()
        if ob.kind in ("choice", "multichoice"):
            for code, meaning, verification in ob.codes:
                value = (code, meaning, pair)
                inferred = name_inferred + ((value,) if verification == "inferred" else ())
                qual.append(_qualitative(name, value, inferred))
        elif ob.kind in ("integer", "numeric"):
            meas.append(_measurement(name, float(ob.value), ob.unit or "{score}", name_inferred))
    return qual, meas


def measurement_report(
    module: Module, ev: Evaluation, ctx: ReportContext, evidence: Sequence[Dataset]
) -> hd.sr.MeasurementReport:
    """The TID 1500 content tree, built with highdicom's templates."""
    accepted = [s for s in ctx.suggestions if s.outcome == "accepted"]
    algorithm = _algorithm(accepted[0].algorithm, accepted[0].version) if accepted else None
    qual, meas = _items(coded_observations(module, ev))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[ctx.report_id, str(ctx.version), "group"]),
            identifier=f"{module.id} {module.version}"[:64],
        ),
        finding_sites=[_lung()],
        algorithm_id=algorithm,
        measurements=meas or None,
        qualitative_evaluations=qual or None,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=e.SOPClassUID, referenced_sop_instance_uid=e.SOPInstanceUID
            )
            for e in evidence
        ],
    )
    return hd.sr.MeasurementReport(
        observation_context=_observation_context(ctx.author),
        procedure_reported=codes.SCT.ChestImaging,
        imaging_measurements=[group],
    )


def document_attributes(
    module: Module, ctx: ReportContext, previous: Sequence[Dataset] = ()
) -> dict[str, Any]:
    """The keyword arguments of highdicom's ComprehensiveSR other than evidence and content."""
    series_uid, instance_uid = sr_uids(ctx)
    signed = ctx.status in ("final", "amended")
    return {
        "series_instance_uid": series_uid,
        "series_number": 900,
        "sop_instance_uid": instance_uid,
        "instance_number": ctx.version,
        "manufacturer": MANUFACTURER,
        "is_complete": signed,
        "is_final": signed,
        "is_verified": signed,
        "institution_name": ctx.facility or None,
        "verifying_observer_name": _pn(ctx.author) if signed and ctx.author else None,
        "verifying_organization": (ctx.facility or "PAIR") if signed else None,
        "previous_versions": list(previous) or None,
        "series_description": f"PAIR report {module.label}"[:64],
    }


class _ComprehensiveSR(hd.sr.ComprehensiveSR):
    """highdicom's Comprehensive SR; a source image without a Manufacturer is not offered as
    acquisition equipment. highdicom skips such an image too, but only after scanning the
    standard's IOD tables for pixel data attributes (1.8 ms); the result is the same."""

    def _add_contributing_equipment(
        self,
        contributing_equipment: Sequence[hd.ContributingEquipment] | None = None,
        source_image: Dataset | None = None,
    ) -> None:
        if source_image is not None and not source_image.get("Manufacturer"):
            source_image = None
        super()._add_contributing_equipment(contributing_equipment, source_image)


@lru_cache(maxsize=1)
def _empty_tid1500_root() -> hd.sr.ContainerContentItem:
    """An empty TID 1500 root container, the content highdicom's constructor is given."""
    root = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport, template_id="1500")
    root.ContentSequence = hd.sr.ContentSequence([])
    return root


def build_sr(
    module: Module, ev: Evaluation, ctx: ReportContext, previous: Sequence[Dataset] = ()
) -> hd.sr.ComprehensiveSR:
    """The report as a Comprehensive SR; ``previous`` are SRs of earlier versions (amendments).

    With ``PAIR_FAST_PATHS`` (the default) built by ``_build_sr_fast``; off, or where the fast
    build raises (logged), by highdicom's plain constructor, the reference it must equal.
    """
    from pair.core.errors import Invalid

    evidence = evidence_datasets(ctx, limit=1)
    if not evidence:
        raise Invalid(
            f"Cannot build a DICOM SR for study {ctx.study_uid}: it has no stored "
            "instances to reference."
        )
    report = measurement_report(module, ev, ctx, evidence)
    attributes = document_attributes(module, ctx, previous)
    if fastpaths.enabled():
        try:
            return _build_sr_fast(report, ctx, evidence, attributes)
        except Exception as exc:
            fastpaths.fell_back("sr_document", exc)
    return _build_sr_highdicom(report, ctx, evidence, attributes)


def _build_sr_highdicom(
    report: hd.sr.MeasurementReport,
    ctx: ReportContext,
    evidence: list[Dataset],
    attributes: dict[str, Any],
) -> hd.sr.ComprehensiveSR:
    """The reference: highdicom's constructor, the evidence sequence built as pydicom datasets."""
    doc = hd.sr.ComprehensiveSR(evidence=evidence, content=report, **attributes)
    if len(ctx.evidence) > 1:
        doc.CurrentRequestedProcedureEvidenceSequence = _evidence_sequence(ctx)
    return doc


def _build_sr_fast(
    report: hd.sr.MeasurementReport,
    ctx: ReportContext,
    evidence: list[Dataset],
    attributes: dict[str, Any],
) -> hd.sr.ComprehensiveSR:
    """highdicom's ``ComprehensiveSR`` sets every document-level attribute, but its constructor
    also deep-copies the content tree, re-parses the copy into content item objects and
    searches it three times (referenced images must be in the evidence; no SCOORD3D in a
    Comprehensive SR): about 20 ms of a 30 ms build for a CT report. For the tree built here
    with highdicom's own templates those checks hold by construction (the only referenced
    image is ``evidence[0]``; there are no spatial coordinates), so the document is
    constructed around an empty root container of the same template and the real root's
    attributes are then set on it exactly as the constructor does (``self[tag] = value``),
    with ``.content`` being the MeasurementReport itself, as ``ComprehensiveSR.from_dataset``
    gives for TID 1500. tests/reporting/test_outputs.py checks that the result equals the
    plain constructor's for every golden case.
    """
    doc = _ComprehensiveSR(evidence=evidence, content=_empty_tid1500_root(), **attributes)
    root = report[0]
    for tag, value in root.items():
        doc[tag] = value
    doc._content = report
    if len(ctx.evidence) > 1:
        doc[EVIDENCE_TAG] = _evidence_element(ctx)
        doc.set_original_encoding(False, True, doc._character_set)
    return doc


def _evidence_sequence(ctx: ReportContext) -> list[Dataset]:
    """The Current Requested Procedure Evidence Sequence as pydicom datasets (the reference
    for ``_evidence_element``): one study item, one item per series, instances in order."""
    by_series: dict[str, list[EvidenceInstance]] = {}
    for inst in ctx.evidence:
        by_series.setdefault(inst.series_uid, []).append(inst)
    series_items = []
    for series_uid, instances in by_series.items():
        series = Dataset()
        refs = []
        for i in instances:
            ref = Dataset()
            ref.ReferencedSOPClassUID = i.sop_class_uid
            ref.ReferencedSOPInstanceUID = i.sop_instance_uid
            refs.append(ref)
        series.ReferencedSOPSequence = refs
        series.SeriesInstanceUID = series_uid
        series_items.append(series)
    study = Dataset()
    study.ReferencedSeriesSequence = series_items
    study.StudyInstanceUID = ctx.study_uid
    return [study]


def _ui(group: int, element: int, value: str) -> bytes:
    data = value.encode("ascii")
    if len(data) % 2:
        data += b"\0"
    return struct.pack("<HH2sH", group, element, b"UI", len(data)) + data


def _sq(group: int, element: int, items: list[bytes]) -> tuple[bytes, bytes]:
    """An explicit-VR little-endian sequence with defined lengths: (element, value) bytes."""
    body = b"".join(struct.pack("<HHI", 0xFFFE, 0xE000, len(i)) + i for i in items)
    return struct.pack("<HH2sHI", group, element, b"SQ", 0, len(body)) + body, body


def _evidence_element(ctx: ReportContext) -> RawDataElement:
    """Current Requested Procedure Evidence Sequence listing every instance of the study,
    encoded directly (explicit VR little endian, the SR's transfer syntax). Building one
    pydicom Dataset per instance costs ~0.1 ms each, too slow for 300-image CTs; the bytes
    are identical to what pydicom writes and parse back normally."""
    by_series: dict[str, list[EvidenceInstance]] = {}
    for inst in ctx.evidence:
        by_series.setdefault(inst.series_uid, []).append(inst)
    series_items = []
    for series_uid, instances in by_series.items():
        refs = [
            _ui(0x0008, 0x1150, i.sop_class_uid) + _ui(0x0008, 0x1155, i.sop_instance_uid)
            for i in instances
        ]
        series_items.append(_sq(0x0008, 0x1199, refs)[0] + _ui(0x0020, 0x000E, series_uid))
    study = _sq(0x0008, 0x1115, series_items)[0] + _ui(0x0020, 0x000D, ctx.study_uid)
    _, value = _sq(0x0040, 0xA375, [study])
    return RawDataElement(EVIDENCE_TAG, "SQ", len(value), value, 0, False, True)
