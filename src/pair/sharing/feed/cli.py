"""``pair feed``: follow the hub's feed once, pull one hub case, run the webhook worker once."""

from __future__ import annotations

from typing import Annotated

import typer

from pair.cli.common import DataDir, console, handle_errors, node_for
from pair.core.errors import Invalid
from pair.sharing.feed.follower import HubClient, follow_once, pull

feed_app = typer.Typer(help="The hub's change feed: follow it, pull cases.", no_args_is_help=True)


@feed_app.command("follow")
@handle_errors
def follow_command(
    data_dir: DataDir,
    once: Annotated[bool, typer.Option("--once", help="Process what is new, then stop.")] = False,
) -> None:
    """Pull the hub's new cases and apply retractions from the stored cursor (resumable)."""
    if not once:
        raise Invalid("Use --once here; `pair serve` with PAIR_FEED_FOLLOW=1 follows continuously.")
    node = node_for(data_dir)
    try:
        result = follow_once(node)
    finally:
        node.close()
    console.print(
        f"events {result.events}: pulled {result.pulled}, retracted {result.retracted}, "
        f"skipped {result.skipped}; cursor at {result.last_seq}"
    )


@feed_app.command("pull")
@handle_errors
def pull_command(
    study_uid: Annotated[str, typer.Argument(help="The case's study UID at the hub.")],
    data_dir: DataDir,
) -> None:
    """Pull one hub case into this node (origin kept, see docs/hub-feed.md)."""
    node = node_for(data_dir)
    hub = HubClient(node)
    try:
        n = pull(node, hub, study_uid)
    finally:
        hub.close()
        node.close()
    console.print(f"pulled {study_uid}: {n} instance(s) stored or already present")
