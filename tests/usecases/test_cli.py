"""``pair usecase``: offline validation names the problem; list/export read the node."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pair.cli.main import app
from pair.usecases.spec import SHIPPED_DIR


def test_validate_list_export(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["usecase", "validate", str(SHIPPED_DIR / "covid19-ct-pattern.yaml")])
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.yaml"
    text = (SHIPPED_DIR / "covid19-ct-pattern.yaml").read_text()
    bad.write_text(text.replace("cde_element: RDE1360", "cde_element: RDE4242"))
    r = runner.invoke(app, ["usecase", "validate", str(bad)])
    assert r.exit_code == 2
    assert "secondary_outputs/1/cde_element: RDE4242 is not in the CDE catalog" in " ".join(
        r.output.split()
    )
    data = ["--data-dir", str(tmp_path / "node")]
    r = runner.invoke(app, ["usecase", "list", *data])
    assert r.exit_code == 0, r.output
    assert "pair-covid19-icu-prediction\tv1\tpublished" in r.output
    r = runner.invoke(
        app, ["usecase", "export", "pair-covid19-icu-prediction", "--format", "md", *data]
    )
    assert r.exit_code == 0, r.output
    assert r.output.startswith("# Prediction of ICU admission from admission imaging")
