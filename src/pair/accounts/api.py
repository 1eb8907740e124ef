"""Administration API: facilities, users, tokens, AE titles. Who may do what is decided by
``pair.accounts.policy`` (a facility admin within its facility, the node operator node-wide)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from pair.accounts import service
from pair.accounts.policy import Action
from pair.audit.service import Actor
from pair.web.deps import SessionDep, authenticated_actor, own_facility

router = APIRouter(prefix="/api", tags=["administration"])


class FacilityIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    code: str | None = None


class FacilityOut(BaseModel):
    id: int
    name: str
    code: str


class UserIn(BaseModel):
    name: str
    role: str
    facility: str
    password: str | None = None


class UserOut(BaseModel):
    id: int
    name: str
    role: str
    facility_id: int
    active: bool


class TokenIn(BaseModel):
    user: str
    label: str = ""


class TokenOut(BaseModel):
    id: int
    user_id: int
    label: str
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str


class AeIn(BaseModel):
    ae_title: str
    facility: str
    description: str = ""


class AeOut(BaseModel):
    ae_title: str
    facility_id: int
    description: str


class Me(BaseModel):
    id: int | None
    name: str
    role: str
    facility_id: int | None


@router.get("/me", response_model=Me)
def me(actor: Actor = Depends(authenticated_actor)) -> Me:
    return Me(
        id=actor.user_id, name=actor.user_name, role=actor.role, facility_id=actor.facility_id
    )


@router.get("/facilities", response_model=list[FacilityOut])
def list_facilities(
    session: Session = SessionDep, actor: Actor = Depends(own_facility(Action.FACILITY_LIST))
) -> list[FacilityOut]:
    return [
        FacilityOut(id=f.id, name=f.name, code=f.code)
        for f in service.list_facilities(session, actor)
    ]


@router.post("/facilities", response_model=FacilityOut, status_code=201)
def create_facility(
    body: FacilityIn,
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.FACILITY_CREATE)),
) -> FacilityOut:
    f = service.create_facility(session, body.name, body.code, actor)
    return FacilityOut(id=f.id, name=f.name, code=f.code)


@router.get("/users", response_model=list[UserOut])
def list_users(
    session: Session = SessionDep, actor: Actor = Depends(own_facility(Action.USER_LIST))
) -> list[UserOut]:
    return [
        UserOut(id=u.id, name=u.name, role=u.role, facility_id=u.facility_id, active=u.active)
        for u in service.list_users(session, actor=actor)
    ]


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(
    body: UserIn,
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.USER_CREATE)),
) -> UserOut:
    facility = service.get_facility(session, body.facility, actor, Action.USER_CREATE)
    u = service.create_user(session, facility, body.name, body.role, body.password, actor)
    return UserOut(id=u.id, name=u.name, role=u.role, facility_id=u.facility_id, active=u.active)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(
    session: Session = SessionDep, actor: Actor = Depends(authenticated_actor)
) -> list[TokenOut]:
    """Every token of the admin's facility (node-wide for the operator); one's own otherwise."""
    return [
        TokenOut(
            id=t.id,
            user_id=t.user_id,
            label=t.label,
            created_at=t.created_at,
            revoked_at=t.revoked_at,
        )
        for t in service.list_tokens(session, actor=actor)
    ]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(
    body: TokenIn,
    session: Session = SessionDep,
    actor: Actor = Depends(authenticated_actor),
) -> TokenCreated:
    user = service.get_user(session, body.user, actor, Action.TOKEN_CREATE)
    t, plain = service.create_token(session, user, body.label, actor)
    return TokenCreated(
        id=t.id,
        user_id=t.user_id,
        label=t.label,
        created_at=t.created_at,
        revoked_at=None,
        token=plain,
    )


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(
    token_id: int,
    session: Session = SessionDep,
    actor: Actor = Depends(authenticated_actor),
) -> None:
    service.revoke_token(session, token_id, actor)


@router.get("/ae-titles", response_model=list[AeOut])
def list_ae_titles(
    session: Session = SessionDep, actor: Actor = Depends(own_facility(Action.AE_LIST))
) -> list[AeOut]:
    return [
        AeOut(ae_title=a.ae_title, facility_id=a.facility_id, description=a.description)
        for a in service.list_ae_titles(session, actor=actor)
    ]


@router.post("/ae-titles", response_model=AeOut, status_code=201)
def add_ae_title(
    body: AeIn,
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.AE_ADD)),
) -> AeOut:
    facility = service.get_facility(session, body.facility, actor, Action.AE_ADD)
    a = service.add_ae_title(session, facility, body.ae_title, body.description, actor)
    return AeOut(ae_title=a.ae_title, facility_id=a.facility_id, description=a.description)


@router.delete("/ae-titles/{ae_title}", status_code=204)
def remove_ae_title(
    ae_title: str,
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.AE_REMOVE)),
) -> None:
    service.remove_ae_title(session, ae_title, actor)
