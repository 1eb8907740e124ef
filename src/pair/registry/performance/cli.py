"""``pair registry feedback-secret FACILITY``: issue the HMAC secret a member site signs its
evaluation feedback with (hub side). The secret is printed once and replaces earlier ones."""

from __future__ import annotations

from typing import Annotated

import typer

from pair.cli.common import DataDir, handle_errors, node_for
from pair.registry.performance import receive


@handle_errors
def feedback_secret(
    facility: Annotated[str, typer.Argument(help="The member facility's code.")],
    data_dir: DataDir,
) -> None:
    """Issue a new feedback-signing secret for FACILITY; earlier secrets stop verifying."""
    node = node_for(data_dir)
    with node.db.session() as s:
        fac, secret = receive.issue_secret(s, facility)
        name = fac.name
    typer.echo(secret)
    typer.echo(
        f"New feedback secret for {name} (shown once). At the site, write it to "
        "DATA_DIR/keys/feedback.key (chmod 600); the site signs with it from then on.",
        err=True,
    )


def register(registry_app: typer.Typer) -> None:
    """Add the performance registry's commands to the ``pair registry`` group."""
    registry_app.command("feedback-secret")(feedback_secret)
