"""The ``pair`` command. Each capability contributes its own Typer sub-app or commands."""

from __future__ import annotations

import typer

from pair.accounts.cli import ae_app, facility_app, token_app, user_app
from pair.algorithms.cli import algorithm_app
from pair.cli.serve import serve
from pair.clinical.cli import clinical_app
from pair.deid.cli import deid, deid_export_mapping, deid_profile
from pair.evaluation.cli import evaluation_app
from pair.evaluation.runs.cli import evaluate
from pair.federated.cli import fl_app
from pair.registry.cli import registry_app
from pair.registry.performance.cli import register as register_performance_registry
from pair.reporting.cli import report_app
from pair.repository.cli import register as register_repository
from pair.sharing.cli import hub_app, share_app
from pair.sharing.feed.cli import feed_app
from pair.synth.cli import synth
from pair.usecases.cli import usecase_app

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
app.add_typer(report_app, name="report")
app.add_typer(algorithm_app, name="algorithm")
app.add_typer(usecase_app, name="usecase")
register_performance_registry(registry_app)  # pair registry perf ... next to query/export
app.add_typer(registry_app, name="registry")
app.add_typer(hub_app, name="hub")
app.add_typer(share_app, name="share")
app.add_typer(fl_app, name="fl")
app.add_typer(feed_app, name="feed")
app.command("serve")(serve)
register_repository(app)
app.command("deid")(deid)
app.command("deid-export-mapping")(deid_export_mapping)
app.command("deid-profile")(deid_profile)
# ``pair evaluate`` runs an algorithm on this node's cases; ``pair offline-evaluation`` works on
# files only (a scores CSV, a result.json). ``pair evaluation`` is the old, easily confused name.
app.add_typer(
    evaluation_app,
    name="offline-evaluation",
    help="From files, without a node: statistics and report from a scores CSV, signed feedback "
    "from a result.json, feedback keys.",
)


def _evaluation_deprecated() -> None:
    typer.echo(
        "warning: `pair evaluation` is deprecated; use `pair offline-evaluation` "
        "(`pair evaluate` runs an algorithm on this node's cases).",
        err=True,
    )


app.add_typer(
    evaluation_app,
    name="evaluation",
    hidden=True,
    callback=_evaluation_deprecated,
    help="Deprecated name of `pair offline-evaluation`.",
)
app.command("evaluate")(evaluate)
app.command("synth")(synth)


if __name__ == "__main__":
    app()
