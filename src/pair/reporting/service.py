"""Report records: create, edit, preview, sign, amend, render; final values as case labels.

Rules: radiologists (and admins, except for signing) of the study's facility edit reports;
only a radiologist signs; a signed version never changes (amending adds a version). Users of
another facility get 404, as if the report did not exist. Every read is audited.

The public face of the reporting stages, which live in their own modules: ``records`` (access,
locking, versions), ``validation`` (draft values, AI suggestions), ``drafts`` (create, edit,
preview, amend), ``signing`` (sign, store the SR) and ``rendering`` (context, SR, downloads).
"""

from __future__ import annotations

from pair.reporting.drafts import amend, create_draft, preview, update_draft
from pair.reporting.labels import CaseLabel, final_labels
from pair.reporting.records import (
    EDITORS,
    current,
    get_version,
    list_reports,
    load_report,
    module_of,
)
from pair.reporting.rendering import FORMATS, MAX_EVIDENCE, context, render, version_sr
from pair.reporting.signing import SignResult, StoreInstance, sign, sign_and_store

__all__ = [
    "EDITORS",
    "FORMATS",
    "MAX_EVIDENCE",
    "CaseLabel",
    "SignResult",
    "StoreInstance",
    "amend",
    "context",
    "create_draft",
    "current",
    "final_labels",
    "get_version",
    "list_reports",
    "load_report",
    "module_of",
    "preview",
    "render",
    "sign",
    "sign_and_store",
    "update_draft",
    "version_sr",
]
