"""The ``pair`` command. Each capability contributes its own Typer sub-app or commands."""

from __future__ import annotations

import typer

from pair.accounts.cli import ae_app, facility_app, token_app, user_app
from pair.cli.serve import serve
from pair.clinical.cli import clinical_app
from pair.repository.cli import register as register_repository

app = typer.Typer(
    name="pair",
    help="PAIR node: case repository, de-identification, reporting and local AI evaluation.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(facility_app, name="facility")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(ae_app, name="ae")
app.add_typer(clinical_app, name="clinical")
app.command("serve")(serve)
register_repository(app)


if __name__ == "__main__":
    app()
