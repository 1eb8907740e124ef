"""The administration commands exactly as issue 2 names them, on SQLite and PostgreSQL (the
database chosen by ``PAIR_DATABASE_URL``), and their errors: a message and an exit code, never
a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from pair.accounts import service
from pair.accounts.models import ApiToken
from pair.cli.main import app
from pair.core.config import get_settings
from pair.core.node import open_node

runner = CliRunner()


def pair(*args: str, stdin: str | None = None) -> Result:
    return runner.invoke(app, list(args), input=stdin)


def clean_failure(result: Result, code: int, *fragments: str) -> None:
    """Exited with ``code`` through typer.Exit (no exception escaped), message on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in " ".join(result.stderr.split()), result.stderr


def test_admin_commands(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAIR_DATABASE_URL", database_url)
    d = str(tmp_path / "node")

    r = pair("facility", "create", "--data-dir", d, "General Hospital")
    assert r.exit_code == 0, r.output
    clean_failure(pair("facility", "create", "--data-dir", d, "General Hospital"), 5, "exists")

    def user_create(facility: str, name: str, role: str, *extra: str, **kw: str) -> Result:
        args = ["--facility", facility, "--name", name, "--role", role, *extra]
        return pair("user", "create", "--data-dir", d, *args, **kw)

    gh = "General Hospital"
    r = user_create(gh, "alice", "radiologist", "--password-stdin", stdin="correct horse battery\n")
    assert r.exit_code == 0, r.output
    r = user_create(gh, "bob", "researcher")
    assert r.exit_code == 0, r.output
    clean_failure(
        user_create(gh, "carol", "wizard"),
        2,
        "allowed roles: admin, data-manager, radiologist, evaluator, researcher, panel",
    )
    clean_failure(user_create("Nowhere", "carol", "admin"), 4, "No facility named 'Nowhere'")
    clean_failure(
        user_create(gh, "carol", "admin", "--password-stdin"), 1, "password on standard input"
    )
    clean_failure(
        user_create(gh, "carol", "admin", "--password-stdin", stdin="short\n"),
        2,
        "at least 12 characters",
    )
    missing = pair("user", "create", "--data-dir", d, "--facility", "General Hospital")
    assert missing.exit_code == 2 and "Missing option" in missing.output

    r = pair("token", "create", "--data-dir", d, "--user", "alice")
    assert r.exit_code == 0, r.output
    token = r.stdout.removesuffix("\n")
    assert r.stdout == token + "\n" and " " not in token and token.startswith("pair_")
    clean_failure(pair("token", "create", "--data-dir", d, "--user", "mallory"), 4, "mallory")

    def ae_add(title: str) -> Result:
        return pair("ae", "add", "--data-dir", d, "--facility", gh, "--ae-title", title)

    assert ae_add("CT_1").exit_code == 0
    clean_failure(ae_add("CT_1"), 5, "already registered")
    clean_failure(ae_add("X" * 17), 2, "1-16 printable ASCII")

    node = open_node(settings=get_settings(d, database_url=database_url))
    with node.db.session() as s:
        alice = service.authenticate_token(s, token)
        assert (alice.name, alice.role, alice.facility.name) == (
            "alice",
            "radiologist",
            "General Hospital",
        )
        assert service.authenticate_password(s, "alice", "correct horse battery").id == alice.id
        assert service.get_user(s, "bob").password_hash is None
        assert [t.token_hash for t in s.scalars(select(ApiToken))] == [
            service.security.hash_token(token)
        ]
        peer = service.find_ae_title(s, "CT_1")
        assert peer is not None and peer.facility.name == "General Hospital"
    node.close()


def test_unusable_node_gives_a_message_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    clean_failure(
        pair("facility", "create", "--data-dir", str(a_file / "sub"), "H"),
        1,
        "Cannot use data dir",
    )
    d = str(tmp_path / "node")
    for url in ("not a url", "nosuchdb://x/y", "mysql://x/y"):  # unparsable, unknown, no driver
        monkeypatch.setenv("PAIR_DATABASE_URL", url)
        clean_failure(pair("facility", "list", "--data-dir", d), 1, "PAIR_DATABASE_URL is not")
    monkeypatch.setenv("PAIR_DATABASE_URL", "postgresql+psycopg://u:sekrit@127.0.0.1:1/x")
    r = pair("facility", "list", "--data-dir", d)
    clean_failure(r, 1, "Cannot open the database postgresql+psycopg://u:***@127.0.0.1:1/x")
    assert "sekrit" not in r.output
    monkeypatch.delenv("PAIR_DATABASE_URL")
    monkeypatch.setenv("PAIR_PORT", "eighty")
    clean_failure(pair("facility", "list", "--data-dir", d), 2, "invalid setting PAIR_PORT")
