"""Command-line foundation: the ``pair`` Typer app and shared options."""
