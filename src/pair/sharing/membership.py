"""Hub membership: a facility registers (pending), a hub operator approves it (facility, its
site-node account and a bearer credential shown once), revokes or reissues the credential.

Everything is audited. The facility created on approval gets the hub-member de-identification
profile (``data/hub-member-profile.yaml``): the site de-identified already; the hub keeps the
site's UIDs and shifted dates so reports and clinical data pushed by study UID find their study.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.accounts import service as accounts
from pair.accounts.models import ApiToken, Facility, Role
from pair.accounts.policy import Action, authorize
from pair.audit.service import Actor, record
from pair.core.errors import Conflict, Invalid, NotFound, TooManyRequests
from pair.sharing.models import HubMember, MemberStatus

_CODE_RE = re.compile(r"[A-Z0-9]{1,12}")
_CONTACT_RE = re.compile(r"[^\x00-\x1f\x7f]{0,256}")
MAX_PENDING = 200  # an open endpoint: bounded, so it cannot be used to fill the database


@dataclass(frozen=True)
class Credential:
    member: HubMember
    user_name: str
    token: str  # the plain bearer token: shown once, never stored


def _profile_text() -> str:
    return (resources.files("pair.sharing") / "data" / "hub-member-profile.yaml").read_text()


def register(
    session: Session, name: str, code: str, contact: str = "", site_url: str = ""
) -> HubMember:
    """A facility asks to join (no account needed at the hub yet): a pending registration."""
    name, code, contact, site_url = name.strip(), code.strip().upper(), contact.strip(), site_url
    if not name or len(name) > 128 or any(ord(c) < 32 for c in name):
        raise Invalid("Facility name must be 1-128 printable characters.")
    if not _CODE_RE.fullmatch(code):
        raise Invalid("Facility code must be 1-12 letters or digits.")
    if not _CONTACT_RE.fullmatch(contact) or not _CONTACT_RE.fullmatch(site_url):
        raise Invalid("Contact and site URL must be at most 256 printable characters.")
    pending = session.scalar(
        select(func.count()).select_from(HubMember).where(HubMember.status == MemberStatus.PENDING)
    )
    if (pending or 0) >= MAX_PENDING:
        raise TooManyRequests(
            "Too many pending registrations; ask the hub operator.", retry_after=3600
        )
    for column, value in ((HubMember.name, name), (HubMember.code, code)):
        if session.scalar(select(HubMember.id).where(column == value)) is not None:
            raise Conflict(f"A facility named or coded {value!r} has already registered.")
    if session.scalar(select(Facility.id).where((Facility.name == name) | (Facility.code == code))):
        raise Conflict(f"A facility named or coded {code!r} already exists at the hub.")
    member = HubMember(name=name, code=code, contact=contact, site_url=site_url)
    session.add(member)
    session.flush()
    record(
        session,
        Actor(None, "registration", None, "", "api"),
        "hub.member.register",
        "hub_member",
        str(member.id),
        detail={"name": name, "code": code},
    )
    return member


def list_members(session: Session, actor: Actor) -> list[HubMember]:
    authorize(actor, Action.HUB_MEMBER_MANAGE, None)
    return list(session.scalars(select(HubMember).order_by(HubMember.id)))


def get_member(session: Session, actor: Actor, ref: str | int) -> HubMember:
    authorize(actor, Action.HUB_MEMBER_MANAGE, None)
    member = None
    if isinstance(ref, int) or str(ref).isdigit():
        member = session.get(HubMember, int(ref))
    if member is None:
        member = session.scalar(select(HubMember).where(HubMember.code == str(ref).upper()))
    if member is None:
        raise NotFound(f"No registration {ref!r}.")
    return member


def _decided(member: HubMember, actor: Actor, status: str) -> None:
    member.status = status
    member.decided_by = actor.user_name
    member.decided_at = datetime.now(UTC)


def _issue(session: Session, member: HubMember) -> str:
    user = session.get(accounts.User, member.user_id) if member.user_id else None
    assert user is not None
    token, plain = accounts.create_token(session, user, label="hub credential")
    member.token_id = token.id
    return plain


def approve(session: Session, actor: Actor, ref: str | int) -> Credential:
    """Create the member's facility and site-node account and issue its credential."""
    member = get_member(session, actor, ref)
    if member.status != MemberStatus.PENDING:
        raise Conflict(f"Registration {member.code} is {member.status}, not pending.")
    system = Actor.system()
    facility = accounts.create_facility(session, member.name, member.code, actor=system)
    facility.deid_profile = _profile_text()
    user_name = f"site-node-{facility.code.lower()}"
    user = accounts.create_user(session, facility, user_name, Role.SITE_NODE.value, actor=system)
    member.facility_id, member.user_id = facility.id, user.id
    plain = _issue(session, member)
    _decided(member, actor, MemberStatus.APPROVED)
    _audit(session, actor, "hub.member.approve", member)
    return Credential(member, user_name, plain)


