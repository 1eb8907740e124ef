"""Every route of the app (API, DICOMweb and portal pages and forms) x every identity (no token,
a bad token, each role of facility A, each role of facility B, the node operator): the status is
the one ``TABLE`` decides, never a 500, and nothing a non-A identity receives names facility A's
patients, users, tokens, AE titles, studies or profile.

The routes come from the app itself, so a route added without a decision in ``TABLE`` fails
``test_every_route_has_a_decision``. Decisions follow ``pair.accounts.policy``: a role outside
the rule's roles is 403; an object of another facility is 404 (as a missing one); the node
operator administers every facility but opens no facility data route.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from pair.core.config import get_settings
from pair.core.node import open_node
from pair.web.app import create_app
from tests.security.world import OPERATOR, PASSWORD, ROLES, World, build, fresh, portal_client


class Scope(enum.Enum):
    NONE = "none"  # not tied to a facility's object (or acts on the caller's own facility)
    LIST = "list"  # lists the caller's facility (node-wide for the operator)
    A_OBJECT = "a-object"  # names an object of facility A: 404 for facility B


PUBLIC = frozenset({"*public*"})
MEMBERS = frozenset(ROLES)
ADMIN = frozenset({"admin"})
OP = frozenset({OPERATOR})
ANY = MEMBERS | OP
NOBODY: frozenset[str] = frozenset()  # a role the world has no account of (the use-case panel)
EDITORS = frozenset({"admin", "radiologist"})
WRITERS = frozenset({"admin", "data-manager"})
EVALUATORS = frozenset({"admin", "evaluator"})
FEDERATED = frozenset({"admin", "evaluator", "researcher"})
# what an allowed identity may get when the request is well-formed for authorization but not
# for the route's own purpose (a draft already signed, a run that does not exist, ...)
LENIENT = frozenset({400, 404, 406, 409, 413, 415, 422})

Body = Callable[[World, str], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]
    scope: Scope = Scope.NONE
    body: Body | None = None
    ok: frozenset[int] = field(default_factory=frozenset)  # exact success codes, if known
    lenient: bool = False
    isolated: bool = False  # run in a fresh signed-out client (sign-in and sign-out)
    # what an allowed role of facility B gets for an object of A: 404 as for a missing one;
    # 403 too where the refusal does not depend on the object (role checked first)
    cross: frozenset[int] = frozenset({404})


def r(roles: frozenset[str], scope: Scope = Scope.NONE, *ok: int, **kw: Any) -> Rule:
    return Rule(roles, scope, ok=frozenset(ok), **kw)


def _form(**fields: Any) -> Body:
    return lambda w, who: {"data": {k: v(w) if callable(v) else v for k, v in fields.items()}}


def _json(**fields: Any) -> Body:
    return lambda w, who: {"json": {k: v(w) if callable(v) else v for k, v in fields.items()}}


def _profile(w: World, who: str) -> dict[str, Any]:
    prefix = "beta" if who.startswith("beta") else "alpha"
    return {"content": f"# {prefix}-profile-marker\noptions: {{}}\n", "headers": {}}


_A_FAC: Callable[[World], int] = lambda w: w.ids["A"].facility  # noqa: E731
_SERVICE: Callable[[World], int] = lambda w: w.users["alpha-service"]  # noqa: E731
_NEW = lambda prefix: lambda w: fresh(prefix)  # noqa: E731
A, L, N = Scope.A_OBJECT, Scope.LIST, Scope.NONE
ADM_OP = ADMIN | OP


def _wado(w: World) -> dict[str, str]:
    a = w.ids["A"]
    return {"requestType": "WADO", "studyUID": a.study, "seriesUID": a.series,
            "objectUID": a.instance, "contentType": "application/dicom"}  # fmt: skip


_UPLOAD: Body = lambda w, who: {"files": [("files", ("note.txt", b"not dicom"))]}  # noqa: E731
_SSE: Body = lambda w, who: {"params": {"max_s": 0.05}}  # noqa: E731
_STOW: Body = lambda w, who: {"content": b"x", "headers": {"content-type": "text/plain"}}  # noqa: E731

TABLE: dict[tuple[str, str], Rule] = {
    # ---- public ----
    **{(m, p): r(PUBLIC) for m in ("GET", "HEAD") for p in ("/docs", "/redoc", "/openapi.json")},
    **{(m, "/docs/oauth2-redirect"): r(PUBLIC) for m in ("GET", "HEAD")},
    ("GET", "/healthz"): r(PUBLIC, N, 200),
    ("GET", "/login"): r(PUBLIC, N, 200, 303),
    ("POST", "/login"): r(
        PUBLIC, N, 401, 429, isolated=True, body=_form(username="nobody", password="wrong")
    ),
    ("POST", "/logout"): r(PUBLIC, N, 303, isolated=True),
    # ---- accounts ----
    ("GET", "/api/me"): r(ANY, N, 200),
    ("GET", "/api/facilities"): r(ADM_OP, L, 200),
    ("POST", "/api/facilities"): r(OP, N, 201, body=_json(name=_NEW("Clinic "))),
    ("GET", "/api/users"): r(ADM_OP, L, 200),
    ("POST", "/api/users"): r(
        ADM_OP,
        A,
        201,
        body=_json(name=_NEW("new-user-"), role="researcher", facility="HOSPA", password=PASSWORD),
    ),
    ("GET", "/api/tokens"): r(ANY, L, 200),
    ("POST", "/api/tokens"): r(ADMIN, A, 201, body=_json(user="alpha-service")),
    ("DELETE", "/api/tokens/{token_id}"): r(ADM_OP, A, 204),
    ("GET", "/api/ae-titles"): r(ADM_OP, L, 200),
    ("POST", "/api/ae-titles"): r(
        ADM_OP, A, 201, body=_json(ae_title=_NEW("NEWAE"), facility="HOSPA")
    ),
    ("DELETE", "/api/ae-titles/{ae_title}"): r(ADM_OP, A, 204),
    ("GET", "/api/audit"): r(ADM_OP, L, 200),
    # ---- sign-in sessions and one's own password ----
    ("GET", "/api/sessions"): r(ADMIN, L, 200),
    ("DELETE", "/api/sessions/{session_id}"): r(ADMIN, A, 204),
    # the right current password and a too short new one: refused by the password policy
    ("POST", "/api/me/password"): r(
        ANY, N, 422, body=_json(current_password=PASSWORD, new_password="short")
    ),
    ("GET", "/account/password"): r(ANY, N, 200),
    ("POST", "/account/password"): r(
        ANY,
        N,
        422,
        body=_form(current_password=PASSWORD, new_password="short", confirm_password="short"),
    ),
    ("GET", "/admin/sessions"): r(ADMIN, L, 200),
    ("POST", "/admin/sessions/{session_id}/end"): r(ADMIN, A, 303),
    # ---- de-identification (the caller's own facility) ----
    ("GET", "/api/deid/profile"): r(ADMIN, L, 200),
    ("PUT", "/api/deid/profile"): r(ADMIN, L, 200, body=_profile),
    ("GET", "/api/deid/mapping.csv"): r(ADMIN, L, 200),
    ("GET", "/api/deid/burned-in-review"): r(ADMIN, L, 200),
    # ---- repository ----
    ("POST", "/api/upload"): r(WRITERS, N, 200, lenient=True, body=_UPLOAD),
    ("GET", "/api/quarantine"): r(ADMIN, L, 200),
    ("GET", "/api/quarantine/{item_id}"): r(ADMIN, A, 200),
    ("GET", "/api/quarantine/{item_id}/preview.png"): r(ADMIN, A, 200, lenient=True),
    ("POST", "/api/quarantine/{item_id}/remove-and-store"): r(
        ADMIN, A, 200, lenient=True, body=_json(note="", paths=[])
    ),
    ("POST", "/api/quarantine/{item_id}/rerun-and-store"): r(
        ADMIN, A, 200, lenient=True, body=_json(note="")
    ),
    ("POST", "/api/quarantine/{item_id}/reject"): r(ADMIN, A, 200, body=_json(note="")),
    ("GET", "/dicomweb/studies"): r(MEMBERS, L, 200, 204),
    ("GET", "/dicomweb/series"): r(MEMBERS, L, 200, 204),
    ("GET", "/dicomweb/instances"): r(MEMBERS, L, 200, 204),
    ("POST", "/dicomweb/studies"): r(WRITERS, N, lenient=True, body=_STOW),
    ("POST", "/dicomweb/studies/{study}"): r(WRITERS, N, lenient=True, body=_STOW),
    # QIDO-RS inside a study: another facility's study simply has no matches (204)
    **{
        ("GET", "/dicomweb/studies/{study}" + tail): r(MEMBERS, L, 200, 204)
        for tail in ("/instances", "/series", "/series/{series}/instances")
    },
    **{
        ("GET", "/dicomweb/studies/{study}" + tail): r(MEMBERS, A, 200, 204, lenient=True)
        for tail in (
            "",
            "/metadata",
            "/thumbnail",
            "/series/{series}",
            "/series/{series}/metadata",
            "/series/{series}/thumbnail",
            "/series/{series}/instances/{instance}",
            "/series/{series}/instances/{instance}/metadata",
            "/series/{series}/instances/{instance}/rendered",
            "/series/{series}/instances/{instance}/frames/{frames}",
            "/series/{series}/instances/{instance}/frames/{frame}/rendered",
            "/series/{series}/instances/{instance}/thumbnail",
            "/series/{series}/instances/{instance}/frames/{frame}/thumbnail",
            "/series/{series}/instances/{instance}/bulkdata/{tag}",
        )
    },
    # WADO-URI: facility A's object by its UIDs in the query
    ("GET", "/wado"): r(MEMBERS, A, 200, lenient=True, body=lambda w, who: {"params": _wado(w)}),
    # ---- cases and clinical data ----
    ("GET", "/api/cases"): r(MEMBERS, L, 200),
    # the clinical data dictionary: field definitions only, no data
    ("GET", "/api/clinical/dictionary"): r(PUBLIC, N, 200),
    ("GET", "/favicon.ico"): r(PUBLIC, N, 200),
    # the optional OHIF viewer (PAIR_OHIF_DIR; a stand-in build here): it reads /dicomweb with
    # the user's session, so it is for facility members, like DICOMweb's reads
    ("GET", "/ohif"): r(MEMBERS, N, 307),
    ("GET", "/ohif/{path:path}"): r(MEMBERS, N, 200),
    ("GET", "/api/cases/{case_id}/clinical"): r(MEMBERS, A, 200),
    ("PUT", "/api/cases/{case_id}/clinical"): r(WRITERS, A, 200, lenient=True, body=_json()),
    ("GET", "/api/cdes"): r(MEMBERS, N, 200),
    ("GET", "/api/cdes/{identifier}"): r(MEMBERS, N, 200),
    # ---- AI use cases: node-wide documents (no facility scope). The world's use case is a
    # shipped, published one written by "PAIR (shipped)": revise/submit are the author's (and
    # admins'), so other roles get 403; publish/retire are the panel's (no panel user here)
    ("GET", "/api/usecases"): r(MEMBERS, N, 200),
    ("GET", "/api/usecases/schema"): r(MEMBERS, N, 200),
    ("POST", "/api/usecases"): r(MEMBERS, N, 201, lenient=True, body=_json()),
    ("GET", "/api/usecases/{usecase_id}"): r(MEMBERS, N, 200),
    ("PUT", "/api/usecases/{usecase_id}"): r(ADMIN, N, 200, lenient=True, body=_json()),
    ("POST", "/api/usecases/{usecase_id}/submit"): r(ADMIN, N, 200, lenient=True),
    ("POST", "/api/usecases/{usecase_id}/comments"): r(
        MEMBERS, N, 201, lenient=True, body=_json(text="a comment")
    ),
    ("POST", "/api/usecases/{usecase_id}/publish"): r(NOBODY, N, 200, lenient=True),
    ("POST", "/api/usecases/{usecase_id}/retire"): r(NOBODY, N, 200, lenient=True),
    ("GET", "/api/usecases/{usecase_id}/export.json"): r(MEMBERS, N, 200),
    ("GET", "/api/usecases/{usecase_id}/export.md"): r(MEMBERS, N, 200),
    ("GET", "/api/usecases/{usecase_id}/diff"): r(MEMBERS, N, 200, lenient=True),
    # ---- reporting ----
    ("GET", "/api/reports/modules"): r(MEMBERS, N, 200),
    ("GET", "/api/reports/modules/{module_id}"): r(MEMBERS, N, 200),
    ("GET", "/api/reports/modules/{module_id}/cards.xml"): r(MEMBERS, N, 200),
    ("POST", "/api/reports/modules/{module_id}/evaluate"): r(
        MEMBERS, N, 200, lenient=True, body=_json(inputs={})
    ),
    ("GET", "/api/reports"): r(MEMBERS, L, 200),
    ("POST", "/api/reports"): r(
        EDITORS,
        A,
        201,
        lenient=True,
        body=_json(study_uid=lambda w: w.ids["A"].study, module="corads"),
    ),
    ("GET", "/api/reports/{report_id}"): r(MEMBERS, A, 200),
    ("GET", "/api/reports/{report_id}/versions"): r(MEMBERS, A, 200),
    ("GET", "/api/reports/{report_id}/download/{fmt}"): r(MEMBERS, A, 200, lenient=True),
    ("PUT", "/api/reports/{report_id}/inputs"): r(
        EDITORS, A, 200, lenient=True, body=_json(inputs={})
    ),
    ("POST", "/api/reports/{report_id}/preview"): r(
        MEMBERS, A, 200, lenient=True, body=_json(inputs={})
    ),
    ("POST", "/api/reports/{report_id}/sign"): r(
        frozenset({"radiologist"}), A, 200, lenient=True, body=_json()
    ),
    ("POST", "/api/reports/{report_id}/amend"): r(
        EDITORS, A, 200, 201, lenient=True, body=_json(reason="typo")
    ),
    # ---- algorithms and evaluations ----
    ("GET", "/api/algorithms"): r(MEMBERS, N, 200),
    ("POST", "/api/algorithms"): r(EVALUATORS, N, lenient=True, body=_UPLOAD),
    ("GET", "/api/algorithms/{algorithm_id}"): r(MEMBERS, N, 200, lenient=True),
    ("GET", "/api/algorithms/{algorithm_id}/{version}"): r(MEMBERS, N, 200, lenient=True),
    ("GET", "/api/evaluations"): r(EVALUATORS, L, 200),
    ("POST", "/api/evaluations"): r(EVALUATORS, N, 202, lenient=True, body=_json()),
    **{
        (m, "/api/evaluations/{run_id}" + tail): r(EVALUATORS, N, 200, lenient=True, body=_json())
        for m, tail in (
            ("GET", ""),
            ("POST", "/resume"),
            ("GET", "/report.html"),
            ("GET", "/cases"),  # per-case export (issue 15)
            ("GET", "/feedback"),
            ("POST", "/feedback/submit"),
        )
    },
    # ---- national registry (pair.registry): aggregates for every facility member, sites by
    # code only; case rows/exports for registry analysts and the hub operator (no account of
    # either in this world: NOBODY); the DICOM zip also needs an approval (researchers: 403)
    ("GET", "/api/registry/cohort"): r(MEMBERS, N, 200),
    ("POST", "/api/registry/cohort"): r(MEMBERS, N, 200, body=_json()),
    ("GET", "/api/registry/dashboard"): r(MEMBERS, N, 200),
    ("GET", "/api/registry/cohort/studies"): r(NOBODY, N, 200),
    ("GET", "/api/registry/exports/{filename}"): r(NOBODY, N, 200),
    ("GET", "/api/registry/dicom.zip"): r(NOBODY, N, 200),
    ("GET", "/api/registry/quality"): r(WRITERS, L, 200),
    ("GET", "/registry"): r(MEMBERS, N, 200),
    ("GET", "/registry/cohort"): r(MEMBERS, N, 200),
    ("GET", "/registry/quality"): r(WRITERS, L, 200),
    # ---- federated studies (accounts.policy federated block): hub roles and the admins,
    # evaluators and researchers of participating facilities; the world has no study, so the
    # study routes answer an allowed role 404 (as for another consortium's study) ----
    ("GET", "/api/federated/studies"): r(FEDERATED, N, 200),
    ("GET", "/api/federated/studies/{study_pk}"): r(FEDERATED, N, 200, lenient=True),
    ("GET", "/api/federated/studies/{study_pk}/figures/{figure}"): r(
        FEDERATED, N, 200, lenient=True
    ),
    ("GET", "/federated"): r(FEDERATED, N, 200),
    ("GET", "/federated/{study_pk}"): r(FEDERATED, N, 200, lenient=True),
    # ---- portal pages and forms ----
    ("GET", "/"): r(ANY, N, 200),
    ("GET", "/cases"): r(MEMBERS, L, 200),
    ("GET", "/worklist"): r(EDITORS, L, 200),
    ("GET", "/studies/{study_uid}"): r(MEMBERS, A),
    ("GET", "/cases/{case_id}"): r(MEMBERS, A, 200),
    ("POST", "/cases/{case_id}/clinical"): r(WRITERS, A, 200, 303, lenient=True, body=_form()),
    ("GET", "/viewer/dictionary.json"): r(MEMBERS, N, 200),
    ("GET", "/viewer/{study_uid}/{series_uid}"): r(MEMBERS, A, 200),
    ("GET", "/upload"): r(WRITERS, N, 200),
    ("GET", "/cdes"): r(MEMBERS, N, 200),
    ("GET", "/usecases"): r(MEMBERS, N, 200),
    ("GET", "/usecases/new"): r(MEMBERS, N, 200),
    ("POST", "/usecases/new"): r(MEMBERS, N, 303, lenient=True, body=_form()),
    ("GET", "/usecases/{usecase_id}"): r(MEMBERS, N, 200),
    ("GET", "/usecases/{usecase_id}/edit"): r(MEMBERS, N, 200),
    ("POST", "/usecases/{usecase_id}/edit"): r(ADMIN, N, 303, lenient=True, body=_form()),
    ("POST", "/usecases/{usecase_id}/submit"): r(ADMIN, N, 303, lenient=True),
    ("POST", "/usecases/{usecase_id}/comment"): r(
        MEMBERS, N, 303, lenient=True, body=_form(text="a comment")
    ),
    ("POST", "/usecases/{usecase_id}/publish"): r(NOBODY, N, 303, lenient=True),
    ("POST", "/usecases/{usecase_id}/retire"): r(NOBODY, N, 303, lenient=True),
    ("GET", "/usecases/{usecase_id}/diff"): r(MEMBERS, N, 200),
    ("GET", "/reports/{report_id}"): r(MEMBERS, A, 200),
    ("POST", "/reports/{report_id}/amend"): r(
        EDITORS, A, 303, lenient=True, body=_form(reason="typo")
    ),
    # opens the study's existing report (any member may read it); creating one needs an editor
    ("POST", "/studies/{study_uid}/reports"): r(
        MEMBERS,
        A,
        303,
        lenient=True,
        body=_form(module="corads"),
        cross=frozenset({403, 404}),
    ),
    ("GET", "/algorithms"): r(EVALUATORS, N, 200),
    ("GET", "/algorithms/format"): r(MEMBERS, N, 200),
    ("GET", "/algorithms/format/schema.json"): r(MEMBERS, N, 200),
    ("POST", "/algorithms"): r(EVALUATORS, N, lenient=True, body=_UPLOAD),
    ("GET", "/evaluations"): r(EVALUATORS, L, 200),
    ("GET", "/evaluations/new"): r(EVALUATORS, N, 200),
    ("POST", "/evaluations/new"): r(EVALUATORS, N, 303, lenient=True, body=_form()),
    ("GET", "/evaluations/{run_id}"): r(EVALUATORS, N, 200, lenient=True),
    ("GET", "/admin"): r(ADM_OP, N, 303),
    ("GET", "/admin/users"): r(ADM_OP, L, 200),
    ("POST", "/admin/users"): r(
        ADM_OP,
        A,
        303,
        body=_form(name=_NEW("form-user-"), role="researcher", facility_id=_A_FAC),
    ),
    ("POST", "/admin/users/{user_id}/active"): r(ADM_OP, A, 303, body=_form(active="0")),
    ("GET", "/admin/tokens"): r(ADM_OP, L, 200),
    ("POST", "/admin/tokens"): r(ADMIN, A, 201, body=_form(user_id=_SERVICE, label="x")),
    ("POST", "/admin/tokens/{token_id}/revoke"): r(ADM_OP, A, 303),
    ("GET", "/admin/ae-titles"): r(ADM_OP, L, 200),
    ("POST", "/admin/ae-titles"): r(
        ADM_OP, A, 303, body=_form(ae_title=_NEW("FORMAE"), facility_id=_A_FAC)
    ),
    ("POST", "/admin/ae-titles/remove"): r(
        ADM_OP, A, 303, body=lambda w, who: {"data": {"ae_title": w.fresh_ae()}}
    ),
    ("GET", "/admin/deid"): r(ADM_OP, L, 200),
    ("POST", "/admin/deid/{facility_id}"): r(
        ADM_OP, A, 303, body=_form(profile="# alpha-profile-marker\noptions: {}")
    ),
    ("GET", "/admin/quarantine"): r(ADMIN, L, 200),
    ("GET", "/admin/quarantine/{item_id}"): r(ADMIN, A, 200),
    ("GET", "/admin/quarantine/{item_id}/preview.png"): r(ADMIN, A, 200, lenient=True),
    ("POST", "/admin/quarantine/{item_id}/remove-and-store"): r(
        ADMIN, A, 303, lenient=True, body=_form(note="")
    ),
    ("POST", "/admin/quarantine/{item_id}/rerun-and-store"): r(
        ADMIN, A, 303, lenient=True, body=_form(note="")
    ),
    ("POST", "/admin/quarantine/{item_id}/reject"): r(ADMIN, A, 303, body=_form(note="")),
    ("GET", "/admin/audit"): r(ADM_OP, L, 200),
    # patient images: the facility's admin only (the operator reviews no patient data)
    ("GET", "/admin/burned-in"): r(ADMIN, L, 200),
    ("GET", "/admin/audit/export.csv"): r(ADM_OP, L, 200),
    # ---- performance registry (hub): site-node accounts file feedback (none in this world);
    # evaluators and admins read their own site's rows and the pooled estimate; the node
    # operator reads none (registry analysts and hub operators: tests/registry/performance)
    ("POST", "/api/registry/feedback"): r(NOBODY, N, 201, lenient=True, body=_json()),
    ("GET", "/api/registry/performance/algorithms"): r(EVALUATORS, N, 200),
    ("GET", "/api/registry/performance/algorithms/{algorithm_id}"): r(
        EVALUATORS, N, 200, lenient=True
    ),
    ("GET", "/api/registry/performance/alerts"): r(EVALUATORS, N, 200),
    ("GET", "/registry/performance"): r(EVALUATORS, N, 200),
    ("GET", "/registry/performance/{algorithm_id}"): r(EVALUATORS, N, 200, lenient=True),
    # ---- sharing / hub membership (pair.sharing). The world's node is a site: the hub routes
    # are refused by role first (hub-operator and site-node have no account here), and the
    # open registration answers 404 on a site ("not a hub") ----
    ("POST", "/api/hub/registrations"): r(
        PUBLIC, N, lenient=True, body=_json(name=_NEW("Joining "), code="JOIN1")
    ),
    ("GET", "/api/hub/members"): r(NOBODY, N),
    ("POST", "/api/hub/members/{member_id}/{decision}"): r(NOBODY, N),
    ("POST", "/api/hub/clinical"): r(
        NOBODY, N, body=_json(idempotency_key="k1", study_uids=["1.2.3"], data={})
    ),
    ("POST", "/api/hub/reports"): r(
        NOBODY,
        N,
        body=_json(
            idempotency_key="k2", study_uid="1.2.3", module_id="corads", version=1, status="final"
        ),
    ),
    ("GET", "/api/sharing"): r(WRITERS, L, 200),
    ("PUT", "/api/sharing/policy"): r(ADMIN, L, 200, body=_json(mode="none")),
    ("POST", "/api/sharing/retry"): r(ADMIN, L, 200),
    ("POST", "/api/cases/{case_id}/share"): r(WRITERS, A, 200),
    ("GET", "/sharing"): r(WRITERS, L, 200),
    ("POST", "/sharing/policy"): r(ADMIN, L, 303, body=_form(mode="none")),
    ("POST", "/sharing/retry"): r(ADMIN, L, 303),
    ("POST", "/cases/{case_id}/share"): r(WRITERS, A, 303),
    ("GET", "/hub/members"): r(NOBODY, N),
    ("POST", "/hub/members/{member_id}/{decision}"): r(NOBODY, N),
    # ---- hub feed (this world is a site: the hub's case routes answer 404 here) ----
    ("GET", "/api/changes"): r(MEMBERS, L, 200),
    ("GET", "/api/changes/stream"): r(MEMBERS, L, 200, body=_SSE),
    ("GET", "/api/hub/studies"): r(MEMBERS, N, lenient=True),
    ("GET", "/api/hub/studies/{study_uid}"): r(MEMBERS, N, lenient=True),
    ("GET", "/api/hub/quota"): r(MEMBERS, N, lenient=True),
    ("POST", "/api/hub/studies/{study_uid}/retract"): r(ADMIN, A, lenient=True),
    ("POST", "/api/feed/webhooks"): r(ADMIN, N, 201, body=_json(url="http://127.0.0.1:9/hook")),
    ("GET", "/api/feed/webhooks"): r(ADMIN, L, 200),
    ("DELETE", "/api/feed/webhooks/{webhook_id}"): r(ADMIN, A, lenient=True),
    ("GET", "/api/feed/webhooks/{webhook_id}/deliveries"): r(ADMIN, A, lenient=True),
    # browse and pull hub cases (no hub configured in this world: 404 once the role passes);
    # webhook delivery logs (own facility; hub operators every facility's, none here)
    ("GET", "/hub/cases"): r(MEMBERS, N, lenient=True),
    ("POST", "/hub/cases/pull"): r(WRITERS, N, lenient=True, body=_form(study_uid="1.2.3")),
    ("GET", "/hub/webhooks"): r(ADMIN, L, 200),
    ("GET", "/hub/webhooks/{webhook_id}"): r(ADMIN, A, lenient=True),
    # signed with PAIR_FEED_WEBHOOK_SECRET, not a token; not configured in this world
    ("POST", "/api/feed/webhook"): r(PUBLIC, N, 404),
}
PUBLIC_MOUNTS = {"/static"}


def _path_values(w: World, method: str, template: str) -> dict[str, Any]:
    """Path parameters: facility A's objects; a fresh one where the route destroys it."""
    a = w.ids["A"]
    destroys = method in ("POST", "DELETE", "PUT") and not template.startswith("/api/reports")
    values: dict[str, Any] = {
        "case_id": a.patient,
        "report_id": a.report,
        "study": a.study,
        "study_uid": a.study,
        "series": a.series,
        "series_uid": a.series,
        "instance": a.instance,
        "frames": "1",
        "frame": "1",
        "tag": "7FE00010",
        "facility_id": a.facility,
        "module_id": "corads",
        "identifier": "RDES296",
        "fmt": "coded",
        "run_id": 999999,
        "algorithm_id": "no-such-algorithm",
        "version": "1.0.0",
        "usecase_id": "pair-covid19-cxr-pattern",
        "filename": "studies.csv",
        "member_id": 1,
        "decision": "approve",
        "study_pk": 999999,
        "figure": "curves",
        "webhook_id": 999999,
        "path": "app-config.js",
    }
    names = [p.strip("{}").split(":")[0] for p in template.split("/") if p.startswith("{")]
    for name in names:
        if name == "item_id":
            values[name] = w.fresh_quarantine() if destroys else a.quarantine
        elif name == "token_id":
            values[name] = w.fresh_token()
        elif name == "user_id":
            values[name] = w.fresh_user()
        elif name == "ae_title":
            values[name] = w.fresh_ae()
        elif name == "session_id":
            values[name] = w.fresh_session()
    return {n: values[n] for n in names}


