"""Administration API: facilities, users, tokens, AE titles (admin role unless stated)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from pair.accounts import service
from pair.accounts.models import Role
from pair.audit.service import Actor
from pair.core.errors import Forbidden
from pair.web.deps import SessionDep, current_actor, require_roles

router = APIRouter(prefix="/api", tags=["administration"])
admin_only = require_roles(Role.ADMIN)


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
def me(actor: Actor = Depends(current_actor)) -> Me:
    return Me(
        id=actor.user_id, name=actor.user_name, role=actor.role, facility_id=actor.facility_id
    )


@router.get("/facilities", response_model=list[FacilityOut])
def list_facilities(
    session: Session = SessionDep, _: Actor = Depends(admin_only)
) -> list[FacilityOut]:
    return [
        FacilityOut(id=f.id, name=f.name, code=f.code) for f in service.list_facilities(session)
    ]


@router.post("/facilities", response_model=FacilityOut, status_code=201)
def create_facility(
    body: FacilityIn,
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> FacilityOut:
    f = service.create_facility(session, body.name, body.code, actor)
    return FacilityOut(id=f.id, name=f.name, code=f.code)


@router.get("/users", response_model=list[UserOut])
def list_users(session: Session = SessionDep, _: Actor = Depends(admin_only)) -> list[UserOut]:
    return [
        UserOut(id=u.id, name=u.name, role=u.role, facility_id=u.facility_id, active=u.active)
        for u in service.list_users(session)
    ]


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(
    body: UserIn,
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> UserOut:
    facility = service.get_facility(session, body.facility)
    u = service.create_user(session, facility, body.name, body.role, body.password, actor)
    return UserOut(id=u.id, name=u.name, role=u.role, facility_id=u.facility_id, active=u.active)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(
    session: Session = SessionDep, actor: Actor = Depends(current_actor)
) -> list[TokenOut]:
    user_id = None if actor.role == Role.ADMIN else actor.user_id
    return [
        TokenOut(
            id=t.id,
            user_id=t.user_id,
            label=t.label,
            created_at=t.created_at,
            revoked_at=t.revoked_at,
        )
        for t in service.list_tokens(session, user_id)
    ]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(
    body: TokenIn,
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> TokenCreated:
    user = service.get_user(session, body.user)
    if actor.role != Role.ADMIN and user.id != actor.user_id:
        raise Forbidden("Only admins can create tokens for other users.")
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
    actor: Actor = Depends(current_actor),
) -> None:
    service.revoke_token(session, token_id, actor)


@router.get("/ae-titles", response_model=list[AeOut])
def list_ae_titles(session: Session = SessionDep, _: Actor = Depends(admin_only)) -> list[AeOut]:
    return [
        AeOut(ae_title=a.ae_title, facility_id=a.facility_id, description=a.description)
        for a in service.list_ae_titles(session)
    ]


@router.post("/ae-titles", response_model=AeOut, status_code=201)
def add_ae_title(
    body: AeIn,
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> AeOut:
    facility = service.get_facility(session, body.facility)
    a = service.add_ae_title(session, facility, body.ae_title, body.description, actor)
    return AeOut(ae_title=a.ae_title, facility_id=a.facility_id, description=a.description)


@router.delete("/ae-titles/{ae_title}", status_code=204)
def remove_ae_title(
    ae_title: str,
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> None:
    service.remove_ae_title(session, ae_title, actor)
