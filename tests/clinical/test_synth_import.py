"""End to end: `pair synth` images imported per site, then its clinical.csv through the
private mapping store (site column, `age` alias, laboratory wording synonyms)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from pair.accounts import service as accounts
from pair.audit.service import Actor
from pair.cli.main import app
from pair.clinical.models import ClinicalRecord
from pair.core.node import Node
from pair.repository.service import import_paths
from pair.synth.generator import generate


def test_synth_clinical_csv_imports_for_every_site(sqlite_node: Node, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    generate(out, 2, 2, seed=3, workers=1, ct_slices=4, ct_size=64, cxr_size=64)
    with sqlite_node.db.session() as s:
        ids = [accounts.create_facility(s, f"site-0{i}").id for i in (1, 2)]
    for i, fid in enumerate(ids, start=1):
        summary = import_paths(sqlite_node, fid, [out / f"site-0{i}"], Actor.system())
        assert summary.stored > 0 and summary.rejected == 0
    r = CliRunner().invoke(
        app,
        [
            "clinical",
            "import",
            "--data-dir",
            str(sqlite_node.settings.data_dir),
            str(out / "clinical.csv"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "imported 4 of 4 rows" in r.output
    with sqlite_node.db.session() as s:
        rows = list(s.scalars(select(ClinicalRecord)))
    assert len(rows) == 4 and {r.facility_id for r in rows} == set(ids)
    for row in rows:
        assert row.data["test_result_text"] in ("Positive", "Negative")
        assert row.data["index_event"] == "COVID-19 Test"
        assert isinstance(row.data["age_at_index"], int)
