"""``pair facility|user|token|ae`` administration commands."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pair.accounts import service
from pair.audit.service import Actor
from pair.cli.common import DataDir, console, handle_errors, node_for, read_stdin_secret

facility_app = typer.Typer(help="Manage facilities (hospitals) served by this node.")
user_app = typer.Typer(help="Manage users and roles.")
token_app = typer.Typer(help="Manage API bearer tokens.")
ae_app = typer.Typer(help="Manage DICOM peers (AE titles) allowed to send.")


@facility_app.command("create")
@handle_errors
def facility_create(
    name: str,
    data_dir: DataDir,
    code: Annotated[str | None, typer.Option(help="Pseudonym prefix (default from name).")] = None,
) -> None:
    """Create a facility."""
    node = node_for(data_dir)
    with node.db.session() as s:
        f = service.create_facility(s, name, code)
        console.print(f"facility {f.name} (id {f.id}, code {f.code}) created")


@facility_app.command("list")
@handle_errors
def facility_list(data_dir: DataDir) -> None:
    node = node_for(data_dir)
    table = Table("id", "name", "code")
    with node.db.session() as s:
        for f in service.list_facilities(s):
            table.add_row(str(f.id), f.name, f.code)
    console.print(table)


@user_app.command("create")
@handle_errors
def user_create(
    data_dir: DataDir,
    facility: Annotated[str, typer.Option(help="Facility name or id.")],
    name: Annotated[str, typer.Option(help="Login name.")],
    role: Annotated[
        str,
        typer.Option(
            help="admin, data-manager, radiologist, evaluator, researcher, panel, or node-operator "
            "(node-wide administration; only grantable here, never from the API or portal)"
        ),
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read a password from stdin.")
    ] = False,
) -> None:
    """Create a user in a facility."""
    password = read_stdin_secret() if password_stdin else None
    node = node_for(data_dir)
    with node.db.session() as s:
        f = service.get_facility(s, facility)
        u = service.create_user(s, f, name, role, password, allow_operator=True)
        console.print(f"user {u.name} ({u.role}) created in {f.name}")


@user_app.command("list")
@handle_errors
def user_list(data_dir: DataDir) -> None:
    node = node_for(data_dir)
    table = Table("id", "name", "role", "facility", "active")
    with node.db.session() as s:
        for u in service.list_users(s):
            table.add_row(str(u.id), u.name, u.role, u.facility.name, str(u.active))
    console.print(table)


@user_app.command("set-password")
@handle_errors
def user_set_password(
    data_dir: DataDir, name: Annotated[str, typer.Option(help="Login name.")]
) -> None:
    """Set a user's password, read from stdin."""
    password = read_stdin_secret()
    node = node_for(data_dir)
    with node.db.session() as s:
        service.set_password(s, service.get_user(s, name), password, Actor.system())
    console.print("password updated")


@token_app.command("create")
@handle_errors
def token_create(
    data_dir: DataDir,
    user: Annotated[str, typer.Option(help="User the token acts as.")],
    label: Annotated[str, typer.Option(help="Free label.")] = "",
) -> None:
    """Create a bearer token; prints only the token."""
    node = node_for(data_dir)
    with node.db.session() as s:
        _, plain = service.create_token(s, service.get_user(s, user), label)
    typer.echo(plain)


@token_app.command("list")
@handle_errors
def token_list(data_dir: DataDir) -> None:
    node = node_for(data_dir)
    table = Table("id", "user", "label", "created", "revoked")
    with node.db.session() as s:
        for t in service.list_tokens(s):
            table.add_row(
                str(t.id), t.user.name, t.label, str(t.created_at), str(t.revoked_at or "")
            )
    console.print(table)


@token_app.command("revoke")
@handle_errors
def token_revoke(token_id: int, data_dir: DataDir) -> None:
    node = node_for(data_dir)
    with node.db.session() as s:
        service.revoke_token(s, token_id, Actor.system())
    console.print(f"token {token_id} revoked")


@ae_app.command("add")
@handle_errors
def ae_add(
    data_dir: DataDir,
    facility: Annotated[str, typer.Option(help="Facility the peer's instances belong to.")],
    ae_title: Annotated[str, typer.Option("--ae-title", help="Calling AE title of the peer.")],
    description: Annotated[str, typer.Option(help="Free description.")] = "",
) -> None:
    """Allow a DICOM peer to send; what it sends belongs to the facility."""
    node = node_for(data_dir)
    with node.db.session() as s:
        f = service.get_facility(s, facility)
        service.add_ae_title(s, f, ae_title, description)
    console.print(f"AE title {ae_title} allowed for {facility}")


@ae_app.command("remove")
@handle_errors
def ae_remove(
    data_dir: DataDir,
    ae_title: Annotated[str, typer.Option("--ae-title")],
) -> None:
    node = node_for(data_dir)
    with node.db.session() as s:
        service.remove_ae_title(s, ae_title, Actor.system())
    console.print(f"AE title {ae_title} removed")


@ae_app.command("list")
@handle_errors
def ae_list(data_dir: DataDir) -> None:
    node = node_for(data_dir)
    table = Table("AE title", "facility", "description")
    with node.db.session() as s:
        for a in service.list_ae_titles(s):
            table.add_row(a.ae_title, a.facility.name, a.description)
    console.print(table)