# ---- identities ----


@dataclass
class Identity:
    name: str
    role: str | None  # None: not signed in
    facility: str | None  # "A", "B" or None
    headers: dict[str, str]
    client: TestClient | None = None
    csrf: str = ""


def _identities(w: World, app: FastAPI) -> list[Identity]:
    people: list[tuple[str, str | None, str | None, dict[str, str] | None]] = [
        ("anonymous", None, None, {}),
        ("bad-token", None, None, {"Authorization": "Bearer pair_forged"}),
    ]
    for key, prefix in (("A", "alpha"), ("B", "beta")):
        people += [(f"{prefix}-{role}", role, key, None) for role in ROLES]
    people.append(("node-op", OPERATOR, None, None))
    found = []
    for name, role, facility, headers in people:
        client = TestClient(app, follow_redirects=False)
        csrf = portal_client(client, name if role else None)
        if headers is None:
            headers = {"Authorization": f"Bearer {w.tokens[name]}"}
        found.append(Identity(name, role, facility, headers, client, csrf))
    return found


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def matrix(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, FastAPI, list[Identity]]]:
    """One world and one app per database, shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("matrix")
    database_url = f"sqlite:///{folder / 'pair.db'}"
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres_server").create_database()
    ohif = folder / "ohif"  # a stand-in for OHIF's dist/ (tests/web/test_ohif_browser.py)
    ohif.mkdir()
    (ohif / "index.html").write_text('<script>window.PUBLIC_URL="/"</script><div id="root">')
    settings = get_settings(folder / "node", database_url=database_url, ohif_dir=ohif)
    node = open_node(settings=settings)
    world = build(node)
    app = create_app(node)
    yield world, app, _identities(world, app)
    node.close()


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (METHOD, path) the app answers, from its own routing table."""
    found = set()
    for ctx in iter_route_contexts(app.routes):
        for method in ctx.methods or ():
            found.add((method, str(ctx.path)))
    return found


