from __future__ import annotations

import pytest

from pair.accounts import service
from pair.core.errors import Conflict, Invalid, Unauthorized
from pair.core.node import Node


def test_users_tokens_and_ae_titles(node: Node) -> None:
    with node.db.session() as s:
        f = service.create_facility(s, "General Hospital")
        u = service.create_user(s, f, "rad1", "radiologist", "Copper-Violet-Tram9")
        _, plain = service.create_token(s, u, "cli")
        service.add_ae_title(s, f, "CT_SCANNER1")
    with node.db.session() as s:
        assert service.authenticate_token(s, plain).name == "rad1"
        assert service.authenticate_password(s, "rad1", "Copper-Violet-Tram9").role == "radiologist"
        with pytest.raises(Unauthorized):
            service.authenticate_password(s, "rad1", "wrong password")
        with pytest.raises(Unauthorized):
            service.authenticate_token(s, plain + "x")
        with pytest.raises(Conflict):
            service.add_ae_title(s, f, "CT_SCANNER1")
        with pytest.raises(Invalid):
            service.add_ae_title(s, f, "THIS_AE_TITLE_IS_TOO_LONG")
        with pytest.raises(Invalid, match="allowed roles"):
            service.create_user(s, f, "x", "wizard")
        # tokens are stored hashed
        assert all(plain not in t.token_hash for t in service.list_tokens(s))
