"""``pair evaluation`` commands on real files (CSV in, report and signed feedback out)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from pair.cli.main import app
from pair.evaluation import feedback as fb
from tests.evaluation.eval_reference import synthetic

runner = CliRunner()


def _write_csv(path: Path) -> None:
    y, p = synthetic(300, 81)
    rng = np.random.default_rng(82)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["truth", "score", "sex", "patient", "reader"])
        for i, (yy, pp) in enumerate(zip(y, p, strict=True)):
            w.writerow(
                [
                    "positive" if yy else "negative",
                    f"{pp:.6f}",
                    rng.choice(["F", "M"]),
                    f"P{i // 2}",
                    int(np.clip(round(pp * 4 + rng.normal()), 0, 4)),
                ]
            )
        w.writerow(["", "0.5", "F", "P999", 1])  # no reference label: excluded
        w.writerow(["1", "n/a", "M", "P998", 1])  # no score: excluded


def test_scores_report_feedback_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "cases.csv"
    _write_csv(data)
    ctx = tmp_path / "ctx.json"
    ctx.write_text(json.dumps({"algorithm_id": "demo", "truth_source": "RT-PCR"}))
    out = tmp_path / "report"
    res = runner.invoke(
        app,
        [
            "offline-evaluation",
            "scores",
            str(data),
            "--label",
            "truth",
            "--score",
            "score",
            "--threshold",
            "0.5",
            "--group",
            "sex",
            "--cluster",
            "patient",
            "--compare",
            "reader",
            "--compare-threshold",
            "2",
            "--prevalence",
            "0.1",
            "--n-boot",
            "200",
            "--context",
            str(ctx),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    # the main table (its headers may be cut at 80 columns) and the optimism warning
    assert "cluster bootstrap" in res.output and "youden" in res.output
    result = json.loads((out / "result.json").read_text())
    assert result["cohort"]["n_cases"] == 300 and result["cohort"]["n_excluded"] == 2
    assert "RT-PCR" in (out / "report.html").read_text()

    key = tmp_path / "feedback.key"
    assert runner.invoke(app, ["offline-evaluation", "keygen", str(key)]).exit_code == 0
    # the old group name still works, hidden, and says what to use instead
    again = runner.invoke(app, ["evaluation", "keygen", str(key)])
    assert "use `pair offline-evaluation`" in again.output
    assert again.exit_code == 2 and "refusing to overwrite" in again.output
    env_path = tmp_path / "envelope.json"
    res = runner.invoke(
        app,
        [
            "offline-evaluation",
            "feedback",
            str(out / "result.json"),
            "--key",
            str(key),
            "--key-id",
            "site-1",
            "--context",
            str(ctx),
            "--out",
            str(env_path),
        ],
    )
    assert res.exit_code == 0, res.output
    envelope = json.loads(env_path.read_text())
    assert fb.verify_signature(envelope, fb.load_key(key))
    assert envelope["payload"]["algorithm"]["id"] == "demo"


def test_missing_column_is_reported(tmp_path: Path) -> None:
    data = tmp_path / "cases.csv"
    _write_csv(data)
    res = runner.invoke(
        app,
        [
            "offline-evaluation",
            "scores",
            str(data),
            "--label",
            "nope",
            "--score",
            "score",
            "--threshold",
            "0.5",
        ],
    )
    assert res.exit_code == 2 and "lacks column" in res.output
