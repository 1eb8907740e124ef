"""``pair.accounts.policy`` on its own: the decisions every route, page and service relies on."""

from __future__ import annotations

import pytest

from pair.accounts.policy import Action, authorize, check_role, grantable, may, scope
from pair.audit.service import Actor
from pair.core.errors import Forbidden, NotFound

A, B = 1, 2
admin_a = Actor(10, "admin-a", A, "admin")
rad_a = Actor(11, "rad-a", A, "radiologist")
admin_b = Actor(20, "admin-b", B, "admin")
operator = Actor(30, "op", None, "node-operator")
system = Actor.system()


def test_facility_admin_is_confined_to_its_facility() -> None:
    authorize(admin_a, Action.USER_CREATE, A)
    with pytest.raises(NotFound, match="No user named 'x'"):
        authorize(admin_b, Action.USER_CREATE, A, missing="No user named 'x'.")
    with pytest.raises(NotFound):  # node-level objects (operator accounts) are hidden too
        authorize(admin_a, Action.TOKEN_CREATE, None, owner_id=30)
    with pytest.raises(Forbidden):  # facilities are node-wide: the operator's
        check_role(admin_a, Action.FACILITY_CREATE)
    assert scope(admin_a, Action.AUDIT_READ) == A
    assert not may(admin_b, Action.DEID_MAPPING_EXPORT, A)


def test_other_roles_only_manage_their_own_credentials() -> None:
    authorize(rad_a, Action.TOKEN_CREATE, A, owner_id=rad_a.user_id)
    authorize(rad_a, Action.USER_SET_PASSWORD, A, owner_id=rad_a.user_id)
    with pytest.raises(Forbidden, match="Only admins"):
        authorize(rad_a, Action.TOKEN_REVOKE, A, owner_id=admin_a.user_id)
    with pytest.raises(Forbidden):
        scope(rad_a, Action.USER_LIST)
    with pytest.raises(NotFound):  # another facility first: its objects do not exist for you
        authorize(rad_a, Action.TOKEN_REVOKE, B, owner_id=admin_b.user_id)


def test_operator_is_node_wide_for_administration_only() -> None:
    for action in (Action.USER_CREATE, Action.AE_REMOVE, Action.DEID_PROFILE_WRITE):
        authorize(operator, action, A)
        authorize(operator, action, B)
    assert scope(operator, Action.AUDIT_READ) is None
    for action in (Action.DEID_MAPPING_EXPORT, Action.QUARANTINE_REVIEW):
        assert not may(operator, action, A)
    with pytest.raises(Forbidden, match="for other users"):
        authorize(operator, Action.TOKEN_CREATE, A, owner_id=admin_a.user_id)
    authorize(operator, Action.TOKEN_CREATE, None, owner_id=operator.user_id)
    authorize(operator, Action.FACILITY_CREATE, None)


def test_node_operator_role_is_granted_from_the_command_line_only() -> None:
    with pytest.raises(Forbidden, match="command line"):
        grantable("node-operator")
    grantable("node-operator", allow_operator=True)
    grantable("admin")
    authorize(system, Action.DEID_MAPPING_EXPORT, A)  # the CLI acts as the system
