from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pair.cli import common
from pair.cli.main import app

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


def test_report_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 200)  # tables and messages unwrapped
    monkeypatch.setattr(common.err_console, "width", 200)
    out = runner.invoke(app, ["report", "modules"])
    assert out.exit_code == 0 and "rsna-ct-covid" in out.stdout
    out = runner.invoke(app, ["report", "cdes"])
    assert out.exit_code == 0 and "RDES296" in out.stdout and "15 inferred" in out.stdout
    xml = tmp_path / "corads.xml"
    assert (
        runner.invoke(app, ["report", "export-cards", "corads", "--out", str(xml)]).exit_code == 0
    )
    out = runner.invoke(app, ["report", "check", str(xml)])
    assert out.exit_code == 0 and "corads@1.0.0" in out.stdout
    xml.write_text(xml.read_text().replace('EndPointId="corads"', 'EndPointId="x"'))
    out = runner.invoke(app, ["report", "check", str(xml)])
    assert out.exit_code == 2 and "unknown endpoint 'x'" in flat(out.stderr)
    inputs = tmp_path / "in.json"
    inputs.write_text(json.dumps({"rul": 1, "rml": 1, "rll": 1, "lul": 1, "lll": 1}))
    out = runner.invoke(app, ["report", "evaluate", "ct-severity-25", str(inputs)])
    assert out.exit_code == 0 and "CT severity score: 5/25." in out.stdout
    inputs.write_text(json.dumps({"rul": 9}))
    out = runner.invoke(app, ["report", "evaluate", "ct-severity-25", str(inputs)])
    assert out.exit_code == 2 and "rul: 9 is above the maximum 5" in flat(out.stderr)