def test_every_route_has_a_decision(matrix: tuple[World, FastAPI, list[Identity]]) -> None:
    _, app, _ = matrix
    routes = app_routes(app)
    missing = sorted(routes - TABLE.keys())
    assert not missing, f"routes without an authorization decision in TABLE: {missing}"
    stale = sorted(TABLE.keys() - routes)
    assert not stale, f"TABLE names routes the app no longer has: {stale}"
    spec = TestClient(app).get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method in ops:
            assert (method.upper(), path) in routes, (method, path)
    mounts = {str(m.path) for m in app.routes if isinstance(m, Mount)}
    assert mounts <= PUBLIC_MOUNTS, mounts - PUBLIC_MOUNTS


def expected(rule: Rule, who: Identity) -> frozenset[int] | None:
    """The statuses ``who`` must get; None: allowed (2xx/3xx, or ``rule.ok``)."""
    if rule.roles is PUBLIC:
        return None
    if who.role is None:
        return frozenset({401})
    allowed = who.role in rule.roles
    if who.role == OPERATOR:
        return None if allowed else frozenset({403})
    if rule.scope is Scope.A_OBJECT and who.facility == "B":
        return rule.cross if allowed else frozenset({403, 404})
    return None if allowed else frozenset({403})


def _call(w: World, app: FastAPI, who: Identity, method: str, template: str, rule: Rule) -> Any:
    path = template.replace(":path}", "}").format(**_path_values(w, method, template))
    kwargs = rule.body(w, who.name) if rule.body else {}
    headers = {**who.headers, **kwargs.pop("headers", {})}
    if not template.startswith("/dicomweb"):
        headers["accept"] = "application/json"  # error answers as JSON, not sign-in redirects
    client = who.client
    if rule.isolated:
        client = TestClient(app, follow_redirects=False)
        csrf = portal_client(client, None)
    else:
        csrf = who.csrf
    if method not in ("GET", "HEAD"):
        headers["x-csrf-token"] = csrf
    if template == "/admin/deid":
        kwargs["params"] = {"facility": w.ids["A"].facility}
    assert client is not None
    response = client.request(method, path, headers=headers, **kwargs)
    return path, kwargs, response


def test_route_matrix(matrix: tuple[World, FastAPI, list[Identity]]) -> None:
    world, app, people = matrix
    secrets = [s for s in world.a_identifiers() if s]
    asked = ""  # what non-A identities sent: their own audit events may repeat it
    problems: list[str] = []
    for (method, template), rule in TABLE.items():
        for who in people:
            path, kwargs, resp = _call(world, app, who, method, template, rule)
            want = expected(rule, who)
            status = resp.status_code
            if want is None:
                ok = status in rule.ok if rule.ok else status < 400
                good = ok or (rule.lenient and status in LENIENT)
            else:
                good = status in want
            if not good or status >= 500:
                problems.append(f"{method} {path} as {who.name}: {status} (want {want or 'ok'})")
            if who.facility != "A" and who.role != OPERATOR:
                asked += path + repr(kwargs)
                leaked = [s for s in secrets if s in resp.text and s not in asked]
                if leaked:
                    problems.append(f"{method} {path} as {who.name} shows A's {leaked}")
    assert not problems, "\n".join(problems)
