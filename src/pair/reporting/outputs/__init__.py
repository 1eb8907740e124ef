"""Report outputs rendered from one evaluated report: narrative text, CDE-coded JSON,
FHIR R4 (R4B models), DICOM Comprehensive SR (TID 1500) and HL7 v2 ORU^R01."""

from pair.reporting.outputs.context import (
    CodedObservation,
    EvidenceInstance,
    ReportContext,
    coded_observations,
)

__all__ = ["CodedObservation", "EvidenceInstance", "ReportContext", "coded_observations"]
