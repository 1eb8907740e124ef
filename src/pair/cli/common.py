"""Shared CLI pieces: the ``--data-dir`` option, opening a node, mapping errors to exit codes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from pair.core.config import env_name
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
    """Print a clear message and exit non-zero instead of a traceback: a PairError's message
    and code, a ``PAIR_*`` setting that does not validate, or what the system refused
    (missing file, permission, port in use)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PairError as exc:
            _fail(exc.message, exc.exit_code)
        except ValidationError as exc:
            if exc.title != "Settings":
                raise
            for err in exc.errors():  # the value is not echoed: it may be a secret
                name = env_name(err["loc"])
                _fail(f"invalid setting {name}: {err['msg']}", None)
            raise typer.Exit(2) from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            _fail(f"{exc.strerror or exc}{where}", 1)

    return wrapper  # type: ignore[return-value]


def _fail(message: str, exit_code: int | None) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    if exit_code is not None:
        raise typer.Exit(exit_code) from None


def node_for(data_dir: Path) -> Node:
    return open_node(data_dir)


def read_stdin_secret() -> str:
    value = sys.stdin.readline().rstrip("\n")
    if not value:
        raise PairError("Expected a password on standard input.")
    return value
