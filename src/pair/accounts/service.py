"""Plain functions for facilities, users, tokens and AE titles (used by API, CLI and tests)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import AeTitle, ApiToken, Facility, Role, User
from pair.accounts.passwords import check_password
from pair.audit.service import Actor, record
from pair.core import security
from pair.core.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized

_USER_RE = re.compile(r"[A-Za-z0-9._@-]{1,128}")
_AE_RE = re.compile(r"^[\x21-\x5b\x5d-\x7e](?:[\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")


def _facility_code(name: str) -> str:
    code = re.sub(r"[^A-Z0-9]", "", name.upper())[:12]
    return code or "SITE"


def create_facility(
    session: Session, name: str, code: str | None = None, actor: Actor | None = None
) -> Facility:
    name = name.strip()
    if not name or len(name) > 128:
        raise Invalid("Facility name must be 1-128 characters.")
    if session.scalar(select(Facility).where(Facility.name == name)):
        raise Conflict(f"Facility {name!r} already exists.")
    code = (code or _facility_code(name)).upper()
    if not re.fullmatch(r"[A-Z0-9]{1,12}", code):
        raise Invalid("Facility code must be 1-12 letters or digits (it prefixes pseudonyms).")
    base, n = code, 2
    while session.scalar(select(Facility).where(Facility.code == code)):
        code = f"{base[:10]}{n}"
        n += 1
    facility = Facility(name=name, code=code)
    session.add(facility)
    session.flush()
    record(session, actor or Actor.system(), "facility.create", "facility", str(facility.id))
    return facility


def get_facility(session: Session, name_or_id: str | int) -> Facility:
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        found = session.get(Facility, int(name_or_id))
        if found:
            return found
    found = session.scalar(select(Facility).where(Facility.name == str(name_or_id)))
    if found is None:
        found = session.scalar(select(Facility).where(Facility.code == str(name_or_id)))
    if found is None:
        raise NotFound(f"No facility named {name_or_id!r}.")
    return found


def list_facilities(session: Session) -> list[Facility]:
    return list(session.scalars(select(Facility).order_by(Facility.name)))


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise Invalid(f"Unknown role {role!r}; allowed roles: {allowed}.") from None


def create_user(
    session: Session,
    facility: Facility,
    name: str,
    role: str,
    password: str | None = None,
    actor: Actor | None = None,
    *,
    min_length: int | None = None,
) -> User:
    name = name.strip()
    if not _USER_RE.fullmatch(name):
        raise Invalid("User name must be 1-128 characters of letters, digits, '.', '_', '@', '-'.")
    parsed = parse_role(role)
    if session.scalar(select(User).where(User.name == name)):
        raise Conflict(f"User {name!r} already exists.")
    if password is not None:
        check_password(password, name, min_length)
    user = User(
        facility_id=facility.id,
        name=name,
        role=parsed.value,
        password_hash=security.hash_password(password) if password else None,
    )
    session.add(user)
    session.flush()
    record(
        session,
        actor or Actor.system(),
        "user.create",
        "user",
        str(user.id),
        detail={"role": parsed.value, "facility_id": facility.id},
    )
    return user


def get_user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"No user named {name!r}.")
    return user


def list_users(session: Session, facility_id: int | None = None) -> list[User]:
    stmt = select(User).order_by(User.name)
    if facility_id is not None:
        stmt = stmt.where(User.facility_id == facility_id)
    return list(session.scalars(stmt))


def set_password(
    session: Session, user: User, password: str, *, min_length: int | None = None
) -> None:
    """Set after the policy check (``pair.accounts.passwords``); ``min_length`` None: settings."""
    check_password(password, user.name, min_length)
    user.password_hash = security.hash_password(password)


def authenticate_password(session: Session, name: str, password: str) -> User:
    # a name that no account can have (NUL, spaces, too long) is not looked up at all
    valid = _USER_RE.fullmatch(name) is not None and "\x00" not in password
    user = session.scalar(select(User).where(User.name == name)) if valid else None
    if user is None or not user.active or not user.password_hash:
        security.hash_password(password)  # same work either way: no user enumeration by timing
        raise Unauthorized("Unknown user or wrong password.")
    if not security.verify_password(user.password_hash, password):
        raise Unauthorized("Unknown user or wrong password.")
    return user


def create_token(
    session: Session, user: User, label: str = "", actor: Actor | None = None
) -> tuple[ApiToken, str]:
    """Returns the stored row and the plain token, which is shown once and never stored."""
    plain = security.new_token()
    token = ApiToken(user_id=user.id, token_hash=security.hash_token(plain), label=label[:128])
    session.add(token)
    session.flush()
    record(
        session,
        actor or Actor.system(),
        "token.create",
        "api_token",
        str(token.id),
        detail={"user_id": user.id},
    )
    return token, plain


def revoke_token(session: Session, token_id: int, actor: Actor) -> None:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"No token with id {token_id}.")
    if actor.role != Role.ADMIN and token.user_id != actor.user_id:
        raise Forbidden("Only admins can revoke other users' tokens.")
    token.revoked_at = datetime.now(UTC)
    record(session, actor, "token.revoke", "api_token", str(token_id))


def authenticate_token(session: Session, plain: str) -> User:
    # One round trip: every API request authenticates, so the user comes joined with its token.
    user = session.scalar(
        select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(
            ApiToken.token_hash == security.hash_token(plain),
            ApiToken.revoked_at.is_(None),
            User.active.is_(True),
        )
    )
    if user is None:
        raise Unauthorized("Invalid or revoked API token.")
    return user


def list_tokens(session: Session, user_id: int | None = None) -> list[ApiToken]:
    stmt = select(ApiToken).order_by(ApiToken.id)
    if user_id is not None:
        stmt = stmt.where(ApiToken.user_id == user_id)
    return list(session.scalars(stmt))


def validate_ae_title(ae_title: str) -> str:
    if not _AE_RE.fullmatch(ae_title):
        raise Invalid(
            f"Invalid AE title {ae_title!r}: 1-16 printable ASCII characters, no backslash, "
            "no leading or trailing spaces."
        )
    return ae_title


def add_ae_title(
    session: Session,
    facility: Facility,
    ae_title: str,
    description: str = "",
    actor: Actor | None = None,
) -> AeTitle:
    validate_ae_title(ae_title)
    if session.scalar(select(AeTitle).where(AeTitle.ae_title == ae_title)):
        raise Conflict(f"AE title {ae_title!r} is already registered.")
    ae = AeTitle(facility_id=facility.id, ae_title=ae_title, description=description)
    session.add(ae)
    session.flush()
    record(
        session,
        actor or Actor.system(),
        "ae.add",
        "ae_title",
        ae_title,
        detail={"facility_id": facility.id},
    )
    return ae


def remove_ae_title(session: Session, ae_title: str, actor: Actor) -> None:
    ae = session.scalar(select(AeTitle).where(AeTitle.ae_title == ae_title))
    if ae is None:
        raise NotFound(f"AE title {ae_title!r} is not registered.")
    session.delete(ae)
    record(session, actor, "ae.remove", "ae_title", ae_title)


def find_ae_title(session: Session, ae_title: str) -> AeTitle | None:
    return session.scalar(select(AeTitle).where(AeTitle.ae_title == ae_title))


def list_ae_titles(session: Session, facility_id: int | None = None) -> list[AeTitle]:
    stmt = select(AeTitle).order_by(AeTitle.ae_title)
    if facility_id is not None:
        stmt = stmt.where(AeTitle.facility_id == facility_id)
    return list(session.scalars(stmt))


def actor_for(user: User, source: str = "") -> Actor:
    return Actor(user.id, user.name, user.facility_id, user.role, source)
