"""Plain functions for facilities, users, tokens and AE titles (used by API, CLI and tests)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import AeTitle, ApiToken, Facility, Role, User
from pair.accounts.passwords import check_password
from pair.accounts.policy import Action, authorize, facility_of, grantable, is_operator, scope
from pair.audit.service import Actor, record
from pair.core import security
from pair.core.errors import Conflict, Invalid, NotFound, Unauthorized

_USER_RE = re.compile(r"[A-Za-z0-9._@-]{1,128}")
_AE_RE = re.compile(r"^[\x21-\x5b\x5d-\x7e](?:[\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")


def _facility_code(name: str) -> str:
    code = re.sub(r"[^A-Z0-9]", "", name.upper())[:12]
    return code or "SITE"


def create_facility(
    session: Session, name: str, code: str | None = None, actor: Actor | None = None
) -> Facility:
    actor = actor or Actor.system()
    authorize(actor, Action.FACILITY_CREATE, None)
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
    record(session, actor, "facility.create", "facility", str(facility.id), facility_id=facility.id)
    return facility


def get_facility(
    session: Session,
    name_or_id: str | int,
    actor: Actor | None = None,
    action: Action | None = None,
) -> Facility:
    """Look a facility up by id, name or code; with ``actor``, one it may do ``action`` in
    (another facility is "no facility named ...", as a missing one is)."""
    found = None
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        found = session.get(Facility, int(name_or_id))
    if found is None:
        found = session.scalar(select(Facility).where(Facility.name == str(name_or_id)))
    if found is None:
        found = session.scalar(select(Facility).where(Facility.code == str(name_or_id)))
    missing = f"No facility named {name_or_id!r}."
    if found is None:
        raise NotFound(missing)
    if actor is not None and action is not None:
        authorize(actor, action, found.id, missing=missing)
    return found


def list_facilities(session: Session, actor: Actor | None = None) -> list[Facility]:
    stmt = select(Facility).order_by(Facility.name)
    facility_id = scope(actor, Action.FACILITY_LIST) if actor is not None else None
    if facility_id is not None:
        stmt = stmt.where(Facility.id == facility_id)
    return list(session.scalars(stmt))


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role if r is not Role.NODE_OPERATOR)
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
    allow_operator: bool = False,
) -> User:
    """``allow_operator``: only the command line may create node-operator accounts."""
    actor = actor or Actor.system()
    authorize(actor, Action.USER_CREATE, facility.id, missing="No such facility.")
    name = name.strip()
    if not _USER_RE.fullmatch(name):
        raise Invalid("User name must be 1-128 characters of letters, digits, '.', '_', '@', '-'.")
    parsed = parse_role(role)
    grantable(parsed.value, allow_operator=allow_operator)
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
        actor,
        "user.create",
        "user",
        str(user.id),
        detail={"role": parsed.value, "facility_id": facility.id},
        facility_id=facility_of(user),
    )
    return user


def get_user(
    session: Session, name: str, actor: Actor | None = None, action: Action | None = None
) -> User:
    """Look a user up; with ``actor``, one it may do ``action`` to (another facility's user is
    "no user named ...", as a missing one is)."""
    user = session.scalar(select(User).where(User.name == name))
    missing = f"No user named {name!r}."
    if user is None:
        raise NotFound(missing)
    if actor is not None and action is not None:
        authorize(actor, action, facility_of(user), owner_id=user.id, missing=missing)
    return user


def get_user_by_id(session: Session, user_id: int, actor: Actor, action: Action) -> User:
    user = session.get(User, user_id)
    missing = f"No user with id {user_id}."
    if user is None:
        raise NotFound(missing)
    authorize(actor, action, facility_of(user), owner_id=user.id, missing=missing)
    return user


def list_users(
    session: Session, facility_id: int | None = None, actor: Actor | None = None
) -> list[User]:
    stmt = select(User).order_by(User.name)
    if actor is not None:
        facility_id = scope(actor, Action.USER_LIST)
        if not is_operator(actor):  # operator accounts belong to the node, not the facility
            stmt = stmt.where(User.role != Role.NODE_OPERATOR.value)
    if facility_id is not None:
        stmt = stmt.where(User.facility_id == facility_id)
    return list(session.scalars(stmt))


def set_password(
    session: Session,
    user: User,
    password: str,
    actor: Actor,
    *,
    min_length: int | None = None,
) -> None:
    """Every credential change is decided by the policy: one's own, a facility admin for its
    facility's users, the operator for any account (audited in that facility); then the
    password policy (``pair.accounts.passwords``; ``min_length`` None: settings)."""
    authorize(actor, Action.USER_SET_PASSWORD, facility_of(user), owner_id=user.id)
    check_password(password, user.name, min_length)
    user.password_hash = security.hash_password(password)
    if actor.user_id != user.id:
        record(session, actor, "user.password", "user", str(user.id), facility_id=facility_of(user))


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
    actor = actor or Actor.system()
    authorize(
        actor,
        Action.TOKEN_CREATE,
        facility_of(user),
        owner_id=user.id,
        missing=f"No user named {user.name!r}.",
    )
    plain = security.new_token()
    token = ApiToken(user_id=user.id, token_hash=security.hash_token(plain), label=label[:128])
    session.add(token)
    session.flush()
    record(
        session,
        actor,
        "token.create",
        "api_token",
        str(token.id),
        detail={"user_id": user.id},
        facility_id=facility_of(user),
    )
    return token, plain


def revoke_token(session: Session, token_id: int, actor: Actor) -> None:
    token = session.get(ApiToken, token_id)
    missing = f"No token with id {token_id}."
    if token is None:
        raise NotFound(missing)
    owner = token.user
    authorize(actor, Action.TOKEN_REVOKE, facility_of(owner), owner_id=owner.id, missing=missing)
    token.revoked_at = datetime.now(UTC)
    record(
        session, actor, "token.revoke", "api_token", str(token_id), facility_id=facility_of(owner)
    )


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


def list_tokens(
    session: Session, user_id: int | None = None, actor: Actor | None = None
) -> list[ApiToken]:
    """All tokens (command line); with ``actor``: a facility's for its admin, every one for the
    operator, one's own for everyone else."""
    stmt = select(ApiToken).join(User, ApiToken.user_id == User.id).order_by(ApiToken.id)
    if actor is not None:
        if actor.role in (Role.ADMIN.value, Role.NODE_OPERATOR.value):
            facility_id = scope(actor, Action.TOKEN_LIST)
            if facility_id is not None:
                stmt = stmt.where(
                    User.facility_id == facility_id, User.role != Role.NODE_OPERATOR.value
                )
        else:
            user_id = actor.user_id or 0
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
    actor = actor or Actor.system()
    authorize(actor, Action.AE_ADD, facility.id, missing="No such facility.")
    validate_ae_title(ae_title)
    if session.scalar(select(AeTitle).where(AeTitle.ae_title == ae_title)):
        raise Conflict(f"AE title {ae_title!r} is already registered.")
    ae = AeTitle(facility_id=facility.id, ae_title=ae_title, description=description)
    session.add(ae)
    session.flush()
    record(
        session,
        actor,
        "ae.add",
        "ae_title",
        ae_title,
        detail={"facility_id": facility.id},
        facility_id=facility.id,
    )
    return ae


def remove_ae_title(session: Session, ae_title: str, actor: Actor) -> None:
    ae = session.scalar(select(AeTitle).where(AeTitle.ae_title == ae_title))
    missing = f"AE title {ae_title!r} is not registered."
    if ae is None:
        raise NotFound(missing)
    authorize(actor, Action.AE_REMOVE, ae.facility_id, missing=missing)
    session.delete(ae)
    record(session, actor, "ae.remove", "ae_title", ae_title, facility_id=ae.facility_id)


def find_ae_title(session: Session, ae_title: str) -> AeTitle | None:
    return session.scalar(select(AeTitle).where(AeTitle.ae_title == ae_title))


def list_ae_titles(
    session: Session, facility_id: int | None = None, actor: Actor | None = None
) -> list[AeTitle]:
    if actor is not None:
        facility_id = scope(actor, Action.AE_LIST)
    stmt = select(AeTitle).order_by(AeTitle.ae_title)
    if facility_id is not None:
        stmt = stmt.where(AeTitle.facility_id == facility_id)
    return list(session.scalars(stmt))


def actor_for(user: User, source: str = "") -> Actor:
    """The operator acts for the node, not for the facility its account row sits in."""
    return Actor(user.id, user.name, facility_of(user), user.role, source)