def reject(session: Session, actor: Actor, ref: str | int) -> HubMember:
    member = get_member(session, actor, ref)
    if member.status != MemberStatus.PENDING:
        raise Conflict(f"Registration {member.code} is {member.status}, not pending.")
    _decided(member, actor, MemberStatus.REJECTED)
    _audit(session, actor, "hub.member.reject", member)
    return member


def _revoke_all(session: Session, member: HubMember) -> None:
    """Every token of the site-node account, not only the issued one: the account may have
    minted tokens for itself (as any user may), and none of them may outlive a revocation."""
    if member.user_id is None:
        return
    now = datetime.now(UTC)
    for token in session.scalars(
        select(ApiToken).where(ApiToken.user_id == member.user_id, ApiToken.revoked_at.is_(None))
    ):
        token.revoked_at = now


def revoke(session: Session, actor: Actor, ref: str | int) -> HubMember:
    """The member's credential stops working at once (401); its data stay at the hub."""
    member = get_member(session, actor, ref)
    if member.status not in (MemberStatus.APPROVED, MemberStatus.REVOKED):
        raise Conflict(f"Registration {member.code} is {member.status}: nothing to revoke.")
    _revoke_all(session, member)
    user = session.get(accounts.User, member.user_id) if member.user_id else None
    if user is not None:
        user.active = False
    _decided(member, actor, MemberStatus.REVOKED)
    _audit(session, actor, "hub.member.revoke", member)
    return member


def reissue(session: Session, actor: Actor, ref: str | int) -> Credential:
    """A new credential (the old one is revoked): after a leak, or to re-admit a member."""
    member = get_member(session, actor, ref)
    if member.status not in (MemberStatus.APPROVED, MemberStatus.REVOKED):
        raise Conflict(f"Registration {member.code} is {member.status}: approve it first.")
    _revoke_all(session, member)
    user = session.get(accounts.User, member.user_id) if member.user_id else None
    if user is not None:
        user.active = True
    plain = _issue(session, member)
    _decided(member, actor, MemberStatus.APPROVED)
    _audit(session, actor, "hub.member.reissue", member)
    assert user is not None
    return Credential(member, user.name, plain)


def _audit(session: Session, actor: Actor, action: str, member: HubMember) -> None:
    record(
        session,
        actor,
        action,
        "hub_member",
        str(member.id),
        detail={"code": member.code, "status": member.status},
        facility_id=member.facility_id,
    )


def member_json(member: HubMember) -> dict[str, object]:
    return {
        "id": member.id,
        "name": member.name,
        "code": member.code,
        "contact": member.contact,
        "site_url": member.site_url,
        "status": member.status,
        "facility_id": member.facility_id,
        "decided_by": member.decided_by,
        "decided_at": member.decided_at.isoformat() if member.decided_at else None,
        "registered_at": member.created_at.isoformat() if member.created_at else None,
    }
