"""Shared CLI pieces: the ``--data-dir`` option, opening a node, mapping errors to exit codes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from pair.core.errors import PairError
from pair.core.node import Node, open_node

err_console = Console(stderr=True)
console = Console()

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", "-d", envvar="PAIR_DATA_DIR", help="Node data directory."),
]

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Print a PairError's message and exit with its code instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PairError as exc:
            err_console.print(f"[red]error:[/red] {exc.message}", highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def node_for(data_dir: Path) -> Node:
    return open_node(data_dir)


def read_stdin_secret() -> str:
    value = sys.stdin.readline().rstrip("\n")
    if not value:
        raise PairError("Expected a password on standard input.")
    return value
