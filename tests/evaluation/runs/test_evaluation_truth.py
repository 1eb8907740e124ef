"""Truth handling that must not mislead (issue 15): a label CSV giving one key two labels is
refused with its row numbers; a package without ``recommended_threshold`` is evaluated at the
documented default and says so; the CLI help names the CSV's key columns as the parser does;
an AUC below 0.5, identical scores and a degenerate Youden point are flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pair.algorithms import DEMO_PACKAGE
from pair.algorithms.manifest import Manifest
from pair.cli.main import app as cli_app
from pair.core.errors import Invalid
from pair.core.node import Node
from pair.evaluation.evaluate import evaluate_scores
from pair.evaluation.runs.execute import evaluate_cases
from pair.evaluation.runs.rows import CaseRow
from pair.evaluation.runs.truth import KEY_COLUMNS, map_label_csv


def test_conflicting_rows_are_refused_with_their_row_numbers(sqlite_node: Node) -> None:
    data = (
        b"study_uid,label\n"
        b"1.2.3,positive\n"  # row 2
        b"1.2.4,negative\n"  # row 3
        b"1.2.3,negative\n"  # row 4: the same study, the other label
        b"1.2.4,0\n"  # row 5: the same label again is no conflict
    )
    with sqlite_node.db.session() as s, pytest.raises(Invalid) as exc:
        map_label_csv(s, 1, data)
    assert "rows 2 and 4" in exc.value.message
    assert "different labels" in exc.value.message
    assert "rows 3 and 5" not in exc.value.message
    with sqlite_node.db.session() as s:
        ok = map_label_csv(s, 1, b"study_uid,label\n1.2.3,1\n1.2.3,yes\n")
    assert ok["studies"] == {"1.2.3": 1}


def _manifest(threshold: float | None) -> Manifest:
    raw = yaml.safe_load((DEMO_PACKAGE / "pair-algorithm.yaml").read_text())
    raw["output"]["recommended_threshold"] = threshold
    return Manifest.model_validate(raw)


def _rows(scores: list[float], labels: list[int]) -> list[CaseRow]:
    return [
        CaseRow(
            case_id=f"1.2.{i}",
            study_uid=f"1.3.{i}",
            patient=f"P{i}",
            y=y,
            score=sc,
            study_date="20200101",
            n_images=1,
            sex="",
            age_band="",
            manufacturer="",
            site="",
            modality="CR",
        )
        for i, (sc, y) in enumerate(zip(scores, labels, strict=True))
    ]


@pytest.mark.parametrize(
    ("declared", "threshold", "source"),
    [
        (None, 0.5, "default threshold 0.5 (not declared)"),
        (0.3, 0.3, "declared threshold"),
    ],
)
def test_manifest_point_says_whether_its_threshold_was_declared(
    declared: float | None, threshold: float, source: str
) -> None:
    rows = _rows([0.1, 0.4, 0.35, 0.8, 0.2, 0.9], [0, 0, 1, 1, 0, 1])
    result = evaluate_cases(
        rows, _manifest(declared), {"n_boot": 50}, ("a", "b"), {}, compare=False
    )
    manifest_point = result.operating_points[0]  # type: ignore[union-attr]
    assert manifest_point.name == "manifest"
    assert manifest_point.threshold == threshold
    assert manifest_point.source == source


def test_evaluate_help_names_the_csv_key_columns() -> None:
    out = CliRunner().invoke(cli_app, ["evaluate", "--help"], env={"COLUMNS": "300"}).output
    text = " ".join(out.split())
    for column in KEY_COLUMNS:
        assert column in text, column
    assert "accession/" not in text


def test_auc_below_half_is_flagged() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.9, 0.8, 0.4, 0.3, 0.5, 0.1])  # mostly the wrong way round
    r = evaluate_scores(y, s, 0.5, n_boot=50)
    assert r.auc.value < 0.5
    assert any("is below 0.5" in w for w in r.warnings)


def test_identical_scores_and_degenerate_youden_are_flagged() -> None:
    y = np.array([0, 1, 0, 1, 0, 1])
    r = evaluate_scores(y, np.full(6, 0.9999), 0.5, n_boot=50)
    assert any("same score" in w for w in r.warnings)
    assert any("Degenerate Youden point" in w for w in r.warnings)


def test_perfect_separation_on_few_cases_is_flagged() -> None:
    """The consortium demo's small sites: 6 images, every positive above every negative. The
    intervals collapse to 1.000-1.000, which must not read as certainty."""
    y = np.array([0, 0, 0, 1, 1, 1])
    r = evaluate_scores(y, np.array([0.19, 0.39, 0.57, 0.62, 0.63, 0.64]), 0.5, n_boot=50)
    assert r.auc.value == r.auc.lower == r.auc.upper == 1.0
    (flag,) = [w for w in r.warnings if "separate the classes perfectly" in w]
    assert "3 positive and 3 negative cases" in flag and "not certainty" in flag


def test_a_working_score_is_not_flagged() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    r = evaluate_scores(y, np.array([0.1, 0.2, 0.6, 0.4, 0.7, 0.9]), 0.5, n_boot=50)
    assert not any(
        "Degenerate" in w or "below 0.5" in w or "same score" in w or "perfectly" in w
        for w in r.warnings
    )


def test_docs_name_the_default_threshold() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "evaluation.md").read_text()
    assert "default threshold 0.5 (not declared)" in docs


def test_report_truth_categories_are_checked_against_the_module() -> None:
    from pair.evaluation.runs.truth import check_spec

    # labels and any case are accepted and stored as the module's values
    assert check_spec("report:rsna-cxr-covid:Typical appearance,ATYPICAL") == (
        "report:rsna-cxr-covid:typical,atypical"
    )
    with pytest.raises(Invalid, match=r"'typical' is not a category of report module 'corads'"):
        check_spec("report:corads:typical")
    with pytest.raises(Invalid, match=r"No reporting module 'nope'.*; use one of: corads"):
        check_spec("report:nope")
